"""An order's whole life, each transition journaled exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
import pytest

from services.contracts.subjects import OrderVerb
from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.gen.scf.orders.v1 import orders_pb2
from services.journal.checkpoint import parse_note
from services.journal.encoding import decode_entry
from services.journal.hashing import leaf_hash
from services.journal.proofs import verify_inclusion
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from tests.orders.helpers import CONTRACT, orders_env, register_request

pytestmark = pytest.mark.integration


async def test_register_to_settled(settings: Settings, tmp_path: Path) -> None:
    async with orders_env(settings) as env:
        sub, buyer = env.stub("acme-builders"), env.stub("citybuild")
        order = (await sub.RegisterOrder(register_request())).order
        assert order.state == orders_pb2.ORDER_STATE_REGISTERED and order.version == 1
        assert order.amount.amount == "4000000.00" and order.subcontractor_id == "acme-builders"
        oid = order.order_id
        order = (
            await buyer.ConfirmOrder(
                orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key="c")
            )
        ).order
        assert order.state == orders_pb2.ORDER_STATE_CONFIRMED
        pledged = await env.command(OrderVerb.PLEDGE, oid, "APP-1")
        assert (not pledged.HasField("error")) and pledged.order.pledge.application_id == "APP-1"
        order = (
            await sub.RecordDelivery(
                orders_pb2.RecordDeliveryRequest(order_id=oid, idempotency_key="d")
            )
        ).order
        order = (
            await buyer.AcceptDelivery(
                orders_pb2.AcceptDeliveryRequest(order_id=oid, idempotency_key="a")
            )
        ).order
        assert order.state == orders_pb2.ORDER_STATE_ACCEPTED and order.HasField("pledge")
        settled = await env.command(OrderVerb.SETTLE, oid, "APP-1")
        assert (
            not settled.HasField("error")
        ) and settled.order.state == orders_pb2.ORDER_STATE_SETTLED
        assert not settled.order.HasField("pledge") and settled.order.version == 6

        journaled = await env.journaled()
        assert sorted(journaled) == [f"order/{oid}/v{v}" for v in range(1, 7)]
        tls = load_party(settings.certs_dir, "auditor-reg")
        async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
            audit = journal_pb2_grpc.AuditServiceStub(channel)
            history = [
                r.entry
                async for r in audit.GetSubjectHistory(
                    journal_pb2.GetSubjectHistoryRequest(subject=f"order/{oid}")
                )
            ]
        assert [e.event_type for e in history] == [
            "order.registered", "order.confirmed", "order.pledged", "order.delivered",
            "order.accepted", "order.settled",
        ]  # fmt: skip
        first = json.loads(history[0].payload)
        assert first["amount_minor"] == 400_000_000 and first["contract_sha256"] == CONTRACT.hex()

        # The identity card: anyone with a certificate, given the id and the contract hash.
        outsider = env.stub("delta-pumps")
        card = None
        for _ in range(100):
            try:
                card = await outsider.VerifyOrder(
                    orders_pb2.VerifyOrderRequest(order_id=oid, contract_sha256=CONTRACT)
                )
                if len(card.entries) == 6:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
        assert card is not None and len(card.entries) == 6
        assert card.state == orders_pb2.ORDER_STATE_SETTLED and not card.pledged
        journal_key = bytes.fromhex((settings.keys_dir / "journal.pub").read_text())
        note = parse_note(card.checkpoint)
        note.verify(note.checkpoint.origin, journal_key)
        for e in card.entries:
            assert decode_entry(e.leaf).statement.subject == f"order/{oid}"
            verify_inclusion(
                e.seq, note.checkpoint.size, leaf_hash(e.leaf), list(e.inclusion_proof),
                note.checkpoint.root,
            )  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await outsider.VerifyOrder(
                orders_pb2.VerifyOrderRequest(order_id=oid, contract_sha256=b"\x00" * 32)
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        # `scf order card` checks the proofs itself and writes the card and its QR code.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "order", "card", oid,
            "--contract-sha256", CONTRACT.hex(), "--as", "delta-pumps", "--out", str(tmp_path),
            env={**os.environ, **settings.to_env()},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await proc.communicate()
        assert "6 journal entries proven" in stdout.decode()
        assert proc.returncode == 0, stderr.decode()
        card_json = json.loads((tmp_path / f"{oid}.card.json").read_text())
        assert card_json["state"] == "settled" and len(card_json["journal_entries"]) == 6
        assert card_json["qr"].startswith(f"scf-order:{oid}?sha256={CONTRACT.hex()}")
        assert (tmp_path / f"{oid}.qr.svg").read_text().startswith("<?xml")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "order", "card", oid,
            "--contract-sha256", CONTRACT.hex(), "--as", "delta-pumps", "--out", str(tmp_path),
            "--json", env={**os.environ, **settings.to_env()},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        written = json.loads(stdout)
        assert written["entries_proven"] == 6 and written["card"].endswith(f"{oid}.card.json")


async def test_dispute_and_cancel(settings: Settings) -> None:
    async with orders_env(settings) as env:
        sub, buyer = env.stub("acme-builders"), env.stub("citybuild")
        oid = (await sub.RegisterOrder(register_request("PO-D"))).order.order_id
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await buyer.DisputeOrder(
                orders_pb2.DisputeOrderRequest(order_id=oid, idempotency_key="x")
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # no reason given
        disputed = await buyer.DisputeOrder(
            orders_pb2.DisputeOrderRequest(
                order_id=oid, reason="we never ordered this", idempotency_key="y"
            )
        )
        assert disputed.order.state == orders_pb2.ORDER_STATE_DISPUTED
        assert disputed.order.dispute_reason == "we never ordered this"
        refused = await env.command(OrderVerb.PLEDGE, oid, "APP-9")
        assert (
            refused.HasField("error")
            and refused.error.code == "FAILED_PRECONDITION"
            and "disputed" in refused.error.message
        )
        cancelled = await sub.CancelOrder(
            orders_pb2.CancelOrderRequest(order_id=oid, idempotency_key="z")
        )
        assert cancelled.order.state == orders_pb2.ORDER_STATE_CANCELLED
        assert len(await env.journaled()) == 3
