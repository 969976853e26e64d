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
from services.bench.load import FlowLoad, bench_parties, percentiles
from services.gen.scf.replica.v1 import replica_pb2, replica_pb2_grpc
from services.replica.config import EXAMPLE_BANKS
from services.runtime.certs import ensure_certificates, load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.platform import Platform
from services.runtime.waiting import wait_event

__all__ = [
    "SWEEP",
    "FlowResult",
    "ReplicaLag",
    "bench_flows",
    "bench_sweep",
    "journal_size",
    "measure",
]


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
    #: The same per finished flow, and all of it together ("all").
    cpu_ms_per_flow: dict[str, float] = field(default_factory=dict)
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
        return await measure(platform, flows, concurrency, run_seconds, 0, on_progress)
    finally:
        platform.stop()


#: The concurrency levels of ``scf bench flows --sweep``.
SWEEP = (1, 5, 20, 50, 100)


async def bench_sweep(
    settings: Settings,
    flows: int,
    run_seconds: float,
    levels: tuple[int, ...] = SWEEP,
    on_level: Callable[[FlowResult], None] | None = None,
) -> list[FlowResult]:
    """``flows`` flows at each concurrency in ``levels``, on one platform; at
    least five flows per worker, so that every worker finishes a few."""
    platform = Platform(settings, replicas=EXAMPLE_BANKS)
    await platform.start()
    results: list[FlowResult] = []
    try:
        first = 0
        for level in levels:
            count = max(flows, 5 * level)
            result = await measure(platform, count, level, run_seconds, first)
            first += count
            results.append(result)
            if on_level is not None:
                on_level(result)
    finally:
        platform.stop()
    return results


async def measure(
    platform: Platform,
    flows: int,
    concurrency: int,
    run_seconds: float,
    first: int,
    on_progress: Callable[[int], None] | None = None,
) -> FlowResult:
    """One load on a running platform: flows ``first`` … ``first + flows - 1``.
    The subcontractors' certificates are issued before the clock starts: a
    party gets one when it joins, not with each financing."""
    ensure_certificates(platform.settings.certs_dir, bench_parties(first + flows))
    load = FlowLoad(platform.settings, first + flows, concurrency, run_seconds)
    load.started = first
    load.on_progress = on_progress
    lag = ReplicaLag(platform)
    stop = asyncio.Event()
    sampler = asyncio.create_task(lag.sample(stop))
    entries_before = await journal_size(platform.settings)
    cpu_before = cpu_seconds(platform)
    started = time.perf_counter()
    try:
        elapsed = await load.run()
        entries = await journal_size(platform.settings) - entries_before
        journal_seconds = time.perf_counter() - started
        cpu_after = cpu_seconds(platform)
    finally:
        stop.set()
        await sampler
    done = len(load.totals)
    cpu = {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after}
    return FlowResult(
        flows=done,
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        flows_per_s=round(done / elapsed, 1),
        register_to_disbursed_ms=percentiles(load.totals),
        steps_ms={k: percentiles(v) for k, v in load.timings.items()},
        journal_entries=entries,
        journal_appends_per_s=round(entries / journal_seconds, 1),
        replica_lag_entries=lag.summary(),
        errors=len(load.errors),
        machine=machine(),
        cpu_seconds=cpu,
        cpu_ms_per_flow={
            **{k: round(1000 * v / max(done, 1), 1) for k, v in cpu.items()},
            "all": round(1000 * sum(cpu.values()) / max(done, 1), 1),
        },
        error_samples=load.errors[:3],
    )
