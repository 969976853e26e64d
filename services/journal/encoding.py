"""The journal's canonical byte layouts. Pure; docs/journal-format.md is the spec.

A *statement* is what a producer signs: who, about what, which event, with
which payload. An *entry* (a Merkle leaf) is a statement, its signature, and
what the journal adds: sequence number, time, and the previous leaf's hash.
All integers are big-endian; strings are UTF-8 with a length prefix.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from services.journal.hashing import HASH_SIZE, leaf_hash

__all__ = [
    "ENTRY_VERSION",
    "GENESIS_PREV_HASH",
    "STATEMENT_TAG",
    "EncodingError",
    "Entry",
    "Statement",
    "decode_entry",
    "decode_statement",
]

STATEMENT_TAG = b"scf-journal-statement-v1\n"
ENTRY_VERSION = 1
SIGNATURE_SIZE = 64
KEY_ID_SIZE = 32
GENESIS_PREV_HASH = bytes(HASH_SIZE)

_MAX = {"producer": 255, "subject": 65_535, "event_type": 255, "idempotency_key": 255}
_MAX_PAYLOAD = 1 << 20


class EncodingError(ValueError):
    """Bytes that are not a well-formed statement or entry; ``field`` says where."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Statement:
    """What a producer signs."""

    producer: str
    key_id: bytes
    produced_micros: int
    subject: str
    event_type: str
    idempotency_key: str
    payload: bytes

    def encode(self) -> bytes:
        if len(self.key_id) != KEY_ID_SIZE:
            raise EncodingError("key_id", f"must be {KEY_ID_SIZE} bytes")
        if len(self.payload) > _MAX_PAYLOAD:
            raise EncodingError("payload", f"longer than {_MAX_PAYLOAD} bytes")
        parts = [STATEMENT_TAG]
        parts.append(_str8("producer", self.producer))
        parts.append(self.key_id)
        parts.append(struct.pack(">q", self.produced_micros))
        parts.append(_str16("subject", self.subject))
        parts.append(_str8("event_type", self.event_type))
        parts.append(_str8("idempotency_key", self.idempotency_key))
        parts.append(struct.pack(">I", len(self.payload)))
        parts.append(self.payload)
        return b"".join(parts)


@dataclass(frozen=True)
class Entry:
    """One journal entry: a Merkle leaf."""

    seq: int
    time_micros: int
    prev_hash: bytes
    statement: Statement
    signature: bytes

    def encode(self) -> bytes:
        if len(self.prev_hash) != HASH_SIZE:
            raise EncodingError("prev_hash", f"must be {HASH_SIZE} bytes")
        if len(self.signature) != SIGNATURE_SIZE:
            raise EncodingError("signature", f"must be {SIGNATURE_SIZE} bytes")
        body = self.statement.encode()
        return b"".join(
            (
                struct.pack(">BQq", ENTRY_VERSION, self.seq, self.time_micros),
                self.prev_hash,
                struct.pack(">I", len(body)),
                body,
                self.signature,
            )
        )

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.encode())


def _str8(field: str, value: str) -> bytes:
    raw = value.encode()
    if not raw or len(raw) > _MAX[field]:
        raise EncodingError(field, f"must be 1 to {_MAX[field]} bytes of UTF-8")
    return bytes([len(raw)]) + raw


def _str16(field: str, value: str) -> bytes:
    raw = value.encode()
    if not raw or len(raw) > _MAX[field]:
        raise EncodingError(field, f"must be 1 to {_MAX[field]} bytes of UTF-8")
    return struct.pack(">H", len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise EncodingError(field, "truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def unpack(self, fmt: str, field: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), field))

    def text(self, length: int, field: str) -> str:
        raw = self.take(length, field)
        if not raw:
            raise EncodingError(field, "empty")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise EncodingError(field, "not UTF-8") from None

    def done(self, what: str) -> None:
        if self.pos != len(self.data):
            raise EncodingError(what, f"{len(self.data) - self.pos} trailing bytes")


def decode_statement(data: bytes) -> Statement:
    r = _Reader(data)
    if r.take(len(STATEMENT_TAG), "tag") != STATEMENT_TAG:
        raise EncodingError("tag", "not an SCF journal statement (v1)")
    producer = r.text(r.u8("producer"), "producer")
    key_id = r.take(KEY_ID_SIZE, "key_id")
    (produced,) = r.unpack(">q", "produced_micros")
    subject = r.text(r.unpack(">H", "subject")[0], "subject")
    event_type = r.text(r.u8("event_type"), "event_type")
    idem = r.text(r.u8("idempotency_key"), "idempotency_key")
    (n,) = r.unpack(">I", "payload")
    if n > _MAX_PAYLOAD:
        raise EncodingError("payload", f"longer than {_MAX_PAYLOAD} bytes")
    payload = r.take(n, "payload")
    r.done("statement")
    return Statement(producer, key_id, produced, subject, event_type, idem, payload)


def decode_entry(data: bytes) -> Entry:
    r = _Reader(data)
    version, seq, time_micros = r.unpack(">BQq", "header")
    if version != ENTRY_VERSION:
        raise EncodingError("version", f"unknown entry version {version}")
    prev = r.take(HASH_SIZE, "prev_hash")
    (n,) = r.unpack(">I", "statement")
    statement = decode_statement(r.take(n, "statement"))
    signature = r.take(SIGNATURE_SIZE, "signature")
    r.done("entry")
    return Entry(seq, time_micros, prev, statement, signature)


def split_signed(message: bytes) -> tuple[bytes, bytes]:
    """A submitted message is the statement followed by its 64-byte signature."""
    if len(message) <= SIGNATURE_SIZE:
        raise EncodingError("message", "too short to hold a statement and a signature")
    return message[:-SIGNATURE_SIZE], message[-SIGNATURE_SIZE:]
