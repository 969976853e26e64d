"""Whole-journal verification, trusting only the platform root key. Pure.

Feed entries in the order they are stored (with the leaf hash stored beside
each, if any) and the signed checkpoints; the verifier checks every entry's
encoding, sequence number, chain link, producer key and signature, and the
Merkle root at every checkpoint against the journal's signature. It stops at
the first problem and names its sequence number.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from services.journal.checkpoint import CheckpointError, SignedNote, parse_note
from services.journal.encoding import GENESIS_PREV_HASH, EncodingError, Entry, decode_entry
from services.journal.hashing import leaf_hash
from services.journal.keyset import KeyRefused, KeySet
from services.journal.tree import CompactRange

__all__ = ["JournalVerifier", "VerificationError", "VerifyReport"]


class VerificationError(Exception):
    """The journal is not what it claims, first at ``seq``."""

    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(f"entry {seq}: {problem}")
        self.seq = seq
        self.problem = problem


@dataclass
class VerifyReport:
    entries: int = 0
    checkpoints: int = 0
    root: bytes = b""
    producers: dict[str, int] = field(default_factory=dict)
    #: The largest checkpoint verified, as given (with any cosignature lines).
    latest_checkpoint: str = ""


class JournalVerifier:
    def __init__(self, root_public_key: bytes, checkpoints: Iterable[str] = ()) -> None:
        self.keys = KeySet(root_public_key)
        self.tree = CompactRange()
        self.prev = GENESIS_PREV_HASH
        self.report = VerifyReport()
        self._pending: dict[int, list[SignedNote]] = {}
        #: (producer, idempotency key) -> the entry that journaled it: each at most once.
        self._journaled: dict[tuple[str, str], int] = {}
        for text in checkpoints:
            self.add_checkpoint(text)

    def add_checkpoint(self, text: str) -> None:
        try:
            note = parse_note(text)
        except CheckpointError as exc:
            raise VerificationError(-1, f"malformed checkpoint: {exc}") from None
        size = note.checkpoint.size
        if size <= self.tree.size and size > 0:
            raise VerificationError(size - 1, "checkpoint arrived after its entries were checked")
        self._pending.setdefault(size, []).append(note)

    def add(
        self, leaf: bytes, stored_seq: int | None = None, stored_hash: bytes | None = None
    ) -> tuple[Entry, bytes, list[tuple[int, int, bytes]]]:
        """Check the next entry; returns it, its leaf hash and the tree nodes it
        completed. ``stored_seq``/``stored_hash`` are what a database row says
        beside the entry, checked against the entry itself."""
        expected = self.tree.size
        if stored_seq is not None and stored_seq != expected:
            if stored_seq > expected:
                raise VerificationError(
                    expected, f"missing (the next stored entry is {stored_seq})"
                )
            raise VerificationError(stored_seq, f"stored again after entry {expected - 1}")
        try:
            entry = decode_entry(leaf)
        except EncodingError as exc:
            raise VerificationError(expected, f"malformed: {exc}") from None
        if entry.seq != expected:
            raise VerificationError(expected, f"holds sequence number {entry.seq}")
        if entry.prev_hash != self.prev:
            raise VerificationError(expected, "previous-hash link does not match entry before it")
        h = leaf_hash(leaf)
        if stored_hash is not None and stored_hash != h:
            raise VerificationError(expected, "stored leaf hash does not match the entry")
        statement = entry.statement
        pair = (statement.producer, statement.idempotency_key)
        if pair in self._journaled:
            raise VerificationError(
                expected,
                f"{statement.producer}'s statement {statement.idempotency_key!r} was journaled"
                f" already, as entry {self._journaled[pair]}",
            )
        self._journaled[pair] = expected
        try:
            self.keys.check_entry(entry)
            self.keys.apply(entry)
        except KeyRefused as exc:
            raise VerificationError(expected, str(exc)) from None
        nodes = self.tree.append(h)
        self.prev = h
        self.report.entries += 1
        self.report.producers[statement.producer] = (
            self.report.producers.get(statement.producer, 0) + 1
        )
        for note in self._pending.pop(self.tree.size, []):
            self.check_checkpoint(note)
        return entry, h, nodes

    def check_checkpoint(self, note: SignedNote) -> None:
        """A checkpoint of the current size: signed by the journal, and our root."""
        seq = note.checkpoint.size - 1
        signed = False
        for key in self.keys.journal_keys(at_size=seq + 1):
            try:
                note.verify(self.keys.origin, key.public_key)
                signed = True
                break
            except CheckpointError:
                continue
        if not signed:
            raise VerificationError(
                seq, f"checkpoint at size {seq + 1} is not signed by the journal"
            )
        if note.checkpoint.root != self.tree.root():
            raise VerificationError(
                seq, f"Merkle root at size {seq + 1} differs from the signed checkpoint"
            )
        self.report.checkpoints += 1
        self.report.latest_checkpoint = note.text

    def finish(self) -> VerifyReport:
        """Call after the last entry: every checkpoint must have been reached."""
        if self._pending:
            size = min(self._pending)
            raise VerificationError(
                self.tree.size,
                f"a signed checkpoint covers {size} entries; only {self.tree.size} exist",
            )
        self.report.root = self.tree.root()
        return self.report
