"""Financial leases over real NATS, PostgreSQL and gRPC with mTLS: application to end of lease."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import Any

import grpc
import pytest

from services.cli.waits import loan_where
from services.contracts.business_days import Convention, roll
from services.gen.scf.leasing.v1 import leasing_pb2
from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.repayment.v1 import repayment_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2
from services.repayment.calc import add_months, interest
from services.runtime.config import Settings
from services.runtime.money import parse_money
from tests.lending.lease_helpers import LeaseEnv, lease_env, lease_request
from tests.orders.helpers import bad_request_field

pytestmark = pytest.mark.integration


def minor(money: Any) -> int:
    return parse_money(money.amount, money.currency, "m", positive=False).minor


def major(amount_minor: int) -> str:
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


async def refused(call: Any, code: grpc.StatusCode, field: str = "") -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    if field:
        assert bad_request_field(info.value) == field
    return info.value.details() or ""


def present_value(
    lines: list[Any], rate_bps: int, per_year: int, periods: int, *, in_advance: bool = False
) -> Fraction:
    """An independent check of an annuity: every line discounted at the periodic
    rate over the whole periods before it falls due, counted by its place in the
    schedule (its date is rolled to a business day; its period is not). A residual
    line after the rentals falls due at the end of the term."""
    i = Fraction(rate_bps, 10_000 * per_year)
    pv = Fraction(0)
    for line in lines:
        n = min(line.number - (1 if in_advance else 0), periods)
        pv += Fraction(minor(line.total)) / (1 + i) ** n
    return pv


async def pay_rentals_through(env: LeaseEnv, lease_id: str, last: int, prefix: str) -> None:
    """Pay lines 1..last, each on its due date."""
    for line in await env.schedule(lease_id):
        if line.number > last:
            break
        env.move_to(dt.date.fromisoformat(line.due))
        paid = await env.pay(lease_id, line.total.amount, f"{prefix}-{line.number}")
        assert paid.penalty.amount == "0.00" and paid.surplus.amount == "0.00"


async def test_lease_from_application_to_purchase_at_end_of_term(settings: Settings) -> None:
    async with lease_env(settings) as env:
        await env.facility()
        applied = await env.leasing("acme-builders").ApplyForLease(lease_request("L1"))
        again = await env.leasing("acme-builders").ApplyForLease(lease_request("L1"))
        assert again.lease.lease_id == applied.lease.lease_id  # the same request, once
        lease_id = applied.lease.lease_id
        assert (applied.lease.financed.amount, applied.lease.state) == (
            "240000.00",
            lending_pb2.APPLICATION_STATE_REQUESTED,
        )

        # Scored with the lease model, referred to the leasing company's staff.
        lease = await env.wait_state(lease_id, "referred")
        assert '"model":"scf-lease"' in lease.decision_json
        queue = await env.staff("ls-erik").ListApplications(
            underwriting_pb2.ListApplicationsRequest()
        )
        assert [a.application_id for a in queue.applications] == [lease_id]
        assert '"vendor_id":"liftco"' in queue.applications[0].order_json
        await refused(
            env.leasing("uw-alice").GetLease(leasing_pb2.GetLeaseRequest(lease_id=lease_id)),
            grpc.StatusCode.PERMISSION_DENIED,
        )

        # Four eyes: 240,000.00 is above lease-one's 100,000.00.
        assert await env.approve(lease_id, "ls-dana", "240000.00") == "pending_second_approval"
        await refused(
            env.approve(lease_id, "ls-dana", "240000.00", "again"),
            grpc.StatusCode.PERMISSION_DENIED,
        )  # the second approval comes from a different member of staff
        assert await env.approve(lease_id, "ls-erik", "240000.00") == "approved"

        lease = await env.get(lease_id)
        assert list(lease.contract.signers) == ["acme-builders", "lease-one", "liftco"]
        assert '"kind":"financial-lease"' in lease.contract.document
        lease = await env.sign_all(lease)
        assert lease.state == lending_pb2.APPLICATION_STATE_EFFECTIVE
        assert sorted(lease.contract.signed_by) == ["acme-builders", "lease-one", "liftco"]

        await env.leasing("ls-dana").PayVendor(
            leasing_pb2.PayVendorRequest(
                lease_id=lease_id, payee_id="liftco", amount=lease.financed,
                payment_reference="WIRE-1", idempotency_key="pv1",
            )
        )  # fmt: skip
        facilities = await env.lending("ls-dana").ListFacilities(
            lending_pb2.ListFacilitiesRequest()
        )
        assert facilities.facilities[0].drawn.amount == "240000.00"
        delivered = await env.leasing("acme-builders").ConfirmDelivery(
            leasing_pb2.ConfirmDeliveryRequest(
                lease_id=lease_id, serial_number="TC5013-0042", idempotency_key="dl1"
            )
        )
        assert delivered.lease.state == lending_pb2.APPLICATION_STATE_IN_FORCE
        start = dt.date.fromisoformat(delivered.lease.commenced_on)
        await env.rentals_open(lease_id)

        # The rentals: 4 quarterly, in arrears, and the residual at the end of the term,
        # each on the next business day of China's calendar (lease-one rolls following).
        lines = await env.schedule(lease_id)
        assert [line.due for line in lines] == [
            roll(add_months(start, m), Convention.FOLLOWING, "CN").isoformat()
            for m in (3, 6, 9, 12, 12)
        ]
        assert len({minor(line.total) for line in lines[:3]}) == 1
        assert minor(lines[-1].total) == 2_400_000
        assert sum(minor(line.principal) for line in lines) == 24_000_000
        assert abs(present_value(lines, 800, 4, 4) - 24_000_000) <= 4

        await refused(
            env.leasing("acme-builders").ExerciseOption(
                leasing_pb2.ExerciseOptionRequest(
                    lease_id=lease_id, option=leasing_pb2.END_OPTION_PURCHASE,
                    idempotency_key="too-early",
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )  # fmt: skip

        await pay_rentals_through(env, lease_id, 4, "R")
        purchase = await env.leasing("acme-builders").ExerciseOption(
            leasing_pb2.ExerciseOptionRequest(
                lease_id=lease_id, option=leasing_pb2.END_OPTION_PURCHASE, idempotency_key="buy"
            )
        )
        assert purchase.lease.state == lending_pb2.APPLICATION_STATE_ENDING
        assert purchase.lease.option_exercised == leasing_pb2.END_OPTION_PURCHASE
        paid = await env.pay(lease_id, "24000.00", "OPTION-PRICE")
        assert (
            paid.loan.state == repayment_pb2.LOAN_STATE_SETTLED
            and paid.principal.amount == "24000.00"
        )

        lease = await env.wait_state(lease_id, "closed")
        assert lease.outcome == lending_pb2.APPLICATION_OUTCOME_PURCHASED
        facilities = await env.lending("ls-dana").ListFacilities(
            lending_pb2.ListFacilitiesRequest()
        )
        assert facilities.facilities[0].drawn.amount == "0.00"

        # One journal entry per transition, every one journaled, in order.
        entries = await env.lease_entries(lease_id)
        keys = [key for key, _, _ in entries]
        assert keys == [f"application/{lease_id}/v{n}" for n in range(1, len(keys) + 1)]
        assert all(seq is not None for _, _, seq in entries)
        events = [event for _, event, _ in entries]
        for expected in (
            "application.requested", "application.scored", "application.referred",
            "application.first_approval", "application.approved", "application.signed_by_lessee",
            "application.signed_by_lessor", "application.signed_by_vendor",
            "application.effective", "application.vendor_paid",
            "application.delivered_and_accepted", "application.option_exercised",
            "application.facility_restored", "application.ownership_transferred",
            "application.lease_ended",
        ):  # fmt: skip
            assert events.count(expected) == 1, expected


async def test_early_termination_with_a_quote(settings: Settings) -> None:
    async with lease_env(settings) as env:
        await env.facility()
        lease = await env.in_force(
            lease_request(
                "L2", price="120000.00", down="20000.00", term=24, residual="0",
                frequency=leasing_pb2.PAYMENT_FREQUENCY_MONTHLY,
                timing=leasing_pb2.PAYMENT_TIMING_IN_ADVANCE,
            )
        )  # fmt: skip
        start = dt.date.fromisoformat(lease.commenced_on)
        lines = await env.schedule(lease.lease_id)
        assert len(lines) == 24
        assert lines[0].due == roll(start, Convention.FOLLOWING, "CN").isoformat()
        assert minor(lines[0].interest) == 0  # in advance: no interest before the first rental
        assert abs(present_value(lines, 800, 12, 24, in_advance=True) - 10_000_000) <= 24

        await pay_rentals_through(env, lease.lease_id, 3, "E")
        today = env.clock.now().date()
        short = await env.repayment("acme-builders").QuotePayoff(
            repayment_pb2.QuotePayoffRequest(loan_id=lease.lease_id, valid_until=today.isoformat())
        )
        week = (today + dt.timedelta(days=7)).isoformat()
        quote = await env.repayment("acme-builders").QuotePayoff(
            repayment_pb2.QuotePayoffRequest(loan_id=lease.lease_id, valid_until=week)
        )
        # Every rental to come, without the interest it has not earned.
        future = [line for line in lines if line.number > 3]
        assert minor(quote.amount) == minor(short.amount)
        assert minor(quote.amount) == sum(minor(line.principal) for line in future)

        # A day later the short quote has expired: refused, saying so, nothing changed.
        env.move_to(today + dt.timedelta(days=1))
        expired = await refused(
            env.leasing("acme-builders").ExerciseOption(
                leasing_pb2.ExerciseOptionRequest(
                    lease_id=lease.lease_id, option=leasing_pb2.END_OPTION_PURCHASE,
                    quote_id=short.quote_id, idempotency_key="early-expired-quote",
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )  # fmt: skip
        assert f"quote {short.quote_id} expired on {today.isoformat()}" in expired

        for option in (leasing_pb2.END_OPTION_RETURN, leasing_pb2.END_OPTION_PURCHASE):
            await refused(
                env.leasing("acme-builders").ExerciseOption(
                    leasing_pb2.ExerciseOptionRequest(
                        lease_id=lease.lease_id, option=option,
                        quote_id=quote.quote_id if option == leasing_pb2.END_OPTION_RETURN else "",
                        idempotency_key=f"early-{option}",
                    )
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
            )  # fmt: skip
        await refused(
            env.leasing("acme-builders").ExerciseOption(
                leasing_pb2.ExerciseOptionRequest(
                    lease_id=lease.lease_id, option=leasing_pb2.END_OPTION_PURCHASE,
                    quote_id="QTE-NOPE", idempotency_key="early-bad-quote",
                )
            ),
            grpc.StatusCode.NOT_FOUND,
        )  # fmt: skip
        assert (await env.get(lease.lease_id)).state == lending_pb2.APPLICATION_STATE_IN_FORCE

        ended = await env.leasing("acme-builders").ExerciseOption(
            leasing_pb2.ExerciseOptionRequest(
                lease_id=lease.lease_id, option=leasing_pb2.END_OPTION_PURCHASE,
                quote_id=quote.quote_id, idempotency_key="early",
            )
        )  # fmt: skip
        assert ended.lease.state == lending_pb2.APPLICATION_STATE_ENDING
        paid = await env.pay(lease.lease_id, quote.amount.amount, "TERM-1", quote_id=quote.quote_id)
        assert paid.loan.state == repayment_pb2.LOAN_STATE_SETTLED and paid.surplus.amount == "0.00"
        closed = await env.wait_state(lease.lease_id, "closed")
        assert closed.outcome == lending_pb2.APPLICATION_OUTCOME_TERMINATED
        events = [e for _, e, _ in await env.lease_entries(lease.lease_id)]
        assert events.count("application.ownership_transferred") == 1


async def test_overdue_rental_then_return_at_end_of_term(settings: Settings) -> None:
    async with lease_env(settings) as env:
        await env.facility()
        lease = await env.in_force(
            lease_request(
                "L3", price="60000.00", down="12000.00", term=6, residual="6000.00",
                frequency=leasing_pb2.PAYMENT_FREQUENCY_MONTHLY,
                option=leasing_pb2.END_OPTION_RETURN,
            )
        )  # fmt: skip
        lines = await env.schedule(lease.lease_id)
        first = lines[0]
        due = dt.date.fromisoformat(first.due)
        env.move_to(due + dt.timedelta(days=8))  # five days' grace, then three days late
        repayment = env.repayment("acme-builders")

        await loan_where(
            repayment, lease.lease_id, lambda loan: loan.fees_owed.amount == "200.00",
            "the late fee on the first rental",
        )  # fmt: skip
        loan = (await repayment.GetLoan(repayment_pb2.GetLoanRequest(loan_id=lease.lease_id))).loan
        grace_over = due + dt.timedelta(days=5)
        penalty = interest(minor(first.total), 1200, grace_over, env.clock.now().date(), "ACT/365")
        assert (loan.days_past_due, loan.bucket) == (3, "1-30")
        assert minor(loan.penalty_owed) == penalty > 0
        assert minor(loan.due_now) == minor(first.total) + penalty + 20_000

        paid = await env.pay(lease.lease_id, loan.due_now.amount, "LATE-1")
        assert (minor(paid.penalty), minor(paid.fees)) == (penalty, 20_000)
        assert paid.loan.days_past_due == 0 and minor(paid.loan.due_now) == 0

        for line in lines[1:6]:
            env.move_to(dt.date.fromisoformat(line.due))
            await env.pay(lease.lease_id, line.total.amount, f"R3-{line.number}")
        returned = await env.leasing("acme-builders").ExerciseOption(
            leasing_pb2.ExerciseOptionRequest(
                lease_id=lease.lease_id, option=leasing_pb2.END_OPTION_RETURN,
                idempotency_key="return",
            )
        )  # fmt: skip
        assert returned.lease.state == lending_pb2.APPLICATION_STATE_ENDING
        closed = await env.wait_state(lease.lease_id, "closed")
        assert closed.outcome == lending_pb2.APPLICATION_OUTCOME_RETURNED
        residual = (await env.schedule(lease.lease_id))[-1]
        assert residual.waived and minor(residual.total) == 600_000
        events = [e for _, e, _ in await env.lease_entries(lease.lease_id)]
        assert events.count("application.asset_returned") == 1
        assert "application.ownership_transferred" not in events


@pytest.mark.parametrize(
    "timing", [leasing_pb2.PAYMENT_TIMING_IN_ARREARS, leasing_pb2.PAYMENT_TIMING_IN_ADVANCE]
)
async def test_renewal_turns_the_residual_into_further_rentals(
    settings: Settings, timing: int
) -> None:
    """In advance too, the residual itself (20,000.00) becomes the renewal's
    capital, not its value discounted one period (19,6xx)."""
    async with lease_env(settings) as env:
        await env.facility()
        lease = await env.in_force(
            lease_request("L4", option=leasing_pb2.END_OPTION_RENEW, price="100000.00",
                          down="20000.00", residual="20000.00", timing=timing)
        )  # fmt: skip
        await pay_rentals_through(env, lease.lease_id, 4, "N")
        residual = (await env.schedule(lease.lease_id))[4]
        env.move_to(dt.date.fromisoformat(residual.due))  # the term's end, on a business day
        renewal = leasing_pb2.ExerciseOptionRequest(
            lease_id=lease.lease_id, option=leasing_pb2.END_OPTION_RENEW, idempotency_key="renew"
        )
        await refused(
            env.leasing("acme-builders").ExerciseOption(renewal),
            grpc.StatusCode.INVALID_ARGUMENT, "renewal_periods",
        )  # fmt: skip
        renewal.renewal_periods = 2
        renewal.idempotency_key = "renew-2"
        await env.leasing("acme-builders").ExerciseOption(renewal)
        # One choice per lease: a purchase after the renewal is refused.
        await refused(
            env.leasing("acme-builders").ExerciseOption(
                leasing_pb2.ExerciseOptionRequest(
                    lease_id=lease.lease_id, option=leasing_pb2.END_OPTION_PURCHASE,
                    idempotency_key="buy-after-renewing",
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )  # fmt: skip
        lines = await env.schedule(lease.lease_id)
        assert [line.number for line in lines] == [1, 2, 3, 4, 5, 6, 7] and lines[4].waived
        assert minor(lines[5].principal) + minor(lines[6].principal) == 2_000_000
        for line in lines[5:]:
            env.move_to(dt.date.fromisoformat(line.due))
            await env.pay(lease.lease_id, line.total.amount, f"RN-{line.number}")
        closed = await env.wait_state(lease.lease_id, "closed")
        assert closed.outcome == lending_pb2.APPLICATION_OUTCOME_RENEWED


async def test_bad_lease_input_is_refused_and_changes_nothing(settings: Settings) -> None:
    async with lease_env(settings) as env:
        await env.facility()
        lessee = env.leasing("acme-builders")
        cases = [
            (lease_request("b1", down="300000.01"), "down_payment.amount"),
            (lease_request("b2", down="300000.00"), "down_payment.amount"),
            (lease_request("b3", term=0), "term_months"),
            (lease_request("b4", term=-12), "term_months"),
            (lease_request("b5", residual="300000.01"), "residual.amount"),
            (lease_request("b6", residual="250000.00"), "residual.amount"),
            # The whole amount financed as residual: capital lines would go negative.
            (lease_request("b6b", residual="240000.00"), "residual.amount"),
            # A 20.00 lease over 120 months ended with a rental of -0.24.
            (
                lease_request(
                    "b6c",
                    price="20.00",
                    down="0.00",
                    residual="0.00",
                    term=120,
                    frequency=leasing_pb2.PAYMENT_FREQUENCY_MONTHLY,
                ),
                "asset.price",
            ),
            (lease_request("b7", term=10), "term_months"),
            (lease_request("b8", frequency=0), "frequency"),
            (lease_request("b9", timing=0), "timing"),
            (lease_request("b10", option=0), "end_option"),
            (lease_request("b11", vendor="acme-builders"), "asset.vendor_id"),
            (lease_request("b12", price="-5.00"), "asset.price.amount"),
            (lease_request("b13", down="-1.00"), "down_payment.amount"),
        ]
        for request, field in cases:
            await refused(lessee.ApplyForLease(request), grpc.StatusCode.INVALID_ARGUMENT, field)
        await refused(
            env.leasing("citybuild").ApplyForLease(lease_request("b14")),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        other_lessor = lease_request("b15")
        other_lessor.lessor = "lease-two"
        await refused(lessee.ApplyForLease(other_lessor), grpc.StatusCode.FAILED_PRECONDITION)
        rows = await env.lending_env.orders.sql(
            "SELECT count(*) AS n FROM applications", service="lending"
        )
        assert rows[0]["n"] == 0

        # A lease waiting for its vendor payment: refusals leave it as it is.
        small = lease_request("ok", price="50000.00", down="10000.00", residual="0")
        lease = (await lessee.ApplyForLease(small)).lease
        lease = await env.wait_state(lease.lease_id, "referred")
        await env.approve(lease.lease_id, "ls-dana", "40000.00")
        approved = await env.wait_state(lease.lease_id, "approved")
        await refused(
            env.leasing("ls-dana").PayVendor(
                leasing_pb2.PayVendorRequest(
                    lease_id=lease.lease_id, payee_id="liftco", amount=approved.financed,
                    payment_reference="W0", idempotency_key="pv-early",
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )  # fmt: skip
        await refused(
            env.lending("pumpmart").SignContract(
                lending_pb2.SignContractRequest(
                    contract_id=approved.contract.contract_id, signature=b"x" * 64,
                    idempotency_key="s-wrong",
                )
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )  # fmt: skip
        effective = await env.sign_all(approved)
        before = await env.lease_entries(lease.lease_id)
        pay = leasing_pb2.PayVendorRequest(
            lease_id=lease.lease_id, payee_id="pumpmart", amount=effective.financed,
            payment_reference="W1", idempotency_key="pv-1",
        )  # fmt: skip
        details = await refused(
            env.leasing("ls-dana").PayVendor(pay), grpc.StatusCode.INVALID_ARGUMENT, "payee_id"
        )
        assert "liftco" in details
        pay.payee_id, pay.idempotency_key = "acme-builders", "pv-2"
        await refused(env.leasing("ls-dana").PayVendor(pay), grpc.StatusCode.INVALID_ARGUMENT)
        pay.payee_id, pay.idempotency_key = "liftco", "pv-3"
        pay.amount.amount = "39999.99"
        await refused(env.leasing("ls-dana").PayVendor(pay), grpc.StatusCode.INVALID_ARGUMENT)
        pay.amount.amount, pay.idempotency_key = "40000.00", "pv-4"
        await refused(env.leasing("uw-alice").PayVendor(pay), grpc.StatusCode.PERMISSION_DENIED)
        await refused(lessee.PayVendor(pay), grpc.StatusCode.PERMISSION_DENIED)
        await refused(
            lessee.ConfirmDelivery(
                leasing_pb2.ConfirmDeliveryRequest(
                    lease_id=lease.lease_id, serial_number="TC5013-0042", idempotency_key="d0"
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert (await env.get(lease.lease_id)).state == lending_pb2.APPLICATION_STATE_EFFECTIVE
        assert await env.lease_entries(lease.lease_id) == before

        await env.leasing("ls-dana").PayVendor(pay)
        await refused(
            env.leasing("delta-pumps").ConfirmDelivery(
                leasing_pb2.ConfirmDeliveryRequest(
                    lease_id=lease.lease_id, serial_number="TC5013-0042", idempotency_key="d1"
                )
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        await refused(
            lessee.ConfirmDelivery(
                leasing_pb2.ConfirmDeliveryRequest(
                    lease_id=lease.lease_id, serial_number="TC5013-9999", idempotency_key="d2"
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "serial_number",
        )
        assert (await env.get(lease.lease_id)).state == lending_pb2.APPLICATION_STATE_VENDOR_PAID


async def test_the_booked_lease_is_the_signed_contract(settings: Settings) -> None:
    """lease-one's product, as its contract states it, is what its rentals are charged."""
    import json

    from services.contracts.products import penalty_rate, product_for

    async with lease_env(settings) as env:
        await env.facility()
        lease = await env.in_force(lease_request("L-SIGNED"))
        signed = json.loads(lease.contract.document)
        booked = (
            await env.repayment("acme-builders").GetLoan(
                repayment_pb2.GetLoanRequest(loan_id=lease.lease_id)
            )
        ).loan
        product = product_for("lease-one")
        assert signed["day_count"] == booked.day_count == product.day_count
        assert signed["grace_days"] == booked.grace_days == product.grace_days
        assert (
            signed["penalty_rate_bps"]
            == booked.penalty_rate_bps
            == penalty_rate(signed["rate_bps"])
        )
        assert signed["rate_bps"] == booked.rate_bps == lease.rate_bps
        assert (
            signed["financed_minor"]
            == parse_money(booked.principal.amount, "CNY", "principal").minor
        )
        assert signed["late_fee_minor"] == product.late_fee_minor
        assert signed["business_days"] == product.business_days.value == "following"
        assert signed["holiday_calendar"] == booked.holiday_calendar == "CN"
        assert booked.business_days == "following"
