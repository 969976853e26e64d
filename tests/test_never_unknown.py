"""Never UNKNOWN: a body that does not decode is INVALID_ARGUMENT, an
unexpected failure is INTERNAL with an error id (logged with its traceback,
counted), and neither changes anything or leaks a Python class name."""

from __future__ import annotations

import json

import grpc
import pytest

from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.logs import JsonFormatter
from services.runtime.metrics import RPC_TOTAL
from tests.orders.helpers import orders_env

pytestmark = pytest.mark.integration

BODIES = [
    b"\xff\xfe\xfd",  # not protobuf at all
    b"\x0a\x03\xff\xfe\xfd",  # field 1 (buyer_id) with invalid UTF-8
    b"\x0a\xff\xff\xff\xff\x0f",  # a length past the end
]


async def test_undecodable_bodies_are_invalid_argument_and_change_nothing(
    settings: Settings,
) -> None:
    async with orders_env(settings) as env:
        addr = settings.endpoint("orders").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "acme-builders")) as ch:
            for method in ("RegisterOrder", "GetOrder", "ListOrders"):
                raw = ch.unary_unary(f"/scf.orders.v1.OrdersService/{method}")
                for body in BODIES:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await raw(body, timeout=5)
                    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, body)
                    assert "does not decode" in (info.value.details() or "")
                    assert "Error" not in (info.value.details() or "")
        rows = await env.sql("SELECT count(*) AS n FROM outbox")
        assert rows[0]["n"] == 0
        assert RPC_TOTAL.labels("orders", "RegisterOrder", "INVALID_ARGUMENT")._value.get() >= 3


async def test_an_unexpected_failure_is_internal_with_an_error_id(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from services.orders.servicer import OrdersServicer

    async def broken(self: object, request: object, context: object) -> object:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(OrdersServicer, "ListBuyers", broken)
    async with orders_env(settings) as env:
        from services.gen.scf.orders.v1 import orders_pb2

        before = RPC_TOTAL.labels("orders", "ListBuyers", "INTERNAL")._value.get()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.stub("acme-builders").ListBuyers(orders_pb2.ListBuyersRequest())
        assert info.value.code() == grpc.StatusCode.INTERNAL
        details = info.value.details() or ""
        assert details.startswith("internal error ") and "ZeroDivision" not in details
        error_id = details.split()[2].rstrip(";")
        logged = [r for r in caplog.records if error_id in r.getMessage()]
        assert logged and logged[0].exc_info is not None  # with its traceback
        # The line names the call it came from: the RPC and the calling party.
        line = json.loads(JsonFormatter("orders").format(logged[0]))
        assert line["rpc"] == "/scf.orders.v1.OrdersService/ListBuyers"
        assert line["party"] == "acme-builders" and error_id in line["msg"]
        assert RPC_TOTAL.labels("orders", "ListBuyers", "INTERNAL")._value.get() == before + 1


async def test_a_huge_field_is_invalid_argument_naming_it(settings: Settings) -> None:
    from tests.orders.helpers import bad_request_field, register_request

    async with orders_env(settings) as env:
        huge = register_request("PO-HUGE", buyer_id="b" * 3_000_000)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.stub("acme-builders").RegisterOrder(huge)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_field(info.value) == "buyer_id"
        rows = await env.sql("SELECT count(*) AS n FROM outbox")
        assert rows[0]["n"] == 0
