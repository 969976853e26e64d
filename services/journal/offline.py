"""Export files and whole-journal verification, with no service running.

Export format (docs/journal-format.md, "Export"): the magic line
``SCF-JOURNAL-EXPORT-1\\n``, then records ``type (1 byte) || length (4 bytes,
big-endian) || data``: type 1 the platform root public key, type 2 a signed
checkpoint note, type 3 an entry (its leaf bytes). Checkpoints come before
entries, entries in sequence order.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg

from services.journal.checkpoint import parse_note
from services.journal.storage import JournalStore, entry_from_row
from services.journal.verify import JournalVerifier, VerificationError, VerifyReport

__all__ = ["EXPORT_MAGIC", "export_journal", "read_export", "verify_database", "verify_export"]

EXPORT_MAGIC = b"SCF-JOURNAL-EXPORT-1\n"
REC_ROOT_KEY, REC_CHECKPOINT, REC_ENTRY = 1, 2, 3

Progress = Callable[[int], None]


class _Ticker:
    """Reports progress every 5,000 items, and the rest at the end."""

    EVERY = 5000

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        if self.progress is not None and self.count % self.EVERY == 0:
            self.progress(self.EVERY)

    def finish(self) -> int:
        if self.progress is not None:
            self.progress(self.count % self.EVERY)
        return self.count


def _record(out: BinaryIO, kind: int, data: bytes) -> None:
    out.write(struct.pack(">BI", kind, len(data)))
    out.write(data)


async def export_journal(
    store: JournalStore, root_public_key: bytes, path: Path, progress: Progress | None = None
) -> int:
    """Write the whole journal to ``path``; returns the number of entries."""
    size = await store.size()
    with path.open("wb") as out:
        out.write(EXPORT_MAGIC)
        _record(out, REC_ROOT_KEY, root_public_key)
        for note in await store.checkpoint_notes():  # with the banks' cosignatures
            if parse_note(note).checkpoint.size <= size:
                _record(out, REC_CHECKPOINT, note.encode())
        tick = _Ticker(progress)
        async for entry in store.entries(0, size, chunk=5000):
            _record(out, REC_ENTRY, entry.encode())
            tick()
    return tick.finish()


def read_export(path: Path) -> tuple[bytes, list[str], Iterator[bytes]]:
    """The root key, the checkpoints, and an iterator over entry leaves."""
    f = path.open("rb")
    if f.read(len(EXPORT_MAGIC)) != EXPORT_MAGIC:
        f.close()
        raise VerificationError(-1, f"{path} is not an SCF journal export")
    root_key = b""
    checkpoints: list[str] = []

    def read_one() -> tuple[int, bytes] | None:
        head = f.read(5)
        if not head:
            return None
        if len(head) < 5:
            raise VerificationError(-1, "export is truncated")
        kind, n = struct.unpack(">BI", head)
        data = f.read(n)
        if len(data) < n:
            raise VerificationError(-1, "export is truncated")
        return kind, data

    first_entry: bytes | None = None
    while (rec := read_one()) is not None:
        kind, data = rec
        if kind == REC_ROOT_KEY:
            root_key = data
        elif kind == REC_CHECKPOINT:
            checkpoints.append(data.decode())
        elif kind == REC_ENTRY:
            first_entry = data
            break
        else:
            raise VerificationError(-1, f"unknown record type {kind}")

    def entries() -> Iterator[bytes]:
        try:
            if first_entry is None:
                return
            yield first_entry
            while (rec := read_one()) is not None:
                if rec[0] != REC_ENTRY:
                    raise VerificationError(-1, "a non-entry record among the entries")
                yield rec[1]
        finally:
            f.close()

    return root_key, checkpoints, entries()


def verify_export(
    path: Path, root_public_key: bytes | None = None, progress: Progress | None = None
) -> VerifyReport:
    """Verify an export. Without ``root_public_key`` the export's own is trusted."""
    root_in_file, checkpoints, entries = read_export(path)
    verifier = JournalVerifier(root_public_key or root_in_file, checkpoints)
    tick = _Ticker(progress)
    for leaf in entries:
        verifier.add(leaf)
        tick()
    tick.finish()
    return verifier.finish()


async def _rows(pool: asyncpg.Pool[Any], chunk: int = 5000) -> AsyncIterator[Any]:
    # Keyset pagination over the primary key: a scan, in order, whatever the
    # stored sequence numbers are (gaps and duplicates must reach the verifier).
    last: int | None = None
    while True:
        rows = await pool.fetch(
            "SELECT * FROM entries WHERE $1::bigint IS NULL OR seq > $1 ORDER BY seq LIMIT $2",
            last,
            chunk,
        )
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1]["seq"]


async def verify_database(
    dsn: str, schema: str, root_public_key: bytes, progress: Progress | None = None
) -> VerifyReport:
    """Verify a journal (or replica) database directly, trusting only the root key."""
    from services.runtime.db import connect_pool

    pool = await connect_pool(dsn, schema, max_size=2)
    try:
        store = JournalStore(pool)
        verifier = JournalVerifier(root_public_key, await store.checkpoint_notes())
        tick = _Ticker(progress)
        async for row in _rows(pool):
            entry = entry_from_row(row)
            verifier.add(entry.encode(), stored_seq=row["seq"], stored_hash=bytes(row["leaf_hash"]))
            tick()
        tick.finish()
        return verifier.finish()
    finally:
        await pool.close()
