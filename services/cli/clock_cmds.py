"""``scf clock advance``: move the platform clock (demo and test modes only)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import typer
from rich.console import Console

from services.runtime.config import Settings

clock_app = typer.Typer(help="The platform clock (demo and test modes).", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


async def advance(settings: Settings, days: int, hours: int = 0) -> Any:
    from services.gen.scf.platform.v1 import platform_pb2, platform_pb2_grpc
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import client_channel

    tls = load_party(settings.certs_dir, "operator")
    async with client_channel(settings.endpoint("repayment").grpc_addr, tls) as channel:
        return await platform_pb2_grpc.PlatformServiceStub(channel).AdvanceClock(
            platform_pb2.AdvanceClockRequest(days=days, hours=hours), timeout=10
        )


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
    return dt.date.fromisoformat(who.now[:10])


@clock_app.command("advance")
def advance_cmd(
    days: int = typer.Option(0, min=0, max=3650), hours: int = typer.Option(0, min=0, max=23)
) -> None:
    """Move the platform clock forward for every service at once."""
    import grpc

    try:
        reply = asyncio.run(advance(Settings.from_env(), days, hours))
    except grpc.aio.AioRpcError as exc:
        err.print(f"[red]error:[/red] {exc.code().name}: {exc.details()}")
        raise typer.Exit(1) from None
    out.print(f"the platform clock now reads {reply.now}")
