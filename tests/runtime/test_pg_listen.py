"""A listener holds one connection, however many callers start it at once, and
gives it back: the pool closes (a service's shutdown waited forever on one
leaked by two audit calls that started listening together)."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.db import connect_pool
from services.runtime.pg_listen import PgListener
from tests.conftest import Servers
from tests.support import unique

pytestmark = pytest.mark.integration


async def test_listeners_started_at_once_hold_one_connection(servers: Servers) -> None:
    pool = await connect_pool(servers.database_url, unique("pgl"))
    heard: list[str] = []
    arrived = asyncio.Event()

    def on_payload(payload: str) -> None:
        heard.append(payload)
        arrived.set()

    listener = PgListener(pool, "scf_test_listen", on_payload)
    await asyncio.gather(*(listener.ensure() for _ in range(5)))
    assert pool.get_size() - pool.get_idle_size() == 1
    await pool.execute("SELECT pg_notify('scf_test_listen', 'hello')")
    async with asyncio.timeout(5):
        await arrived.wait()
    assert heard == ["hello"]
    await asyncio.gather(listener.close(), listener.close())
    async with asyncio.timeout(5):
        await pool.close()


async def test_a_connection_held_at_shutdown_is_cut_not_waited_for(servers: Servers) -> None:
    """Shutdown waits a moment for the pool, then cuts what is still held: a task
    interrupted while giving a connection back must not hold a service up for good."""
    from services.runtime.service import close_pool

    pool = await connect_pool(servers.database_url, unique("held"))
    await pool.acquire()  # never given back
    async with asyncio.timeout(5):
        await close_pool(pool, "test", grace_s=0.5)
    assert pool.is_closing()  # terminated: nothing more is served from it
