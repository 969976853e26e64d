"""The journal audits its own store: nobody with write access to its database
alters it unseen.

At start-up, before anything is sequenced, the whole store is verified from
the platform root key alone (the verifier an outside auditor uses: encoding,
sequence numbers, chain links, producer keys and batch signatures, every
signed checkpoint's root), and every stored tree node is recomputed from the
entries. What verified is kept in memory as the list of leaf hashes
(``VerifiedLeaves``, 32 bytes an entry); the sequencer appends the hashes of
what it commits itself. From then on a background sweep re-reads the store,
a chunk at a time within a bounded share of a core, and compares every entry
(its bytes, its stored hash, its link), every tree node and every checkpoint
with what was verified, and checks that no row was removed or added beside
the sequencer. The audit API serves only entries whose hash matches.

On the first difference the journal raises an alarm naming the sequence
number and the evidence: a log line, the ``scf_journal_store_damaged`` gauge,
health NOT_SERVING, and ``GetStoreAudit`` (shown by ``scf status``). The
sequencer then commits nothing more on top of the damage; the store is
restored from a bank's replica (``scf journal restore``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.journal.checkpoint import CheckpointError, parse_note
from services.journal.encoding import Entry
from services.journal.hashing import leaf_hash
from services.journal.storage import JournalStore, StoredCheckpoint, entry_from_row
from services.journal.tree import CompactRange
from services.journal.verify import JournalVerifier, VerificationError
from services.runtime.errors import DataLoss
from services.runtime.metrics import JOURNAL_AUDITED, JOURNAL_DAMAGED

__all__ = ["Damage", "StoreAudit", "StoreDamaged", "VerifiedLeaves"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Damage:
    seq: int
    problem: str
    evidence: tuple[str, ...]
    detected_micros: int


class StoreDamaged(DataLoss):
    """The journal will not serve what its own check found altered."""


class VerifiedLeaves:
    """The leaf hash of every entry verified (or written by this sequencer), by seq."""

    def __init__(self) -> None:
        self._hashes = bytearray()

    def __len__(self) -> int:
        return len(self._hashes) // 32

    def append(self, leaf: bytes) -> None:
        self._hashes += leaf

    def get(self, seq: int) -> bytes | None:
        if not 0 <= seq < len(self):
            return None
        return bytes(self._hashes[seq * 32 : seq * 32 + 32])


@dataclass
class StoreAudit:
    pool: asyncpg.Pool[Any]
    root_public_key: bytes
    #: Entries read per sweep step.
    chunk: int = 2000
    #: The share of the time the background sweep may spend reading and checking.
    share: float = 0.2
    #: Between whole passes.
    pause_s: float = 0.5
    now_micros: Callable[[], int] = lambda: time.time_ns() // 1000
    #: Called once, with the damage, when it is first found.
    on_damage: Callable[[Damage], Awaitable[None]] | None = None
    store: JournalStore = field(init=False)
    leaves: VerifiedLeaves = field(default_factory=VerifiedLeaves)
    damage: Damage | None = None
    #: The sequencer's commit and the sweep's tail check take turns.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sweeps: int = 0
    last_sweep_micros: int = 0
    #: The verifier's state after the start-up check: the sequencer carries on from it.
    tree: CompactRange = field(default_factory=CompactRange)

    def __post_init__(self) -> None:
        self.store = JournalStore(self.pool)

    # -- the start-up check -------------------------------------------------------

    async def verify_all(self) -> bool:
        """Verify the whole store from the root key; False (and the alarm) if damaged."""
        verifier = JournalVerifier(self.root_public_key)
        checkpoints = await self.store.checkpoints()
        try:
            for cp in checkpoints:
                verifier.add_checkpoint(cp.note)
            last: int | None = None
            while True:
                rows = await self.pool.fetch(
                    "SELECT * FROM entries WHERE $1::bigint IS NULL OR seq > $1"
                    " ORDER BY seq LIMIT $2",
                    last, self.chunk,
                )  # fmt: skip
                if not rows:
                    break
                completed = []
                for row in rows:
                    entry = entry_from_row(row)
                    _, h, nodes = verifier.add(
                        entry.encode(), stored_seq=row["seq"], stored_hash=bytes(row["leaf_hash"])
                    )
                    self.leaves.append(h)
                    completed += nodes
                problem = await self._check_nodes(completed)
                if problem is not None:
                    await self._damaged(*problem)
                    return False
                last = rows[-1]["seq"]
            verifier.finish()
        except VerificationError as exc:
            await self._damaged(exc.seq, exc.problem, ())
            return False
        for cp in checkpoints:
            if parse_note(cp.note).checkpoint.root != cp.root_hash:
                await self._damaged(
                    cp.tree_size - 1, "a checkpoint's stored root is not its note's", (cp.note,)
                )
                return False
        self.tree = verifier.tree
        problem = await self._check_tail()
        if problem is not None:
            await self._damaged(*problem)
            return False
        JOURNAL_AUDITED.inc(len(self.leaves))
        self.last_sweep_micros = self.now_micros()
        return True

    # -- what the sequencer and the audit API ask ----------------------------------

    def committed(self, hashes: Sequence[bytes]) -> None:
        """The sequencer committed entries with these leaf hashes, in order."""
        for h in hashes:
            self.leaves.append(h)

    async def check_served(self, entries: Sequence[Entry]) -> list[Entry]:
        """The entries as stored, if each is what was verified; entries not yet
        verified are left out. A difference raises the alarm and DATA_LOSS."""
        if self.damage is not None:
            raise StoreDamaged(
                f"the journal's store is damaged at entry {self.damage.seq}: {self.damage.problem}",
                reason="STORE_DAMAGED",
            )
        served = []
        for entry in entries:
            verified = self.leaves.get(entry.seq)
            if verified is None:
                continue
            if entry.leaf_hash() != verified:
                await self._damaged(
                    entry.seq, "an entry read for the audit API is not the one verified",
                    (f"stored leaf {entry.leaf_hash().hex()}", f"verified leaf {verified.hex()}"),
                )  # fmt: skip
                raise StoreDamaged(
                    f"the journal's store is damaged at entry {entry.seq}: it is not the entry"
                    " the journal verified", reason="STORE_DAMAGED",
                )  # fmt: skip
            served.append(entry)
        return served

    @property
    def size(self) -> int:
        return len(self.leaves)

    # -- the background sweep --------------------------------------------------------

    async def run(self) -> None:
        """Sweep the whole store again and again, within ``share`` of a core. Once it
        found damage it stops, and so does nothing else: the journal stays up to say so."""
        while self.damage is None:
            started = time.perf_counter()
            await self.sweep()
            # A pass over a large store rests as long as it took (at least pause_s).
            await asyncio.sleep(max(self.pause_s, time.perf_counter() - started))
        await asyncio.Event().wait()

    async def sweep(self) -> Damage | None:
        """One pass over the store; the damage found, if any."""
        size = len(self.leaves)
        checkpoints = [c for c in await self.store.checkpoints() if c.tree_size <= size]
        roots: dict[int, bytes] = {}
        wanted = {c.tree_size for c in checkpoints}
        tree = CompactRange()
        pos = 0
        while pos < size and self.damage is None:
            started = time.perf_counter()
            end = min(size, pos + self.chunk)
            problem = await self._check_entries(pos, end, tree, wanted, roots)
            if problem is not None:
                await self._damaged(*problem)
                return self.damage
            JOURNAL_AUDITED.inc(end - pos)
            pos = end
            # Wall time, not this process's CPU: the database's work for the sweep
            # counts against the share too.
            spent = time.perf_counter() - started
            await asyncio.sleep(spent * (1 / self.share - 1))
        problem = self._check_checkpoints(checkpoints, roots) or await self._check_tail()
        if problem is not None:
            await self._damaged(*problem)
        self.sweeps += 1
        self.last_sweep_micros = self.now_micros()
        return self.damage

    async def _check_entries(
        self, start: int, end: int, tree: CompactRange, wanted: set[int], roots: dict[int, bytes]
    ) -> tuple[int, str, tuple[str, ...]] | None:
        rows = await self.pool.fetch(
            "SELECT * FROM entries WHERE seq >= $1 AND seq < $2 ORDER BY seq", start, end
        )
        expected = start
        completed: list[tuple[int, int, bytes]] = []
        for row in rows:
            seq = row["seq"]
            if seq != expected:
                return (
                    expected,
                    f"entry {expected} is missing from the store",
                    (f"the next stored entry is {seq}",),
                )
            verified = self.leaves.get(seq)
            assert verified is not None
            entry = entry_from_row(row)
            actual = leaf_hash(entry.encode())
            if actual != verified:
                return seq, "the entry's bytes are not the ones verified", (
                    f"stored entry hashes to {actual.hex()}", f"verified leaf {verified.hex()}",
                )  # fmt: skip
            if bytes(row["leaf_hash"]) != verified:
                return seq, "the stored leaf hash is not the one verified", (
                    f"stored {bytes(row['leaf_hash']).hex()}", f"verified {verified.hex()}",
                )  # fmt: skip
            previous = self.leaves.get(seq - 1) if seq else None
            if previous is not None and entry.prev_hash != previous:
                return seq, "the entry's link is not the hash of the entry before", ()
            completed += tree.append(verified)
            if tree.size in wanted:
                roots[tree.size] = tree.root()
            expected += 1
        if expected != end:
            return (
                expected,
                f"entry {expected} is missing from the store",
                (f"{end - start} entries expected in [{start}, {end}), {len(rows)} stored",),
            )
        return await self._check_nodes(completed)

    async def _check_nodes(
        self, completed: Sequence[tuple[int, int, bytes]]
    ) -> tuple[int, str, tuple[str, ...]] | None:
        """The stored tree nodes that these entries completed, against their hashes.
        A full pass completes every node once, so every stored node is checked."""
        stored = await self.store.nodes((level, idx) for level, idx, _ in completed)
        for level, idx, h in completed:
            if stored.get((level, idx)) != h:
                found = stored.get((level, idx))
                return idx << level, f"tree node ({level}, {idx}) is not the hash of its entries", (
                    f"stored {found.hex() if found else 'none'}", f"recomputed {h.hex()}",
                )  # fmt: skip
        return None

    async def _check_tail(self) -> tuple[int, str, tuple[str, ...]] | None:
        """Nothing stored beyond what the sequencer wrote: no entry, tree node or
        checkpoint. Index lookups only, as the sequencer waits while they run."""
        async with self.lock:  # the sequencer is not half-way through a commit
            size = len(self.leaves)
            top = await self.pool.fetchval("SELECT max(seq) FROM entries")
            # A node (level, idx) covers leaves idx << level up to (idx + 1) << level:
            # one beyond the store has idx >= size >> level, at some level.
            beyond = await self.pool.fetchrow(
                "SELECT t.level, t.idx FROM unnest($1::smallint[], $2::bigint[]) AS b(level, lo)"
                " CROSS JOIN LATERAL (SELECT level, idx FROM tree_nodes"
                "   WHERE level = b.level AND idx >= b.lo LIMIT 1) t LIMIT 1",
                list(range(64)), [size >> level for level in range(64)],
            )  # fmt: skip
            covered = await self.pool.fetchval("SELECT max(tree_size) FROM checkpoints")
        if top is not None and top >= size:
            return size, f"entry {top} is stored beyond the {size} the journal wrote", ()
        if beyond is not None:
            level, idx = beyond["level"], beyond["idx"]
            return size, f"tree node ({level}, {idx}) is stored beyond entry {size - 1}", ()
        if covered is not None and covered > size:
            return size, f"a checkpoint covers {covered} entries; {size} written", ()
        return None

    @staticmethod
    def _check_checkpoints(
        checkpoints: Sequence[StoredCheckpoint], roots: dict[int, bytes]
    ) -> tuple[int, str, tuple[str, ...]] | None:
        """Each checkpoint's stored root and note, against the root of its entries."""
        for cp in checkpoints:
            root = roots.get(cp.tree_size)
            if root is None:
                continue
            try:
                note_root = parse_note(cp.note).checkpoint.root
            except CheckpointError as exc:
                return cp.tree_size - 1, f"checkpoint {cp.tree_size} is malformed: {exc}", ()
            if cp.root_hash != root or note_root != root:
                problem = f"checkpoint {cp.tree_size}'s root is not the entries'"
                return cp.tree_size - 1, problem, (cp.note,)
        return None

    # -- the alarm ------------------------------------------------------------------

    async def report(self, seq: int, problem: str, evidence: tuple[str, ...] = ()) -> None:
        """Damage another part of the journal found (the sequencer, reloading)."""
        await self._damaged(seq, problem, evidence)

    async def _damaged(self, seq: int, problem: str, evidence: tuple[str, ...]) -> None:
        if self.damage is not None:
            return
        self.damage = Damage(seq, problem, evidence, self.now_micros())
        log.error(
            "ALARM: the journal's store is damaged at entry %d: %s; sequencing stopped (%s)",
            seq, problem, "; ".join(evidence) or "no further evidence",
        )  # fmt: skip
        JOURNAL_DAMAGED.set(1)
        if self.on_damage is not None:
            with contextlib.suppress(Exception):
                await self.on_damage(self.damage)
