"""Watch calls over the real services: the state now, each journaled change with
its entry, the end at a final state or the caller's deadline, and the same
gate as the matching Get."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.orders.v1 import orders_pb2
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.metrics import RPC_TOTAL
from services.runtime.proto_enums import word_of
from tests.lending.helpers import lending_env
from tests.orders.helpers import orders_env, register_request

pytestmark = pytest.mark.integration


async def _history(settings: Settings, subject: str) -> dict[int, str]:
    """The journal's entries of ``subject``: seq -> idempotency key."""
    tls = load_party(settings.certs_dir, "auditor-reg")
    async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
        stub = journal_pb2_grpc.AuditServiceStub(channel)
        request = journal_pb2.GetSubjectHistoryRequest(subject=subject)
        return {r.entry.seq: r.entry.idempotency_key async for r in stub.GetSubjectHistory(request)}


async def test_an_application_is_watched_from_request_to_disbursement(settings: Settings) -> None:
    async with lending_env(settings) as env:
        await env.facility()
        oid = await env.confirmed_order("PO-W1", accepted=True, due_in_days=20)
        app_id = await env.request(oid, "2000000.00")  # bank-north approves it by itself
        seen: list[lending_pb2.WatchApplicationResponse] = []
        watch = env.lending("acme-builders").WatchApplication(
            lending_pb2.WatchApplicationRequest(application_id=app_id), timeout=30
        )
        async for reply in watch:
            seen.append(reply)
            if (
                reply.application.state == lending_pb2.APPLICATION_STATE_APPROVED
                and not reply.application.contract.signed_by
            ):
                await env.sign_all(reply.application)  # signing moves it on
            if reply.application.state == lending_pb2.APPLICATION_STATE_DISBURSED:
                watch.cancel()
                break
        states = [word_of(lending_pb2.ApplicationState, r.application.state) for r in seen]
        assert states[-1] == "disbursed" and "approved" in states
        versions, seqs = [r.version for r in seen], [r.journal_seq for r in seen]
        assert versions == sorted(set(versions)) and seqs == sorted(set(seqs))
        # Each state sent is the one its journal entry records, at that sequence.
        history = await _history(settings, f"application/{app_id}")
        assert all(history[r.journal_seq] == f"application/{app_id}/v{r.version}" for r in seen)
        assert seen[-1].application.contract.contract_id  # the view GetApplication gives


async def test_an_order_watch_ends_with_the_order_and_refuses_whom_get_refuses(
    settings: Settings,
) -> None:
    async with orders_env(settings) as env:
        sub = env.stub("acme-builders")
        oid = (await sub.RegisterOrder(register_request("PO-W2"))).order.order_id
        watch = sub.WatchOrder(orders_pb2.WatchOrderRequest(order_id=oid), timeout=30)
        first = await watch.read()
        assert first.order.state == orders_pb2.ORDER_STATE_REGISTERED and first.journal_seq
        await sub.CancelOrder(orders_pb2.CancelOrderRequest(order_id=oid, idempotency_key="x"))
        # The watch ends by itself after the final state.
        rest = []
        async with asyncio.timeout(30):
            while (reply := await watch.read()) is not grpc.aio.EOF:
                rest.append(reply.order.state)
        assert rest == [orders_pb2.ORDER_STATE_CANCELLED]

        for party, order_id, code in (
            ("harbor-works", oid, grpc.StatusCode.PERMISSION_DENIED),  # another buyer
            ("acme-builders", "ORD-NOSUCH", grpc.StatusCode.NOT_FOUND),
            ("acme-builders", "", grpc.StatusCode.INVALID_ARGUMENT),
        ):
            request = orders_pb2.WatchOrderRequest(order_id=order_id)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                [r async for r in env.stub(party).WatchOrder(request, timeout=10)]
            assert refused.value.code() == code, (party, order_id)


async def test_a_watch_ends_at_the_callers_deadline(settings: Settings) -> None:
    def counted(code: str) -> float:
        return float(RPC_TOTAL.labels("orders", "WatchOrder", code)._value.get())

    before = {code: counted(code) for code in ("OK", "DEADLINE_EXCEEDED", "CANCELLED")}
    async with orders_env(settings) as env:
        sub = env.stub("acme-builders")
        oid = (await sub.RegisterOrder(register_request("PO-W3"))).order.order_id
        watch = sub.WatchOrder(orders_pb2.WatchOrderRequest(order_id=oid), timeout=1.5)
        assert (await watch.read()).order.order_id == oid
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await watch.read()
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Counted by how it ended, never as OK (the service has stopped: its handler is
    # done). Which of the two depends on whether the server's own timer or the
    # service's shutdown ended the handler first.
    after = {code: counted(code) for code in before}
    assert after["OK"] == before["OK"]
    ended = sum(after[c] - before[c] for c in ("DEADLINE_EXCEEDED", "CANCELLED"))
    assert ended == 1


async def test_a_checkpoint_watch_answers_once_the_entry_can_be_proven(settings: Settings) -> None:
    async with orders_env(settings) as env:
        sub = env.stub("acme-builders")
        oid = (await sub.RegisterOrder(register_request("PO-W4"))).order.order_id
        seq = (
            await sub.WatchOrder(orders_pb2.WatchOrderRequest(order_id=oid), timeout=30).read()
        ).journal_seq
        tls = load_party(settings.certs_dir, "auditor-reg")
        async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
            audit = journal_pb2_grpc.AuditServiceStub(channel)
            watch = audit.WatchCheckpoints(
                journal_pb2.WatchCheckpointsRequest(min_size=seq + 1), timeout=30
            )
            cp = await watch.read()
            assert cp.tree_size > seq and cp.checkpoint.split("\n")[1] == str(cp.tree_size)
            proof = await audit.GetInclusionProof(
                journal_pb2.GetInclusionProofRequest(seq=seq, tree_size=cp.tree_size)
            )
            assert proof.tree_size == cp.tree_size
            watch.cancel()
            # No bank cosigns here: a watch for one cosignature gets nothing by its deadline.
            lonely = audit.WatchCheckpoints(
                journal_pb2.WatchCheckpointsRequest(min_cosignatures=1), timeout=1.5
            )
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await lonely.read()
            assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # A caller the audit API is not for is refused.
        async with client_channel(
            settings.endpoint("journal").grpc_addr, load_party(settings.certs_dir, "acme-builders")
        ) as channel:
            refused = journal_pb2_grpc.AuditServiceStub(channel).WatchCheckpoints(
                journal_pb2.WatchCheckpointsRequest(), timeout=10
            )
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await refused.read()
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
