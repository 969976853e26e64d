"""Dates as every service reads them, and calendar arithmetic for schedules."""

from __future__ import annotations

import calendar
import datetime as dt

from services.runtime.errors import InvalidArgument

__all__ = ["EARLIEST", "LATEST", "add_months", "parse_date"]

#: The window of every date a party sends (orders, facilities, payments,
#: quotes): a finance platform has no business before 2000 or past 2100.
EARLIEST = dt.date(2000, 1, 1)
LATEST = dt.date(2100, 12, 31)


def parse_date(value: str, field: str) -> dt.date:
    """An ISO 8601 calendar date (YYYY-MM-DD) within the window; INVALID_ARGUMENT
    naming ``field`` otherwise."""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(field, f"{value[:40]!r} is not a date like 2027-03-31") from None
    if not EARLIEST <= day <= LATEST:
        raise InvalidArgument(field, f"{day} is outside {EARLIEST} to {LATEST}")
    return day


def add_months(d: dt.date, months: int) -> dt.date:
    month = d.month - 1 + months
    year = d.year + month // 12
    month = month % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return dt.date(year, month, min(d.day, last))


def date_of_micros(micros: int) -> dt.date:
    """The UTC calendar date of a time in microseconds since the Unix epoch."""
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)).date()
