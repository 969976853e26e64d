"""The journal's genesis, made offline by the holder of the platform root key.

No running process holds the root's private key. ``scf journal init`` signs
entry 0 (``keys.genesis``: the journal's origin and every service's public
key) on the operator's machine and writes it as a signed batch beside the
root's public half; the journal sequences that batch into an empty store and
refuses to start without it. Key rotations are signed the same way
(:func:`key_statement`) and only carried by the journal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.journal.encoding import (
    EncodingError,
    SignedBatch,
    Statement,
    batch_root,
    batch_signed_bytes,
    decode_batch,
    sign_batch,
)
from services.journal.keyset import (
    EV_GENESIS,
    KEYS_SUBJECT,
    PLATFORM_PRODUCER,
    KeyRefused,
    KeySet,
    canonical_json,
    genesis_payload,
)
from services.runtime.errors import ConfigError
from services.runtime.keys import Signer, key_id_of, load_or_create_signer, read_public_key

__all__ = [
    "GENESIS_FILE",
    "ROOT_KEY_NAME",
    "init_journal",
    "key_statement",
    "load_genesis",
    "load_root_public",
    "origin_for",
    "verify_root_batch",
]

ROOT_KEY_NAME = "platform-root"
GENESIS_FILE = "journal-genesis.batch"
_INIT_HINT = "make it offline with `scf journal init` (docs/operations.md)"


def origin_for(prefix: str) -> str:
    """The checkpoint origin (and note key name) of the journal under ``prefix``."""
    return f"scf.journal/{prefix}"


def key_statement(
    event_type: str, body: object, idempotency_key: str, produced_micros: int, root_key_id: bytes
) -> Statement:
    """A key entry's statement: the bytes the root key signs, built alike by the
    offline signer and by the journal that checks the signature."""
    return Statement(
        producer=PLATFORM_PRODUCER,
        key_id=root_key_id,
        produced_micros=produced_micros,
        subject=KEYS_SUBJECT,
        event_type=event_type,
        idempotency_key=idempotency_key,
        payload=canonical_json(body),
    )


def verify_root_batch(batch: SignedBatch, root_public: bytes) -> None:
    """Raise :class:`KeyRefused` unless the platform root key signed ``batch``."""
    if batch.producer != PLATFORM_PRODUCER or batch.key_id != key_id_of(root_public):
        raise KeyRefused("not signed by the platform root key")
    message = batch_signed_bytes(
        batch.producer, batch.key_id, len(batch.statements), batch_root(batch.statements)
    )
    KeySet(root_public).verify(PLATFORM_PRODUCER, batch.key_id, message, batch.signature)


def load_root_public(keys_dir: Path) -> bytes:
    return read_public_key(keys_dir, ROOT_KEY_NAME, hint=_INIT_HINT)


def load_genesis(keys_dir: Path, root_public: bytes, origin: str) -> SignedBatch:
    """The genesis batch in ``keys_dir``, checked: one ``keys.genesis`` statement
    for ``origin``, signed by the root key. Any fault is a configuration error."""
    path = keys_dir / GENESIS_FILE
    try:
        batch = decode_batch(path.read_bytes())
        verify_root_batch(batch, root_public)
        if len(batch.statements) != 1:
            raise ValueError(f"{len(batch.statements)} statements, not one")
        statement = batch.decoded[0]
        body = json.loads(statement.payload)
    except FileNotFoundError:
        raise ConfigError(
            "SCF_KEYS_DIR", f"no {GENESIS_FILE} in {keys_dir}: {_INIT_HINT}"
        ) from None
    except (OSError, EncodingError, KeyRefused, ValueError) as exc:
        raise ConfigError(
            "SCF_KEYS_DIR", f"{path} is not a genesis the root signed: {exc}"
        ) from None
    if statement.event_type != EV_GENESIS or statement.subject != KEYS_SUBJECT:
        raise ConfigError("SCF_KEYS_DIR", f"{path} holds a {statement.event_type}, not a genesis")
    if not isinstance(body, dict) or body.get("origin") != origin:
        raise ConfigError("SCF_KEYS_DIR", f"{path} is the genesis of another journal, not {origin}")
    return batch


def init_journal(
    keys_dir: Path, origin: str, producers: tuple[str, ...], produced_micros: int
) -> tuple[Path, bool]:
    """Make the root key (when missing), every producer's key (when missing) and
    the genesis batch naming them. Returns the genesis path and whether it was
    made now; an existing genesis is checked and kept (the journal's entry 0
    cannot change)."""
    root = load_or_create_signer(keys_dir, ROOT_KEY_NAME)
    path = keys_dir / GENESIS_FILE
    if path.exists():
        load_genesis(keys_dir, root.public_raw, origin)
        return path, False
    keys = {p: load_or_create_signer(keys_dir, p).public_raw for p in producers}
    batch = make_genesis(root, origin, keys, produced_micros)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(batch.encode())
    os.replace(tmp, path)
    return path, True


def make_genesis(
    root: Signer, origin: str, keys: dict[str, bytes], produced_micros: int
) -> SignedBatch:
    body = json.loads(genesis_payload(origin, keys))
    statement = key_statement(EV_GENESIS, body, "genesis", produced_micros, root.key_id)
    return sign_batch(PLATFORM_PRODUCER, root.key_id, root.sign, [statement.encode()])
