"""Restore the journal's store from a bank's replica, trusting neither.

Everything restored is verified from the platform root key, as an outside
auditor verifies an export: every entry (encoding, sequence, chain link,
producer key, batch signature) and every checkpoint's root. On top, the
restored history must agree with the checkpoints the other banks cosigned:
each cosigned checkpoint up to the restored size must be signed by the
journal, carry that bank's cosignature (its witness key from the keys
directory), and have the root the restored entries give. Only then is the
store replaced, in one transaction, with the damaged tables kept beside it
(``<table>_damaged_<time>``) as evidence. The journal, restarted, verifies it
all again before it sequences anything.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.journal.checkpoint import CheckpointError, parse_note
from services.journal.encoding import Entry
from services.journal.sequencer import sequencer_lock_key
from services.journal.storage import (
    ENTRY_COLUMNS,
    JournalStore,
    StoredCheckpoint,
    entry_record,
)
from services.journal.tree import CompactRange
from services.journal.verify import JournalVerifier, VerificationError
from services.journal.witness import cosigners

__all__ = ["RestoreError", "RestorePlan", "plan_restore", "write_restore"]

#: The sequencer's lock (sequencer.py): a running journal holds it.


class RestoreError(Exception):
    pass


@dataclass
class RestorePlan:
    """A verified history, ready to be written."""

    entries: list[tuple[Entry, bytes]] = field(default_factory=list)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)
    #: Journal-signed checkpoints, each without cosignature lines, and the lines.
    checkpoints: dict[int, StoredCheckpoint] = field(default_factory=dict)
    cosignatures: dict[int, dict[str, str]] = field(default_factory=dict)
    root: bytes = b""
    #: The banks whose cosigned checkpoints the restored history matches.
    agreeing: set[str] = field(default_factory=set)

    @property
    def size(self) -> int:
        return len(self.entries)


def _journal_only(text: str, origin: str) -> str:
    """The note with only the journal's own signature line."""
    body, _, sigs = text.partition("\n\n")
    own = [line for line in sigs.split("\n") if line.split(" ")[1:2] == [origin]]
    return f"{body}\n\n" + "".join(f"{line}\n" for line in own)


def plan_restore(
    root_public_key: bytes,
    leaves: Iterable[bytes],
    source_checkpoint: str,
    cosigned: Mapping[str, str],
    witnesses: Mapping[str, bytes],
    quorum: int,
) -> RestorePlan:
    """Verify a replica's history and the banks' cosigned checkpoints; the plan, or
    RestoreError naming what does not hold. ``cosigned`` is each bank's latest
    cosigned note; ``witnesses`` the banks' witness keys."""
    plan = RestorePlan()
    verifier = JournalVerifier(root_public_key)
    notes: dict[int, list[tuple[str, Any]]] = {}
    for bank, text in {"(source)": source_checkpoint, **cosigned}.items():
        if not text:
            continue
        try:
            note = parse_note(text)
        except CheckpointError as exc:
            raise RestoreError(f"{bank}'s checkpoint is malformed: {exc}") from None
        notes.setdefault(note.checkpoint.size, []).append((bank, note))
    tree = CompactRange()
    try:
        for leaf in leaves:
            entry, h, nodes = verifier.add(leaf)
            plan.entries.append((entry, h))
            plan.nodes.extend(nodes)
            tree.append(h)
            for bank, note in notes.pop(tree.size, []):
                _check(verifier, plan, bank, note, witnesses)
        verifier.finish()
    except VerificationError as exc:
        raise RestoreError(f"the replica's history does not verify: {exc}") from None
    if notes:
        size = min(notes)
        raise RestoreError(
            f"{', '.join(b for b, _ in notes[size])} cosigned a checkpoint of {size} entries;"
            f" the replica holds {plan.size}: restore from the most advanced replica"
        )
    if len(plan.agreeing) < quorum:
        raise RestoreError(
            f"{len(plan.agreeing)} of the {quorum} other banks' cosigned checkpoints agree"
            f" ({', '.join(sorted(plan.agreeing)) or 'none'})"
        )
    plan.root = verifier.tree.root()
    return plan


def _check(
    verifier: JournalVerifier,
    plan: RestorePlan,
    bank: str,
    note: Any,
    witnesses: Mapping[str, bytes],
) -> None:
    """A checkpoint at the current size: the journal's signature and root, and the
    bank's cosignature (unless it is the source's own journal-signed note)."""
    size = note.checkpoint.size
    try:
        verifier.check_checkpoint(note)  # signed by the journal, our root
    except VerificationError as exc:
        raise RestoreError(
            f"{bank}'s checkpoint of {size} entries disagrees with the replica: {exc.problem}"
        ) from None
    origin = note.checkpoint.origin
    stored = StoredCheckpoint(
        size, note.checkpoint.root, note.checkpoint.timestamp_micros,
        _journal_only(note.text, origin),
    )  # fmt: skip
    plan.checkpoints.setdefault(size, stored)
    if bank == "(source)":
        return
    if bank not in cosigners(note, {bank: witnesses[bank]} if bank in witnesses else {}):
        raise RestoreError(f"{bank}'s cosignature on checkpoint {size} does not verify")
    line = next(x for x in note.text.split("\n") if x.startswith(f"— {bank} "))
    plan.cosignatures.setdefault(size, {})[bank] = line
    plan.agreeing.add(bank)


async def write_restore(pool: asyncpg.Pool[Any], plan: RestorePlan) -> str:
    """Replace the store with the plan, keeping the old tables as evidence; the
    suffix of the kept tables. Refused while a journal is running on the store."""
    store = JournalStore(pool)
    suffix = f"damaged_{int(time.time())}"
    async with pool.acquire() as conn:
        key = await sequencer_lock_key(conn)
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            raise RestoreError("a journal is running on this store: stop it first")
        try:
            async with conn.transaction():
                for table in ("entries", "tree_nodes", "checkpoints", "cosignatures"):
                    await conn.execute(f"CREATE TABLE {table}_{suffix} AS TABLE {table}")
                await conn.execute("DELETE FROM cosignatures")
                await conn.execute("DELETE FROM checkpoints")
                await conn.execute("DELETE FROM tree_nodes")
                await conn.execute("DELETE FROM entries")
                await conn.copy_records_to_table(
                    "entries", records=[entry_record(e, h) for e, h in plan.entries],
                    columns=ENTRY_COLUMNS,
                )  # fmt: skip
                await conn.copy_records_to_table(
                    "tree_nodes", records=plan.nodes, columns=("level", "idx", "hash")
                )
                await conn.executemany(
                    "INSERT INTO checkpoints (tree_size, root_hash, time_micros, note)"
                    " VALUES ($1, $2, $3, $4)",
                    [(c.tree_size, c.root_hash, c.time_micros, c.note)
                     for c in plan.checkpoints.values()],
                )  # fmt: skip
                await conn.executemany(
                    "INSERT INTO cosignatures (tree_size, witness, line) VALUES ($1, $2, $3)",
                    [(size, bank, line) for size, lines in plan.cosignatures.items()
                     for bank, line in lines.items()],
                )  # fmt: skip
                # What the stream carries already is not published again.
                await conn.execute("UPDATE publication SET next_seq = $1", plan.size)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
    if await store.root_at(plan.size) != plan.root:  # read back what was written
        raise RestoreError("the restored store does not give the verified root")
    return suffix
