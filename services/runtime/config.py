"""Configuration from the environment, read once into a frozen dataclass.

Every setting has one environment variable; error messages name it so an
operator knows what to fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.contracts.permissions import DEFAULT_BANKS
from services.runtime.errors import ConfigError

__all__ = ["SERVICE_NAMES", "ServiceEndpoint", "Settings"]

#: Every service of the platform, in start-up order (the journal first).
SERVICE_NAMES: tuple[str, ...] = ("journal", "orders", "scoring", "lending", "repayment")

# Default gRPC and metrics ports; each can be overridden per service.
_DEFAULT_GRPC_PORT = {name: 7401 + i for i, name in enumerate(SERVICE_NAMES)}
_DEFAULT_METRICS_PORT = {name: 9401 + i for i, name in enumerate(SERVICE_NAMES)}


@dataclass(frozen=True)
class ServiceEndpoint:
    """Where one service listens."""

    name: str
    #: host:port of the gRPC server (``SCF_<NAME>_ADDR``).
    grpc_addr: str
    #: host:port of the Prometheus endpoint (``SCF_<NAME>_METRICS_ADDR``); empty disables it.
    metrics_addr: str
    #: PostgreSQL schema the service owns (``SCF_<NAME>_SCHEMA``).
    schema: str
    #: host:port the gRPC server binds (``SCF_<NAME>_LISTEN_ADDR``), when it differs from
    #: where others reach it (a container behind a Kubernetes Service); empty: grpc_addr.
    listen_addr: str = ""
    #: host:port of the auditors' web explorer (``SCF_<NAME>_EXPLORER_ADDR``; the
    #: journal only); empty disables it.
    explorer_addr: str = ""

    @property
    def bind_addr(self) -> str:
        return self.listen_addr or self.grpc_addr


@dataclass(frozen=True)
class Settings:
    """The platform's settings. Build with :meth:`from_env`."""

    #: Root of everything kept on disk: embedded servers, keys, certificates (``SCF_DATA_DIR``).
    data_dir: Path
    #: NATS server URL (``SCF_NATS_URL``); empty means "start an embedded nats-server".
    nats_url: str
    #: PostgreSQL DSN (``SCF_DATABASE_URL``); empty means "start an embedded PostgreSQL".
    database_url: str
    #: Prefix of every stream name and subject (``SCF_NATS_PREFIX``), so tests can share a server.
    nats_prefix: str
    #: Directory holding the CA and party certificates (``SCF_CERTS_DIR``).
    certs_dir: Path
    #: Directory holding each service's Ed25519 signing key (``SCF_KEYS_DIR``).
    keys_dir: Path
    #: "json", "text" or "auto" (JSON when stderr is not a terminal) (``SCF_LOG_FORMAT``).
    log_format: str
    #: "production", "demo" or "test" (``SCF_MODE``): only demo and test may move the clock.
    mode: str
    endpoints: Mapping[str, ServiceEndpoint] = field(default_factory=dict)
    #: "debug", "info", "warning" or "error" (``SCF_LOG_LEVEL``).
    log_level: str = "info"
    #: This process's NATS user and password (``SCF_NATS_USER``, ``SCF_NATS_PASSWORD``);
    #: empty when the server asks for none.
    nats_user: str = ""
    nats_password: str = ""
    #: Copies of each JetStream stream (``SCF_STREAM_REPLICAS``): 3 on a three-node cluster.
    stream_replicas: int = 1
    #: The banks whose replicas read the journal (``SCF_BANKS``, comma-separated):
    #: each has its own NATS user and consumer.
    banks: tuple[str, ...] = DEFAULT_BANKS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("SCF_DATA_DIR", ".scf-data")).expanduser().absolute()
        prefix = env.get("SCF_NATS_PREFIX", "scf")
        if not prefix.replace("_", "").isalnum():
            raise ConfigError("SCF_NATS_PREFIX", f"must be letters, digits or '_', got {prefix!r}")
        log_format = env.get("SCF_LOG_FORMAT", "auto")
        if log_format not in ("auto", "json", "text"):
            raise ConfigError("SCF_LOG_FORMAT", f"must be auto, json or text, got {log_format!r}")
        log_level = env.get("SCF_LOG_LEVEL", "info").lower()
        if log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                "SCF_LOG_LEVEL", f"must be debug, info, warning or error, got {log_level!r}"
            )
        mode = env.get("SCF_MODE", "production")
        if mode not in ("production", "demo", "test"):
            raise ConfigError("SCF_MODE", f"must be production, demo or test, got {mode!r}")
        endpoints = {}
        for name in SERVICE_NAMES:
            upper = name.upper()
            grpc_addr = env.get(f"SCF_{upper}_ADDR", f"127.0.0.1:{_DEFAULT_GRPC_PORT[name]}")
            metrics_addr = env.get(
                f"SCF_{upper}_METRICS_ADDR", f"127.0.0.1:{_DEFAULT_METRICS_PORT[name]}"
            )
            _check_addr(f"SCF_{upper}_ADDR", grpc_addr)
            if metrics_addr:
                _check_addr(f"SCF_{upper}_METRICS_ADDR", metrics_addr)
            schema = env.get(f"SCF_{upper}_SCHEMA", name)
            if not schema.replace("_", "").isalnum():
                raise ConfigError(f"SCF_{upper}_SCHEMA", f"must be an identifier, got {schema!r}")
            listen_addr = env.get(f"SCF_{upper}_LISTEN_ADDR", "")
            if listen_addr:
                _check_addr(f"SCF_{upper}_LISTEN_ADDR", listen_addr)
            explorer_addr = env.get(f"SCF_{upper}_EXPLORER_ADDR", "") if name == "journal" else ""
            if explorer_addr:
                _check_addr(f"SCF_{upper}_EXPLORER_ADDR", explorer_addr)
            endpoints[name] = ServiceEndpoint(
                name, grpc_addr, metrics_addr, schema, listen_addr, explorer_addr
            )
        return cls(
            data_dir=data_dir,
            nats_url=env.get("SCF_NATS_URL", ""),
            database_url=env.get("SCF_DATABASE_URL", ""),
            nats_prefix=prefix,
            certs_dir=Path(env.get("SCF_CERTS_DIR", str(data_dir / "certs"))).absolute(),
            keys_dir=Path(env.get("SCF_KEYS_DIR", str(data_dir / "keys"))).absolute(),
            log_format=log_format,
            log_level=log_level,
            mode=mode,
            endpoints=endpoints,
            stream_replicas=_stream_replicas(env.get("SCF_STREAM_REPLICAS", "1")),
            nats_user=env.get("SCF_NATS_USER", ""),
            nats_password=env.get("SCF_NATS_PASSWORD", ""),
            banks=_banks(env.get("SCF_BANKS", ",".join(DEFAULT_BANKS))),
        )

    def endpoint(self, service: str) -> ServiceEndpoint:
        try:
            return self.endpoints[service]
        except KeyError:
            raise ConfigError("service", f"unknown service {service!r}") from None

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env = {
            "SCF_DATA_DIR": str(self.data_dir),
            "SCF_NATS_URL": self.nats_url,
            "SCF_DATABASE_URL": self.database_url,
            "SCF_NATS_PREFIX": self.nats_prefix,
            "SCF_CERTS_DIR": str(self.certs_dir),
            "SCF_KEYS_DIR": str(self.keys_dir),
            "SCF_LOG_FORMAT": self.log_format,
            "SCF_LOG_LEVEL": self.log_level,
            "SCF_MODE": self.mode,
            "SCF_STREAM_REPLICAS": str(self.stream_replicas),
            "SCF_NATS_USER": self.nats_user,
            "SCF_NATS_PASSWORD": self.nats_password,
            "SCF_BANKS": ",".join(self.banks),
        }
        for ep in self.endpoints.values():
            upper = ep.name.upper()
            env[f"SCF_{upper}_ADDR"] = ep.grpc_addr
            env[f"SCF_{upper}_METRICS_ADDR"] = ep.metrics_addr
            env[f"SCF_{upper}_SCHEMA"] = ep.schema
            env[f"SCF_{upper}_LISTEN_ADDR"] = ep.listen_addr
            if ep.explorer_addr:
                env[f"SCF_{upper}_EXPLORER_ADDR"] = ep.explorer_addr
        return env


def _banks(value: str) -> tuple[str, ...]:
    banks = tuple(b.strip() for b in value.split(",") if b.strip())
    for bank in banks:
        if not bank.replace("-", "").isalnum():
            raise ConfigError("SCF_BANKS", f"a bank is letters, digits and '-', got {bank!r}")
    if len(set(banks)) != len(banks):
        raise ConfigError("SCF_BANKS", f"a bank is named twice in {value!r}")
    return banks


def _stream_replicas(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 5:
        raise ConfigError("SCF_STREAM_REPLICAS", f"1 to 5 (JetStream's limit), got {value!r}")
    return int(value)


def _check_addr(setting: str, addr: str) -> None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(setting, f"must be host:port, got {addr!r}")
