"""Crash points for fault tests: ``SCF_CRASH_AT=<name>[:<n>]`` kills the process
the n-th time (default the first) it reaches the named step.

The process dies with ``os._exit`` (no cleanup, no flush), as ``kill -9``
would, at exactly that step, so tests can crash between two writes.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

__all__ = ["crash_point"]

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    wanted = os.environ.get("SCF_CRASH_AT")
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _hits[name] += 1
    if _hits[name] == int(nth or 1):
        print(f"crash point {name}: exiting", file=sys.stderr, flush=True)
        os._exit(99)
