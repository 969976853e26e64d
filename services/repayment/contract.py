"""The signed contract's terms, as repayment books them. Pure.

Lending sends the contract every party signed with each disbursement. What
repayment charges comes from that document, not from its own idea of the
bank's product: the day count, the arrangement and late fees, the grace, the
penalty rate, the business-day convention and, for order financing, the
maturity. The event's own fields must be the contract's (same hash, same
principal, rate, currency, parties and order due date), and the maturity the
order's due date rolled by the contract's convention, or the disbursement is
not booked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from services.contracts.business_days import Convention, roll

__all__ = ["ContractMismatch", "SignedTerms", "signed_terms"]


class ContractMismatch(ValueError):
    """A disbursement whose terms are not those of the contract it carries."""


@dataclass(frozen=True)
class SignedTerms:
    principal_minor: int
    rate_bps: int
    currency: str
    day_count: str
    arrangement_fee_bps: int
    late_fee_minor: int
    grace_days: int
    penalty_rate_bps: int
    #: Order financing: the maturity (the order's due date, rolled). None for a lease.
    maturity: dt.date | None
    business_days: Convention = Convention.NONE
    holiday_calendar: str = ""

    def roll(self, day: dt.date) -> dt.date:
        """``day`` moved to a business day as the contract says."""
        return roll(day, self.business_days, self.holiday_calendar)


def signed_terms(event: dict[str, Any]) -> SignedTerms:
    """The terms of the contract a disbursement carries, checked against the event."""
    document = str(event.get("contract_document", ""))
    digest = bytes(event.get("contract_sha256", b""))
    if not document or hashlib.sha256(document.encode()).digest() != digest:
        raise ContractMismatch("the disbursement carries no contract, or not the one signed")
    try:
        c = json.loads(document)
    except ValueError:
        raise ContractMismatch("the contract is not JSON") from None
    lease = event.get("kind") == "lease"
    principal = c.get("financed_minor" if lease else "principal_minor")
    expected = {
        "principal": (principal, int(event["principal_minor"])),
        "rate": (c.get("rate_bps"), int(event["rate_bps"])),
        "currency": (c.get("currency"), event["currency"]),
        "lender": (c.get("lessor" if lease else "lender"), event["bank"]),
        "borrower": (c.get("lessee" if lease else "borrower"), event["subcontractor_id"]),
    }
    if not lease:
        expected["order due date"] = (c.get("order_due_date"), event["due_date"])
        expected["buyer"] = (c.get("buyer"), event["buyer_id"])
    for what, (signed, sent) in expected.items():
        if signed != sent:
            raise ContractMismatch(f"the contract's {what} is {signed!r}, the event's {sent!r}")
    try:
        terms = SignedTerms(
            principal_minor=int(principal), rate_bps=int(c["rate_bps"]),
            currency=str(c["currency"]), day_count=str(c["day_count"]),
            arrangement_fee_bps=int(c["arrangement_fee_bps"]),
            late_fee_minor=int(c["late_fee_minor"]), grace_days=int(c["grace_days"]),
            penalty_rate_bps=int(c["penalty_rate_bps"]),
            maturity=None if lease else dt.date.fromisoformat(c["maturity"]),
            business_days=Convention(c["business_days"]),
            holiday_calendar=str(c["holiday_calendar"]),
        )  # fmt: skip
        rolled = None if lease else terms.roll(dt.date.fromisoformat(event["due_date"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ContractMismatch(f"the contract lacks a term repayment books: {exc!r}") from None
    if rolled is not None and rolled != terms.maturity:
        raise ContractMismatch(
            f"the contract matures on {terms.maturity}, but the order's due date"
            f" {event['due_date']} rolls to {rolled} by its {terms.business_days.value} days"
            f" ({terms.holiday_calendar}, {c.get('calendar_source')!r} signed)"
        )
    return terms
