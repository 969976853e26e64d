"""The platform's errors, in one tree, each mapped to one gRPC status.

::

    SCFError
    ├── ConfigError            a setting is wrong (names the environment variable)
    ├── InvalidArgument        INVALID_ARGUMENT, names the offending field
    ├── FailedPrecondition     FAILED_PRECONDITION, wrong state
    ├── PermissionDenied       PERMISSION_DENIED
    ├── NotFound               NOT_FOUND
    ├── AlreadyExists          ALREADY_EXISTS
    ├── Unauthenticated        UNAUTHENTICATED, no usable client certificate
    └── Unavailable            UNAVAILABLE, another service did not answer (retry)

Services raise these from domain code; :mod:`services.runtime.grpcserver`
turns them into statuses in one place, so no handler catches broadly.
"""

from __future__ import annotations

import asyncpg
import grpc
import nats.errors

__all__ = [
    "AWAY",
    "RETRY_LATER",
    "TRANSIENT",
    "AlreadyExists",
    "ConfigError",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "SCFError",
    "Unauthenticated",
    "Unavailable",
]


class SCFError(Exception):
    """Root of every error the platform raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, reason: str = "", subject: str = "") -> None:
        super().__init__(message)
        self.message = message
        #: A stable UPPER_SNAKE reason a program may branch on ("" when the
        #: class says all there is); never parse ``message``.
        self.reason = reason
        #: What the error is about, as a journal subject ("order/ORD-1"), when known.
        self.subject = subject


class ConfigError(SCFError):
    """A setting is missing or wrong; ``setting`` names what to fix."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


class InvalidArgument(SCFError):
    """A request field is malformed; ``field`` names it."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str, *, reason: str = "", subject: str = "") -> None:
        super().__init__(f"{field}: {problem}", reason=reason, subject=subject)
        self.field = field
        self.problem = problem


class FailedPrecondition(SCFError):
    """The subject is in the wrong state for this request."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(SCFError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(SCFError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SCFError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(SCFError):
    code = grpc.StatusCode.UNAUTHENTICATED


class DataLoss(SCFError):
    """Stored data is not what was written: nothing is served from it."""

    code = grpc.StatusCode.DATA_LOSS


class DeadlineExceeded(SCFError):
    """The caller's deadline passed before what the call needed from another
    service could be asked (the caller gave up; nothing was done)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(SCFError):
    """Another service could not answer, or answered what cannot be trusted: retry."""

    code = grpc.StatusCode.UNAVAILABLE


#: Failures of what a call depends on (its database, another service over NATS)
#: rather than of the call: UNAVAILABLE, which a client retries with the same
#: idempotency key.
TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, not yet accepting
    ConnectionError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
)

#: Everything that means "what this call depends on is away right now", as a
#: server answers it: UNAVAILABLE, which the caller retries with the same
#: idempotency key (a socket file missing while PostgreSQL restarts is an
#: OSError, a pool that cannot connect in time a TimeoutError).
AWAY: tuple[type[BaseException], ...] = (*TRANSIENT, OSError, TimeoutError, nats.errors.Error)

#: What a consumer leaves unacknowledged to try again: what it depends on away
#: (PostgreSQL restarting, its socket file missing for a moment, included), or
#: another service (the journal's key set, say) out of reach. Never set aside.
RETRY_LATER: tuple[type[BaseException], ...] = (*AWAY, Unavailable)
