"""Waiting with a bound, without losing a cancellation.

Python 3.11's ``asyncio.wait_for`` returns the inner result when the
cancellation arrives as the inner await completes: the cancel is lost
(cpython gh-86296, mended in 3.12). A loop that waits on an event which is
set often then runs on after its service asked it to stop, and the service's
shutdown waits for it forever: alive, serving nothing, its relay gone.
``asyncio.timeout`` keeps the cancellation, so every bounded wait of the
platform goes through here. Libraries still use ``wait_for`` inside (nats-py's
fetch and request), so every loop also asks, each time round, whether it was
asked to stop (:func:`stop_if_cancelled`): the request is still counted on
the task even when ``wait_for`` swallowed the exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import sys
import time
from collections.abc import Coroutine
from typing import Any

from services.runtime.logs import dump_tasks

__all__ = [
    "SHUTDOWN_S",
    "LoopWatch",
    "Stalled",
    "exit_if_stuck",
    "pause",
    "run_together",
    "stop_if_cancelled",
    "wait_event",
]

log = logging.getLogger(__name__)

#: How long a service process may take to go down (a supervisor's grace
#: period, Kubernetes' 30 s, should be longer).
SHUTDOWN_S = 15.0


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop, though a library's
    ``wait_for`` returned normally instead of raising it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def pause(seconds: float) -> None:
    """A loop's rest between rounds, which ends the loop if it was asked to stop."""
    stop_if_cancelled()
    await asyncio.sleep(seconds)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Until ``event`` is set or ``timeout`` seconds pass; whether it was set."""
    stop_if_cancelled()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


def exit_if_stuck(seconds: float) -> None:
    """A process going down gets ``seconds`` to do so: then its asyncio tasks
    and its threads' stacks are written to the log and it exits with status 1,
    so a supervisor starts it afresh. The platform keeps no state in memory
    that this loses (crash-only); a shutdown that hangs would lose more."""
    with contextlib.suppress(RuntimeError):  # no running loop: threads only
        asyncio.get_running_loop().call_later(max(0.0, seconds - 1), _dump_stuck)
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)


def _dump_stuck() -> None:
    log.error("shutdown is stuck; the tasks follow, then the process exits")
    dump_tasks()


async def run_together(*loops: Coroutine[Any, Any, Any]) -> None:
    """Run ``loops`` until one fails; the others stop with it, and its error is
    raised as itself (not wrapped in an ExceptionGroup)."""
    try:
        async with asyncio.TaskGroup() as group:
            for loop in loops:
                group.create_task(loop)
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None


class Stalled(RuntimeError):
    """A loop waited far longer than any of its rounds can take."""


class LoopWatch:
    """Long-running loops say when they come round; :meth:`watch` fails once one
    has not for ``stall_s``. Such a loop waits on something that will never come
    (an answer lost in a library, a lock never released): better that its
    service exits and its supervisor starts it afresh than that it stays alive
    doing nothing."""

    def __init__(self, owner: str, stall_s: float) -> None:
        self.owner = owner
        self.stall_s = stall_s
        self._rounds: dict[str, float] = {}

    def round(self, loop: str) -> None:
        self._rounds[loop] = time.monotonic()

    def forget(self, loop: str) -> None:
        """``loop`` stopped on purpose (another instance leads now)."""
        self._rounds.pop(loop, None)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.stall_s / 4)
            now = time.monotonic()
            stuck = sorted(name for name, at in self._rounds.items() if now - at > self.stall_s)
            if stuck:
                dump_tasks()
                raise Stalled(
                    f"{self.owner}: {', '.join(stuck)} made no round in {self.stall_s:.0f} s"
                )
