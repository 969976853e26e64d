"""The caller's deadline, carried into every call made on its behalf.

A gRPC call's remaining time is noted when it starts (grpcserver); a request
to another service made while serving it waits no longer than the caller
does, instead of a fixed 10 or 15 s after the caller has given up. Work
outside a call (the process manager's steps, consumers) keeps its own bounds.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from services.runtime.errors import DeadlineExceeded

__all__ = ["CALL_DEADLINE", "within_call"]

#: ``time.monotonic()`` at which the current gRPC call's caller stops waiting.
CALL_DEADLINE: ContextVar[float | None] = ContextVar("scf_call_deadline", default=None)


def within_call(timeout: float) -> float:
    """``timeout``, cut to what the current call's caller still waits (if any)."""
    deadline = CALL_DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(
            "the caller's deadline passed before this call could ask another service"
        )
    return min(timeout, left)
