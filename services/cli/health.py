"""Health checks of running services, as the operator."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel


async def check_one(settings: Settings, addr: str, timeout: float = 2.0) -> str:
    tls = load_party(settings.certs_dir, "operator")
    async with client_channel(addr, tls) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except Exception as exc:  # any failure is "not healthy", shown to the operator
            return f"unreachable ({type(exc).__name__})"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def check_all(settings: Settings, addrs: dict[str, str]) -> dict[str, str]:
    results = await asyncio.gather(*(check_one(settings, a) for a in addrs.values()))
    return dict(zip(addrs, results, strict=True))


async def _ask(settings: Settings, addr: str, call: Callable[[Any], Awaitable[Any]]) -> Any:
    """One call as the operator; the exception, if it failed, to be shown as it is."""
    tls = load_party(settings.certs_dir, "operator")
    async with client_channel(addr, tls) as channel:
        try:
            return await call(channel)
        except Exception as exc:  # shown to the operator as it is
            return exc


async def replica_detail(settings: Settings, addr: str) -> str:
    """A replica's size, lag and alarm, for `scf status`."""
    from services.gen.scf.replica.v1 import replica_pb2, replica_pb2_grpc

    s = await _ask(
        settings, addr,
        lambda ch: replica_pb2_grpc.ReplicaServiceStub(ch).GetStatus(
            replica_pb2.GetStatusRequest(), timeout=2
        ),
    )  # fmt: skip
    if isinstance(s, Exception):
        return f"no status ({type(s).__name__})"
    text = f"{s.tree_size} entries, {s.lag_entries} behind, cosigned to {s.cosigned_size}"
    if s.HasField("alarm"):
        text += f"; ALARM ({s.alarm.kind}) at entry {s.alarm.seq}: {s.alarm.problem}"
    return text


async def journal_detail(settings: Settings, addr: str) -> str:
    """The journal's own check of its store, for `scf status`."""
    from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc

    s = await _ask(
        settings, addr,
        lambda ch: journal_pb2_grpc.JournalAdminServiceStub(ch).GetStoreAudit(
            journal_pb2.GetStoreAuditRequest(), timeout=2
        ),
    )  # fmt: skip
    if isinstance(s, Exception):
        return f"no store audit ({type(s).__name__})"
    text = f"{s.verified_size} entries verified, {s.sweeps} sweeps"
    if s.HasField("damage"):
        text += f"; ALARM (store damaged) at entry {s.damage.seq}: {s.damage.problem}"
    return text
