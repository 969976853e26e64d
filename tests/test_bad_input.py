"""Arbitrary and boundary values at the mutating RPCs: a clear refusal, never
UNKNOWN or INTERNAL, and no state change or journal entry from a refused call.

The services run in an event loop on a thread of their own, so hypothesis
(which drives plain functions) can call them example after example.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.gen.scf.repayment.v1 import repayment_pb2, repayment_pb2_grpc
from services.journal.service import SPEC as JOURNAL
from services.lending.service import SPEC as LENDING
from services.orders.service import SPEC as ORDERS
from services.repayment.service import SPEC as REPAYMENT
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.scoring.service import SPEC as SCORING
from tests.support import running

pytestmark = pytest.mark.integration

NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


class Platform:
    """The services on a background loop, and a blocking way to call them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.stubs: dict[str, Any] = {}
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        s = self.settings
        sub = load_party(s.certs_dir, "acme-builders")
        operator = load_party(s.certs_dir, "operator")
        async with (
            running(JOURNAL, s),
            running(ORDERS, s),
            running(SCORING, s),
            running(LENDING, s),
            running(REPAYMENT, s),
            client_channel(s.endpoint("orders").grpc_addr, sub) as o,
            client_channel(s.endpoint("lending").grpc_addr, sub) as le,
            client_channel(s.endpoint("repayment").grpc_addr, operator) as r,
        ):
            self.stubs = {
                "orders": orders_pb2_grpc.OrdersServiceStub(o),
                "lending": lending_pb2_grpc.LendingServiceStub(le),
                "repayment": repayment_pb2_grpc.RepaymentServiceStub(r),
            }
            self.ready.set()
            await self.stop.wait()

    def call(self, service: str, method: str, request: Any) -> grpc.StatusCode:
        async def go() -> grpc.StatusCode:
            try:
                await getattr(self.stubs[service], method)(request, timeout=10)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                return exc.code()

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)

    def journal_size(self) -> int:
        async def count() -> int:
            conn = await asyncpg.connect(self.settings.database_url)
            try:
                schema = self.settings.endpoint("journal").schema
                return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".entries'))
            finally:
                await conn.close()

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(30)


@pytest.fixture(scope="module")
def platform(
    servers: Any, certs_dir: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    from tests.support import make_settings

    settings = make_settings(
        servers.nats_url, servers.database_url, certs_dir, tmp_path_factory.mktemp("bad")
    )
    p = Platform(settings)
    p.thread.start()
    assert p.ready.wait(60), "services did not start"
    try:
        yield p
    finally:
        assert p.stop is not None
        p.loop.call_soon_threadsafe(p.stop.set)
        p.thread.join(30)


text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["", " ", "0", "-1", "1e9", "NaN", "Infinity", "1.005", "99999999999999999999"]
    ),
)
money = st.builds(lambda a, c: (a, c), text, st.sampled_from(["CNY", "JPY", "", "XXX", "cny"]))
FEW = hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FEW
@given(
    buyer=text,
    amount=money,
    issue=text,
    due=text,
    reference=text,
    digest=st.binary(max_size=40),
    quantity=st.integers(-5, 10**12),
    price=money,
)
def test_register_order(
    platform: Platform,
    buyer: str,
    amount: Any,
    issue: str,
    due: str,
    reference: str,
    digest: bytes,
    quantity: int,
    price: Any,
) -> None:
    before = platform.journal_size()
    request = orders_pb2.RegisterOrderRequest(
        buyer_id=buyer,
        amount=orders_pb2.Money(amount=amount[0], currency=amount[1]),
        issue_date=issue,
        due_date=due,
        line_items=[
            orders_pb2.LineItem(
                description="x",
                quantity=quantity,
                unit_price=orders_pb2.Money(amount=price[0], currency=price[1]),
            )
        ],
        contract_sha256=digest,
        reference=reference,
        idempotency_key=f"k-{reference}-{issue}",
    )
    code = platform.call("orders", "RegisterOrder", request)
    assert code not in NEVER
    if code != grpc.StatusCode.OK:
        assert platform.journal_size() == before


@FEW
@given(order_id=text, bank=text, amount=money)
def test_request_financing(platform: Platform, order_id: str, bank: str, amount: Any) -> None:
    request = lending_pb2.RequestFinancingRequest(
        order_id=order_id,
        bank=bank,
        amount=lending_pb2.Money(amount=amount[0], currency=amount[1]),
        idempotency_key=f"f-{order_id}-{bank}",
    )
    assert platform.call("lending", "RequestFinancing", request) not in NEVER


@FEW
@given(loan=text, payer=text, amount=money, day=text, reference=text, quote=text)
def test_record_payment(
    platform: Platform, loan: str, payer: str, amount: Any, day: str, reference: str, quote: str
) -> None:
    before = platform.journal_size()
    request = repayment_pb2.RecordPaymentRequest(
        loan_id=loan,
        payer=payer,
        amount=repayment_pb2.Money(amount=amount[0], currency=amount[1]),
        value_date=day,
        bank_reference=reference,
        quote_id=quote,
    )
    code = platform.call("repayment", "RecordPayment", request)
    assert code not in NEVER
    assert code != grpc.StatusCode.OK  # there is no loan to pay
    assert platform.journal_size() == before
