"""Lending killed in the middle of a step, and offers that expire."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from services.runtime.clock import ManualClock
from services.runtime.config import Settings
from services.runtime.platform import Platform
from services.scoring.service import SPEC as SCORING
from tests.lending.helpers import LendingEnv, lending_env
from tests.orders.helpers import OrdersEnv, orders_env
from tests.support import running

pytestmark = pytest.mark.integration


async def _events(settings: Settings, subject: str) -> list[str]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        schema = settings.endpoint("journal").schema
        rows = await conn.fetch(
            f'SELECT event_type FROM "{schema}".entries WHERE subject = $1 ORDER BY seq', subject
        )
        return [r["event_type"] for r in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize("point", ["lending.after_pledge", "lending.after_score"])
async def test_lending_killed_mid_step_resumes_without_repeating(
    settings: Settings, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = Platform(settings, services=("lending",))
    try:
        async with orders_env(settings) as orders, running(SCORING, settings):
            monkeypatch.setenv("SCF_CRASH_AT", point)
            platform.spawn("lending")
            await platform.wait_ready("lending")
            monkeypatch.delenv("SCF_CRASH_AT")
            env = _env(orders)
            await env.facility()
            oid = await env.confirmed_order("PO-K1")
            app_id = await env.request(oid, "2000000.00")
            code = await _exit(platform)
            assert code == 99
            platform.spawn("lending")
            await platform.wait_ready("lending")
            env = _env(orders)
            app = await env.wait_state(app_id, "referred")
            assert app.decision_id == f"DEC-{app_id}"
            events = await _events(settings, f"order/{oid}")
            assert events.count("order.pledged") == 1
            journaled_app = await _events(settings, f"application/{app_id}")
            assert journaled_app.count("score.decided") == 1
            assert journaled_app.count("application.pledged") <= 1
    finally:
        platform.stop()


def _env(orders: OrdersEnv) -> LendingEnv:
    """Channels to the lending process (a subprocess here)."""
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import client_channel

    addr = orders.settings.endpoint("lending").grpc_addr
    orders.lending_channels = {  # type: ignore[attr-defined]
        p: client_channel(addr, load_party(orders.settings.certs_dir, p))
        for p in ("acme-builders", "citybuild", "uw-alice", "uw-bob")
    }
    return LendingEnv(orders)


async def _exit(platform: Platform) -> int:
    import asyncio

    process = platform.processes["lending"].process
    return await asyncio.wait_for(asyncio.to_thread(process.wait), 30)


async def test_offers_expire_and_release(settings: Settings) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    async with lending_env(settings, clock=clock) as env:
        await env.facility()
        oid = await env.confirmed_order("PO-E1")
        app_id = await env.request(oid, "1000000.00")
        await env.wait_state(app_id, "referred")
        assert await env.approve(app_id, "uw-alice", "1000000.00", "a") == "approved"
        clock.advance(dt.timedelta(days=15))
        app = await env.wait_state(app_id, "closed")
        assert app.outcome == "expired"
        events = await _events(settings, f"order/{oid}")
        assert events[-1] == "order.released"


@pytest.mark.parametrize("point", ["lending.before_announce"])
async def test_lending_killed_after_disbursing_announces_once(
    settings: Settings, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from services.lending.flow import lending_stream

    platform = Platform(settings, services=("lending",))
    try:
        async with orders_env(settings) as orders, running(SCORING, settings):
            monkeypatch.setenv("SCF_CRASH_AT", point)
            platform.spawn("lending")
            await platform.wait_ready("lending")
            monkeypatch.delenv("SCF_CRASH_AT")
            env = _env(orders)
            await env.facility()
            oid = await env.confirmed_order("PO-K2")
            app_id = await env.request(oid, "500000.00")
            await env.wait_state(app_id, "referred")
            assert await env.approve(app_id, "uw-alice", "500000.00", "a") == "approved"
            await env.sign_all(await env.get(app_id))
            assert await _exit(platform) == 99  # disbursed and committed, not yet announced
            platform.spawn("lending")
            await platform.wait_ready("lending")
            env = _env(orders)
            app = await env.wait_state(app_id, "disbursed")
            assert app.outcome == "disbursed"
            stream = lending_stream(settings.nats_prefix).name
            sub = await orders.nc.jetstream().subscribe(
                f"{settings.nats_prefix}.lending.disbursed", stream=stream
            )
            event = json.loads((await sub.next_msg(timeout=10)).data)
            assert event["application_id"] == app_id
            info = await orders.nc.jetstream().stream_info(stream)
            assert info.state.messages == 1  # announced once, whatever the crash
            events = await _events(settings, f"application/{app_id}")
            assert events.count("application.disbursed") == 1
    finally:
        platform.stop()
