"""Crash points for fault tests: ``SCF_CRASH_AT=<name>`` kills the process there.

The process dies with ``os._exit`` (no cleanup, no flush), as ``kill -9``
would, at exactly the named step, so tests can crash between two writes.
"""

from __future__ import annotations

import os
import sys

__all__ = ["crash_point"]


def crash_point(name: str) -> None:
    if os.environ.get("SCF_CRASH_AT") == name:
        print(f"crash point {name}: exiting", file=sys.stderr, flush=True)
        os._exit(99)
