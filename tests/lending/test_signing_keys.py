"""Signing keys: a party registers, replaces, and takes back keys; each change journaled once."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.gen.scf.lending.v1 import lending_pb2
from services.runtime.config import Settings
from tests.lending.helpers import lending_env

pytestmark = pytest.mark.integration


def _public() -> bytes:
    key = Ed25519PrivateKey.generate()
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


async def test_keys_replaced_and_taken_back_are_each_one_entry(settings: Settings) -> None:
    async with lending_env(settings) as env:
        lending = env.lending("acme-builders")
        first, second = _public(), _public()
        for n, key in enumerate((first, second, first, first)):
            await lending.RegisterSigningKey(
                lending_pb2.RegisterSigningKeyRequest(public_key=key, idempotency_key=f"k{n}")
            )
        rows = await env.orders.sql(
            "SELECT idempotency_key FROM outbox WHERE idempotency_key LIKE 'party/acme-builders/%'"
            " ORDER BY id",
            service="lending",
        )
        # first, second, first again; registering the key in force changes nothing.
        assert [r["idempotency_key"] for r in rows] == [
            f"party/acme-builders/key/v{v}" for v in (1, 2, 3)
        ]


async def test_an_auditor_or_the_operator_registers_no_key(settings: Settings) -> None:
    import grpc

    async with lending_env(settings) as env:
        for party in ("auditor-reg", "operator"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await env.lending(party).RegisterSigningKey(
                    lending_pb2.RegisterSigningKeyRequest(public_key=_public(), idempotency_key="k")
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        rows = await env.orders.sql(
            "SELECT count(*) AS n FROM outbox WHERE idempotency_key LIKE 'party/%'",
            service="lending",
        )
        assert rows[0]["n"] == 0
        keys = await env.orders.sql("SELECT count(*) AS n FROM signing_keys", service="lending")
        assert keys[0]["n"] == 0
