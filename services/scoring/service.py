"""How the scoring service is assembled."""

from services.runtime.service import ServiceSpec

SPEC = ServiceSpec(name="scoring", package="services.scoring")
