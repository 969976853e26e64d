"""Each bank's financing product: fees, grace, day count, penalty, minimum tenor,
and how due dates fall on business days.

Declared once, here, because two services hold to it: lending writes these
terms into the contract every party signs, and repayment books and charges
exactly what the signed contract says. Pure data.

The arrangement fee is charged when the loan opens (a basis-point share of
the principal, rounded half-even), the late fee once, when the loan first
falls past due (for a lease: on each rental that falls late). Both are paid
through the waterfall after penalty interest and before interest. Due dates
roll by the product's business-day convention (business_days.py): a loan's
maturity, and so the days of interest, is the rolled date; a lease's rentals
fall due on rolled dates but keep their amounts (the periods accrue as if
unrolled).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.contracts.business_days import Convention

__all__ = ["PRODUCTS", "Product", "penalty_rate", "product_for"]


@dataclass(frozen=True)
class Product:
    arrangement_fee_bps: int = 0
    late_fee_minor: int = 0
    grace_days: int = 0
    day_count: str = "ACT/365"
    #: An order due sooner than this (from the day financing is asked for) is not financed.
    min_tenor_days: int = 7
    business_days: Convention = Convention.NONE
    #: The holiday calendar due dates roll by (a ``holidays`` country code).
    holiday_calendar: str = "CN"


PRODUCTS = {
    "bank-north": Product(arrangement_fee_bps=25, late_fee_minor=50_000, grace_days=3),
    "bank-south": Product(
        arrangement_fee_bps=30,
        late_fee_minor=80_000,
        grace_days=0,
        day_count="ACT/360",
        business_days=Convention.MODIFIED_FOLLOWING,
    ),
    # A leasing company: a late fee on every rental that falls late, five days' grace.
    "lease-one": Product(late_fee_minor=20_000, grace_days=5, business_days=Convention.FOLLOWING),
}


def penalty_rate(rate_bps: int) -> int:
    """Penalty interest on overdue amounts: the loan's (or lease's) rate plus half
    again, rounded half up to a whole basis point (525 bp gives 787.5, so 788)."""
    return (rate_bps * 3 + 1) // 2


def product_for(bank: str) -> Product:
    return PRODUCTS.get(bank, Product())
