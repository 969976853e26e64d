"""How a watch call follows its subject (pure logic: a feed nobody publishes to)."""

from __future__ import annotations

import asyncio
from typing import Any

from services.runtime.watching import JournaledFeed, Snapshot, follow, notification


class Feed(JournaledFeed):
    """A feed without NATS: the test tells it what was journaled."""

    def __init__(self) -> None:
        super().__init__(nc=None, subject="unused")  # type: ignore[arg-type]

    async def tell(self, *subjects: str) -> None:
        await self._on_message(_Msg(notification([(s, 1) for s in subjects])))


class _Msg:
    def __init__(self, data: bytes) -> None:
        self.data = data


class Store:
    """A subject's versions as the database would hold them."""

    def __init__(self) -> None:
        self.version, self.seq, self.final, self.there = 1, 0, False, True
        self.reads = 0
        self.was_read = asyncio.Event()

    async def read(self) -> Snapshot[str] | None:
        self.reads += 1
        self.was_read.set()
        if not self.there:
            return None
        return Snapshot(f"v{self.version}", self.version, self.seq, self.final)


async def _next(stream: Any) -> Snapshot[str]:
    async with asyncio.timeout(5):
        return await anext(stream)  # type: ignore[no-any-return]


async def test_a_version_is_sent_once_journaled_then_each_change_until_final() -> None:
    feed, store = Feed(), Store()
    stream = follow(feed, "order/1", store.read, safety_read_s=60)
    waiting = asyncio.ensure_future(_next(stream))
    await asyncio.wait_for(store.was_read.wait(), 5)  # v1, not journaled: nothing sent
    assert not waiting.done()
    store.seq = 7
    await feed.tell("order/2")  # another subject: it does not read again
    for _ in range(3):
        await asyncio.sleep(0)  # let the watch run, were it woken
    assert store.reads == 1 and not waiting.done()
    await feed.tell("order/1")
    assert (await waiting).view == "v1"
    # Two versions in quick succession: the latest alone, with its own entry.
    store.version, store.seq = 3, 9
    await feed.tell("order/1")
    got = await _next(stream)
    assert (got.view, got.version, got.journal_seq) == ("v3", 3, 9)
    store.version, store.seq, store.final = 4, 10, True
    await feed.tell("order/1")
    assert (await _next(stream)).final
    async with asyncio.timeout(5):
        assert [s async for s in stream] == []  # ended after the final version


async def test_a_lost_notification_costs_latency_not_the_change() -> None:
    feed, store = Feed(), Store()
    store.seq = 1
    stream = follow(feed, "loan/1", store.read, safety_read_s=0.05)
    assert (await _next(stream)).version == 1
    store.version, store.seq = 2, 2  # journaled, but nobody tells the feed
    assert (await _next(stream)).version == 2


async def test_a_subject_not_there_yet_is_waited_for() -> None:
    feed, store = Feed(), Store()
    store.there = False
    stream = follow(feed, "loan/9", store.read, safety_read_s=60)
    waiting = asyncio.ensure_future(_next(stream))
    await asyncio.wait_for(store.was_read.wait(), 5)
    store.there, store.seq = True, 4
    await feed.tell("loan/9")
    assert (await waiting).journal_seq == 4


async def test_a_notification_that_does_not_decode_is_ignored() -> None:
    feed = Feed()
    with feed.changes("order/1") as changed:
        await feed._on_message(_Msg(b"\xff\xff not protobuf"))
        assert not changed.is_set()
        await feed.tell("order/1")
        assert changed.is_set()
    assert feed._waiting == {}  # a watch that ended leaves nothing behind
