"""Replicas cross-examine the operator: what an audit API serves, against the
replica's own verified copy, over real gRPC.

The first tests examine an audit API that checks nothing of its own (another
bank's replica, whose database is then altered), so that the replica's
comparison is what finds each difference. The last one alters the journal's
store under traffic: the journal's own check finds it, and both replicas
raise their alarm from what the journal then answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from services.gen.scf.replica.v1 import replica_pb2, replica_pb2_grpc
from services.journal.service import SPEC
from services.replica.alarm import AlarmRecord
from services.replica.cross_exam import CrossExamination
from services.replica.replica import Replica
from services.replica.service import SCHEMA
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.journal_client import audit_client
from tests.journal.helpers import producer, wait_on_platform
from tests.replica.helpers import Banks, both_banks, wait_in_step
from tests.support import running, scf

pytestmark = [pytest.mark.integration, pytest.mark.long]

ENTRIES = 41


@pytest.fixture
async def two_replicas(settings: Settings) -> AsyncIterator[Banks]:
    """North and south in step with the journal."""
    async with running(SPEC, settings), both_banks(settings) as banks:
        async with producer(settings) as p:
            await p.append(40)
            await p.wait_confirmed(40)
        await wait_in_step(banks.north, ENTRIES)
        await wait_in_step(banks.south, ENTRIES)
        yield banks


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
    settings: Settings, two_replicas: Banks, how: str
) -> None:
    north, south_rs = two_replicas.north, two_replicas.south_rs
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


class _Overtaken:
    """The journal's audit API, whose answer to ``method`` is overtaken once: after
    the answer is read and before the replica compares it, ``then`` runs."""

    def __init__(self, stub: Any, method: str, then: Callable[[], Awaitable[None]]) -> None:
        self._stub, self._method, self._then = stub, method, then
        self.overtaken = False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._stub, name)
        if name != self._method or self.overtaken:
            return call
        self.overtaken = True
        if name == "GetSubjectHistory":

            async def streamed(*args: Any, **kw: Any) -> AsyncIterator[Any]:
                answer = [r async for r in call(*args, **kw)]
                await self._then()
                for r in answer:
                    yield r

            return streamed

        async def unary(*args: Any, **kw: Any) -> Any:
            answer = await call(*args, **kw)
            await self._then()
            return answer

        return unary


@pytest.mark.parametrize("method", ["GetSubjectHistory", "GetCheckpoint"])
async def test_an_answer_overtaken_by_newer_entries_is_no_alarm(
    settings: Settings, two_replicas: Banks, method: str
) -> None:
    """The journal answers, then sequences more of the same subject (and signs a
    checkpoint over it), and the replica verifies those before it compares: what
    is newer than the question is not what the journal left out."""
    north = two_replicas.north
    tls = load_party(settings.certs_dir, "replica-bank-north")
    journal_api = audit_client(settings.endpoint("journal").grpc_addr, tls)
    wrappers: list[_Overtaken] = []

    async def newer_entry() -> None:
        async with producer(settings) as p:
            await p.append(1, start=200)
            await p.wait_confirmed(ENTRIES)
        await wait_in_step(north, ENTRIES + 1)

    @contextlib.asynccontextmanager
    async def overtaken() -> AsyncIterator[Any]:
        async with journal_api() as stub:
            # Only the first round's answer is overtaken; the next is asked afresh.
            wrapper = _Overtaken(stub, method, newer_entry)
            wrapper.overtaken = bool(wrappers)
            wrappers.append(wrapper)
            yield wrapper

    examination = CrossExamination(north, audit_client=overtaken, period_s=1.0, samples=1)
    assert await examination.round() is None
    assert wrappers and wrappers[0].overtaken and north.size == ENTRIES + 1
    assert await examination.round() is None  # and the next round agrees in full
    assert len(wrappers) == 2


async def test_entries_verified_but_not_yet_stored_are_no_alarm(
    settings: Settings, two_replicas: Banks
) -> None:
    """Seen in a fault run: the replica had verified a new entry of the subject it
    sampled but not yet written it to its store, and took the journal's history,
    which had it, for one with an entry that was not the subject's."""
    north = two_replicas.north
    commit = north.store.commit
    writing, written = asyncio.Event(), asyncio.Event()

    async def held_back(*args: Any) -> None:
        writing.set()
        await written.wait()
        await commit(*args)

    north.store.commit = held_back  # type: ignore[method-assign]
    try:
        async with producer(settings) as p:
            await p.append(1, start=300)
            await p.wait_confirmed(ENTRIES)
        await asyncio.wait_for(writing.wait(), timeout=10)
        assert (north.size, north.stored_size) == (ENTRIES + 1, ENTRIES)
        examination = _examining(north, settings, settings.endpoint("journal").grpc_addr)
        assert await examination.round() is None
    finally:
        written.set()
        north.store.commit = commit  # type: ignore[method-assign]
    await wait_in_step(north, ENTRIES + 1)
    assert north.stored_size == ENTRIES + 1 and north.alarm is None


async def test_a_damaged_journal_store_raises_every_replicas_alarm(
    settings: Settings, two_replicas: Banks
) -> None:
    north, south = two_replicas.north, two_replicas.south
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

        await wait_on_platform(settings, both_alarmed, "both replicas' alarms", 30)
    for replica in (north, south):
        assert replica.alarm is not None
        assert replica.alarm.kind == "cross-examination", replica.alarm
        assert "damaged at entry 7" in replica.alarm.problem, replica.alarm
        assert replica.size >= ENTRIES
    # What an orchestrator and Prometheus see: NOT_SERVING, and the alarm's gauge.
    tls = load_party(settings.certs_dir, "operator")
    for bank, rs in (("bank-north", two_replicas.north_rs), ("bank-south", two_replicas.south_rs)):
        async with client_channel(rs.grpc_addr, tls) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=15
            )
            async for reply in watch:  # the current status, then each change
                if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break

        alarm = {"bank": bank, "kind": "cross-examination"}
        assert REGISTRY.get_sample_value("scf_replica_alarm", alarm) == 1
        assert REGISTRY.get_sample_value("scf_replica_alarm", {**alarm, "kind": "fork"}) == 0
        assert (REGISTRY.get_sample_value("scf_replica_tree_size", {"bank": bank}) or 0) >= ENTRIES


async def test_an_export_carries_the_banks_cosignatures_and_witness_keys_are_served(
    settings: Settings, two_replicas: Banks, tmp_path: Path
) -> None:
    """A verifier gets each bank's witness key from the bank (its replica's status),
    and checks the export's latest checkpoint for a quorum of cosignatures."""
    banks = two_replicas
    schema = settings.endpoint("journal").schema
    conn = await asyncpg.connect(settings.database_url)
    try:

        async def both_collected() -> bool:
            n = await conn.fetchval(
                f'SELECT count(*) FROM "{schema}".cosignatures WHERE tree_size = $1', ENTRIES
            )
            return bool(n == 2)

        await wait_on_platform(
            settings, both_collected, "the journal holding both banks' cosignatures"
        )
    finally:
        await conn.close()
    keys = {}
    for bank, addr in (("bank-north", banks.north_rs.grpc_addr),
                       ("bank-south", banks.south_rs.grpc_addr)):  # fmt: skip
        tls = load_party(settings.certs_dir, "operator")
        async with client_channel(addr, tls) as ch:
            status = await replica_pb2_grpc.ReplicaServiceStub(ch).GetStatus(
                replica_pb2.GetStatusRequest()
            )
        assert bank in status.cosigned_checkpoint  # its own line on the note
        keys[bank] = status.witness_public_key.hex()
    path = tmp_path / "journal.export"
    exported = await asyncio.to_thread(scf, settings, "journal", "export", str(path), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    witnesses = [a for bank, key in keys.items() for a in ("--witness", f"{bank}={key}")]
    for quorum, code in ((2, 0), (3, 1)):
        checked = await asyncio.to_thread(
            scf, settings, "audit", "verify", str(path), *witnesses, "--quorum", str(quorum),
            cwd=tmp_path,
        )  # fmt: skip
        assert checked.returncode == code, checked.stderr + checked.stdout


async def test_a_verification_alarm_takes_the_place_of_a_cross_examination_one(
    settings: Settings, two_replicas: Banks
) -> None:
    north = two_replicas.north
    await north.raise_alarm(AlarmRecord("cross-examination", 3, "served differently", ("x",)))
    assert north.ingesting  # its own copy is not in question
    await north.raise_alarm(AlarmRecord("cross-examination", 4, "again", ()))
    assert north.alarm is not None and north.alarm.seq == 3  # the first stands
    await north.raise_alarm(AlarmRecord("verification", 5, "does not verify", ("y",)))
    assert north.alarm is not None and north.alarm.kind == "verification"
    assert not north.ingesting
    stored = await north.pool.fetchrow("SELECT kind, seq FROM alarm")
    assert (stored["kind"], stored["seq"]) == ("verification", 5)
