"""NATS users per service: the platform runs under them, and none can speak for another."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import grpc
import nats
import nats.errors
import pytest
from nats.aio.msg import Msg

from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.nats_auth import nats_password, server_authorization
from services.runtime.platform import Platform
from tests.journal.helpers import Heard, wait_on_platform
from tests.orders.helpers import CONTRACT, register_request

pytestmark = pytest.mark.integration


def test_every_service_has_a_user_and_the_config_is_json() -> None:
    config = server_authorization("s3cret", "scf", ("bank-north", "bank-south"))
    users = json.loads(config.removeprefix("authorization "))["users"]
    names = {u["user"] for u in users}
    assert names == {
        "journal", "orders", "scoring", "lending", "repayment", "replica-bank-north",
        "replica-bank-south", "admin",
    }  # fmt: skip
    assert len({u["password"] for u in users}) == len(users)  # one password each
    for u in users:
        if u["user"] == "admin":
            continue
        allowed = [*u["permissions"]["publish"]["allow"], *u["permissions"]["subscribe"]["allow"]]
        # No blanket grants: not everything, not the whole JetStream API, not a KV write.
        assert not {">", "$JS.API.>", "scf.>", "$KV.>"} & set(allowed), u["user"]
        assert not [a for a in allowed if a.startswith(("$KV.", "$JS.API.STREAM.CREATE"))]
        # Every publish is its own service's name or a subject its row requests.
        assert f"_INBOX_{u['user'].replace('-', '_')}.>" in u["permissions"]["subscribe"]["allow"]


async def test_the_platform_runs_under_its_users_and_none_speaks_for_another(
    settings: Settings, tmp_path: Path
) -> None:
    # The supervisor starts its own NATS with users (as `scf up` does), on a
    # data directory of this test's own.
    platform = Platform(dataclasses.replace(settings, nats_url="", data_dir=tmp_path / "p"))
    try:
        await platform.start()
        s = platform.settings
        assert s.nats_user == "admin"

        # Orders, the journal and their relays work under their own users: an order
        # registered and confirmed comes back journaled.
        addr = s.endpoint("orders").grpc_addr
        async with (
            client_channel(addr, load_party(s.certs_dir, "acme-builders")) as sub_ch,
            client_channel(addr, load_party(s.certs_dir, "citybuild")) as buy_ch,
        ):
            oid = (
                await orders_pb2_grpc.OrdersServiceStub(sub_ch).RegisterOrder(
                    register_request("PO-NATS-1")
                )
            ).order.order_id
            buyer = orders_pb2_grpc.OrdersServiceStub(buy_ch)
            await buyer.ConfirmOrder(
                orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key="c")
            )

            async def journaled() -> bool:
                try:
                    card = await buyer.VerifyOrder(
                        orders_pb2.VerifyOrderRequest(order_id=oid, contract_sha256=CONTRACT)
                    )
                except grpc.aio.AioRpcError:  # not yet in a checkpoint
                    return False
                return len(card.entries) == 2

            await wait_on_platform(settings, journaled, "the order's two entries journaled")

        secret, prefix = platform.nats_secret, s.nats_prefix
        refusals = Heard()

        async def on_error(exc: Exception) -> None:
            refusals.append(str(exc))

        orders = await nats.connect(
            s.nats_url, user="orders", password=nats_password(secret, "orders"), error_cb=on_error
        )
        admin = await nats.connect(
            s.nats_url, user="admin", password=nats_password(secret, "admin")
        )
        try:
            seen: asyncio.Queue[Msg] = asyncio.Queue()

            async def arrived(msg: Msg) -> None:
                await seen.put(msg)

            forged = tuple(
                f"{prefix}.{subject}"
                for subject in (
                    "lending.disbursed", "repayment.settled", "journal.submit.lending",
                    "journal.entries.orders", "journaled.lending",
                )
            )  # fmt: skip
            own = f"{prefix}.journal.submit.orders"  # what orders may publish
            for subject in (*forged, own):
                await admin.subscribe(subject, cb=arrived)
            await admin.flush()
            for subject in forged:
                await orders.publish(subject, b"forged by orders")
            await orders.publish(own, b"its own")
            await orders.flush()
            # One connection's messages arrive in order: the first to arrive is the
            # allowed one, so none of the forged ones went through.
            first = await asyncio.wait_for(seen.get(), 10)
            assert (first.subject, first.data) == (own, b"its own")
            assert seen.empty()

            await refusals.at_least(len(forged), 10, "the server's permission refusals")
            assert all("permissions violation" in r.lower() for r in refusals), refusals

            with pytest.raises(nats.errors.Error):
                await nats.connect(
                    s.nats_url, user="orders", password="wrong", max_reconnect_attempts=0,
                    allow_reconnect=False, connect_timeout=2,
                )  # fmt: skip
        finally:
            await orders.close()
            await admin.close()
    finally:
        platform.stop()


async def test_services_reach_a_tls_only_nats_with_the_platform_ca(
    certs_dir: Path, tmp_path: Path
) -> None:
    from services.runtime.bus import connect_nats
    from services.runtime.embedded import EmbeddedNats
    from services.runtime.errors import ConfigError

    server = EmbeddedNats(tmp_path / "nats")
    party = certs_dir / "parties"
    cert, key = party / "journal.pem", party / "journal.key"  # names 127.0.0.1
    url = server.start(extra_args=("--tls", "--tlscert", str(cert), "--tlskey", str(key)))
    try:
        tls_url = url.replace("nats://", "tls://")
        nc = await connect_nats(tls_url, "tls-test", ca_file=certs_dir / "ca.pem")
        try:
            reply = await nc.request("$JS.API.INFO", b"", timeout=5)
            assert b"memory" in reply.data  # a JetStream answer, over TLS
        finally:
            await nc.close()
        # Without the platform CA the server's certificate is not trusted.
        with pytest.raises(ConfigError, match="SCF_NATS_URL"):
            await connect_nats(tls_url, "tls-test", connect_timeout=1)
    finally:
        server.stop()
