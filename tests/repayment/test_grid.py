"""A model validator's grid: for each bank's product, rate, principal, due date
and quote date, the payoff a loan's contract implies, reckoned here from the
rules as docs/repayment.md states them (exact decimals, half-even once per
amount, the penalty rate half up), against what repayment quotes; and paying
that quote on its date settles the loan to the minor unit. Pure."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

from services.contracts.business_days import roll
from services.contracts.products import penalty_rate, product_for
from services.repayment.domain import Loan, Quote

DISBURSED = dt.date(2027, 1, 4)
YEAR_DAYS = {"ACT/365": 365, "ACT/360": 360}


def _half_even(x: Decimal) -> int:
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _expected(bank: str, principal: int, rate_bps: int, order_due: dt.date, day: dt.date) -> int:
    product = product_for(bank)
    maturity = roll(order_due, product.business_days, product.holiday_calendar)
    year = YEAR_DAYS[product.day_count]
    rate = Decimal(rate_bps) / 10_000
    penalty_bps = (Decimal(rate_bps) * Decimal("1.5")).quantize(Decimal(1), ROUND_HALF_UP)
    interest = _half_even(principal * rate * (min(day, maturity) - DISBURSED).days / year)
    overdue_from = maturity + dt.timedelta(days=product.grace_days)
    late = day > overdue_from
    penalty = (
        _half_even(principal * penalty_bps / 10_000 * (day - overdue_from).days / year)
        if late
        else 0
    )
    fee = _half_even(Decimal(principal * product.arrangement_fee_bps) / 10_000)
    return principal + interest + penalty + fee + (product.late_fee_minor if late else 0)


def _loan(bank: str, principal: int, rate_bps: int, order_due: dt.date, **over: object) -> Loan:
    product = product_for(bank)
    row = {
        "loan_id": "APP-G", "state": "open", "currency": "CNY", "buyer_id": "citybuild",
        "rate_bps": rate_bps, "penalty_rate_bps": penalty_rate(rate_bps),  # the contract's
        "day_count": product.day_count,
        "due_date": roll(order_due, product.business_days, product.holiday_calendar),
        "grace_days": product.grace_days, "accrued_until": DISBURSED,
        "principal_out": principal, "interest_owed": 0, "penalty_owed": 0,
        "fees_owed": _half_even(Decimal(principal * product.arrangement_fee_bps) / 10_000),
        "bucket": "current", "late_fee_minor": product.late_fee_minor,
        "late_fee_charged": False, "kind": "loan", "subcontractor_id": "acme-builders",
    }  # fmt: skip
    row.update(over)
    return Loan.from_row(row)


def test_every_quote_of_the_grid_is_the_contracts_and_settles() -> None:
    cases = 0
    for bank, rate, principal, due_in, after in itertools.product(
        ("bank-north", "bank-south"),
        (350, 525, 531, 600, 797),
        (1_000_000, 30_000_000, 123_456_789),
        range(20, 90, 7),
        (-5, 0, 1, 3, 4, 30),
    ):
        order_due = DISBURSED + dt.timedelta(days=due_in)
        loan = _loan(bank, principal, rate, order_due)
        day = loan.due_date + dt.timedelta(days=after)
        amount = loan.quote_amount(day)
        assert amount == _expected(bank, principal, rate, order_due, day), (bank, rate, day)
        # Paid on its date, the quote settles, whether the sweep has charged the late
        # fee by then or not.
        effect = loan.apply_payment(amount, day, Quote("QTE-G", amount, day))
        assert effect.settled and effect.split.surplus_minor == 0, (bank, rate, day)
        late = day > loan.overdue_from
        charged = _loan(
            bank, principal, rate, order_due,
            fees_owed=loan.balances.fees_minor + (loan.late_fee_minor if late else 0),
            late_fee_charged=late,
        )  # fmt: skip
        effect = charged.apply_payment(amount, day, Quote("QTE-G", amount, day))
        assert effect.settled and effect.split.surplus_minor == 0, (bank, rate, day)
        cases += 1
    assert cases == 2 * 5 * 3 * 10 * 6
