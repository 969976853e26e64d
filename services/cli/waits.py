"""What the demos and commands wait for, each by watching (never by polling)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.gen.scf.leasing.v1 import leasing_pb2
from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.orders.v1 import orders_pb2
from services.gen.scf.repayment.v1 import repayment_pb2
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.proto_enums import enum_number
from services.runtime.watch_client import watch_until

__all__ = [
    "application_in",
    "application_where",
    "checkpoint",
    "lease_in",
    "loan_where",
    "order_where",
]

#: How long a demo step may take before it is reported as stuck.
TIMEOUT_S = 30.0


async def application_in(stub: Any, application_id: str, *states: str) -> Any:
    """The application once it is in one of ``states`` (words, as "referred")."""
    wanted = {enum_number(lending_pb2.ApplicationState, s) for s in states}
    return await application_where(
        stub, application_id, lambda app: app.state in wanted,
        f"application {application_id} in {', '.join(states)}",
    )  # fmt: skip


async def application_where(
    stub: Any, application_id: str, reached: Callable[[Any], bool], what: str
) -> Any:
    request = lending_pb2.WatchApplicationRequest(application_id=application_id)
    reply = await watch_until(
        lambda left: stub.WatchApplication(request, timeout=left),
        lambda r: reached(r.application), TIMEOUT_S, what,
    )  # fmt: skip
    return reply.application


async def lease_in(stub: Any, lease_id: str, *states: str) -> Any:
    request = leasing_pb2.WatchLeaseRequest(lease_id=lease_id)
    wanted = {enum_number(lending_pb2.ApplicationState, s) for s in states}
    reply = await watch_until(
        lambda left: stub.WatchLease(request, timeout=left),
        lambda r: r.lease.state in wanted,
        TIMEOUT_S, f"lease {lease_id} in {', '.join(states)}",
    )  # fmt: skip
    return reply.lease


async def loan_where(stub: Any, loan_id: str, reached: Callable[[Any], bool], what: str) -> Any:
    """The loan (or lease schedule) once ``reached`` holds; it is waited for until
    repayment has opened it."""
    request = repayment_pb2.WatchLoanRequest(loan_id=loan_id)
    reply = await watch_until(
        lambda left: stub.WatchLoan(request, timeout=left),
        lambda r: reached(r.loan), TIMEOUT_S, what,
    )  # fmt: skip
    return reply.loan


async def order_where(stub: Any, order_id: str, reached: Callable[[Any], bool], what: str) -> Any:
    """The WatchOrder reply (the order and its version's journal seq) once ``reached``."""
    request = orders_pb2.WatchOrderRequest(order_id=order_id)
    return await watch_until(
        lambda left: stub.WatchOrder(request, timeout=left),
        lambda r: reached(r.order), TIMEOUT_S, what,
    )  # fmt: skip


async def checkpoint(settings: Settings, min_size: int = 0, min_cosignatures: int = 0) -> Any:
    """The journal's checkpoint once one covers ``min_size`` entries with at
    least ``min_cosignatures`` bank cosignatures (read as the operator)."""
    tls = load_party(settings.certs_dir, "operator")
    request = journal_pb2.WatchCheckpointsRequest(
        min_size=min_size, min_cosignatures=min_cosignatures
    )
    async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
        stub = journal_pb2_grpc.AuditServiceStub(channel)
        return await watch_until(
            lambda left: stub.WatchCheckpoints(request, timeout=left),
            lambda _reply: True, TIMEOUT_S,
            f"a checkpoint of {min_size} entries with {min_cosignatures} cosignatures",
        )  # fmt: skip
