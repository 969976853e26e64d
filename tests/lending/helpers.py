"""Lending tests: journal, orders, scoring and lending over real NATS, PostgreSQL and gRPC."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.orders.v1 import orders_pb2
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2, underwriting_pb2_grpc
from services.lending.service import SPEC as LENDING
from services.lending.signing import sign_contract
from services.repayment.service import SPEC as REPAYMENT
from services.runtime.config import Settings
from services.runtime.proto_enums import enum_number, enum_word
from services.runtime.watch_client import watch_until
from services.scoring.service import SPEC as SCORING
from tests.orders.helpers import OrdersEnv, orders_env, register_request
from tests.support import running

TODAY = dt.date.today()


@dataclass
class LendingEnv:
    orders: OrdersEnv

    @property
    def settings(self) -> Settings:
        return self.orders.settings

    def lending(self, party: str) -> lending_pb2_grpc.LendingServiceStub:
        return lending_pb2_grpc.LendingServiceStub(self.channel(party))

    def underwriting(self, party: str) -> underwriting_pb2_grpc.UnderwritingServiceStub:
        return underwriting_pb2_grpc.UnderwritingServiceStub(self.channel(party))

    def channel(self, party: str) -> Any:
        return self.orders.lending_channels[party]  # type: ignore[attr-defined]

    async def facility(
        self, limit: str = "5000000.00", bank_party: str = "uw-alice"
    ) -> lending_pb2.Facility:
        reply = await self.lending(bank_party).CreateFacility(
            lending_pb2.CreateFacilityRequest(
                subcontractor_id="acme-builders",
                limit=money_pb2.Money(amount=limit, currency="CNY"),
                expires_on=(TODAY + dt.timedelta(days=365)).isoformat(),
                spread_bps=200,
                idempotency_key=f"fac-{bank_party}-{limit}",
            )
        )
        return reply.facility

    async def confirmed_order(
        self, ref: str, *, accepted: bool = False, due_in_days: int = 115
    ) -> str:
        sub, buyer = self.orders.stub("acme-builders"), self.orders.stub("citybuild")
        due = (TODAY + dt.timedelta(days=due_in_days)).isoformat()
        issue = (TODAY - dt.timedelta(days=1)).isoformat()
        oid = (
            await sub.RegisterOrder(register_request(ref, due_date=due, issue_date=issue))
        ).order.order_id
        await buyer.ConfirmOrder(
            orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key=f"c-{ref}")
        )
        if accepted:
            await sub.RecordDelivery(
                orders_pb2.RecordDeliveryRequest(order_id=oid, idempotency_key=f"d-{ref}")
            )
            await buyer.AcceptDelivery(
                orders_pb2.AcceptDeliveryRequest(order_id=oid, idempotency_key=f"a-{ref}")
            )
        return oid

    async def request(self, oid: str, amount: str, bank: str = "bank-north", key: str = "") -> str:
        reply = await self.lending("acme-builders").RequestFinancing(
            lending_pb2.RequestFinancingRequest(
                order_id=oid, bank=bank, amount=money_pb2.Money(amount=amount, currency="CNY"),
                idempotency_key=key or f"req-{oid}",
            )
        )  # fmt: skip
        return reply.application.application_id

    async def get(
        self, application_id: str, party: str = "acme-builders"
    ) -> lending_pb2.Application:
        reply = await self.lending(party).GetApplication(
            lending_pb2.GetApplicationRequest(application_id=application_id)
        )
        return reply.application

    async def wait_state(
        self, application_id: str, *states: str, timeout: float = 30, party: str = "acme-builders"
    ) -> lending_pb2.Application:
        """Watch the application until it is in one of ``states``."""
        request = lending_pb2.WatchApplicationRequest(application_id=application_id)
        wanted = {enum_number(lending_pb2.ApplicationState, s) for s in states}
        reply = await watch_until(
            lambda left: self.lending(party).WatchApplication(request, timeout=left),
            lambda r: r.application.state in wanted,
            timeout, f"application {application_id} in {states}",
        )  # fmt: skip
        return reply.application

    async def approve(self, application_id: str, party: str, amount: str, key: str) -> str:
        reply = await self.underwriting(party).Approve(
            underwriting_pb2.ApproveRequest(
                application_id=application_id,
                terms=underwriting_pb2.Terms(
                    amount=money_pb2.Money(amount=amount, currency="CNY"),
                    rate_bps=600,
                    tenor_days=0,  # matures at the order's due date
                ),
                idempotency_key=key,
            )
        )
        return enum_word(lending_pb2.ApplicationState, reply.state, "state")

    async def sign_all(self, app: lending_pb2.Application) -> lending_pb2.Application:
        for party in ("acme-builders", "uw-alice", "citybuild"):
            reply = await sign_contract(
                self.lending(party), party, app.contract.contract_id, app.contract.sha256
            )
            app = reply.application
        return app


@contextlib.asynccontextmanager
async def lending_env(
    settings: Settings, *, repayment_clock: Any = None, **lending_kwargs: Any
) -> AsyncIterator[LendingEnv]:
    """Orders, scoring, repayment (scoring needs a borrower's record) and lending;
    repayment on ``repayment_clock``, or on lending's clock when it has one."""
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import client_channel
    from tests.orders.helpers import PARTIES

    async with (
        orders_env(settings) as env,
        running(SCORING, settings),
        running(REPAYMENT, settings, clock=repayment_clock or lending_kwargs.get("clock")),
        running(LENDING, settings, **lending_kwargs),
        contextlib.AsyncExitStack() as stack,
    ):
        addr = settings.endpoint("lending").grpc_addr
        env.lending_channels = {  # type: ignore[attr-defined]
            p: await stack.enter_async_context(
                client_channel(addr, load_party(settings.certs_dir, p))
            )
            for p in (*PARTIES, "uw-bob")
        }
        yield LendingEnv(env)
