"""The injectable clock: services never call ``time`` or ``datetime.now`` directly."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
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


class _Moves:
    """A clock that jumps (tests, demos) tells who waits on a date at once."""

    def __init__(self) -> None:
        self._on_move: list[Callable[[], None]] = []

    def on_move(self, callback: Callable[[], None]) -> None:
        self._on_move.append(callback)

    def _moved(self) -> None:
        for callback in self._on_move:
            callback()


class ManualClock(_Moves):
    """A clock that moves only when told to, for tests and demos."""

    def __init__(self, start: dt.datetime) -> None:
        super().__init__()
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
        self._moved()


class OffsetClock(_Moves):
    """Real time plus an offset: the platform clock of demo and test modes, which
    an operator moves forward for every service at once (see platform_clock)."""

    def __init__(self) -> None:
        super().__init__()
        self._offset_micros = 0

    @property
    def offset_micros(self) -> int:
        return self._offset_micros

    @offset_micros.setter
    def offset_micros(self, value: int) -> None:
        moved, self._offset_micros = value != self._offset_micros, value
        if moved:
            self._moved()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(microseconds=self.offset_micros)

    def now_micros(self) -> int:
        return time.time_ns() // 1000 + self.offset_micros
