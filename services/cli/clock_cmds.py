"""``scf clock advance``: move the platform clock (demo and test modes only)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass

import typer
from rich.console import Console

from services.runtime.config import Settings
from services.runtime.dates import date_of_micros

clock_app = typer.Typer(help="The platform clock (demo and test modes).", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@dataclass(frozen=True)
class ClockMoved:
    #: The platform's time now, ISO 8601, and its offset from real time.
    now: str
    offset_micros: int


#: The services that follow the platform clock: each says when it runs on the new time.
FOLLOWERS = ("journal", "orders", "scoring", "lending", "repayment")


async def advance(
    settings: Settings, days: int, hours: int = 0, *, timeout: float = 10.0
) -> ClockMoved:
    """Move the clock as the operator (its NATS user alone may write the bucket),
    then return once every service runs on the new time."""
    from services.runtime.bus import connect_nats
    from services.runtime.errors import FailedPrecondition, InvalidArgument
    from services.runtime.platform_clock import advance_platform_clock, until_followed

    if settings.mode not in ("demo", "test"):
        raise FailedPrecondition(
            f"the platform clock moves only in demo and test modes (SCF_MODE is {settings.mode})"
        )
    if not 0 <= days <= 3650:
        raise InvalidArgument("days", "0 to 3650 days at a time")
    if not 0 <= hours <= 23:
        raise InvalidArgument("hours", "0 to 23; use days for more")
    micros = (days * 86_400 + hours * 3_600) * 1_000_000
    if micros <= 0:
        raise InvalidArgument("days", "move the clock forward by at least an hour")
    nc = await connect_nats(
        settings.nats_url, "scf-clock", user=settings.nats_user,
        password=settings.nats_password, ca_file=settings.certs_dir / "ca.pem",
    )  # fmt: skip
    try:
        offset = await advance_platform_clock(nc.jetstream(), settings.nats_prefix, micros)
        await until_followed(nc, settings.nats_prefix, offset, FOLLOWERS, timeout)
    finally:
        await nc.close()
    moved = time.time_ns() // 1000 + offset
    now = dt.datetime.fromtimestamp(moved / 1e6, dt.UTC)
    return ClockMoved(now.isoformat(), offset)


async def platform_today(settings: Settings) -> dt.date:
    """Today by the platform clock (as the repayment service keeps it)."""
    from services.gen.scf.platform.v1 import platform_pb2, platform_pb2_grpc
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import client_channel

    tls = load_party(settings.certs_dir, "operator")
    async with client_channel(settings.endpoint("repayment").grpc_addr, tls) as channel:
        who = await platform_pb2_grpc.PlatformServiceStub(channel).WhoAmI(
            platform_pb2.WhoAmIRequest(), timeout=10
        )
    return date_of_micros(who.now_micros)


@clock_app.command("advance")
def advance_cmd(
    days: int = typer.Option(0, min=0, max=3650), hours: int = typer.Option(0, min=0, max=23)
) -> None:
    """Move the platform clock forward for every service at once."""
    import grpc

    from services.runtime.errors import SCFError

    try:
        reply = asyncio.run(advance(Settings.from_env(), days, hours))
    except grpc.aio.AioRpcError as exc:
        err.print(f"[red]error:[/red] {exc.code().name}: {exc.details()}")
        raise typer.Exit(1) from None
    except (SCFError, TimeoutError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out.print(f"the platform clock now reads {reply.now}")
