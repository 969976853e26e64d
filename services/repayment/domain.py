"""Repayment's two kinds of financing, as types with their rules. Pure: no I/O.

A ``Loan`` (order financing) is one bullet repayment accruing interest day
by day; a ``Lease`` is a schedule of rentals (rentals.py). Both answer the
same questions, each in its own way: who is expected to pay, what a payment
on a value date does, what a payoff quote asks for, and how far past due
the financing is. The books (loans.py, leases.py) load them, ask, and write
the answer; they do not branch on the kind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from services.repayment.calc import (
    Allocation,
    Balances,
    accrue,
    allocate,
    bucket_for,
    days_past_due,
)
from services.repayment.rentals import (
    Rental,
    allocate_rentals,
    due_now,
    penalty_between,
    rentals_days_past_due,
    termination_amount,
    waive_future_interest,
)
from services.runtime.errors import FailedPrecondition

__all__ = [
    "Financing",
    "Lease",
    "LeasePosition",
    "Loan",
    "PaymentEffect",
    "Quote",
    "Standing",
    "financing_of",
]


@dataclass(frozen=True)
class Quote:
    quote_id: str
    amount_minor: int
    valid_until: dt.date

    def check_payment(self, value_date: dt.date, amount_minor: int) -> None:
        """A payment settles by this quote only within its date and at least its amount."""
        if value_date > self.valid_until:
            raise FailedPrecondition(
                f"quote {self.quote_id} expired on {self.valid_until}", reason="QUOTE_EXPIRED"
            )
        if amount_minor < self.amount_minor:
            raise FailedPrecondition(
                f"the quote asks for {self.amount_minor} minor units", reason="BELOW_QUOTE"
            )


@dataclass(frozen=True)
class Standing:
    """What a financing owes as of a day, as GetLoan shows it."""

    principal_minor: int
    interest_minor: int
    penalty_minor: int
    fees_minor: int
    total_minor: int
    due_minor: int
    days_past_due: int


@dataclass(frozen=True)
class PaymentEffect:
    """Where a payment went, the loan's columns after it, and (for a lease) its rentals."""

    split: Allocation
    changes: Mapping[str, Any]
    settled: bool
    rentals: tuple[Rental, ...] = field(default=())
    #: A late fee charged before a payment value-dated within the grace arrived.
    late_fee_reversed_minor: int = 0
    #: The late fee due by the payment's date that the sweep had not charged yet.
    late_fee_charged_minor: int = 0


class Financing(Protocol):
    @property
    def expected_payer(self) -> str: ...

    def apply_payment(
        self, amount_minor: int, value_date: dt.date, quote: Quote | None
    ) -> PaymentEffect: ...

    def quote_amount(self, valid_until: dt.date) -> int: ...

    def standing(self, day: dt.date, today: dt.date) -> Standing: ...


@dataclass(frozen=True)
class Loan:
    """Order financing: the buyer pays the order's amount into the supervised account."""

    loan_id: str
    state: str
    currency: str
    buyer_id: str
    rate_bps: int
    penalty_rate_bps: int
    day_count: str
    due_date: dt.date
    grace_days: int
    balances: Balances
    bucket: str
    late_fee_minor: int
    late_fee_charged: bool
    #: The worst days past due on record (what scoring reads).
    max_days_past_due: int = 0

    @staticmethod
    def from_row(row: Mapping[str, Any]) -> Loan:
        return Loan(
            loan_id=row["loan_id"], state=row["state"], currency=row["currency"],
            buyer_id=row["buyer_id"], rate_bps=row["rate_bps"],
            penalty_rate_bps=row["penalty_rate_bps"], day_count=row["day_count"],
            due_date=row["due_date"], grace_days=row["grace_days"],
            balances=Balances(row["accrued_until"], row["principal_out"], row["interest_owed"],
                              row["penalty_owed"], row["fees_owed"]),
            bucket=row["bucket"], late_fee_minor=row["late_fee_minor"],
            late_fee_charged=row["late_fee_charged"],
            max_days_past_due=row.get("max_days_past_due", 0),
        )  # fmt: skip

    @property
    def expected_payer(self) -> str:
        return self.buyer_id

    @property
    def overdue_from(self) -> dt.date:
        """The last day before the loan counts as past due: the due date plus grace."""
        return self.due_date + dt.timedelta(days=self.grace_days)

    def as_of(self, day: dt.date) -> Balances:
        """The balances accrued to ``day``; penalty interest once the grace is over."""
        return accrue(
            self.balances, max(day, self.balances.until), self.rate_bps, self.penalty_rate_bps,
            self.due_date, self.day_count, self.overdue_from,
        )  # fmt: skip

    def apply_payment(
        self, amount_minor: int, value_date: dt.date, quote: Quote | None
    ) -> PaymentEffect:
        """Accrue to the value date (or the quote's), then the waterfall. Lateness
        follows the value date: a payment value-dated within the grace that pays all
        that was owed on that date takes back the late fee charged meanwhile, and
        the loan was never past due."""
        if quote is not None:
            quote.check_payment(value_date, amount_minor)
        day = quote.valid_until if quote is not None else value_date
        balances = self.as_of(day)
        # Lateness on the payment's own date, whether or not the sweep has seen it yet:
        # the late fee that fell due by then is charged now, as the quote counted it,
        # and the days past due go on record.
        charged_fee = self._late_fee_due(balances, day)
        balances = replace(balances, fees_minor=balances.fees_minor + charged_fee)
        late_by = days_past_due(balances, self.overdue_from, value_date)
        reversed_fee = 0
        in_grace = self.late_fee_charged and value_date <= self.overdue_from and quote is None
        if in_grace and amount_minor >= balances.total_minor - self.late_fee_minor:
            reversed_fee = self.late_fee_minor
            balances = replace(balances, fees_minor=balances.fees_minor - reversed_fee)
        split = allocate(
            amount_minor, balances.penalty_minor, balances.fees_minor, balances.interest_minor,
            balances.principal_minor,
        )  # fmt: skip
        after = Balances(
            balances.until,
            balances.principal_minor - split.principal_minor,
            balances.interest_minor - split.interest_minor,
            balances.penalty_minor - split.penalty_minor,
            balances.fees_minor - split.fees_minor,
        )
        changes = {
            "accrued_until": after.until, "principal_out": after.principal_minor,
            "interest_owed": after.interest_minor, "penalty_owed": after.penalty_minor,
            "fees_owed": after.fees_minor,
        }  # fmt: skip
        if reversed_fee:
            changes |= {"late_fee_charged": False, "max_days_past_due": 0, "bucket": "current"}
        elif late_by > self.max_days_past_due:
            changes["max_days_past_due"] = late_by
        if charged_fee:
            changes["late_fee_charged"] = True
        return PaymentEffect(
            split, changes, after.total_minor == 0, late_fee_reversed_minor=reversed_fee,
            late_fee_charged_minor=charged_fee,
        )  # fmt: skip

    def _late_fee_due(self, owed: Balances, day: dt.date) -> int:
        """The late fee a loan owing ``owed`` on ``day`` has incurred and not been charged."""
        if self.late_fee_charged or owed.total_minor <= 0 or day <= self.overdue_from:
            return 0
        return self.late_fee_minor

    def quote_amount(self, valid_until: dt.date) -> int:
        """Everything owed if paid on ``valid_until``: principal, interest, penalty and
        fees accrued to it, and the late fee that falls due by then if not charged yet
        (so that paying the quote by its date settles the loan)."""
        owed = self.as_of(valid_until)
        return owed.total_minor + self._late_fee_due(owed, valid_until)

    def standing(self, day: dt.date, today: dt.date) -> Standing:
        b = self.as_of(day)
        due = b.total_minor if today >= self.due_date else 0
        dpd = days_past_due(b, self.overdue_from, today)
        return Standing(
            b.principal_minor, b.interest_minor, b.penalty_minor, b.fees_minor, b.total_minor,
            due, dpd,
        )  # fmt: skip

    def delinquency(self, today: dt.date) -> tuple[int, str, int] | None:
        """(days past due, bucket, late fee to charge) if the bucket changed; None if not.
        The product's late fee is charged once, when the loan first falls past due."""
        dpd = days_past_due(self.as_of(today), self.overdue_from, today)
        bucket = bucket_for(dpd)
        if bucket == self.bucket:
            return None
        late_fee = 0 if self.late_fee_charged or dpd == 0 else self.late_fee_minor
        return dpd, bucket, late_fee


@dataclass(frozen=True)
class LeasePosition:
    """A lease's balances as of a day: computed, never stored."""

    rentals: tuple[Rental, ...]
    penalty_minor: int
    fees_minor: int
    due_minor: int
    principal_minor: int
    interest_due_minor: int
    total_minor: int
    days_past_due: int


@dataclass(frozen=True)
class Lease:
    """A financial lease: the lessee pays rentals as they fall due."""

    loan_id: str
    state: str
    currency: str
    lessee_id: str
    penalty_rate_bps: int
    day_count: str
    grace_days: int
    accrued_until: dt.date
    penalty_owed: int
    fees_owed: int
    rentals: tuple[Rental, ...]
    late_fee_minor: int = 0
    max_days_past_due: int = 0

    @staticmethod
    def from_row(row: Mapping[str, Any], rentals: list[Rental]) -> Lease:
        return Lease(
            loan_id=row["loan_id"], state=row["state"], currency=row["currency"],
            lessee_id=row["subcontractor_id"], penalty_rate_bps=row["penalty_rate_bps"],
            day_count=row["day_count"], grace_days=row["grace_days"],
            accrued_until=row["accrued_until"], penalty_owed=row["penalty_owed"],
            fees_owed=row["fees_owed"], rentals=tuple(rentals),
            late_fee_minor=row.get("late_fee_minor", 0),
            max_days_past_due=row.get("max_days_past_due", 0),
        )  # fmt: skip

    @property
    def expected_payer(self) -> str:
        return self.lessee_id

    def position(self, day: dt.date, rentals: tuple[Rental, ...] | None = None) -> LeasePosition:
        rentals = self.rentals if rentals is None else rentals
        listed = list(rentals)
        until = max(day, self.accrued_until)
        penalty = self.penalty_owed + penalty_between(
            listed, self.accrued_until, until, self.grace_days, self.penalty_rate_bps,
            self.day_count,
        )  # fmt: skip
        # Each rental late by ``day`` owes its late fee, whether or not the sweep has
        # charged it yet.
        fees = self.fees_owed + self.late_fee_minor * len(self._uncharged(listed, day))
        return LeasePosition(
            rentals=rentals,
            penalty_minor=penalty,
            fees_minor=fees,
            due_minor=due_now(listed, day) + penalty + fees,
            principal_minor=sum(r.unpaid_principal_minor for r in rentals),
            interest_due_minor=sum(r.unpaid_interest_minor for r in rentals if r.due <= day),
            total_minor=sum(r.unpaid_minor for r in rentals) + penalty + fees,
            days_past_due=rentals_days_past_due(listed, day, self.grace_days),
        )

    def _uncharged(self, rentals: list[Rental], day: dt.date) -> list[Rental]:
        """The rentals late by ``day`` whose late fee is not charged yet."""
        return [r for r in rentals if not r.late_fee_charged and r.late_on(day, self.grace_days)]

    def apply_payment(
        self, amount_minor: int, value_date: dt.date, quote: Quote | None
    ) -> PaymentEffect:
        """Penalty to the value date, then the rental waterfall (rentals.py). Paid by an
        early-termination quote, the interest of rentals after its date is waived."""
        rentals = list(self.rentals)
        day = max(value_date, self.accrued_until)
        if quote is not None:
            quote.check_payment(value_date, amount_minor)
            day = max(day, quote.valid_until)
            rentals = waive_future_interest(rentals, quote.valid_until)
        position = self.position(day, tuple(rentals))
        # The late fees the position counted are charged with this payment.
        charged = {r.number for r in self._uncharged(rentals, day)}
        split, after = allocate_rentals(
            amount_minor, position.penalty_minor, position.fees_minor, rentals
        )
        after = [replace(r, late_fee_charged=True) if r.number in charged else r for r in after]
        penalty = position.penalty_minor - split.penalty_minor
        fees = position.fees_minor - split.fees_minor
        changes: dict[str, Any] = {
            "accrued_until": day,
            "principal_out": sum(r.unpaid_principal_minor for r in after),
            "penalty_owed": penalty,
            "fees_owed": fees,
        }
        late_by = rentals_days_past_due(list(self.rentals), value_date, self.grace_days)
        if late_by > self.max_days_past_due:
            changes["max_days_past_due"] = late_by
        settled = sum(r.unpaid_minor for r in after) + penalty + fees == 0
        return PaymentEffect(
            split, changes, settled, tuple(after),
            late_fee_charged_minor=self.late_fee_minor * len(charged),
        )  # fmt: skip

    def standing(self, day: dt.date, today: dt.date) -> Standing:
        p = self.position(day)
        return Standing(
            p.principal_minor, p.interest_due_minor, p.penalty_minor, p.fees_minor,
            p.total_minor, p.due_minor, p.days_past_due,
        )  # fmt: skip

    def quote_amount(self, valid_until: dt.date) -> int:
        position = self.position(valid_until)
        return termination_amount(
            list(position.rentals), valid_until, position.penalty_minor, position.fees_minor
        )


def financing_of(row: Mapping[str, Any], rentals: list[Rental]) -> Financing:
    """The financing a row of ``loans`` holds: the one place the kind is read."""
    if row["kind"] == "lease":
        return Lease.from_row(row, rentals)
    return Loan.from_row(row)
