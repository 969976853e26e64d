"""The journal: sequencer, Merkle tree, signed checkpoints, audit API.

Its public API, for the runtime's outbox relay, key checks, orders' card
checks and the banks' replicas: the entry format, the key set, canonical
JSON, hashing, proofs, checkpoints and cosignatures, the verifier, and the
store and audit API a replica serves over its own copy. Other packages import
these from here, never from the journal's private modules.
"""

from services.journal.audit import AuditServicer
from services.journal.checkpoint import CheckpointError, SignedNote, parse_note
from services.journal.encoding import (
    EncodingError,
    Entry,
    SignedBatch,
    Statement,
    decode_entry,
    decode_statement,
    sign_batch,
    unpack_records,
)
from services.journal.explorer import Access, ExplorerData, make_app, serve_explorer
from services.journal.genesis import init_journal, origin_for
from services.journal.hashing import leaf_hash
from services.journal.keyset import KEYS_SUBJECT, KeyRefused, KeySet, canonical_json
from services.journal.proofs import ProofError, verify_inclusion
from services.journal.storage import JournalStore, StoredCheckpoint
from services.journal.verify import JournalVerifier, VerificationError
from services.journal.witness import add_lines, cosign

__all__ = [
    "KEYS_SUBJECT",
    "Access",
    "AuditServicer",
    "CheckpointError",
    "EncodingError",
    "Entry",
    "ExplorerData",
    "JournalStore",
    "JournalVerifier",
    "KeyRefused",
    "KeySet",
    "ProofError",
    "SignedBatch",
    "SignedNote",
    "Statement",
    "StoredCheckpoint",
    "VerificationError",
    "add_lines",
    "canonical_json",
    "cosign",
    "decode_entry",
    "decode_statement",
    "init_journal",
    "leaf_hash",
    "make_app",
    "origin_for",
    "parse_note",
    "serve_explorer",
    "sign_batch",
    "unpack_records",
    "verify_inclusion",
]
