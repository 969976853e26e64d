"""A population of parties running complete order-financing flows over mTLS gRPC.

Each flow: a subcontractor of its own registers an order with one of the
buyers; the buyer confirms it, delivery is recorded and accepted; the
subcontractor asks bank-north for financing (which the bank's policy approves
automatically: grade B, short tenor); subcontractor, bank and buyer sign; the
flow ends when the application is disbursed.

Every call carries an idempotency key, so a flow may repeat a call whose
answer it did not get (the service was killed, the connection dropped) and the
platform does it once: with ``retry`` the load does exactly that, as a real
client would, which is what the fault runs rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.runtime.certs import PartySpec, ensure_certificates, load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.identity import Role
from services.runtime.proto_enums import enum_number
from services.runtime.watch_client import watch_until

__all__ = ["BUYERS", "FlowLoad", "bench_parties", "percentiles"]

#: Buyers rated AA or better: bank-north's policy approves their orders by itself.
BUYERS = ("citybuild", "metro-transit", "riverside-power")
BANK, UW = "bank-north", "uw-alice"
#: What a client does again: the service was away, or did not answer in time.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,  # a connection reset mid-call
}


#: States from which a bench flow cannot reach disbursement.
_HOPELESS = frozenset(
    enum_number(lending_pb2.ApplicationState, s) for s in ("closed", "referred", "releasing")
)


def bench_parties(count: int) -> tuple[PartySpec, ...]:
    """A subcontractor per flow, as new borrowers would be (a borrower's open
    exposure would otherwise refer its next financing to an underwriter)."""
    return tuple(
        PartySpec(f"bench-sub-{i}", Role.SUBCONTRACTOR, f"bench-sub-{i}") for i in range(count)
    )


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of ``values`` (seconds) in milliseconds."""
    ordered = sorted(values)

    def at(q: float) -> float:
        if not ordered:
            return 0.0
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99)}


@dataclass
class FlowLoad:
    settings: Settings
    flows: int
    concurrency: int
    run_seconds: float
    #: Repeat calls that got no answer (for runs with faults).
    retry: bool = False
    #: How long a flow keeps retrying one call before it gives up.
    retry_seconds: float = 120.0
    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    totals: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Application ids of the flows that reached "disbursed".
    disbursed: list[str] = field(default_factory=list)
    retries: int = 0
    #: Flows begun (each has its subcontractor, facility and order).
    started: int = 0
    #: Called after each finished flow with the number finished so far.
    on_progress: Callable[[int], None] | None = None
    #: While this says so, flows go on beyond ``flows`` (until the time limit).
    more: Callable[[], bool] | None = None
    #: More instances of the services: flow i's subcontractor calls the i-th in
    #: turn (``settings`` first); the buyers and the bank call ``settings``.
    instances: tuple[Settings, ...] = ()
    _stubs: dict[tuple[str, str], Any] = field(default_factory=dict)
    _keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    async def call(self, name: str, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        """One RPC, timed under ``name``; repeated while it gets no answer, if retrying."""
        started = time.perf_counter()
        give_up = started + self.retry_seconds
        while True:
            try:
                reply = await method(request, timeout=30)
                break
            except grpc.aio.AioRpcError as exc:
                if not self.retry or exc.code() not in RETRYABLE or time.perf_counter() > give_up:
                    raise
                self.retries += 1
                await asyncio.sleep(0.2)
        if name:
            self.timings[name].append(time.perf_counter() - started)
        return reply

    def _stub(self, party: str, service: str) -> Any:
        return self._stubs[(party, service)]

    async def _open(
        self, stack: contextlib.AsyncExitStack, party: str, settings: Settings | None = None
    ) -> None:
        settings = settings or self.settings
        tls = load_party(settings.certs_dir, party)
        for service, stub in (
            ("orders", orders_pb2_grpc.OrdersServiceStub),
            ("lending", lending_pb2_grpc.LendingServiceStub),
        ):
            channel = await stack.enter_async_context(
                client_channel(settings.endpoint(service).grpc_addr, tls)
            )
            self._stubs[(party, service)] = stub(channel)
        key = self._keys[party] = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        await self.call(
            "",
            self._stub(party, "lending").RegisterSigningKey,
            lending_pb2.RegisterSigningKeyRequest(
                public_key=public, idempotency_key=f"bench-key-{party}-{public.hex()[:8]}"
            ),
        )

    async def run(self) -> float:
        """Run the flows; returns the seconds they took."""
        ensure_certificates(self.settings.certs_dir, bench_parties(self.flows))
        deadline = time.perf_counter() + self.run_seconds

        def next_flow() -> int | None:
            wanted = self.started < self.flows or (self.more is not None and self.more())
            if not wanted or time.perf_counter() > deadline:
                return None
            self.started += 1
            return self.started - 1

        async with contextlib.AsyncExitStack() as stack:
            for party in (*BUYERS, UW):
                await self._open(stack, party)

            async def worker() -> None:
                while (i := next_flow()) is not None:
                    try:
                        await self._flow(i)
                    except Exception as exc:  # counted and reported; the run goes on
                        self.errors.append(repr(exc)[:300])

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
            return time.perf_counter() - started

    async def _flow(self, i: int) -> None:
        sub = f"bench-sub-{i}"
        if i >= self.flows:  # a flow beyond the planned ones needs its certificate
            ensure_certificates(self.settings.certs_dir, bench_parties(i + 1)[i:])
        async with contextlib.AsyncExitStack() as stack:
            every = (self.settings, *self.instances)
            await self._open(stack, sub, every[i % len(every)])
            today = dt.date.today()
            await self.call(
                "",
                self._stub(UW, "lending").CreateFacility,
                lending_pb2.CreateFacilityRequest(
                    subcontractor_id=sub,
                    limit=money_pb2.Money(amount="1000000.00", currency="CNY"),
                    expires_on=(today + dt.timedelta(days=365)).isoformat(),
                    spread_bps=200,
                    idempotency_key=f"bench-facility-{sub}",
                ),
            )
            try:
                await self._financing(i, sub, BUYERS[i % len(BUYERS)], today)
            finally:
                del self._stubs[(sub, "orders")], self._stubs[(sub, "lending")]
                del self._keys[sub]

    async def _financing(self, i: int, sub: str, buyer: str, today: dt.date) -> None:
        start = time.perf_counter()
        money = money_pb2.Money(amount="100000.00", currency="CNY")
        ref = f"B-{i}"
        register = orders_pb2.RegisterOrderRequest(
            buyer_id=buyer, amount=money, issue_date=today.isoformat(),
            due_date=(today + dt.timedelta(days=20)).isoformat(),
            line_items=[orders_pb2.LineItem(description="steel", quantity=1, unit_price=money)],
            contract_sha256=hashlib.sha256(ref.encode()).digest(), reference=ref,
            idempotency_key=ref,
        )  # fmt: skip
        orders, buyer_orders = self._stub(sub, "orders"), self._stub(buyer, "orders")
        oid = (await self.call("register", orders.RegisterOrder, register)).order.order_id
        for name, method, request in (
            ("confirm", buyer_orders.ConfirmOrder, orders_pb2.ConfirmOrderRequest),
            ("deliver", orders.RecordDelivery, orders_pb2.RecordDeliveryRequest),
            ("accept", buyer_orders.AcceptDelivery, orders_pb2.AcceptDeliveryRequest),
        ):
            await self.call(name, method, request(order_id=oid, idempotency_key=ref))
        lending = self._stub(sub, "lending")
        app = (
            await self.call(
                "request",
                lending.RequestFinancing,
                lending_pb2.RequestFinancingRequest(
                    order_id=oid, bank=BANK, idempotency_key=ref,
                    amount=money_pb2.Money(amount="50000.00", currency="CNY"),
                ),
            )
        ).application  # fmt: skip
        app = await self._until(lending, app, "approved", "pledge+score+approve")
        for party, role in ((sub, "subcontractor"), (UW, "bank"), (buyer, "buyer")):
            await self.call(
                f"sign ({role})",
                self._stub(party, "lending").SignContract,
                lending_pb2.SignContractRequest(
                    contract_id=app.contract.contract_id,
                    signature=self._keys[party].sign(app.contract.sha256),
                    idempotency_key=f"{ref}-{party}",
                ),
            )
        await self._until(lending, app, "disbursed", "disburse")
        self.totals.append(time.perf_counter() - start)
        self.disbursed.append(app.application_id)
        if self.on_progress is not None:
            self.on_progress(len(self.disbursed))

    async def _until(self, lending: Any, app: Any, state: str, name: str) -> Any:
        """Watch the application until the platform has moved it to ``state``."""
        started = time.perf_counter()
        request = lending_pb2.WatchApplicationRequest(application_id=app.application_id)
        wanted = enum_number(lending_pb2.ApplicationState, state)

        def hopeless(reply: Any) -> str | None:
            got = reply.application
            if got.state not in _HOPELESS:
                return None
            return f"{lending_pb2.ApplicationState.Name(got.state)}: {got.reason}"

        reply = await watch_until(
            lambda left: lending.WatchApplication(request, timeout=left),
            lambda r: r.application.state == wanted,
            self.retry_seconds, f"{app.application_id} {state}", hopeless=hopeless,
        )  # fmt: skip
        self.timings[name].append(time.perf_counter() - started)
        return reply.application
