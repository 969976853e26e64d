"""What other services may rely on about an order, declared once."""

from __future__ import annotations

from services.gen.scf.orders.v1 import orders_pb2

__all__ = ["FINANCEABLE_STATES", "PLEDGEABLE_STATES"]

#: The order states in which an order may be pledged, so back a financing
#: (and be scored for one): orders' pledge rule is made from this.
PLEDGEABLE_STATES: tuple[str, ...] = ("confirmed", "delivered", "accepted")

#: The same states as the proto enum values lending and scoring read, with their names.
FINANCEABLE_STATES: dict[int, str] = {
    orders_pb2.OrderState.Value(f"ORDER_STATE_{name.upper()}"): name for name in PLEDGEABLE_STATES
}
