"""`scf journal restore --from-replica`: a damaged, truncated or lost journal store
rebuilt from a bank's replica, verified from the root key and against the other
bank's cosigned checkpoint; the journal comes back with the same root at the
same size and goes on sequencing, and the replicas go on with it."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.journal.service import SPEC
from services.replica.service import SCHEMA
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from tests.journal.helpers import producer
from tests.replica.helpers import both_banks, wait_in_step
from tests.support import running, scf

pytestmark = [pytest.mark.integration, pytest.mark.long]

DAMAGE = {
    "a damaged store": "UPDATE entries SET payload = convert_to('{}', 'UTF8') WHERE seq = 9;"
    " UPDATE tree_nodes SET hash = sha256(hash) WHERE level = 1",
    "a truncated store": "DELETE FROM entries WHERE seq >= 20; DELETE FROM cosignatures"
    " WHERE tree_size > 20; DELETE FROM checkpoints WHERE tree_size > 20",
    "a lost store": "DELETE FROM cosignatures; DELETE FROM checkpoints; DELETE FROM tree_nodes;"
    " DELETE FROM entries",
}


@contextlib.asynccontextmanager
async def operator(settings: Settings) -> AsyncIterator[Any]:
    tls = load_party(settings.certs_dir, "operator")
    async with client_channel(settings.endpoint("journal").grpc_addr, tls) as ch:
        yield ch


async def _restore(settings: Settings, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The operator's command, in its own process, while the replicas here answer it."""
    return await asyncio.to_thread(
        scf, settings, "journal", "restore", "--from-replica", "bank-north", cwd=cwd
    )


@pytest.mark.parametrize("how", list(DAMAGE))
async def test_restore_from_a_banks_replica(settings: Settings, tmp_path: Path, how: str) -> None:
    schema = settings.endpoint("journal").schema
    async with both_banks(settings) as banks:
        north, south = banks.north, banks.south
        async with running(SPEC, settings), producer(settings) as p:
            await p.append(40)
            await p.wait_confirmed(40)
            await wait_in_step(north, 41)
            await wait_in_step(south, 41)
        root = north.verifier.tree.root()
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(f'SET search_path TO "{schema}"; {DAMAGE[how]}')
        finally:
            await conn.close()

        restored = await _restore(settings, tmp_path)
        assert restored.returncode == 0, restored.stderr + restored.stdout
        assert f"restored 41 entries from bank-north, root {root.hex()}" in restored.stdout
        assert "cosigned by bank-south" in restored.stdout

        async with running(SPEC, settings), producer(settings) as p, operator(settings) as ch:
            admin = journal_pb2_grpc.JournalAdminServiceStub(ch)
            audit = await admin.GetStoreAudit(journal_pb2.GetStoreAuditRequest())
            assert not audit.HasField("damage") and audit.verified_size == 41, audit
            # And it goes on: new statements are journaled, and the replicas follow.
            await p.append(5, start=100)
            await p.wait_confirmed(45)
            await wait_in_step(north, 46)
            await wait_in_step(south, 46)
        assert north.alarm is None and south.alarm is None


async def test_a_replica_that_disagrees_with_the_other_bank_is_not_restored(
    settings: Settings, tmp_path: Path
) -> None:
    async with both_banks(settings) as banks:
        north, south = banks.north, banks.south
        async with running(SPEC, settings), producer(settings) as p:
            await p.append(20)
            await p.wait_confirmed(20)
            await wait_in_step(north, 21)
            await wait_in_step(south, 21)
            # Not over a running journal.
            refused = await _restore(settings, tmp_path)
            assert refused.returncode == 1 and "stop it first" in refused.stderr, refused.stderr
        # The source's copy altered behind its back (the bank's database): refused.
        conn = await asyncpg.connect(banks.north_rs.database_url)
        try:
            await conn.execute(
                f"SET search_path TO {SCHEMA}; UPDATE entries SET payload = convert_to('{{}}',"
                " 'UTF8') WHERE seq = 3"
            )
        finally:
            await conn.close()
        refused = await _restore(settings, tmp_path)
        assert refused.returncode == 1
        assert "not restored" in refused.stderr and "entry 3" in refused.stderr, refused.stderr
