"""The journal's canonical byte layouts. Pure; docs/journal-format.md is the spec.

A *statement* says who, about what, which event, with which payload. A
producer signs a *batch* of statements at once: the root of a small Merkle
tree over them. An *entry* (a leaf of the journal's tree) is one statement,
its path to the signed batch root, the batch signature, and what the journal
adds: sequence number, time, and the previous leaf's hash. Every entry is
thus provably signed by its producer, for one signature per batch.
All integers are big-endian; strings are UTF-8 with a length prefix.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from services.journal.hashing import HASH_SIZE, leaf_hash, node_hash
from services.journal.proofs import ProofError, root_from_inclusion_proof

__all__ = [
    "BATCH_TAG",
    "ENTRY_VERSION",
    "GENESIS_PREV_HASH",
    "STATEMENT_TAG",
    "BatchProof",
    "EncodingError",
    "Entry",
    "SignedBatch",
    "Statement",
    "batch_proofs",
    "batch_root",
    "batch_signed_bytes",
    "decode_batch",
    "decode_entry",
    "decode_statement",
    "pack_records",
    "sign_batch",
    "unpack_records",
]

STATEMENT_TAG = b"scf-journal-statement-v1\n"
BATCH_TAG = b"scf-journal-batch-v1\n"
MAX_BATCH = 4096
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
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
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
class BatchProof:
    """Where a statement sits in the batch its producer signed."""

    size: int
    index: int
    path: tuple[bytes, ...]
    signature: bytes

    def root(self, statement_bytes: bytes) -> bytes:
        """The batch root this proof implies for ``statement_bytes``."""
        try:
            return root_from_inclusion_proof(
                self.index, self.size, leaf_hash(statement_bytes), self.path
            )
        except ProofError as exc:
            raise EncodingError("batch_path", str(exc)) from None

    def encode_path(self) -> bytes:
        return b"".join(self.path)


def batch_signed_bytes(producer: str, key_id: bytes, size: int, root: bytes) -> bytes:
    """What a producer's Ed25519 signature covers: the batch root, and who."""
    return b"".join((BATCH_TAG, _str8("producer", producer), key_id, struct.pack(">I", size), root))


@dataclass(frozen=True)
class Entry:
    """One journal entry: a Merkle leaf."""

    seq: int
    time_micros: int
    prev_hash: bytes
    statement: Statement
    batch: BatchProof

    @property
    def signature(self) -> bytes:
        return self.batch.signature

    def encode(self) -> bytes:
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        if len(self.prev_hash) != HASH_SIZE:
            raise EncodingError("prev_hash", f"must be {HASH_SIZE} bytes")
        b = self.batch
        if len(b.signature) != SIGNATURE_SIZE:
            raise EncodingError("signature", f"must be {SIGNATURE_SIZE} bytes")
        if not 0 <= b.index < b.size <= MAX_BATCH or len(b.path) > 32:
            raise EncodingError("batch", f"index {b.index} of a batch of {b.size}")
        body = self.statement.encode()
        return b"".join(
            (
                struct.pack(">BQq", ENTRY_VERSION, self.seq, self.time_micros),
                self.prev_hash,
                struct.pack(">I", len(body)),
                body,
                struct.pack(">IIB", b.size, b.index, len(b.path)),
                *b.path,
                b.signature,
            )
        )

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.encode())

    def signed_bytes(self) -> bytes:
        """The batch bytes the producer signed, rebuilt from this entry."""
        st = self.statement
        root = self.batch.root(st.encode())
        return batch_signed_bytes(st.producer, st.key_id, self.batch.size, root)


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


def _utf8(raw: bytes, field: str) -> str:
    if not raw:
        raise EncodingError(field, "empty")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise EncodingError(field, "not UTF-8") from None


_Q = struct.Struct(">q")
_H = struct.Struct(">H")
_I = struct.Struct(">I")
_ENTRY_HEAD = struct.Struct(">BQq")
_BATCH_HEAD = struct.Struct(">IIB")


def decode_statement(data: bytes) -> Statement:
    # Offsets by hand rather than a reader object: replicas and verifiers decode
    # every entry, and this is their hottest path. Short slices leave the final
    # offset past the end, which the last check reports.
    if not data.startswith(STATEMENT_TAG):
        raise EncodingError("tag", "not an SCF journal statement (v1)")
    field = "producer"
    try:
        p = len(STATEMENT_TAG)
        n = data[p]
        producer = _utf8(data[p + 1 : p + 1 + n], field)
        p += 1 + n
        field = "key_id"
        key_id = data[p : p + KEY_ID_SIZE]
        p += KEY_ID_SIZE
        field = "produced_micros"
        (produced,) = _Q.unpack_from(data, p)
        p += 8
        field = "subject"
        (n,) = _H.unpack_from(data, p)
        subject = _utf8(data[p + 2 : p + 2 + n], field)
        p += 2 + n
        field = "event_type"
        n = data[p]
        event_type = _utf8(data[p + 1 : p + 1 + n], field)
        p += 1 + n
        field = "idempotency_key"
        n = data[p]
        idem = _utf8(data[p + 1 : p + 1 + n], field)
        p += 1 + n
        field = "payload"
        (n,) = _I.unpack_from(data, p)
        if n > _MAX_PAYLOAD:
            raise EncodingError("payload", f"longer than {_MAX_PAYLOAD} bytes")
        payload = data[p + 4 : p + 4 + n]
        p += 4 + n
    except (IndexError, struct.error):
        raise EncodingError(field, "truncated") from None
    if p != len(data):
        raise EncodingError("statement", "truncated" if p > len(data) else "trailing bytes")
    st = Statement(producer, key_id, produced, subject, event_type, idem, payload)
    st.__dict__["_encoded"] = bytes(data)  # the layout is one-to-one: no need to re-encode
    return st


def decode_entry(data: bytes) -> Entry:
    field = "header"
    try:
        version, seq, time_micros = _ENTRY_HEAD.unpack_from(data, 0)
        if version != ENTRY_VERSION:
            raise EncodingError("version", f"unknown entry version {version}")
        p = _ENTRY_HEAD.size
        field = "prev_hash"
        prev = data[p : p + HASH_SIZE]
        p += HASH_SIZE
        field = "statement"
        (n,) = _I.unpack_from(data, p)
        statement = decode_statement(data[p + 4 : p + 4 + n])
        p += 4 + n
        field = "batch"
        size, index, path_len = _BATCH_HEAD.unpack_from(data, p)
        p += _BATCH_HEAD.size
        if not 0 <= index < size <= MAX_BATCH or path_len > 32:
            raise EncodingError("batch", f"index {index} of a batch of {size}")
        path = tuple(data[p + i * HASH_SIZE : p + (i + 1) * HASH_SIZE] for i in range(path_len))
        p += path_len * HASH_SIZE
        signature = data[p : p + SIGNATURE_SIZE]
        p += SIGNATURE_SIZE
    except struct.error:
        raise EncodingError(field, "truncated") from None
    if p != len(data):
        raise EncodingError("entry", "truncated" if p > len(data) else "trailing bytes")
    entry = Entry(seq, time_micros, prev, statement, BatchProof(size, index, path, signature))
    entry.__dict__["_encoded"] = bytes(data)
    return entry


@dataclass(frozen=True)
class SignedBatch:
    """What a producer submits: statements and one signature over their root."""

    producer: str
    key_id: bytes
    statements: tuple[bytes, ...]
    signature: bytes

    @cached_property
    def decoded(self) -> tuple[Statement, ...]:
        """The statements, decoded (raises :class:`EncodingError`)."""
        return tuple(decode_statement(raw) for raw in self.statements)

    def encode(self) -> bytes:
        return b"".join(
            (
                BATCH_TAG,
                _str8("producer", self.producer),
                self.key_id,
                struct.pack(">I", len(self.statements)),
                *(struct.pack(">I", len(st)) + st for st in self.statements),
                self.signature,
            )
        )


def _levels(statements: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the batch's RFC 9162 tree, leaves first.

    Pairing left to right and carrying a lone last node up unchanged builds
    exactly the RFC 9162 tree (whose left subtrees are perfect).
    """
    level = [leaf_hash(st) for st in statements]
    levels = [level]
    while len(level) > 1:
        up = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            up.append(level[-1])
        levels.append(up)
        level = up
    return levels


def batch_root(statements: Sequence[bytes]) -> bytes:
    """The RFC 9162 root over the statements' leaf hashes."""
    return _levels(statements)[-1][0]


def batch_proofs(statements: Sequence[bytes], signature: bytes) -> list[BatchProof]:
    """Each statement's inclusion path in its batch, in RFC 9162 proof order."""
    levels = _levels(statements)
    size = len(statements)
    proofs = []
    for i in range(size):
        path = []
        index = i
        for level in levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index >>= 1
        proofs.append(BatchProof(size, i, tuple(path), signature))
    return proofs


def sign_batch(
    signer_name: str, key_id: bytes, sign: Callable[[bytes], bytes], statements: Sequence[bytes]
) -> SignedBatch:
    if not 0 < len(statements) <= MAX_BATCH:
        raise EncodingError("batch", f"1 to {MAX_BATCH} statements, got {len(statements)}")
    root = batch_root(statements)
    signature = sign(batch_signed_bytes(signer_name, key_id, len(statements), root))
    return SignedBatch(signer_name, key_id, tuple(statements), signature)


def decode_batch(data: bytes) -> SignedBatch:
    r = _Reader(data)
    if r.take(len(BATCH_TAG), "tag") != BATCH_TAG:
        raise EncodingError("tag", "not an SCF journal batch (v1)")
    producer = r.text(r.u8("producer"), "producer")
    key_id = r.take(KEY_ID_SIZE, "key_id")
    (count,) = r.unpack(">I", "count")
    if not 0 < count <= MAX_BATCH:
        raise EncodingError("count", f"1 to {MAX_BATCH} statements, got {count}")
    statements = tuple(r.take(r.unpack(">I", "statement")[0], "statement") for _ in range(count))
    signature = r.take(SIGNATURE_SIZE, "signature")
    r.done("batch")
    return SignedBatch(producer, key_id, statements, signature)


def pack_records(records: Sequence[bytes]) -> bytes:
    """``len32(r) || r`` for each record: several entries in one message."""
    return b"".join(struct.pack(">I", len(r)) + r for r in records)


def unpack_records(data: bytes) -> list[bytes]:
    r = _Reader(data)
    out = []
    while r.pos < len(data):
        out.append(r.take(r.unpack(">I", "record")[0], "record"))
    return out
