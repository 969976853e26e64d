"""One platform clock: an operator moves it, every service follows; never in production."""

from __future__ import annotations

import dataclasses
import datetime as dt

import grpc
import pytest

from services.gen.scf.platform.v1 import platform_pb2, platform_pb2_grpc
from services.orders.service import SPEC as ORDERS
from services.repayment.service import SPEC as REPAYMENT
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from tests.journal.helpers import wait_until
from tests.support import running

pytestmark = pytest.mark.integration


async def _advance(
    settings: Settings, service: str, party: str, days: int
) -> platform_pb2.AdvanceClockResponse:
    addr = settings.endpoint(service).grpc_addr
    async with client_channel(addr, load_party(settings.certs_dir, party)) as channel:
        return await platform_pb2_grpc.PlatformServiceStub(channel).AdvanceClock(
            platform_pb2.AdvanceClockRequest(days=days)
        )


async def test_every_service_follows_the_platform_clock(settings: Settings) -> None:
    from services.runtime.service import ServiceContext

    seen: dict[str, ServiceContext] = {}

    async def capture(ctx: ServiceContext) -> None:
        seen[ctx.endpoint.name] = ctx
        if original is not None:
            await original(ctx)

    original = REPAYMENT.setup
    spec = dataclasses.replace(REPAYMENT, setup=capture)
    async with running(ORDERS, settings), running(spec, settings):
        before = seen["repayment"].clock.now()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _advance(settings, "orders", "acme-builders", 10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        moved = await _advance(settings, "orders", "operator", 45)
        assert moved.offset_micros == 45 * 86_400 * 1_000_000

        async def followed() -> bool:
            return seen["repayment"].clock.now() - before >= dt.timedelta(days=45)

        await wait_until(followed, what="repayment to follow the clock moved through orders")
        again = await _advance(settings, "repayment", "operator", 1)
        assert again.offset_micros == 46 * 86_400 * 1_000_000
        # Too far at once is refused, and the clock stays where it was.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _advance(settings, "orders", "operator", 3651)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await _advance(settings, "orders", "operator", 1)).offset_micros == (
            47 * 86_400 * 1_000_000
        )


async def test_refused_in_production_mode(settings: Settings) -> None:
    production = dataclasses.replace(settings, mode="production")
    async with running(ORDERS, production):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _advance(production, "orders", "operator", 1)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "SCF_MODE" in (info.value.details() or "")
