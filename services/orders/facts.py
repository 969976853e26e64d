"""Facts about an order and its subcontractor, for scoring (NATS request-reply)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.gen.scf.orders.v1 import orders_pb2
from services.orders.convert import to_proto
from services.orders.storage import OrderStore
from services.runtime.errors import NotFound

__all__ = ["FactsResponder", "facts_subject"]

log = logging.getLogger(__name__)


def facts_subject(prefix: str) -> str:
    return f"{prefix}.orders.facts"


class FactsResponder:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool
        self.store = OrderStore(pool)

    async def subscribe(self, nc: NATS, prefix: str) -> None:
        await nc.subscribe(facts_subject(prefix), queue="orders", cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        try:
            query = orders_pb2.OrderFactsQuery.FromString(msg.data)
            if query.order_id:
                facts = await self.facts(query.order_id)
            else:
                facts = await self.party_facts(query.subcontractor_id, query.currency)
        except Exception:  # a malformed query gets "not found", never silence
            log.exception("order facts query failed")
            facts = orders_pb2.OrderFacts(found=False)
        await msg.respond(facts.SerializeToString())

    async def party_facts(self, subcontractor_id: str, currency: str) -> orders_pb2.OrderFacts:
        """A subcontractor's record without an order in view (a lessee's)."""
        row: Any = await self.pool.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'settled') AS completed,"
            " coalesce(avg(amount_minor) FILTER (WHERE state <> 'cancelled'), 0) AS usual,"
            " coalesce(sum(amount_minor) FILTER (WHERE pledge_application IS NOT NULL), 0)"
            "   AS open"
            " FROM orders WHERE subcontractor_id = $1 AND currency = $2",
            subcontractor_id,
            currency,
        )
        return orders_pb2.OrderFacts(
            found=bool(subcontractor_id),
            completed_orders=row["completed"],
            usual_amount_minor=int(row["usual"]),
            open_exposure_minor=int(row["open"]),
        )

    async def facts(self, order_id: str) -> orders_pb2.OrderFacts:
        try:
            order = await self.store.get(order_id)
        except NotFound:
            return orders_pb2.OrderFacts(found=False)
        row: Any = await self.pool.fetchrow(
            "SELECT (SELECT rating FROM buyers WHERE buyer_id = $2) AS rating,"
            " count(*) FILTER (WHERE state = 'settled') AS completed,"
            " coalesce(avg(amount_minor) FILTER (WHERE order_id <> $3 AND state <> 'cancelled'), 0)"
            "   AS usual,"
            " coalesce(sum(amount_minor) FILTER (WHERE order_id <> $3"
            "   AND pledge_application IS NOT NULL), 0) AS open,"
            " coalesce(sum(amount_minor) FILTER (WHERE order_id <> $3"
            "   AND pledge_application IS NOT NULL AND buyer_id = $2), 0) AS open_on_buyer"
            " FROM orders WHERE subcontractor_id = $1 AND currency = $4",
            order.subcontractor_id,
            order.buyer_id,
            order.order_id,
            order.amount.currency,
        )
        return orders_pb2.OrderFacts(
            found=True,
            order=to_proto(order),
            buyer_rating=row["rating"],
            completed_orders=row["completed"],
            usual_amount_minor=int(row["usual"]),
            open_exposure_minor=int(row["open"]),
            open_exposure_on_buyer_minor=int(row["open_on_buyer"]),
        )
