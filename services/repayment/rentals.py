"""A lease's rentals: what is due, penalty on what is late, where a payment goes. Pure.

A rental falls due whole on its date; interest is inside it (the annuity of
calc.annuity_schedule), so nothing accrues day by day except penalty
interest: on each rental's unpaid part, from the day after its due date plus
the product's grace, at the penalty rate, computed per rental and segment
and rounded half-even once each (the rule of calc). A payment goes to
penalty, then fees, then rentals oldest first (each rental's interest
before its principal); what is left pays rentals to come in order, and only
what exceeds the whole lease is surplus.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from services.repayment.calc import Allocation, interest

__all__ = [
    "Rental",
    "allocate_rentals",
    "due_now",
    "penalty_between",
    "rentals_days_past_due",
    "termination_amount",
    "waive_future_interest",
]


@dataclass(frozen=True)
class Rental:
    number: int
    due: dt.date
    principal_minor: int
    interest_minor: int
    paid_minor: int = 0
    #: The residual line of a returned asset: no longer owed.
    waived: bool = False
    #: The product's late fee for this rental has been charged (once per rental).
    late_fee_charged: bool = False

    @property
    def total_minor(self) -> int:
        return self.principal_minor + self.interest_minor

    @property
    def unpaid_minor(self) -> int:
        return 0 if self.waived else self.total_minor - self.paid_minor

    @property
    def unpaid_interest_minor(self) -> int:
        return 0 if self.waived else max(0, self.interest_minor - self.paid_minor)

    def late_on(self, day: dt.date, grace_days: int) -> bool:
        """Unpaid past its due date plus grace on ``day``."""
        return self.unpaid_minor > 0 and self.due + dt.timedelta(days=grace_days) < day

    @property
    def unpaid_principal_minor(self) -> int:
        return self.unpaid_minor - self.unpaid_interest_minor


def due_now(rentals: list[Rental], today: dt.date) -> int:
    """The unpaid part of every rental due on or before ``today``."""
    return sum(r.unpaid_minor for r in rentals if r.due <= today)


def penalty_between(
    rentals: list[Rental],
    start: dt.date,
    end: dt.date,
    grace_days: int,
    rate_bps: int,
    basis: str,
) -> int:
    """Penalty interest for the days from ``start`` to ``end`` on every rental
    unpaid past its due date plus grace."""
    total = 0
    for r in rentals:
        if r.unpaid_minor <= 0:
            continue
        begin = max(start, r.due + dt.timedelta(days=grace_days))
        if end > begin:
            total += interest(r.unpaid_minor, rate_bps, begin, end, basis)
    return total


def rentals_days_past_due(rentals: list[Rental], today: dt.date, grace_days: int) -> int:
    """Days since the oldest unpaid rental's due date plus grace; 0 when none is late."""
    late = [
        (today - (r.due + dt.timedelta(days=grace_days))).days
        for r in rentals
        if r.unpaid_minor > 0 and r.due + dt.timedelta(days=grace_days) < today
    ]
    return max(late, default=0)


def allocate_rentals(
    payment_minor: int, penalty_minor: int, fees_minor: int, rentals: list[Rental]
) -> tuple[Allocation, list[Rental]]:
    """The waterfall for a lease; returns the split and the rentals after it."""
    if payment_minor <= 0:
        raise ValueError("a payment is positive")
    left = payment_minor
    penalty = min(left, max(0, penalty_minor))
    left -= penalty
    fees = min(left, max(0, fees_minor))
    left -= fees
    paid_interest = paid_principal = 0
    after = []
    for r in sorted(rentals, key=lambda r: r.number):
        take = min(left, r.unpaid_minor)
        if take > 0:
            to_interest = min(take, r.unpaid_interest_minor)
            paid_interest += to_interest
            paid_principal += take - to_interest
            left -= take
            r = replace(r, paid_minor=r.paid_minor + take)
        after.append(r)
    return Allocation(penalty, fees, paid_interest, paid_principal, left), after


def waive_future_interest(rentals: list[Rental], day: dt.date) -> list[Rental]:
    """Early termination: rentals due after ``day`` owe their capital only, since
    the interest in them has not been earned."""
    return [
        replace(r, interest_minor=min(r.interest_minor, r.paid_minor)) if r.due > day else r
        for r in rentals
    ]


def termination_amount(
    rentals: list[Rental], day: dt.date, penalty_minor: int, fees_minor: int
) -> int:
    """What ends the lease on ``day``: penalty and fees, every rental due by then,
    and the capital of every rental after (the residual included)."""
    remaining = waive_future_interest(rentals, day)
    return penalty_minor + fees_minor + sum(r.unpaid_minor for r in remaining)
