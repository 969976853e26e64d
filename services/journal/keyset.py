"""Producer keys, as the journal itself declares them. Pure.

The platform root key is the trust anchor. Entry 0 (``keys.genesis``), signed
by it, registers the services' keys; later ``keys.registered`` and
``keys.revoked`` entries, also signed by the root key, rotate and revoke.
An entry signed by a key that is unknown, revoked, or registered to another
producer is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.journal.encoding import Entry
from services.runtime.keys import key_id_of

__all__ = [
    "PLATFORM_PRODUCER",
    "KeyRefused",
    "KeySet",
    "ProducerKey",
    "canonical_json",
    "genesis_payload",
]

PLATFORM_PRODUCER = "platform"
KEYS_SUBJECT = "journal/keys"
EV_GENESIS = "keys.genesis"
EV_REGISTERED = "keys.registered"
EV_REVOKED = "keys.revoked"


def canonical_json(value: Any) -> bytes:
    """The one JSON encoding of payloads: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class KeyRefused(ValueError):
    """A statement's key is not acceptable."""


@dataclass(frozen=True)
class ProducerKey:
    producer: str
    public_key: bytes
    registered_at: int
    revoked_at: int | None = None

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.public_key)


def genesis_payload(origin: str, keys: dict[str, bytes]) -> bytes:
    return canonical_json(
        {
            "origin": origin,
            "keys": [{"producer": p, "public_key": k.hex()} for p, k in sorted(keys.items())],
        }
    )


@dataclass
class KeySet:
    root_public_key: bytes
    keys: dict[bytes, ProducerKey] = field(default_factory=dict)
    #: The checkpoint key name (the journal's origin), from the genesis entry.
    origin: str = ""
    _verifiers: dict[bytes, Ed25519PublicKey] = field(default_factory=dict)
    #: signature -> message, for signatures already verified (a batch's).
    _verified: dict[bytes, bytes] = field(default_factory=dict)

    def key_for(self, producer: str, key_id: bytes) -> bytes:
        """The public key ``key_id`` if ``producer`` may sign with it now; raises otherwise."""
        short = key_id.hex()[:16]
        if producer == PLATFORM_PRODUCER:
            if key_id != key_id_of(self.root_public_key):
                raise KeyRefused("a platform statement not signed by the platform root key")
            return self.root_public_key
        key = self.keys.get(key_id)
        if key is None:
            raise KeyRefused(f"unknown key {short}… for {producer}")
        if key.producer != producer:
            raise KeyRefused(f"key {short}… belongs to {key.producer}")
        if key.revoked_at is not None:
            raise KeyRefused(f"key {short}… was revoked at {key.revoked_at}")
        return key.public_key

    def verify(self, producer: str, key_id: bytes, message: bytes, signature: bytes) -> None:
        """Raise :class:`KeyRefused` unless ``producer``'s key signed ``message``.

        A batch's signature is checked once; its other entries hit the cache.
        """
        public = self.key_for(producer, key_id)
        if self._verified.get(signature) == message:
            return
        verifier = self._verifiers.get(public)
        if verifier is None:
            verifier = self._verifiers[public] = Ed25519PublicKey.from_public_bytes(public)
        try:
            verifier.verify(signature, message)
        except InvalidSignature:
            raise KeyRefused(f"signature of {producer} does not verify") from None
        if len(self._verified) >= 256:
            self._verified.clear()
        self._verified[signature] = message

    def check_entry(self, entry: Entry) -> None:
        """The entry's batch proof and producer signature, or :class:`KeyRefused`."""
        st = entry.statement
        try:
            message = entry.signed_bytes()
        except ValueError as exc:
            raise KeyRefused(f"batch proof: {exc}") from None
        self.verify(st.producer, st.key_id, message, entry.signature)

    def journal_keys(self, at_size: int | None = None) -> list[ProducerKey]:
        """Keys that may sign a checkpoint (of ``at_size`` entries: not revoked by then)."""
        return [
            k
            for k in self.keys.values()
            if k.producer == "journal"
            and (k.revoked_at is None or (at_size is not None and k.revoked_at >= at_size))
        ]

    def apply(self, entry: Entry) -> None:
        """Take in a key entry (already signature-checked). Others are ignored.

        A platform statement is a key entry: on subject ``journal/keys``, one of
        the three events, its payload canonical JSON with exactly the listed fields."""
        st = entry.statement
        if st.producer != PLATFORM_PRODUCER:
            return
        if st.subject != KEYS_SUBJECT:
            raise KeyRefused(
                f"a platform statement on {st.subject!r}; key entries are on {KEYS_SUBJECT}"
            )
        if (entry.seq == 0) != (st.event_type == EV_GENESIS):
            raise KeyRefused("the genesis entry must be entry 0, and only entry 0")
        try:
            body = json.loads(st.payload)
            if canonical_json(body) != st.payload:
                raise KeyRefused("a key entry's payload is not canonical JSON")
            _expect_fields(st.event_type, body)
            if st.event_type == EV_GENESIS:
                self.origin = str(body["origin"])
                for k in body["keys"]:
                    self._register(str(k["producer"]), bytes.fromhex(k["public_key"]), entry.seq)
            elif st.event_type == EV_REGISTERED:
                self._register(str(body["producer"]), bytes.fromhex(body["public_key"]), entry.seq)
            elif st.event_type == EV_REVOKED:
                kid = bytes.fromhex(body["key_id"])
                if kid not in self.keys:
                    raise KeyRefused(f"revocation of unknown key {kid.hex()[:16]}…")
                if self.keys[kid].revoked_at is not None:
                    raise KeyRefused(f"key {kid.hex()[:16]}… is revoked already")
                self.keys[kid] = replace(self.keys[kid], revoked_at=entry.seq)
            else:
                raise KeyRefused(f"unknown key event {st.event_type}")
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, KeyRefused):
                raise
            raise KeyRefused(f"malformed key entry: {exc!r}") from None

    def _register(self, producer: str, public_key: bytes, seq: int) -> None:
        if len(public_key) != 32:
            raise KeyRefused(f"public key of {producer} is not 32 bytes")
        kid = key_id_of(public_key)
        if kid in self.keys:
            raise KeyRefused(f"key {kid.hex()[:16]}… is registered already")
        self.keys[kid] = ProducerKey(producer, public_key, seq)


#: The fields of each key event's payload, exactly (docs/journal-format.md).
_FIELDS = {
    EV_GENESIS: {"origin", "keys"},
    EV_REGISTERED: {"producer", "public_key"},
    EV_REVOKED: {"key_id"},
}


def _expect_fields(event_type: str, body: Any) -> None:
    wanted = _FIELDS.get(event_type)
    if wanted is None:
        raise KeyRefused(f"unknown key event {event_type}")
    if not isinstance(body, dict) or set(body) != wanted:
        raise KeyRefused(f"a {event_type} payload has exactly the fields {sorted(wanted)}")
    if event_type == EV_GENESIS:
        keys = body["keys"]
        if not isinstance(keys, list) or any(
            not isinstance(k, dict) or set(k) != _FIELDS[EV_REGISTERED] for k in keys
        ):
            raise KeyRefused("each genesis key has exactly the fields ['producer', 'public_key']")
