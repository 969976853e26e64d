"""One platform clock: the operator moves it, every service follows; no service
can move it; never in production."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from services.cli.clock_cmds import advance
from services.orders.service import SPEC as ORDERS
from services.repayment.service import SPEC as REPAYMENT
from services.runtime.config import Settings
from services.runtime.errors import FailedPrecondition, InvalidArgument
from tests.support import running

pytestmark = pytest.mark.integration


async def test_every_service_follows_the_platform_clock(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.cli import clock_cmds
    from services.runtime.service import ServiceContext

    seen: dict[str, ServiceContext] = {}

    async def capture(ctx: ServiceContext) -> None:
        seen[ctx.endpoint.name] = ctx
        if original is not None:
            await original(ctx)

    original = REPAYMENT.setup
    spec = dataclasses.replace(REPAYMENT, setup=capture)
    # advance() returns once every running follower reads the new time.
    monkeypatch.setattr(clock_cmds, "FOLLOWERS", ("orders", "repayment"))
    async with running(ORDERS, settings), running(spec, settings):
        before = seen["repayment"].clock.now()
        moved = await advance(settings, 45)
        assert moved.offset_micros == 45 * 86_400 * 1_000_000
        # Returned only once repayment runs on the new time: no waiting needed.
        assert seen["repayment"].clock.now() - before >= dt.timedelta(days=45)
        again = await advance(settings, 1)
        assert again.offset_micros == 46 * 86_400 * 1_000_000
        # Too far at once is refused, and the clock stays where it was.
        with pytest.raises(InvalidArgument, match="days"):
            await advance(settings, 3651)
        assert (await advance(settings, 1)).offset_micros == 47 * 86_400 * 1_000_000
        # A follower that does not answer (scoring is not running) is named.
        monkeypatch.setattr(clock_cmds, "FOLLOWERS", ("orders", "repayment", "scoring"))
        with pytest.raises(TimeoutError, match=r"^scoring did not follow"):
            await advance(settings, 1, timeout=2)


async def test_refused_in_production_mode(settings: Settings) -> None:
    production = dataclasses.replace(settings, mode="production")
    with pytest.raises(FailedPrecondition, match="SCF_MODE"):
        await advance(production, 1)
