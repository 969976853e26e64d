"""One clock for the whole platform in demo and test modes.

The offset from real time lives in a JetStream key-value bucket
(``<PREFIX>_CLOCK``, key ``offset_micros``) that the operator made and alone
may write (``scf clock advance``). Every service follows it, so moving it
moves due dates for all of them together. Outside those modes services read
real time.
"""

from __future__ import annotations

import logging

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from services.contracts.subjects import Subjects
from services.runtime.clock import OffsetClock
from services.runtime.errors import FailedPrecondition
from services.runtime.waiting import pause

__all__ = ["advance_platform_clock", "follow_platform_clock"]

log = logging.getLogger(__name__)
KEY = "offset_micros"


async def _bucket(js: JetStreamContext, prefix: str) -> KeyValue:
    """The bucket the operator made (services may read it, never write it)."""
    return await js.key_value(Subjects(prefix).clock_bucket)


async def _read(kv: KeyValue) -> int:
    try:
        entry = await kv.get(KEY)
    except KeyNotFoundError:
        return 0
    return int(entry.value or b"0")


async def follow_platform_clock(js: JetStreamContext, prefix: str, clock: OffsetClock) -> None:
    """Keep ``clock`` on the platform's offset. Re-reads rather than trusting a
    watcher alone (nats.py watchers may miss history after a reconnect)."""
    kv: KeyValue | None = None
    while True:
        try:
            if kv is None:
                kv = await _bucket(js, prefix)
            clock.offset_micros = await _read(kv)
        except (nats.errors.Error, OSError, BucketNotFoundError) as exc:  # keep the last offset
            log.warning("cannot read the platform clock: %r", exc)
            kv = None
        await pause(0.2)


#: How far demos and tests may move the clock, all moves together: a century.
MAX_OFFSET_MICROS = 100 * 366 * 86_400 * 1_000_000


async def advance_platform_clock(js: JetStreamContext, prefix: str, micros: int) -> int:
    """Move the platform clock forward by ``micros``; returns the new offset.
    Only the operator's NATS user may write the bucket."""
    if micros <= 0:
        raise ValueError("the platform clock only moves forward")
    kv = await _bucket(js, prefix)
    for _ in range(10):  # optimistic concurrency: another operator may move it too
        try:
            entry = await kv.get(KEY)
            offset = int(entry.value or b"0") + micros
            if offset > MAX_OFFSET_MICROS:
                raise FailedPrecondition(
                    "the platform clock is a century ahead already; start a fresh platform"
                )
            await kv.update(KEY, str(offset).encode(), last=entry.revision)
            return offset
        except KeyNotFoundError:
            try:
                await kv.create(KEY, str(micros).encode())
                return micros
            except nats.errors.Error:
                continue
        except nats.errors.Error:
            continue
    raise RuntimeError("the platform clock is being moved by someone else; try again")
