"""A relay loop that hangs stops the relay (and so its service, for a restart)
instead of leaving statements unjournaled while the process looks alive."""

from __future__ import annotations

import asyncio

import nats
import pytest

from services.runtime.clock import SystemClock
from services.runtime.config import Settings
from services.runtime.db import apply_migrations, connect_pool
from services.runtime.journal_client import JournalSubjects, Outbox, OutboxRelay
from services.runtime.keys import load_or_create_signer
from services.runtime.waiting import Stalled

pytestmark = pytest.mark.integration


async def test_a_relay_whose_loop_hangs_stops_saying_which(settings: Settings) -> None:
    schema = settings.endpoint("orders").schema
    pool = await connect_pool(settings.database_url, schema)
    nc = await nats.connect(settings.nats_url)
    blocker = await pool.acquire()
    try:
        await apply_migrations(pool, schema, "services.runtime")
        signer = load_or_create_signer(settings.keys_dir, "orders")
        outbox = Outbox(signer, SystemClock(), schema)
        relay = OutboxRelay(
            pool, nc.jetstream(), JournalSubjects(settings.nats_prefix), outbox, stall_s=2
        )
        # A lock nobody releases: the publish loop's next read of the outbox
        # waits forever, as on a connection that never answers.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(Stalled, match="outbox relay: publish made no round in 2 s"):
            async with asyncio.timeout(30):
                await relay.run()
        await tx.rollback()
    finally:
        await pool.release(blocker)
        await nc.close()
        await pool.close()
