"""A call made on behalf of a gRPC call waits no longer than its caller does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from services.gen.scf.orders.v1 import orders_pb2
from services.runtime.certs import ensure_certificates
from services.runtime.deadlines import CALL_DEADLINE, within_call
from services.runtime.errors import DeadlineExceeded
from services.runtime.grpcserver import _guarded


def test_outside_a_call_the_own_bound_holds() -> None:
    assert within_call(10.0) == 10.0


def test_inside_a_call_the_callers_time_left_bounds_it() -> None:
    token = CALL_DEADLINE.set(time.monotonic() + 2.0)
    try:
        assert 1.5 < within_call(10.0) <= 2.0
        assert within_call(0.5) == 0.5  # a shorter own bound stays
    finally:
        CALL_DEADLINE.reset(token)


def test_a_caller_that_gave_up_is_not_asked_for() -> None:
    token = CALL_DEADLINE.set(time.monotonic() - 0.1)
    try:
        with pytest.raises(DeadlineExceeded):
            within_call(10.0)
    finally:
        CALL_DEADLINE.reset(token)


class _Context:
    """What the interceptor reads of a call: its peer's certificate and time left."""

    def __init__(self, pem: bytes, left: float | None) -> None:
        self._pem, self._left = pem, left

    def auth_context(self) -> dict[str, Any]:
        return {"x509_pem_cert": [self._pem]}

    def time_remaining(self) -> float | None:
        return self._left

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


async def test_every_call_notes_its_callers_deadline_for_its_duration(tmp_path: Path) -> None:
    ensure_certificates(tmp_path)
    pem = (tmp_path / "parties" / "acme-builders.pem").read_bytes()
    method, request = "/scf.orders.v1.OrdersService/GetOrder", orders_pb2.GetOrderRequest()
    async with _guarded("orders", method, request, _Context(pem, 3.0)):
        assert 2.5 < within_call(10.0) <= 3.0
    assert CALL_DEADLINE.get() is None
    async with _guarded("orders", method, request, _Context(pem, None)):
        assert within_call(10.0) == 10.0
