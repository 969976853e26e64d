"""Complete order-financing flows over gRPC with mTLS, as a population of parties would run them.

Each flow: the subcontractor registers an order; the buyer confirms it, the
subcontractor records delivery and the buyer accepts it; the subcontractor asks
for financing (which the bank's policy approves automatically: grade B, short
tenor); subcontractor, bank and buyer sign; the flow ends when the application
is disbursed. Bounded by a count and a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.bench.journal_bench import machine
from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.platform import Platform

BUYER, UW = "citybuild", "uw-alice"


def bench_parties(count: int) -> tuple[Any, ...]:
    """A population of subcontractors: each finances one order, as a new
    borrower would (a borrower's open exposure would otherwise refer it)."""
    from services.runtime.certs import PartySpec
    from services.runtime.identity import Role

    return tuple(
        PartySpec(f"bench-sub-{i}", Role.SUBCONTRACTOR, f"bench-sub-{i}") for i in range(count)
    )


@dataclass
class FlowResult:
    flows: int
    concurrency: int
    seconds: float
    flows_per_s: float
    register_to_disbursed_p50_ms: float
    register_to_disbursed_p95_ms: float
    register_to_disbursed_p99_ms: float
    steps_p99_ms: dict[str, float]
    errors: int
    machine: str
    #: CPU seconds each service process used during the run: where the time goes.
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)


def _cpu(platform: Platform) -> dict[str, float]:
    import os

    import psutil

    out = {}
    for name, proc in platform.processes.items():
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(proc.process.pid).cpu_times()
            out[name] = t.user + t.system
    t = os.times()
    out["load generator"] = t.user + t.system
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return (
        round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1) if ordered else 0.0
    )


async def bench_flows(
    settings: Settings, flows: int, concurrency: int, run_seconds: float
) -> FlowResult:
    from services.runtime.certs import ensure_certificates

    ensure_certificates(settings.certs_dir, bench_parties(flows))
    platform = Platform(settings)
    await platform.start()
    timings: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    errors: list[str] = []
    try:
        certs = settings.certs_dir
        orders_addr, lending_addr = (settings.endpoint(n).grpc_addr for n in ("orders", "lending"))
        channels = {
            (p, svc): client_channel(addr, load_party(certs, p))
            for p in (BUYER, UW)
            for svc, addr in (("orders", orders_addr), ("lending", lending_addr))
        }
        orders: dict[str, Any] = {
            BUYER: orders_pb2_grpc.OrdersServiceStub(channels[(BUYER, "orders")])
        }
        lending: dict[str, Any] = {
            p: lending_pb2_grpc.LendingServiceStub(channels[(p, "lending")]) for p in (BUYER, UW)
        }
        keys = {p: Ed25519PrivateKey.generate() for p in (BUYER, UW)}

        async def register_key(stub: Any, party: str, key: Ed25519PrivateKey) -> None:
            public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            await stub.RegisterSigningKey(
                lending_pb2.RegisterSigningKeyRequest(
                    public_key=public, idempotency_key=f"bench-key-{party}"
                )
            )

        for p, key in keys.items():
            await register_key(lending[p], p, key)
        today = dt.date.today()
        deadline = time.perf_counter() + run_seconds
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(flows):
            queue.put_nowait(i)

        async def step(name: str, coro: Any) -> Any:
            t0 = time.perf_counter()
            result = await coro
            timings[name].append(time.perf_counter() - t0)
            return result

        async def flow(i: int) -> None:
            sub = f"bench-sub-{i}"
            tls = load_party(certs, sub)
            async with (
                client_channel(orders_addr, tls) as o_ch,
                client_channel(lending_addr, tls) as l_ch,
            ):
                orders[sub] = orders_pb2_grpc.OrdersServiceStub(o_ch)
                lending[sub] = lending_pb2_grpc.LendingServiceStub(l_ch)
                keys[sub] = Ed25519PrivateKey.generate()
                await register_key(lending[sub], sub, keys[sub])
                await lending[UW].CreateFacility(
                    lending_pb2.CreateFacilityRequest(
                        subcontractor_id=sub,
                        limit=lending_pb2.Money(amount="1000000.00", currency="CNY"),
                        expires_on=(today + dt.timedelta(days=365)).isoformat(),
                        spread_bps=200,
                        idempotency_key=f"bench-facility-{sub}",
                    ),
                    timeout=30,
                )
                try:
                    await run_flow(i, sub)
                finally:
                    del orders[sub], lending[sub], keys[sub]

        async def run_flow(i: int, SUB: str) -> None:
            start = time.perf_counter()
            money = orders_pb2.Money(amount="100000.00", currency="CNY")
            ref = f"B-{i}"
            order = (
                await step(
                    "register",
                    orders[SUB].RegisterOrder(
                        orders_pb2.RegisterOrderRequest(
                            buyer_id=BUYER,
                            amount=money,
                            issue_date=today.isoformat(),
                            due_date=(today + dt.timedelta(days=20)).isoformat(),
                            line_items=[
                                orders_pb2.LineItem(
                                    description="steel", quantity=1, unit_price=money
                                )
                            ],
                            contract_sha256=hashlib.sha256(ref.encode()).digest(),
                            reference=ref,
                            idempotency_key=ref,
                        ),
                        timeout=30,
                    ),
                )
            ).order
            oid = order.order_id
            await step(
                "confirm",
                orders[BUYER].ConfirmOrder(
                    orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key=ref), timeout=30
                ),
            )
            await step(
                "deliver",
                orders[SUB].RecordDelivery(
                    orders_pb2.RecordDeliveryRequest(order_id=oid, idempotency_key=ref), timeout=30
                ),
            )
            await step(
                "accept",
                orders[BUYER].AcceptDelivery(
                    orders_pb2.AcceptDeliveryRequest(order_id=oid, idempotency_key=ref), timeout=30
                ),
            )
            app = (
                await step(
                    "request",
                    lending[SUB].RequestFinancing(
                        lending_pb2.RequestFinancingRequest(
                            order_id=oid,
                            bank="bank-north",
                            amount=lending_pb2.Money(amount="50000.00", currency="CNY"),
                            idempotency_key=ref,
                        ),
                        timeout=30,
                    ),
                )
            ).application
            t0 = time.perf_counter()
            while app.state != "approved":
                if app.state in ("closed", "referred", "releasing"):
                    raise RuntimeError(f"{app.application_id} {app.state}: {app.reason}")
                await asyncio.sleep(0.01)
                app = (
                    await lending[SUB].GetApplication(
                        lending_pb2.GetApplicationRequest(application_id=app.application_id),
                        timeout=30,
                    )
                ).application
            timings["pledge+score+approve"].append(time.perf_counter() - t0)
            for p, role in ((SUB, "subcontractor"), (UW, "bank"), (BUYER, "buyer")):
                await step(
                    f"sign ({role})",
                    lending[p].SignContract(
                        lending_pb2.SignContractRequest(
                            contract_id=app.contract.contract_id,
                            signature=keys[p].sign(app.contract.sha256),
                            idempotency_key=f"{ref}-{p}",
                        ),
                        timeout=30,
                    ),
                )
            t0 = time.perf_counter()
            while app.state != "disbursed":
                await asyncio.sleep(0.01)
                app = (
                    await lending[SUB].GetApplication(
                        lending_pb2.GetApplicationRequest(application_id=app.application_id),
                        timeout=30,
                    )
                ).application
            timings["disburse"].append(time.perf_counter() - t0)
            totals.append(time.perf_counter() - start)

        async def worker() -> None:
            while not queue.empty() and time.perf_counter() < deadline:
                i = queue.get_nowait()
                try:
                    await flow(i)
                except Exception as exc:  # counted and reported, the run goes on
                    errors.append(repr(exc)[:200])

        cpu_before = _cpu(platform)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = _cpu(platform)
        cpu = {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after}
        for channel in channels.values():
            await channel.close()
    finally:
        platform.stop()
    return FlowResult(
        flows=len(totals),
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        flows_per_s=round(len(totals) / elapsed, 1),
        register_to_disbursed_p50_ms=_pct(totals, 0.5),
        register_to_disbursed_p95_ms=_pct(totals, 0.95),
        register_to_disbursed_p99_ms=_pct(totals, 0.99),
        steps_p99_ms={k: _pct(v, 0.99) for k, v in timings.items()},
        errors=len(errors),
        machine=machine(),
        cpu_seconds=cpu,
        error_samples=errors[:3],
    )
