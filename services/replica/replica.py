"""The replica's ingest loop: verify before store, catch up, cosign, compare.

Entries arrive on the journal stream (one message per producer per journal
commit, so slightly out of order); the replica buffers them, and checks each
in sequence order with the same verifier an offline auditor uses (producer
key and batch signature, chain link), and every journal checkpoint against
its own Merkle root. Only what verified is stored. Anything that does not fit
raises an alarm naming the sequence number and the evidence, and ingesting
stops for good: the replica never skips or rewrites an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.contracts.subjects import Subjects
from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.journal import (
    CheckpointError,
    Entry,
    JournalStore,
    JournalVerifier,
    SignedNote,
    StoredCheckpoint,
    VerificationError,
    add_lines,
    cosign,
    leaf_hash,
    parse_note,
    unpack_records,
)
from services.replica.alarm import AlarmRecord
from services.replica.cross_exam import CrossExamination
from services.runtime.bus import ack, bind, fetch
from services.runtime.clock import Clock
from services.runtime.journal_client import AuditClient
from services.runtime.keys import Signer

__all__ = ["AlarmRecord", "Replica"]

log = logging.getLogger(__name__)

#: How long a gap in the stream may last before the audit API fills it.
GAP_PATIENCE_S = 1.0
ASK_JOURNAL_EVERY_S = 5.0


class _Alarm(Exception):
    def __init__(self, record: AlarmRecord) -> None:
        super().__init__(record.problem)
        self.record = record


@dataclass
class Replica:
    bank: str
    pool: asyncpg.Pool[Any]
    nc: NATS
    js: JetStreamContext
    subjects: Subjects
    root_key: bytes
    witness: Signer
    clock: Clock
    audit_client: AuditClient
    #: The audit API's whole history is compared with this replica's once in this period.
    cross_exam_period_s: float = 300.0
    store: JournalStore = field(init=False)
    verifier: JournalVerifier = field(init=False)
    alarm: AlarmRecord | None = None
    #: Told of every alarm as it is raised (the service turns health NOT_SERVING).
    on_alarm: Callable[[AlarmRecord], Awaitable[None]] | None = None
    journal_size: int = 0
    cosigned_size: int = 0
    #: The entries verified and committed to the store; ``size`` runs ahead of it
    #: while a batch of verified entries is being written.
    stored_size: int = 0
    last_entry_micros: int = 0
    _buffer: dict[int, bytes] = field(default_factory=dict)
    _pending: dict[int, list[SignedNote]] = field(default_factory=dict)
    _peer_pending: dict[int, list[SignedNote]] = field(default_factory=dict)
    _gap_since: float | None = None
    _peer_notes: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        self.store = JournalStore(self.pool)
        self.verifier = JournalVerifier(self.root_key)

    @property
    def size(self) -> int:
        return self.verifier.tree.size

    # -- state ----------------------------------------------------------------

    async def load(self) -> None:
        """Resume from what this replica stored (and verified) before."""
        size = await self.store.size()
        v = JournalVerifier(self.root_key)
        if size:
            v.tree = await self.store.load_tree(size)
            v.prev = await self.store.last_leaf_hash() or v.prev
            v.keys = await self.store.load_keys(self.root_key)
            last = await self.store.entry(size - 1)
            self.last_entry_micros = last.time_micros if last else 0
        self.verifier = v
        self.stored_size = size
        latest = await self.store.latest_checkpoint()
        self.journal_size = max(size, latest.tree_size if latest else 0)
        row = await self.pool.fetchrow("SELECT * FROM alarm")
        if row is not None:
            self.alarm = AlarmRecord(
                row["kind"], row["seq"], row["problem"], tuple(row["evidence"])
            )
        self.cosigned_size = int(
            await self.pool.fetchval("SELECT coalesce(max(tree_size), 0) FROM cosigned")
        )

    # -- the loop ---------------------------------------------------------------

    @property
    def ingesting(self) -> bool:
        """A verification or fork alarm stops ingesting for good: the replica never
        stores what it could not verify. An alarm about what the journal's audit
        API served leaves the replica's own copy, and its ingest, untouched."""
        return self.alarm is None or self.alarm.kind == "cross-examination"

    async def run(self) -> None:
        await self.load()
        if not self.ingesting:
            assert self.alarm is not None
            log.error("replica %s is stopped by its alarm: %s", self.bank, self.alarm.problem)
            return
        # The consumer the operator made for this bank (cumulative acks).
        sub = await bind(self.js, self.subjects.replica(self.bank))
        gossip = await self.nc.subscribe(self.subjects.replica_checkpoints(), cb=self._on_peer_note)
        examination = asyncio.create_task(
            CrossExamination(self, period_s=self.cross_exam_period_s).run(),
            name=f"replica-{self.bank}-cross-examination",
        )
        asked = 0.0
        try:
            while self.ingesting:
                if time.monotonic() - asked > ASK_JOURNAL_EVERY_S:
                    # The journal's own word on its size: how a replica learns it is
                    # behind when the stream no longer holds what it missed.
                    asked = time.monotonic()
                    await self._ask_journal()
                msgs = await fetch(sub, 16, 0.5)  # up to ~8,000 entries a round
                try:
                    await self._round(msgs)
                except _Alarm as alarm:
                    await self.raise_alarm(alarm.record)
                if msgs:
                    await ack(msgs[-1])
        finally:
            examination.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await examination
            with contextlib.suppress(Exception):
                await gossip.unsubscribe()

    async def _round(self, msgs: list[Msg]) -> None:
        notes = []
        for m in msgs:
            if ".journal.entries." in m.subject:
                for record in unpack_records(m.data):
                    seq = int.from_bytes(record[1:9], "big")
                    if seq >= self.size:
                        self._buffer[seq] = record
            elif m.subject == self.subjects.checkpoints:
                notes.append(m.data.decode())
        for text in notes:
            await self._journal_checkpoint(text)
        await self._advance()
        if msgs:
            self._gap_since = None  # the stream is still delivering: let it
        else:
            await self._fill_gap()
        while not self._peer_notes.empty():
            await self._peer_checkpoint(self._peer_notes.get_nowait())

    async def _advance(self) -> None:
        """Verify and store the buffered entries that follow on from ours."""
        accepted: list[tuple[Entry, bytes]] = []
        nodes: list[tuple[int, int, bytes]] = []
        verified: list[SignedNote] = []
        problem: _Alarm | None = None
        while self.size in self._buffer:
            leaf = self._buffer.pop(self.size)
            try:
                entry, h, new_nodes = self.verifier.add(leaf)
            except VerificationError as exc:
                seq, detail = exc.seq, exc.problem
                if "previous-hash" in detail:
                    # It follows on from a different history: find where that begins.
                    await self._commit(accepted, nodes, verified)
                    differs = await self._first_difference(exc.seq)
                    if differs is not None:
                        seq = differs
                        detail = (
                            f"entry {exc.seq} chains to a history in which entry {differs}"
                            " differs from the one this replica verified"
                        )
                problem = _Alarm(AlarmRecord("verification", seq, detail, (leaf.hex(),)))
                break
            accepted.append((entry, h))
            nodes.extend(new_nodes)
            for note in self._pending.pop(self.size, []):
                try:
                    self.verifier.check_checkpoint(note)
                except VerificationError:
                    await self._commit(accepted, nodes, verified)
                    raise await self._diverged(note) from None
                verified.append(note)
        await self._commit(accepted, nodes, verified)
        if problem is not None:
            raise problem
        if verified:
            await self._cosign(verified[-1])
        for size in [s for s in self._peer_pending if s <= self.size]:
            for note in self._peer_pending.pop(size):
                await self._compare(note)

    async def _commit(
        self,
        accepted: list[tuple[Entry, bytes]],
        nodes: list[tuple[int, int, bytes]],
        verified: list[SignedNote],
    ) -> None:
        if not accepted and not verified:
            return
        checkpoints = [
            StoredCheckpoint(
                n.checkpoint.size, n.checkpoint.root, n.checkpoint.timestamp_micros, n.text
            )
            for n in verified
        ]
        await self.store.commit(accepted, nodes, checkpoints)
        if accepted:
            self.last_entry_micros = accepted[-1][0].time_micros
            self.stored_size = accepted[-1][0].seq + 1
        accepted.clear()
        nodes.clear()

    # -- checkpoints --------------------------------------------------------------

    def _signed_by_journal(self, text: str) -> SignedNote | None:
        try:
            note = parse_note(text)
        except CheckpointError:
            return None
        for key in self.verifier.keys.journal_keys(at_size=note.checkpoint.size):
            with contextlib.suppress(CheckpointError):
                note.verify(self.verifier.keys.origin, key.public_key)
                return note
        return None

    async def _ask_journal(self) -> None:
        try:
            async with self.audit_client() as audit:
                call: Any = audit.GetCheckpoint(journal_pb2.GetCheckpointRequest(), timeout=5)
                reply = await call
        except Exception as exc:  # the journal may be down: the stream still works
            log.warning("replica %s cannot reach the journal's audit API: %r", self.bank, exc)
            return
        try:
            await self._journal_checkpoint(reply.checkpoint)
        except _Alarm as alarm:
            await self.raise_alarm(alarm.record)

    async def _journal_checkpoint(self, text: str) -> None:
        note = self._signed_by_journal(text) if self.size else None
        if note is None:
            try:  # before the genesis entry the journal key is not known yet: check later
                note = parse_note(text)
            except CheckpointError:
                log.warning("ignoring a malformed checkpoint from the stream")
                return
        size = note.checkpoint.size
        self.journal_size = max(self.journal_size, size)
        if size > self.size:
            self._pending.setdefault(size, []).append(note)
        elif size > 0:
            if self._signed_by_journal(text) is None:
                raise _Alarm(
                    AlarmRecord(
                        "verification", size - 1, "checkpoint not signed by the journal", (text,)
                    )
                )
            if await self.store.root_at(size) != note.checkpoint.root:
                raise await self._diverged(note)
            await self._commit([], [], [note])
            await self._cosign(note)

    async def _first_difference(self, upto: int) -> int | None:
        """The first of entries [0, upto) the journal now serves differently, if any.

        A linear read of the audit API: this runs once, when raising an alarm.
        """
        async with self.audit_client() as audit:
            pos = 0
            async for their in _entries(audit, 0, upto):
                mine = await self.store.entry(pos)
                if mine is None or leaf_hash(their.leaf) != mine.leaf_hash():
                    return pos
                pos += 1
        return None

    async def _diverged(self, note: SignedNote) -> _Alarm:
        """The journal signed a root that is not ours: find the first entry that differs."""
        size = note.checkpoint.size
        differs = await self._first_difference(size)
        if differs is None:
            seq, detail = size - 1, "no entry differs: the journal signed a root of no history"
        else:
            seq, detail = differs, f"the journal now serves entry {differs} differently"
        return _Alarm(
            AlarmRecord(
                "verification",
                seq,
                f"signed checkpoint of size {size} does not match this replica's tree: {detail}",
                (note.text,),
            )
        )

    async def _cosign(self, note: SignedNote) -> None:
        size = note.checkpoint.size
        if size <= self.cosigned_size:
            return
        line = cosign(note.text, self.witness, self.bank, self.clock.now_micros() // 1_000_000)
        await self.pool.execute(
            "INSERT INTO cosigned (tree_size, note, line) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            size,
            note.text,
            line,
        )
        self.cosigned_size = size
        with contextlib.suppress(Exception):  # best effort: the next checkpoint is cosigned too
            await self.nc.publish(
                self.subjects.cosignatures(self.bank),
                json.dumps({"tree_size": size, "line": line}).encode(),
            )
            await self.nc.publish(self.subjects.replica_checkpoints(self.bank), note.text.encode())

    # -- other replicas -------------------------------------------------------------

    async def _on_peer_note(self, msg: Msg) -> None:
        if not msg.subject.endswith(f".{self.bank}"):
            await self._peer_notes.put(msg.data.decode())

    async def _peer_checkpoint(self, text: str) -> None:
        note = self._signed_by_journal(text)
        if note is None:
            return  # not the journal's word: nothing to compare
        if note.checkpoint.size <= self.size:
            await self._compare(note)
        else:
            self._peer_pending.setdefault(note.checkpoint.size, []).append(note)

    async def _compare(self, note: SignedNote) -> None:
        size = note.checkpoint.size
        if await self.store.root_at(size) == note.checkpoint.root:
            return
        ours = await self.store.checkpoint_at(size) or await self.store.latest_checkpoint()
        evidence = (note.text, ours.note if ours else "")
        raise _Alarm(
            AlarmRecord(
                "fork",
                size - 1,
                f"the journal signed two different trees of size {size}: another bank was"
                " shown a different history",
                evidence,
            )
        )

    # -- catch-up -----------------------------------------------------------------

    async def _fill_gap(self) -> None:
        """Fetch from the audit API what the stream no longer holds (or has not sent).

        Called only when a fetch came back empty, so a busy stream is never
        overtaken by the (slower) audit API.
        """
        target = min(self._buffer) if self._buffer else self.journal_size
        if target <= self.size:
            self._gap_since = None
            return
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
        if now - self._gap_since < GAP_PATIENCE_S:
            return
        log.info(
            "replica %s catching up %d..%d from the audit API", self.bank, self.size, target - 1
        )
        async with self.audit_client() as audit:
            async for entry in _entries(audit, self.size, target):
                self._buffer[entry.seq] = entry.leaf
                if len(self._buffer) >= 2000:
                    await self._advance()
        await self._advance()
        self._gap_since = None

    async def raise_alarm(self, alarm: AlarmRecord) -> None:
        """Record the alarm and stop ingesting (but for a cross-examination alarm).
        The first alarm stands, unless a verification or fork alarm follows a
        cross-examination one: that one stops ingesting, and is kept instead."""
        if self.alarm is not None and (
            self.alarm.kind != "cross-examination" or alarm.kind == "cross-examination"
        ):
            return
        if self.alarm is not None:
            log.error("replica %s: a %s alarm takes the place of: %s", self.bank, alarm.kind,
                      self.alarm.problem)  # fmt: skip
        self.alarm = alarm
        if self.on_alarm is not None:
            await self.on_alarm(alarm)
        log.error(
            "ALARM replica %s (%s) at entry %d: %s", self.bank, alarm.kind, alarm.seq, alarm.problem
        )
        await self.pool.execute(
            "INSERT INTO alarm (kind, seq, problem, evidence) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (singleton) DO UPDATE SET kind = $1, seq = $2, problem = $3,"
            " evidence = $4, raised_at = now()",
            alarm.kind,
            alarm.seq,
            alarm.problem,
            list(alarm.evidence),
        )

    async def cosigned_note(self) -> str:
        """The latest checkpoint this replica cosigned, with its cosignature line."""
        row = await self.pool.fetchrow(
            "SELECT note, line FROM cosigned ORDER BY tree_size DESC LIMIT 1"
        )
        return add_lines(row["note"], [row["line"]]) if row is not None else ""

    def lag(self) -> tuple[int, int]:
        """(entries, milliseconds) behind the journal as far as this replica knows."""
        behind = max(0, self.journal_size - self.size)
        if behind == 0 or not self.last_entry_micros:
            return behind, 0
        return behind, max(0, (self.clock.now_micros() - self.last_entry_micros) // 1000)


async def _entries(
    audit: journal_pb2_grpc.AuditServiceStub, start: int, end: int
) -> AsyncIterator[journal_pb2.Entry]:
    stream: Any = audit.ListEntries(journal_pb2.ListEntriesRequest(start=start, end=end))
    async for reply in stream:
        yield reply.entry
