"""The platform as separate OS processes, and the CLI's errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.health import check_all
from services.runtime.config import Settings
from services.runtime.platform import Platform

pytestmark = pytest.mark.integration


async def test_each_service_is_its_own_process(settings: Settings) -> None:
    platform = Platform(settings)
    try:
        await platform.start()
        pids = {name: p.process.pid for name, p in platform.processes.items()}
        assert len(set(pids.values())) == 5 and os.getpid() not in pids.values()
        addrs = {n: settings.endpoint(n).grpc_addr for n in pids}
        assert set((await check_all(settings, addrs)).values()) == {"SERVING"}

        os.kill(pids["orders"], signal.SIGKILL)
        platform.processes["orders"].process.wait(10)
        health = await check_all(settings, addrs)
        assert health["orders"].startswith("unreachable")
        assert all(health[n] == "SERVING" for n in pids if n != "orders")

        platform.spawn("orders")
        await platform.wait_ready("orders")
        assert (await check_all(settings, addrs))["orders"] == "SERVING"
    finally:
        platform.stop()
    assert all(not p.alive for p in platform.processes.values())


def _scf(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unreachable_nats_is_one_line(settings: Settings, tmp_path: Path) -> None:
    env = {
        "SCF_DATA_DIR": str(tmp_path / "d"),
        "SCF_NATS_URL": "nats://127.0.0.1:1",
        "SCF_DATABASE_URL": settings.database_url,
        **{f"SCF_{n.upper()}_ADDR": e.grpc_addr for n, e in settings.endpoints.items()},
        **{f"SCF_{n.upper()}_METRICS_ADDR": "" for n in settings.endpoints},
    }
    result = _scf(["up"], env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "SCF_NATS_URL" in result.stderr


def test_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = _scf(["certs", "init"], {"SCF_DATA_DIR": str(blocker / "sub")})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "SCF_CERTS_DIR" in result.stderr


def test_port_in_use_names_the_setting(settings: Settings, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **settings.to_env(),
            "SCF_DATA_DIR": str(tmp_path),
            "SCF_KEYS_DIR": str(tmp_path / "keys"),
            "SCF_ORDERS_ADDR": f"127.0.0.1:{port}",
        }
        result = subprocess.run(
            [sys.executable, "-m", "services.orders"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "SCF_ORDERS_ADDR" in result.stderr
    assert "Traceback" not in result.stderr


async def test_scf_up_runs_everything_and_ctrl_c_stops_it(
    settings: Settings, tmp_path: Path
) -> None:
    import asyncio
    import json

    from services.replica.config import database_beside
    from services.runtime.ports import free_port
    from tests.support import unique

    env = {
        **os.environ,
        **settings.to_env(),
        "SCF_DATA_DIR": str(tmp_path / "data"),
        "SCF_KEYS_DIR": str(tmp_path / "data" / "keys"),
        "SCF_REPLICA_BANK_NORTH_ADDR": f"127.0.0.1:{free_port()}",
        "SCF_REPLICA_BANK_SOUTH_ADDR": f"127.0.0.1:{free_port()}",
        "SCF_REPLICA_BANK_NORTH_DATABASE_URL": database_beside(settings.database_url, unique("n")),
        "SCF_REPLICA_BANK_SOUTH_DATABASE_URL": database_beside(settings.database_url, unique("s")),
        "COLUMNS": "200",
    }
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "up",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert up.stdout is not None
    try:

        async def running() -> None:
            while b"running; Ctrl-C" not in await up.stdout.readline():  # type: ignore[union-attr]
                if up.returncode is not None:
                    raise AssertionError("scf up exited")

        await asyncio.wait_for(running(), 60)
        state = json.loads((tmp_path / "data" / "run" / "platform.json").read_text())
        pids = [info["pid"] for info in state["services"].values()]
        assert len(pids) == 7  # five services and two banks' replicas
        up.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(up.wait(), 15) == 0
    finally:
        if up.returncode is None:
            up.kill()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
