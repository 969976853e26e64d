"""The genesis is made offline; no running process holds or makes the root key.

The journal refuses to start without the root's public key, and an empty
journal refuses to start without a genesis the root signed for its origin;
a service refuses to start without its own key rather than make one.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from services.journal.encoding import decode_batch
from services.journal.genesis import (
    GENESIS_FILE,
    init_journal,
    load_genesis,
    load_root_public,
    make_genesis,
    origin_for,
)
from services.journal.service import SPEC
from services.orders.service import SPEC as ORDERS
from services.runtime.config import SERVICE_NAMES, Settings
from services.runtime.errors import ConfigError
from services.runtime.keys import load_or_create_signer
from tests.support import running

ORIGIN = origin_for("unit")


def test_init_makes_the_root_the_keys_and_a_genesis_once(tmp_path: Path) -> None:
    path, made = init_journal(tmp_path, ORIGIN, SERVICE_NAMES, 1_000)
    assert made and path == tmp_path / GENESIS_FILE
    for name in (*SERVICE_NAMES, "platform-root"):
        assert (tmp_path / f"{name}.ed25519.pem").exists() and (tmp_path / f"{name}.pub").exists()
    batch = load_genesis(tmp_path, load_root_public(tmp_path), ORIGIN)
    assert batch.decoded[0].event_type == "keys.genesis"
    # Entry 0 never changes: a second init keeps it, byte for byte.
    before = path.read_bytes()
    assert init_journal(tmp_path, ORIGIN, SERVICE_NAMES, 2_000) == (path, False)
    assert path.read_bytes() == before


def test_a_genesis_that_is_not_the_roots_is_refused(tmp_path: Path) -> None:
    init_journal(tmp_path, ORIGIN, SERVICE_NAMES, 1_000)
    root_public = load_root_public(tmp_path)
    with pytest.raises(ConfigError, match="another journal"):
        load_genesis(tmp_path, root_public, origin_for("elsewhere"))
    # Signed by another key (a compromised service's, say) than the pinned root.
    mallory = load_or_create_signer(tmp_path / "mallory", "root")
    forged = make_genesis(mallory, ORIGIN, {"orders": mallory.public_raw}, 1_000)
    (tmp_path / GENESIS_FILE).write_bytes(forged.encode())
    with pytest.raises(ConfigError, match="not a genesis the root signed"):
        load_genesis(tmp_path, root_public, ORIGIN)
    # The root's own genesis with one byte of its payload changed.
    init_journal(tmp_path / "b", ORIGIN, SERVICE_NAMES, 1_000)
    good = (tmp_path / "b" / GENESIS_FILE).read_bytes()
    statement = decode_batch(good).statements[0]
    at = good.index(statement) + len(statement) - 3
    tampered = good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :]
    (tmp_path / "b" / GENESIS_FILE).write_bytes(tampered)
    with pytest.raises(ConfigError, match="not a genesis the root signed"):
        load_genesis(tmp_path / "b", load_root_public(tmp_path / "b"), ORIGIN)
    with pytest.raises(ConfigError, match="scf journal init"):
        load_genesis(tmp_path / "none", root_public, ORIGIN)


async def _entries(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        schema = settings.endpoint("journal").schema
        exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.entries")
        return (
            0
            if exists is None
            else int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".entries'))
        )
    finally:
        await conn.close()


@pytest.mark.integration
async def test_the_journal_runs_without_the_root_private_key(settings: Settings) -> None:
    (settings.keys_dir / "platform-root.ed25519.pem").unlink()
    async with running(SPEC, settings):
        assert await _entries(settings) == 1  # the genesis, as the root signed it offline
    assert not (settings.keys_dir / "platform-root.ed25519.pem").exists()


@pytest.mark.integration
async def test_an_empty_journal_without_a_genesis_does_not_start(settings: Settings) -> None:
    (settings.keys_dir / GENESIS_FILE).unlink()
    with pytest.raises(ConfigError, match="scf journal init") as info:
        async with running(SPEC, settings):
            pass
    assert info.value.setting == "SCF_KEYS_DIR"
    assert await _entries(settings) == 0
    assert not (settings.keys_dir / GENESIS_FILE).exists()


@pytest.mark.integration
async def test_the_journal_does_not_start_without_the_roots_public_key(settings: Settings) -> None:
    (settings.keys_dir / "platform-root.pub").unlink()
    with pytest.raises(ConfigError, match=r"platform-root\.pub"):
        async with running(SPEC, settings):
            pass
    assert await _entries(settings) == 0


@pytest.mark.integration
async def test_a_service_without_its_key_does_not_make_one(settings: Settings) -> None:
    for suffix in (".ed25519.pem", ".pub"):
        (settings.keys_dir / f"orders{suffix}").unlink()
    with pytest.raises(ConfigError, match=r"no orders\.ed25519\.pem"):
        async with running(ORDERS, settings):
            pass
    assert not (settings.keys_dir / "orders.ed25519.pem").exists()
