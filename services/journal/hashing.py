"""RFC 9162 (RFC 6962) Merkle tree hashing: domain-separated SHA-256."""

from __future__ import annotations

import hashlib

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "RFC6962_LEAF_HASH_PREFIX",
    "RFC6962_NODE_HASH_PREFIX",
    "leaf_hash",
    "node_hash",
]

RFC6962_LEAF_HASH_PREFIX = b"\x00"
RFC6962_NODE_HASH_PREFIX = b"\x01"
HASH_SIZE = 32
#: The root of the empty tree: SHA-256 of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(RFC6962_LEAF_HASH_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(RFC6962_NODE_HASH_PREFIX + left + right).digest()
