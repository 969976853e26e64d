"""Witness cosignatures (C2SP tlog-cosignature, version 1) and quorum checks. Pure.

A witness (a bank's replica) cosigns a checkpoint it has verified::

    — <witness name> base64( key_hash[4] || timestamp[8] || Ed25519 signature[64] )

with ``key_hash = SHA-256(name || "\\n" || 0x04 || public key)[:4]`` and the
signature over ``"cosignature/v1\\ntime <timestamp>\\n" || checkpoint body``.
A client that trusts a set of witnesses accepts a checkpoint only when the
journal signed it and at least ``quorum`` of those witnesses cosigned it.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.journal.checkpoint import CheckpointError, SignedNote, parse_note
from services.runtime.keys import Signer

__all__ = ["QuorumError", "cosign", "cosigners", "verify_quorum", "witness_key_hash"]

_COSIGNATURE_V1 = b"\x04"


class QuorumError(ValueError):
    pass


def witness_key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _COSIGNATURE_V1 + public_key).digest()[:4]


def _message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def cosign(note_text: str, witness: Signer, name: str, timestamp: int) -> str:
    """The cosignature line for a checkpoint (without its trailing newline)."""
    note = parse_note(note_text)
    sig = witness.sign(_message(note.body, timestamp))
    blob = witness_key_hash(name, witness.public_raw) + struct.pack(">Q", timestamp) + sig
    return f"— {name} {base64.b64encode(blob).decode()}"


def add_lines(note_text: str, lines: list[str]) -> str:
    """The note with further signature lines, each once."""
    present = set(note_text.rstrip("\n").split("\n"))
    extra = [line for line in lines if line not in present]
    return note_text.rstrip("\n") + "\n" + "".join(f"{line}\n" for line in extra)


def cosigners(note: SignedNote, witnesses: Mapping[str, bytes]) -> set[str]:
    """The names of ``witnesses`` whose cosignature on ``note`` verifies."""
    good = set()
    for name, key_hash, blob in note.signatures:
        public = witnesses.get(name)
        if public is None or key_hash != witness_key_hash(name, public) or len(blob) != 72:
            continue
        (timestamp,) = struct.unpack(">Q", blob[:8])
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(
                blob[8:], _message(note.body, timestamp)
            )
        except InvalidSignature:
            continue
        good.add(name)
    return good


def verify_quorum(
    note_text: str, journal_key: bytes, witnesses: Mapping[str, bytes], quorum: int
) -> SignedNote:
    """Raise unless the journal signed the checkpoint and ``quorum`` witnesses cosigned it."""
    try:
        note = parse_note(note_text)
        note.verify(note.checkpoint.origin, journal_key)
    except CheckpointError as exc:
        raise QuorumError(f"checkpoint: {exc}") from None
    got = cosigners(note, witnesses)
    if len(got) < quorum:
        have = ", ".join(sorted(got)) or "none"
        raise QuorumError(f"{len(got)} of the {quorum} cosignatures required ({have})")
    return note
