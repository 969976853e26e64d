"""Orders tests: the journal and the orders service over real NATS, PostgreSQL and mTLS gRPC."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import nats
from google.rpc import error_details_pb2, status_pb2

from services.contracts.subjects import OrderVerb, Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.journal.service import SPEC as JOURNAL
from services.orders.service import SPEC as ORDERS
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from tests.journal.helpers import wait_until
from tests.support import ask, messenger_as, running

CONTRACT = hashlib.sha256(b"signed contract PDF").digest()


def register_request(ref: str = "PO-1", **changes: Any) -> orders_pb2.RegisterOrderRequest:
    fields: dict[str, Any] = {
        "buyer_id": "citybuild",
        "amount": money_pb2.Money(amount="4000000.00", currency="CNY"),
        "issue_date": "2027-01-05",
        "due_date": "2027-04-30",
        "line_items": [
            orders_pb2.LineItem(
                description="flood barrier steel, tonnes",
                quantity=400,
                unit_price=money_pb2.Money(amount="9000.00", currency="CNY"),
            ),
            orders_pb2.LineItem(
                description="installation",
                quantity=1,
                unit_price=money_pb2.Money(amount="400000.00", currency="CNY"),
            ),
        ],
        "contract_sha256": CONTRACT,
        "reference": ref,
        "idempotency_key": f"register-{ref}",
    }
    fields.update(changes)
    return orders_pb2.RegisterOrderRequest(**fields)


@dataclass
class OrdersEnv:
    settings: Settings
    channels: dict[str, Any] = field(default_factory=dict)
    nc: Any = None

    def stub(self, party: str) -> orders_pb2_grpc.OrdersServiceStub:
        return orders_pb2_grpc.OrdersServiceStub(self.channels[party])

    async def command(
        self, verb: OrderVerb, order_id: str, application: str, bank: str = "bank-north"
    ) -> bus_pb2.PledgeResult:
        """A command signed as the service that may send it; a refusal in ``error``."""
        messenger = messenger_as(self.settings, self.nc, verb.sender)
        command = bus_pb2.PledgeCommand(order_id=order_id, application_id=application, bank=bank)
        subject = Subjects(self.settings.nats_prefix).order_command(verb)
        return await ask(messenger, subject, command, bus_pb2.PledgeResult, "orders")  # type: ignore[no-any-return]

    async def sql(self, query: str, *args: Any, service: str = "orders") -> Any:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            await conn.execute(f'SET search_path TO "{self.settings.endpoint(service).schema}"')
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def journaled(self) -> dict[str, int]:
        """Outbox rows of the orders service, once every one is journaled."""

        async def all_done() -> bool:
            rows = await self.sql("SELECT count(*) AS n FROM outbox WHERE journal_seq IS NULL")
            return bool(rows[0]["n"] == 0)

        wake = (Subjects(self.settings.nats_prefix).journaled("orders"),)
        await wait_until(all_done, what="every order transition journaled", wake=wake, nc=self.nc)
        rows = await self.sql("SELECT idempotency_key, journal_seq FROM outbox")
        return {r["idempotency_key"]: r["journal_seq"] for r in rows}


PARTIES = (
    "acme-builders",
    "delta-pumps",
    "citybuild",
    "harbor-works",
    "uw-alice",
    "uw-carol",
    "auditor-reg",
    "operator",
)


@contextlib.asynccontextmanager
async def orders_env(settings: Settings) -> AsyncIterator[OrdersEnv]:
    env = OrdersEnv(settings)
    addr = settings.endpoint("orders").grpc_addr
    async with (
        running(JOURNAL, settings),
        running(ORDERS, settings),
        contextlib.AsyncExitStack() as stack,
    ):
        for party in PARTIES:
            env.channels[party] = await stack.enter_async_context(
                client_channel(addr, load_party(settings.certs_dir, party))
            )
        env.nc = await nats.connect(settings.nats_url)
        try:
            yield env
        finally:
            await env.nc.close()


def bad_request_field(exc: grpc.aio.AioRpcError) -> str:
    """The field named by a BadRequest detail of a refused call."""
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return str(bad.field_violations[0].field)
    return ""
