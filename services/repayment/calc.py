"""Repayment arithmetic: day counts, schedules, accrual, allocation. Pure.

Rounding rule: every amount that is computed (interest, a rental, penalty
interest) is rounded half-even ("banker's rounding") to the currency's minor
unit once, at the point where it becomes an amount owed; sums of rounded
amounts are exact. In an annuity the last rental absorbs the rounding, so the
schedule's lines add up exactly to its totals.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from services.runtime.dates import add_months

__all__ = [
    "Allocation",
    "Balances",
    "Line",
    "accrue",
    "add_months",
    "allocate",
    "annuity_schedule",
    "bucket_for",
    "bullet_schedule",
    "day_count_fraction",
    "days_past_due",
    "interest",
    "rolled",
]

BASES = ("ACT/365", "ACT/360", "30/360")


def day_count_fraction(start: dt.date, end: dt.date, basis: str = "ACT/365") -> Fraction:
    """The year fraction from ``start`` to ``end``, exactly. Requires ``end >= start``."""
    if end < start:
        raise ValueError(f"{end} is before {start}")
    if basis == "ACT/365":
        return Fraction((end - start).days, 365)
    if basis == "ACT/360":
        return Fraction((end - start).days, 360)
    if basis == "30/360":  # US (NASD) 30/360
        d1, d2 = min(start.day, 30), end.day
        if d1 == 30 and d2 == 31:
            d2 = 30
        days = 360 * (end.year - start.year) + 30 * (end.month - start.month) + (d2 - d1)
        return Fraction(days, 360)
    raise ValueError(f"unknown day count {basis!r}; one of {', '.join(BASES)}")


def _round(value: Fraction) -> int:
    """Half-even to a whole minor unit (Python rounds a Fraction half to even)."""
    return round(value)


def interest(principal_minor: int, rate_bps: int, start: dt.date, end: dt.date, basis: str) -> int:
    """Simple interest on ``principal_minor`` at ``rate_bps`` a year, computed
    exactly and rounded once."""
    fraction = day_count_fraction(start, end, basis)
    return _round(principal_minor * Fraction(rate_bps, 10_000) * fraction)


@dataclass(frozen=True)
class Line:
    """One scheduled instalment."""

    number: int
    due: dt.date
    principal_minor: int
    interest_minor: int

    @property
    def total_minor(self) -> int:
        return self.principal_minor + self.interest_minor


def bullet_schedule(
    principal_minor: int, rate_bps: int, start: dt.date, due: dt.date, basis: str = "ACT/365"
) -> list[Line]:
    """Order financing: everything due at once, simple interest to the due date."""
    return [Line(1, due, principal_minor, interest(principal_minor, rate_bps, start, due, basis))]


def annuity_schedule(
    principal_minor: int,
    rate_bps: int,
    periods: int,
    start: dt.date,
    *,
    per_year: int = 12,
    in_advance: bool = False,
    residual_minor: int = 0,
) -> list[Line]:
    """Equal rentals (leases): ``periods`` payments, ``per_year`` a year, and a
    final line for ``residual_minor`` (the balloon, or the purchase option) at
    the end of the term.

    The rental solves PV(rentals) + PV(residual) = principal at the periodic
    rate; in advance, the first rental is due at the start.
    """
    if periods <= 0:
        raise ValueError("periods must be positive")
    if not 0 <= residual_minor <= principal_minor:
        raise ValueError("the residual must be between 0 and the principal")
    i = Fraction(rate_bps, 10_000 * per_year)
    p, fv = Fraction(principal_minor), Fraction(residual_minor)
    if i == 0:
        rental = (p - fv) / periods
    else:
        v_n = 1 / (1 + i) ** periods
        rental = i * (p - fv * v_n) / (1 - v_n)
        if in_advance:
            rental = rental / (1 + i)
    payment = _round(rental)
    months = 12 // per_year
    # What must remain after the last rental: the residual itself (in arrears, it
    # falls due with the last rental) or its value one period earlier (in advance).
    remaining = residual_minor if not in_advance else _round(residual_minor / (1 + i))
    lines = []
    balance = principal_minor
    for n in range(1, periods + 1):
        due = add_months(start, months * (n - 1 if in_advance else n))
        # In advance the first rental is paid before any interest accrues.
        owed_interest = 0 if in_advance and n == 1 else _round(balance * i)
        # The last rental takes the rounding, so the lines add up to the principal.
        principal = balance - remaining if n == periods else payment - owed_interest
        lines.append(Line(n, due, principal, owed_interest))
        balance -= principal
    if residual_minor:
        end = add_months(start, months * periods)
        # The residual line is the residual, to the minor unit: in advance, its
        # capital is what remains and the rest is the last period's interest.
        owed_interest = residual_minor - balance if in_advance else 0
        lines.append(Line(periods + 1, end, balance, owed_interest))
    if any(line.principal_minor < 0 or line.interest_minor < 0 for line in lines):
        # Lending refuses such terms (too little capital a rental); never booked.
        raise ValueError("these terms round into a negative line")
    return lines


@dataclass(frozen=True)
class Allocation:
    penalty_minor: int
    fees_minor: int
    interest_minor: int
    principal_minor: int
    surplus_minor: int

    @property
    def total_minor(self) -> int:
        return (
            self.penalty_minor + self.fees_minor + self.interest_minor + self.principal_minor
            + self.surplus_minor
        )  # fmt: skip


def allocate(
    payment_minor: int,
    penalty_minor: int,
    fees_minor: int,
    interest_minor: int,
    principal_minor: int,
) -> Allocation:
    """The waterfall: penalty interest, then fees, then interest, then principal;
    what is left over is surplus (it goes to the subcontractor)."""
    if payment_minor <= 0:
        raise ValueError("a payment is positive")
    left = payment_minor
    parts = []
    for owed in (penalty_minor, fees_minor, interest_minor, principal_minor):
        take = min(left, max(0, owed))
        parts.append(take)
        left -= take
    penalty, fees, owed_interest, principal = parts
    return Allocation(penalty, fees, owed_interest, principal, surplus_minor=left)


def bucket_for(days_past_due: int) -> str:
    """Delinquency buckets: current, 1-30, 31-60, 61-90, 90+."""
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "1-30"
    if days_past_due <= 60:
        return "31-60"
    if days_past_due <= 90:
        return "61-90"
    return "90+"


@dataclass(frozen=True)
class Balances:
    """What a loan owes, accrued up to (and including the day before) ``until``."""

    until: dt.date
    principal_minor: int
    interest_minor: int
    penalty_minor: int
    fees_minor: int = 0

    @property
    def total_minor(self) -> int:
        return self.principal_minor + self.interest_minor + self.penalty_minor + self.fees_minor


def accrue(
    b: Balances,
    to: dt.date,
    rate_bps: int,
    penalty_rate_bps: int,
    due: dt.date,
    basis: str,
    penalty_from: dt.date | None = None,
) -> Balances:
    """Move the balances forward to ``to``: interest on the outstanding principal
    up to the due date, penalty interest on it from the day after ``penalty_from``
    (the due date, or the end of a grace period). Each segment is rounded once
    (half-even); accrual never runs backwards."""
    if to <= b.until:
        return b
    owed_interest = 0
    end = min(to, due)
    if end > b.until:
        owed_interest = interest(b.principal_minor, rate_bps, b.until, end, basis)
    penalty = 0
    start = max(b.until, penalty_from or due)
    if to > start:
        penalty = interest(b.principal_minor, penalty_rate_bps, start, to, basis)
    return Balances(
        to, b.principal_minor, b.interest_minor + owed_interest, b.penalty_minor + penalty,
        b.fees_minor,
    )  # fmt: skip


def days_past_due(b: Balances, due: dt.date, today: dt.date) -> int:
    if b.total_minor <= 0 or today <= due:
        return 0
    return (today - due).days


def rolled(lines: list[Line], roll: Callable[[dt.date], dt.date]) -> list[Line]:
    """A schedule whose due dates fall on business days: each line keeps its
    amounts (its period accrues as if unrolled) and falls due on ``roll(due)``."""
    return [dataclasses.replace(ln, due=roll(ln.due)) for ln in lines]
