"""Arbitrary and boundary values at the mutating RPCs: a clear refusal, never
UNKNOWN or INTERNAL, and no state change or journal entry from a refused call.

The services run in an event loop on a thread of their own, so hypothesis
(which drives plain functions) can call them example after example.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from services.gen.scf.journal.v1 import journal_pb2_grpc
from services.gen.scf.leasing.v1 import leasing_pb2_grpc
from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.gen.scf.repayment.v1 import repayment_pb2, repayment_pb2_grpc
from services.gen.scf.scoring.v1 import scoring_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2_grpc
from services.journal.service import SPEC as JOURNAL
from services.lending.service import SPEC as LENDING
from services.orders.service import SPEC as ORDERS
from services.repayment.service import SPEC as REPAYMENT
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.scoring.service import SPEC as SCORING
from tests.orders.helpers import register_request
from tests.support import provision_for, running

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
        self.channels: dict[tuple[str, str], Any] = {}
        self.known_ids: list[str] = []
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        s = self.settings
        sub = load_party(s.certs_dir, "acme-builders")
        operator = load_party(s.certs_dir, "operator")
        await provision_for(s)
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
            order = (await self.stubs["orders"].RegisterOrder(register_request("PO-BAD-1"))).order
            self.known_ids = [order.order_id]
            self.ready.set()
            await self.stop.wait()
            for channel in self.channels.values():
                await channel.close()

    def call(self, service: str, method: str, request: Any) -> grpc.StatusCode:
        async def go() -> grpc.StatusCode:
            try:
                await getattr(self.stubs[service], method)(request, timeout=10)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                return exc.code()

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)

    def call_as(
        self, service: str, stub: Any, party: str, method: str, request: Any
    ) -> grpc.StatusCode:
        async def go() -> grpc.StatusCode:
            key = (service, party)
            if key not in self.channels:
                tls = load_party(self.settings.certs_dir, party)
                self.channels[key] = client_channel(self.settings.endpoint(service).grpc_addr, tls)
            try:
                await getattr(stub(self.channels[key]), method)(request, timeout=10)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                return exc.code()

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)

    def statements(self) -> int:
        """Journal statements every service has written (journaled or not)."""

        async def count() -> int:
            conn = await asyncpg.connect(self.settings.database_url)
            try:
                parts = " + ".join(
                    f'(SELECT count(*) FROM "{self.settings.endpoint(s).schema}".outbox)'
                    for s in ("orders", "scoring", "lending", "repayment")
                )
                # The journal's own entries (key entries): other producers' arrive
                # asynchronously, from their outboxes, which are counted already.
                journal = self.settings.endpoint("journal").schema
                own = f"(SELECT count(*) FROM \"{journal}\".entries WHERE producer = 'journal')"
                return int(await conn.fetchval(f"SELECT {parts} + {own}"))
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
    before = platform.statements()
    request = orders_pb2.RegisterOrderRequest(
        buyer_id=buyer,
        amount=money_pb2.Money(amount=amount[0], currency=amount[1]),
        issue_date=issue,
        due_date=due,
        line_items=[
            orders_pb2.LineItem(
                description="x",
                quantity=quantity,
                unit_price=money_pb2.Money(amount=price[0], currency=price[1]),
            )
        ],
        contract_sha256=digest,
        reference=reference,
        idempotency_key=f"k-{reference}-{issue}",
    )
    code = platform.call("orders", "RegisterOrder", request)
    assert code not in NEVER
    if code != grpc.StatusCode.OK:
        assert platform.statements() == before


@FEW
@given(order_id=text, bank=text, amount=money)
def test_request_financing(platform: Platform, order_id: str, bank: str, amount: Any) -> None:
    request = lending_pb2.RequestFinancingRequest(
        order_id=order_id,
        bank=bank,
        amount=money_pb2.Money(amount=amount[0], currency=amount[1]),
        idempotency_key=f"f-{order_id}-{bank}",
    )
    assert platform.call("lending", "RequestFinancing", request) not in NEVER


@FEW
@given(loan=text, payer=text, amount=money, day=text, reference=text, quote=text)
def test_record_payment(
    platform: Platform, loan: str, payer: str, amount: Any, day: str, reference: str, quote: str
) -> None:
    before = platform.statements()
    request = repayment_pb2.RecordPaymentRequest(
        loan_id=loan,
        payer=payer,
        amount=money_pb2.Money(amount=amount[0], currency=amount[1]),
        value_date=day,
        bank_reference=reference,
        quote_id=quote,
        idempotency_key=reference or "k",
    )
    code = platform.call("repayment", "RecordPayment", request)
    assert code not in NEVER
    assert code != grpc.StatusCode.OK  # there is no loan to pay
    assert platform.statements() == before


# -- every mutating RPC, fields filled from its descriptor ------------------------------

#: (service, stub, method, the party that may call it).
MUTATING = [
    ("orders", orders_pb2_grpc.OrdersServiceStub, "RegisterOrder", "acme-builders"),
    ("orders", orders_pb2_grpc.OrdersServiceStub, "ConfirmOrder", "citybuild"),
    ("orders", orders_pb2_grpc.OrdersServiceStub, "DisputeOrder", "citybuild"),
    ("orders", orders_pb2_grpc.OrdersServiceStub, "RecordDelivery", "acme-builders"),
    ("orders", orders_pb2_grpc.OrdersServiceStub, "AcceptDelivery", "citybuild"),
    ("orders", orders_pb2_grpc.OrdersServiceStub, "CancelOrder", "acme-builders"),
    ("scoring", scoring_pb2_grpc.ScoringServiceStub, "LoadModel", "operator"),
    ("lending", lending_pb2_grpc.LendingServiceStub, "CreateFacility", "uw-alice"),
    ("lending", lending_pb2_grpc.LendingServiceStub, "RequestFinancing", "acme-builders"),
    ("lending", lending_pb2_grpc.LendingServiceStub, "AcceptOffer", "acme-builders"),
    ("lending", lending_pb2_grpc.LendingServiceStub, "DeclineOffer", "acme-builders"),
    ("lending", lending_pb2_grpc.LendingServiceStub, "WithdrawApplication", "acme-builders"),
    ("lending", lending_pb2_grpc.LendingServiceStub, "RegisterSigningKey", "acme-builders"),
    ("lending", lending_pb2_grpc.LendingServiceStub, "SignContract", "acme-builders"),
    ("lending", underwriting_pb2_grpc.UnderwritingServiceStub, "Approve", "uw-alice"),
    ("lending", underwriting_pb2_grpc.UnderwritingServiceStub, "Reject", "uw-alice"),
    ("lending", underwriting_pb2_grpc.UnderwritingServiceStub, "CounterOffer", "uw-alice"),
    ("lending", leasing_pb2_grpc.LeasingServiceStub, "ApplyForLease", "acme-builders"),
    ("lending", leasing_pb2_grpc.LeasingServiceStub, "PayVendor", "ls-dana"),
    ("lending", leasing_pb2_grpc.LeasingServiceStub, "ConfirmDelivery", "acme-builders"),
    ("lending", leasing_pb2_grpc.LeasingServiceStub, "ExerciseOption", "acme-builders"),
    ("repayment", repayment_pb2_grpc.RepaymentServiceStub, "RecordPayment", "operator"),
    ("repayment", repayment_pb2_grpc.RepaymentServiceStub, "QuotePayoff", "operator"),
    ("journal", journal_pb2_grpc.JournalAdminServiceStub, "RegisterKey", "operator"),
    ("journal", journal_pb2_grpc.JournalAdminServiceStub, "RevokeKey", "operator"),
    ("journal", journal_pb2_grpc.JournalAdminServiceStub, "RequestCheckpoint", "operator"),
]
_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}
#: Ids that exist on the platform (see the fixture), so that some requests reach
#: real objects and are refused for their state, not only for their shape.
KNOWN_IDS = ["bank-north", "citybuild", "liftco", "lease-one", "CNY"]


def _boundary_int(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [low, high, 0, 1, -1 if low < 0 else 2]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def request_strategy(desc: Any, ids: list[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """Requests of message type ``desc`` with arbitrary and boundary field values."""
    cls = message_factory.GetMessageClass(desc)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        s: st.SearchStrategy[Any]
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 2:
                continue
            s = request_strategy(f.message_type, ids, depth + 1)
        elif f.type == FieldDescriptor.TYPE_STRING:
            s = st.one_of(text, st.sampled_from(ids))
        elif f.type == FieldDescriptor.TYPE_BYTES:
            s = st.one_of(st.binary(max_size=70), st.sampled_from([b"", bytes(32), bytes(64)]))
        elif f.type == FieldDescriptor.TYPE_ENUM:
            s = st.integers(-3, 12)  # open enums: unknown numbers arrive too
        elif f.type == FieldDescriptor.TYPE_BOOL:
            s = st.booleans()
        elif f.type in _INTS:
            s = _boundary_int(*_INTS[f.type])
        else:
            continue
        if f.is_repeated:
            s = st.lists(s, max_size=3)
        fields[f.name] = s

    def build(values: dict[str, Any]) -> Any:
        message = cls()
        for name, value in values.items():
            target = getattr(message, name)
            if isinstance(value, list):
                if value and hasattr(value[0], "SerializeToString"):
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif hasattr(value, "SerializeToString"):
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries({}, optional=fields).map(build)


@pytest.mark.parametrize(
    ("service", "stub", "method", "party"), MUTATING, ids=[m for _, _, m, _ in MUTATING]
)
def test_every_mutating_rpc(
    platform: Platform, service: str, stub: Any, method: str, party: str
) -> None:
    desc = stub_request_descriptor(stub, method)
    ids = [*KNOWN_IDS, *platform.known_ids]

    @hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=request_strategy(desc, ids))
    def check(request: Any) -> None:
        before = platform.statements()
        code = platform.call_as(service, stub, party, method, request)
        assert code not in NEVER, request
        if code != grpc.StatusCode.OK:
            assert platform.statements() == before, (method, code, request)

    check()


def stub_request_descriptor(stub: Any, method: str) -> Any:
    """The request message of ``method`` on the service ``stub`` calls."""
    module = sys.modules[stub.__module__.removesuffix("_grpc")]
    for service in module.DESCRIPTOR.services_by_name.values():
        if stub.__name__ == f"{service.name}Stub":
            return service.methods_by_name[method].input_type
    raise LookupError(f"{stub.__name__}.{method}")
