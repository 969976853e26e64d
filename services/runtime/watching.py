"""Watch calls: a subject's state now, then again after each change, to its end.

A service's relay publishes, once it has recorded the journal's confirmation,
which of its subjects moved (``<prefix>.journaled.<producer>``, core NATS).
Every instance of the service subscribes once; each watch call waits on its
own subject and, when told, reads the state again from PostgreSQL. The
notification carries no authority: what a watcher is sent is always what the
database and the journal hold. A lost notification costs latency only, since
each watch also reads again every ``SAFETY_READ_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.gen.scf.bus.v1 import bus_pb2
from services.runtime.waiting import wait_event

__all__ = ["SAFETY_READ_S", "Changes", "JournaledFeed", "Snapshot", "follow", "journal_seq_of"]

log = logging.getLogger(__name__)

#: A watch reads its subject again at least this often, told or not.
SAFETY_READ_S = 5.0

M = TypeVar("M")


class Changes:
    """Wakes every waiting watch call when something changed (a checkpoint, say)."""

    def __init__(self) -> None:
        self._waiting: set[asyncio.Event] = set()

    def notify(self, *_args: Any) -> None:
        for event in self._waiting:
            event.set()

    @contextlib.contextmanager
    def waiter(self) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting.add(event)
        try:
            yield event
        finally:
            self._waiting.discard(event)


class JournaledFeed:
    """This process's subscription to its producer's journaled notifications,
    shared by every watch call it serves."""

    def __init__(self, nc: NATS, subject: str) -> None:
        self.nc = nc
        self.subject = subject
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)

    async def start(self) -> None:
        """Subscribe (for as long as the connection lives: it closes with the service)."""
        await self.nc.subscribe(self.subject, cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        try:
            journaled = bus_pb2.Journaled.FromString(msg.data)
        except DecodeError:
            log.warning("ignored a journaled notification that does not decode")
            return
        for item in journaled.subjects:
            for event in self._waiting.get(item.subject, ()):
                event.set()

    @contextlib.contextmanager
    def changes(self, journal_subject: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``journal_subject`` has a newly journaled entry."""
        event = asyncio.Event()
        self._waiting[journal_subject].add(event)
        try:
            yield event
        finally:
            waiting = self._waiting[journal_subject]
            waiting.discard(event)
            if not waiting:
                del self._waiting[journal_subject]


def notification(journaled: list[tuple[str, int]]) -> bytes:
    """What a relay publishes for the (subject, seq) pairs it just recorded."""
    return bus_pb2.Journaled(
        subjects=[bus_pb2.JournaledSubject(subject=s, seq=q) for s, q in journaled]
    ).SerializeToString()


@dataclass(frozen=True)
class Snapshot(Generic[M]):
    """A subject's state as read: its view, version, and the journal sequence of
    that version's entry (0 while the entry is on its way)."""

    view: M
    version: int
    journal_seq: int
    #: No change follows (a closed application, a settled loan).
    final: bool


async def journal_seq_of(conn: Any, journal_subject: str, version: int) -> int:
    """The journal sequence of the entry of ``journal_subject``'s ``version`` (its
    outbox row's key is ``<subject>/v<version>``), or 0 while not yet journaled."""
    seq = await conn.fetchval(
        "SELECT journal_seq FROM outbox WHERE idempotency_key = $1",
        f"{journal_subject}/v{version}",
    )
    return int(seq or 0)


async def follow(
    feed: JournaledFeed,
    journal_subject: str,
    read: Callable[[], Awaitable[Snapshot[M] | None]],
    safety_read_s: float = SAFETY_READ_S,
) -> AsyncIterator[Snapshot[M]]:
    """Each journaled version of the subject from the current one on (the
    latest alone when several came at once), until a final one. ``read``
    answers None for a subject that is not there yet but will be."""
    sent = 0
    with feed.changes(journal_subject) as changed:  # before the first read: none missed
        while True:
            changed.clear()
            snapshot = await read()
            if snapshot is not None and snapshot.journal_seq and snapshot.version > sent:
                sent = snapshot.version
                yield snapshot
                if snapshot.final:
                    return
            await wait_event(changed, safety_read_s)
