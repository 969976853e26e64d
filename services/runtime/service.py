"""Running a service as its own process: the one start-up path all share.

A service supplies a :class:`ServiceSpec`; :func:`main` does the rest:
settings, logging, PostgreSQL pool and migrations, NATS, signing key, gRPC
server with mTLS, metrics, and graceful shutdown on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.contracts.subjects import Subjects
from services.gen.scf.platform.v1 import platform_pb2, platform_pb2_grpc
from services.runtime.bus import connect_nats
from services.runtime.certs import load_party
from services.runtime.clock import Clock, ManualClock, OffsetClock, SystemClock
from services.runtime.config import ServiceEndpoint, Settings
from services.runtime.db import apply_migrations, connect_pool
from services.runtime.dependencies import watch_dependencies
from services.runtime.errors import ConfigError
from services.runtime.grpcserver import GrpcServer, wait_for_signal
from services.runtime.identity import current_identity
from services.runtime.journal_client import Outbox, OutboxRelay, audit_client
from services.runtime.keys import Signer, load_signer
from services.runtime.leadership import Leadership
from services.runtime.logs import (
    LOG_LEVELS,
    capture_native_stderr,
    install_stack_dumps,
    setup_logging,
)
from services.runtime.messaging import Messenger
from services.runtime.metrics import PROBES, serve_metrics
from services.runtime.peer_keys import PeerKeys
from services.runtime.platform_clock import follow_platform_clock
from services.runtime.tracing import setup_tracing, shutdown_tracing
from services.runtime.waiting import SHUTDOWN_S, exit_if_stuck, run_together
from services.runtime.watching import JournaledFeed

__all__ = ["PlatformServicer", "ServiceContext", "ServiceSpec", "main", "run_service"]

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What a running service has to work with."""

    settings: Settings
    endpoint: ServiceEndpoint
    pool: asyncpg.Pool[Any]
    nc: NATS
    js: JetStreamContext
    signer: Signer
    clock: Clock
    server: GrpcServer
    outbox: Outbox
    subjects: Subjects
    #: Signed requests, answers and events to and from the other services.
    messenger: Messenger
    #: Background tasks the service started; cancelled at shutdown.
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    #: What the journal confirmed of this service's subjects (journaling services).
    journaled: JournaledFeed | None = None
    #: Loops only one instance of the service may run at a time: the leader's.
    singletons: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    #: Called when the platform clock moved (demo and test modes): what waits on
    #: a date (offers lapsing, payments falling due) looks again at once.
    on_clock_move: list[Callable[[], None]] = field(default_factory=list)

    def clock_moved(self) -> None:
        for callback in self.on_clock_move:
            callback()

    @property
    def feed(self) -> JournaledFeed:
        """The feed its watch calls wait on."""
        if self.journaled is None:
            raise RuntimeError("only a service that journals has a journaled feed")
        return self.journaled


@dataclass(frozen=True)
class ServiceSpec:
    """How to build one service."""

    name: str
    #: Python package whose ``migrations/`` directory holds the service's SQL.
    package: str
    #: Registers servicers and starts background tasks; runs after migrations.
    setup: Callable[[ServiceContext], Awaitable[None]] | None = None
    #: Whether the service writes journal statements through the outbox.
    journals: bool = True


class PlatformServicer(platform_pb2_grpc.PlatformServiceServicer):
    """Served by every process with an API: the services and the banks' replicas."""

    def __init__(self, service: str, clock: Clock | None = None) -> None:
        self._service = service
        self.clock: Clock = clock or SystemClock()

    async def WhoAmI(
        self, request: platform_pb2.WhoAmIRequest, context: Any
    ) -> platform_pb2.WhoAmIResponse:
        who = current_identity()
        return platform_pb2.WhoAmIResponse(
            party_id=who.party_id,
            role=who.role.value,
            organization=who.organization,
            service=self._service,
            now_micros=self.clock.now_micros(),
        )


async def run_service(
    spec: ServiceSpec,
    settings: Settings,
    *,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run until ``stop`` is set (or a signal arrives when ``stop`` is None)."""
    endpoint = settings.endpoint(spec.name)
    if stop is None:  # its own process (not a test's task): the operator may ask
        install_stack_dumps()
    if not settings.nats_url:
        raise ConfigError("SCF_NATS_URL", "not set: start the platform with `scf up`, or set it")
    if not settings.database_url:
        raise ConfigError(
            "SCF_DATABASE_URL", "not set: start the platform with `scf up`, or set it"
        )
    tls = load_party(settings.certs_dir, spec.name)
    signer = load_signer(
        settings.keys_dir, spec.name, hint="issued with the genesis by `scf journal init`"
    )
    pool = await connect_pool(settings.database_url, endpoint.schema)
    nc: NATS | None = None
    server: GrpcServer | None = None
    ctx: ServiceContext | None = None
    try:
        applied = await apply_migrations(pool, endpoint.schema, "services.runtime")
        applied += await apply_migrations(pool, endpoint.schema, spec.package)
        if applied:
            log.info("applied migrations %s to schema %s", applied, endpoint.schema)
        nc = await connect_nats(
            settings.nats_url, f"scf-{spec.name}", user=settings.nats_user,
            password=settings.nats_password, ca_file=settings.certs_dir / "ca.pem",
        )  # fmt: skip
        server = GrpcServer(spec.name, endpoint.bind_addr, tls)
        platform_servicer = PlatformServicer(spec.name)
        server.add(
            platform_pb2_grpc.add_PlatformServiceServicer_to_server,
            platform_servicer,
            "scf.platform.v1.PlatformService",
        )
        follow = clock is None and settings.mode in ("demo", "test")
        clock = clock or (OffsetClock() if follow else SystemClock())
        subjects = Subjects(settings.nats_prefix)
        peers = PeerKeys(
            audit_client(settings.endpoint("journal").grpc_addr, tls), settings.keys_dir
        )
        ctx = ServiceContext(
            settings=settings,
            endpoint=endpoint,
            pool=pool,
            nc=nc,
            js=nc.jetstream(),
            signer=signer,
            clock=clock,
            server=server,
            outbox=Outbox(signer, clock, endpoint.schema),
            subjects=subjects,
            messenger=Messenger(nc, signer, peers),
        )
        platform_servicer.clock = clock
        if isinstance(clock, (OffsetClock, ManualClock)):
            clock.on_move(ctx.clock_moved)
        if follow and isinstance(clock, OffsetClock):
            ctx.tasks.append(
                asyncio.create_task(
                    follow_platform_clock(nc, settings.nats_prefix, clock, spec.name),
                    name="platform-clock",
                )
            )
        if spec.journals:
            journaled, client = subjects.journaled(spec.name), nc

            async def notify(data: bytes) -> None:
                await client.publish(journaled, data)

            relay = OutboxRelay(
                pool, ctx.js, subjects, ctx.outbox, ctx.messenger,
                max_payload=nc.max_payload, notify=notify, nc=nc,
            )  # fmt: skip
            ctx.journaled = JournaledFeed(nc, journaled)
            await ctx.journaled.start()
            await relay.setup()
            ctx.tasks.append(asyncio.create_task(relay.run_confirming(), name=f"{spec.name}-relay"))
            ctx.singletons.append(relay.run_publishing)
        if spec.setup is not None:
            await spec.setup(ctx)
        if ctx.singletons:
            leadership, loops = Leadership(pool, endpoint.schema, spec.name), ctx.singletons

            async def lead() -> None:
                await run_together(*(loop() for loop in loops))

            ctx.tasks.append(asyncio.create_task(leadership.run(lead), name="leadership"))
        await server.start()
        PROBES.ready = lambda: server is not None and server.ready
        ctx.tasks.append(
            asyncio.create_task(watch_dependencies(server, pool, nc), name="dependencies")
        )
        if ready is not None:
            ready.set()
        log.info("%s ready", spec.name)
        stopper = asyncio.create_task(wait_for_signal() if stop is None else stop.wait())
        done, _ = await asyncio.wait([stopper, *ctx.tasks], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            stopper.cancel()
            failed = done.pop()
            # A background task ended on its own: fail loudly so a supervisor restarts us.
            raise RuntimeError(f"{failed.get_name()} stopped") from failed.exception()
        log.info("%s stopping", spec.name)
    finally:
        if stop is None:  # its own process: it goes down within SHUTDOWN_S, whatever hangs
            exit_if_stuck(SHUTDOWN_S)
        if server is not None:
            await server.stop()
        if ctx is not None:
            for task in ctx.tasks:
                task.cancel()
            for task in ctx.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if nc is not None and nc.is_connected:
            # flush + close, not drain: drain waits for pull-subscription queues
            # that a cancelled fetch left behind. Unacked messages are redelivered.
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            await nc.close()
        await close_pool(pool, spec.name)


#: How long shutdown waits for the pool's connections to come back.
POOL_CLOSE_S = 5.0


async def close_pool(pool: Any, name: str, grace_s: float = POOL_CLOSE_S) -> None:
    """Close the pool; a connection still held after ``grace_s`` (by a task that
    shutdown interrupted in the middle of giving it back) is cut rather than
    waited for, which would hold the shutdown for good."""
    try:
        async with asyncio.timeout(grace_s):
            await pool.close()
    except TimeoutError:
        log.warning("%s: a database connection was still held at shutdown; cut", name)
        pool.terminate()


def main(spec: ServiceSpec) -> None:
    """Entry point of ``python -m services.<name>``."""
    try:
        settings = Settings.from_env()
        capture_native_stderr()  # gRPC's C-core lines as log lines too
        setup_logging(spec.name, settings.log_format, LOG_LEVELS[settings.log_level])
        setup_tracing(spec.name, os.environ)
        serve_metrics(settings.endpoint(spec.name).metrics_addr)
        try:
            asyncio.run(run_service(spec, settings))
        finally:
            shutdown_tracing()  # what is buffered goes out before the process does
    except ConfigError as exc:
        print(f"scf-{spec.name}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
