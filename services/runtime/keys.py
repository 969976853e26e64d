"""Ed25519 signing keys: one per service, plus the platform root key.

A key is created on first use and stored as PKCS#8 PEM with mode 0600. Its
key id is the SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.runtime.errors import ConfigError

__all__ = ["Signer", "key_id_of", "load_or_create_signer", "public_key_from_raw"]


def key_id_of(public_raw: bytes) -> bytes:
    return hashlib.sha256(public_raw).digest()


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key."""

    name: str
    private_key: Ed25519PrivateKey

    # Derived once: deriving a public key is a scalar multiplication, and every
    # statement and message names its key.
    @functools.cached_property
    def public_raw(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @functools.cached_property
    def key_id(self) -> bytes:
        return key_id_of(self.public_raw)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def load_or_create_signer(keys_dir: Path, name: str) -> Signer:
    """The key ``name`` under ``keys_dir``, created (mode 0600) when missing."""
    path = keys_dir / f"{name}.ed25519.pem"
    try:
        keys_dir.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if path.stat().st_mode & 0o077:
                raise ConfigError("SCF_KEYS_DIR", f"{path} is readable by others: chmod 600 it")
            loaded = serialization.load_pem_private_key(path.read_bytes(), None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ConfigError("SCF_KEYS_DIR", f"{path} is not an Ed25519 key")
            return Signer(name, loaded)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # O_EXCL: two processes starting at once must not both create a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_signer(keys_dir, name)
    except OSError as exc:
        raise ConfigError("SCF_KEYS_DIR", f"cannot use {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    signer = Signer(name, key)
    # The public half, in hex, for verifiers to pin.
    (keys_dir / f"{name}.pub").write_text(signer.public_raw.hex() + "\n")
    return signer
