"""Bad input, wrong party, wrong state, duplicates: the right status, and nothing changes."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from services.contracts.subjects import OrderVerb
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.orders.v1 import orders_pb2
from services.gen.scf.types.v1 import money_pb2
from services.runtime.config import Settings
from tests.orders.helpers import OrdersEnv, bad_request_field, orders_env, register_request

pytestmark = pytest.mark.integration

M = money_pb2.Money
ITEM = orders_pb2.LineItem


async def _state(env: OrdersEnv) -> tuple[int, int, int]:
    rows = await env.sql(
        "SELECT (SELECT count(*) FROM orders) AS o, (SELECT coalesce(sum(version), 0) FROM orders)"
        " AS v, (SELECT count(*) FROM outbox) AS j"
    )
    return rows[0]["o"], rows[0]["v"], rows[0]["j"]


async def _refused(
    env: OrdersEnv, call: Any, request: Any, code: grpc.StatusCode
) -> grpc.aio.AioRpcError:
    before = await _state(env)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request)
    assert info.value.code() == code, info.value.details()
    assert info.value.details()
    assert await _state(env) == before
    return info.value


BAD_REGISTRATIONS = [
    ("zero amount", {"amount": M(amount="0", currency="CNY")}, "amount.amount"),
    ("negative amount", {"amount": M(amount="-5.00", currency="CNY")}, "amount.amount"),
    ("too many decimals", {"amount": M(amount="4000000.001", currency="CNY")}, "amount.amount"),
    ("decimals on JPY", {"amount": M(amount="10.5", currency="JPY")}, "amount.amount"),
    ("unknown currency", {"amount": M(amount="1.00", currency="XXX")}, "amount.currency"),
    ("not a number", {"amount": M(amount="1e5", currency="CNY")}, "amount.amount"),
    ("due before issue", {"due_date": "2026-12-31"}, "due_date"),
    ("bad date", {"issue_date": "2027-02-30"}, "issue_date"),
    ("buyer is supplier", {"buyer_id": "acme-builders"}, "buyer_id"),
    ("unknown buyer", {"buyer_id": "nobody-corp"}, "buyer_id"),
    (
        "items do not add up",
        {
            "line_items": [
                ITEM(description="x", quantity=1, unit_price=M(amount="1.00", currency="CNY"))
            ]
        },
        "line_items",
    ),
    (
        "item in another currency",
        {
            "line_items": [
                ITEM(description="x", quantity=1, unit_price=M(amount="4000000.00", currency="USD"))
            ]
        },
        "line_items[0].unit_price.currency",
    ),
    (
        "zero quantity",
        {
            "line_items": [
                ITEM(description="x", quantity=0, unit_price=M(amount="1.00", currency="CNY"))
            ]
        },
        "line_items[0].quantity",
    ),
    ("no line items", {"line_items": []}, "line_items"),
    ("short contract hash", {"contract_sha256": b"\x01" * 31}, "contract_sha256"),
    ("bad reference", {"reference": "has spaces in it"}, "reference"),
    ("no idempotency key", {"idempotency_key": ""}, "idempotency_key"),
]


async def test_bad_registrations(settings: Settings) -> None:
    async with orders_env(settings) as env:
        sub = env.stub("acme-builders")
        for name, changes, field in BAD_REGISTRATIONS:
            exc = await _refused(
                env,
                sub.RegisterOrder,
                register_request(f"R-{len(name)}", **changes),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            assert bad_request_field(exc) == field, name
        await _refused(
            env,
            env.stub("citybuild").RegisterOrder,
            register_request(),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        await sub.RegisterOrder(register_request("PO-SAME"))
        # The same reference again, under another idempotency key.
        exc = await _refused(
            env,
            sub.RegisterOrder,
            register_request("PO-SAME", idempotency_key="other"),
            grpc.StatusCode.ALREADY_EXISTS,
        )
        assert "PO-SAME" in (exc.details() or "")


async def test_wrong_party_and_wrong_state(settings: Settings) -> None:
    async with orders_env(settings) as env:
        sub, buyer = env.stub("acme-builders"), env.stub("citybuild")
        oid = (await sub.RegisterOrder(register_request())).order.order_id
        confirm = orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key="c1")
        for party in ("harbor-works", "acme-builders", "uw-alice", "auditor-reg"):
            await _refused(
                env, env.stub(party).ConfirmOrder, confirm, grpc.StatusCode.PERMISSION_DENIED
            )
        exc = await _refused(
            env,
            sub.RecordDelivery,
            orders_pb2.RecordDeliveryRequest(order_id=oid, idempotency_key="d"),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "registered" in (exc.details() or "")
        await _refused(
            env,
            buyer.AcceptDelivery,
            orders_pb2.AcceptDeliveryRequest(order_id=oid, idempotency_key="a"),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        await _refused(
            env,
            buyer.ConfirmOrder,
            orders_pb2.ConfirmOrderRequest(order_id="ORD-NOPE", idempotency_key="n"),
            grpc.StatusCode.NOT_FOUND,
        )
        await _refused(
            env,
            buyer.ConfirmOrder,
            orders_pb2.ConfirmOrderRequest(order_id="", idempotency_key="n"),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        await buyer.ConfirmOrder(confirm)
        assert not (await env.command(OrderVerb.PLEDGE, oid, "APP-1")).HasField("error")
        exc = await _refused(
            env,
            sub.CancelOrder,
            orders_pb2.CancelOrderRequest(order_id=oid, idempotency_key="x"),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert "pledged" in (exc.details() or "")
        await _refused(
            env,
            env.stub("delta-pumps").GetOrder,
            orders_pb2.GetOrderRequest(order_id=oid),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        # The pledging bank's underwriter may read it; another bank's may not.
        assert (
            await env.stub("uw-alice").GetOrder(orders_pb2.GetOrderRequest(order_id=oid))
        ).order.order_id == oid
        await _refused(
            env,
            env.stub("uw-carol").GetOrder,
            orders_pb2.GetOrderRequest(order_id=oid),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        wrong_release = await env.command(OrderVerb.RELEASE, oid, "APP-OTHER")
        assert wrong_release.HasField("error") and wrong_release.error.code == "FAILED_PRECONDITION"
        released = await env.command(OrderVerb.RELEASE, oid, "APP-1")
        assert (not released.HasField("error")) and not released.order.HasField("pledge")
        bad = await env.nc.request(
            f"{settings.nats_prefix}.orders.pledge", b"\xff\xfe garbage", timeout=5
        )
        # Unsigned bytes: refused (signed by orders), and nothing changed.
        answer = bus_pb2.Signed.FromString(bad.data)
        assert answer.signer == "orders"
        assert bus_pb2.PledgeResult.FromString(answer.body).error.code == "PERMISSION_DENIED"


async def test_idempotent_retries(settings: Settings) -> None:
    async with orders_env(settings) as env:
        sub, buyer = env.stub("acme-builders"), env.stub("citybuild")
        first = await sub.RegisterOrder(register_request("PO-R"))
        again = await sub.RegisterOrder(register_request("PO-R"))
        assert again == first
        oid = first.order.order_id
        calls = [
            (
                buyer.ConfirmOrder,
                orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key="k1"),
            ),
            (
                sub.RecordDelivery,
                orders_pb2.RecordDeliveryRequest(order_id=oid, idempotency_key="k2"),
            ),
            (
                buyer.AcceptDelivery,
                orders_pb2.AcceptDeliveryRequest(order_id=oid, idempotency_key="k3"),
            ),
        ]
        for call, request in calls:
            one, two = await call(request), await call(request)
            assert one == two
        p1 = await env.command(OrderVerb.PLEDGE, oid, "APP-R")
        p2 = await env.command(OrderVerb.PLEDGE, oid, "APP-R")
        assert p1 == p2 and (not p1.HasField("error"))
        # The same key for a different request is refused.
        await _refused(
            env,
            sub.RegisterOrder,
            register_request("PO-R2", idempotency_key="register-PO-R"),
            grpc.StatusCode.ALREADY_EXISTS,
        )
        r1 = await env.command(OrderVerb.RELEASE, oid, "APP-R")
        assert r1 == await env.command(OrderVerb.RELEASE, oid, "APP-R") and (
            not r1.HasField("error")
        )
        await env.command(OrderVerb.PLEDGE, oid, "APP-S")
        s1 = await env.command(OrderVerb.SETTLE, oid, "APP-S")
        assert s1 == await env.command(OrderVerb.SETTLE, oid, "APP-S") and (
            not s1.HasField("error")
        )
        other = (await sub.RegisterOrder(register_request("PO-R3"))).order.order_id
        for call, request in [
            (
                buyer.DisputeOrder,
                orders_pb2.DisputeOrderRequest(order_id=other, reason="no", idempotency_key="k4"),
            ),
            (sub.CancelOrder, orders_pb2.CancelOrderRequest(order_id=other, idempotency_key="k5")),
        ]:
            one, two = await call(request), await call(request)
            assert one == two
        journaled = await env.journaled()
        assert sorted(journaled) == sorted(
            [f"order/{oid}/v{v}" for v in range(1, 9)] + [f"order/{other}/v{v}" for v in (1, 2, 3)]
        )


async def test_concurrent_pledges_one_wins(settings: Settings) -> None:
    async with orders_env(settings) as env:
        sub, buyer = env.stub("acme-builders"), env.stub("citybuild")
        for i in range(8):
            oid = (await sub.RegisterOrder(register_request(f"PO-C{i}"))).order.order_id
            await buyer.ConfirmOrder(
                orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key=f"c{i}")
            )
            north, south = await asyncio.gather(
                env.command(OrderVerb.PLEDGE, oid, f"N-{i}", "bank-north"),
                env.command(OrderVerb.PLEDGE, oid, f"S-{i}", "bank-south"),
            )
            assert sorted([(not north.HasField("error")), (not south.HasField("error"))]) == [
                False,
                True,
            ], (north, south)
            loser = south if (not north.HasField("error")) else north
            winner_bank = "bank-north" if (not north.HasField("error")) else "bank-south"
            assert loser.error.code == "FAILED_PRECONDITION" and winner_bank in loser.error.message
            order = (await sub.GetOrder(orders_pb2.GetOrderRequest(order_id=oid))).order
            assert order.pledge.bank == winner_bank


async def test_list_orders_pages_filters_and_visibility(settings: Settings) -> None:
    async with orders_env(settings) as env:
        sub, buyer = env.stub("acme-builders"), env.stub("citybuild")
        ids = []
        for i in range(5):
            due = f"2027-0{i + 3}-15"
            ids.append(
                (await sub.RegisterOrder(register_request(f"PO-L{i}", due_date=due))).order.order_id
            )
        await buyer.ConfirmOrder(
            orders_pb2.ConfirmOrderRequest(order_id=ids[0], idempotency_key="c")
        )
        seen, token = [], ""
        while True:
            page = await sub.ListOrders(orders_pb2.ListOrdersRequest(page_size=2, page_token=token))
            seen += [o.order_id for o in page.orders]
            token = page.next_page_token
            if not token:
                break
        assert seen == list(reversed(ids))
        confirmed = await buyer.ListOrders(
            orders_pb2.ListOrdersRequest(states=[orders_pb2.ORDER_STATE_CONFIRMED])
        )
        assert [o.order_id for o in confirmed.orders] == [ids[0]]
        due = await sub.ListOrders(
            orders_pb2.ListOrdersRequest(due_from="2027-04-01", due_to="2027-05-31")
        )
        assert sorted(o.order_id for o in due.orders) == sorted(ids[1:3])
        assert (
            await env.stub("delta-pumps").ListOrders(orders_pb2.ListOrdersRequest())
        ).orders == []
        assert (
            len((await env.stub("auditor-reg").ListOrders(orders_pb2.ListOrdersRequest())).orders)
            == 5
        )
        for request, field in [
            (orders_pb2.ListOrdersRequest(page_size=101), "page_size"),
            (orders_pb2.ListOrdersRequest(due_from="soon"), "due_from"),
            (orders_pb2.ListOrdersRequest(page_token="!!"), "page_token"),
        ]:
            exc = await _refused(env, sub.ListOrders, request, grpc.StatusCode.INVALID_ARGUMENT)
            assert bad_request_field(exc) == field
        buyers = await sub.ListBuyers(orders_pb2.ListBuyersRequest())
        assert {b.buyer_id: b.rating for b in buyers.buyers} == {
            "citybuild": "AA",
            "harbor-works": "A",
            "metro-transit": "AAA",
            "riverside-power": "AA",
        }


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "1969-12-31", "2101-01-01"])
async def test_dates_outside_the_platforms_window_are_refused(settings: Settings, day: str) -> None:
    async with orders_env(settings) as env:
        sub = env.stub("acme-builders")
        for field in ("issue_date", "due_date"):
            request = register_request(f"PO-W{field[0]}", **{field: day})
            info = await _refused(env, sub.RegisterOrder, request, grpc.StatusCode.INVALID_ARGUMENT)
            assert bad_request_field(info) == field
            assert "outside 2000-01-01 to 2100-12-31" in (info.details() or "")
