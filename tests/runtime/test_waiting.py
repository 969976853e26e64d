"""Bounded waits keep a cancellation, and a shutdown that hangs ends the process."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap

from services.runtime.waiting import stop_if_cancelled, wait_event


async def test_a_cancel_that_meets_the_event_is_not_lost() -> None:
    # The loop of a relay or the lending engine: wait for a wake-up, with a bound.
    async def loop(wake: asyncio.Event) -> None:
        while True:
            wake.clear()
            await wait_event(wake, 0.5)

    for _ in range(50):
        wake = asyncio.Event()
        task = asyncio.create_task(loop(wake))
        await asyncio.sleep(0)  # the loop now waits on the event
        # The event is set and the task cancelled before the loop runs again:
        # Python 3.11's wait_for returned normally here and the loop went on.
        wake.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert task in done and task.cancelled()


async def test_a_loop_ends_though_a_library_swallowed_its_cancel() -> None:
    # nats-py's fetch and request wait with wait_for: the cancel may be lost in
    # there, but the task still counts it, and the loop asks each round.
    async def loop(wake: asyncio.Event) -> None:
        while True:
            stop_if_cancelled()
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 0.5)

    for _ in range(50):
        wake = asyncio.Event()
        task = asyncio.create_task(loop(wake))
        await asyncio.sleep(0)
        wake.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert task in done and task.cancelled()


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 5) is True


def test_a_shutdown_that_hangs_ends_the_process_with_its_stacks() -> None:
    # A service whose background task ignores its cancellation: its shutdown
    # would wait forever; exit_if_stuck ends it, saying where it hung.
    program = textwrap.dedent(
        """
        import asyncio
        from services.runtime.waiting import exit_if_stuck

        async def stubborn():
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass

        async def main():
            task = asyncio.create_task(stubborn(), name="stubborn-loop")
            await asyncio.sleep(0)
            exit_if_stuck(2)
            task.cancel()
            await task

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "shutdown is stuck" in done.stderr
    assert "task stubborn-loop" in done.stderr and "in stubborn" in done.stderr
    assert "Timeout (0:00:02)!" in done.stderr  # faulthandler's thread stacks
