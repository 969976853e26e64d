"""Repayment over the real services: a loan from disbursement to settlement."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from services.cli.waits import application_where
from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.orders.v1 import orders_pb2
from services.gen.scf.repayment.v1 import repayment_pb2, repayment_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.repayment.calc import interest
from services.runtime.certs import load_party
from services.runtime.clock import ManualClock
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.money import Money
from services.runtime.watch_client import watch_until
from tests.journal.helpers import wait_on_platform
from tests.lending.helpers import LendingEnv, lending_env

pytestmark = pytest.mark.integration


async def _disbursed_loan(env: LendingEnv, ref: str, amount: str = "500000.00") -> tuple[str, str]:
    await env.facility()
    oid = await env.confirmed_order(ref)
    app_id = await env.request(oid, amount)
    await env.wait_state(app_id, "referred")
    await env.approve(app_id, "uw-alice", amount, f"a-{ref}")
    await env.sign_all(await env.get(app_id))
    await env.wait_state(app_id, "disbursed")
    return app_id, oid


async def _opened(repayment: Any, loan_id: str) -> repayment_pb2.Loan:
    """Until repayment has opened the loan from lending's disbursement event."""
    request = repayment_pb2.WatchLoanRequest(loan_id=loan_id)
    reply = await watch_until(
        lambda left: repayment.WatchLoan(request, timeout=left),
        lambda _reply: True, 30, f"loan {loan_id} opened",
    )  # fmt: skip
    return reply.loan


async def _loan_until(
    repayment: Any, loan_id: str, reached: Callable[[repayment_pb2.Loan], bool], what: str
) -> repayment_pb2.Loan:
    request = repayment_pb2.WatchLoanRequest(loan_id=loan_id)
    reply = await watch_until(
        lambda left: repayment.WatchLoan(request, timeout=left),
        lambda r: reached(r.loan), 30, what,
    )  # fmt: skip
    return reply.loan


def _pay(
    loan_id: str, amount: str, day: dt.date, ref: str, payer: str = "citybuild", **kw: Any
) -> Any:
    return repayment_pb2.RecordPaymentRequest(
        loan_id=loan_id, payer=payer, amount=money_pb2.Money(amount=amount, currency="CNY"),
        value_date=day.isoformat(), bank_reference=ref, **{"idempotency_key": ref, **kw},
    )  # fmt: skip


async def test_paid_at_due_date_settles_order_and_restores_facility(settings: Settings) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async with lending_env(settings, repayment_clock=clock) as env:
        loan_id, oid = await _disbursed_loan(env, "PO-P1")
        addr = settings.endpoint("repayment").grpc_addr
        async with (
            client_channel(addr, load_party(settings.certs_dir, "operator")) as op_ch,
            client_channel(addr, load_party(settings.certs_dir, "acme-builders")) as sub_ch,
        ):
            operator = repayment_pb2_grpc.RepaymentServiceStub(op_ch)
            borrower = repayment_pb2_grpc.RepaymentServiceStub(sub_ch)

            await _opened(borrower, loan_id)
            loan = (await borrower.GetLoan(repayment_pb2.GetLoanRequest(loan_id=loan_id))).loan
            [line] = (
                await borrower.GetSchedule(repayment_pb2.GetScheduleRequest(loan_id=loan_id))
            ).lines
            start, due = (
                dt.date.fromisoformat(loan.disbursed_on),
                dt.date.fromisoformat(loan.due_date),
            )
            expected_interest = interest(50_000_000, 600, start, due, "ACT/365")
            assert (line.principal.amount, line.interest.amount) == (
                "500000.00", f"{expected_interest / 100:.2f}",
            )  # fmt: skip

            clock.advance(due - clock.now().date())
            today = clock.now().date()
            with pytest.raises(
                grpc.aio.AioRpcError
            ) as info:  # only the account's operator reports payments
                await borrower.RecordPayment(_pay(loan_id, "1.00", today, "x"))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            for request, code in [
                (
                    _pay(loan_id, "1.00", today + dt.timedelta(days=1), "f1"),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (_pay(loan_id, "0", today, "f2"), grpc.StatusCode.INVALID_ARGUMENT),
                (
                    repayment_pb2.RecordPaymentRequest(
                        loan_id=loan_id,
                        payer="citybuild",
                        amount=money_pb2.Money(amount="1.00", currency="USD"),
                        value_date=today.isoformat(),
                        bank_reference="f3",
                        idempotency_key="f3",
                    ),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (_pay("APP-UNKNOWN", "10.00", today, "u1"), grpc.StatusCode.NOT_FOUND),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await operator.RecordPayment(request)
                assert info.value.code() == code, info.value.details()
            unmatched = await operator.ListUnmatched(repayment_pb2.ListUnmatchedRequest())
            assert [p.bank_reference for p in unmatched.payments] == ["u1"]

            # Settlements lending cannot apply (malformed, or of no loan) come
            # first: they are set aside, and the real one still restores the facility.
            js = env.orders.nc.jetstream()
            for junk in (b"{not json", b'{"loan_id": "APP-NONE"}', b"{}"):
                await js.publish(f"{settings.nats_prefix}.repayment.settled", junk)

            # The buyer pays the whole order amount into the supervised account.
            paid = await operator.RecordPayment(_pay(loan_id, "4000000.00", today, "BANKREF-1"))
            assert paid.expected_payer
            assert paid.interest.amount == f"{expected_interest / 100:.2f}"
            assert paid.principal.amount == "500000.00" and paid.penalty.amount == "0.00"
            fee = 50_000_000 * 25 // 10_000  # bank-north's arrangement fee: 25 bp
            assert paid.fees.amount == f"{fee / 100:.2f}"
            total = 400_000_000 - 50_000_000 - expected_interest - fee
            assert paid.surplus.amount == f"{total / 100:.2f}"
            assert paid.loan.state == repayment_pb2.LOAN_STATE_SETTLED
            # A retry of the call gets its first answer; the same reference under
            # another key is a second payment of one transfer: refused.
            again = await operator.RecordPayment(_pay(loan_id, "4000000.00", today, "BANKREF-1"))
            assert again == paid
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await operator.RecordPayment(
                    _pay(loan_id, "4000000.00", today, "BANKREF-1", idempotency_key="other")
                )
            assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await operator.RecordPayment(_pay(loan_id, "5.00", today, "BANKREF-2"))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

            statement = await borrower.GetStatement(
                repayment_pb2.GetStatementRequest(loan_id=loan_id)
            )
            kinds = [line.kind for line in statement.lines]
            assert kinds[0] == "disbursed" and kinds[-1] == "settled"
            assert "surplus-to-subcontractor" in kinds and "payment" in kinds
            allowed = {"disbursed", "payment", "allocated-penalty", "allocated-fees",
                       "allocated-interest", "allocated-principal",
                       "surplus-to-subcontractor", "settled"}  # fmt: skip
            assert set(kinds) <= allowed, kinds

            # Every line names its journal entry, once the journal confirmed it.
            async def all_named() -> bool:
                got = await borrower.GetStatement(
                    repayment_pb2.GetStatementRequest(loan_id=loan_id)
                )
                return all(line.journal_seq for line in got.lines)

            await wait_on_platform(settings, all_named, "every statement line's journal entry")
            named = await borrower.GetStatement(repayment_pb2.GetStatementRequest(loan_id=loan_id))
            seqs = [line.journal_seq for line in named.lines]
            assert seqs == sorted(seqs) and len(set(seqs)) == 3  # opened, payment, settled
            payment = next(line for line in named.lines if line.kind == "payment")
            assert payment.party == "citybuild" and payment.reference == "BANKREF-1"

        sub = env.orders.stub("acme-builders")
        watch = orders_pb2.WatchOrderRequest(order_id=oid)
        await watch_until(
            lambda left: sub.WatchOrder(watch, timeout=left),
            lambda r: r.order.state == orders_pb2.ORDER_STATE_SETTLED,
            30, "orders to mark the order settled",
        )  # fmt: skip

        await application_where(
            env.lending("acme-builders"), loan_id, lambda app: app.facility_restored,
            "lending to restore the facility",
        )  # fmt: skip
        facilities = await env.lending("acme-builders").ListFacilities(
            lending_pb2.ListFacilitiesRequest()
        )
        assert facilities.facilities[0].drawn.amount == "0.00"


@contextlib.asynccontextmanager
async def _open_loan(
    settings: Settings, ref: str
) -> AsyncIterator[tuple[LendingEnv, ManualClock, Any, repayment_pb2.Loan]]:
    """A bank-north loan opened in repayment, whose clock the test moves; the
    operator's repayment stub."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async with lending_env(settings, repayment_clock=clock) as env:
        loan_id, _ = await _disbursed_loan(env, ref)
        addr = settings.endpoint("repayment").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "operator")) as channel:
            repayment = repayment_pb2_grpc.RepaymentServiceStub(channel)
            await _opened(repayment, loan_id)
            loan = (await repayment.GetLoan(repayment_pb2.GetLoanRequest(loan_id=loan_id))).loan
            yield env, clock, repayment, loan


async def test_overdue_then_payoff_with_penalty(settings: Settings) -> None:
    async with _open_loan(settings, "PO-P2") as (_, clock, repayment, loan):
        loan_id = loan.loan_id
        due = dt.date.fromisoformat(loan.due_date)
        assert loan.grace_days == 3  # bank-north's product
        overdue_from = due + dt.timedelta(days=3)
        clock.advance(overdue_from - clock.now().date() + dt.timedelta(days=45))

        # The sweep records the change of bucket (and charges the late fee).
        await _loan_until(
            repayment, loan_id,
            lambda got: got.bucket == "31-60" and got.fees_owed.amount == "1750.00",
            "45 days past due, recorded by the sweep",
        )  # fmt: skip
        loan = (await repayment.GetLoan(repayment_pb2.GetLoanRequest(loan_id=loan_id))).loan
        penalty = interest(
            50_000_000, 900, overdue_from, overdue_from + dt.timedelta(days=45), "ACT/365"
        )
        assert loan.days_past_due == 45
        assert loan.penalty_owed.amount == f"{penalty / 100:.2f}" and penalty > 0
        assert loan.fees_owed.amount == "1750.00"  # arrangement fee and one late fee
        today = clock.now().date()
        # A partial payment: penalty first, then fees, then interest, then principal.
        partial = await repayment.RecordPayment(_pay(loan_id, "100000.00", today, "PART-1"))
        assert partial.penalty.amount == f"{penalty / 100:.2f}"
        assert partial.fees.amount == "1750.00" and partial.surplus.amount == "0.00"
        assert (
            partial.loan.state == repayment_pb2.LOAN_STATE_OPEN
            and partial.loan.penalty_owed.amount == "0.00"
        )
        assert partial.loan.principal_outstanding.amount != "500000.00"
        quote = await repayment.QuotePayoff(
            repayment_pb2.QuotePayoffRequest(
                loan_id=loan_id, valid_until=(today + dt.timedelta(days=3)).isoformat()
            )
        )
        late = today + dt.timedelta(days=4)
        clock.advance(dt.timedelta(days=4))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await repayment.RecordPayment(
                _pay(loan_id, quote.amount.amount, late, "Q-LATE", quote_id=quote.quote_id)
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "expired" in (
            info.value.details() or ""
        )
        fresh = await repayment.QuotePayoff(
            repayment_pb2.QuotePayoffRequest(loan_id=loan_id, valid_until=late.isoformat())
        )
        paid = await repayment.RecordPayment(
            _pay(
                loan_id,
                fresh.amount.amount,
                late,
                "Q-1",
                payer="acme-builders",
                quote_id=fresh.quote_id,
            )
        )
        assert paid.loan.state == repayment_pb2.LOAN_STATE_SETTLED and not paid.expected_payer
        assert paid.penalty.amount != "0.00" and paid.surplus.amount == "0.00"


async def test_paid_late_before_the_sweep_ran_the_late_fee_is_charged_with_it(
    settings: Settings,
) -> None:
    """The demo's second loan: paid 45 days late before the sweep saw it, its quote
    counted the 500.00 late fee, the payment did not charge it, and it went back
    as surplus. Whichever comes first now, the payment or the sweep, the fee is
    charged once, the quote settles with no surplus, and the lateness is on record."""
    async with _open_loan(settings, "PO-P7") as (env, clock, repayment, loan):
        loan_id = loan.loan_id
        overdue_from = dt.date.fromisoformat(loan.due_date) + dt.timedelta(days=3)
        day = overdue_from + dt.timedelta(days=45)
        clock.advance(day - clock.now().date())
        quote = await repayment.QuotePayoff(
            repayment_pb2.QuotePayoffRequest(loan_id=loan_id, valid_until=day.isoformat())
        )
        paid = await repayment.RecordPayment(
            _pay(loan_id, quote.amount.amount, day, "LATE-1", quote_id=quote.quote_id)
        )
        assert paid.loan.state == repayment_pb2.LOAN_STATE_SETTLED and paid.surplus.amount == "0.00"
        assert paid.fees.amount == "1750.00"  # the arrangement fee and the late fee
        rows = await env.orders.sql(
            "SELECT max_days_past_due, fees_owed, late_fee_charged FROM loans"
            " WHERE loan_id = $1", loan_id, service="repayment",
        )  # fmt: skip
        assert tuple(rows[0]) == (45, 0, True)  # late on record, nothing left owed


async def test_overdue_across_year_end_and_leap_day(settings: Settings) -> None:
    """Due 20 February 2028: past due across the month end, into a leap day."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async with lending_env(settings, repayment_clock=clock) as env:
        await env.facility()
        due = dt.date(2028, 2, 20)
        oid = await env.confirmed_order("PO-LEAP", due_in_days=(due - dt.date.today()).days)
        app_id = await env.request(oid, "500000.00")
        await env.wait_state(app_id, "referred")
        await env.approve(app_id, "uw-alice", "500000.00", "leap")
        await env.sign_all(await env.get(app_id))
        await env.wait_state(app_id, "disbursed")
        addr = settings.endpoint("repayment").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "operator")) as channel:
            repayment = repayment_pb2_grpc.RepaymentServiceStub(channel)

            await _opened(repayment, app_id)
            clock.advance(dt.date(2028, 3, 2) - clock.now().date())  # over 29 February
            loan = (await repayment.GetLoan(repayment_pb2.GetLoanRequest(loan_id=app_id))).loan
            overdue_from = due + dt.timedelta(days=3)  # bank-north's grace
            assert loan.days_past_due == (dt.date(2028, 3, 2) - overdue_from).days == 8
            penalty = interest(50_000_000, 900, overdue_from, dt.date(2028, 3, 2), "ACT/365")
            assert loan.penalty_owed.amount == f"{penalty / 100:.2f}"
            start = dt.date.fromisoformat(loan.disbursed_on)
            assert (
                loan.interest_owed.amount
                == f"{interest(50_000_000, 600, start, due, 'ACT/365') / 100:.2f}"
            )


async def test_one_bank_reference_at_once_is_one_payment_and_clear_duplicates(
    settings: Settings,
) -> None:
    import asyncio

    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    async with lending_env(settings) as env:
        loan_id, _ = await _disbursed_loan(env, "PO-P8")
        addr = settings.endpoint("repayment").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "operator")) as ch:
            operator = repayment_pb2_grpc.RepaymentServiceStub(ch)
            await _opened(operator, loan_id)
            today = dt.date.today()
            # Eight retries of one call at once: one payment, and every caller its answer.
            retries = [
                operator.RecordPayment(_pay(loan_id, "10.00", today, "BANKREF-AT-ONCE"))
                for _ in range(8)
            ]
            answers = await asyncio.gather(*retries)
            assert len({a.payment_id for a in answers}) == 1
            # Eight other calls with that reference: duplicates, each told why.
            calls = [
                operator.RecordPayment(
                    _pay(loan_id, "10.00", today, "BANKREF-AT-ONCE", idempotency_key=f"k{i}")
                )
                for i in range(8)
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
            refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
            assert len(refused) == 8, results
            for exc in refused:
                assert exc.code() == grpc.StatusCode.ALREADY_EXISTS, exc
                status = rpc_status.from_call(exc)
                info = error_details_pb2.ErrorInfo()
                assert status is not None and status.details[0].Unpack(info)
                assert info.reason == "DUPLICATE_REFERENCE"
        rows = await env.orders.sql(
            "SELECT count(*) AS n FROM payments WHERE bank_reference = 'BANKREF-AT-ONCE'",
            service="repayment",
        )
        assert rows[0]["n"] == 1


async def test_a_disbursement_lending_did_not_sign_is_never_booked(settings: Settings) -> None:
    from services.contracts.subjects import Subjects
    from services.gen.scf.bus.v1 import bus_pb2
    from tests.support import messenger_as

    async with lending_env(settings) as env:
        subject = Subjects(settings.nats_prefix).disbursed
        js = env.orders.nc.jetstream()
        forged = bus_pb2.Disbursed(
            kind=bus_pb2.FINANCING_KIND_LOAN, application_id="APP-FORGED", bank="bank-north",
            subcontractor_id="acme-builders", buyer_id="citybuild", order_id="ORD-X",
            due_date="2030-01-01", currency="CNY", principal_minor=10**9, rate_bps=1,
            disbursed_micros=1, facility_id="FAC-X",
        )  # fmt: skip
        scoring = messenger_as(settings, env.orders.nc, "scoring")
        await js.publish(subject, forged.SerializeToString())  # unsigned
        await js.publish(subject, scoring.seal(subject, "event", "d-1", forged))  # not lending's
        # A real loan after them: once it is open, the two before it were taken.
        loan_id, _ = await _disbursed_loan(env, "PO-P9")
        addr = settings.endpoint("repayment").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "operator")) as ch:
            operator = repayment_pb2_grpc.RepaymentServiceStub(ch)
            await _opened(operator, loan_id)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await operator.GetLoan(repayment_pb2.GetLoanRequest(loan_id="APP-FORGED"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_absurd_dates_are_refused_for_facilities_quotes_and_payments(
    settings: Settings,
) -> None:
    from tests.orders.helpers import bad_request_field

    async with lending_env(settings) as env:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.lending("uw-alice").CreateFacility(
                lending_pb2.CreateFacilityRequest(
                    subcontractor_id="acme-builders",
                    limit=money_pb2.Money(amount="1000.00", currency="CNY"),
                    expires_on="9999-12-31", spread_bps=200, idempotency_key="far",
                )
            )  # fmt: skip
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_field(info.value) == "expires_on"
        loan_id, _ = await _disbursed_loan(env, "PO-P10")
        addr = settings.endpoint("repayment").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "operator")) as ch:
            operator = repayment_pb2_grpc.RepaymentServiceStub(ch)
            await _opened(operator, loan_id)
            for day in ("0001-01-01", "1969-12-31"):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    request = _pay(loan_id, "10.00", dt.date.today(), f"REF-{day}")
                    request.value_date = day
                    await operator.RecordPayment(request)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert bad_request_field(info.value) == "value_date"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await operator.QuotePayoff(
                    repayment_pb2.QuotePayoffRequest(loan_id=loan_id, valid_until="9999-12-31")
                )
            assert bad_request_field(info.value) == "valid_until"
        journaled = await env.orders.sql(
            "SELECT count(*) AS n FROM outbox WHERE idempotency_key LIKE $1",
            f"loan/{loan_id}/%",
            service="repayment",
        )
        assert journaled[0]["n"] == 1  # the loan's opening alone


async def test_a_payment_value_dated_within_the_grace_is_not_late(settings: Settings) -> None:
    """Value-dated inside the grace, recorded after it: the late fee the sweep
    charged meanwhile is taken back (journaled with the payment), the loan was
    never past due, and the subcontractor's record says so."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async with lending_env(settings, repayment_clock=clock) as env:
        loan_id, _ = await _disbursed_loan(env, "PO-P-GRACE")
        addr = settings.endpoint("repayment").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "operator")) as ch:
            repayment = repayment_pb2_grpc.RepaymentServiceStub(ch)
            await _opened(repayment, loan_id)
            loan = (await repayment.GetLoan(repayment_pb2.GetLoanRequest(loan_id=loan_id))).loan
            due = dt.date.fromisoformat(loan.due_date)
            in_grace = due + dt.timedelta(days=2)  # bank-north's grace is 3 days
            clock.advance(due + dt.timedelta(days=10) - clock.now().date())

            await _loan_until(
                repayment, loan_id, lambda got: got.days_past_due > 0 and got.bucket != "current",
                "the sweep charging the late fee",
            )  # fmt: skip
            # What was owed on the value date: principal, interest to maturity, the fee.
            disbursed = dt.date.fromisoformat(loan.disbursed_on)
            owed = 50_000_000 + interest(50_000_000, 600, disbursed, due, "ACT/365") + 125_000
            paid = await repayment.RecordPayment(
                _pay(loan_id, Money("CNY", owed).major(), in_grace, "GRACE-1")
            )
            assert paid.loan.state == repayment_pb2.LOAN_STATE_SETTLED, paid
            assert paid.penalty.amount == "0.00" and paid.surplus.amount == "0.00"
            assert paid.loan.days_past_due == 0
        rows = await env.orders.sql(
            f"SELECT late_fee_charged, max_days_past_due FROM loans WHERE loan_id = '{loan_id}'",
            service="repayment",
        )
        assert rows[0]["late_fee_charged"] is False and rows[0]["max_days_past_due"] == 0
