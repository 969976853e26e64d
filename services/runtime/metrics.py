"""Prometheus metrics shared by every service."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from importlib.metadata import version
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, Info, make_wsgi_app

from services.runtime.errors import ConfigError

__all__ = [
    "BUILD_INFO",
    "JOURNAL_BATCH_ENTRIES",
    "JOURNAL_CHECKPOINT_SECONDS",
    "JOURNAL_COMMIT_SECONDS",
    "JOURNAL_ENTRIES",
    "JOURNAL_REFUSALS",
    "JOURNAL_TREE_SIZE",
    "LEADER",
    "NATS_REDELIVERIES",
    "OUTBOX_BACKLOG",
    "OUTBOX_OLDEST_SECONDS",
    "OUTBOX_SET_ASIDE",
    "PROBES",
    "REPLICA_ALARM",
    "REPLICA_COSIGNED_SIZE",
    "REPLICA_LAG_ENTRIES",
    "REPLICA_LAG_SECONDS",
    "REPLICA_TREE_SIZE",
    "RPC_LATENCY",
    "RPC_TOTAL",
    "serve_metrics",
]

RPC_TOTAL = Counter("scf_rpc_total", "gRPC calls served", ["service", "method", "code"])
#: Seconds, from half a millisecond to a few seconds: calls and commits alike.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
RPC_LATENCY = Histogram(
    "scf_rpc_seconds", "gRPC call latency", ["service", "method"], buckets=LATENCY_BUCKETS
)
NATS_REDELIVERIES = Counter(
    "scf_nats_redeliveries_total", "JetStream messages received more than once", ["consumer"]
)
LEADER = Gauge(
    "scf_leader", "1 while this instance leads its service's single-instance loops", ["role"]
)
OUTBOX_BACKLOG = Gauge("scf_outbox_backlog", "outbox rows not yet journaled", ["service"])
OUTBOX_SET_ASIDE = Counter(
    "scf_outbox_set_aside_total",
    "statements the relay set aside because no NATS message can carry them",
    ["service"],
)

BUILD_INFO = Info("scf_build", "the running platform's version")
BUILD_INFO.info({"version": version("scf")})

REPLICA_TREE_SIZE = Gauge("scf_replica_tree_size", "entries the replica verified", ["bank"])
REPLICA_LAG_ENTRIES = Gauge(
    "scf_replica_lag_entries", "entries the journal has that the replica has not", ["bank"]
)
REPLICA_LAG_SECONDS = Gauge(
    "scf_replica_lag_seconds", "how long the replica has been behind the journal", ["bank"]
)
REPLICA_COSIGNED_SIZE = Gauge(
    "scf_replica_cosigned_size", "the largest checkpoint the bank cosigned", ["bank"]
)
REPLICA_ALARM = Gauge(
    "scf_replica_alarm",
    "1 while an alarm stands (verification, fork or cross-examination), by kind",
    ["bank", "kind"],
)

JOURNAL_ENTRIES = Counter("scf_journal_entries_total", "entries the journal sequenced")
JOURNAL_REFUSALS = Counter(
    "scf_journal_refusals_total", "submissions the journal refused, by producer", ["producer"]
)
JOURNAL_COMMIT_SECONDS = Histogram(
    "scf_journal_commit_seconds",
    "time to store one round of entries (and a checkpoint when due)",
    buckets=LATENCY_BUCKETS,
)
JOURNAL_BATCH_ENTRIES = Histogram(
    "scf_journal_batch_entries",
    "entries stored in one round",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
JOURNAL_TREE_SIZE = Gauge("scf_journal_tree_size", "entries in the journal's tree")
JOURNAL_CHECKPOINT_SECONDS = Gauge(
    "scf_journal_checkpoint_timestamp_seconds",
    "when the latest checkpoint was signed (its age is time() minus this)",
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "scf_outbox_oldest_pending_seconds",
    "age of the oldest statement the journal has not confirmed yet (0 when none)",
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


class Probes:
    """What ``/healthz`` and ``/readyz`` answer. They are for orchestrators, whose
    probes cannot present a client certificate, so they say nothing but whether
    the process answers and whether its service is SERVING."""

    def __init__(self) -> None:
        self.ready: Callable[[], bool] = lambda: False


PROBES = Probes()


def _app(metrics: Any) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok = path == "/healthz" or PROBES.ready()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
            )
            return [b"ok\n" if ok else b"not ready\n"]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a probe every few seconds is not news


def serve_metrics(addr: str) -> int:
    """Expose /metrics, /healthz and /readyz on ``host:port`` (an empty address
    disables them); returns the port bound."""
    if not addr:
        return 0
    host, _, port = addr.rpartition(":")
    try:
        server = make_server(
            host, int(port), _app(make_wsgi_app()), server_class=_Server, handler_class=_Quiet
        )
    except OSError as exc:
        raise ConfigError(
            "SCF_<SERVICE>_METRICS_ADDR", f"cannot listen on {addr}: {exc.strerror}"
        ) from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return int(server.server_port)
