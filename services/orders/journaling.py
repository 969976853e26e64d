"""Each order transition and its journal statement, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from services.orders.convert import journal_payload
from services.orders.domain import Action, Order
from services.runtime.journal_client import Outbox


async def record(conn: Any, outbox: Outbox, order: Order, action: Action | None, by: str) -> None:
    event = "order.registered" if action is None else f"order.{action.value}"
    await outbox.add(
        conn,
        subject=f"order/{order.order_id}",
        event_type=event,
        payload=journal_payload(order, action, by),
        # One entry per version: a transition is journaled exactly once.
        idempotency_key=f"order/{order.order_id}/v{order.version}",
    )
