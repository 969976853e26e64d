"""One clock for the whole platform in demo and test modes.

The offset from real time lives in a JetStream key-value bucket
(``<PREFIX>_CLOCK``, key ``offset_micros``) that the operator made and alone
may write (``scf clock advance``). Every service follows it, so moving it
moves due dates for all of them together: the operator then says so on
``<PREFIX>.clock.moved`` and every service instance reads the bucket again
and answers, so ``scf clock advance`` returns once they all run on the new
time. Outside those modes services read real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from services.contracts.subjects import Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.runtime.clock import OffsetClock
from services.runtime.errors import FailedPrecondition
from services.runtime.waiting import wait_event

__all__ = ["advance_platform_clock", "follow_platform_clock", "until_followed"]

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


#: How often a follower reads the bucket untold: a safety net for a lost word.
SAFETY_READ_S = 5.0


async def follow_platform_clock(
    nc: NATS,
    prefix: str,
    clock: OffsetClock,
    service: str,
    safety_read_s: float = SAFETY_READ_S,
) -> None:
    """Keep ``clock`` on the platform's offset: read again whenever the operator
    says it moved (and answer with the offset now in force), and every
    ``safety_read_s`` in case the word was lost."""
    js = nc.jetstream()
    subjects = Subjects(prefix)
    kv: KeyValue | None = None
    told = asyncio.Event()

    async def refresh() -> None:
        nonlocal kv
        try:
            if kv is None:
                kv = await _bucket(js, prefix)
            offset = await _read(kv)
        except (nats.errors.Error, OSError, BucketNotFoundError) as exc:  # keep the last offset
            log.warning("cannot read the platform clock: %r", exc)
            kv = None
            return
        clock.offset_micros = offset  # those waiting on a date are told if it moved

    async def moved(msg: Msg) -> None:
        await refresh()
        if msg.reply:
            answer = bus_pb2.ClockFollowed(service=service, offset_micros=clock.offset_micros)
            with contextlib.suppress(nats.errors.Error):
                await nc.publish(msg.reply, answer.SerializeToString())
        told.set()

    sub = await nc.subscribe(subjects.clock_moved, cb=moved)
    try:
        while True:
            told.clear()
            await refresh()
            await wait_event(told, safety_read_s)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


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


async def until_followed(
    nc: NATS, prefix: str, offset: int, followers: Iterable[str], timeout: float = 10.0
) -> None:
    """Tell every service the clock moved, and return once each of ``followers``
    has answered that it runs on ``offset`` (or later). The word goes out again
    each second to those that have not answered (one reconnecting, say)."""
    waiting = set(followers)
    inbox = nc.new_inbox()
    answered = asyncio.Event()

    async def answer(msg: Msg) -> None:
        try:
            followed = bus_pb2.ClockFollowed.FromString(msg.data)
        except DecodeError:
            return
        if followed.offset_micros >= offset:
            waiting.discard(followed.service)
            if not waiting:
                answered.set()

    sub = await nc.subscribe(inbox, cb=answer)
    word = bus_pb2.ClockMoved(offset_micros=offset).SerializeToString()
    try:
        async with asyncio.timeout(timeout):
            while waiting:
                await nc.publish(Subjects(prefix).clock_moved, word, reply=inbox)
                await wait_event(answered, 1.0)
    except TimeoutError:
        raise TimeoutError(
            f"{', '.join(sorted(waiting))} did not follow the clock within {timeout:.0f} s"
        ) from None
    finally:
        await sub.unsubscribe()
