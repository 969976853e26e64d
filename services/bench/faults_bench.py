"""`scf bench faults`: the flows load while processes and servers fail, then the proof
that nothing was lost or done twice.

During a run of complete flows (clients repeating unanswered calls with the
same idempotency keys, as real clients do) the faults strike one after
another, each when a share of the flows has finished: ``kill -9`` of every
service in turn and of a bank's replica (each restarted at once, as a
supervisor would), PostgreSQL stopped as by a crash and restarted, and the
NATS server killed and restarted. Then, once the platform is quiet:

- every flow that was started finished, and each exactly once: one
  application per flow, one loan per disbursement;
- no statement is missing or doubled: every service's every outbox row is
  the journal entry it was assigned, and every entry has its row;
- the journal verifies from the root key alone (`scf audit verify`);
- both banks' replicas hold the whole journal, with the same root.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.bench.flows_bench import ReplicaLag, journal_size
from services.bench.journal_bench import machine
from services.bench.load import FlowLoad
from services.contracts.subjects import Subjects
from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.gen.scf.replica.v1 import replica_pb2, replica_pb2_grpc
from services.journal.offline import verify_database
from services.replica.config import EXAMPLE_BANKS
from services.runtime.certs import load_party
from services.runtime.config import SERVICE_NAMES, Settings
from services.runtime.embedded import EmbeddedNatsCluster
from services.runtime.grpcserver import client_channel
from services.runtime.platform import Platform
from services.runtime.waiting import wait_event
from services.runtime.watch_client import WatchEnded, watch_until

__all__ = ["ALL_FAULTS", "CLUSTER_FAULTS", "FaultReport", "run_cluster_faults", "run_faults"]

PRODUCERS = tuple(s for s in SERVICE_NAMES if s != "journal")
ALL_FAULTS = (*SERVICE_NAMES, "replica-bank-north", "postgres", "nats")
#: Flows that must finish after one fault before the next strikes.
RECOVERED_FLOWS = 3
#: On the three-node cluster: a node dies, the platform goes on, the node comes back.
CLUSTER_FAULTS = ("nats-node-0 down", "nats-node-0 up")


@dataclass
class FaultReport:
    flows_started: int
    flows_finished: int
    faults: list[dict[str, Any]]
    #: Processes the supervisor started again: the killed ones, and those that
    #: exited on their own when PostgreSQL or NATS went away.
    process_restarts: int
    client_retries: int
    seconds: float
    applications: int
    disbursed: int
    loans: int
    journal_entries_verified: int
    statements_checked: int
    statements_missing: int
    entries_without_statement: int
    replicas: dict[str, dict[str, Any]]
    #: The journal stream's copies in JetStream, and how many are current.
    stream_copies: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    machine: str = ""

    @property
    def ok(self) -> bool:
        sizes = {r["tree_size"] for r in self.replicas.values()}
        roots = {r["root"] for r in self.replicas.values()}
        return (
            self.flows_finished == self.flows_started == self.applications == self.disbursed
            and self.loans == self.disbursed
            and self.statements_missing == 0
            and self.entries_without_statement == 0
            and sizes == {self.journal_entries_verified}
            and len(roots) == 1
            and not self.errors
        )


async def _inject(platform: Platform, target: str, cluster: EmbeddedNatsCluster | None) -> None:
    if target.startswith("nats-node-"):  # "nats-node-<i> down" or "... up"
        assert cluster is not None, "node faults need the three-node cluster"
        node, _, how = target.removeprefix("nats-node-").partition(" ")
        await asyncio.to_thread(cluster.kill if how == "down" else cluster.restart, int(node))
    elif target in platform.processes:
        proc = platform.processes[target]
        os.kill(proc.process.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.process.wait)
        # As the supervisor running beside would (one event loop: no race).
        platform.respawn_dead()
        await platform.wait_ready(target, timeout=60)
    elif target == "postgres":
        assert platform.postgres is not None, "the fault run needs the embedded PostgreSQL"
        await asyncio.to_thread(platform.postgres.restart, "immediate")
    elif target == "nats":
        assert platform.nats is not None, "the fault run needs the embedded NATS"
        await asyncio.to_thread(platform.nats.kill)
        await asyncio.to_thread(platform.nats.start)
    else:
        raise ValueError(f"unknown fault target {target!r}")


async def _quiet(platform: Platform, disbursed: int, timeout: float) -> None:
    """Until every statement is journaled and repayment holds every loan: looked
    at again each time a relay says it recorded entries (and each second)."""
    from services.runtime.bus import connect_nats

    settings = platform.settings
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(settings.database_url)
    nc = await connect_nats(
        settings.nats_url, "scf-fault-quiet", user=settings.nats_user,
        password=settings.nats_password,
    )  # fmt: skip
    moved = asyncio.Event()

    async def journaled(_msg: Any) -> None:
        moved.set()

    await nc.subscribe(Subjects(settings.nats_prefix).journaled("*"), cb=journaled)
    try:
        while True:
            moved.clear()
            # One snapshot: a loan counted here has its statement counted too (they
            # are written together), so the last loans' statements are waited for.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                loans = await conn.fetchval(
                    f'SELECT count(*) FROM "{settings.endpoint("repayment").schema}".loans'
                )
                pending = await _pending(conn, settings)
            if not any(pending.values()) and loans >= disbursed:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not quiet: statements pending {pending}, {loans} of {disbursed} loans;"
                    f" {await _stacks(platform)}"
                )
            await wait_event(moved, 1.0)
    finally:
        await nc.close()
        await conn.close()


async def _pending(conn: Any, settings: Settings) -> dict[str, int]:
    """Per service: statements not yet journaled (refused ones count: they never will be)."""
    return {
        s: await conn.fetchval(
            f'SELECT count(*) FROM "{settings.endpoint(s).schema}".outbox WHERE journal_seq IS NULL'
        )
        for s in PRODUCERS
    }


async def _stacks(platform: Platform) -> str:
    """What a platform that will not go quiet is doing: each process's asyncio
    stacks go to its log (SIGUSR1), and the answer says which are alive."""
    procs = [p for p in platform.processes.values() if p.alive]
    sizes = [p.log_path.stat().st_size for p in procs]
    for proc in procs:
        os.kill(proc.process.pid, signal.SIGUSR1)
    # Each process writes its dump from its own loop: until every log has grown.
    deadline = time.monotonic() + 5
    while True:
        grown = all(p.log_path.stat().st_size > n for p, n in zip(procs, sizes, strict=True))
        if grown or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    alive = {name: proc.alive for name, proc in platform.processes.items()}
    return f"processes alive {alive}; task stacks in {platform.settings.data_dir / 'logs'}"


async def _ledger(settings: Settings) -> dict[str, int]:
    """Counts that show nothing was lost or doubled."""
    journal = settings.endpoint("journal").schema
    conn = await asyncpg.connect(settings.database_url)
    try:
        lending = settings.endpoint("lending").schema
        out = {
            "applications": await conn.fetchval(f'SELECT count(*) FROM "{lending}".applications'),
            "disbursed": await conn.fetchval(
                f"SELECT count(*) FROM \"{lending}\".applications WHERE state = 'disbursed'"
            ),
            "loans": await conn.fetchval(
                f'SELECT count(*) FROM "{settings.endpoint("repayment").schema}".loans'
            ),
            "statements": 0,
            "missing": 0,
            "orphans": 0,
        }
        for s in PRODUCERS:
            schema = settings.endpoint(s).schema
            out["statements"] += await conn.fetchval(f'SELECT count(*) FROM "{schema}".outbox')
            # A row whose entry is not in the journal, or not at the seq it was given.
            out["missing"] += await conn.fetchval(
                f'SELECT count(*) FROM "{schema}".outbox o LEFT JOIN "{journal}".entries e'
                " ON e.producer = $1 AND e.idempotency_key = o.idempotency_key"
                " WHERE e.seq IS NULL OR o.journal_seq IS DISTINCT FROM e.seq",
                s,
            )
            # An entry in the service's name that no state change of the service wrote.
            out["orphans"] += await conn.fetchval(
                f'SELECT count(*) FROM "{journal}".entries e WHERE e.producer = $1'
                f' AND NOT EXISTS (SELECT 1 FROM "{schema}".outbox o'
                " WHERE o.idempotency_key = e.idempotency_key)",
                s,
            )
        return out
    finally:
        await conn.close()


async def _stream_copies(settings: Settings) -> dict[str, int]:
    from services.contracts.subjects import Subjects
    from services.runtime.bus import connect_nats

    nc = await connect_nats(
        settings.nats_url, "scf-fault-check", user=settings.nats_user,
        password=settings.nats_password,
    )  # fmt: skip
    try:
        info = await nc.jetstream().stream_info(Subjects(settings.nats_prefix).journal_stream.name)
        current = 1 + sum(
            1 for r in (info.cluster.replicas if info.cluster else None) or [] if r.current
        )
        return {"configured": info.config.num_replicas or 1, "current": current}
    finally:
        await nc.close()


async def _replicas(platform: Platform, size: int, timeout: float) -> dict[str, dict[str, Any]]:
    """Each bank's replica once it verified a checkpoint of ``size`` entries (its
    own audit API's checkpoint watch), or its status at the deadline."""
    tls = load_party(platform.settings.certs_dir, "operator")
    out: dict[str, dict[str, Any]] = {}
    for bank in EXAMPLE_BANKS:
        async with client_channel(platform.addr_of(f"replica-{bank}"), tls) as channel:
            audit = journal_pb2_grpc.AuditServiceStub(channel)
            request = journal_pb2.WatchCheckpointsRequest(min_size=size)

            def watch(left: float, a: Any = audit, r: Any = request) -> Any:
                return a.WatchCheckpoints(r, timeout=left)

            with contextlib.suppress(TimeoutError, WatchEnded):
                await watch_until(
                    watch, lambda _reply: True, timeout, f"replica-{bank} at {size} entries"
                )
            stub = replica_pb2_grpc.ReplicaServiceStub(channel)
            status = await stub.GetStatus(replica_pb2.GetStatusRequest(), timeout=5)
            out[bank] = {
                "tree_size": status.tree_size,
                "root": status.root_hash.hex(),
                "alarm": status.alarm.problem if status.HasField("alarm") else "",
            }
    return out


async def run_faults(
    settings: Settings,
    flows: int,
    concurrency: int,
    run_seconds: float,
    faults: tuple[str, ...] = ALL_FAULTS,
    cluster: EmbeddedNatsCluster | None = None,
) -> FaultReport:
    platform = Platform(settings, replicas=EXAMPLE_BANKS)
    await platform.start()
    injected: list[dict[str, Any]] = []
    try:
        load = FlowLoad(platform.settings, flows, concurrency, run_seconds, retry=True)
        finished = asyncio.Condition()

        def progress(done: int) -> None:
            async def notify() -> None:
                async with finished:
                    finished.notify_all()

            asyncio.get_running_loop().create_task(notify())

        load.on_progress = progress

        async def injector() -> None:
            # Fault k strikes once k/(F+1) of the flows have finished, and never
            # before flows finish again after the previous fault: one fault at a
            # time, each into a platform that recovered from the last.
            after_last = 0
            for k, target in enumerate(faults, start=1):
                threshold = max(k * flows // (len(faults) + 1), after_last + RECOVERED_FLOWS)
                async with finished:
                    await finished.wait_for(lambda t=threshold: len(load.disbursed) >= t)  # type: ignore[misc]
                started = time.perf_counter()
                await _inject(platform, target, cluster)
                after_last = len(load.disbursed)
                injected.append(
                    {"fault": "kill -9"
                     if target in platform.processes or target.endswith(" down") else "restart",
                     "target": target, "after_flows": len(load.disbursed),
                     "recovery_s": round(time.perf_counter() - started, 2)}
                )  # fmt: skip

        lag = ReplicaLag(platform)
        stop = asyncio.Event()
        sampler = asyncio.create_task(lag.sample(stop))
        supervisor = asyncio.create_task(platform.supervise(stop))
        started = time.perf_counter()
        faults_task = asyncio.create_task(injector())
        # The flows go on until every fault has struck and the platform recovered.
        load.more = lambda: not faults_task.done()
        await load.run()
        if not faults_task.done():  # the time limit ended the flows before every fault
            faults_task.cancel()
        errors = list(load.errors)
        try:
            await faults_task
        except asyncio.CancelledError:
            errors.append(f"only {len(injected)} of {len(faults)} faults struck")
        except Exception as exc:  # a fault that could not be injected or recovered from
            errors.append(f"fault {len(injected) + 1} failed: {exc!r}"[:300])
        seconds = time.perf_counter() - started
        await _quiet(platform, len(load.disbursed), timeout=120)
        stop.set()
        await sampler
        restarts = await supervisor
        size = await journal_size(platform.settings)
        root = bytes.fromhex((platform.settings.keys_dir / "platform-root.pub").read_text())
        report = await verify_database(
            platform.settings.database_url, platform.settings.endpoint("journal").schema, root
        )
        ledger = await _ledger(platform.settings)
        copies = await _stream_copies(platform.settings)
        replicas = await _replicas(platform, size, timeout=120)
    finally:
        platform.stop()
    return FaultReport(
        flows_started=load.started,
        flows_finished=len(load.disbursed),
        faults=injected,
        process_restarts=len(restarts),
        client_retries=load.retries,
        seconds=round(seconds, 1),
        applications=ledger["applications"],
        disbursed=ledger["disbursed"],
        loans=ledger["loans"],
        journal_entries_verified=report.entries,
        statements_checked=ledger["statements"],
        statements_missing=ledger["missing"],
        entries_without_statement=ledger["orphans"],
        replicas=replicas,
        stream_copies=copies,
        errors=errors[:5],
        machine=machine(),
    )


async def run_cluster_faults(
    settings: Settings, flows: int, concurrency: int, run_seconds: float
) -> FaultReport:
    """The flows on a three-node NATS cluster whose streams keep three copies,
    while one node is killed and later started again."""
    cluster = EmbeddedNatsCluster(settings.data_dir / "nats-cluster")
    url = await asyncio.to_thread(cluster.start)
    try:
        await _jetstream_ready(url)
        on_cluster = dataclasses.replace(settings, nats_url=url, stream_replicas=3)
        return await run_faults(
            on_cluster, flows, concurrency, run_seconds, CLUSTER_FAULTS, cluster=cluster
        )
    finally:
        await asyncio.to_thread(cluster.stop)


async def _jetstream_ready(url: str, timeout: float = 30) -> None:
    """Until the cluster has elected its JetStream meta leader."""
    from services.runtime.bus import connect_nats

    nc = await connect_nats(url, "scf-cluster-probe")
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await nc.jetstream().account_info()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()
