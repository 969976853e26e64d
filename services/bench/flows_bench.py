"""`scf bench flows`: complete flows against the whole platform, with its replicas.

Reports flows/s, p50/p95/p99 of every step and of register-to-disbursed, the
journal's append rate, the banks' replica lag, errors, and the CPU each
process used (where the time goes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.bench.journal_bench import machine
from services.bench.load import FlowLoad, percentiles
from services.gen.scf.replica.v1 import replica_pb2, replica_pb2_grpc
from services.replica.config import EXAMPLE_BANKS
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.platform import Platform
from services.runtime.waiting import wait_event

__all__ = ["FlowResult", "ReplicaLag", "bench_flows", "journal_size"]


@dataclass
class FlowResult:
    flows: int
    concurrency: int
    seconds: float
    flows_per_s: float
    register_to_disbursed_ms: dict[str, float]
    steps_ms: dict[str, dict[str, float]]
    journal_entries: int
    journal_appends_per_s: float
    replica_lag_entries: dict[str, float]
    errors: int
    machine: str
    #: CPU seconds each process used during the run: where the time goes.
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)


def cpu_seconds(platform: Platform) -> dict[str, float]:
    import psutil

    out = {}
    for name, proc in platform.processes.items():
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(proc.process.pid).cpu_times()
            out[name] = t.user + t.system
    t = os.times()
    out["load generator"] = t.user + t.system
    # The embedded servers, when the platform started them: NATS is a child;
    # PostgreSQL's postmaster (pg_ctl detached it) is found by its data directory.
    data_dir = str(platform.settings.data_dir)
    servers: list[tuple[str, Any]] = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if data_dir in cmdline and (proc.info["name"] or "").startswith(("postgres", "nats")):
            servers.append(
                ("postgresql" if "postgres" in proc.info["name"] else "nats-server", proc)
            )
    for key, proc in servers:
        with contextlib.suppress(psutil.Error):
            for p in (proc, *proc.children(recursive=True)):
                times = p.cpu_times()
                out[key] = out.get(key, 0.0) + times.user + times.system
    return out


async def journal_size(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        schema = settings.endpoint("journal").schema
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".entries'))
    finally:
        await conn.close()


class ReplicaLag:
    """Samples every bank replica's lag (entries behind) while the load runs."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.samples: dict[str, list[int]] = {b: [] for b in EXAMPLE_BANKS}

    async def sample(self, stop: asyncio.Event) -> None:
        tls = load_party(self.platform.settings.certs_dir, "operator")
        async with contextlib.AsyncExitStack() as stack:
            stubs = {
                bank: replica_pb2_grpc.ReplicaServiceStub(
                    await stack.enter_async_context(
                        client_channel(self.platform.addr_of(f"replica-{bank}"), tls)
                    )
                )
                for bank in EXAMPLE_BANKS
            }
            while not stop.is_set():
                for bank, stub in stubs.items():
                    with contextlib.suppress(Exception):  # a replica may be down (faults)
                        status = await stub.GetStatus(replica_pb2.GetStatusRequest(), timeout=2)
                        self.samples[bank].append(status.lag_entries)
                await wait_event(stop, 0.5)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for bank, values in self.samples.items():
            ordered = sorted(values) or [0]
            out[f"{bank} p99"] = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            out[f"{bank} max"] = ordered[-1]
        return out


async def bench_flows(
    settings: Settings,
    flows: int,
    concurrency: int,
    run_seconds: float,
    on_progress: Callable[[int], None] | None = None,
) -> FlowResult:
    platform = Platform(settings, replicas=EXAMPLE_BANKS)
    await platform.start()
    try:
        load = FlowLoad(platform.settings, flows, concurrency, run_seconds)
        load.on_progress = on_progress
        lag = ReplicaLag(platform)
        stop = asyncio.Event()
        sampler = asyncio.create_task(lag.sample(stop))
        entries_before = await journal_size(platform.settings)
        cpu_before = cpu_seconds(platform)
        started = time.perf_counter()
        elapsed = await load.run()
        entries = await journal_size(platform.settings) - entries_before
        journal_seconds = time.perf_counter() - started
        cpu_after = cpu_seconds(platform)
        stop.set()
        await sampler
    finally:
        platform.stop()
    return FlowResult(
        flows=len(load.totals),
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        flows_per_s=round(len(load.totals) / elapsed, 1),
        register_to_disbursed_ms=percentiles(load.totals),
        steps_ms={k: percentiles(v) for k, v in load.timings.items()},
        journal_entries=entries,
        journal_appends_per_s=round(entries / journal_seconds, 1),
        replica_lag_entries=lag.summary(),
        errors=len(load.errors),
        machine=machine(),
        cpu_seconds={k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after},
        error_samples=load.errors[:3],
    )
