"""Replicas cross-examine the operator: what an audit API serves, against the
replica's own verified copy, over real gRPC.

The first tests examine an audit API that checks nothing of its own (another
bank's replica, whose database is then altered), so that the replica's
comparison is what finds each difference. The last one alters the journal's
store under traffic: the journal's own check finds it, and both replicas
raise their alarm from what the journal then answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.journal.service import SPEC
from services.replica.alarm import AlarmRecord
from services.replica.config import ReplicaSettings
from services.replica.cross_exam import CrossExamination
from services.replica.replica import Replica
from services.replica.service import SCHEMA
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.journal_client import audit_client
from services.runtime.keys import load_or_create_signer
from tests.journal.helpers import producer, wait_until
from tests.replica.helpers import replica_running, replica_settings, wait_in_step
from tests.support import running

pytestmark = pytest.mark.integration

ENTRIES = 41


@pytest.fixture
async def two_replicas(
    settings: Settings,
) -> AsyncIterator[tuple[Replica, Replica, ReplicaSettings]]:
    """North and south in step with the journal; south's settings."""
    load_or_create_signer(settings.keys_dir, "platform-root")
    south_rs = replica_settings(settings, "bank-south")
    async with (
        running(SPEC, settings),
        replica_running(settings, "bank-north") as north,
        replica_running(settings, "bank-south", south_rs) as south,
    ):
        async with producer(settings) as p:
            await p.append(40)
            await p.wait_confirmed(40)
        await wait_in_step(north, ENTRIES)
        await wait_in_step(south, ENTRIES)
        yield north, south, south_rs


def _examining(north: Replica, settings: Settings, addr: str) -> CrossExamination:
    """North, examining the audit API at ``addr``, its whole history each round."""
    tls = load_party(settings.certs_dir, "replica-bank-north")
    return CrossExamination(
        north, audit_client=audit_client(addr, tls), period_s=1.0, interval_s=1.0, samples=8
    )


ALTERED = {
    "an entry served differently": (
        "UPDATE entries SET payload = convert_to('{\"n\":\"forged\"}', 'UTF8') WHERE seq = 10",
        10,
        "serves entry 10 differently",
    ),
    "an entry left out": ("DELETE FROM entries WHERE seq = 10", 10, "missing"),
    "a proof that does not verify": (
        "UPDATE tree_nodes SET hash = sha256(hash) WHERE level = 0",
        None,
        "inclusion proof",
    ),
    "a lost tail": ("DELETE FROM entries WHERE seq >= 30", 30, "missing"),
    "a store gone back to an older checkpoint": (
        "DELETE FROM cosignatures; DELETE FROM checkpoints WHERE tree_size > 1",
        1,
        "went backwards",
    ),
}


@pytest.mark.parametrize("how", list(ALTERED))
async def test_what_an_audit_api_serves_differently_is_an_alarm(
    settings: Settings, two_replicas: tuple[Replica, Replica, ReplicaSettings], how: str
) -> None:
    north, _, south_rs = two_replicas
    examination = _examining(north, settings, south_rs.grpc_addr)
    assert await examination.round() is None  # the same history: nothing to say
    statement, seq, words = ALTERED[how]
    conn = await asyncpg.connect(south_rs.database_url)
    try:
        await conn.execute(f'SET search_path TO "{SCHEMA}"; {statement}')
    finally:
        await conn.close()
    alarm = await examination.round()
    assert isinstance(alarm, AlarmRecord), how
    assert alarm.kind == "cross-examination" and words in alarm.problem, alarm
    if seq is not None:
        assert alarm.seq == seq, alarm
    assert alarm.evidence and any(alarm.evidence), alarm


async def test_a_damaged_journal_store_raises_every_replicas_alarm(
    settings: Settings, two_replicas: tuple[Replica, Replica, ReplicaSettings]
) -> None:
    north, south, _ = two_replicas
    schema = settings.endpoint("journal").schema
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"UPDATE \"{schema}\".entries SET payload = '\\x00' WHERE seq = 7")
    finally:
        await conn.close()
    async with producer(settings) as p:
        await p.append(5, start=100)  # traffic goes on

        async def both_alarmed() -> bool:
            return north.alarm is not None and south.alarm is not None

        await wait_until(both_alarmed, timeout=30, what="both replicas' alarms")
    for replica in (north, south):
        assert replica.alarm is not None
        assert replica.alarm.kind == "cross-examination", replica.alarm
        assert "damaged at entry 7" in replica.alarm.problem, replica.alarm
        assert replica.size >= ENTRIES
