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
from services.runtime.embedded import EmbeddedNats, EmbeddedPostgres
from tests.support import make_settings


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
    nats_url = os.environ.get("SCF_NATS_URL", "")
    db_url = os.environ.get("SCF_DATABASE_URL", "")
    nats = pg = None
    if not nats_url:
        nats = EmbeddedNats(session_dir / "nats")
        nats_url = nats.start()
    if not db_url:
        pg = EmbeddedPostgres(session_dir / "pg", database="scf_test")
        db_url = pg.start()
    try:
        yield Servers(nats_url, db_url)
    finally:
        if nats is not None:
            nats.stop()
        if pg is not None:
            pg.stop()


@pytest.fixture(scope="session")
def certs_dir(session_dir: Path) -> Path:
    path = session_dir / "certs"
    ensure_certificates(path)
    return path


@pytest.fixture
def settings(servers: Servers, certs_dir: Path, tmp_path: Path) -> Settings:
    return make_settings(servers.nats_url, servers.database_url, certs_dir, tmp_path)
