"""The lease's rental arithmetic (pure): what is due, penalty, the waterfall, termination."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from services.repayment.calc import annuity_schedule, interest
from services.repayment.rentals import (
    Rental,
    allocate_rentals,
    due_now,
    penalty_between,
    rentals_days_past_due,
    termination_amount,
    waive_future_interest,
)

D = dt.date


def _rentals() -> list[Rental]:
    lines = annuity_schedule(1_200_000, 1_200, 3, D(2027, 1, 15), residual_minor=300_000)
    return [Rental(ln.number, ln.due, ln.principal_minor, ln.interest_minor) for ln in lines]


def test_due_and_days_past_due_follow_the_oldest_unpaid_rental() -> None:
    rentals = _rentals()
    last = D(2027, 4, 15)  # the third rental, and the residual with it
    assert [r.due for r in rentals] == [D(2027, 2, 15), D(2027, 3, 15), last, last]
    assert due_now(rentals, D(2027, 2, 14)) == 0
    assert due_now(rentals, D(2027, 2, 15)) == rentals[0].total_minor
    assert rentals_days_past_due(rentals, D(2027, 2, 20), grace_days=5) == 0
    assert rentals_days_past_due(rentals, D(2027, 2, 23), grace_days=5) == 3
    paid_first = [Rental(**{**rentals[0].__dict__, "paid_minor": rentals[0].total_minor})]
    assert rentals_days_past_due(paid_first + rentals[1:], D(2027, 3, 23), 5) == 3


def test_penalty_runs_per_rental_from_the_end_of_its_grace() -> None:
    rentals = _rentals()
    first = rentals[0]
    # Before the grace ends, nothing; after it, simple interest on the unpaid rental.
    assert penalty_between(rentals, D(2027, 2, 15), D(2027, 2, 20), 5, 1_800, "ACT/365") == 0
    got = penalty_between(rentals, D(2027, 2, 15), D(2027, 3, 1), 5, 1_800, "ACT/365")
    assert got == interest(first.total_minor, 1_800, D(2027, 2, 20), D(2027, 3, 1), "ACT/365")
    # Two segments add up to the whole when nothing was paid in between (within rounding).
    a = penalty_between(rentals, D(2027, 2, 15), D(2027, 2, 25), 5, 1_800, "ACT/365")
    b = penalty_between(rentals, D(2027, 2, 25), D(2027, 3, 1), 5, 1_800, "ACT/365")
    assert abs(a + b - got) <= 1


def test_waterfall_pays_penalty_fees_then_rentals_oldest_first() -> None:
    rentals = _rentals()
    first, second = rentals[0], rentals[1]
    split, after = allocate_rentals(first.total_minor + 150, 100, 40, rentals)
    assert (split.penalty_minor, split.fees_minor) == (100, 40)
    assert split.interest_minor + split.principal_minor == first.total_minor + 10
    assert after[0].unpaid_minor == 0 and after[1].paid_minor == 10 and split.surplus_minor == 0
    # The 10 paid on the second rental went to its interest first.
    assert after[1].unpaid_interest_minor == second.interest_minor - 10


def test_termination_owes_capital_not_unearned_interest() -> None:
    rentals = _rentals()
    day = D(2027, 2, 15)  # the first rental is due, unpaid
    amount = termination_amount(rentals, day, penalty_minor=7, fees_minor=3)
    capital_after = sum(r.principal_minor for r in rentals[1:])
    assert amount == 7 + 3 + rentals[0].total_minor + capital_after
    waived = waive_future_interest(rentals, day)
    assert all(r.interest_minor == 0 for r in waived[1:]) and waived[0] == rentals[0]


@given(st.integers(1, 10**9), st.integers(0, 10**6), st.integers(0, 10**6))
def test_allocation_never_loses_or_invents_money(payment: int, penalty: int, fees: int) -> None:
    rentals = _rentals()
    split, after = allocate_rentals(payment, penalty, fees, rentals)
    assert split.total_minor == payment
    paid = sum(r.paid_minor for r in after)
    assert paid == split.interest_minor + split.principal_minor
    assert all(0 <= r.paid_minor <= r.total_minor for r in after)
    if split.surplus_minor:
        assert all(r.unpaid_minor == 0 for r in after)
