"""Replicas that crash, fall behind, or are lied to."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import asyncpg
import grpc
import pytest

from services.contracts.subjects import Subjects
from services.gen.scf.replica.v1 import replica_pb2, replica_pb2_grpc
from services.journal.checkpoint import Checkpoint, sign_checkpoint
from services.journal.encoding import Entry
from services.journal.offline import verify_database
from services.journal.service import SPEC, origin_for
from services.journal.storage import JournalStore
from services.journal.tree import CompactRange
from services.journal.witness import QuorumError, verify_quorum
from services.replica.config import ReplicaSettings
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.db import connect_pool
from services.runtime.grpcserver import client_channel
from services.runtime.keys import load_or_create_signer
from tests.journal.helpers import producer, wait_on_platform
from tests.replica.helpers import (
    drop_database,
    journal_size,
    replica_running,
    replica_settings,
    wait_in_step,
)
from tests.support import running

pytestmark = [pytest.mark.integration, pytest.mark.long]


def _key(settings: Settings, name: str) -> bytes:
    return bytes.fromhex((settings.keys_dir / f"{name}.pub").read_text())


async def _count(dsn: str) -> int:
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        return 0  # the replica has not created its database yet
    try:
        return int(await conn.fetchval("SELECT count(*) FROM journal.entries"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def _spawn(settings: Settings, rs: ReplicaSettings) -> asyncio.subprocess.Process:
    key = rs.bank.upper().replace("-", "_")
    env = {
        **os.environ,
        **settings.to_env(),
        f"SCF_REPLICA_{key}_ADDR": rs.grpc_addr,
        f"SCF_REPLICA_{key}_DATABASE_URL": rs.database_url,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.replica", "--bank", rs.bank, env=env
    )


async def test_replica_killed_during_appends_catches_up(settings: Settings) -> None:
    rs = replica_settings(settings, "bank-north")
    async with running(SPEC, settings), producer(settings) as p:
        process = await _spawn(settings, rs)
        try:
            for i in range(4):
                await p.append(500, start=i * 500)

            async def some() -> bool:
                return await _count(rs.database_url) > 100

            await wait_on_platform(settings, some, "the replica to store some entries")
            process.send_signal(signal.SIGKILL)
            await process.wait()
            for i in range(4, 20):
                await p.append(500, start=i * 500)
            process = await _spawn(settings, rs)
            await p.wait_confirmed(10_000, timeout=90)
            size = await journal_size(settings)

            async def caught_up() -> bool:
                return await _count(rs.database_url) == size

            await wait_on_platform(settings, caught_up, "the restarted replica to catch up", 90)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 15)
    report = await verify_database(rs.database_url, "journal", _key(settings, "platform-root"))
    await drop_database(rs.database_url)
    assert report.entries == size == 10_001


async def test_replica_started_after_the_stream_dropped_entries(settings: Settings) -> None:
    async with running(SPEC, settings):
        async with producer(settings) as p:
            await p.append(300)
            await p.wait_confirmed(300)
        # The stream keeps nothing older than now: a new replica must use the audit API.
        import nats

        nc = await nats.connect(settings.nats_url)
        await nc.jetstream().purge_stream(Subjects(settings.nats_prefix).journal_stream.name)
        await nc.close()
        rs = replica_settings(settings, "bank-south")
        async with replica_running(settings, "bank-south", rs) as south:
            await wait_in_step(south, 301)
            tls = load_party(settings.certs_dir, "operator")
            async with client_channel(rs.grpc_addr, tls) as channel:
                status = await replica_pb2_grpc.ReplicaServiceStub(channel).GetStatus(
                    replica_pb2.GetStatusRequest()
                )
            assert status.tree_size == 301 and status.lag_entries == 0 and status.ingesting


async def _rewrite_history(settings: Settings, seq: int) -> None:
    """What an operator with database access would do to hide an edit: re-chain
    every later entry and rebuild the stored tree (it cannot re-sign)."""
    pool = await connect_pool(settings.database_url, settings.endpoint("journal").schema)
    try:
        store = JournalStore(pool)
        entries = [e async for e in store.entries(0, await store.size())]
        tree, prev, rows, nodes = CompactRange(), b"\x00" * 32, [], []
        for e in entries:
            st = e.statement
            if e.seq == seq:
                st = type(st)(**{**st.__dict__, "payload": b'{"n":"forged"}'})
                st.__dict__.pop("_encoded", None)
            e = Entry(e.seq, e.time_micros, prev, st, e.batch)
            h = e.leaf_hash()
            nodes += tree.append(h)
            prev = h
            rows.append((e.seq, e.prev_hash, h, st.payload))
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "UPDATE entries SET prev_hash = $2, leaf_hash = $3, payload = $4 WHERE seq = $1",
                rows,
            )
            await conn.execute("DELETE FROM tree_nodes")
            await conn.copy_records_to_table("tree_nodes", records=nodes)
    finally:
        await pool.close()


async def test_history_rewritten_after_replication_is_found_and_kept_from_the_banks(
    settings: Settings,
) -> None:
    """An edit re-chained and re-hashed (not re-signed): the journal's own check finds
    it at its next start, sequences nothing on it, and serves none of it; the
    replica raises its cross-examination alarm and keeps what it verified."""
    from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import client_channel

    load_or_create_signer(settings.keys_dir, "platform-root")  # the replica starts first
    async with replica_running(settings, "bank-north") as north:
        async with running(SPEC, settings), producer(settings) as p:
            await p.append(40)
            await p.wait_confirmed(40)
            await wait_in_step(north, 41)
        await _rewrite_history(settings, 17)
        async with running(SPEC, settings), producer(settings) as p:
            await p.append(5, start=100)
            tls = load_party(settings.certs_dir, "operator")
            async with client_channel(settings.endpoint("journal").grpc_addr, tls) as ch:
                admin = journal_pb2_grpc.JournalAdminServiceStub(ch)
                audit = await admin.GetStoreAudit(journal_pb2.GetStoreAuditRequest())
                assert audit.damage.seq == 17 and "signature" in audit.damage.problem, audit
                reader = journal_pb2_grpc.AuditServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await reader.GetCheckpoint(journal_pb2.GetCheckpointRequest())
                assert info.value.code() == grpc.StatusCode.DATA_LOSS

            # The bank hears it from the journal itself, and its copy stands.
            async def alarmed() -> bool:
                return north.alarm is not None

            await wait_on_platform(settings, alarmed, "the replica's cross-examination alarm")
    assert north.alarm is not None and north.alarm.kind == "cross-examination", north.alarm
    assert "damaged at entry 17" in north.alarm.problem
    assert north.ingesting and north.size == 41  # what it verified, nothing forged


async def test_forged_fork_is_detected_and_never_reaches_quorum(settings: Settings) -> None:
    async with (
        running(SPEC, settings),
        replica_running(settings, "bank-north") as north,
        replica_running(settings, "bank-south") as south,
    ):
        async with producer(settings) as p:
            await p.append(30)
            await p.wait_confirmed(30)
        await wait_in_step(north, 31)
        await wait_in_step(south, 31)
        # The journal's key signs a second, different tree of the same size and
        # shows it to the banks (here: as a third witness would pass it on).
        journal_key = load_or_create_signer(settings.keys_dir, "journal")
        origin = origin_for(settings.nats_prefix)
        forged = sign_checkpoint(Checkpoint(origin, 31, b"\x42" * 32, 1), journal_key, origin)
        import nats

        nc = await nats.connect(settings.nats_url)
        await nc.publish(
            Subjects(settings.nats_prefix).replica_checkpoints("bank-east"), forged.encode()
        )
        await nc.flush()
        await nc.close()

        async def both_alarmed() -> bool:
            return north.alarm is not None and south.alarm is not None

        await wait_on_platform(settings, both_alarmed, "both replicas to see the fork")
        for r in (north, south):
            assert r.alarm is not None and r.alarm.kind == "fork" and r.alarm.seq == 30
            assert forged in r.alarm.evidence
        cosigned = (north.cosigned_size, south.cosigned_size)
        async with producer(settings) as p:
            await p.append(10, start=100)
            await p.wait_confirmed(10)
        assert (north.cosigned_size, south.cosigned_size) == cosigned  # no further cosigning
        witnesses = {b: _key(settings, f"witness-{b}") for b in ("bank-north", "bank-south")}
        with pytest.raises(QuorumError):
            verify_quorum(forged, _key(settings, "journal"), witnesses, 1)
