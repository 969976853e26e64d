"""Servers for a benchmark: the environment's, or embedded ones in a temporary directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from services.journal import init_journal, origin_for
from services.runtime.certs import ensure_certificates
from services.runtime.config import SERVICE_NAMES, ServiceEndpoint, Settings
from services.runtime.embedded import servers_for
from services.runtime.ports import free_ports


def _settings(data: Path, nats_url: str, db_url: str) -> Settings:
    ensure_certificates(data / "certs")
    tag = f"b_{uuid.uuid4().hex[:8]}"
    # The operator's offline step, before any journal starts.
    init_journal(data / "keys", origin_for(tag), SERVICE_NAMES, time.time_ns() // 1000)
    return Settings(
        data_dir=data,
        nats_url=nats_url,
        database_url=db_url,
        nats_prefix=tag,
        certs_dir=data / "certs",
        keys_dir=data / "keys",
        log_format="json",
        mode="test",
        endpoints={
            n: ServiceEndpoint(n, f"127.0.0.1:{port}", "", f"{tag}_{n}")
            for n, port in zip(SERVICE_NAMES, free_ports(len(SERVICE_NAMES)), strict=True)
        },
    )


@contextlib.contextmanager
def bench_settings() -> Iterator[Settings]:
    """Settings with fresh schemas and stream names, on servers that are cleaned up."""
    with tempfile.TemporaryDirectory(prefix="scf-bench-") as tmp:
        data = Path(tmp)
        env_urls = (os.environ.get("SCF_NATS_URL", ""), os.environ.get("SCF_DATABASE_URL", ""))
        with servers_for(data, *env_urls, database="scf_bench") as (nats_url, db_url):
            yield _settings(data, nats_url, db_url)


@contextlib.contextmanager
def own_servers_settings() -> Iterator[Settings]:
    """Settings whose platform starts embedded servers of its own (whatever the
    environment says), so that a fault run may crash and restart them."""
    with tempfile.TemporaryDirectory(prefix="scf-faults-") as tmp:
        yield _settings(Path(tmp), "", "")
