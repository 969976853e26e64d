"""Real servers for the whole session: embedded by default, or the ones named by
SCF_NATS_URL and SCF_DATABASE_URL."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.runtime.certs import ensure_certificates
from services.runtime.config import Settings
from services.runtime.embedded import servers_for
from tests.support import make_settings, provision_for


@dataclass(frozen=True)
class Servers:
    nats_url: str
    database_url: str


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="scf-test-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def servers(session_dir: Path) -> Iterator[Servers]:
    env_urls = (os.environ.get("SCF_NATS_URL", ""), os.environ.get("SCF_DATABASE_URL", ""))
    with servers_for(session_dir, *env_urls, database="scf_test") as (nats_url, db_url):
        yield Servers(nats_url, db_url)


@pytest.fixture(scope="session")
def certs_dir(session_dir: Path) -> Path:
    path = session_dir / "certs"
    ensure_certificates(path)
    return path


@pytest.fixture
async def settings(servers: Servers, certs_dir: Path, tmp_path: Path) -> Settings:
    """One test's settings, its streams and consumers made as the operator makes them."""
    made = make_settings(servers.nats_url, servers.database_url, certs_dir, tmp_path)
    await provision_for(made)
    return made
