"""The narrated demo: the platform's story so far, on embedded servers."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.parse

import grpc
from rich.console import Console
from rich.table import Table

from services.cli.waits import checkpoint, order_where
from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.gen.scf.platform.v1 import platform_pb2, platform_pb2_grpc
from services.gen.scf.replica.v1 import replica_pb2, replica_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.journal.checkpoint import parse_note
from services.journal.offline import verify_database
from services.journal.proofs import verify_inclusion
from services.journal.witness import verify_quorum
from services.orders.card import card_uri, check_card
from services.replica.config import EXAMPLE_BANKS
from services.runtime.certs import load_party
from services.runtime.config import SERVICE_NAMES, Settings
from services.runtime.grpcserver import client_channel
from services.runtime.platform import Platform


async def _story(platform: Platform, out: Console) -> int:
    settings = platform.settings
    out.rule("1. Every party is known by its certificate")
    table = Table("caller", "service", "party", "role", "organisation")
    for party in ("acme-builders", "citybuild", "uw-alice", "auditor-reg"):
        tls = load_party(settings.certs_dir, party)
        for service in SERVICE_NAMES:
            async with client_channel(settings.endpoint(service).grpc_addr, tls) as channel:
                who = await platform_pb2_grpc.PlatformServiceStub(channel).WhoAmI(
                    platform_pb2.WhoAmIRequest(), timeout=5
                )
            table.add_row(party, who.service, who.party_id, who.role, who.organization)
    out.print(table)
    out.rule("2. A caller without a certificate is refused")
    ca = (settings.certs_dir / "ca.pem").read_bytes()
    async with client_channel(settings.endpoint("orders").grpc_addr, None, ca=ca) as channel:
        try:
            await platform_pb2_grpc.PlatformServiceStub(channel).WhoAmI(
                platform_pb2.WhoAmIRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            out.print(f"refused: {exc.code().name}")
        else:
            out.print("[red]a call without a certificate was accepted[/]")
            return 1
    code = await _order(platform, out)
    return code or await _finance(platform, out)


async def _order(platform: Platform, out: Console) -> int:
    settings = platform.settings
    out.rule("3. A subcontractor registers an order; the buyer confirms it")
    addr = settings.endpoint("orders").grpc_addr
    contract = hashlib.sha256(b"Flood barrier steel supply contract, signed PDF").digest()
    sub_tls = load_party(settings.certs_dir, "acme-builders")
    buyer_tls = load_party(settings.certs_dir, "citybuild")
    async with client_channel(addr, sub_tls) as sub_ch, client_channel(addr, buyer_tls) as buy_ch:
        sub = orders_pb2_grpc.OrdersServiceStub(sub_ch)
        buyer = orders_pb2_grpc.OrdersServiceStub(buy_ch)
        cny = "CNY"
        order = (
            await sub.RegisterOrder(
                orders_pb2.RegisterOrderRequest(
                    buyer_id="citybuild",
                    amount=money_pb2.Money(amount="4000000.00", currency=cny),
                    issue_date="2027-01-05",
                    due_date="2027-04-30",
                    line_items=[
                        orders_pb2.LineItem(
                            description="flood barrier steel (tonnes)",
                            quantity=400,
                            unit_price=money_pb2.Money(amount="9000.00", currency=cny),
                        ),
                        orders_pb2.LineItem(
                            description="installation",
                            quantity=1,
                            unit_price=money_pb2.Money(amount="400000.00", currency=cny),
                        ),
                    ],
                    contract_sha256=contract,
                    reference="FB-2027-001",
                    idempotency_key="demo-register-1",
                ),
                timeout=10,
            )
        ).order
        out.print(
            f"acme-builders registered {order.order_id}: {order.amount.amount} {cny} to citybuild,"
            f" due {order.due_date}"
        )
        try:
            await sub.ConfirmOrder(
                orders_pb2.ConfirmOrderRequest(order_id=order.order_id, idempotency_key="x"),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            out.print(f"the subcontractor cannot confirm its own order: {exc.code().name}")
        await buyer.ConfirmOrder(
            orders_pb2.ConfirmOrderRequest(order_id=order.order_id, idempotency_key="demo-c1"),
            timeout=10,
        )
        out.print("citybuild confirmed it: the order can now back a financing")
        # Once the confirmation is journaled and a checkpoint covers it, the card proves it.
        confirmed = await order_where(
            buyer, order.order_id, lambda o: o.version >= 2, "the confirmation journaled"
        )
        await checkpoint(settings, min_size=confirmed.journal_seq + 1)
        card = await buyer.VerifyOrder(
            orders_pb2.VerifyOrderRequest(order_id=order.order_id, contract_sha256=contract),
            timeout=10,
        )
    if len(card.entries) != 2:
        out.print("[red]the order's journal entries did not appear[/]")
        return 1
    journal_key = bytes.fromhex((settings.keys_dir / "journal.pub").read_text())
    check_card(card, journal_key)
    platform.demo_order = (order.order_id, order.amount.amount)  # type: ignore[attr-defined]
    out.print("its identity card, every entry proven against the signed checkpoint:")
    for e in card.entries:
        out.print(f"  entry {e.seq:<4} {e.event_type:<18} proof of {len(e.inclusion_proof)} hashes")
    uri = card_uri(card, contract)
    out.print(f"QR code: {uri}", soft_wrap=True)
    out.print(f"(`scf order card {order.order_id} --contract-sha256 …` writes it as a file)")
    for name, url in platform.explorer_urls().items():
        if name.startswith("replica-"):  # a bank's auditors look at their own copy
            link = f"{url}/open?uri={urllib.parse.quote(uri, safe='')}"
            out.print(f"{name}'s explorer verifies it in a browser: {link}", soft_wrap=True)
            break
    return 0


async def _finance(platform: Platform, out: Console) -> int:
    """Steps 4 to 7 (financing), 8 to 9 (repayment), 10 (a lease), then the journal,
    the replicas and the order's proven history."""
    from services.cli.demo_leasing import lease
    from services.cli.demo_lending import finance
    from services.cli.demo_repayment import repay

    order_id, _ = platform.demo_order  # type: ignore[attr-defined]
    first = await finance(platform.settings, out, order_id)
    out.print("(a second order is registered, confirmed and financed the same way, quietly)")
    second_order = await _register_and_confirm(platform.settings, "FB-2027-002")
    second = await finance(platform.settings, out, second_order, quiet=True)
    platform.demo_loans = (first, second)  # type: ignore[attr-defined]
    code = await repay(platform.settings, out, first, second)
    code = code or await lease(platform.settings, out)
    code = code or await _journal(platform, out)
    return code or await _history(platform, out, order_id)


async def _history(platform: Platform, out: Console, order_id: str) -> int:
    settings = platform.settings
    out.rule(f"13. The whole history of {order_id}, every entry proven")
    contract = hashlib.sha256(b"Flood barrier steel supply contract, signed PDF").digest()
    tls = load_party(settings.certs_dir, "citybuild")
    async with client_channel(settings.endpoint("orders").grpc_addr, tls) as channel:
        card = await orders_pb2_grpc.OrdersServiceStub(channel).VerifyOrder(
            orders_pb2.VerifyOrderRequest(order_id=order_id, contract_sha256=contract), timeout=10
        )
    check_card(card, bytes.fromhex((settings.keys_dir / "journal.pub").read_text()))
    state = orders_pb2.OrderState.Name(card.state).removeprefix("ORDER_STATE_").lower()
    table = Table("entry", "event", "inclusion proof", title=f"{order_id}: {state}")
    for e in card.entries:
        table.add_row(str(e.seq), e.event_type, f"{len(e.inclusion_proof)} hashes, verified")
    out.print(table)
    return 0


async def _register_and_confirm(settings: Settings, reference: str) -> str:
    addr = settings.endpoint("orders").grpc_addr
    sub_tls = load_party(settings.certs_dir, "acme-builders")
    buyer_tls = load_party(settings.certs_dir, "citybuild")
    async with client_channel(addr, sub_tls) as sub_ch, client_channel(addr, buyer_tls) as buy_ch:
        sub = orders_pb2_grpc.OrdersServiceStub(sub_ch)
        buyer = orders_pb2_grpc.OrdersServiceStub(buy_ch)
        money = money_pb2.Money(amount="4000000.00", currency="CNY")
        order = (
            await sub.RegisterOrder(
                orders_pb2.RegisterOrderRequest(
                    buyer_id="citybuild",
                    amount=money,
                    issue_date="2027-01-05",
                    due_date="2027-04-30",
                    line_items=[
                        orders_pb2.LineItem(description="pumps", quantity=1, unit_price=money)
                    ],
                    contract_sha256=hashlib.sha256(reference.encode()).digest(),
                    reference=reference,
                    idempotency_key=f"demo-{reference}",
                ),
                timeout=10,
            )
        ).order
        await buyer.ConfirmOrder(
            orders_pb2.ConfirmOrderRequest(
                order_id=order.order_id, idempotency_key=f"demo-c-{reference}"
            ),
            timeout=10,
        )
    return str(order.order_id)


async def _journal(platform: Platform, out: Console) -> int:
    settings = platform.settings
    out.rule("11. The journal, as an auditor sees it")
    tls = load_party(settings.certs_dir, "auditor-reg")
    async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
        audit = journal_pb2_grpc.AuditServiceStub(channel)
        cp = await audit.GetCheckpoint(journal_pb2.GetCheckpointRequest(), timeout=5)
        out.print("latest signed checkpoint (C2SP signed note):")
        out.print(cp.checkpoint, highlight=False, soft_wrap=True)
        keys = await audit.GetKeySet(journal_pb2.GetKeySetRequest(), timeout=5)
        table = Table("producer", "key id", "registered at entry")
        for k in keys.keys:
            table.add_row(k.producer, k.key_id.hex()[:16] + "…", str(k.registered_at))
        out.print(table)
        # Against the checkpoint just read: a newer one may be signed meanwhile.
        size = parse_note(cp.checkpoint).checkpoint.size
        proof = await audit.GetInclusionProof(
            journal_pb2.GetInclusionProofRequest(seq=0, tree_size=size), timeout=5
        )
    journal_key = bytes.fromhex((settings.keys_dir / "journal.pub").read_text())
    note = parse_note(cp.checkpoint)
    note.verify(note.checkpoint.origin, journal_key)
    verify_inclusion(0, proof.tree_size, proof.leaf_hash, list(proof.proof), cp.root_hash)
    out.print(f"checkpoint signature verified; entry 0 proven in the tree of {proof.tree_size}")
    root_key = bytes.fromhex((settings.keys_dir / "platform-root.pub").read_text())
    report = await verify_database(
        settings.database_url, settings.endpoint("journal").schema, root_key
    )
    out.print(
        f"offline verification: {report.entries} entries, {report.checkpoints} checkpoints, "
        f"root {report.root.hex()[:16]}…"
    )
    return await _replicas(platform, out, report.entries)


async def _replicas(platform: Platform, out: Console, size: int) -> int:
    settings = platform.settings
    out.rule("12. Each bank keeps its own verified replica, and cosigns")
    tls = load_party(settings.certs_dir, "operator")
    table = Table("bank", "entries", "root", "cosigned up to", "lag", "alarm")
    # Both banks cosigned a checkpoint of ``size`` entries: each verified them all.
    cp = await checkpoint(settings, min_size=size, min_cosignatures=len(EXAMPLE_BANKS))
    for bank in EXAMPLE_BANKS:
        async with client_channel(platform.addr_of(f"replica-{bank}"), tls) as channel:
            stub = replica_pb2_grpc.ReplicaServiceStub(channel)
            status = await stub.GetStatus(replica_pb2.GetStatusRequest(), timeout=5)
        table.add_row(
            bank,
            str(status.tree_size),
            status.root_hash.hex()[:16] + "…",
            str(status.cosigned_size),
            f"{status.lag_entries} entries",
            status.alarm.problem if status.HasField("alarm") else "none",
        )
    out.print(table)
    witnesses = {
        bank: bytes.fromhex((settings.keys_dir / f"witness-{bank}.pub").read_text())
        for bank in EXAMPLE_BANKS
    }
    journal_key = bytes.fromhex((settings.keys_dir / "journal.pub").read_text())
    verify_quorum(cp.checkpoint, journal_key, witnesses, len(witnesses))
    out.print("the journal's checkpoint with both banks' cosignatures (two of two verified):")
    out.print(cp.checkpoint, highlight=False, soft_wrap=True)
    return 0


def run_demo(settings: Settings, out: Console) -> int:
    platform = Platform(settings, replicas=EXAMPLE_BANKS, explorers=True)
    try:
        out.rule("Starting the platform on embedded servers")
        asyncio.run(platform.start())
        out.print(f"NATS {platform.settings.nats_url}; PostgreSQL {platform.settings.database_url}")
        for name, proc in platform.processes.items():
            out.print(f"  {name:<18} pid {proc.process.pid:<7} {platform.addr_of(name)}")
        code = asyncio.run(_story(platform, out))
    finally:
        out.rule("Stopping")
        platform.stop()
    out.print("demo finished; nothing left running" if code == 0 else "demo FAILED")
    return code
