"""The whole platform on one machine: embedded servers plus one process per service.

Used by ``scf up``, ``scf demo`` and the end-to-end tests. Each service runs
as its own OS process (``python -m services.<name>``), so killing one leaves
the others running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.journal import init_journal, origin_for
from services.runtime.bus import connect_nats
from services.runtime.certs import ensure_certificates, load_party
from services.runtime.config import SERVICE_NAMES, Settings
from services.runtime.db import connect_pool
from services.runtime.embedded import EmbeddedNats, EmbeddedPostgres
from services.runtime.errors import ConfigError
from services.runtime.grpcserver import client_channel
from services.runtime.nats_auth import ADMIN, nats_password
from services.runtime.ports import free_ports
from services.runtime.provision import provision
from services.runtime.waiting import wait_event

__all__ = ["Platform", "ServiceProcess", "read_state"]


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)
    #: A second instance of a service (its name, and where it listens instead).
    service: str = ""
    grpc_addr: str = ""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Platform:
    """Starts what ``settings`` does not point at, then every service."""

    settings: Settings
    services: tuple[str, ...] = SERVICE_NAMES
    #: Banks whose journal replica runs beside the platform (as `replica-<bank>`).
    replicas: tuple[str, ...] = ()
    nats: EmbeddedNats | None = None
    #: The secret the embedded NATS's passwords derive from (nats_auth.py).
    nats_secret: str = ""
    postgres: EmbeddedPostgres | None = None
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    #: Serve the auditors' explorer from the journal and each replica, where the
    #: settings name no address: https://127.0.0.1:8400 and :8411, :8412, ...
    explorers: bool = False

    def explorer_urls(self) -> dict[str, str]:
        """Where each process's explorer answers (with ``explorers``)."""
        if not self.explorers:
            return {}
        urls = {"journal": self._explorer_env("journal")[1]}
        for bank in self.replicas:
            urls[f"replica-{bank}"] = self._explorer_env(f"replica-{bank}")[1]
        return {name: f"https://{addr}" for name, addr in urls.items()}

    def _explorer_env(self, name: str) -> tuple[str, str]:
        """The variable naming ``name``'s explorer address, and the address."""
        if name == "journal":
            var = "SCF_JOURNAL_EXPLORER_ADDR"
            default = self.settings.endpoint("journal").explorer_addr or "127.0.0.1:8400"
        else:
            bank = name.removeprefix("replica-")
            var = f"SCF_REPLICA_{bank.upper().replace('-', '_')}_EXPLORER_ADDR"
            default = f"127.0.0.1:{8411 + self.replicas.index(bank)}"
        return var, os.environ.get(var) or default

    @property
    def run_dir(self) -> Path:
        return self.settings.data_dir / "run"

    def start_servers(self, fresh: bool = False) -> Settings:
        """Start embedded NATS and PostgreSQL where no URL is set; returns full settings."""
        data = self.settings.data_dir
        if fresh and data.exists():
            for part in ("nats", "pg", "run", "logs", "keys"):
                shutil.rmtree(data / part, ignore_errors=True)
        try:
            data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("SCF_DATA_DIR", f"cannot create {data}: {exc.strerror}") from None
        if not os.access(data, os.W_OK):
            raise ConfigError("SCF_DATA_DIR", f"{data} is not writable")
        ensure_certificates(self.settings.certs_dir)
        # On one machine the supervisor stands in for the operator's offline step.
        init_journal(
            self.settings.keys_dir, origin_for(self.settings.nats_prefix), SERVICE_NAMES,
            time.time_ns() // 1000,
        )  # fmt: skip
        nats_url, db_url = self.settings.nats_url, self.settings.database_url
        user, password = self.settings.nats_user, self.settings.nats_password
        if not nats_url:
            self.nats_secret = _nats_secret(data / "nats")
            # A fixed port: a NATS restarted after a crash is found where it was.
            port = free_ports(1)[0]
            self.nats = EmbeddedNats(
                data / "nats", port=port, auth_secret=self.nats_secret,
                prefix=self.settings.nats_prefix, banks=self.settings.banks,
            )  # fmt: skip
            nats_url = self.nats.start()
            user, password = ADMIN, nats_password(self.nats_secret, ADMIN)
        if not db_url:
            self.postgres = EmbeddedPostgres(data / "pg")
            db_url = self.postgres.start()
        self.settings = dataclasses.replace(
            self.settings, nats_url=nats_url, database_url=db_url, nats_user=user,
            nats_password=password,
        )  # fmt: skip
        return self.settings

    async def probe_servers(self) -> None:
        """Fail fast, naming the setting, when NATS or PostgreSQL does not answer;
        then, as the operator, make every stream, consumer and bucket."""
        nc = await connect_nats(
            self.settings.nats_url, "scf-probe", connect_timeout=2.0,
            user=self.settings.nats_user, password=self.settings.nats_password,
        )  # fmt: skip
        try:
            await provision(
                nc.jetstream(), self.settings.nats_prefix, self.settings.banks,
                replicas=self.settings.stream_replicas,
            )  # fmt: skip
        finally:
            await nc.close()
        pool = await connect_pool(self.settings.database_url, "public", max_size=1)
        await pool.close()

    def command(self, name: str) -> list[str]:
        if name.startswith("replica-"):
            return [
                sys.executable,
                "-m",
                "services.replica",
                "--bank",
                name.removeprefix("replica-"),
            ]
        return [sys.executable, "-m", f"services.{name}"]

    def addr_of(self, name: str) -> str:
        if name in self.processes and self.processes[name].grpc_addr:
            return self.processes[name].grpc_addr
        if name.startswith("replica-"):
            from services.replica.config import ReplicaSettings

            bank = name.removeprefix("replica-")
            return ReplicaSettings.from_env(bank, self.settings.database_url).grpc_addr
        return self.settings.endpoint(name).grpc_addr

    def spawn_instance(self, service: str) -> ServiceProcess:
        """Another instance of ``service`` on ports of its own (``<service>-2``, -3 …):
        it shares the schema and NATS user, and leads once the others are gone."""
        n = 2
        while f"{service}-{n}" in self.processes:
            n += 1
        port = free_ports(1)[0]
        return self.spawn(service, key=f"{service}-{n}", grpc_addr=f"127.0.0.1:{port}")

    def spawn(self, name: str, *, key: str = "", grpc_addr: str = "") -> ServiceProcess:
        """Start one service (or replica) process, again after a crash."""
        key = key or name
        logs = self.settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{key}.log"
        env = {**os.environ, **self.settings.to_env(), "SCF_LOG_FORMAT": "json"}
        if self.explorers and (name == "journal" or name.startswith("replica-")) and not grpc_addr:
            var, addr = self._explorer_env(name)
            env[var] = addr
        if grpc_addr:  # another instance: its own ports, no metrics endpoint
            var = f"SCF_{name.upper()}"
            env |= {f"{var}_ADDR": grpc_addr, f"{var}_METRICS_ADDR": ""}
        if self.nats_secret:  # each process gets its own NATS user, never the secret
            user = name  # a service's name, or replica-<bank>: a user each (permissions.py)
            env |= {
                "SCF_NATS_USER": user,
                "SCF_NATS_PASSWORD": nats_password(self.nats_secret, user),
            }
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                self.command(name),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the supervisor only
            )
        self.processes[key] = ServiceProcess(
            key, process, log_path, service=name, grpc_addr=grpc_addr
        )
        return self.processes[key]

    def respawn_dead(self) -> list[str]:
        """Start again every process that died, as a crash-only service's
        supervisor does: services exit when a background task fails (their
        database or NATS went away) and resume from their database. Not sooner
        than a second after the last start, so a service that cannot start yet
        (its database is still down) does not spin."""
        restarted = []
        for name, proc in list(self.processes.items()):
            if not proc.alive and time.monotonic() - proc.started_at >= 1.0:
                self.spawn(proc.service or name, key=name, grpc_addr=proc.grpc_addr)
                restarted.append(name)
        if restarted:
            self.write_state()
        return restarted

    async def supervise(self, stop: asyncio.Event) -> list[str]:
        """Respawn dead processes until ``stop``; returns what was restarted."""
        restarted: list[str] = []
        while not stop.is_set():
            restarted += self.respawn_dead()
            await wait_event(stop, 0.5)
        return restarted

    async def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        """Until the service answers its health check as SERVING. A replica that
        answers NOT_SERVING is up too: it holds an alarm (kept across restarts),
        which the operator reads with `scf status`, and the platform comes up."""
        proc = self.processes[name]
        up = {health_pb2.HealthCheckResponse.SERVING}
        if name.startswith("replica-"):
            up.add(health_pb2.HealthCheckResponse.NOT_SERVING)
        tls = load_party(self.settings.certs_dir, "operator")
        addr = self.addr_of(name)
        deadline = time.monotonic() + timeout
        async with client_channel(addr, tls) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if not proc.alive:
                    raise ConfigError(
                        f"SCF_{name.upper()}_ADDR",
                        f"{name} exited with code {proc.process.returncode}: {proc.tail(3)}",
                    )
                with contextlib.suppress(Exception):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status in up:
                        return
                await asyncio.sleep(0.1)
        raise ConfigError(f"SCF_{name.upper()}_ADDR", f"{name} not ready after {timeout:.0f}s")

    async def start(self, fresh: bool = False) -> None:
        # In a thread: embedded start-up blocks, and runs its own short event loop.
        await asyncio.to_thread(self.start_servers, fresh)
        await self.probe_servers()
        for name in (*self.services, *(f"replica-{bank}" for bank in self.replicas)):
            self.spawn(name)
            await self.wait_ready(name)
        self.write_state()

    def write_state(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "supervisor_pid": os.getpid(),
            "nats_url": self.settings.nats_url,
            "database_url": self.settings.database_url,
            "services": {
                name: {
                    "pid": p.process.pid,
                    "grpc_addr": self.addr_of(name),
                    "log": str(p.log_path),
                }
                for name, p in self.processes.items()
            },
        }
        (self.run_dir / "platform.json").write_text(json.dumps(state, indent=2))

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every service, SIGKILL what is still alive after ``timeout``."""
        for proc in self.processes.values():
            if proc.alive:
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "platform.json").unlink()


def read_state(settings: Settings) -> dict[str, object] | None:
    path = settings.data_dir / "run" / "platform.json"
    try:
        state: dict[str, object] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def _nats_secret(directory: Path) -> str:
    """The embedded NATS's user secret: made once, kept beside its store (0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "users.secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()
