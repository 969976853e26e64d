"""How the repayment service is assembled."""

from services.runtime.service import ServiceSpec

SPEC = ServiceSpec(name="repayment", package="services.repayment")
