"""The canonical byte layouts: round trips, and untrusted bytes never crash a decoder."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.journal.encoding import (
    BatchProof,
    EncodingError,
    Entry,
    Statement,
    batch_proofs,
    decode_batch,
    decode_entry,
    decode_statement,
    pack_records,
    sign_batch,
    unpack_records,
)

text = st.text(min_size=1, max_size=40).filter(lambda s: 0 < len(s.encode()) <= 255)
statements = st.builds(
    Statement,
    producer=text,
    key_id=st.binary(min_size=32, max_size=32),
    produced_micros=st.integers(-(2**63), 2**63 - 1),
    subject=text,
    event_type=text,
    idempotency_key=text,
    payload=st.binary(max_size=300),
)


def _entry(statement: Statement, seq: int = 7) -> Entry:
    raw = statement.encode()
    proof = batch_proofs([raw, b"other"], b"s" * 64)[0]
    return Entry(seq, 123, b"p" * 32, statement, proof)


@given(statements)
def test_statement_round_trip(statement: Statement) -> None:
    raw = statement.encode()
    again = decode_statement(raw)
    assert again == statement
    assert again.encode() == raw


@given(statements, st.integers(0, 2**63))
def test_entry_round_trip(statement: Statement, seq: int) -> None:
    entry = _entry(statement, seq)
    raw = entry.encode()
    again = decode_entry(raw)
    assert again == entry
    assert (
        Entry(again.seq, again.time_micros, again.prev_hash, again.statement, again.batch).encode()
        == raw
    )


@given(statements, st.data())
def test_every_truncation_or_extension_is_refused(
    statement: Statement, data: st.DataObject
) -> None:
    raw = _entry(statement).encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(EncodingError):
        decode_entry(raw[:cut])
    with pytest.raises(EncodingError):
        decode_entry(raw + b"\x00")


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_decoders(blob: bytes) -> None:
    for decode in (decode_entry, decode_statement, decode_batch, unpack_records):
        with contextlib.suppress(EncodingError):
            decode(blob)


def test_batch_round_trip_and_bad_batch_sizes() -> None:
    raws = [Statement("orders", b"k" * 32, 1, "s", "e", f"i{i}", b"{}").encode() for i in range(3)]
    batch = sign_batch("orders", b"k" * 32, lambda m: b"s" * 64, raws)
    assert decode_batch(batch.encode()) == batch
    assert unpack_records(pack_records(raws)) == raws
    with pytest.raises(EncodingError):
        sign_batch("orders", b"k" * 32, lambda m: b"s" * 64, [])
    with pytest.raises(EncodingError):
        Entry(0, 0, b"p" * 32, decode_statement(raws[0]), BatchProof(2, 2, (), b"s" * 64)).encode()
