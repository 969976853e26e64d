"""Leasing tests: orders, scoring, lending and repayment on one injected clock."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from services.cli.waits import lease_in, loan_where
from services.contracts.subjects import Subjects
from services.gen.scf.leasing.v1 import leasing_pb2, leasing_pb2_grpc
from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.repayment.v1 import repayment_pb2, repayment_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2, underwriting_pb2_grpc
from services.journal.encoding import decode_statement
from services.lending.signing import sign_contract
from services.runtime.certs import load_party
from services.runtime.clock import ManualClock
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.proto_enums import enum_word
from tests.journal.helpers import wait_until
from tests.lending.helpers import LendingEnv, lending_env

LEASE_PARTIES = (
    "acme-builders", "delta-pumps", "citybuild", "ls-dana", "ls-erik", "lease-one", "liftco",
    "pumpmart", "uw-alice", "operator", "auditor-reg",
)  # fmt: skip
SIGNERS = ("acme-builders", "ls-dana", "liftco")


def lease_request(
    key: str,
    *,
    price: str = "300000.00",
    down: str = "60000.00",
    term: int = 12,
    frequency: int = leasing_pb2.PAYMENT_FREQUENCY_QUARTERLY,
    timing: int = leasing_pb2.PAYMENT_TIMING_IN_ARREARS,
    residual: str = "24000.00",
    option: int = leasing_pb2.END_OPTION_PURCHASE,
    vendor: str = "liftco",
) -> leasing_pb2.ApplyForLeaseRequest:
    return leasing_pb2.ApplyForLeaseRequest(
        asset=leasing_pb2.Asset(
            description="tower crane TC-5013", vendor_id=vendor, serial_number="TC5013-0042",
            price=money_pb2.Money(amount=price, currency="CNY"),
        ),
        down_payment=money_pb2.Money(amount=down, currency="CNY"),
        term_months=term, frequency=frequency, timing=timing,  # type: ignore[arg-type]
        residual=money_pb2.Money(amount=residual, currency="CNY"),
        end_option=option,  # type: ignore[arg-type]
        lessor="lease-one", idempotency_key=key,
    )  # fmt: skip


@dataclass
class LeaseEnv:
    lending_env: LendingEnv
    clock: ManualClock
    channels: dict[str, Any]
    repayment_channels: dict[str, Any]

    @property
    def settings(self) -> Settings:
        return self.lending_env.settings

    def leasing(self, party: str) -> leasing_pb2_grpc.LeasingServiceStub:
        return leasing_pb2_grpc.LeasingServiceStub(self.channels[party])

    def lending(self, party: str) -> lending_pb2_grpc.LendingServiceStub:
        return lending_pb2_grpc.LendingServiceStub(self.channels[party])

    def staff(self, party: str) -> underwriting_pb2_grpc.UnderwritingServiceStub:
        return underwriting_pb2_grpc.UnderwritingServiceStub(self.channels[party])

    def repayment(self, party: str) -> repayment_pb2_grpc.RepaymentServiceStub:
        return repayment_pb2_grpc.RepaymentServiceStub(self.repayment_channels[party])

    async def facility(self, limit: str = "2000000.00") -> None:
        await self.lending("ls-dana").CreateFacility(
            lending_pb2.CreateFacilityRequest(
                subcontractor_id="acme-builders",
                limit=money_pb2.Money(amount=limit, currency="CNY"),
                expires_on=(self.clock.now().date() + dt.timedelta(days=900)).isoformat(),
                spread_bps=300, idempotency_key="lease-facility",
            )
        )  # fmt: skip

    async def get(self, lease_id: str, party: str = "acme-builders") -> leasing_pb2.Lease:
        reply = await self.leasing(party).GetLease(leasing_pb2.GetLeaseRequest(lease_id=lease_id))
        return reply.lease

    async def wait_state(self, lease_id: str, *states: str) -> leasing_pb2.Lease:
        """Watch the lease until it is in one of ``states``."""
        return await lease_in(self.leasing("acme-builders"), lease_id, *states)  # type: ignore[no-any-return]

    async def approve(self, lease_id: str, party: str, amount: str, key: str = "") -> str:
        reply = await self.staff(party).Approve(
            underwriting_pb2.ApproveRequest(
                application_id=lease_id,
                terms=underwriting_pb2.Terms(
                    amount=money_pb2.Money(amount=amount, currency="CNY"), rate_bps=800
                ),
                reason="the asset secures the lease",
                idempotency_key=key or f"approve-{party}-{lease_id}",
            )
        )
        return enum_word(lending_pb2.ApplicationState, reply.state, "state")

    async def sign_all(self, lease: leasing_pb2.Lease) -> leasing_pb2.Lease:
        for party in SIGNERS:
            await sign_contract(
                self.lending(party), party, lease.contract.contract_id, lease.contract.sha256
            )
        return await self.get(lease.lease_id)

    async def in_force(self, request: leasing_pb2.ApplyForLeaseRequest) -> leasing_pb2.Lease:
        """Apply, approve (four eyes), sign, pay the vendor and take delivery."""
        lease = (await self.leasing("acme-builders").ApplyForLease(request)).lease
        lease = await self.wait_state(lease.lease_id, "referred", "approved")
        if lease.state == lending_pb2.APPLICATION_STATE_REFERRED:
            financed = lease.financed.amount
            if await self.approve(lease.lease_id, "ls-dana", financed) != "approved":
                await self.approve(lease.lease_id, "ls-erik", financed)
        lease = await self.sign_all(await self.wait_state(lease.lease_id, "approved"))
        assert lease.state == lending_pb2.APPLICATION_STATE_EFFECTIVE
        await self.leasing("ls-dana").PayVendor(
            leasing_pb2.PayVendorRequest(
                lease_id=lease.lease_id, payee_id=lease.asset.vendor_id, amount=lease.financed,
                payment_reference=f"WIRE-{lease.lease_id}", idempotency_key=f"pay-{lease.lease_id}",
            )
        )  # fmt: skip
        reply = await self.leasing("acme-builders").ConfirmDelivery(
            leasing_pb2.ConfirmDeliveryRequest(
                lease_id=lease.lease_id, serial_number=lease.asset.serial_number,
                idempotency_key=f"delivered-{lease.lease_id}",
            )
        )  # fmt: skip
        await self.rentals_open(lease.lease_id)
        return reply.lease

    async def rentals_open(self, lease_id: str) -> None:
        await loan_where(
            self.repayment("acme-builders"), lease_id, lambda _loan: True,
            f"rentals of {lease_id} open",
        )  # fmt: skip

    async def schedule(self, lease_id: str) -> list[repayment_pb2.ScheduleLine]:
        reply = await self.repayment("acme-builders").GetSchedule(
            repayment_pb2.GetScheduleRequest(loan_id=lease_id)
        )
        return list(reply.lines)

    async def pay(
        self, lease_id: str, amount: str, ref: str, **kw: Any
    ) -> repayment_pb2.RecordPaymentResponse:
        return await self.repayment("operator").RecordPayment(
            repayment_pb2.RecordPaymentRequest(
                loan_id=lease_id, payer="acme-builders",
                amount=money_pb2.Money(amount=amount, currency="CNY"),
                value_date=self.clock.now().date().isoformat(), bank_reference=ref,
                **{"idempotency_key": ref, **kw},
            )
        )  # fmt: skip

    def move_to(self, day: dt.date) -> None:
        self.clock.advance(day - self.clock.now().date())

    async def lease_entries(self, lease_id: str) -> list[tuple[str, str, int]]:
        """(idempotency key, event type, journal seq) of the lease's entries in lending,
        once every lending transition is journaled."""

        async def all_done() -> bool:
            rows = await self.lending_env.orders.sql(
                "SELECT count(*) AS n FROM outbox WHERE journal_seq IS NULL", service="lending"
            )
            return bool(rows[0]["n"] == 0)

        await wait_until(
            all_done, what="every lending transition journaled",
            wake=(Subjects(self.lending_env.settings.nats_prefix).journaled("lending"),),
            nc=self.lending_env.orders.nc,
        )  # fmt: skip
        rows = await self.lending_env.orders.sql(
            "SELECT idempotency_key, statement, journal_seq FROM outbox"
            " WHERE idempotency_key LIKE $1 ORDER BY id",
            f"application/{lease_id}/%",
            service="lending",
        )
        return [
            (
                r["idempotency_key"],
                decode_statement(bytes(r["statement"])).event_type,
                r["journal_seq"],
            )
            for r in rows
        ]


@contextlib.asynccontextmanager
async def lease_env(settings: Settings) -> AsyncIterator[LeaseEnv]:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async with (
        lending_env(settings, clock=clock) as env,
        contextlib.AsyncExitStack() as stack,
    ):

        async def channels(service: str) -> dict[str, Any]:
            addr = settings.endpoint(service).grpc_addr
            return {
                p: await stack.enter_async_context(
                    client_channel(addr, load_party(settings.certs_dir, p))
                )
                for p in LEASE_PARTIES
            }

        yield LeaseEnv(env, clock, await channels("lending"), await channels("repayment"))
