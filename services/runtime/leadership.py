"""One instance at a time: the loops a service must not run twice at once.

Several instances of a service share its schema. Requests, JetStream
consumers and watch calls are shared among them as they come; but the relay's
publishing, the process manager's passes and the sweeps each run in one
instance only, the leader. Leadership is a session advisory lock held on a
connection of its own: the others wait for it inside PostgreSQL (no polling),
and get it the moment the leader's session ends, whether it stopped, crashed
or was killed (the server sees its socket close). An instance that loses its
connection stops leading at once and waits again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from services.runtime.errors import TRANSIENT
from services.runtime.metrics import LEADER
from services.runtime.waiting import pause

__all__ = ["Leadership", "lock_key"]

log = logging.getLogger(__name__)

#: PostgreSQL away or restarting: leadership is waited for again.
_AWAY: tuple[type[BaseException], ...] = (*TRANSIENT, OSError, asyncpg.PostgresError)


def lock_key(schema: str, role: str) -> int:
    """A 64-bit advisory lock key of its own for ``role`` in ``schema`` (tests and
    platforms share one database, each in its schemas)."""
    digest = hashlib.sha256(f"scf-leader:{schema}:{role}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """Runs ``work`` while this instance holds the lock, for as long as it runs."""

    def __init__(self, pool: asyncpg.Pool[Any], schema: str, role: str) -> None:
        self.pool = pool
        self.schema = schema
        self.role = role
        self.key = lock_key(schema, role)

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Lead, run ``work``; lead again after a lost connection. Returns (or
        raises) when ``work`` does."""
        while True:
            try:
                conn = await self.pool.acquire()
            except _AWAY as exc:
                log.warning("%s: cannot reach PostgreSQL to lead (%r)", self.role, exc)
                await pause(1.0)
                continue
            try:
                if await self._lead(conn, work):
                    return
            finally:
                await self._let_go(conn)

    async def _lead(self, conn: Any, work: Callable[[], Awaitable[None]]) -> bool:
        """Wait for the lock, then run ``work`` until it ends (True) or the
        connection is lost (False)."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", self.key)
        except _AWAY as exc:
            log.warning("%s: lost PostgreSQL while waiting to lead (%r)", self.role, exc)
            return False
        log.info("%s: this instance leads", self.role)
        LEADER.labels(self.role).set(1)
        task = asyncio.ensure_future(work())
        losing = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({task, losing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            losing.cancel()
            LEADER.labels(self.role).set(0)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.done() and not task.cancelled():
            task.result()  # work ended by itself: its error, or its end
            return True
        log.warning(
            "%s: lost the connection that held leadership; waiting to lead again", self.role
        )
        return False

    async def _let_go(self, conn: Any) -> None:
        """Unlock and give the connection back (released connections are not
        reset: runtime.db). A lost connection's session took its lock with it."""
        try:
            await conn.execute("SELECT pg_advisory_unlock_all()")
        except asyncpg.InterfaceError:  # lost: the pool has taken it back already
            return
        except _AWAY:
            pass
        with contextlib.suppress(*_AWAY):
            await self.pool.release(conn)
