from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from services.runtime.db import apply_migrations, connect_pool, drop_schema
from services.runtime.errors import ConfigError
from tests.conftest import Servers
from tests.support import unique

pytestmark = pytest.mark.integration


async def test_migrations_apply_once_into_own_schema(servers: Servers) -> None:
    schema = unique("mig")
    pool = await connect_pool(servers.database_url, schema)
    try:
        first = await apply_migrations(pool, schema, "services.runtime")
        assert first == [
            "services.runtime/001_outbox.sql",
            "services.runtime/002_idempotency.sql",
            "services.runtime/003_outbox_attempts.sql",
            "services.runtime/004_outbox_subject.sql",
            "services.runtime/005_outbox_trace.sql",
        ]
        assert await apply_migrations(pool, schema, "services.runtime") == []
        table = await pool.fetchval(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox'"
            " AND table_schema = $1",
            schema,
        )
        assert table == schema
    finally:
        await pool.close()
        await drop_schema(servers.database_url, schema)


async def test_changed_migration_is_refused(servers: Servers) -> None:
    schema = unique("mig")
    pool = await connect_pool(servers.database_url, schema)
    try:
        await apply_migrations(pool, schema, "services.runtime")
        await pool.execute(f'UPDATE "{schema}".schema_migrations SET sha256 = $1', b"\x00" * 32)
        with pytest.raises(ConfigError, match="changed after it was applied"):
            await apply_migrations(pool, schema, "services.runtime")
    finally:
        await pool.close()
        await drop_schema(servers.database_url, schema)


async def test_unreachable_database_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        await connect_pool(f"postgresql://nobody@/x?host={tmp_path}", "s")
    assert info.value.setting == "SCF_DATABASE_URL"
    assert isinstance(info.value.__cause__, type(None) | asyncpg.PostgresError)
