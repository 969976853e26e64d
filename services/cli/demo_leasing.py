"""The demo's lease: an excavator, from application to the first rentals, with no paper."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from services.cli.clock_cmds import advance, platform_today
from services.cli.waits import lease_in, loan_where
from services.gen.scf.leasing.v1 import leasing_pb2, leasing_pb2_grpc
from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.repayment.v1 import repayment_pb2, repayment_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2, underwriting_pb2_grpc
from services.lending.signing import sign_contract
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.proto_enums import word_of

PARTIES = ("acme-builders", "ls-dana", "ls-erik", "liftco")
CNY = "CNY"


def _cny(amount: str) -> money_pb2.Money:
    return money_pb2.Money(amount=amount, currency=CNY)


async def _schedule(stub: Any, lease_id: str) -> list[Any]:
    """The rentals, once repayment has opened them from lending's event."""
    await loan_where(stub, lease_id, lambda _loan: True, f"the rentals of {lease_id} opened")
    reply = await stub.GetSchedule(repayment_pb2.GetScheduleRequest(loan_id=lease_id), timeout=5)
    return list(reply.lines)


async def lease(settings: Settings, out: Console) -> int:
    addr = settings.endpoint("lending").grpc_addr
    async with contextlib.AsyncExitStack() as stack:
        ch = {
            p: await stack.enter_async_context(
                client_channel(addr, load_party(settings.certs_dir, p))
            )
            for p in PARTIES
        }
        leasing = {p: leasing_pb2_grpc.LeasingServiceStub(c) for p, c in ch.items()}
        lending = {p: lending_pb2_grpc.LendingServiceStub(c) for p, c in ch.items()}
        staff = {p: underwriting_pb2_grpc.UnderwritingServiceStub(ch[p]) for p in PARTIES[1:3]}
        today = await platform_today(settings)

        out.rule("10. A paperless lease: acme-builders leases an excavator from lease-one")
        await lending["ls-dana"].CreateFacility(
            lending_pb2.CreateFacilityRequest(
                subcontractor_id="acme-builders",
                limit=money_pb2.Money(amount="1000000.00", currency=CNY),
                expires_on=(today + dt.timedelta(days=1200)).isoformat(), spread_bps=300,
                idempotency_key="demo-lease-facility",
            ),
            timeout=10,
        )  # fmt: skip
        applied = await leasing["acme-builders"].ApplyForLease(
            leasing_pb2.ApplyForLeaseRequest(
                asset=leasing_pb2.Asset(
                    description="excavator EX-220", vendor_id="liftco",
                    serial_number="EX220-7781", price=_cny("450000.00"),
                ),
                down_payment=_cny("90000.00"), term_months=36,
                frequency=leasing_pb2.PAYMENT_FREQUENCY_MONTHLY,
                timing=leasing_pb2.PAYMENT_TIMING_IN_ADVANCE, residual=_cny("45000.00"),
                end_option=leasing_pb2.END_OPTION_PURCHASE, lessor="lease-one",
                idempotency_key="demo-lease-1",
            ),
            timeout=10,
        )  # fmt: skip
        lease_id = applied.lease.lease_id
        out.print(
            f"{lease_id}: price 450,000.00, down 90,000.00, financed"
            f" {applied.lease.financed.amount} CNY over 36 monthly rentals in advance,"
            " residual 45,000.00, purchase option at the end"
        )
        got = await lease_in(leasing["acme-builders"], lease_id, "referred", "approved")
        decision = json.loads(got.decision_json)
        out.print(
            f"scored with {decision['model']} {decision['version']}: {decision['score']} points,"
            f" grade {decision['grade']}, {decision['recommendation']}: to lease-one's staff"
        )
        for who in ("ls-dana", "ls-erik"):
            reply = await staff[who].Approve(
                underwriting_pb2.ApproveRequest(
                    application_id=lease_id,
                    terms=underwriting_pb2.Terms(
                        amount=money_pb2.Money(amount="360000.00", currency=CNY),
                        rate_bps=750,
                    ),
                    reason="the excavator secures the lease; good order book",
                    idempotency_key=f"demo-lease-{who}",
                ),
                timeout=10,
            )
            out.print(f"{who} approves: {word_of(lending_pb2.ApplicationState, reply.state)}")
        got = await lease_in(leasing["acme-builders"], lease_id, "approved")
        for party in ("acme-builders", "ls-dana", "liftco"):
            await sign_contract(
                lending[party], party, got.contract.contract_id, got.contract.sha256, "demo"
            )
        out.print("lessee, lessor and vendor signed the lease and the sale: in effect")
        pay = leasing_pb2.PayVendorRequest(
            lease_id=lease_id, payee_id="acme-builders", amount=_cny("360000.00"),
            payment_reference="LS1-WIRE-0001", idempotency_key="demo-lease-pay-wrong",
        )  # fmt: skip
        try:
            await leasing["ls-dana"].PayVendor(pay, timeout=10)
            out.print("[red]a payment to the lessee was accepted[/]")
            return 1
        except grpc.aio.AioRpcError as exc:
            out.print(f"paying the lessee instead of the vendor: {exc.code().name}")
        pay.payee_id, pay.idempotency_key = "liftco", "demo-lease-pay"
        await leasing["ls-dana"].PayVendor(pay, timeout=10)
        delivered = await leasing["acme-builders"].ConfirmDelivery(
            leasing_pb2.ConfirmDeliveryRequest(
                lease_id=lease_id, serial_number="EX220-7781", idempotency_key="demo-lease-dl"
            ),
            timeout=10,
        )
        out.print(
            f"lease-one paid liftco 360,000.00; acme-builders accepted EX220-7781: the lease is"
            f" {word_of(lending_pb2.ApplicationState, delivered.lease.state)}"
            f" from {delivered.lease.commenced_on}"
        )
    return await _rentals(settings, out, lease_id)


async def _rentals(settings: Settings, out: Console, lease_id: str) -> int:
    addr = settings.endpoint("repayment").grpc_addr
    async with client_channel(addr, load_party(settings.certs_dir, "operator")) as channel:
        repayment = repayment_pb2_grpc.RepaymentServiceStub(channel)
        lines = await _schedule(repayment, lease_id)
        table = Table("rental", "due", "capital", "interest", "total", title="rental schedule")
        for line in [*lines[:3], lines[-2], lines[-1]]:
            label = "residual" if line.number == len(lines) else str(line.number)
            table.add_row(
                label, line.due, line.principal.amount, line.interest.amount, line.total.amount
            )
        out.print(table)
        out.print(
            "  a rental whose date falls on a weekend or a holiday of China's calendar is"
            " due on the next business day (lease-one rolls following); its amount stays"
        )
        for line in lines[:2]:
            now = await platform_today(settings)
            due = dt.date.fromisoformat(line.due)
            if due > now:
                await advance(settings, (due - now).days)
            paid = await repayment.RecordPayment(
                repayment_pb2.RecordPaymentRequest(
                    loan_id=lease_id, payer="acme-builders", amount=line.total,
                    value_date=line.due, bank_reference=f"LS1-RENT-{line.number:03d}",
                    idempotency_key=f"LS1-RENT-{line.number:03d}",
                ),
                timeout=10,
            )  # fmt: skip
            out.print(
                f"{line.due}: rental {line.number} of {line.total.amount} paid (interest"
                f" {paid.interest.amount}, capital {paid.principal.amount}); due now"
                f" {paid.loan.due_now.amount}, capital outstanding"
                f" {paid.loan.principal_outstanding.amount}"
            )
    return 0
