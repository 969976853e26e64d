"""How the orders service is assembled."""

from services.runtime.service import ServiceSpec

SPEC = ServiceSpec(name="orders", package="services.orders")
