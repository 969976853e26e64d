"""``scf``: run the platform, manage certificates, audit the journal."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from services.cli.bench_cmds import bench_app
from services.cli.clock_cmds import clock_app
from services.cli.journal_cmds import audit_app, journal_app
from services.cli.order_cmds import order_app
from services.cli.score_cmds import score_app
from services.replica.config import EXAMPLE_BANKS
from services.runtime.certs import (
    EXAMPLE_PARTIES,
    ensure_certificates,
    ensure_nats_server_certificate,
    serves,
)
from services.runtime.config import Settings
from services.runtime.errors import ConfigError
from services.runtime.platform import Platform, read_state

app = typer.Typer(help="SCF supply-chain financing platform.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"scf {version('scf')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """SCF supply-chain financing platform."""


certs_app = typer.Typer(help="Certificates of the platform CA.", no_args_is_help=True)
nats_app = typer.Typer(help="The operator's NATS set-up.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")
app.add_typer(nats_app, name="nats")
app.add_typer(journal_app, name="journal")
app.add_typer(audit_app, name="audit")
app.add_typer(bench_app, name="bench")
app.add_typer(order_app, name="order")
app.add_typer(score_app, name="score")
app.add_typer(clock_app, name="clock")

console = Console(stderr=True)
out = Console()
T = TypeVar("T")


def run_or_exit(fn: Callable[[], T]) -> T:
    """Run ``fn``; a ConfigError becomes one line naming the setting, exit 2."""
    try:
        return fn()
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


def settings_for(data_dir: Path | None) -> Settings:
    if data_dir is not None:
        os.environ["SCF_DATA_DIR"] = str(data_dir)
    return run_or_exit(Settings.from_env)


DataDirOption = typer.Option(None, "--data-dir", help="Overrides SCF_DATA_DIR.")


ServiceHostOption = typer.Option(
    [],
    "--service-host",
    help="SERVICE=HOST: a host name (or address) a service or replica is reached at,"
    " written into its certificate beside its own name and loopback; repeatable"
    " (journal=journal.scf.svc).",
)


def _service_hosts(values: list[str]) -> dict[str, list[str]]:
    servers = {p.party_id for p in EXAMPLE_PARTIES if serves(p)}
    hosts: dict[str, list[str]] = {}
    for value in values:
        service, sep, host = value.partition("=")
        if not sep or not host or service not in servers:
            console.print(
                f"[red]error:[/red] --service-host {value!r}: SERVICE=HOST, SERVICE one of"
                f" {', '.join(sorted(servers))}"
            )
            raise typer.Exit(2)
        hosts.setdefault(service, []).append(host)
    return hosts


@certs_app.command("init")
def certs_init(
    data_dir: Path | None = DataDirOption, service_host: list[str] = ServiceHostOption
) -> None:
    """Create the platform CA and certificates for the services and example parties.

    Service (and replica) certificates name the hosts they serve at; every other
    party's certificate is for client authentication only."""
    settings = settings_for(data_dir)
    hosts = _service_hosts(service_host)
    issued = run_or_exit(lambda: ensure_certificates(settings.certs_dir, service_hosts=hosts))
    nats = run_or_exit(lambda: ensure_nats_server_certificate(settings.certs_dir))
    table = Table("party", "role", "organisation", "issued now")
    for spec in EXAMPLE_PARTIES:
        table.add_row(spec.party_id, spec.role.value, spec.organization,
                      "yes" if spec.party_id in issued else "")  # fmt: skip
    out.print(table)
    if nats:
        out.print("the NATS nodes' certificate: nats/server.pem, nats/server.key")
    out.print(f"certificates in {settings.certs_dir}")


@nats_app.command("init")
def nats_init(data_dir: Path | None = DataDirOption) -> None:
    """As the operator's NATS user: create or update every stream, consumer and
    bucket (services may only bind to them). Run before the services start."""
    from services.runtime.bus import connect_nats
    from services.runtime.provision import provision

    settings = settings_for(data_dir)

    async def init() -> None:
        nc = await connect_nats(
            settings.nats_url, "scf-nats-init", user=settings.nats_user,
            password=settings.nats_password, ca_file=settings.certs_dir / "ca.pem",
        )  # fmt: skip
        try:
            await provision(
                nc.jetstream(), settings.nats_prefix, settings.banks,
                replicas=settings.stream_replicas,
            )  # fmt: skip
        finally:
            await nc.close()

    if not settings.nats_url:
        console.print("[red]error:[/red] SCF_NATS_URL: not set (the NATS to set up)")
        raise typer.Exit(2)
    run_or_exit(lambda: asyncio.run(init()))
    out.print(f"streams, consumers and buckets in place for prefix {settings.nats_prefix}")


def _services_table(platform: Platform) -> Table:
    table = Table("process", "pid", "gRPC", "log")
    for name, proc in platform.processes.items():
        table.add_row(name, str(proc.process.pid), platform.addr_of(name), str(proc.log_path))
    return table


@app.command()
def up(
    data_dir: Path | None = DataDirOption,
    fresh: bool = typer.Option(False, help="Delete the data (not the certificates) first."),
    restart: bool = typer.Option(True, help="Restart a service process that dies."),
) -> None:
    """Start embedded servers (unless URLs are set), every service and the example
    banks' replicas, each as its own process; Ctrl-C stops all."""
    platform = Platform(settings_for(data_dir), replicas=EXAMPLE_BANKS, explorers=True)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with console.status("starting the platform"):
            run_or_exit(lambda: asyncio.run(platform.start(fresh=fresh)))
        out.print(f"NATS        {platform.settings.nats_url}")
        out.print(f"PostgreSQL  {platform.settings.database_url}")
        out.print(_services_table(platform))
        for name, url in platform.explorer_urls().items():
            out.print(f"explorer    {url}  ({name}; an auditor's certificate, docs/explorer.md)")
        out.print("running; Ctrl-C stops everything")
        while True:
            time.sleep(0.5)
            codes = {n: p.process.returncode for n, p in platform.processes.items() if not p.alive}
            for name in platform.respawn_dead() if restart else list(codes):
                pid = platform.processes[name].process.pid
                how = f"restarted (pid {pid})" if restart else "not restarted"
                console.print(f"[yellow]{name} exited with code {codes[name]}[/]; {how}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        # Whatever happened above, nothing is left running.
        platform.stop()
        console.print("stopped")


@app.command()
def replica(bank: str = typer.Option(..., help="The bank whose replica this is.")) -> None:
    """Run a bank's replica of the journal (its own database, verify before store)."""
    from services.replica.__main__ import main as replica_main

    replica_main(["--bank", bank])


@app.command("witness-key")
def witness_key(
    bank: str = typer.Option(..., help="The bank whose replica cosigns with it."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout, for scripts."),
) -> None:
    """Make BANK's witness key in SCF_KEYS_DIR (the bank's own, kept by the bank;
    its replica cosigns checkpoints with it), or show the one there. Prints its
    public half, which the platform's journal needs as witness-BANK.pub."""
    import json

    from services.runtime.keys import load_or_create_signer

    settings = Settings.from_env()
    try:
        if not bank.replace("-", "").isalnum():
            raise ConfigError("--bank", f"must be letters, digits and '-', got {bank!r}")
        name = f"witness-{bank}"
        signer = load_or_create_signer(settings.keys_dir, name)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    public = signer.public_raw.hex()
    if as_json:
        print(json.dumps({"bank": bank, "public_key": public,
                          "file": str(settings.keys_dir / f"{name}.pub")}))  # fmt: skip
    else:
        console.print(f"{name}.pub: {public}")


@app.command()
def status(
    data_dir: Path | None = DataDirOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout, for scripts."),
) -> None:
    """Each service's and replica's health, each replica's lag and alarm, and the
    journal's check of its store. Asks the processes `scf up` started beside it or,
    without them, the addresses the settings name (SCF_<SERVICE>_ADDR,
    SCF_REPLICA_<BANK>_ADDR), wherever they run. Exits 1 unless all is well."""
    import json

    from services.cli.health import check_all, journal_detail, replica_detail
    from services.replica.config import replica_addr
    from services.runtime.config import SERVICE_NAMES

    settings = settings_for(data_dir)
    state = read_state(settings)
    pids: dict[str, int] = {}
    if state is not None:
        started = state["services"]
        assert isinstance(started, dict)
        addrs = {n: str(s["grpc_addr"]) for n, s in started.items()}
        pids = {n: int(s["pid"]) for n, s in started.items()}
        nats_url, database_url = str(state["nats_url"]), str(state["database_url"])
    else:
        addrs = {n: settings.endpoint(n).grpc_addr for n in SERVICE_NAMES}
        try:
            addrs |= {f"replica-{bank}": replica_addr(bank) for bank in settings.banks}
        except ConfigError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        nats_url, database_url = settings.nats_url, settings.database_url
    health = asyncio.run(check_all(settings, addrs))
    details = {
        n: asyncio.run(replica_detail(settings, a))
        for n, a in addrs.items()
        if n.startswith("replica-")
    }
    if "journal" in addrs:
        details["journal"] = asyncio.run(journal_detail(settings, addrs["journal"]))
    processes = [
        {
            "name": name, "grpc_addr": addr, "health": health[name],
            "detail": details.get(name, ""),
            **({"pid": pids[name], "alive": _pid_alive(pids[name])} if name in pids else {}),
        }
        for name, addr in addrs.items()
    ]  # fmt: skip
    ok = all(h == "SERVING" for h in health.values()) and not any(
        "ALARM" in d for d in details.values()
    )
    if as_json:
        report = {
            "source": "scf up" if state is not None else "settings",
            "nats_url": nats_url, "database_url": database_url,
            "processes": processes, "ok": ok,
        }  # fmt: skip
        print(json.dumps(report, indent=2))
    else:
        table = Table("process", "pid", "state", "gRPC", "health", "detail")
        for p in processes:
            alive = "" if "alive" not in p else "alive" if p["alive"] else "gone"
            table.add_row(
                str(p["name"]), str(p.get("pid", "")), alive, str(p["grpc_addr"]),
                str(p["health"]), str(p["detail"]),
            )  # fmt: skip
        out.print(f"NATS        {nats_url}")
        out.print(f"PostgreSQL  {database_url}")
        out.print(table)
    if not ok:
        raise typer.Exit(1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@app.command()
def demo(data_dir: Path | None = DataDirOption) -> None:
    """Run the platform on embedded servers, walk through the story so far, stop."""
    from services.cli.demo import run_demo

    temporary = data_dir is None
    if data_dir is None:
        import tempfile

        data_dir = Path(tempfile.mkdtemp(prefix="scf-demo-"))
    os.environ.setdefault("SCF_MODE", "demo")  # the demo moves the platform clock
    settings = settings_for(data_dir)
    try:
        code = run_or_exit(lambda: run_demo(settings, out))
    finally:
        if temporary:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    app()
