"""Calendar arithmetic shared by the services that schedule money."""

from __future__ import annotations

import calendar
import datetime as dt

__all__ = ["add_months"]


def add_months(d: dt.date, months: int) -> dt.date:
    month = d.month - 1 + months
    year = d.year + month // 12
    month = month % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return dt.date(year, month, min(d.day, last))
