"""Traces across services with OpenTelemetry: one financing, one trace.

A span for every gRPC call served and made, for every NATS request and event
a service sends and takes, for each step the lending process manager takes,
and for every statement the journal sequences. The W3C ``traceparent`` goes
where the work goes: gRPC metadata, NATS headers, the application row (the
process manager's steps continue the trace of the call that opened it), and
the outbox row (the journal's span for an entry is a child of the transition
that wrote it).

Spans are exported over OTLP/gRPC when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, with the exporter's standard
``OTEL_*`` settings; otherwise nothing is recorded or sent, and the context is
still carried, so a caller's trace passes through a service that exports none.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "TRACEPARENT",
    "SpanKind",
    "attach",
    "context_from",
    "current_traceparent",
    "detach",
    "enabled",
    "end_span",
    "inject",
    "setup_tracing",
    "shutdown_tracing",
    "span",
    "start_span",
    "trace_id",
]

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("scf")
_provider: Any = None


def setup_tracing(service: str, env: Mapping[str, str]) -> bool:
    """Export this process's spans over OTLP when the environment names an endpoint.
    Returns whether it does."""
    global _provider, _tracer
    if not (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False
    if _provider is not None:
        return True
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": f"scf-{service}", "service.namespace": "scf"})
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    _tracer = trace.get_tracer("scf")
    log.info("exporting traces over OTLP")
    return True


def shutdown_tracing() -> None:
    """Send what is buffered (at a service's orderly stop)."""
    if _provider is not None:
        _provider.shutdown()


def enabled() -> bool:
    return _provider is not None


def inject(carrier: dict[str, str]) -> dict[str, str]:
    """Add the current trace context (``traceparent``, ``tracestate``) to ``carrier``."""
    _PROPAGATOR.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str] | str | None) -> otel_context.Context | None:
    """The trace context in headers or metadata, or in one ``traceparent`` string."""
    if not carrier:
        return None
    if isinstance(carrier, str):
        carrier = {TRACEPARENT: carrier}
    ctx = _PROPAGATOR.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def current_traceparent() -> str | None:
    """The current span's ``traceparent``, to store beside work that goes on later."""
    return inject({}).get(TRACEPARENT)


def trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Mapping[str, str] | str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span around the block, current within it. ``parent``: headers or a
    ``traceparent`` from another process (otherwise the current span is the
    parent). An exception marks it failed and goes on."""
    ctx = context_from(parent) if parent is not None else None
    with _tracer.start_as_current_span(
        name, context=ctx, kind=kind, attributes=dict(attributes or {}),
        record_exception=False, set_status_on_exception=False,
    ) as current:  # fmt: skip
        try:
            yield current
        except BaseException as exc:
            if current.is_recording():
                current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Mapping[str, str] | str | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> Span:
    """A span not yet current (for a call whose end is in a ``finally``)."""
    ctx = context_from(parent) if parent is not None else None
    return _tracer.start_span(
        name, context=ctx, kind=kind, attributes=dict(attributes or {}), start_time=start_time
    )


def end_span(current: Span, code: str = "OK") -> None:
    """End a call's span with the status code it ended with."""
    if current.is_recording():
        current.set_attribute("rpc.grpc.status_code", code)
        if code != "OK":
            current.set_status(Status(StatusCode.ERROR, code))
    current.end()


def attach(current: Span) -> Token[otel_context.Context]:
    return otel_context.attach(trace.set_span_in_context(current))


def detach(token: Token[otel_context.Context]) -> None:
    # A stream closed from elsewhere ends in another context, where the token
    # cannot be reset (ValueError); that context is discarded anyway, so quietly,
    # where otel_context.detach would log the failure as an error.
    with contextlib.suppress(ValueError):
        otel_context._RUNTIME_CONTEXT.detach(token)
