"""Tampering in PostgreSQL is found by the offline verifier at the exact entry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from services.journal.offline import export_journal, verify_database, verify_export
from services.journal.service import SPEC
from services.journal.storage import JournalStore
from services.journal.verify import VerificationError
from services.runtime.config import Settings
from services.runtime.db import connect_pool
from tests.journal.helpers import producer
from tests.support import running

pytestmark = pytest.mark.integration

ENTRIES = 41  # the genesis entry and 40 statements


@dataclass
class Journal:
    dsn: str
    schema: str
    root_key: bytes
    conn: asyncpg.Connection

    async def sql(self, statement: str) -> None:
        await self.conn.execute(f'SET search_path TO "{self.schema}"; {statement}')

    async def verify(self) -> None:
        await verify_database(self.dsn, self.schema, self.root_key)


@pytest.fixture
async def journal(settings: Settings) -> AsyncIterator[Journal]:
    schema = settings.endpoint("journal").schema
    conn = await asyncpg.connect(settings.database_url)
    async with running(SPEC, settings), producer(settings) as p:
        await p.append(20, subject="order/ORD-1")
        await p.append(20, subject="order/ORD-2", start=20)
        await p.wait_confirmed(40)

        async def checkpointed() -> bool:
            size = await conn.fetchval(f'SELECT max(tree_size) FROM "{schema}".checkpoints')
            return bool(size == ENTRIES)

        await p.wait_until(checkpointed, "a checkpoint over every entry")
    root = bytes.fromhex((settings.keys_dir / "platform-root.pub").read_text())
    try:
        yield Journal(settings.database_url, schema, root, conn)
    finally:
        await conn.close()


async def test_untouched_journal_verifies(journal: Journal) -> None:
    await journal.verify()
    report = await verify_database(journal.dsn, journal.schema, journal.root_key)
    assert report.entries == ENTRIES and report.checkpoints >= 2
    assert report.producers == {"platform": 1, "orders": 40}


TAMPERING = {
    "edited payload": "UPDATE entries SET payload = convert_to('{\"n\":\"forged\"}', 'UTF8')"
    " WHERE seq = 10",
    "edited subject": "UPDATE entries SET subject = 'order/ORD-3' WHERE seq = 10",
    "deleted row": "DELETE FROM entries WHERE seq = 10",
    "inserted row": "UPDATE entries SET seq = seq + 1000001 WHERE seq >= 10;"
    " UPDATE entries SET seq = seq - 1000000 WHERE seq > 1000000;"
    " INSERT INTO entries SELECT 10, time_micros, prev_hash, producer, key_id, produced_micros,"
    " subject, event_type, 'forged', payload, batch_size, batch_index, batch_path, signature,"
    " leaf_hash FROM entries WHERE seq = 5",
    "swapped rows": "UPDATE entries SET seq = 1000000 WHERE seq = 10;"
    " UPDATE entries SET seq = 10 WHERE seq = 11; UPDATE entries SET seq = 11 WHERE seq = 1000000",
    "changed leaf hash": "UPDATE entries SET leaf_hash = sha256(leaf_hash) WHERE seq = 10",
    "changed previous hash": "UPDATE entries SET prev_hash = sha256(prev_hash) WHERE seq = 10",
    "changed time": "UPDATE entries SET time_micros = time_micros + 1 WHERE seq = 10",
    "changed batch path": "UPDATE entries SET batch_path = sha256(batch_path) || batch_path"
    " WHERE seq = 10",
    "moved in its batch": "UPDATE entries SET batch_index = (batch_index + 1) % batch_size"
    " WHERE seq = 10",
}


@pytest.mark.parametrize("how", list(TAMPERING))
async def test_tampering_is_found_at_its_entry(journal: Journal, how: str) -> None:
    await journal.sql(TAMPERING[how])
    with pytest.raises(VerificationError) as info:
        await journal.verify()
    assert info.value.seq == 10, info.value


async def test_deleted_tail_is_found(journal: Journal) -> None:
    await journal.sql(f"DELETE FROM entries WHERE seq = {ENTRIES - 1}")
    with pytest.raises(VerificationError) as info:
        await journal.verify()
    assert info.value.seq == ENTRIES - 1
    assert "only" in info.value.problem


async def test_forged_checkpoint_is_found(journal: Journal) -> None:
    await journal.sql(
        "UPDATE checkpoints SET note = replace(note, 'timestamp', 'timestamp 1') "
        f"WHERE tree_size = {ENTRIES}"
    )
    with pytest.raises(VerificationError) as info:
        await journal.verify()
    assert info.value.seq == ENTRIES - 1
    assert "not signed" in info.value.problem


async def test_wrong_root_key_is_refused(journal: Journal) -> None:
    with pytest.raises(VerificationError) as info:
        await verify_database(journal.dsn, journal.schema, bytes(32))
    assert info.value.seq == 0


async def test_export_verifies_and_a_flipped_byte_is_found(
    journal: Journal, tmp_path: Path
) -> None:
    pool = await connect_pool(journal.dsn, journal.schema)
    try:
        path = tmp_path / "journal.export"
        assert await export_journal(JournalStore(pool), journal.root_key, path) == ENTRIES
    finally:
        await pool.close()
    report = await asyncio.to_thread(verify_export, path, journal.root_key)
    assert report.entries == ENTRIES
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # inside the last entry
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationError) as info:
        verify_export(path, journal.root_key)
    assert info.value.seq == ENTRIES - 1
