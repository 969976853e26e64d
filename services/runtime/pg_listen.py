"""PostgreSQL LISTEN that outlives a lost connection.

A listener needs a connection of its own (releasing one to the pool would
UNLISTEN it), and after PostgreSQL restarts that connection is gone: the
owner calls :meth:`PgListener.ensure` each time round its loop, which listens
again on a new one. A notification missed meanwhile costs latency, never
correctness: each owner also takes a timed pass as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg

from services.runtime.errors import TRANSIENT

__all__ = ["PgListener"]


class PgListener:
    """Calls ``on_payload`` with each notification's payload on ``channel``."""

    def __init__(
        self, pool: asyncpg.Pool[Any], channel: str, on_payload: Callable[[str], None]
    ) -> None:
        self.pool = pool
        self.channel = channel
        self.on_payload = on_payload
        self._conn: Any = None
        # Callers that ensure at once must not each take a connection (all but
        # the last would be held for good, and the pool could never close).
        self._lock = asyncio.Lock()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self.on_payload(str(payload))

    @property
    def listening(self) -> bool:
        try:
            return self._conn is not None and not self._conn.is_closed()
        except asyncpg.InterfaceError:  # the pool took back a connection it lost
            return False

    async def ensure(self) -> None:
        """Listen, on a new connection if the last one was lost."""
        async with self._lock:
            if self.listening:
                return
            await self._close()
            conn = await self.pool.acquire()
            try:
                await conn.add_listener(self.channel, self._notified)
            except BaseException:
                with contextlib.suppress(*TRANSIENT):
                    await self.pool.release(conn)
                raise
            self._conn = conn

    async def close(self) -> None:
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                with contextlib.suppress(*TRANSIENT):
                    await conn.remove_listener(self.channel, self._notified)
            finally:  # back to the pool even when cancelled meanwhile
                with contextlib.suppress(*TRANSIENT):
                    await self.pool.release(conn)
