"""A journal standby: killed with SIGKILL, the leader is replaced by the process
that stood by, which verifies the store and journals on from where it was."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.bench.failover_bench import bench_failover
from services.journal.offline import verify_database
from services.runtime.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.long]


async def test_the_standby_takes_over_a_killed_leader(settings: Settings, tmp_path: Path) -> None:
    own = dataclasses.replace(settings, data_dir=tmp_path / "platform")
    result = await bench_failover(own, rounds=2)
    # Each round: a statement submitted after the kill came back journaled.
    assert len(result.takeover_s) == 2
    # 20 warm-up orders, two after kills, the genesis entry: nothing lost, nothing twice,
    # and the chain two leaders wrote verifies from the root key alone.
    assert result.journal_entries == 23
    root = bytes.fromhex((own.keys_dir / "platform-root.pub").read_text())
    report = await verify_database(own.database_url, own.endpoint("journal").schema, root)
    assert report.entries == 23
