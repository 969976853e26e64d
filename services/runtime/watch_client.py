"""Following a watch call from the client's side: until a wanted state, with a
deadline, opened again when the service went away meanwhile (the watch starts
from the stored state, so nothing is missed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc

__all__ = ["WatchEnded", "watch_until"]

R = TypeVar("R")

#: Codes after which the same watch is opened again: the service restarted.
_REOPEN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class WatchEnded(RuntimeError):
    """The watched thing reached a state from which the wanted one cannot follow."""


async def watch_until(
    open_watch: Callable[[float], AsyncIterator[R]],
    reached: Callable[[R], bool],
    timeout: float,
    what: str,
    *,
    hopeless: Callable[[R], str | None] = lambda _reply: None,
) -> R:
    """The first reply of ``open_watch(seconds_left)`` for which ``reached`` holds.

    ``hopeless`` names why a reply means the wanted state will never come (it
    raises :class:`WatchEnded`); TimeoutError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: R | None = None
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                try:
                    async for reply in open_watch(max(0.1, deadline - loop.time())):
                        last = reply
                        if reached(reply):
                            return reply
                        if (why := hopeless(reply)) is not None:
                            raise WatchEnded(f"{what}: {why}")
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in _REOPEN:
                        raise
                    await asyncio.sleep(0.2)  # the service restarts; then watch again
                    continue
                raise WatchEnded(f"{what}: the watch ended without it (last: {last})")
    except TimeoutError:
        raise TimeoutError(f"{what} not reached in {timeout:.0f} s (last: {last})") from None
