"""How the lending service is assembled."""

from services.runtime.service import ServiceSpec

SPEC = ServiceSpec(name="lending", package="services.lending")
