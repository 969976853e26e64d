"""Health that follows what a service needs: its PostgreSQL and its NATS.

A service that has lost either cannot do its work, so it answers NOT_SERVING
(gRPC health, and ``/readyz`` for orchestrators) until the dependency is
back. PostgreSQL has no event for a lost server, so it is asked: one cheap
query every period, bounded by a timeout. NATS is read from the client's own
connection state.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.client import Client as NATS

from services.runtime.grpcserver import GrpcServer
from services.runtime.waiting import pause

__all__ = ["watch_dependencies"]

log = logging.getLogger(__name__)


async def _postgres_problem(pool: Any, timeout: float) -> str | None:
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), timeout)
    except Exception as exc:  # any failure means the service cannot use its database
        return f"PostgreSQL does not answer: {exc!r}"
    return None


def _nats_problem(nc: NATS) -> str | None:
    if nc.is_connected:
        return None
    return "NATS is reconnecting" if nc.is_reconnecting else "NATS is not connected"


async def watch_dependencies(
    server: GrpcServer, pool: Any, nc: NATS, *, period_s: float = 1.0, timeout_s: float = 2.0
) -> None:
    """Until cancelled: set ``server``'s health by its dependencies, each period."""
    while True:
        try:
            await server.dependency("postgresql", await _postgres_problem(pool, timeout_s))
            await server.dependency("nats", _nats_problem(nc))
        except Exception:  # the watch must outlive any one failed check
            log.exception("checking dependencies failed")
        await pause(period_s)
