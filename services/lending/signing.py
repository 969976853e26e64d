"""A party's side of signing a contract: a key registered once, a signature per contract."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.gen.scf.lending.v1 import lending_pb2

__all__ = ["sign_contract"]


async def sign_contract(
    lending: Any, party: str, contract_id: str, digest: bytes, key_tag: str = "k"
) -> lending_pb2.SignContractResponse:
    """Register a fresh Ed25519 key for ``party`` and sign ``digest`` with it
    (``lending`` is the party's LendingService stub). A client keeps its key;
    this one, for demos and tests, makes a new one per contract."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    await lending.RegisterSigningKey(
        lending_pb2.RegisterSigningKeyRequest(
            public_key=public, idempotency_key=f"{key_tag}-key-{party}-{public.hex()[:8]}"
        ),
        timeout=10,
    )
    reply: lending_pb2.SignContractResponse = await lending.SignContract(
        lending_pb2.SignContractRequest(
            contract_id=contract_id,
            signature=key.sign(digest),
            idempotency_key=f"{key_tag}-sign-{party}-{contract_id}",
        ),
        timeout=10,
    )
    return reply
