"""One financing is one trace across every service it touches.

The platform runs as its own processes, each exporting spans over OTLP/gRPC to
a collector this test serves; a real financing runs over mTLS gRPC; the trace
of the call that asked for it must hold spans of lending (the call and the
process manager's steps), orders (the pledge), scoring (the decision),
repayment (the loan opened from lending's event) and the journal (the entries
each of them wrote), each in its place under its parent.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from services.bench.load import FlowLoad
from services.runtime.config import Settings
from services.runtime.platform import Platform
from services.runtime.ports import free_ports
from services.runtime.tracing import context_from, span

pytestmark = pytest.mark.integration

REQUEST = "scf.lending.v1.LendingService/RequestFinancing"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP trace receiver: every span it is sent, with the service that sent it."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []
        self.arrived = asyncio.Event()

    async def Export(self, request: Any, context: Any) -> Any:
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                self.spans.extend((attrs["service.name"], s) for s in scope.spans)
        self.arrived.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace_of(self, name: str) -> bytes | None:
        return next((s.trace_id for _, s in self.spans if s.name == name), None)

    def services_in(self, trace_id: bytes) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = defaultdict(list)
        for service, s in self.spans:
            if s.trace_id == trace_id:
                found[service].append(s)
        return found

    async def until(self, holds: Any, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not holds():
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            raise AssertionError(f"{what}: not in {timeout} s") from None


EVERY = {"scf-lending", "scf-orders", "scf-scoring", "scf-repayment", "scf-journal"}
#: The process manager's steps: pledge, score, disburse.
STEPS = {"lending.step requested", "lending.step pledged", "lending.step effective"}


@pytest.mark.long  # the platform's own processes, once, in make test
async def test_one_financing_is_one_trace_through_every_service(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = free_ports(1)[0]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    platform = Platform(settings)
    try:
        await platform.start()
        load = FlowLoad(settings, 1, 1, 120)
        await load.run()
        assert load.errors == [] and len(load.disbursed) == 1, load.errors

        def whole() -> bool:
            trace_id = collector.trace_of(REQUEST)
            if trace_id is None:
                return False
            found = collector.services_in(trace_id)
            journaled = {
                a.value.string_value
                for s in found["scf-journal"]
                for a in s.attributes
                if a.key == "scf.journal.producer"
            }
            names = {service: {s.name for s in spans} for service, spans in found.items()}
            ids = {s.span_id for spans in found.values() for s in spans}
            # Each process exports on its own time: wait for every span named
            # below and for every parent of every span that has arrived.
            return (
                set(found) == EVERY
                and journaled >= {"lending", "orders", "scoring", "repayment"}
                and names["scf-lending"] >= STEPS
                and "orders.pledge.request" in names["scf-orders"]
                and "scoring.score.request" in names["scf-scoring"]
                and "lending.disbursed.event" in names["scf-repayment"]
                and all(s.parent_span_id in ids for spans in found.values() for s in spans
                        if s.parent_span_id)
            )  # fmt: skip

        await collector.until(whole, 60, "spans of every service in the financing's trace")
    finally:
        platform.stop()
        await server.stop(None)

    trace_id = collector.trace_of(REQUEST)
    assert trace_id is not None
    found = collector.services_in(trace_id)
    by_id = {s.span_id: (service, s) for service, spans in found.items() for s in spans}
    names = {service: {s.name for s in spans} for service, spans in found.items()}
    assert names["scf-lending"] >= STEPS, names
    assert "orders.pledge.request" in names["scf-orders"], names
    assert "scoring.score.request" in names["scf-scoring"], names
    assert "lending.disbursed.event" in names["scf-repayment"], names
    # Every span but the call's own has its parent in the same trace: nothing is
    # orphaned, and the call is the root (the client sent no trace of its own).
    roots = [s for _, s in by_id.values() if not s.parent_span_id]
    assert [s.name for s in roots] == [REQUEST]
    assert all(s.parent_span_id in by_id for _, s in by_id.values() if s.parent_span_id)
    # Orders' pledge is answered under the step that asked for it, across NATS.
    (pledge,) = [s for s in found["scf-orders"] if s.name == "orders.pledge.request"]
    asked_by = by_id[pledge.parent_span_id]
    assert asked_by[0] == "scf-lending"
    assert by_id[asked_by[1].parent_span_id][1].name == "lending.step requested"


def test_a_trace_context_is_carried_without_an_exporter() -> None:
    """With nothing configured no span is recorded, yet a caller's trace context
    passes through: a downstream call joins the caller's trace."""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with span("work", parent=parent) as current:
        assert not current.is_recording()
        carried = current.get_span_context()
    assert format(carried.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert context_from("not a traceparent") is None
    assert context_from({}) is None


def test_a_log_line_names_the_trace_it_was_written_in() -> None:
    import json
    import logging

    from services.runtime.logs import JsonFormatter

    logger = logging.getLogger("scf.test")
    with span("work", parent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        inside = logger.makeRecord("scf.test", logging.INFO, __file__, 1, "in", (), None)
    outside = logger.makeRecord("scf.test", logging.INFO, __file__, 1, "out", (), None)
    assert json.loads(JsonFormatter("orders").format(inside))["trace_id"] == (
        "0af7651916cd43dd8448eb211c80319c"
    )
    assert "trace_id" not in json.loads(JsonFormatter("orders").format(outside))
