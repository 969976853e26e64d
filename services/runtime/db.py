"""PostgreSQL: one pool per service, pinned to the service's own schema.

Each service ships ordered SQL migrations (``NNN_name.sql`` in its
``migrations`` package directory). They are applied at start-up, before the
service serves anything, inside one transaction that holds an advisory lock
so two instances never migrate at once.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from importlib import resources
from typing import Any

import asyncpg

from services.runtime.errors import ConfigError

__all__ = ["apply_migrations", "connect_pool", "drop_schema"]


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    # jsonb round-trips as Python objects rather than strings (asyncpg default).
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """Released connections are not reset (asyncpg's reset is one more round trip
    per use): no service sets session state, takes session advisory locks or
    leaves a cursor open, and an open transaction is still rolled back."""


async def connect_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool[Any]:
    """A pool whose connections see ``schema`` first on their search path."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            server_settings={"search_path": f'"{schema}",public', "application_name": schema},
            init=_init_connection,
            reset=_keep_session,
        )
    except (OSError, asyncpg.PostgresError, ValueError) as exc:
        raise ConfigError("SCF_DATABASE_URL", f"cannot connect to PostgreSQL: {exc}") from None
    assert pool is not None
    return pool


async def apply_migrations(pool: asyncpg.Pool[Any], schema: str, package: str) -> list[str]:
    """Apply the SQL files of ``package``'s ``migrations`` directory not yet applied.

    Returns the names applied now. A file changed after it was applied is an
    error: migrations are history, not configuration.
    """
    directory = resources.files(package).joinpath("migrations")
    files = sorted(
        (f for f in directory.iterdir() if f.name.endswith(".sql")) if directory.is_dir() else (),
        key=lambda f: f.name,
    )
    lock_key = zlib.crc32(f"scf-migrate:{schema}".encode())
    applied_now = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " name text PRIMARY KEY, sha256 bytea NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["name"]: r["sha256"]
            for r in await conn.fetch(f'SELECT name, sha256 FROM "{schema}".schema_migrations')
        }
        for f in files:
            sql = f.read_text()
            digest = hashlib.sha256(sql.encode()).digest()
            name = f"{package}/{f.name}"
            if name in done:
                if done[name] != digest:
                    raise ConfigError(
                        f"{package}.migrations", f"{f.name} changed after it was applied"
                    )
                continue
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            await conn.execute(sql)
            await conn.execute(
                f'INSERT INTO "{schema}".schema_migrations (name, sha256) VALUES ($1, $2)',
                name,
                digest,
            )
            applied_now.append(name)
    return applied_now


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
