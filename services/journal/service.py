"""How the journal service is assembled."""

from services.runtime.service import ServiceSpec

SPEC = ServiceSpec(name="journal", package="services.journal")
