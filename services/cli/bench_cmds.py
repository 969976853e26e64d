"""``scf bench ...``: benchmarks anyone can rerun. Each prints and writes JSON."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.bench.journal_bench import (
    as_dict,
    bench_append,
    bench_proofs,
    machine,
    write_synthetic_export,
)
from services.bench.servers import bench_settings
from services.journal.offline import verify_export

bench_app = typer.Typer(help="Benchmarks (see docs/benchmarks.md).", no_args_is_help=True)
out = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    )  # fmt: skip


def _report(name: str, result: dict[str, Any], json_out: Path | None) -> None:
    out.print_json(json.dumps(result))
    if json_out is not None:
        json_out.write_text(json.dumps({"benchmark": name, **result}, indent=2))


JsonOption = typer.Option(None, "--json", help="Also write the result to this file.")


@bench_app.command("append")
def append(
    entries: int = typer.Option(50_000, min=1, max=2_000_000),
    json_out: Path | None = JsonOption,
) -> None:
    """Journal append: pre-signed statements through JetStream to committed entries."""
    with bench_settings() as settings, _progress() as progress:
        task = progress.add_task("journaled", total=entries + 1)
        result = asyncio.run(
            bench_append(settings, entries, lambda n: progress.update(task, completed=n))
        )
    _report("append", as_dict(result), json_out)


@bench_app.command("audit")
def audit(
    entries: int = typer.Option(50_000, min=1, max=2_000_000),
    json_out: Path | None = JsonOption,
) -> None:
    """The journal's own check of its store: the start-up check and one background sweep."""
    from services.bench.journal_bench import bench_audit

    with bench_settings() as settings, _progress() as progress:
        task = progress.add_task("journaled", total=entries + 1)
        result = asyncio.run(
            bench_audit(settings, entries, lambda n: progress.update(task, completed=n))
        )
    _report("audit", as_dict(result), json_out)


@bench_app.command("verify")
def verify(
    entries: int = typer.Option(1_000_000, min=1, max=5_000_000),
    json_out: Path | None = JsonOption,
) -> None:
    """Offline verification of an export of ENTRIES signed entries."""
    with tempfile.TemporaryDirectory(prefix="scf-bench-") as tmp:
        path = Path(tmp) / "journal.export"
        t0 = time.perf_counter()
        root = write_synthetic_export(path, entries, Path(tmp) / "keys")
        built = time.perf_counter() - t0
        with _progress() as progress:
            task = progress.add_task("verified", total=entries + 1)
            t0 = time.perf_counter()
            report = verify_export(path, root, lambda n: progress.advance(task, n))
            elapsed = time.perf_counter() - t0
        size = path.stat().st_size
    _report(
        "verify",
        {
            "entries": report.entries,
            "checkpoints": report.checkpoints,
            "seconds": round(elapsed, 2),
            "entries_per_s": round(report.entries / elapsed),
            "export_bytes": size,
            "build_seconds": round(built, 1),
            "machine": machine(),
        },
        json_out,
    )


@bench_app.command("proofs")
def proofs(
    tree_size: int = typer.Option(10_000_000, min=2, max=50_000_000),
    samples: int = typer.Option(1000, min=10, max=100_000),
    json_out: Path | None = JsonOption,
) -> None:
    """Inclusion and consistency proofs read from PostgreSQL at TREE_SIZE leaves."""
    with bench_settings() as settings, _progress() as progress:
        task = progress.add_task("tree nodes", total=tree_size)
        result = asyncio.run(
            bench_proofs(settings, tree_size, samples, lambda n: progress.update(task, completed=n))
        )
    _report("proofs", as_dict(result), json_out)


@bench_app.command("replica")
def replica(
    entries: int = typer.Option(100_000, min=1, max=2_000_000),
    json_out: Path | None = JsonOption,
) -> None:
    """Replica ingest with full verification: a new replica catching up ENTRIES."""
    from services.bench.replica_bench import bench_ingest

    with bench_settings() as settings, _progress() as progress:
        task = progress.add_task("replicated", total=entries + 1)
        result = asyncio.run(
            bench_ingest(settings, entries, lambda n: progress.update(task, completed=n))
        )
    _report("replica", as_dict(result), json_out)


@bench_app.command("lag")
def lag(
    rate: int = typer.Option(5000, min=1, max=50_000, help="Appends per second."),
    seconds: float = typer.Option(20.0, min=1, max=600),
    json_out: Path | None = JsonOption,
) -> None:
    """Replication lag while the journal takes a steady RATE of appends."""
    from services.bench.replica_bench import bench_lag

    with bench_settings() as settings, Console(stderr=True).status("appending"):
        result = asyncio.run(bench_lag(settings, rate, seconds))
    _report("lag", as_dict(result), json_out)


@bench_app.command("flows")
def flows(
    count: int = typer.Option(200, min=1, max=100_000, help="Flows to run at most."),
    concurrency: int = typer.Option(20, min=1, max=500),
    seconds: float = typer.Option(120, min=1, max=1800, help="Stop starting flows after this."),
    sweep: bool = typer.Option(
        False,
        help="Concurrency 1, 5, 20, 50 and 100 in turn (count flows each, at least 5 a worker).",
    ),
    json_out: Path | None = JsonOption,
) -> None:
    """Complete order-financing flows (register to disbursed, auto-approved) over mTLS gRPC."""
    from services.bench.flows_bench import bench_flows, bench_sweep

    if sweep:
        with bench_settings() as settings, Console(stderr=True).status("sweeping") as status:

            def level_done(result: Any) -> None:
                status.update(f"concurrency {result.concurrency}: {result.flows_per_s} flows/s")

            results = asyncio.run(bench_sweep(settings, count, seconds, on_level=level_done))
        _report("flows-sweep", {"levels": [as_dict(r) for r in results]}, json_out)
        return
    with bench_settings() as settings, _progress() as progress:
        task = progress.add_task("flows disbursed", total=count)

        def advance(done: int) -> None:
            progress.update(task, completed=done)

        result = asyncio.run(bench_flows(settings, count, concurrency, seconds, advance))
    _report("flows", as_dict(result), json_out)


@bench_app.command("failover")
def failover(
    rounds: int = typer.Option(3, min=1, max=20),
    json_out: Path | None = JsonOption,
) -> None:
    """The journal's standby taking over after SIGKILL of the leader, timed to the
    first statement journaled again (docs/reliability.md)."""
    from services.bench.failover_bench import bench_failover

    with bench_settings() as settings, Console(stderr=True).status("killing journal leaders"):
        result = asyncio.run(bench_failover(settings, rounds))
    _report("failover", as_dict(result), json_out)


@bench_app.command("faults")
def faults(
    count: int = typer.Option(300, min=10, max=100_000, help="Flows to run."),
    concurrency: int = typer.Option(20, min=1, max=500),
    seconds: float = typer.Option(600, min=1, max=3600, help="Stop starting flows after this."),
    cluster: bool = typer.Option(
        False, help="On a three-node NATS cluster, one node killed and brought back instead."
    ),
    json_out: Path | None = JsonOption,
) -> None:
    """Flows while every service, a replica, PostgreSQL and NATS fail in turn; then
    check that nothing was lost or done twice (docs/reliability.md)."""
    from services.bench.faults_bench import run_cluster_faults, run_faults
    from services.bench.servers import own_servers_settings

    run = run_cluster_faults if cluster else run_faults
    with own_servers_settings() as settings, Console(stderr=True).status("flows under faults"):
        report = asyncio.run(run(settings, count, concurrency, seconds))
    _report("faults", {**as_dict(report), "ok": report.ok}, json_out)
    if not report.ok:
        raise typer.Exit(1)
