"""A relay outlives a PostgreSQL restart: it reconnects, listens again, and
every statement, from before and after, is journaled once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import asyncpg
import pytest

from services.runtime.config import Settings
from services.runtime.embedded import EmbeddedPostgres
from services.runtime.platform import Platform
from tests.journal.helpers import producer

pytestmark = [pytest.mark.integration, pytest.mark.own_servers]


async def test_the_relay_outlives_a_database_restart(settings: Settings, tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    own = dataclasses.replace(settings, database_url=await asyncio.to_thread(pg.start))
    platform = Platform(own, services=("journal",))
    stop = asyncio.Event()
    try:
        platform.spawn("journal")
        await platform.wait_ready("journal")
        # The journal process is crash-only: its supervisor starts it again.
        supervisor = asyncio.create_task(platform.supervise(stop))
        async with producer(own) as p:
            await p.append(5)
            await p.wait_confirmed(5)
            await asyncio.to_thread(pg.restart, "immediate")

            async def appended() -> bool:
                # The pool's connections died with the server; a retry gets a new one.
                try:
                    await p.append(5, start=5)
                except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
                    return False
                return True

            await p.wait_until(appended, "an append after the restart")
            confirmed = await p.wait_confirmed(10, timeout=60)
            assert sorted(confirmed) == sorted(f"k-{i}" for i in range(10))
            assert len(set(confirmed.values())) == 10  # each its own entry
            assert p.relay is not None and not p.relay.done()  # it never stopped
        stop.set()
        await supervisor
    finally:
        stop.set()
        platform.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pg.stop)
