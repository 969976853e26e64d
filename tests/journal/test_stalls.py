"""A loop that hangs stops its owner (the relay, the sequencer), and so its
service, for a restart, instead of leaving the process alive doing nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest

from services.contracts.subjects import Subjects
from services.journal.genesis import load_genesis, load_root_public, origin_for
from services.journal.sequencer import Sequencer, SequencerConfig
from services.runtime.clock import SystemClock
from services.runtime.config import Settings
from services.runtime.db import apply_migrations, connect_pool
from services.runtime.journal_client import Outbox, OutboxRelay
from services.runtime.keys import load_or_create_signer
from services.runtime.waiting import Stalled
from tests.journal.helpers import producer, relay_messenger

pytestmark = pytest.mark.integration

Lock = Callable[[str], Awaitable[None]]


@contextlib.asynccontextmanager
async def _service(
    settings: Settings, name: str, *packages: str
) -> AsyncIterator[tuple[Any, Any, Lock]]:
    """A service's pool (migrated) and NATS connection, and a way to lock one of
    its tables with a lock nobody releases: whoever touches the table next waits
    forever, as on a connection that never answers."""
    schema = settings.endpoint(name).schema
    pool = await connect_pool(settings.database_url, schema)
    nc = await nats.connect(settings.nats_url)
    blocker = await pool.acquire()
    tx = blocker.transaction()
    try:
        for package in ("services.runtime", *packages):
            await apply_migrations(pool, schema, package)

        async def lock(table: str) -> None:
            await tx.start()
            await blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

        yield pool, nc, lock
    finally:
        with contextlib.suppress(Exception):
            await tx.rollback()
        await pool.release(blocker)
        await nc.close()
        await pool.close()


async def test_a_relay_whose_loop_hangs_stops_saying_which(settings: Settings) -> None:
    async with _service(settings, "orders") as (pool, nc, lock):
        signer = load_or_create_signer(settings.keys_dir, "orders")
        outbox = Outbox(signer, SystemClock(), settings.endpoint("orders").schema)
        relay = OutboxRelay(
            pool, nc.jetstream(), Subjects(settings.nats_prefix), outbox,
            relay_messenger(settings, nc, signer), stall_s=2,
        )  # fmt: skip
        await lock("outbox")  # the publish loop's next read of the outbox waits
        with pytest.raises(Stalled, match="outbox relay: publish made no round in 2 s"):
            async with asyncio.timeout(30):
                await relay.run()


async def test_a_sequencer_whose_commit_hangs_stops_saying_so(settings: Settings) -> None:
    async with _service(settings, "journal", "services.journal") as (pool, nc, lock):
        keys = settings.keys_dir
        sequencer = Sequencer(
            pool, nc.jetstream(), Subjects(settings.nats_prefix),
            load_or_create_signer(keys, "journal"), load_root_public(keys), SystemClock(),
            SequencerConfig(origin=origin_for(settings.nats_prefix), stall_s=2),
        )  # fmt: skip
        genesis = load_genesis(keys, load_root_public(keys), origin_for(settings.nats_prefix))
        task = asyncio.create_task(sequencer.run(genesis))
        try:
            async with asyncio.timeout(30):
                await sequencer.ready.wait()
            await lock("entries")  # the next commit waits
            async with producer(settings) as p:
                await p.append(3)
                with pytest.raises(Stalled, match="sequencer: sequencing made no round in 2 s"):
                    async with asyncio.timeout(30):
                        await task
        finally:
            task.cancel()
