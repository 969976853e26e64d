"""The Node.js example client (examples/node), written from protos/ and docs/
alone, finances an order end to end against the platform's processes and
verifies the order's history against the journal; the Python side then checks
that what it claims happened did."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.platform import Platform

pytestmark = [pytest.mark.integration, pytest.mark.long]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"


def _install() -> None:
    if not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").exists():
        subprocess.run(
            ["npm", "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=EXAMPLE, check=True, timeout=300,
        )  # fmt: skip


async def test_the_node_client_finances_an_order_and_verifies_it(settings: Settings) -> None:
    assert shutil.which("node"), "Node.js runs the example client (.ci/run installs it)"
    await asyncio.to_thread(_install)
    platform = Platform(settings)
    try:
        await platform.start()
        env = {
            **os.environ,
            "SCF_CERTS_DIR": str(settings.certs_dir),
            "SCF_KEYS_DIR": str(settings.keys_dir),
            **{f"SCF_{n.upper()}_ADDR": settings.endpoint(n).grpc_addr
               for n in ("orders", "lending", "journal")},
        }  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            "node", "financing.mjs", cwd=EXAMPLE, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 180)
        text = out.decode() + err.decode()
        print(text)  # what a developer sees (pytest -s)
        assert process.returncode == 0, text
        result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
        assert result["events"][:3] == ["order.registered", "order.confirmed", "order.pledged"]

        # What the client says happened, read back from the platform.
        tls = load_party(settings.certs_dir, "acme-builders")
        async with client_channel(settings.endpoint("lending").grpc_addr, tls) as channel:
            app = (
                await lending_pb2_grpc.LendingServiceStub(channel).GetApplication(
                    lending_pb2.GetApplicationRequest(application_id=result["application_id"]),
                    timeout=10,
                )
            ).application
        assert (
            app.order_id == result["order_id"]
            and app.state == lending_pb2.APPLICATION_STATE_DISBURSED
        )
        assert app.contract.contract_id == result["contract_id"]
        assert set(app.contract.signed_by) == set(app.contract.signers)
    finally:
        platform.stop()
