"""mTLS over real sockets: the certificate is the identity."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from services.gen.scf.platform.v1 import platform_pb2, platform_pb2_grpc
from services.orders.service import SPEC
from services.runtime.certs import PartySpec, ensure_certificates, load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.identity import Role
from tests.support import running

pytestmark = pytest.mark.integration

# A refused TLS handshake surfaces as UNAVAILABLE (the channel never connects);
# on a loaded machine the client's deadline can expire first while it retries.
REFUSED = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)


async def _whoami(addr: str, channel: grpc.aio.Channel) -> platform_pb2.WhoAmIResponse:
    async with channel:
        return await platform_pb2_grpc.PlatformServiceStub(channel).WhoAmI(
            platform_pb2.WhoAmIRequest(), timeout=10
        )


async def test_certificate_gives_party_and_role(settings: Settings) -> None:
    addr = settings.endpoint("orders").grpc_addr
    async with running(SPEC, settings):
        for party, role, org in [
            ("acme-builders", "subcontractor", "acme-builders"),
            ("uw-carol", "underwriter", "bank-south"),
            ("auditor-reg", "auditor", "regulator"),
        ]:
            tls = load_party(settings.certs_dir, party)
            who = await _whoami(addr, client_channel(addr, tls))
            assert (who.party_id, who.role, who.organization, who.service) == (
                party,
                role,
                org,
                "orders",
            )
            # The service's clock, in microseconds like every *_micros field.
            real = time.time_ns() // 1000
            assert abs(who.now_micros - real) < 60_000_000, who.now_micros


async def test_call_without_certificate_is_refused(settings: Settings) -> None:
    addr = settings.endpoint("orders").grpc_addr
    ca = (settings.certs_dir / "ca.pem").read_bytes()
    async with running(SPEC, settings):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _whoami(addr, client_channel(addr, None, ca=ca))
        assert info.value.code() in REFUSED, info.value


async def test_certificate_from_another_ca_is_refused(settings: Settings, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    ensure_certificates(other, (PartySpec("acme-builders", Role.SUBCONTRACTOR, "acme-builders"),))
    forged = load_party(other, "acme-builders")
    real_ca = (settings.certs_dir / "ca.pem").read_bytes()
    # The forger trusts the real server, but presents a certificate from its own CA.
    from services.runtime.certs import PartyCert

    tls = PartyCert(ca=real_ca, cert=forged.cert, key=forged.key)
    addr = settings.endpoint("orders").grpc_addr
    async with running(SPEC, settings):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _whoami(addr, client_channel(addr, tls))
        assert info.value.code() in REFUSED, info.value
