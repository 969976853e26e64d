"""The journal audits its own store: tried as an operator with write access to
its PostgreSQL would, under traffic. Each alteration is found by the journal
itself, which then says so (GetStoreAudit, health), serves nothing it did not
verify, and journals nothing on top of the damage; and again at its next start."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.cli.health import journal_detail
from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.journal.service import SPEC
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.metrics import JOURNAL_DAMAGED
from tests.journal.helpers import Producer, producer, wait_on_platform
from tests.replica.helpers import both_banks, wait_in_step
from tests.support import running, scf

pytestmark = [pytest.mark.integration, pytest.mark.long]

#: What an operator with write access might do to the store; and the first
#: entry each one touches (None: the one named in the statement's comment).
ALTERATIONS: dict[str, tuple[str, int | str]] = {
    "an entry's payload edited": (
        "UPDATE entries SET payload = convert_to('{\"n\":\"forged\"}', 'UTF8') WHERE seq = 10",
        10,
    ),
    "an entry's stored hash edited": (
        "UPDATE entries SET leaf_hash = sha256(leaf_hash) WHERE seq = 10",
        10,
    ),
    "a middle entry deleted": ("DELETE FROM entries WHERE seq = 10", 10),
    "the latest entry deleted": (
        "DELETE FROM entries WHERE seq = (SELECT max(seq) FROM entries)",
        "last",
    ),
    "an entry inserted": (
        "INSERT INTO entries SELECT seq + 1, time_micros, leaf_hash, producer, key_id,"
        " produced_micros, subject, event_type, 'forged', payload, batch_size, batch_index,"
        " batch_path, signature, leaf_hash FROM entries WHERE seq = (SELECT max(seq) FROM entries)",
        "next",
    ),
    "a tree node edited": (
        "UPDATE tree_nodes SET hash = sha256(hash) WHERE level = 2 AND idx = 3",
        12,
    ),
    "the stored frontier edited": (
        "UPDATE checkpoints SET root_hash = sha256(root_hash)"
        " WHERE tree_size = (SELECT max(tree_size) FROM checkpoints)",
        "last",
    ),
}


@contextlib.asynccontextmanager
async def channel(settings: Settings) -> AsyncIterator[Any]:
    tls = load_party(settings.certs_dir, "operator")
    async with client_channel(settings.endpoint("journal").grpc_addr, tls) as ch:
        yield ch


async def _store_audit(ch: Any) -> journal_pb2.GetStoreAuditResponse:
    stub = journal_pb2_grpc.JournalAdminServiceStub(ch)
    return await stub.GetStoreAudit(journal_pb2.GetStoreAuditRequest(), timeout=5)


async def _health(ch: Any) -> int:
    reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


async def _size(conn: asyncpg.Connection, schema: str) -> int:
    return int(await conn.fetchval(f'SELECT coalesce(max(seq) + 1, 0) FROM "{schema}".entries'))


async def _traffic(p: Producer, n: int, start: int) -> None:
    await p.append(n, subject=f"order/ORD-{start}", start=start)


async def _waiting_in_stream(p: Producer) -> int:
    """Submissions the sequencer has not taken (it takes nothing on a damaged store)."""
    spec = p.subjects.sequencer
    info = await p.js.consumer_info(spec.stream, spec.durable)
    return int(info.num_pending + info.num_ack_pending)


@pytest.mark.parametrize("how", list(ALTERATIONS))
async def test_the_journal_finds_an_alteration_of_its_store(
    settings: Settings, tmp_path: Path, how: str
) -> None:
    """Under traffic, with both banks' replicas running; then restored from one."""
    statement, where = ALTERATIONS[how]
    schema = settings.endpoint("journal").schema
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with both_banks(settings) as banks:
            north, south = banks.north, banks.south
            async with running(SPEC, settings), producer(settings) as p, channel(settings) as ch:
                await _traffic(p, 40, 0)
                await p.wait_confirmed(40)
                audit = await _store_audit(ch)
                assert not audit.HasField("damage") and audit.verified_size == 41
                await wait_in_step(north, 41)
                await wait_in_step(south, 41)
                size = await _size(conn, schema)
                await conn.execute(f'SET search_path TO "{schema}"; {statement}')
                await _traffic(p, 5, 100)  # traffic goes on

                async def found() -> bool:
                    return (await _store_audit(ch)).HasField("damage")

                await wait_on_platform(settings, found, f"the journal noticing: {how}", 20)
                damage = (await _store_audit(ch)).damage
                expected = {"last": size - 1, "next": size}.get(str(where), where)
                assert damage.seq == expected, damage
                assert await _health(ch) == health_pb2.HealthCheckResponse.NOT_SERVING
                # What `scf status` shows for the journal.
                shown = await journal_detail(settings, settings.endpoint("journal").grpc_addr)
                assert f"ALARM (store damaged) at entry {expected}" in shown, shown
                assert JOURNAL_DAMAGED._value.get() == 1
                reader = journal_pb2_grpc.AuditServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    request = journal_pb2.ListEntriesRequest()
                    [r async for r in reader.ListEntries(request, timeout=5)]
                assert info.value.code() == grpc.StatusCode.DATA_LOSS

                # Both banks' replicas, cross-examining the journal, raise their alarm.
                async def both_alarmed() -> bool:
                    return north.alarm is not None and south.alarm is not None

                await wait_on_platform(settings, both_alarmed, "both replicas' alarms", 20)
                for replica in (north, south):
                    assert replica.alarm is not None
                    assert replica.alarm.kind == "cross-examination", replica.alarm

                # Nothing is sequenced on top: new submissions wait in the stream.
                stored = await conn.fetchval(f'SELECT count(*) FROM "{schema}".entries')
                await _traffic(p, 3, 200)

                async def waiting() -> bool:
                    return await _waiting_in_stream(p) > 0

                await wait_on_platform(
                    settings, waiting, "submissions waiting for a restored store"
                )
                assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".entries') == stored

            # Restarted on the damaged store, it finds the damage before sequencing anything.
            async with running(SPEC, settings), channel(settings) as ch:
                audit = await _store_audit(ch)
                assert audit.HasField("damage"), how
                assert await _health(ch) == health_pb2.HealthCheckResponse.NOT_SERVING

            # Restored from the most advanced replica (as the operator is told to):
            # the root it verified, at its size.
            source = max((north, south), key=lambda r: r.size)
            restored = await asyncio.to_thread(
                scf, settings, "journal", "restore", "--from-replica", source.bank,
                cwd=tmp_path,
            )  # fmt: skip
            assert restored.returncode == 0, restored.stderr + restored.stdout
            said = re.search(r"restored (\d+) entries from [\w-]+, root (\w+)", restored.stdout)
            assert said is not None, restored.stdout
            kept = int(said[1])
            assert kept >= size and said[2] == (await source.store.root_at(kept)).hex()
            async with running(SPEC, settings), producer(settings) as p, channel(settings) as ch:
                audit = await _store_audit(ch)
                assert not audit.HasField("damage") and audit.verified_size >= kept
                assert await _health(ch) == health_pb2.HealthCheckResponse.SERVING
                # Traffic flows again: what waited is journaled, and the replicas follow
                # the restored history (a different one would be a verification alarm).
                await _traffic(p, 2, 300)
                await p.wait_confirmed(len(await p.confirmed()) + 2)
                await wait_in_step(north, kept + 2)
                await wait_in_step(south, kept + 2)
                for replica in (north, south):
                    assert replica.alarm is not None and replica.ingesting, replica.alarm
    finally:
        await conn.close()


async def test_an_entry_altered_between_sweeps_is_never_served(settings: Settings) -> None:
    """The audit API checks each entry it serves against what it verified."""
    schema = settings.endpoint("journal").schema
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with running(SPEC, settings), producer(settings) as p, channel(settings) as ch:
            await _traffic(p, 20, 0)
            await p.wait_confirmed(20)
            await conn.execute(
                f"UPDATE \"{schema}\".entries SET payload = convert_to('{{}}', 'UTF8')"
                " WHERE seq = 5"
            )
            reader = journal_pb2_grpc.AuditServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                request = journal_pb2.GetSubjectHistoryRequest(subject="order/ORD-0")
                [r async for r in reader.GetSubjectHistory(request, timeout=5)]
            assert info.value.code() == grpc.StatusCode.DATA_LOSS
            assert (await _store_audit(ch)).damage.seq == 5
    finally:
        await conn.close()
