"""Offline check of a receipt, with the journal's public key alone. Pure."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.journal.checkpoint import CheckpointError, parse_note
from services.journal.encoding import EncodingError, Entry, decode_entry
from services.journal.hashing import leaf_hash
from services.journal.keyset import KEYS_SUBJECT, PLATFORM_PRODUCER
from services.journal.proofs import ProofError, verify_inclusion
from services.journal.witness import QuorumError, verify_quorum
from services.runtime.keys import key_id_of

__all__ = ["ReceiptError", "verify_receipt"]


class ReceiptError(ValueError):
    pass


def _proven_entry(part: Any, size: int, root: bytes, what: str) -> Entry:
    try:
        leaf = base64.b64decode(part["leaf"], validate=True)
        proof = [base64.b64decode(p, validate=True) for p in part["inclusion_proof"]]
        seq = int(part["seq"])
        verify_inclusion(seq, size, leaf_hash(leaf), proof, root)
        entry = decode_entry(leaf)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProofError):
            raise ReceiptError(f"{what} is not in the checkpointed tree: {exc}") from None
        if isinstance(exc, EncodingError):
            raise ReceiptError(f"{what} is malformed: {exc}") from None
        raise ReceiptError(f"{what} is malformed: {exc!r}") from None
    if entry.seq != seq:
        raise ReceiptError(f"{what} says sequence {entry.seq}, the receipt says {seq}")
    return entry


def _check_signature(entry: Entry, public_key: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(entry.signature, entry.signed_bytes())
    except (InvalidSignature, EncodingError):
        raise ReceiptError(f"entry {entry.seq}: producer signature does not verify") from None


def verify_receipt(
    text: str,
    journal_public_key: bytes,
    root_public_key: bytes | None = None,
    witnesses: Mapping[str, bytes] | None = None,
    quorum: int = 0,
) -> Entry:
    """Check a receipt; returns the proven entry, raises :class:`ReceiptError`.

    The checkpoint must be signed by ``journal_public_key`` (and cosigned by
    ``quorum`` of ``witnesses``); the entry must be in that tree, and so must
    the entry that registered the producer's key. With ``root_public_key``, the
    key entry's own signature is checked too.
    """
    try:
        receipt = json.loads(text)
        note = parse_note(receipt["checkpoint"])
        note.verify(note.checkpoint.origin, journal_public_key)
        if quorum:
            verify_quorum(note.text, journal_public_key, witnesses or {}, quorum)
    except (ValueError, KeyError, TypeError) as exc:
        raise ReceiptError(f"checkpoint: {exc}") from None
    except (CheckpointError, QuorumError) as exc:
        raise ReceiptError(f"checkpoint: {exc}") from None
    size, root = note.checkpoint.size, note.checkpoint.root
    entry = _proven_entry(receipt.get("entry"), size, root, "entry")
    st = entry.statement
    if st.producer == PLATFORM_PRODUCER:
        if root_public_key is None:
            raise ReceiptError("a platform entry's signature needs the platform root key")
        _check_signature(entry, root_public_key)
        return entry
    key_entry = _proven_entry(receipt.get("key_entry"), size, root, "key entry")
    if key_entry.statement.producer != PLATFORM_PRODUCER:
        raise ReceiptError("the key entry is not a platform key entry")
    if key_entry.statement.subject != KEYS_SUBJECT:
        raise ReceiptError(f"the key entry is not on {KEYS_SUBJECT}")
    if key_entry.seq >= entry.seq:
        raise ReceiptError(
            f"the key entry ({key_entry.seq}) comes after the entry ({entry.seq}):"
            " a key vouches only for what it signed after it was registered"
        )
    if root_public_key is not None:
        _check_signature(key_entry, root_public_key)
    body = json.loads(key_entry.statement.payload)
    for k in body.get("keys") or [body]:
        public = bytes.fromhex(k.get("public_key", ""))
        if key_id_of(public) == st.key_id and k.get("producer") == st.producer:
            _check_signature(entry, public)
            return entry
    raise ReceiptError(f"the key entry does not register the key of {st.producer}")
