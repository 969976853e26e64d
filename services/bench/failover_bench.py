"""`scf bench failover`: how long the journal is away when its leader is killed.

The journal runs as a leader and a standby (a second process waiting for the
sequencer's lock inside PostgreSQL). Each round starts a standby, waits until
it says it stands by, kills the leader with SIGKILL, and times how long a
statement submitted just after the kill takes to come back journaled: the
standby has to get the lock, verify the store, load the tree and consume.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.bench.journal_bench import machine
from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.platform import Platform
from services.runtime.watch_client import watch_until

__all__ = ["FailoverResult", "bench_failover"]


@dataclass
class FailoverResult:
    rounds: int
    #: Seconds from the leader's SIGKILL to a new statement journaled, each round.
    takeover_s: list[float]
    #: Entries in the journal at the end (the standby verifies them all on takeover).
    journal_entries: int
    machine: str


async def _standing_by(conn: Any, schema: str, platform: Platform) -> str:
    """Start another journal instance and return its name once it says it stands by."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    channel = f"journal_standby_{schema}"

    def said(*args: Any) -> None:
        heard.put_nowait(str(args[-1]))

    await conn.add_listener(channel, said)
    try:
        standby = platform.spawn_instance("journal")
        async with asyncio.timeout(30):
            await heard.get()
        return standby.name
    finally:
        await conn.remove_listener(channel, said)


async def _journaled(orders: Any, ref: str) -> None:
    """Register an order and wait until its first entry is journaled."""
    today = time.strftime("%Y-%m-%d")
    money = money_pb2.Money(amount="1000.00", currency="CNY")
    request = orders_pb2.RegisterOrderRequest(
        buyer_id="citybuild", amount=money, issue_date=today, due_date="2099-01-01",
        line_items=[orders_pb2.LineItem(description="bolts", quantity=1, unit_price=money)],
        contract_sha256=hashlib.sha256(ref.encode()).digest(), reference=ref,
        idempotency_key=ref,
    )  # fmt: skip
    order = (await orders.RegisterOrder(request, timeout=30)).order
    watch = orders_pb2.WatchOrderRequest(order_id=order.order_id)
    await watch_until(
        lambda left: orders.WatchOrder(watch, timeout=left),
        lambda reply: reply.journal_seq > 0, 120, f"{order.order_id} journaled",
    )  # fmt: skip


async def bench_failover(settings: Settings, rounds: int) -> FailoverResult:
    platform = Platform(settings, services=("journal", "orders"))
    await platform.start()
    leader = "journal"
    takeovers: list[float] = []
    try:
        schema = platform.settings.endpoint("journal").schema
        conn = await asyncpg.connect(platform.settings.database_url)
        tls = load_party(platform.settings.certs_dir, "acme-builders")
        addr = platform.settings.endpoint("orders").grpc_addr
        async with client_channel(addr, tls) as channel:
            orders = orders_pb2_grpc.OrdersServiceStub(channel)
            for i in range(20):  # some history for the standby to verify
                await _journaled(orders, f"FAILOVER-WARM-{i}")
            for r in range(rounds):
                standby = await _standing_by(conn, schema, platform)
                killed = time.perf_counter()
                os.kill(platform.processes[leader].process.pid, signal.SIGKILL)
                await _journaled(orders, f"FAILOVER-{r}")
                takeovers.append(round(time.perf_counter() - killed, 3))
                leader = standby
        entries = int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".entries'))
        await conn.close()
    finally:
        with contextlib.suppress(Exception):
            platform.stop()
    return FailoverResult(rounds, takeovers, entries, machine())
