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

from services.runtime.logs import dump_tasks

__all__ = ["SHUTDOWN_S", "exit_if_stuck", "pause", "stop_if_cancelled", "wait_event"]

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
