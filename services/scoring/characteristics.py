"""From the platform's facts to the scorecard's inputs. Pure.

Ratios are quantized to four decimals (half-even) before binning and
recorded as strings, so a recomputation bins exactly the same values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from services.contracts.orders import FINANCEABLE_STATES
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.orders.v1 import orders_pb2
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.money import parse_money

__all__ = ["RepaymentHistory", "check_lease", "check_order", "inputs_for", "lease_inputs_for"]

_RATIO = Decimal("0.0001")


@dataclass(frozen=True)
class RepaymentHistory:
    """What repayment knows of the subcontractor's past financings."""

    repaid_on_time: int = 0
    max_days_past_due: int = 0
    defaults: int = 0


def _ratio(numerator: int, denominator: int) -> str:
    if denominator <= 0:
        return "0.0000"
    return str((Decimal(numerator) / Decimal(denominator)).quantize(_RATIO, ROUND_HALF_EVEN))


def check_order(facts: bus_pb2.OrderFacts) -> str:
    """Whether the order can be scored at all; its state's name in the scorecard."""
    if not facts.found:
        raise NotFound("scoring cannot find the order")
    state = FINANCEABLE_STATES.get(facts.order.state)
    if state is None:
        name = orders_pb2.OrderState.Name(facts.order.state).removeprefix("ORDER_STATE_").lower()
        raise FailedPrecondition(
            f"order {facts.order.order_id} is {name}; only a confirmed order is scored"
        )
    return state


def inputs_for(
    facts: bus_pb2.OrderFacts, history: RepaymentHistory, today: dt.date
) -> tuple[dict[str, str], int]:
    """The characteristic values for an order, and its amount in minor units."""
    state = check_order(facts)
    order = facts.order
    amount = parse_money(order.amount.amount, order.amount.currency, "order.amount").minor
    usual = facts.usual_amount_minor or amount  # no other orders yet: this one is the usual
    exposure = facts.open_exposure_minor + amount
    tenor = max(0, (dt.date.fromisoformat(order.due_date) - today).days)
    inputs = {
        "buyer_rating": facts.buyer_rating,
        "order_state": state,
        "completed_orders": str(facts.completed_orders),
        "repaid_on_time": str(history.repaid_on_time),
        "max_days_past_due": str(history.max_days_past_due),
        "defaults": str(history.defaults),
        "amount_to_usual": _ratio(amount, usual),
        "open_exposure_to_amount": _ratio(facts.open_exposure_minor, amount),
        "tenor_days": str(tenor),
        "buyer_concentration": _ratio(facts.open_exposure_on_buyer_minor + amount, exposure),
    }
    return inputs, amount


#: A lessee with no orders yet is scored as if the asset cost this many usual orders.
NO_HISTORY_RATIO = "100.0000"


def check_lease(lease: bus_pb2.LeaseFacts) -> None:
    """Whether the lease's terms can be scored at all."""
    price = lease.price_minor
    if price <= 0 or not 0 <= lease.down_payment_minor < price or lease.term_months <= 0:
        raise InvalidArgument("lease", "a positive price, a down payment below it, a term")


def lease_inputs_for(
    lease: bus_pb2.LeaseFacts, facts: bus_pb2.OrderFacts, history: RepaymentHistory
) -> tuple[dict[str, str], int]:
    """The lease scorecard's inputs, and the amount financed (price less down payment)."""
    check_lease(lease)
    price = lease.price_minor
    usual = facts.usual_amount_minor
    inputs = {
        "price_to_usual_order": _ratio(price, usual) if usual > 0 else NO_HISTORY_RATIO,
        "completed_orders": str(facts.completed_orders),
        "repaid_on_time": str(history.repaid_on_time),
        "max_days_past_due": str(history.max_days_past_due),
        "defaults": str(history.defaults),
        "down_payment_share": _ratio(lease.down_payment_minor, price),
        "term_months": str(lease.term_months),
        "residual_share": _ratio(lease.residual_minor, price),
    }
    return inputs, price - lease.down_payment_minor
