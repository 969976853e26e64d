"""``scf score ...``: a credit decision, explained."""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from services.cli.output import JsonFlag, print_json
from services.runtime.config import Settings
from services.runtime.errors import ConfigError

score_app = typer.Typer(help="Credit scoring.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


@score_app.command("explain")
def explain(
    decision_id: str,
    party: str = typer.Option("auditor-reg", "--as", help="Whose certificate to present."),
    as_json: bool = JsonFlag,
) -> None:
    """Print the points each characteristic earned in DECISION_ID, and why."""
    import grpc

    from services.gen.scf.scoring.v1 import scoring_pb2, scoring_pb2_grpc
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import client_channel

    settings = Settings.from_env()

    async def fetch() -> Any:
        tls = load_party(settings.certs_dir, party)
        async with client_channel(settings.endpoint("scoring").grpc_addr, tls) as channel:
            return await scoring_pb2_grpc.ScoringServiceStub(channel).Explain(
                scoring_pb2.ExplainRequest(decision_id=decision_id), timeout=10
            )

    try:
        d = asyncio.run(fetch())
    except grpc.aio.AioRpcError as exc:
        err.print(f"[red]error:[/red] {exc.code().name}: {exc.details()}")
        raise typer.Exit(1) from None
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        from google.protobuf.json_format import MessageToDict

        print_json(MessageToDict(d, preserving_proto_field_name=True))
    else:
        out.print(show(d))


def show(d: Any) -> Table:
    """The explanation as a table (used by the demo too)."""
    table = Table(
        "characteristic", "value", "points", "of best", "why",
        title=f"{d.decision_id}: model {d.model} {d.version}",
    )  # fmt: skip
    table.add_row("base points", "", str(d.base_points), "", "")
    for c in d.characteristics:
        table.add_row(c.label, c.value, f"{c.points:+d}", f"{c.best_points:+d}", c.reason)
    table.add_section()
    table.add_row("score", "", str(d.score), "", f"PD {d.pd}, grade {d.grade}")
    verdict = d.recommendation
    if d.knockouts:
        verdict += " (" + "; ".join(d.knockouts) + ")"
    table.add_row("recommendation", "", "", "", verdict)
    return table
