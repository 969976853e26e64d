"""The signed envelope between services (pure): every check refuses what it must."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.contracts.envelope import EnvelopeRefused, open_envelope, seal, signed_bytes
from services.contracts.values import BUCKETS, enum_name, lease_option_value
from services.gen.scf.bus.v1 import bus_pb2
from services.runtime.keys import Signer

LENDING = Signer("lending", Ed25519PrivateKey.generate())
SCORING = Signer("scoring", Ed25519PrivateKey.generate())
NOW = 1_800_000_000_000_000


async def registered(producer: str, key_id: bytes, message: bytes, signature: bytes) -> None:
    """The key set of this test: lending's and scoring's keys, each its own."""
    key = {"lending": LENDING, "scoring": SCORING}[producer]
    if key.key_id != key_id:
        raise ValueError(f"key is not {producer}'s")
    try:
        key.private_key.public_key().verify(signature, message)
    except InvalidSignature:
        raise ValueError("signature does not verify") from None


def _sealed(**changes: object) -> bytes:
    body = bus_pb2.PledgeCommand(order_id="ORD-1", application_id="APP-1").SerializeToString()
    return seal(LENDING, "orders.pledge.request", "r-1", body, now_micros=NOW, **changes)  # type: ignore[arg-type]


async def _open(data: bytes, **changes: object) -> bus_pb2.Signed:
    options: dict[str, object] = {
        "purpose": "orders.pledge.request", "signers": ("lending",), "verify": registered,
        "now_micros": NOW + 1,
    }  # fmt: skip
    return await open_envelope(data, **(options | changes))  # type: ignore[arg-type]


async def test_a_sealed_command_opens_for_its_purpose_and_signer() -> None:
    env = await _open(_sealed(), request_id="r-1")
    assert bus_pb2.PledgeCommand.FromString(env.body).order_id == "ORD-1"
    assert env.signer == "lending" and env.expires_micros == NOW + 30_000_000


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"purpose": "orders.release.request"}, "signed for"),
        ({"signers": ("repayment",)}, "only repayment may send this"),
        ({"request_id": "r-2"}, "an answer to request"),
        ({"now_micros": NOW + 30_000_001}, "expired"),
    ],
)
async def test_each_check_refuses(change: dict[str, object], problem: str) -> None:
    with pytest.raises(EnvelopeRefused, match=problem):
        await _open(_sealed(), **change)


async def test_tampered_bytes_and_borrowed_names_are_refused() -> None:
    env = bus_pb2.Signed.FromString(_sealed())
    for field, value in (
        ("body", b"\x0a\x05ORD-2"),
        ("expires_micros", NOW + 10**12),
        ("request_id", "r-9"),
        ("key_id", SCORING.key_id),
    ):
        forged = bus_pb2.Signed()
        forged.CopyFrom(env)
        setattr(forged, field, value)
        with pytest.raises(EnvelopeRefused):
            await _open(forged.SerializeToString(), signers=("lending", "scoring"))
    # Scoring's own key, claiming to be lending.
    claimed = bus_pb2.Signed()
    claimed.CopyFrom(env)
    claimed.signature = SCORING.sign(
        signed_bytes(
            env.purpose, env.request_id, "lending", env.key_id, env.expires_micros, env.body
        )
    )
    with pytest.raises(EnvelopeRefused, match="does not verify"):
        await _open(claimed.SerializeToString())
    with pytest.raises(EnvelopeRefused, match="not a signed envelope"):
        await _open(b"\xff\xfe garbage")


async def test_an_event_does_not_expire() -> None:
    env = await _open(_sealed(ttl_micros=None), now_micros=NOW + 10**15)
    assert env.expires_micros == 0


def test_enum_names_round_trip() -> None:
    for name in ("purchase", "return", "renew", "terminate"):
        assert enum_name(bus_pb2.LeaseOption, lease_option_value(name)) == name
    assert lease_option_value("") == lease_option_value("sell") == 0
    assert enum_name(bus_pb2.LeaseOption, 0) == ""
    assert len(set(BUCKETS.values())) == 5
