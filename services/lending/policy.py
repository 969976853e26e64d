"""Each bank's lending policy and the rules of a financing. Pure: no I/O."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from services.contracts.business_days import CALENDAR_SOURCE, Convention, roll
from services.contracts.products import penalty_rate, product_for

__all__ = [
    "POLICIES",
    "BankPolicy",
    "auto_decision",
    "contract_document",
    "maturity_of",
    "policy_for",
    "product_terms",
]


@dataclass(frozen=True)
class BankPolicy:
    bank: str
    #: Grades the bank approves without an underwriter, up to ``auto_max_minor``.
    auto_grades: frozenset[str]
    auto_max_minor: int
    #: Approvals above this amount need a second, different underwriter.
    four_eyes_minor: int
    #: The bank's base rate; the price is base plus the scoring or facility spread.
    base_rate_bps: int
    #: How long an offer (approval or counter-offer) may wait for signatures.
    offer_days: int = 14

    def approvals_needed(self, amount_minor: int) -> int:
        """How many different staff members must approve terms of this amount."""
        return 2 if amount_minor > self.four_eyes_minor else 1


POLICIES = {
    "bank-north": BankPolicy("bank-north", frozenset({"A", "B"}), 300_000_000, 100_000_000, 350),
    "bank-south": BankPolicy("bank-south", frozenset({"A"}), 100_000_000, 50_000_000, 380),
    # A leasing company: staff decide above 200,000.00, two of them above 100,000.00.
    "lease-one": BankPolicy("lease-one", frozenset({"A", "B"}), 20_000_000, 10_000_000, 550),
}


def policy_for(bank: str) -> BankPolicy:
    """A bank without a policy of its own gets the strictest: nothing automatic."""
    return POLICIES.get(bank, BankPolicy(bank, frozenset(), 0, 0, 400))


def auto_decision(
    policy: BankPolicy, decision: dict[str, Any], requested_minor: int, tenor_days: int
) -> tuple[str, dict[str, Any] | None]:
    """("approve", terms), ("decline", None) or ("refer", None)."""
    if decision["recommendation"] == "decline":
        return "decline", None
    amount = min(requested_minor, int(decision["max_amount_minor"]))
    if (
        decision["recommendation"] == "approve"
        and decision["grade"] in policy.auto_grades
        and amount <= policy.auto_max_minor
        and amount == requested_minor
    ):
        terms = {
            "amount_minor": amount,
            "rate_bps": policy.base_rate_bps + int(decision["spread_bps"]),
            "tenor_days": tenor_days,
        }
        return "approve", terms
    return "refer", None


def maturity_of(bank: str, order_due: dt.date) -> dt.date:
    """When order financing matures: the order's due date, rolled to a business day
    by the bank's product (interest runs to the rolled date)."""
    product = product_for(bank)
    return roll(order_due, product.business_days, product.holiday_calendar)


def product_terms(bank: str, rate_bps: int) -> dict[str, Any]:
    """What the bank's product adds to a contract: exactly what repayment charges."""
    product = product_for(bank)
    return {
        "day_count": product.day_count,
        "arrangement_fee_bps": product.arrangement_fee_bps,
        "late_fee_minor": product.late_fee_minor,
        "grace_days": product.grace_days,
        "penalty_rate_bps": penalty_rate(rate_bps),
        "business_days": product.business_days.value,
        # A product that rolls nothing names no calendar: no date depends on one.
        **(
            {"holiday_calendar": "", "calendar_source": ""}
            if product.business_days is Convention.NONE
            else {"holiday_calendar": product.holiday_calendar, "calendar_source": CALENDAR_SOURCE}
        ),
    }


def contract_document(
    application: dict[str, Any], terms: dict[str, Any], order_due: str, maturity: str
) -> tuple[str, bytes]:
    """The canonical contract (sorted-key JSON, no spaces) and its SHA-256. Its terms
    are the ones repayment books (it refuses a disbursement whose terms differ).
    The maturity is the order's due date rolled by the product's business days."""
    body = {
        "kind": "order-financing",
        "application_id": application["application_id"],
        "lender": application["bank"],
        "borrower": application["subcontractor_id"],
        "buyer": application["buyer_id"],
        "order_id": application["order_id"],
        "currency": application["currency"],
        "principal_minor": terms["amount_minor"],
        "rate_bps": terms["rate_bps"],
        "tenor_days": terms["tenor_days"],
        "order_due_date": order_due,
        "maturity": maturity,
        **product_terms(application["bank"], terms["rate_bps"]),
        "repayment": "bullet at maturity (the order's due date, rolled to a business day by"
        " the contract's business_days): principal, interest from"
        " disbursement to maturity, and the arrangement fee, paid by the buyer to the"
        " supervised account",
        "assignment": "the buyer acknowledges the assignment of the order's payment to the lender",
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).digest()
