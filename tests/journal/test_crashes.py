"""Processes killed between two writes lose nothing and double nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from services.journal.offline import verify_database
from services.runtime.config import Settings
from services.runtime.platform import Platform
from tests.journal.helpers import producer

pytestmark = pytest.mark.integration

N = 30


async def _verify(settings: Settings, n: int = N) -> None:
    root = bytes.fromhex((settings.keys_dir / "platform-root.pub").read_text())
    report = await verify_database(settings.database_url, settings.endpoint("journal").schema, root)
    assert report.entries == n + 1
    assert report.producers == {"platform": 1, "orders": n}


# before_publish:2 skips the genesis commit, which also passes that point.
@pytest.mark.parametrize("point", ["sequencer.after_commit", "sequencer.before_publish:2"])
async def test_sequencer_killed_after_commit(
    settings: Settings, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = Platform(settings, services=("journal",))
    try:
        monkeypatch.setenv("SCF_CRASH_AT", point)
        platform.spawn("journal")
        await platform.wait_ready("journal")
        monkeypatch.delenv("SCF_CRASH_AT")
        async with producer(settings) as p:
            await p.append(N)
            # The first batch is committed, then the process dies at the crash point.
            code = await _wait_exit(platform.processes["journal"].process)
            assert code == 99
            if point.startswith("sequencer.before_publish"):
                # Committed, never published: only the restart's republish confirms it.
                assert len(await p.confirmed()) < N
            platform.spawn("journal")
            await platform.wait_ready("journal")
            confirmed = await p.wait_confirmed(N)
        assert sorted(confirmed.values()) == list(range(1, N + 1))
    finally:
        platform.stop()
    await _verify(settings)


async def test_relay_killed_after_publish(settings: Settings) -> None:
    platform = Platform(settings, services=("journal",))
    try:
        platform.spawn("journal")
        await platform.wait_ready("journal")
        async with producer(settings, relay=False) as p:
            await p.append(N)
            relay = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.journal.relay_proc",
                env={**os.environ, **settings.to_env(), "SCF_CRASH_AT": "relay.after_publish"},
            )
            assert await asyncio.wait_for(relay.wait(), 30) == 99
            unmarked = await p.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )
            assert unmarked == N  # published, but the relay died before recording it
        async with producer(settings) as p:
            confirmed = await p.wait_confirmed(N)
        assert sorted(confirmed.values()) == list(range(1, N + 1))
    finally:
        platform.stop()
    await _verify(settings)


async def test_sequencer_killed_holding_submissions(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a sequencer fetched and died holding is journaled by the next one,
    although the next acknowledges newer submissions first."""
    platform = Platform(settings, services=("journal",))
    try:
        monkeypatch.setenv("SCF_CRASH_AT", "sequencer.before_commit")
        platform.spawn("journal")
        await platform.wait_ready("journal")
        monkeypatch.delenv("SCF_CRASH_AT")
        # The relay never sends again here: only the stream's redelivery can help.
        async with producer(settings, retry_after_s=3600) as p:
            await p.append(N)
            assert await _wait_exit(platform.processes["journal"].process) == 99
            platform.spawn("journal")
            await platform.wait_ready("journal")
            await p.append(N, start=N)
            confirmed = await p.wait_confirmed(2 * N, timeout=60)
        assert sorted(confirmed.values()) == list(range(1, 2 * N + 1))
    finally:
        platform.stop()
    await _verify(settings, 2 * N)


async def test_the_relay_sends_again_what_the_journal_lost(settings: Settings) -> None:
    """Submissions gone from the stream (a NATS crash before they reached disk)
    are sent again under new message ids, which JetStream does not drop as
    duplicates of the lost ones."""
    platform = Platform(settings, services=("journal",))
    try:
        async with producer(settings, retry_after_s=1) as p:
            await p.append(N)

            async def published() -> bool:
                n = await p.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                return n == 0

            await p.wait_until(published, "every statement published")
            await p.js.purge_stream(p.subjects.submit_stream.name)  # lost, unseen
            platform.spawn("journal")
            await platform.wait_ready("journal")
            confirmed = await p.wait_confirmed(N, timeout=30)
        assert sorted(confirmed.values()) == list(range(1, N + 1))
    finally:
        platform.stop()
    await _verify(settings)


async def _wait_exit(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
