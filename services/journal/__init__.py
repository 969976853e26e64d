"""The journal: sequencer, Merkle tree, signed checkpoints, audit API.

Its public API, for the runtime's outbox relay, key checks and the replica:
the entry format, the key set, and canonical JSON. Other packages import
these from here, never from the journal's private modules.
"""

from services.journal.encoding import (
    EncodingError,
    Entry,
    SignedBatch,
    Statement,
    decode_entry,
    sign_batch,
    unpack_records,
)
from services.journal.keyset import KEYS_SUBJECT, KeyRefused, KeySet, canonical_json

__all__ = [
    "KEYS_SUBJECT",
    "EncodingError",
    "Entry",
    "KeyRefused",
    "KeySet",
    "SignedBatch",
    "Statement",
    "canonical_json",
    "decode_entry",
    "sign_batch",
    "unpack_records",
]
