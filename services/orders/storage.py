"""The orders schema."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from services.orders.domain import LineItem, Order, OrderDraft, Pledge, State
from services.runtime.errors import NotFound
from services.runtime.money import Money

__all__ = ["OrderStore"]

_COLUMNS = (
    "order_id, subcontractor_id, buyer_id, currency, amount_minor, issue_date, due_date,"
    " line_items, contract_sha256, reference, state, pledge_application, pledge_bank,"
    " pledged_micros, dispute_reason, created_micros, updated_micros, version"
)


def _order(row: Any) -> Order:
    currency = row["currency"]
    pledge = None
    if row["pledge_application"] is not None:
        pledge = Pledge(row["pledge_application"], row["pledge_bank"], row["pledged_micros"])
    return Order(
        order_id=row["order_id"],
        subcontractor_id=row["subcontractor_id"],
        buyer_id=row["buyer_id"],
        amount=Money(currency, row["amount_minor"]),
        issue_date=row["issue_date"],
        due_date=row["due_date"],
        line_items=tuple(
            LineItem(i["description"], i["quantity"], Money(currency, i["unit_price_minor"]))
            for i in row["line_items"]
        ),
        contract_sha256=bytes(row["contract_sha256"]),
        reference=row["reference"],
        state=State(row["state"]),
        pledge=pledge,
        dispute_reason=row["dispute_reason"],
        created_micros=row["created_micros"],
        updated_micros=row["updated_micros"],
        version=row["version"],
    )


class OrderStore:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool

    async def buyers(self) -> list[tuple[str, str, str]]:
        rows = await self.pool.fetch("SELECT buyer_id, name, rating FROM buyers ORDER BY buyer_id")
        return [(r["buyer_id"], r["name"], r["rating"]) for r in rows]

    @staticmethod
    async def insert(conn: Any, order_id: str, draft: OrderDraft, now: int) -> Order:
        items = [
            {
                "description": i.description,
                "quantity": i.quantity,
                "unit_price_minor": i.unit_price.minor,
            }
            for i in draft.line_items
        ]
        row = await conn.fetchrow(
            f"INSERT INTO orders ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
            " 'registered', NULL, NULL, NULL, '', $11, $11, 1) RETURNING *",
            order_id, draft.subcontractor_id, draft.buyer_id, draft.amount.currency,
            draft.amount.minor, draft.issue_date, draft.due_date, items, draft.contract_sha256,
            draft.reference, now,
        )  # fmt: skip
        return _order(row)

    @staticmethod
    async def lock(conn: Any, order_id: str) -> Order:
        """The order, locked until the transaction ends (one transition at a time)."""
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM orders WHERE order_id = $1 FOR UPDATE", order_id
        )
        if row is None:
            raise NotFound(f"no order {order_id!r}")
        return _order(row)

    @staticmethod
    async def save(conn: Any, order: Order) -> None:
        p = order.pledge
        await conn.execute(
            "UPDATE orders SET state = $2, pledge_application = $3, pledge_bank = $4,"
            " pledged_micros = $5, dispute_reason = $6, updated_micros = $7, version = $8"
            " WHERE order_id = $1",
            order.order_id, order.state.value, p.application_id if p else None,
            p.bank if p else None, p.pledged_micros if p else None, order.dispute_reason,
            order.updated_micros, order.version,
        )  # fmt: skip

    async def get(self, order_id: str) -> Order:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM orders WHERE order_id = $1", order_id
        )
        if row is None:
            raise NotFound(f"no order {order_id!r}")
        return _order(row)

    async def page(
        self,
        party: str | None,
        states: list[str],
        due_from: dt.date | None,
        due_to: dt.date | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[Order]:
        """Newest first; ``party`` None lists every order (auditors, operators)."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE"
            " ($1::text IS NULL OR subcontractor_id = $1 OR buyer_id = $1)"
            " AND (cardinality($2::text[]) = 0 OR state = ANY($2))"
            " AND ($3::date IS NULL OR due_date >= $3) AND ($4::date IS NULL OR due_date <= $4)"
            " AND ($5::bigint IS NULL OR (created_micros, order_id) < ($5, $6))"
            " ORDER BY created_micros DESC, order_id DESC LIMIT $7",
            party, states, due_from, due_to, after[0] if after else None,
            after[1] if after else "", limit,
        )  # fmt: skip
        return [_order(r) for r in rows]
