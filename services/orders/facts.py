"""Facts about an order and its subcontractor, for lending and scoring.

Signed request-reply on ``<prefix>.orders.facts`` (scf.bus.v1.OrderFacts): a
financing relies on these facts, so they are answered signed by orders.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from services.contracts.subjects import Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.orders.convert import to_proto
from services.orders.storage import OrderStore
from services.runtime.errors import NotFound
from services.runtime.messaging import Messenger

__all__ = ["FactsResponder"]

log = logging.getLogger(__name__)


class FactsResponder:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool
        self.store = OrderStore(pool)

    async def subscribe(self, messenger: Messenger, subjects: Subjects) -> None:
        await messenger.serve(
            subjects.order_facts, bus_pb2.OrderFactsQuery, bus_pb2.OrderFacts, self.answer,
            senders=("lending", "scoring"), queue="orders",
        )  # fmt: skip

    async def answer(self, query: bus_pb2.OrderFactsQuery, signer: str) -> bus_pb2.OrderFacts:
        if query.order_id:
            return await self.facts(query.order_id)
        return await self.party_facts(query.subcontractor_id, query.currency)

    async def party_facts(self, subcontractor_id: str, currency: str) -> bus_pb2.OrderFacts:
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
        return bus_pb2.OrderFacts(
            found=bool(subcontractor_id),
            completed_orders=row["completed"],
            usual_amount_minor=int(row["usual"]),
            open_exposure_minor=int(row["open"]),
        )

    async def facts(self, order_id: str) -> bus_pb2.OrderFacts:
        try:
            order = await self.store.get(order_id)
        except NotFound:
            return bus_pb2.OrderFacts(found=False)
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
        return bus_pb2.OrderFacts(
            found=True,
            order=to_proto(order),
            buyer_rating=row["rating"],
            completed_orders=row["completed"],
            usual_amount_minor=int(row["usual"]),
            open_exposure_minor=int(row["open"]),
            open_exposure_on_buyer_minor=int(row["open_on_buyer"]),
        )
