"""Signed checkpoints in the C2SP signed-note / tlog-checkpoint text format. Pure.

::

    <origin>
    <tree size, decimal>
    <root hash, base64>
    timestamp <microseconds since the Unix epoch>

    — <key name> <base64(key hash[4] || Ed25519 signature[64])>

The key hash is ``SHA-256(name || "\\n" || 0x01 || public key)[:4]`` (0x01:
Ed25519), and the signature covers the text before the blank line.
Further signature lines (cosignatures) may follow.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.runtime.keys import Signer

__all__ = ["Checkpoint", "CheckpointError", "note_key_hash", "parse_note", "sign_checkpoint"]

_ED25519 = b"\x01"


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    timestamp_micros: int

    def body(self) -> str:
        return (
            f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"
            f"timestamp {self.timestamp_micros}\n"
        )


@dataclass(frozen=True)
class SignedNote:
    checkpoint: Checkpoint
    body: str
    #: (key name, key hash, signature) for every signature line.
    signatures: tuple[tuple[str, bytes, bytes], ...]
    text: str

    def verify(self, name: str, public_key: bytes) -> None:
        """Raise unless a signature line by ``name`` with ``public_key`` verifies."""
        wanted = note_key_hash(name, public_key)
        key = Ed25519PublicKey.from_public_bytes(public_key)
        for sig_name, key_hash, sig in self.signatures:
            if sig_name == name and key_hash == wanted:
                try:
                    key.verify(sig, self.body.encode())
                except InvalidSignature:
                    raise CheckpointError(f"signature by {name} does not verify") from None
                return
        raise CheckpointError(f"no signature by {name} with the expected key")


def note_key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_key).digest()[:4]


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer, name: str) -> str:
    body = checkpoint.body()
    sig = signer.sign(body.encode())
    blob = base64.b64encode(note_key_hash(name, signer.public_raw) + sig).decode()
    return f"{body}\n— {name} {blob}\n"


def parse_note(text: str) -> SignedNote:
    body, sep, sigs = text.partition("\n\n")
    if not sep:
        raise CheckpointError("no blank line between checkpoint and signatures")
    body += "\n"
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs origin, size and root lines")
    origin, size_text, root_text = lines[:3]
    if not size_text.isdigit():
        raise CheckpointError(f"tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError:
        raise CheckpointError("root hash is not base64") from None
    if len(root) != 32:
        raise CheckpointError("root hash is not 32 bytes")
    timestamp = 0
    for extra in lines[3:]:
        key, _, value = extra.partition(" ")
        if key == "timestamp" and value.isdigit():
            timestamp = int(value)
    signatures = []
    for line in sigs.split("\n"):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "—":
            raise CheckpointError(f"malformed signature line {line!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise CheckpointError("signature is not base64") from None
        if len(blob) < 5:
            raise CheckpointError("signature too short")
        signatures.append((parts[1], blob[:4], blob[4:]))
    if not signatures:
        raise CheckpointError("checkpoint carries no signature")
    return SignedNote(
        Checkpoint(origin, int(size_text), root, timestamp), body, tuple(signatures), text
    )
