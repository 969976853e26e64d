"""A replica's settings: its bank, its own database and its listen address."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from services.contracts.permissions import DEFAULT_BANKS
from services.runtime.errors import ConfigError

__all__ = ["EXAMPLE_BANKS", "ReplicaSettings", "replica_addr"]

#: The example banks `scf up` starts a replica for.
#: The example banks: the platform's default banks (SCF_BANKS).
EXAMPLE_BANKS: tuple[str, ...] = DEFAULT_BANKS
_DEFAULT_PORT = {bank: 7411 + i for i, bank in enumerate(EXAMPLE_BANKS)}


@dataclass(frozen=True)
class ReplicaSettings:
    bank: str
    #: ``SCF_REPLICA_<BANK>_ADDR``: the replica's gRPC address (audit API, status).
    grpc_addr: str
    #: ``SCF_REPLICA_<BANK>_DATABASE_URL``: the bank's own database.
    database_url: str
    #: The replica's certificate (``replica-<bank>``), a party of role auditor.
    party_id: str
    #: ``SCF_REPLICA_<BANK>_LISTEN_ADDR``: what the server binds, when not grpc_addr.
    listen_addr: str = ""
    #: ``SCF_REPLICA_CROSS_EXAM_PERIOD_S``: the journal's audit API is compared with
    #: the whole verified copy once in this period (and sampled every second).
    cross_exam_period_s: float = 300.0
    #: ``SCF_REPLICA_<BANK>_METRICS_ADDR``: /metrics, /healthz and /readyz (off if empty).
    metrics_addr: str = ""
    #: ``SCF_REPLICA_<BANK>_EXPLORER_ADDR``: the bank's auditors' web explorer (off if empty).
    explorer_addr: str = ""

    @classmethod
    def from_env(
        cls, bank: str, platform_database_url: str, env: Mapping[str, str] | None = None
    ) -> ReplicaSettings:
        env = os.environ if env is None else env
        if not bank.replace("-", "").isalnum():
            raise ConfigError("--bank", f"must be letters, digits and '-', got {bank!r}")
        key = bank.upper().replace("-", "_")
        addr = replica_addr(bank, env)
        url = env.get(f"SCF_REPLICA_{key}_DATABASE_URL") or database_beside(
            platform_database_url, f"scf_replica_{key.lower()}"
        )
        if not url:
            raise ConfigError(f"SCF_REPLICA_{key}_DATABASE_URL", "not set, and no SCF_DATABASE_URL")
        return cls(
            bank=bank, grpc_addr=addr, database_url=url, party_id=f"replica-{bank}",
            listen_addr=env.get(f"SCF_REPLICA_{key}_LISTEN_ADDR", ""),
            cross_exam_period_s=_seconds(env, "SCF_REPLICA_CROSS_EXAM_PERIOD_S", 300.0),
            metrics_addr=env.get(f"SCF_REPLICA_{key}_METRICS_ADDR", ""),
            explorer_addr=env.get(f"SCF_REPLICA_{key}_EXPLORER_ADDR", ""),
        )  # fmt: skip


def replica_addr(bank: str, env: Mapping[str, str] | None = None) -> str:
    """Where ``bank``'s replica answers: ``SCF_REPLICA_<BANK>_ADDR``, or an example
    bank's default port on loopback."""
    env = os.environ if env is None else env
    key = bank.upper().replace("-", "_")
    addr = env.get(f"SCF_REPLICA_{key}_ADDR") or (
        f"127.0.0.1:{_DEFAULT_PORT[bank]}" if bank in _DEFAULT_PORT else ""
    )
    if not addr:
        raise ConfigError(f"SCF_REPLICA_{key}_ADDR", f"not set for bank {bank}")
    return addr


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"a number of seconds, got {raw!r}") from None
    if not 1 <= value <= 86_400:
        raise ConfigError(name, "1 to 86400 seconds")
    return value


def database_beside(dsn: str, database: str) -> str:
    """The same server as ``dsn``, another database (for one-machine setups)."""
    if not dsn:
        return ""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))
