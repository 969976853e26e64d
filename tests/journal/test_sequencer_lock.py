"""One sequencer per journal, and only per journal: the leadership lock is the
schema's own, so a journal of another schema on the same PostgreSQL (another
platform, another test) never waits on it, even when that one's connection
is left holding its lock."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from services.journal.sequencer import sequencer_lock_key
from services.journal.service import SPEC
from services.runtime.config import Settings
from services.runtime.db import connect_pool
from tests.support import running

pytestmark = pytest.mark.integration


async def _key(pool: asyncpg.Pool[Any]) -> int:
    async with pool.acquire() as conn:
        return await sequencer_lock_key(conn)


async def test_each_schema_has_its_own_sequencer_lock(settings: Settings) -> None:
    ours = settings.endpoint("journal").schema
    pools = [await connect_pool(settings.database_url, s) for s in (ours, f"{ours}_x", ours)]
    try:
        first, other, again = [await _key(pool) for pool in pools]
        assert first == again  # the sequencer and the restore of one journal agree
        assert first != other
    finally:
        for pool in pools:
            await pool.close()


async def test_a_lock_held_in_another_schema_does_not_stop_this_journal(
    settings: Settings,
) -> None:
    ours = settings.endpoint("journal").schema
    stray = await connect_pool(settings.database_url, f"{ours}_stray", max_size=1)
    try:
        async with stray.acquire() as conn:
            # Another journal's sequencer, its connection left holding the lock.
            assert await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", await sequencer_lock_key(conn)
            )
            async with running(SPEC, settings):
                pass  # ready: it leads its own journal (a standby waits: test_standby.py)
            await conn.execute("SELECT pg_advisory_unlock_all()")
    finally:
        await stray.close()
