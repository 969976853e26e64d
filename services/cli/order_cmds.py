"""``scf order ...``: an order's identity card."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from services.cli.output import JsonFlag, print_json
from services.runtime.config import Settings
from services.runtime.errors import ConfigError

order_app = typer.Typer(help="Orders.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@order_app.command("card")
def card(
    order_id: str,
    contract_sha256: str = typer.Option(..., help="The SHA-256 of the signed contract, hex."),
    party: str = typer.Option("auditor-reg", "--as", help="Whose certificate to present."),
    out_dir: Path = typer.Option(Path("."), "--out", help="Where to write the card."),
    as_json: bool = JsonFlag,
) -> None:
    """Fetch ORDER_ID's identity card, check its journal proofs, write JSON and a QR code."""
    import grpc

    from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
    from services.orders.card import write_card
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import client_channel

    settings = Settings.from_env()
    try:
        digest = bytes.fromhex(contract_sha256)
        journal_key = bytes.fromhex((settings.keys_dir / "journal.pub").read_text())
    except (ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    async def fetch() -> Any:
        tls = load_party(settings.certs_dir, party)
        async with client_channel(settings.endpoint("orders").grpc_addr, tls) as channel:
            return await orders_pb2_grpc.OrdersServiceStub(channel).VerifyOrder(
                orders_pb2.VerifyOrderRequest(order_id=order_id, contract_sha256=digest), timeout=15
            )

    try:
        reply = asyncio.run(fetch())
        json_path, svg_path = write_card(reply, digest, journal_key, out_dir)
    except grpc.aio.AioRpcError as exc:
        err.print(f"[red]error:[/red] {exc.code().name}: {exc.details()}")
        raise typer.Exit(1) from None
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except ValueError as exc:
        err.print(f"[red]INVALID card:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        print_json(
            {"order_id": order_id, "entries_proven": len(reply.entries),
             "card": str(json_path), "qr_code": str(svg_path)}
        )  # fmt: skip
        return
    out.print(
        f"order {order_id}: {len(reply.entries)} journal entries proven;"
        f" card {json_path}, QR code {svg_path}"
    )
