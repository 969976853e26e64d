"""A sequencer whose round hangs stops (and so its journal process, for a
restart) instead of staying up journaling nothing."""

from __future__ import annotations

import asyncio

import nats
import pytest

from services.journal.sequencer import Sequencer, SequencerConfig
from services.journal.service import ROOT_KEY_NAME, origin_for
from services.runtime.clock import SystemClock
from services.runtime.config import Settings
from services.runtime.db import apply_migrations, connect_pool
from services.runtime.journal_client import JournalSubjects
from services.runtime.keys import load_or_create_signer
from services.runtime.waiting import Stalled
from tests.journal.helpers import producer

pytestmark = pytest.mark.integration


async def test_a_sequencer_whose_commit_hangs_stops_saying_so(settings: Settings) -> None:
    schema = settings.endpoint("journal").schema
    pool = await connect_pool(settings.database_url, schema)
    nc = await nats.connect(settings.nats_url)
    blocker = await pool.acquire()
    task = None
    try:
        await apply_migrations(pool, schema, "services.runtime")
        await apply_migrations(pool, schema, "services.journal")
        keys = settings.keys_dir
        sequencer = Sequencer(
            pool, nc.jetstream(), JournalSubjects(settings.nats_prefix),
            load_or_create_signer(keys, "journal"), load_or_create_signer(keys, ROOT_KEY_NAME),
            SystemClock(),
            SequencerConfig(origin=origin_for(settings.nats_prefix), stall_s=2),
        )  # fmt: skip
        genesis = {n: load_or_create_signer(keys, n).public_raw for n in ("journal", "orders")}
        task = asyncio.create_task(sequencer.run(genesis))
        async with asyncio.timeout(30):
            await sequencer.ready.wait()
        # A lock nobody releases: the next commit waits forever.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE entries IN ACCESS EXCLUSIVE MODE")
        async with producer(settings) as p:
            await p.append(3)
            with pytest.raises(Stalled, match="sequencer: sequencing made no round in 2 s"):
                async with asyncio.timeout(30):
                    await task
        await tx.rollback()
    finally:
        if task is not None and not task.done():
            task.cancel()
        await pool.release(blocker)
        await nc.close()
        await pool.close()
