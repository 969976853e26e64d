"""Running a bank's replica as its own process: ``scf replica --bank NAME``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from services.contracts.subjects import Subjects
from services.gen.scf.journal.v1 import journal_pb2_grpc
from services.gen.scf.platform.v1 import platform_pb2_grpc
from services.gen.scf.replica.v1 import replica_pb2, replica_pb2_grpc
from services.journal import (
    Access,
    AuditServicer,
    ExplorerData,
    JournalStore,
    make_app,
    serve_explorer,
)
from services.replica.alarm import ALARM_KINDS, AlarmRecord
from services.replica.config import ReplicaSettings, database_beside
from services.replica.replica import Replica
from services.runtime.bus import connect_nats
from services.runtime.certs import PartyCert, load_party
from services.runtime.clock import Clock, SystemClock
from services.runtime.config import Settings
from services.runtime.db import apply_migrations, connect_pool
from services.runtime.dependencies import watch_dependencies
from services.runtime.errors import ConfigError
from services.runtime.grpcserver import GrpcServer, wait_for_signal
from services.runtime.identity import Role, require_role
from services.runtime.journal_client import audit_client
from services.runtime.keys import load_or_create_signer, read_public_key
from services.runtime.logs import install_stack_dumps
from services.runtime.metrics import (
    PROBES,
    REPLICA_ALARM,
    REPLICA_COSIGNED_SIZE,
    REPLICA_LAG_ENTRIES,
    REPLICA_LAG_SECONDS,
    REPLICA_TREE_SIZE,
)
from services.runtime.service import PlatformServicer
from services.runtime.waiting import SHUTDOWN_S, exit_if_stuck

__all__ = ["ReplicaServicer", "root_key", "run_replica"]

log = logging.getLogger(__name__)
#: The replica's tables live in this schema of the bank's own database.
SCHEMA = "journal"


def root_key(settings: Settings) -> bytes:
    """The platform root public key: the replica's only trust anchor."""
    return read_public_key(
        settings.keys_dir, "platform-root", hint="the platform root's public key, from the operator"
    )


async def ensure_database(dsn: str) -> None:
    """Create the replica's database on its server when it does not exist."""
    name = dsn.split("?")[0].rsplit("/", 1)[-1]
    try:
        conn = await asyncpg.connect(database_beside(dsn, "postgres"))
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigError("SCF_REPLICA_<BANK>_DATABASE_URL", f"cannot connect: {exc}") from None
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


class ReplicaServicer(replica_pb2_grpc.ReplicaServiceServicer):
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    async def GetStatus(self, request: Any, context: Any) -> replica_pb2.GetStatusResponse:
        require_role(Role.AUDITOR, Role.OPERATOR, Role.UNDERWRITER, Role.SERVICE)
        r = self.replica
        entries, millis = r.lag()
        reply = replica_pb2.GetStatusResponse(
            bank=r.bank,
            tree_size=r.size,
            root_hash=r.verifier.tree.root(),
            journal_size=r.journal_size,
            lag_entries=entries,
            lag_millis=millis,
            cosigned_size=r.cosigned_size,
            ingesting=r.ingesting,
            cosigned_checkpoint=await r.cosigned_note(),
            witness_public_key=r.witness.public_raw,
        )
        if r.alarm is not None:
            reply.alarm.CopyFrom(
                replica_pb2.Alarm(
                    kind=r.alarm.kind,
                    seq=r.alarm.seq,
                    problem=r.alarm.problem,
                    evidence=list(r.alarm.evidence),
                )
            )
        return reply


def export_metrics(replica: Replica) -> None:
    """The replica's figures, read from it whenever Prometheus scrapes."""
    bank = replica.bank
    REPLICA_TREE_SIZE.labels(bank).set_function(lambda: replica.size)
    REPLICA_LAG_ENTRIES.labels(bank).set_function(lambda: replica.lag()[0])
    REPLICA_LAG_SECONDS.labels(bank).set_function(lambda: replica.lag()[1] / 1000)
    REPLICA_COSIGNED_SIZE.labels(bank).set_function(lambda: replica.cosigned_size)

    def alarmed(kind: str) -> Callable[[], float]:
        return lambda: float(replica.alarm is not None and replica.alarm.kind == kind)

    for kind in ALARM_KINDS:
        REPLICA_ALARM.labels(bank, kind).set_function(alarmed(kind))


async def alarm_health(server: GrpcServer, alarm: AlarmRecord | None) -> None:
    """NOT_SERVING while an alarm stands: what an orchestrator can alert on."""
    problem = None if alarm is None else f"{alarm.kind} alarm at entry {alarm.seq}"
    await server.dependency("alarm", problem)


def serve_replica_explorer(
    replica: Replica, settings: Settings, rs: ReplicaSettings, tls: PartyCert, anchor: bytes
) -> asyncio.Task[None]:
    """The bank's auditors' explorer over the replica's own verified copy."""

    async def status() -> dict[str, Any]:
        entries, millis = replica.lag()
        alarm = replica.alarm
        return {
            "heading": f"{replica.bank}'s replica",
            "facts": [
                ("entries verified and stored", replica.size),
                ("the journal's size, as last seen", replica.journal_size),
                ("behind by", f"{entries} entries, {millis / 1000:.1f} s"),
                ("cosigned up to", replica.cosigned_size),
                ("ingesting", "yes" if replica.ingesting else "no: stopped by its alarm"),
            ],
            "alarm": None if alarm is None else {
                "kind": alarm.kind, "seq": alarm.seq, "problem": alarm.problem,
                "evidence": list(alarm.evidence),
            },
        }  # fmt: skip

    data = ExplorerData(JournalStore(replica.pool), settings.keys_dir, anchor)
    app = make_app(
        data, title=f"{replica.bank}'s replica", access=Access(bank=replica.bank), status=status
    )
    task = asyncio.create_task(serve_explorer(app, rs.explorer_addr, tls), name="explorer")
    task.add_done_callback(_said_if_failed)
    return task


def _said_if_failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the explorer stopped: %s", task.exception())


async def run_replica(
    settings: Settings,
    replica_settings: ReplicaSettings,
    *,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    started: list[Replica] | None = None,
) -> None:
    rs = replica_settings
    if stop is None:  # its own process: stacks on SIGUSR1/SIGUSR2 for the operator
        install_stack_dumps()
    anchor = root_key(settings)
    tls = load_party(settings.certs_dir, rs.party_id)
    witness = load_or_create_signer(settings.keys_dir, f"witness-{rs.bank}")
    await ensure_database(rs.database_url)
    pool = await connect_pool(rs.database_url, SCHEMA)
    server: GrpcServer | None = None
    nc = None
    task: asyncio.Task[None] | None = None
    watches: list[asyncio.Task[None]] = []
    try:
        await apply_migrations(pool, SCHEMA, "services.journal")
        await apply_migrations(pool, SCHEMA, "services.replica")
        nc = await connect_nats(
            settings.nats_url, f"scf-replica-{rs.bank}", user=settings.nats_user,
            password=settings.nats_password, ca_file=settings.certs_dir / "ca.pem",
        )  # fmt: skip
        replica = Replica(
            bank=rs.bank,
            pool=pool,
            nc=nc,
            js=nc.jetstream(),
            subjects=Subjects(settings.nats_prefix),
            root_key=anchor,
            witness=witness,
            clock=clock or SystemClock(),
            audit_client=audit_client(settings.endpoint("journal").grpc_addr, tls),
            cross_exam_period_s=rs.cross_exam_period_s,
        )
        if started is not None:
            started.append(replica)
        server = GrpcServer(f"replica-{rs.bank}", rs.listen_addr or rs.grpc_addr, tls)
        server.add(
            journal_pb2_grpc.add_AuditServiceServicer_to_server,
            AuditServicer(JournalStore(pool), anchor, keys_dir=settings.keys_dir),
            "scf.journal.v1.AuditService",
        )
        server.add(
            replica_pb2_grpc.add_ReplicaServiceServicer_to_server,
            ReplicaServicer(replica),
            "scf.replica.v1.ReplicaService",
        )
        server.add(
            platform_pb2_grpc.add_PlatformServiceServicer_to_server,
            PlatformServicer(rs.party_id, replica.clock),
            "scf.platform.v1.PlatformService",
        )
        task = asyncio.create_task(replica.run(), name=f"replica-{rs.bank}")
        await server.start()
        PROBES.ready = lambda: server is not None and server.ready
        export_metrics(replica)
        if rs.explorer_addr:
            watches.append(serve_replica_explorer(replica, settings, rs, tls, anchor))
        await alarm_health(server, replica.alarm)  # one kept from before a restart
        replica.on_alarm = functools.partial(alarm_health, server)
        watches = [asyncio.create_task(watch_dependencies(server, pool, nc), name="dependencies")]
        if ready is not None:
            ready.set()
        stopper = asyncio.create_task(wait_for_signal() if stop is None else stop.wait())
        await asyncio.wait([stopper, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not stopper.done():
            stopper.cancel()
            task.result()  # an error ends the process; an alarm leaves it serving
            await (wait_for_signal() if stop is None else stop.wait())
    finally:
        if stop is None:
            exit_if_stuck(SHUTDOWN_S)
        for watch in watches:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if server is not None:
            await server.stop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if nc is not None and nc.is_connected:
            await nc.close()
        await pool.close()
