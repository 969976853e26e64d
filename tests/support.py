"""Helpers shared by the tests: free ports, per-test settings, in-process services."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from services.journal import init_journal, origin_for
from services.runtime.config import SERVICE_NAMES, ServiceEndpoint, Settings
from services.runtime.ports import free_ports
from services.runtime.service import ServiceSpec, run_service


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def make_settings(nats_url: str, database_url: str, certs_dir: Path, data_dir: Path) -> Settings:
    """Settings for one test: its own schemas, NATS prefix and ports."""
    tag = unique("t")
    ports = free_ports(len(SERVICE_NAMES))
    endpoints = {
        name: ServiceEndpoint(name, f"127.0.0.1:{port}", "", f"{tag}_{name}")
        for name, port in zip(SERVICE_NAMES, ports, strict=True)
    }
    # The operator's offline step: the root key, every service's key, the genesis.
    init_journal(data_dir / "keys", origin_for(tag), SERVICE_NAMES, time.time_ns() // 1000)
    return Settings(
        data_dir=data_dir,
        nats_url=nats_url,
        database_url=database_url,
        nats_prefix=tag,
        certs_dir=certs_dir,
        keys_dir=data_dir / "keys",
        log_format="text",
        mode="test",
        endpoints=endpoints,
    )


def with_endpoint(settings: Settings, name: str, **changes: str) -> Settings:
    endpoints = dict(settings.endpoints)
    endpoints[name] = dataclasses.replace(endpoints[name], **changes)
    return dataclasses.replace(settings, endpoints=endpoints)


async def provision_for(settings: Settings) -> None:
    """As the operator does before services start: every stream, consumer and bucket."""
    from services.runtime.bus import connect_nats
    from services.runtime.provision import provision

    nc = await connect_nats(
        settings.nats_url, "scf-test-provision", user=settings.nats_user,
        password=settings.nats_password,
    )  # fmt: skip
    try:
        await provision(
            nc.jetstream(), settings.nats_prefix, (*settings.banks, "bank-east"),
            replicas=settings.stream_replicas,
        )  # fmt: skip
    finally:
        await nc.close()


def messenger_as(settings: Settings, nc: Any, service: str) -> Any:
    """A Messenger signing as ``service`` (the test plays that service), checking
    answers against the journal's key set."""
    from services.runtime.certs import load_party
    from services.runtime.journal_client import audit_client
    from services.runtime.keys import load_or_create_signer
    from services.runtime.messaging import Messenger
    from services.runtime.peer_keys import PeerKeys

    tls = load_party(settings.certs_dir, service)
    peers = PeerKeys(audit_client(settings.endpoint("journal").grpc_addr, tls), settings.keys_dir)
    return Messenger(nc, load_or_create_signer(settings.keys_dir, service), peers)


async def ask(messenger: Any, subject: str, request: Any, reply_type: Any, server: str) -> Any:
    """A signed request; a refusal comes back as the reply's ``error``, as sent."""
    from services.contracts.errors import to_wire
    from services.runtime.errors import SCFError

    try:
        return await messenger.request(subject, request, reply_type, server=server, timeout=10)
    except SCFError as exc:
        return reply_type(error=to_wire(exc))


@contextlib.asynccontextmanager
async def running(spec: ServiceSpec, settings: Settings, **kwargs: object) -> AsyncIterator[None]:
    """Run a service in this process until the block ends."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_service(spec, settings, stop=stop, ready=ready, **kwargs))  # type: ignore[arg-type]
    ready_wait = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait(
        {task, ready_wait}, timeout=30, return_when=asyncio.FIRST_COMPLETED
    )
    if task in done:
        ready_wait.cancel()
        task.result()  # raises the start-up error
        raise RuntimeError(f"{spec.name} stopped during start-up")
    if not done:
        task.cancel()
        raise TimeoutError(f"{spec.name} not ready in 30 s")
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def scf(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The ``scf`` command, as an operator runs it against these settings."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env={**os.environ, **settings.to_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@contextlib.asynccontextmanager
async def bare_server(
    certs_dir: Path, service: str, *handlers: Any
) -> AsyncIterator[tuple[Any, Any]]:
    """The platform's gRPC server alone (health, reflection, the interceptor, and
    any ``handlers``) on a free loopback port, and the operator's channel to it."""
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import GrpcServer, client_channel
    from services.runtime.ports import free_ports

    port = free_ports(1)[0]
    server = GrpcServer(service, f"127.0.0.1:{port}", load_party(certs_dir, "orders"))
    if handlers:
        server.server.add_generic_rpc_handlers(handlers)
    await server.start()
    try:
        async with client_channel(f"127.0.0.1:{port}", load_party(certs_dir, "operator")) as ch:
            yield server, ch
    finally:
        await server.stop(0)
