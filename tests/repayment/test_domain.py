"""Repayment's Loan and Lease types, pure: the rules a model validator checks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from services.repayment.domain import Lease, Loan, Quote, financing_of
from services.repayment.rentals import Rental
from services.runtime.errors import FailedPrecondition

DUE = dt.date(2027, 5, 1)


def _loan(**over: Any) -> Loan:
    row = {
        "loan_id": "APP-1", "state": "open", "currency": "CNY", "buyer_id": "citybuild",
        "rate_bps": 600, "penalty_rate_bps": 900, "day_count": "ACT/365", "due_date": DUE,
        "grace_days": 3, "accrued_until": dt.date(2027, 3, 1), "principal_out": 10_000_000,
        "interest_owed": 0, "penalty_owed": 0, "fees_owed": 25_000, "bucket": "current",
        "late_fee_minor": 50_000, "late_fee_charged": False, "kind": "loan",
        "subcontractor_id": "acme-builders",
    }  # fmt: skip
    return Loan.from_row({**row, **over})


def test_a_quote_past_the_grace_includes_the_late_fee_and_settles() -> None:
    """The quote used the fees owed when made; the late fee fell due before its
    date, and paying it left 500.00 owed."""
    loan = _loan()
    valid_until = DUE + dt.timedelta(days=10)  # past the 3 days' grace
    amount = loan.quote_amount(valid_until)
    assert amount == loan.as_of(valid_until).total_minor + 50_000
    # By its date the sweep has charged the late fee; the quote pays it all.
    charged = _loan(fees_owed=25_000 + 50_000, late_fee_charged=True)
    quote = Quote("QTE-1", amount, valid_until)
    effect = charged.apply_payment(amount, valid_until, quote)
    assert effect.settled and effect.split.surplus_minor == 0


def test_a_quote_within_the_grace_owes_no_late_fee() -> None:
    loan = _loan()
    assert (
        loan.quote_amount(DUE + dt.timedelta(days=3))
        == loan.as_of(DUE + dt.timedelta(days=3)).total_minor
    )


def test_a_quote_holds_only_to_its_date_and_amount() -> None:
    loan = _loan()
    amount = loan.quote_amount(DUE)
    with pytest.raises(FailedPrecondition) as info:
        loan.apply_payment(amount, DUE + dt.timedelta(days=1), Quote("Q", amount, DUE))
    assert info.value.reason == "QUOTE_EXPIRED"
    with pytest.raises(FailedPrecondition) as info:
        loan.apply_payment(amount - 1, DUE, Quote("Q", amount, DUE))
    assert info.value.reason == "BELOW_QUOTE"


def test_the_kind_picks_the_type_and_its_payer() -> None:
    loan = financing_of({**_loan().__dict__, **_row_extras()}, [])
    assert isinstance(loan, Loan) and loan.expected_payer == "citybuild"
    lease_row = {
        "loan_id": "LSE-1", "state": "open", "currency": "CNY", "kind": "lease",
        "subcontractor_id": "acme-builders", "penalty_rate_bps": 900, "day_count": "ACT/365",
        "grace_days": 5, "accrued_until": DUE, "penalty_owed": 0, "fees_owed": 0,
    }  # fmt: skip
    lease = financing_of(lease_row, [Rental(1, DUE, 100, 10)])
    assert isinstance(lease, Lease) and lease.expected_payer == "acme-builders"
    assert lease.quote_amount(DUE) > 0


def _row_extras() -> dict[str, Any]:
    loan = _loan()
    b = loan.balances
    return {
        "kind": "loan", "accrued_until": b.until, "principal_out": b.principal_minor,
        "interest_owed": b.interest_minor, "penalty_owed": b.penalty_minor,
        "fees_owed": b.fees_minor,
    }  # fmt: skip


def test_a_payment_value_dated_within_the_grace_takes_back_the_late_fee() -> None:
    charged = _loan(fees_owed=25_000 + 50_000, late_fee_charged=True, bucket="1-30")
    in_grace = DUE + dt.timedelta(days=2)
    owed = charged.as_of(in_grace).total_minor - 50_000
    effect = charged.apply_payment(owed, in_grace, None)
    assert effect.settled and effect.late_fee_reversed_minor == 50_000
    assert effect.changes["late_fee_charged"] is False and effect.changes["bucket"] == "current"
    # After the grace, the fee stands.
    late = DUE + dt.timedelta(days=4)
    effect = charged.apply_payment(charged.as_of(late).total_minor, late, None)
    assert effect.settled and effect.late_fee_reversed_minor == 0


def test_a_late_payment_before_the_sweep_charges_the_late_fee_itself() -> None:
    """The demo's second loan, paid 45 days late before the sweep had run: its quote
    counted the late fee, the payment did not charge it, and 500.00 went back as
    surplus; the loan's record showed it never late."""
    loan = _loan()  # the sweep has not charged the late fee
    day = loan.overdue_from + dt.timedelta(days=45)
    amount = loan.quote_amount(day)
    effect = loan.apply_payment(amount, day, Quote("QTE-1", amount, day))
    assert effect.settled and effect.split.surplus_minor == 0
    assert effect.split.fees_minor == 25_000 + 50_000
    assert effect.late_fee_charged_minor == 50_000
    assert effect.changes["late_fee_charged"] is True
    assert effect.changes["max_days_past_due"] == 45
    # Paid without a quote, the same; and a loan the sweep charged is not charged twice.
    assert loan.apply_payment(amount, day, None).split.surplus_minor == 0
    charged = _loan(fees_owed=75_000, late_fee_charged=True, max_days_past_due=10)
    again = charged.apply_payment(amount, day, None)
    assert again.late_fee_charged_minor == 0 and again.split.surplus_minor == 0
    assert again.changes["max_days_past_due"] == 45


def test_a_lease_paid_late_before_the_sweep_charges_each_rentals_late_fee() -> None:
    row = {
        "loan_id": "LSE-1", "state": "open", "currency": "CNY", "kind": "lease",
        "subcontractor_id": "acme-builders", "penalty_rate_bps": 900, "day_count": "ACT/365",
        "grace_days": 5, "accrued_until": DUE, "penalty_owed": 0, "fees_owed": 0,
        "late_fee_minor": 20_000,
    }  # fmt: skip
    rentals = [
        Rental(1, DUE, 90_000, 10_000),
        Rental(2, DUE + dt.timedelta(days=30), 95_000, 5_000),
        Rental(3, DUE + dt.timedelta(days=60), 100_000, 0, late_fee_charged=True),
    ]
    lease = financing_of(row, rentals)
    day = DUE + dt.timedelta(days=70)  # all three late; the sweep charged the third's fee
    position = lease.position(day)  # type: ignore[attr-defined]
    assert position.fees_minor == 2 * 20_000
    amount = position.due_minor
    effect = lease.apply_payment(amount, day, None)
    assert effect.split.fees_minor == 40_000 and effect.late_fee_charged_minor == 40_000
    assert [r.late_fee_charged for r in effect.rentals] == [True, True, True]
    assert effect.changes["max_days_past_due"] == 70 - 5
    assert effect.split.surplus_minor == 0 and effect.settled  # all three had fallen due
