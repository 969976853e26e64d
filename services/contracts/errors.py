"""Typed refusals across a service boundary: an error goes out as
``scf.bus.v1.Error`` and comes back as the same class, field and reason, so
no receiver decides anything by matching English text."""

from __future__ import annotations

from services.gen.scf.bus.v1 import bus_pb2
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SCFError,
    Unavailable,
)

__all__ = ["from_wire", "to_wire"]

_BY_CODE: dict[str, type[SCFError]] = {
    "FAILED_PRECONDITION": FailedPrecondition,
    "NOT_FOUND": NotFound,
    "PERMISSION_DENIED": PermissionDenied,
    "ALREADY_EXISTS": AlreadyExists,
    "UNAVAILABLE": Unavailable,
    "INTERNAL": Unavailable,  # the other service failed; asking again may succeed
}


def to_wire(exc: SCFError) -> bus_pb2.Error:
    return bus_pb2.Error(
        code=exc.code.name,
        reason=exc.reason,
        field=getattr(exc, "field", ""),
        message=getattr(exc, "problem", exc.message),
        subject=exc.subject,
    )


def from_wire(error: bus_pb2.Error) -> SCFError:
    """The error the other service raised (an unknown code: FAILED_PRECONDITION)."""
    if error.code == "INVALID_ARGUMENT":
        return InvalidArgument(
            error.field or "request", error.message, reason=error.reason, subject=error.subject
        )
    cls = _BY_CODE.get(error.code, FailedPrecondition)
    return cls(error.message, reason=error.reason, subject=error.subject)
