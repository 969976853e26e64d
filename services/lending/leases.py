"""A financial lease's own rules: what the lessee may ask for, and the contract. Pure.

A lease is an application of kind ``lease`` in lending: it goes through the
same scoring, queue, four eyes, contract signatures and facility as order
financing. What differs is written here: the asset and its vendor, the
down payment, the term and how rentals fall due, the residual value, and
the contract that lessee, lessor and vendor sign.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from services.gen.scf.leasing.v1 import leasing_pb2
from services.lending.policy import product_terms
from services.runtime.errors import InvalidArgument
from services.runtime.money import Money, parse_money

__all__ = [
    "END_OPTIONS",
    "FREQUENCIES",
    "LeaseRequest",
    "lease_contract_document",
    "validate_lease",
]

#: Payments a year for each frequency.
FREQUENCIES: dict[int, tuple[str, int]] = {
    leasing_pb2.PAYMENT_FREQUENCY_MONTHLY: ("monthly", 12),
    leasing_pb2.PAYMENT_FREQUENCY_QUARTERLY: ("quarterly", 4),
    leasing_pb2.PAYMENT_FREQUENCY_SEMIANNUAL: ("semiannual", 2),
    leasing_pb2.PAYMENT_FREQUENCY_ANNUAL: ("annual", 1),
}
END_OPTIONS: dict[int, str] = {
    leasing_pb2.END_OPTION_PURCHASE: "purchase",
    leasing_pb2.END_OPTION_RETURN: "return",
    leasing_pb2.END_OPTION_RENEW: "renew",
}
MAX_TERM_MONTHS = 120
#: The least capital each rental may repay (minor units): 10.00.
MIN_CAPITAL_PER_RENTAL_MINOR = 1_000


@dataclass(frozen=True)
class LeaseRequest:
    """What the lessee asks for, validated; amounts in minor units of ``currency``."""

    asset_description: str
    vendor_id: str
    serial_number: str
    currency: str
    price_minor: int
    down_payment_minor: int
    residual_minor: int
    term_months: int
    frequency: str
    per_year: int
    in_advance: bool
    end_option: str

    @property
    def financed_minor(self) -> int:
        return self.price_minor - self.down_payment_minor

    @property
    def periods(self) -> int:
        return self.term_months * self.per_year // 12

    @property
    def term_days(self) -> int:
        """The term in days, as a financing tenor (a month counted as 30.4375 days)."""
        return self.term_months * 4383 // 144

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(body: dict[str, Any]) -> LeaseRequest:
        return LeaseRequest(**body)


def validate_lease(request: leasing_pb2.ApplyForLeaseRequest, lessee_id: str) -> LeaseRequest:
    """Refuse what a lease cannot be, field by field; nothing is stored before this passes."""
    asset = request.asset
    if not asset.description.strip():
        raise InvalidArgument("asset.description", "required: what is leased")
    if not asset.vendor_id:
        raise InvalidArgument("asset.vendor_id", "required: who sells the asset")
    if asset.vendor_id == lessee_id:
        raise InvalidArgument("asset.vendor_id", "the lessee cannot be the vendor")
    if not asset.serial_number.strip():
        raise InvalidArgument("asset.serial_number", "required")
    if not request.lessor:
        raise InvalidArgument("lessor", "required: the leasing company asked")
    price = parse_money(asset.price.amount, asset.price.currency, "asset.price")
    down = parse_money(
        request.down_payment.amount or "0", request.down_payment.currency or price.currency,
        "down_payment", positive=False,
    )  # fmt: skip
    residual = parse_money(
        request.residual.amount or "0", request.residual.currency or price.currency,
        "residual", positive=False,
    )  # fmt: skip
    for field, money in (("down_payment", down), ("residual", residual)):
        if money.currency != price.currency:
            raise InvalidArgument(f"{field}.currency", f"the price is in {price.currency}")
        if money.minor < 0:
            raise InvalidArgument(f"{field}.amount", "must not be negative")
    if down.minor >= price.minor:
        raise InvalidArgument(
            "down_payment.amount",
            f"{down.major()} is not less than the price {price.major()}: nothing to lease",
        )
    if residual.minor > price.minor:
        raise InvalidArgument("residual.amount", f"more than the price {price.major()}")
    if residual.minor >= price.minor - down.minor:
        # A residual of the whole amount financed leaves rentals of interest only,
        # and their rounding would make capital lines negative.
        raise InvalidArgument("residual.amount", "must be less than the amount financed")
    if request.term_months <= 0:
        raise InvalidArgument("term_months", "must be a positive number of months")
    if request.term_months > MAX_TERM_MONTHS:
        raise InvalidArgument("term_months", f"at most {MAX_TERM_MONTHS} months")
    if request.frequency not in FREQUENCIES:
        raise InvalidArgument("frequency", "monthly, quarterly, semiannual or annual")
    name, per_year = FREQUENCIES[request.frequency]
    if request.term_months % (12 // per_year):
        raise InvalidArgument("term_months", f"not a whole number of {name} periods")
    periods = request.term_months * per_year // 12
    if price.minor - down.minor - residual.minor < MIN_CAPITAL_PER_RENTAL_MINOR * periods:
        # Rentals of a few minor units round into negative capital lines.
        least = Money(price.currency, MIN_CAPITAL_PER_RENTAL_MINOR * periods + residual.minor)
        raise InvalidArgument(
            "asset.price",
            f"the amount financed must be at least {least} for {periods} rentals"
            f" (10.00 of capital a rental, above the residual)",
        )
    if request.timing not in (
        leasing_pb2.PAYMENT_TIMING_IN_ADVANCE,
        leasing_pb2.PAYMENT_TIMING_IN_ARREARS,
    ):
        raise InvalidArgument("timing", "in advance or in arrears")
    if request.end_option not in END_OPTIONS:
        raise InvalidArgument("end_option", "purchase, return or renew")
    return LeaseRequest(
        asset_description=asset.description.strip(),
        vendor_id=asset.vendor_id,
        serial_number=asset.serial_number.strip(),
        currency=price.currency,
        price_minor=price.minor,
        down_payment_minor=down.minor,
        residual_minor=residual.minor,
        term_months=request.term_months,
        frequency=name,
        per_year=per_year,
        in_advance=request.timing == leasing_pb2.PAYMENT_TIMING_IN_ADVANCE,
        end_option=END_OPTIONS[request.end_option],
    )


def lease_contract_document(
    application: dict[str, Any], lease: LeaseRequest, terms: dict[str, Any]
) -> tuple[str, bytes]:
    """The lease and the vendor's sale to the lessor in one canonical document,
    signed by lessee, lessor and vendor; and its SHA-256."""
    financed = terms["amount_minor"]
    body = {
        "kind": "financial-lease",
        "lease_id": application["application_id"],
        "lessor": application["bank"],
        "lessee": application["subcontractor_id"],
        "vendor": lease.vendor_id,
        "asset": {
            "description": lease.asset_description,
            "serial_number": lease.serial_number,
            "price_minor": lease.price_minor,
        },
        "currency": lease.currency,
        # An approval of less than was asked raises the lessee's down payment.
        "down_payment_minor": lease.price_minor - financed,
        "financed_minor": financed,
        "rate_bps": terms["rate_bps"],
        "term_months": lease.term_months,
        "rentals": f"{lease.periods} {lease.frequency}, "
        + ("in advance" if lease.in_advance else "in arrears")
        + ", equal (annuity)",
        "residual_minor": lease.residual_minor,
        **product_terms(application["bank"], terms["rate_bps"]),
        "end_of_lease": lease.end_option,
        "purchase": "the vendor sells the asset to the lessor for the price; the lessor pays"
        " the financed part to the vendor and the lessee the down payment",
        "ownership": "the lessor owns the asset until the lessee buys it at the end of the term"
        " or on early termination",
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).digest()
