"""Every signer reads what it signs: GetContract gives the buyer (who may not
read the application) the exact document, its digest and who has signed."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.gen.scf.lending.v1 import lending_pb2
from services.lending.signing import sign_contract
from services.runtime.config import Settings
from tests.lending.helpers import lending_env

pytestmark = pytest.mark.integration


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_the_buyer_reads_the_contract_it_signs(settings: Settings) -> None:
    async with lending_env(settings) as env:
        await env.facility()
        app_id = await env.request(await env.confirmed_order("PO-CON1"), "500000.00")
        await env.wait_state(app_id, "referred")
        await env.approve(app_id, "uw-alice", "500000.00", "con-a1")
        contract_id = (await env.get(app_id)).contract.contract_id
        buyer = env.lending("citybuild")
        ask = lending_pb2.GetContractRequest(contract_id=contract_id)
        # The buyer may not read the application, but may read what it signs.
        assert await _code(buyer.GetApplication(
            lending_pb2.GetApplicationRequest(application_id=app_id))
        ) == grpc.StatusCode.PERMISSION_DENIED  # fmt: skip
        read = await buyer.GetContract(ask)
        contract = read.contract
        assert read.application_id == app_id and contract.contract_id == contract_id
        # What is signed: the raw SHA-256 of the document's UTF-8 bytes.
        assert contract.sha256 == hashlib.sha256(contract.document.encode()).digest()
        assert "citybuild" in contract.signers and not contract.signed_by
        assert contract.document.count(app_id) >= 1

        # The buyer signs with what it read; then the others.
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        await buyer.RegisterSigningKey(
            lending_pb2.RegisterSigningKeyRequest(public_key=public, idempotency_key="con-k")
        )
        await buyer.SignContract(lending_pb2.SignContractRequest(
            contract_id=contract_id, signature=key.sign(contract.sha256),
            idempotency_key="con-s",
        ))  # fmt: skip
        for party in ("acme-builders", "uw-bob"):
            await sign_contract(env.lending(party), party, contract_id, contract.sha256)
        signed = (await env.lending("acme-builders").GetContract(ask)).contract
        by_signer = {s.signer: s for s in signed.signatures}
        assert set(by_signer) == set(signed.signers) == set(signed.signed_by)
        # The bank signs as an organisation; the signature names the person.
        assert by_signer["bank-north"].party_id == "uw-bob"
        assert by_signer["citybuild"].party_id == "citybuild"
        assert by_signer["citybuild"].key_id == hashlib.sha256(public).digest()
        key.public_key().verify(by_signer["citybuild"].signature, signed.sha256)

        # Whoever is not a party learns nothing; an unknown id is NOT_FOUND.
        for stranger in ("harbor-works", "uw-carol", "delta-pumps"):
            assert await _code(env.lending(stranger).GetContract(ask)) == (
                grpc.StatusCode.PERMISSION_DENIED
            ), stranger
        missing = lending_pb2.GetContractRequest(contract_id="CON-NOSUCH")
        assert await _code(buyer.GetContract(missing)) == grpc.StatusCode.NOT_FOUND

        # The buyer may also ask by the application its order's pledge names,
        # with the same rights; never by both, nor by neither.
        by_app = lending_pb2.GetContractRequest(application_id=app_id)
        assert (await buyer.GetContract(by_app)).contract == signed
        assert await _code(env.lending("harbor-works").GetContract(by_app)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        for bad in (
            lending_pb2.GetContractRequest(),
            lending_pb2.GetContractRequest(contract_id=contract_id, application_id=app_id),
        ):
            assert await _code(buyer.GetContract(bad)) == grpc.StatusCode.INVALID_ARGUMENT
        nothing = lending_pb2.GetContractRequest(application_id="APP-NOSUCH")
        assert await _code(buyer.GetContract(nothing)) == grpc.StatusCode.NOT_FOUND
