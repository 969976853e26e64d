"""Concurrent retries get the first answer: eight identical calls at once (same
key, same body) act once, and every caller gets the same answer, never an error."""

from __future__ import annotations

import asyncio

import pytest

from services.contracts.subjects import OrderVerb
from services.gen.scf.orders.v1 import orders_pb2
from services.runtime.config import Settings
from tests.orders.helpers import orders_env, register_request

pytestmark = pytest.mark.integration

AT_ONCE = 8


async def test_identical_calls_at_once_all_get_the_first_answer(settings: Settings) -> None:
    async with orders_env(settings) as env:
        sub, buyer = env.stub("acme-builders"), env.stub("citybuild")
        registered = await asyncio.gather(
            *(sub.RegisterOrder(register_request("PO-C")) for _ in range(AT_ONCE))
        )
        assert len({r.SerializeToString() for r in registered}) == 1
        oid = registered[0].order.order_id
        confirm = orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key="c")
        confirmed = await asyncio.gather(*(buyer.ConfirmOrder(confirm) for _ in range(AT_ONCE)))
        assert len({r.SerializeToString() for r in confirmed}) == 1
        pledged = await asyncio.gather(
            *(env.command(OrderVerb.PLEDGE, oid, "APP-C") for _ in range(AT_ONCE))
        )
        assert not pledged[0].HasField("error")
        assert len({p.SerializeToString() for p in pledged}) == 1
        # Each acted once: one statement per transition.
        rows = await env.sql(
            "SELECT idempotency_key FROM outbox WHERE idempotency_key LIKE $1", f"order/{oid}/%"
        )
        assert len(rows) == 3, rows
