"""kill -9 of the NATS server while statements flow: nothing lost, nothing doubled.

JetStream acknowledges before it flushes to disk, so a crashed server may lose
messages it acknowledged: submitted batches, journaled entries on their way to
the relays. PostgreSQL is the source of truth: relays publish again what was
not confirmed, and the journal re-announces what it had already journaled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.journal.offline import verify_database
from services.journal.service import SPEC
from services.runtime.config import Settings
from services.runtime.embedded import EmbeddedNats
from services.runtime.ports import free_port
from tests.journal.helpers import producer
from tests.support import provision_for, running

pytestmark = pytest.mark.integration


async def test_nats_killed_while_appending(settings: Settings, tmp_path: Path) -> None:
    nats = EmbeddedNats(tmp_path / "nats", port=free_port())
    settings = dataclasses.replace(settings, nats_url=nats.start())
    await provision_for(settings)
    try:
        async with running(SPEC, settings), producer(settings) as p:
            for i in range(10):
                await p.append(30, start=i * 30)

            async def some() -> bool:
                return len(await p.confirmed()) >= 30

            await p.wait_until(some, "some statements journaled")
            nats.kill()
            for i in range(10, 20):  # written while NATS is down: they wait in the outbox
                await p.append(30, start=i * 30)
            nats.start()
            confirmed = await p.wait_confirmed(600, timeout=90)
        assert sorted(confirmed.values()) == list(range(1, 601))
    finally:
        nats.stop()
    root = bytes.fromhex((settings.keys_dir / "platform-root.pub").read_text())
    report = await verify_database(settings.database_url, settings.endpoint("journal").schema, root)
    assert report.entries == 601
