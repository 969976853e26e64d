"""Errors a program can branch on: every refusal carries an ErrorInfo whose reason
is a stable UPPER_SNAKE code (never a Python class name) with its subject, and
UNAVAILABLE says when to retry. Through the platform's interceptor, over mTLS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.runtime.errors import FailedPrecondition, NotFound
from tests.support import bare_server

FAILURES: dict[str, Callable[[], BaseException]] = {
    "Away": lambda: ConnectionRefusedError("scoring is down"),
    "Gone": lambda: NotFound("no order ORD-9", subject="order/ORD-9"),
    "Stale": lambda: FailedPrecondition(
        "order ORD-1 is settled", reason="WRONG_STATE", subject="order/ORD-1"
    ),
    "Plain": lambda: FailedPrecondition("not now"),
}


def _failing() -> grpc.GenericRpcHandler:
    def method(name: str) -> Any:
        async def fail(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
            raise FAILURES[name]()

        return grpc.unary_unary_rpc_method_handler(
            fail, empty_pb2.Empty.FromString, empty_pb2.Empty.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        "scf.test.v1.Failing", {name: method(name) for name in FAILURES}
    )


def _details(exc: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo,
            error_details_pb2.PreconditionFailure,
        ):  # fmt: skip
            message = kind()
            if detail.Unpack(message):
                found[kind.__name__] = message
    return found


async def test_every_refusal_has_a_stable_reason_and_unavailable_says_when_to_retry(
    certs_dir: Path,
) -> None:
    async with bare_server(certs_dir, "errors-test", _failing()) as (_, channel):
        got = {}
        for name in FAILURES:
            call = channel.unary_unary(
                f"/scf.test.v1.Failing/{name}",
                request_serializer=empty_pb2.Empty.SerializeToString,
                response_deserializer=empty_pb2.Empty.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(empty_pb2.Empty(), timeout=5)
            got[name] = (info.value.code(), _details(info.value))
    code, away = got["Away"]
    assert code == grpc.StatusCode.UNAVAILABLE
    assert away["RetryInfo"].retry_delay.seconds == 1
    assert away["ErrorInfo"].reason == "DEPENDENCY_UNAVAILABLE"
    code, gone = got["Gone"]
    assert code == grpc.StatusCode.NOT_FOUND
    assert gone["ErrorInfo"].reason == "NOT_FOUND"  # it was the class name, NotFound
    assert dict(gone["ErrorInfo"].metadata) == {"subject": "order/ORD-9"}
    code, stale = got["Stale"]
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert stale["ErrorInfo"].reason == "WRONG_STATE"
    (violation,) = stale["PreconditionFailure"].violations
    assert (violation.type, violation.subject) == ("WRONG_STATE", "order/ORD-1")
    assert got["Plain"][1]["ErrorInfo"].reason == "FAILED_PRECONDITION"


def test_what_is_away_for_a_moment_is_retried_never_set_aside() -> None:
    """A consumer leaves a message to come again on these; it sets aside for good
    only what would fail alike every time (a fault run found a disbursement set
    aside because PostgreSQL's socket file was missing while it restarted)."""
    import asyncpg
    import nats.errors

    from services.runtime.errors import RETRY_LATER, Unavailable

    for away in (
        FileNotFoundError(2, "No such file or directory"),  # the socket, mid-restart
        ConnectionRefusedError(),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError(),
        nats.errors.NoRespondersError(),
        Unavailable("the journal's key set is out of reach"),
    ):
        assert isinstance(away, RETRY_LATER), away
    assert not isinstance(ValueError("a malformed event"), RETRY_LATER)
