"""Replica benchmarks: ingest with full verification, and lag under a steady load."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import nats

from services.bench.journal_bench import (
    bench_signers,
    fill_journal,
    machine,
    publish_batches,
    signed_batches,
    wait_size,
)
from services.contracts.subjects import Subjects
from services.replica.config import database_beside
from services.runtime.config import Settings
from services.runtime.db import connect_pool
from services.runtime.platform import Platform
from services.runtime.ports import free_port

BANK = "bank-north"


@dataclass
class IngestResult:
    entries: int
    journal_seconds: float
    #: From starting the replica process to its having every entry.
    replica_seconds: float
    #: Of which, process start-up until the first entry was stored.
    startup_seconds: float
    #: Entries per second once ingesting (first entry stored to last).
    entries_per_s: float
    machine: str


@dataclass
class LagResult:
    rate_per_s: int
    seconds: float
    entries: int
    samples: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    machine: str


def _replica_env(settings: Settings) -> str:
    """Point the bank's replica at its own database; returns its DSN."""
    dsn = database_beside(settings.database_url, f"bench_{settings.nats_prefix}_replica")
    os.environ["SCF_REPLICA_BANK_NORTH_DATABASE_URL"] = dsn
    os.environ["SCF_REPLICA_BANK_NORTH_ADDR"] = f"127.0.0.1:{free_port()}"
    return dsn


async def bench_ingest(settings: Settings, n: int, progress: Any = None) -> IngestResult:
    """Fill the journal with ``n`` entries, then time a new replica catching up from the stream."""
    dsn = _replica_env(settings)
    platform = Platform(settings, services=("journal",))
    try:
        _, journal_seconds = await fill_journal(settings, platform, n)
        t0 = time.perf_counter()
        platform.spawn(f"replica-{BANK}")
        replica = None
        while replica is None:  # the replica creates its database and tables first
            try:
                replica = await connect_pool(dsn, "journal")
                await replica.fetchval("SELECT 1 FROM entries LIMIT 1")
            except Exception:
                if replica is not None:
                    await replica.close()
                replica = None
                await asyncio.sleep(0.1)
        await wait_size(replica, 2, t0 + 60)
        first = time.perf_counter()
        await wait_size(replica, n + 1, t0 + max(300.0, n / 500), progress)
        done = time.perf_counter()
        await replica.close()
    finally:
        platform.stop()
    return IngestResult(n, journal_seconds, done - t0, first - t0, n / (done - first), machine())


async def bench_lag(settings: Settings, rate: int, seconds: float) -> LagResult:
    """Append at a steady ``rate`` for ``seconds``; sample how far the replica trails."""
    signers = bench_signers(settings)
    dsn = _replica_env(settings)
    per_tick, tick = max(1, rate // 20), 0.05
    ticks = int(seconds / tick)
    batches = signed_batches(signers, per_tick * ticks, per_batch=min(256, per_tick))
    platform = Platform(settings, services=("journal",), replicas=(BANK,))
    await platform.start()
    samples: list[float] = []
    try:
        nc = await nats.connect(settings.nats_url)
        js = nc.jetstream()
        subjects = Subjects(settings.nats_prefix)
        journal = await connect_pool(settings.database_url, settings.endpoint("journal").schema)
        replica = await connect_pool(dsn, "journal")
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                have = int(await replica.fetchval("SELECT coalesce(max(seq) + 1, 0) FROM entries"))
                t = await journal.fetchval("SELECT time_micros FROM entries WHERE seq = $1", have)
                now = time.time_ns() // 1000
                samples.append(0.0 if t is None else max(0.0, (now - t) / 1000))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        per_tick_batches = max(1, len(batches) // ticks)
        start = time.perf_counter()
        for i in range(ticks):
            chunk = batches[i * per_tick_batches : (i + 1) * per_tick_batches]
            await publish_batches(js, subjects, chunk)
            await asyncio.sleep(max(0.0, start + (i + 1) * tick - time.perf_counter()))
        elapsed = time.perf_counter() - start
        total = sum(len(b.statements) for b in batches)
        await wait_size(replica, total + 1, time.perf_counter() + 60)
        stop.set()
        await sampler
        for pool in (journal, replica):
            await pool.close()
        await nc.close()
    finally:
        platform.stop()
    ordered = sorted(samples)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return LagResult(
        rate, round(elapsed, 1), total, len(samples), pct(0.5), pct(0.99), round(ordered[-1], 1),
        machine(),
    )  # fmt: skip
