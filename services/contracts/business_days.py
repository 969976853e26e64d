"""Business-day conventions: how a due date that falls on a day banks are shut
moves. Declared here because lending writes the rolled dates into the contract
and repayment books them, and both must roll alike.

A product names its convention and its holiday calendar (a country code of
the ``holidays`` package, whose data are China's official holidays and the
weekend days worked in their place). The contract states both, and the
package's version, so a reader can reproduce every rolled date.

- ``none``: a due date stands as written, on any day.
- ``following``: a date that is not a business day moves to the next one.
- ``modified_following``: as following, unless that crosses into the next
  month; then it moves back to the last business day before the date.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from importlib.metadata import version

import holidays

__all__ = ["CALENDAR_SOURCE", "Convention", "is_business_day", "roll"]

#: Which holiday data the rolled dates come from; written into every contract.
CALENDAR_SOURCE = f"holidays {version('holidays')}"

#: No run of shut days is this long; a roll that goes further is a broken calendar.
_MAX_SHUT_DAYS = 31


class Convention(enum.StrEnum):
    NONE = "none"
    FOLLOWING = "following"
    MODIFIED_FOLLOWING = "modified_following"


@functools.cache
def _calendar(code: str) -> holidays.HolidayBase:
    try:
        return holidays.country_holidays(code)
    except NotImplementedError:
        raise ValueError(f"there is no holiday calendar {code!r}") from None


def is_business_day(day: dt.date, calendar: str) -> bool:
    """Whether banks are open on ``day`` under ``calendar`` (weekends and the
    country's holidays shut; a weekend day worked in lieu is open)."""
    return bool(_calendar(calendar).is_working_day(day))


def _step(day: dt.date, calendar: str, days: int) -> dt.date:
    for _ in range(_MAX_SHUT_DAYS):
        if is_business_day(day, calendar):
            return day
        day += dt.timedelta(days=days)
    raise ValueError(f"no business day within {_MAX_SHUT_DAYS} days of {day} in {calendar}")


def roll(day: dt.date, convention: Convention | str, calendar: str) -> dt.date:
    """``day`` moved by ``convention`` to a business day of ``calendar``."""
    rule = Convention(convention)
    if rule is Convention.NONE:
        return day
    later = _step(day, calendar, 1)
    if rule is Convention.MODIFIED_FOLLOWING and later.month != day.month:
        return _step(day, calendar, -1)
    return later
