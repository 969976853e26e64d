"""The injectable clock: services never call ``time`` or ``datetime.now`` directly."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "OffsetClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        ...

    def now_micros(self) -> int:
        """Microseconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def now_micros(self) -> int:
        return time.time_ns() // 1000


class ManualClock:
    """A clock that moves only when told to, for tests and demos."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start

    def now(self) -> dt.datetime:
        return self._now

    def now_micros(self) -> int:
        delta = self._now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

    def advance(self, delta: dt.timedelta) -> None:
        if delta < dt.timedelta(0):
            raise ValueError("the clock never moves backwards")
        self._now += delta


class OffsetClock:
    """Real time plus an offset: the platform clock of demo and test modes, which
    an operator moves forward for every service at once (see platform_clock)."""

    def __init__(self) -> None:
        self.offset_micros = 0

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(microseconds=self.offset_micros)

    def now_micros(self) -> int:
        return time.time_ns() // 1000 + self.offset_micros
