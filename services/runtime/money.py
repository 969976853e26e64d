"""Money: integer minor units and an ISO 4217 code, never binary floating point.

Amounts cross the API as decimal strings in major units ("4000000.00"). A
string with more decimals than the currency has minor digits is refused, not
rounded: nothing here rounds silently. Where arithmetic must round (interest,
schedules) the rounding rule is stated where it happens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from services.runtime.errors import InvalidArgument

__all__ = ["CURRENCY_DIGITS", "Money", "parse_money"]

#: Minor-unit digits of the currencies the platform accepts (ISO 4217).
CURRENCY_DIGITS: dict[str, int] = {
    "CNY": 2, "HKD": 2, "USD": 2, "EUR": 2, "GBP": 2, "SGD": 2, "JPY": 0, "KRW": 0, "KWD": 3,
}  # fmt: skip

_AMOUNT = re.compile(r"^-?\d{1,15}(\.\d{1,6})?$")


@dataclass(frozen=True, order=True)
class Money:
    currency: str
    minor: int

    def major(self) -> str:
        """The decimal string in major units, with exactly the currency's digits."""
        digits = CURRENCY_DIGITS[self.currency]
        value = Decimal(self.minor).scaleb(-digits)
        return f"{value:.{digits}f}"

    def __str__(self) -> str:
        return f"{self.major()} {self.currency}"


def parse_money(amount: str, currency: str, field: str, *, positive: bool = True) -> Money:
    """Validate and convert; ``field`` names the request field in errors."""
    if currency not in CURRENCY_DIGITS:
        raise InvalidArgument(f"{field}.currency", f"unknown or unsupported currency {currency!r}")
    if not _AMOUNT.match(amount or ""):
        raise InvalidArgument(f"{field}.amount", f"{amount!r} is not a decimal amount like 1234.50")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise InvalidArgument(f"{field}.amount", f"{amount!r} is not a number") from None
    digits = CURRENCY_DIGITS[currency]
    minor = value.scaleb(digits)
    if minor != minor.to_integral_value():
        raise InvalidArgument(
            f"{field}.amount", f"{amount} has more decimals than {currency}'s {digits}"
        )
    if positive and minor <= 0:
        raise InvalidArgument(f"{field}.amount", "must be greater than zero")
    return Money(currency, int(minor))
