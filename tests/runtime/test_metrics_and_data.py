"""The metrics endpoint counts RPCs; embedded PostgreSQL keeps its data across restarts."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from services.gen.scf.platform.v1 import platform_pb2, platform_pb2_grpc
from services.orders.service import SPEC
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.embedded import EmbeddedPostgres
from services.runtime.grpcserver import client_channel
from services.runtime.metrics import serve_metrics
from services.runtime.ports import free_port
from tests.support import running


@pytest.mark.integration
async def test_metrics_count_rpcs_by_method_and_status(settings: Settings) -> None:
    port = free_port()
    serve_metrics(f"127.0.0.1:{port}")
    addr = settings.endpoint("orders").grpc_addr
    async with running(SPEC, settings):
        tls = load_party(settings.certs_dir, "citybuild")
        async with client_channel(addr, tls) as channel:
            for _ in range(3):
                await platform_pb2_grpc.PlatformServiceStub(channel).WhoAmI(
                    platform_pb2.WhoAmIRequest()
                )
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    )
    text = body.decode()
    line = next(
        ln for ln in text.splitlines()
        if ln.startswith("scf_rpc_total{") and 'method="WhoAmI"' in ln and 'code="OK"' in ln
        and 'service="orders"' in ln
    )  # fmt: skip
    assert float(line.rsplit(" ", 1)[1]) >= 3
    assert "scf_rpc_seconds_bucket" in text and "scf_outbox_backlog" in text


# Not marked integration: it starts embedded PostgreSQL itself, whatever servers
# the run points at, so CI's second pass (the machine's servers) leaves it out.
def test_embedded_postgres_keeps_data_across_restarts(tmp_path: Path) -> None:
    async def write(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        await conn.close()

    async def read(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT v FROM kept"))
        finally:
            await conn.close()

    pg = EmbeddedPostgres(tmp_path / "pg", database="kept")
    asyncio.run(write(pg.start()))
    pg.stop()
    again = EmbeddedPostgres(tmp_path / "pg", database="kept")
    try:
        assert asyncio.run(read(again.start())) == 42
    finally:
        again.stop()
