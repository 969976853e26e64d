"""Orders between domain objects, protobuf messages and journal payloads."""

from __future__ import annotations

from typing import Any

from services.gen.scf.orders.v1 import orders_pb2
from services.gen.scf.types.v1 import money_pb2
from services.orders.domain import Action, Order, State

__all__ = ["STATE_TO_PROTO", "journal_payload", "to_proto"]

STATE_TO_PROTO = {
    State.REGISTERED: orders_pb2.ORDER_STATE_REGISTERED,
    State.CONFIRMED: orders_pb2.ORDER_STATE_CONFIRMED,
    State.DISPUTED: orders_pb2.ORDER_STATE_DISPUTED,
    State.DELIVERED: orders_pb2.ORDER_STATE_DELIVERED,
    State.ACCEPTED: orders_pb2.ORDER_STATE_ACCEPTED,
    State.SETTLED: orders_pb2.ORDER_STATE_SETTLED,
    State.CANCELLED: orders_pb2.ORDER_STATE_CANCELLED,
}
PROTO_TO_STATE = {v: k for k, v in STATE_TO_PROTO.items()}


def money(m: Any) -> money_pb2.Money:
    return money_pb2.Money(amount=m.major(), currency=m.currency)


def to_proto(order: Order) -> orders_pb2.Order:
    out = orders_pb2.Order(
        order_id=order.order_id,
        subcontractor_id=order.subcontractor_id,
        buyer_id=order.buyer_id,
        amount=money(order.amount),
        issue_date=order.issue_date.isoformat(),
        due_date=order.due_date.isoformat(),
        line_items=[
            orders_pb2.LineItem(
                description=i.description, quantity=i.quantity, unit_price=money(i.unit_price)
            )
            for i in order.line_items
        ],
        contract_sha256=order.contract_sha256,
        reference=order.reference,
        state=STATE_TO_PROTO[order.state],
        dispute_reason=order.dispute_reason,
        created_micros=order.created_micros,
        updated_micros=order.updated_micros,
        version=order.version,
    )
    if order.pledge is not None:
        out.pledge.CopyFrom(
            orders_pb2.Pledge(
                application_id=order.pledge.application_id,
                bank=order.pledge.bank,
                pledged_micros=order.pledge.pledged_micros,
            )
        )
    return out


def journal_payload(order: Order, action: Action | None, by: str) -> dict[str, Any]:
    """What the journal records of a transition: enough to replay the order's life."""
    body: dict[str, Any] = {
        "order_id": order.order_id,
        "state": order.state.value,
        "version": order.version,
        "by": by,
    }
    if action is None:  # registration: every fact of the order
        body.update(
            subcontractor_id=order.subcontractor_id,
            buyer_id=order.buyer_id,
            amount_minor=order.amount.minor,
            currency=order.amount.currency,
            issue_date=order.issue_date.isoformat(),
            due_date=order.due_date.isoformat(),
            contract_sha256=order.contract_sha256.hex(),
            reference=order.reference,
            line_items=[
                {"description": i.description, "quantity": i.quantity,
                 "unit_price_minor": i.unit_price.minor}
                for i in order.line_items
            ],
        )  # fmt: skip
    if action is Action.DISPUTE:
        body["reason"] = order.dispute_reason
    if order.pledge is not None:
        body["pledge"] = {"application_id": order.pledge.application_id, "bank": order.pledge.bank}
    return body
