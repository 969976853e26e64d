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

__all__ = [
    "Signer",
    "key_id_of",
    "load_or_create_signer",
    "load_signer",
    "public_key_from_raw",
    "read_public_key",
]


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


def _read_signer(path: Path, name: str) -> Signer:
    # Group bits are allowed: Kubernetes mounts a Secret group-readable by the
    # pod's fsGroup, and only that pod's user is in it.
    if path.stat().st_mode & 0o007:
        raise ConfigError("SCF_KEYS_DIR", f"{path} is readable by others: chmod 600 it")
    loaded = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError("SCF_KEYS_DIR", f"{path} is not an Ed25519 key")
    return Signer(name, loaded)


def load_signer(keys_dir: Path, name: str, *, hint: str = "") -> Signer:
    """The key ``name`` under ``keys_dir``; a missing key is a configuration error
    (a running service never makes its own key: ``scf journal init`` does, and the
    journal's genesis names it)."""
    path = keys_dir / f"{name}.ed25519.pem"
    try:
        return _read_signer(path, name)
    except FileNotFoundError:
        raise ConfigError(
            "SCF_KEYS_DIR", f"no {path.name} in {keys_dir}{': ' + hint if hint else ''}"
        ) from None
    except OSError as exc:
        raise ConfigError("SCF_KEYS_DIR", f"cannot read {path}: {exc.strerror}") from None


def read_public_key(keys_dir: Path, name: str, *, hint: str = "") -> bytes:
    """The raw public key in ``<name>.pub`` (hex text) under ``keys_dir``."""
    path = keys_dir / f"{name}.pub"
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise ConfigError(
            "SCF_KEYS_DIR", f"no {path.name} in {keys_dir}{': ' + hint if hint else ''}"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError("SCF_KEYS_DIR", f"cannot read {path}: {exc}") from None
    if len(raw) != 32:
        raise ConfigError("SCF_KEYS_DIR", f"{path} does not hold a 32-byte Ed25519 key in hex")
    return raw


def load_or_create_signer(keys_dir: Path, name: str) -> Signer:
    """The key ``name`` under ``keys_dir``, created (mode 0600) when missing.
    For the operator's offline tools and tests; services use :func:`load_signer`."""
    path = keys_dir / f"{name}.ed25519.pem"
    try:
        keys_dir.mkdir(parents=True, exist_ok=True)
        if path.exists():
            return _read_signer(path, name)
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
