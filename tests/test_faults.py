"""Flows while every service, a replica, PostgreSQL and NATS fail in turn (a small run;
`make faults` runs the large one and docs/reliability.md has its figures)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.bench.faults_bench import ALL_FAULTS, run_faults
from services.runtime.config import Settings

# Each run starts its own PostgreSQL and NATS, and waits out every fault's recovery.
pytestmark = [pytest.mark.integration, pytest.mark.own_servers, pytest.mark.timeout(600)]


async def test_nothing_is_lost_or_done_twice_when_everything_fails_once(
    settings: Settings, tmp_path: Path
) -> None:
    # Servers of its own (the run crashes them), and this test's own schemas.
    own = dataclasses.replace(settings, nats_url="", database_url="", data_dir=tmp_path)
    faults = ALL_FAULTS
    report = await run_faults(own, flows=30, concurrency=6, run_seconds=240, faults=faults)
    assert [f["target"] for f in report.faults] == list(faults)
    assert report.errors == []
    # Every flow begun finished, once: one application, one disbursement, one loan each.
    assert report.flows_finished == report.flows_started >= 30
    assert report.applications == report.disbursed == report.loans == report.flows_finished
    # Every statement is its journal entry, no entry lacks its statement, and the
    # journal verifies from the root key; both banks hold all of it, alike.
    assert report.statements_missing == 0 and report.entries_without_statement == 0
    assert report.statements_checked > 10 * report.flows_finished
    assert {r["tree_size"] for r in report.replicas.values()} == {report.journal_entries_verified}
    assert len({r["root"] for r in report.replicas.values()}) == 1
    alarms = {bank: r["alarm"] for bank, r in report.replicas.items() if r["alarm"]}
    assert not alarms, alarms
    assert report.ok


async def test_a_nats_node_dies_and_returns_under_load(settings: Settings, tmp_path: Path) -> None:
    from services.bench.faults_bench import CLUSTER_FAULTS, run_cluster_faults

    own = dataclasses.replace(settings, nats_url="", database_url="", data_dir=tmp_path)
    report = await run_cluster_faults(own, flows=30, concurrency=6, run_seconds=240)
    assert [f["target"] for f in report.faults] == list(CLUSTER_FAULTS)
    assert report.errors == []
    # The streams keep three copies; with a node back, all three are current again.
    assert report.stream_copies == {"configured": 3, "current": 3}
    assert report.flows_finished == report.flows_started >= 30
    assert report.applications == report.disbursed == report.loans == report.flows_finished
    assert report.statements_missing == 0 and report.entries_without_statement == 0
    assert report.ok
