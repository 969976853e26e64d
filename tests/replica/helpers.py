"""Replicas in tests: each with its own database on the test server."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from services.replica.config import ReplicaSettings, database_beside
from services.replica.replica import Replica
from services.replica.service import run_replica
from services.runtime.config import Settings
from services.runtime.keys import load_or_create_signer
from services.runtime.ports import free_port
from tests.journal.helpers import wait_until
from tests.support import unique


def replica_settings(settings: Settings, bank: str) -> ReplicaSettings:
    db = database_beside(settings.database_url, unique(f"rep_{bank.replace('-', '_')}"))
    return ReplicaSettings(bank, f"127.0.0.1:{free_port()}", db, f"replica-{bank}")


@contextlib.asynccontextmanager
async def replica_running(
    settings: Settings, bank: str, rs: ReplicaSettings | None = None
) -> AsyncIterator[Replica]:
    rs = rs or replica_settings(settings, bank)
    stop, ready = asyncio.Event(), asyncio.Event()
    started: list[Replica] = []
    task = asyncio.create_task(run_replica(settings, rs, stop=stop, ready=ready, started=started))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield started[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await drop_database(rs.database_url)


async def drop_database(dsn: str) -> None:
    name = dsn.split("?")[0].rsplit("/", 1)[-1]
    conn = await asyncpg.connect(database_beside(dsn, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def journal_size(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        schema = settings.endpoint("journal").schema
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".entries'))
    finally:
        await conn.close()


async def wait_in_step(replica: Replica, size: int, timeout: float = 60.0) -> None:
    async def done() -> bool:
        return replica.size >= size and replica.cosigned_size >= size

    # Woken by the replica's own cosignatures (it cosigns what it verified).
    wake = (replica.subjects.cosignatures(replica.bank),)
    await wait_until(
        done, timeout, f"replica {replica.bank} at {size} entries, cosigned",
        wake=wake, nc=replica.nc,
    )  # fmt: skip


@dataclass
class Banks:
    """Both example banks' replicas, running, and their settings."""

    north: Replica
    south: Replica
    north_rs: ReplicaSettings
    south_rs: ReplicaSettings


@contextlib.asynccontextmanager
async def both_banks(settings: Settings) -> AsyncIterator[Banks]:
    """bank-north's and bank-south's replicas; ``SCF_REPLICA_<BANK>_ADDR`` set for
    commands run meanwhile (`scf journal restore`), and unset again after."""
    load_or_create_signer(settings.keys_dir, "platform-root")  # a replica may start first
    north_rs = replica_settings(settings, "bank-north")
    south_rs = replica_settings(settings, "bank-south")
    env = {"SCF_REPLICA_BANK_NORTH_ADDR": north_rs.grpc_addr,
           "SCF_REPLICA_BANK_SOUTH_ADDR": south_rs.grpc_addr}  # fmt: skip
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        async with (
            replica_running(settings, "bank-north", north_rs) as north,
            replica_running(settings, "bank-south", south_rs) as south,
        ):
            yield Banks(north, south, north_rs, south_rs)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
