"""Two instances of every service but the journal on one PostgreSQL and one NATS:
every flow finishes, exactly once; and with the first instances gone, the
second ones take over their single-instance loops and flows still finish."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from services.bench.load import FlowLoad
from services.cli.waits import loan_where
from services.gen.scf.repayment.v1 import repayment_pb2_grpc
from services.journal.service import SPEC as JOURNAL
from services.lending.service import SPEC as LENDING
from services.orders.service import SPEC as ORDERS
from services.repayment.service import SPEC as REPAYMENT
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.ports import free_ports
from services.runtime.service import ServiceSpec, run_service
from services.scoring.service import SPEC as SCORING
from tests.journal.helpers import wait_on_platform
from tests.support import running, with_endpoint

pytestmark = [pytest.mark.integration, pytest.mark.long]

TWICE = (ORDERS, SCORING, LENDING, REPAYMENT)


def second_instances(settings: Settings) -> Settings:
    """The same platform, with the twice-run services on gRPC ports of their own."""
    for spec, port in zip(TWICE, free_ports(len(TWICE)), strict=True):
        settings = with_endpoint(settings, spec.name, grpc_addr=f"127.0.0.1:{port}")
    return settings


@contextlib.asynccontextmanager
async def instance(spec: ServiceSpec, settings: Settings) -> AsyncIterator[asyncio.Event]:
    """One instance, running until the block ends or its stop event is set."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_service(spec, settings, stop=stop, ready=ready))
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert ready.is_set(), f"{spec.name} did not start"
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def _flows(settings: Settings, first: int, count: int, *also: Settings) -> FlowLoad:
    load = FlowLoad(settings, first + count, 4, 120, instances=also)
    load.started = first  # its own subcontractors, bench-sub-<first>…
    await load.run()
    assert load.errors == [], load.errors
    assert len(load.disbursed) == count
    return load


async def _opened(settings: Settings, loans: set[str]) -> None:
    tls = load_party(settings.certs_dir, "operator")
    async with client_channel(settings.endpoint("repayment").grpc_addr, tls) as channel:
        stub = repayment_pb2_grpc.RepaymentServiceStub(channel)
        for loan_id in loans:
            await loan_where(stub, loan_id, lambda _loan: True, f"loan {loan_id} opened")


async def _rows(settings: Settings, service: str, query: str) -> list[Any]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f'SET search_path TO "{settings.endpoint(service).schema}"')
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_two_instances_of_each_finish_every_flow_exactly_once(settings: Settings) -> None:
    second = second_instances(settings)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running(JOURNAL, settings))
        firsts = [await stack.enter_async_context(instance(s, settings)) for s in TWICE]
        for spec in TWICE:
            await stack.enter_async_context(instance(spec, second))
        # Calls go to either instance: every other flow's subcontractor to each.
        loads = [await _flows(settings, 0, 12, second)]
        # The first instances (leaders, as the first to start) go; the second go on.
        for stop in firsts:
            stop.set()
        loads.append(await _flows(second, 12, 4))
        apps = {a for load in loads for a in load.disbursed}
        assert len(apps) == 16

        # Exactly once, wherever each step ran: each application pledged, scored,
        # drawn and disbursed once (a step taken twice is a transition of its own,
        # journaled under its own version), each facility drawn once, one loan each.
        events = await _rows(
            settings, "journal",
            "SELECT subject, event_type, count(*) AS n FROM entries"
            " WHERE event_type IN ('application.pledged', 'application.disbursed',"
            " 'order.pledged', 'score.decided') GROUP BY subject, event_type",
        )  # fmt: skip
        assert all(r["n"] == 1 for r in events), [dict(r) for r in events if r["n"] != 1]
        kinds = [r["event_type"] for r in events]
        for kind in ("application.pledged", "application.disbursed", "order.pledged"):
            assert kinds.count(kind) == 16, kind
        assert kinds.count("score.decided") == 16
        disbursed = {r["subject"].removeprefix("application/") for r in events
                     if r["event_type"] == "application.disbursed"}  # fmt: skip
        assert disbursed == apps
        drawn = await _rows(settings, "lending", "SELECT drawn_minor FROM facilities")
        assert sorted(r["drawn_minor"] for r in drawn) == [5_000_000] * 16
        # Repayment opens each loan from lending's event, a moment after disbursement.
        await _opened(second, apps)
        loans = await _rows(settings, "repayment", "SELECT loan_id, principal_minor FROM loans")
        assert {r["loan_id"] for r in loans} == apps
        assert [r["principal_minor"] for r in loans] == [5_000_000] * 16

        # Every statement of every service reaches the journal (each relay publishes
        # on its own time: a scoring decision may still be on its way).
        async def all_journaled() -> bool:
            for service in ("orders", "scoring", "lending", "repayment"):
                pending = await _rows(
                    settings, service, "SELECT count(*) AS n FROM outbox WHERE journal_seq IS NULL"
                )
                if pending[0]["n"]:
                    return False
            return True

        await wait_on_platform(settings, all_journaled, "every statement journaled")
