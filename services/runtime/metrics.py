"""Prometheus metrics shared by every service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from services.runtime.errors import ConfigError

__all__ = [
    "NATS_REDELIVERIES",
    "OUTBOX_BACKLOG",
    "OUTBOX_SET_ASIDE",
    "RPC_LATENCY",
    "RPC_TOTAL",
    "serve_metrics",
]

RPC_TOTAL = Counter("scf_rpc_total", "gRPC calls served", ["service", "method", "code"])
RPC_LATENCY = Histogram(
    "scf_rpc_seconds",
    "gRPC call latency",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
NATS_REDELIVERIES = Counter(
    "scf_nats_redeliveries_total", "JetStream messages received more than once", ["consumer"]
)
OUTBOX_BACKLOG = Gauge("scf_outbox_backlog", "outbox rows not yet journaled", ["service"])
OUTBOX_SET_ASIDE = Counter(
    "scf_outbox_set_aside_total",
    "statements the relay set aside because no NATS message can carry them",
    ["service"],
)

JOURNAL_AUDITED = Counter(
    "scf_journal_audited_entries_total",
    "entries the journal's own check of its store re-read and found as verified",
)
JOURNAL_DAMAGED = Gauge(
    "scf_journal_store_damaged",
    "1 once the journal found its store altered (it then sequences nothing more)",
)


def serve_metrics(addr: str) -> None:
    """Expose /metrics on ``host:port``; an empty address disables it."""
    if not addr:
        return
    host, _, port = addr.rpartition(":")
    try:
        start_http_server(int(port), addr=host)
    except OSError as exc:
        raise ConfigError(
            "SCF_<SERVICE>_METRICS_ADDR", f"cannot listen on {addr}: {exc.strerror}"
        ) from None
