"""Orders: the state machine and the rules, in one place. Pure: no I/O.

::

    REGISTERED --confirm--> CONFIRMED --deliver--> DELIVERED --accept--> ACCEPTED
        |  \\                  |  \\                   |                     |
        |   dispute            |   dispute             dispute               |
        v      \\               v      \\                  \\                  |
    CANCELLED   `--------> DISPUTED <-'                 `-> DISPUTED         |
                               |                                             |
                            cancel -> CANCELLED                              |
    (pledged) CONFIRMED / DELIVERED / ACCEPTED --settle--> SETTLED <---------'

*Pledged* is not a state of its own but a pledge held on a CONFIRMED,
DELIVERED or ACCEPTED order: at most one, for one financing application at
one bank. A pledged order cannot be cancelled; settling releases the pledge.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from dataclasses import dataclass

from services.contracts.orders import PLEDGEABLE_STATES
from services.runtime.dates import parse_date
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.runtime.identity import Identity, Role
from services.runtime.money import Money, parse_money

__all__ = [
    "Action",
    "LineItem",
    "Order",
    "OrderDraft",
    "Pledge",
    "State",
    "apply",
    "validate_draft",
]


class State(enum.StrEnum):
    REGISTERED = "registered"
    CONFIRMED = "confirmed"
    DISPUTED = "disputed"
    DELIVERED = "delivered"
    ACCEPTED = "accepted"
    SETTLED = "settled"
    CANCELLED = "cancelled"


class Action(enum.StrEnum):
    CONFIRM = "confirmed"
    DISPUTE = "disputed"
    DELIVER = "delivered"
    ACCEPT = "accepted"
    CANCEL = "cancelled"
    PLEDGE = "pledged"
    RELEASE = "released"
    SETTLE = "settled"


#: action -> (states it may start from, whose action it is: "buyer", "subcontractor", "service")
RULES: dict[Action, tuple[frozenset[State], str]] = {
    Action.CONFIRM: (frozenset({State.REGISTERED}), "buyer"),
    Action.DISPUTE: (frozenset({State.REGISTERED, State.CONFIRMED, State.DELIVERED}), "buyer"),
    Action.DELIVER: (frozenset({State.CONFIRMED}), "subcontractor"),
    Action.ACCEPT: (frozenset({State.DELIVERED}), "buyer"),
    Action.CANCEL: (
        frozenset({State.REGISTERED, State.CONFIRMED, State.DISPUTED}),
        "subcontractor",
    ),
    Action.PLEDGE: (frozenset(State(s) for s in PLEDGEABLE_STATES), "service"),
    Action.RELEASE: (frozenset(State) - {State.SETTLED, State.CANCELLED}, "service"),
    Action.SETTLE: (frozenset({State.CONFIRMED, State.DELIVERED, State.ACCEPTED}), "service"),
}
#: The state an action leads to (None: the state does not change).
NEXT: dict[Action, State | None] = {
    Action.CONFIRM: State.CONFIRMED,
    Action.DISPUTE: State.DISPUTED,
    Action.DELIVER: State.DELIVERED,
    Action.ACCEPT: State.ACCEPTED,
    Action.CANCEL: State.CANCELLED,
    Action.PLEDGE: None,
    Action.RELEASE: None,
    Action.SETTLE: State.SETTLED,
}


@dataclass(frozen=True)
class LineItem:
    description: str
    quantity: int
    unit_price: Money

    @property
    def total(self) -> int:
        return self.quantity * self.unit_price.minor


@dataclass(frozen=True)
class Pledge:
    application_id: str
    bank: str
    pledged_micros: int


@dataclass(frozen=True)
class OrderDraft:
    """A registration request, validated."""

    subcontractor_id: str
    buyer_id: str
    amount: Money
    issue_date: dt.date
    due_date: dt.date
    line_items: tuple[LineItem, ...]
    contract_sha256: bytes
    reference: str


@dataclass(frozen=True)
class Order:
    order_id: str
    subcontractor_id: str
    buyer_id: str
    amount: Money
    issue_date: dt.date
    due_date: dt.date
    line_items: tuple[LineItem, ...]
    contract_sha256: bytes
    reference: str
    state: State
    pledge: Pledge | None
    dispute_reason: str
    created_micros: int
    updated_micros: int
    version: int

    def is_party(self, who: Identity) -> bool:
        return who.party_id in (self.subcontractor_id, self.buyer_id)

    def can_read(self, who: Identity) -> bool:
        if who.role in (Role.AUDITOR, Role.OPERATOR, Role.SERVICE) or self.is_party(who):
            return True
        return (
            who.role is Role.UNDERWRITER
            and self.pledge is not None
            and self.pledge.bank == who.organization
        )


_REFERENCE = re.compile(r"^[\w./-]{1,64}$")


def validate_draft(
    subcontractor: Identity,
    buyer_id: str,
    amount: tuple[str, str],
    issue_date: str,
    due_date: str,
    line_items: list[tuple[str, int, str, str]],
    contract_sha256: bytes,
    reference: str,
    known_buyers: set[str],
) -> OrderDraft:
    """Every rule a registration must meet; the first one broken is reported."""
    if subcontractor.role is not Role.SUBCONTRACTOR:
        raise PermissionDenied(f"{subcontractor.party_id} is not a subcontractor")
    if not buyer_id:
        raise InvalidArgument("buyer_id", "required")
    if buyer_id == subcontractor.party_id:
        raise InvalidArgument("buyer_id", "a subcontractor cannot be its own buyer")
    if buyer_id not in known_buyers:
        raise InvalidArgument("buyer_id", f"{buyer_id!r} is not a buyer known to the platform")
    money = parse_money(amount[0], amount[1], "amount")
    issued = parse_date(issue_date, "issue_date")
    due = parse_date(due_date, "due_date")
    if due < issued:
        raise InvalidArgument("due_date", f"{due} is before the issue date {issued}")
    if not line_items:
        raise InvalidArgument("line_items", "at least one line item")
    items = []
    for i, (description, quantity, price, currency) in enumerate(line_items):
        field = f"line_items[{i}]"
        if not description or len(description) > 500:
            raise InvalidArgument(f"{field}.description", "1 to 500 characters")
        if quantity <= 0:
            raise InvalidArgument(f"{field}.quantity", "must be a positive whole number")
        unit = parse_money(price, currency, f"{field}.unit_price")
        if unit.currency != money.currency:
            raise InvalidArgument(f"{field}.unit_price.currency", f"must be {money.currency}")
        items.append(LineItem(description, quantity, unit))
    total = sum(item.total for item in items)
    if total != money.minor:
        raise InvalidArgument(
            "line_items",
            f"add up to {Money(money.currency, total)}, not the order amount {money}",
        )
    if len(contract_sha256) != 32:
        raise InvalidArgument("contract_sha256", f"must be 32 bytes, got {len(contract_sha256)}")
    if not _REFERENCE.match(reference):
        raise InvalidArgument("reference", "1 to 64 letters, digits or . _ / -")
    return OrderDraft(
        subcontractor.party_id, buyer_id, money, issued, due, tuple(items), contract_sha256,
        reference,
    )  # fmt: skip


def apply(
    order: Order,
    action: Action,
    actor: Identity,
    now_micros: int,
    *,
    reason: str = "",
    pledge: Pledge | None = None,
) -> Order:
    """The order after ``action`` by ``actor``, or the error that explains why not."""
    allowed_from, whose = RULES[action]
    if whose == "buyer" and actor.party_id != order.buyer_id:
        raise PermissionDenied(f"only the order's buyer ({order.buyer_id}) may do this")
    if whose == "subcontractor" and actor.party_id != order.subcontractor_id:
        raise PermissionDenied(f"only the order's subcontractor ({order.subcontractor_id}) may")
    if whose == "service" and actor.role is not Role.SERVICE:
        raise PermissionDenied("only the platform's services may do this")
    if order.state not in allowed_from:
        raise FailedPrecondition(
            f"order {order.order_id} is {order.state.value}; cannot be {action.value}",
            reason="WRONG_STATE", subject=f"order/{order.order_id}",
        )  # fmt: skip
    changes: dict[str, object] = {"version": order.version + 1, "updated_micros": now_micros}
    if action is Action.DISPUTE:
        if not reason.strip():
            raise InvalidArgument("reason", "say why the order is disputed")
        changes["dispute_reason"] = reason.strip()[:1000]
    if action is Action.CANCEL and order.pledge is not None:
        raise FailedPrecondition(
            f"order {order.order_id} is pledged to {order.pledge.bank}; it cannot be cancelled"
        )
    if action is Action.PLEDGE:
        assert pledge is not None
        if order.pledge is not None:
            raise FailedPrecondition(
                f"order {order.order_id} already backs application"
                f" {order.pledge.application_id} at {order.pledge.bank}",
                reason="ALREADY_PLEDGED", subject=f"order/{order.order_id}",
            )  # fmt: skip
        changes["pledge"] = pledge
    if action in (Action.RELEASE, Action.SETTLE):
        # Only the financing that holds the pledge may release it or settle it.
        assert pledge is not None
        if order.pledge is None or order.pledge.application_id != pledge.application_id:
            raise FailedPrecondition(
                f"order {order.order_id} is not pledged to application {pledge.application_id}",
                reason="NOT_PLEDGED", subject=f"order/{order.order_id}",
            )  # fmt: skip
        changes["pledge"] = None
    state = NEXT[action]
    if state is not None:
        changes["state"] = state
    return dataclasses.replace(order, **changes)  # type: ignore[arg-type]
