"""Lending killed in the middle of a step, and offers that expire."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from services.contracts.subjects import Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.lending.v1 import lending_pb2
from services.repayment.service import SPEC as REPAYMENT
from services.runtime.certs import load_party
from services.runtime.clock import ManualClock
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.platform import Platform
from services.scoring.service import SPEC as SCORING
from tests.journal.helpers import wait_on_platform
from tests.lending.helpers import LendingEnv, lending_env
from tests.orders.helpers import orders_env
from tests.support import running

pytestmark = pytest.mark.integration


async def _events(settings: Settings, subject: str) -> list[str]:
    """The journal's event types on ``subject``, once every statement lending and
    orders wrote so far is journaled (the relays publish asynchronously)."""
    conn = await asyncpg.connect(settings.database_url)
    try:

        async def all_journaled() -> bool:
            pending = 0
            for service in ("orders", "lending", "scoring"):
                pending += await conn.fetchval(
                    f'SELECT count(*) FROM "{settings.endpoint(service).schema}".outbox'
                    " WHERE journal_seq IS NULL"
                )
            return bool(pending == 0)

        await wait_on_platform(settings, all_journaled, "every statement journaled")
        schema = settings.endpoint("journal").schema
        rows = await conn.fetch(
            f'SELECT event_type FROM "{schema}".entries WHERE subject = $1 ORDER BY seq', subject
        )
        return [r["event_type"] for r in rows]
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def crashing_lending(
    settings: Settings, point: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[LendingEnv, Callable[[], Awaitable[None]]]]:
    """Lending as a subprocess that dies at ``point``, and a way to await that
    death and start it again (without the crash point)."""
    platform = Platform(settings, services=("lending",))
    try:
        async with (
            orders_env(settings) as orders,
            running(SCORING, settings),
            running(REPAYMENT, settings),
        ):
            monkeypatch.setenv("SCF_CRASH_AT", point)
            platform.spawn("lending")
            await platform.wait_ready("lending")
            monkeypatch.delenv("SCF_CRASH_AT")
            addr = settings.endpoint("lending").grpc_addr
            async with contextlib.AsyncExitStack() as stack:
                orders.lending_channels = {  # type: ignore[attr-defined]
                    p: await stack.enter_async_context(
                        client_channel(addr, load_party(settings.certs_dir, p))
                    )
                    for p in ("acme-builders", "citybuild", "uw-alice", "uw-bob")
                }

                async def restart_after_crash() -> None:
                    process = platform.processes["lending"].process
                    assert await asyncio.wait_for(asyncio.to_thread(process.wait), 30) == 99
                    platform.spawn("lending")
                    await platform.wait_ready("lending")

                yield LendingEnv(orders), restart_after_crash
    finally:
        platform.stop()


@pytest.mark.parametrize("point", ["lending.after_pledge", "lending.after_score"])
async def test_lending_killed_mid_step_resumes_without_repeating(
    settings: Settings, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with crashing_lending(settings, point, monkeypatch) as (env, restart_after_crash):
        await env.facility()
        oid = await env.confirmed_order("PO-K1")
        app_id = await env.request(oid, "2000000.00")
        await restart_after_crash()
        app = await env.wait_state(app_id, "referred")
        assert app.decision_id == f"DEC-{app_id}"
        assert (await _events(settings, f"order/{oid}")).count("order.pledged") == 1
        journaled_app = await _events(settings, f"application/{app_id}")
        assert journaled_app.count("score.decided") == 1
        assert journaled_app.count("application.pledged") == 1
        assert journaled_app.count("application.scored") == 1


async def test_lending_killed_after_disbursing_announces_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with crashing_lending(settings, "lending.before_announce", monkeypatch) as (
        env,
        restart_after_crash,
    ):
        await env.facility()
        oid = await env.confirmed_order("PO-K2")
        app_id = await env.request(oid, "500000.00")
        await env.wait_state(app_id, "referred")
        assert await env.approve(app_id, "uw-alice", "500000.00", "a") == "approved"
        await env.sign_all(await env.get(app_id))
        await restart_after_crash()  # disbursed and committed, not yet announced
        app = await env.wait_state(app_id, "disbursed")
        assert app.outcome == lending_pb2.APPLICATION_OUTCOME_DISBURSED
        prefix = env.settings.nats_prefix
        stream = Subjects(prefix).lending_stream.name
        js = env.orders.nc.jetstream()
        sub = await js.subscribe(f"{prefix}.lending.disbursed", stream=stream)
        signed = bus_pb2.Signed.FromString((await sub.next_msg(timeout=10)).data)
        assert bus_pb2.Disbursed.FromString(signed.body).application_id == app_id
        assert (await js.stream_info(stream)).state.messages == 1  # announced once
        events = await _events(settings, f"application/{app_id}")
        assert events.count("application.disbursed") == 1


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
        assert app.outcome == lending_pb2.APPLICATION_OUTCOME_EXPIRED
        events = await _events(settings, f"order/{oid}")
        assert events[-1] == "order.released"
