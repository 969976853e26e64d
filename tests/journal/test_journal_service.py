"""The journal end to end: outbox, relay, JetStream, sequencer, PostgreSQL, audit API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.journal.checkpoint import parse_note
from services.journal.encoding import decode_entry
from services.journal.hashing import leaf_hash
from services.journal.proofs import verify_consistency, verify_inclusion
from services.journal.receipt import ReceiptError, verify_receipt
from services.journal.service import SPEC, origin_for
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.watch_client import watch_until
from tests.journal.helpers import producer
from tests.support import running

pytestmark = pytest.mark.integration


@pytest.fixture
async def audit(settings: Settings) -> AsyncIterator[journal_pb2_grpc.AuditServiceStub]:
    async with running(SPEC, settings):
        tls = load_party(settings.certs_dir, "auditor-reg")
        async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
            yield journal_pb2_grpc.AuditServiceStub(channel)


async def _checkpoint_at_least(
    audit: journal_pb2_grpc.AuditServiceStub, size: int
) -> journal_pb2.GetCheckpointResponse:
    request = journal_pb2.WatchCheckpointsRequest(min_size=size)
    reply = await watch_until(
        lambda left: audit.WatchCheckpoints(request, timeout=left),
        lambda _reply: True, 30, f"a checkpoint of size {size}",
    )  # fmt: skip
    return journal_pb2.GetCheckpointResponse(
        checkpoint=reply.checkpoint, tree_size=reply.tree_size, root_hash=reply.root_hash
    )


def _key(settings: Settings, name: str) -> bytes:
    return bytes.fromhex((settings.keys_dir / f"{name}.pub").read_text())


async def test_appended_statements_are_journaled_once_and_proven(
    settings: Settings, audit: journal_pb2_grpc.AuditServiceStub
) -> None:
    async with producer(settings) as p:
        keys = await p.append(30, subject="order/ORD-1")
        keys += await p.append(20, subject="order/ORD-2", start=30)
        confirmed = await p.wait_confirmed(50)
    assert sorted(confirmed.values()) == list(range(1, 51))  # entry 0 is the genesis

    cp = await _checkpoint_at_least(audit, 51)
    note = parse_note(cp.checkpoint)
    note.verify(origin_for(settings.nats_prefix), _key(settings, "journal"))
    assert note.checkpoint.size == cp.tree_size and note.checkpoint.root == cp.root_hash

    listed = [r.entry async for r in audit.ListEntries(journal_pb2.ListEntriesRequest(start=0))]
    assert [e.seq for e in listed] == list(range(cp.tree_size))
    assert listed[0].producer == "platform" and listed[0].event_type == "keys.genesis"
    by_key = {e.idempotency_key: e for e in listed[1:]}
    assert set(by_key) == set(keys)
    assert json.loads(by_key["k-7"].payload) == {"n": "k-7"}

    answer = [r async for r in audit.GetSubjectHistory(
        journal_pb2.GetSubjectHistoryRequest(subject="order/ORD-2"))]  # fmt: skip
    history = [r.entry for r in answer]
    assert [e.idempotency_key for e in history] == [f"k-{i}" for i in range(30, 50)]
    # Every entry proven against the one checkpoint the first message carries.
    carried = parse_note(answer[0].checkpoint)
    carried.verify(origin_for(settings.nats_prefix), _key(settings, "journal"))
    assert all(r.tree_size == carried.checkpoint.size for r in answer)
    assert all(not r.checkpoint for r in answer[1:])
    for r in answer:
        verify_inclusion(r.entry.seq, r.tree_size, leaf_hash(r.entry.leaf),
                         list(r.inclusion_proof), carried.checkpoint.root)  # fmt: skip

    # A range, cut at the checkpoint its first message carries: each entry proven.
    ranged = [r async for r in audit.ListEntries(journal_pb2.ListEntriesRequest(start=40))]
    bound = parse_note(ranged[0].checkpoint)
    bound.verify(origin_for(settings.nats_prefix), _key(settings, "journal"))
    assert [r.entry.seq for r in ranged] == list(range(40, bound.checkpoint.size))
    assert all(r.tree_size == bound.checkpoint.size for r in ranged)
    assert all(not r.checkpoint for r in ranged[1:])
    for r in ranged[::3]:
        proof = await audit.GetInclusionProof(
            journal_pb2.GetInclusionProofRequest(seq=r.entry.seq, tree_size=r.tree_size)
        )
        verify_inclusion(r.entry.seq, r.tree_size, leaf_hash(r.entry.leaf),
                         list(proof.proof), bound.checkpoint.root)  # fmt: skip
    empty = journal_pb2.ListEntriesRequest(start=10, end=10)
    assert [r async for r in audit.ListEntries(empty)] == []

    for seq in (0, 1, 25, cp.tree_size - 1):
        proof = await audit.GetInclusionProof(journal_pb2.GetInclusionProofRequest(seq=seq))
        assert proof.tree_size == cp.tree_size
        verify_inclusion(seq, proof.tree_size, proof.leaf_hash, list(proof.proof), cp.root_hash)
        assert decode_entry(listed[seq].leaf).seq == seq

    first = await audit.GetInclusionProof(journal_pb2.GetInclusionProofRequest(seq=0, tree_size=1))
    consistency = await audit.GetConsistencyProof(
        journal_pb2.GetConsistencyProofRequest(first_size=1)
    )
    verify_consistency(1, cp.tree_size, list(consistency.proof), first.leaf_hash, cp.root_hash)

    key_set = await audit.GetKeySet(journal_pb2.GetKeySetRequest())
    assert {k.producer for k in key_set.keys} == {
        "journal", "orders", "scoring", "lending", "repayment"
    }  # fmt: skip

    receipt = (await audit.GetReceipt(journal_pb2.GetReceiptRequest(seq=7))).receipt_json
    entry = verify_receipt(receipt, _key(settings, "journal"), _key(settings, "platform-root"))
    assert entry.seq == 7 and entry.statement.producer == "orders"
    with pytest.raises(ReceiptError):
        verify_receipt(receipt, _key(settings, "orders"))  # not the journal's key
    tampered = json.loads(receipt)
    tampered["entry"]["seq"] = 8
    with pytest.raises(ReceiptError):
        verify_receipt(json.dumps(tampered), _key(settings, "journal"))


async def test_a_subject_read_at_once_is_proven_all_the_same(
    settings: Settings, audit: journal_pb2_grpc.AuditServiceStub
) -> None:
    """Asked the moment its entries are journaled, before a checkpoint covers them,
    the history waits for one: nothing it returns is beyond proof (a client once
    got entry 154 and a tree of 150, and no proof)."""
    async with producer(settings) as p:
        await p.append(3, subject="order/ORD-NOW")
        confirmed = await p.wait_confirmed(3)
        answer = [r async for r in audit.GetSubjectHistory(
            journal_pb2.GetSubjectHistoryRequest(subject="order/ORD-NOW"), timeout=10)]  # fmt: skip
    assert [r.entry.seq for r in answer] == sorted(confirmed.values())
    carried = parse_note(answer[0].checkpoint)
    assert carried.checkpoint.size > max(confirmed.values())
    for r in answer:
        verify_inclusion(r.entry.seq, r.tree_size, leaf_hash(r.entry.leaf),
                         list(r.inclusion_proof), carried.checkpoint.root)  # fmt: skip
    nothing = [r async for r in audit.GetSubjectHistory(
        journal_pb2.GetSubjectHistoryRequest(subject="order/NOSUCH"))]  # fmt: skip
    assert nothing == []


async def test_duplicate_submissions_are_absorbed(
    settings: Settings, audit: journal_pb2_grpc.AuditServiceStub
) -> None:
    async with producer(settings, relay=False) as p:
        first = p.outbox.sign([p.outbox.statement("order/ORD-9", "order.noted", {"x": 1}, "dup-1")])
        # Three deliveries, two with new message ids (past the NATS dedup window).
        for msg_id in ("a", "b", "a"):
            await p.js.publish(
                p.subjects.submit("orders"), first.encode(), headers={"Nats-Msg-Id": msg_id}
            )
        # A batch holding the same statement again, and a new one.
        again = p.outbox.sign(
            [
                p.outbox.statement("order/ORD-9", "order.noted", {"x": 1}, "dup-1"),
                p.outbox.statement("order/ORD-9", "order.noted", {"x": 2}, "after"),
            ]
        )
        await p.js.publish(p.subjects.submit("orders"), again.encode())
    cp = await _checkpoint_at_least(audit, 3)
    listed = [r.entry async for r in audit.ListEntries(journal_pb2.ListEntriesRequest())]
    assert [e.idempotency_key for e in listed] == ["genesis", "dup-1", "after"]
    assert cp.tree_size == 3


async def test_unknown_key_and_malformed_messages_are_refused(
    settings: Settings, audit: journal_pb2_grpc.AuditServiceStub
) -> None:
    async with producer(settings, "scoring", key_name="intruder") as forger:
        await forger.append(1, start=100)

        async def refused() -> bool:
            reason = await forger.pool.fetchval("SELECT refused_reason FROM outbox")
            return reason is not None

        await forger.wait_until(refused, "the refusal to reach the producer")
        reason = await forger.pool.fetchval("SELECT refused_reason FROM outbox")
        assert "unknown key" in reason
        await forger.js.publish(forger.subjects.submit("orders"), b"garbage")
        async with producer(settings) as honest:
            await honest.append(1, start=200)
            await honest.wait_confirmed(1)
    listed = [r.entry async for r in audit.ListEntries(journal_pb2.ListEntriesRequest())]
    assert [e.idempotency_key for e in listed] == ["genesis", "k-200"]
    journal_schema = settings.endpoint("journal").schema
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        reasons = await conn.fetch(f'SELECT reason FROM "{journal_schema}".refusals ORDER BY id')
    finally:
        await conn.close()
    assert "unknown key" in reasons[0]["reason"] and "scoring" in reasons[0]["reason"]
    assert reasons[1]["reason"].startswith("malformed")


async def test_audit_api_refuses_bad_requests_and_wrong_roles(
    settings: Settings, audit: journal_pb2_grpc.AuditServiceStub
) -> None:
    await _checkpoint_at_least(audit, 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await audit.GetInclusionProof(journal_pb2.GetInclusionProofRequest(seq=5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "seq" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await audit.GetConsistencyProof(journal_pb2.GetConsistencyProofRequest(first_size=0))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await audit.GetReceipt(journal_pb2.GetReceiptRequest(seq=99))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    tls = load_party(settings.certs_dir, "acme-builders")
    async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
        stub = journal_pb2_grpc.AuditServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetCheckpoint(journal_pb2.GetCheckpointRequest())
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
