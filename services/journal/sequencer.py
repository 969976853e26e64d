"""The sequencer: the journal's single writer.

It pulls producers' signed batches from JetStream, checks each batch
signature (once per batch) against the key set the journal itself declares,
drops statements already journaled (same producer and idempotency key),
assigns sequence numbers, chains and extends the Merkle tree, and commits
everything fetched (and a signed checkpoint when one is due) in one
PostgreSQL transaction: a group commit. Only then does it acknowledge the
messages and publish the entries, one message per producer per commit. A
crash before the commit leaves the messages to be redelivered; a crash after
it leaves duplicates that the idempotency check absorbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.contracts.envelope import seal
from services.contracts.subjects import HDR_FIRST_SEQ, HDR_LAST_SEQ, HDR_TRACES, Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.journal.checkpoint import Checkpoint, sign_checkpoint
from services.journal.encoding import (
    GENESIS_PREV_HASH,
    EncodingError,
    Entry,
    SignedBatch,
    batch_proofs,
    batch_root,
    batch_signed_bytes,
    decode_batch,
    pack_records,
)
from services.journal.genesis import GENESIS_FILE
from services.journal.keyset import (
    PLATFORM_PRODUCER,
    KeyRefused,
    KeySet,
)
from services.journal.self_audit import StoreAudit, StoreDamaged
from services.journal.storage import JournalStore, StoredCheckpoint
from services.journal.tree import CompactRange
from services.runtime import tracing
from services.runtime.bus import ack, bind, fetch
from services.runtime.clock import Clock
from services.runtime.errors import ConfigError
from services.runtime.faults import crash_point
from services.runtime.keys import Signer
from services.runtime.leadership import lock_key
from services.runtime.messaging import purpose_of, real_time_micros
from services.runtime.metrics import (
    JOURNAL_BATCH_ENTRIES,
    JOURNAL_CHECKPOINT_SECONDS,
    JOURNAL_COMMIT_SECONDS,
    JOURNAL_ENTRIES,
    JOURNAL_REFUSALS,
    JOURNAL_TREE_SIZE,
)
from services.runtime.packing import pack
from services.runtime.waiting import LoopWatch, run_together

__all__ = ["Sequencer", "SequencerConfig"]

ENTRIES_PER_MESSAGE = 512

#: An entry, its leaf hash, and the tree nodes it completed.
Accepted = tuple[Entry, bytes, list[tuple[int, int, bytes]]]


def _trace_entries(msgs: Sequence[Msg], accepted: Sequence[Accepted], started_ns: int) -> None:
    """A span for each entry whose statement came traced (``HDR_TRACES``), in the
    trace of the transition that wrote it: from the fetch to its commit."""
    parents: dict[tuple[str, str], str] = {}
    for m in msgs:
        traces = (m.headers or {}).get(HDR_TRACES)
        if not traces:
            continue
        try:
            batch = decode_batch(m.data)
            for item in traces.split(","):
                index, traceparent = item.split("=", 1)
                statement = batch.decoded[int(index)]
                parents[(statement.producer, statement.idempotency_key)] = traceparent
        except (EncodingError, ValueError, IndexError):
            continue  # an unreadable header places no span; it decides nothing
    for entry, _, _ in accepted:
        st = entry.statement
        parent = parents.get((st.producer, st.idempotency_key))
        if parent is None:
            continue
        entry_span = tracing.start_span(
            "journal.sequence", kind=tracing.SpanKind.CONSUMER, parent=parent,
            start_time=started_ns,
            attributes={"scf.service": "journal", "scf.journal.seq": entry.seq,
                        "scf.journal.producer": st.producer, "scf.journal.subject": st.subject,
                        "scf.journal.event_type": st.event_type},
        )  # fmt: skip
        entry_span.end()


async def sequencer_lock_key(conn: Any) -> int:
    """The advisory lock one journal's sequencer holds: its own for the schema
    the connection is set to work in (journals of other schemas on the same
    PostgreSQL, as tests and several platforms have, never wait on one another).
    The setting, not current_schema(), which is NULL until the schema exists."""
    path = await conn.fetchval("SELECT current_setting('search_path')")
    return lock_key(str(path), "journal-sequencer")


async def _drop(pool: Any, conn: Any) -> None:
    """End a held connection's session (and any lock it holds) and the pool's
    hold on it."""
    with contextlib.suppress(Exception):
        conn.terminate()
    with contextlib.suppress(Exception):
        await pool.release(conn)


class LeadershipLost(RuntimeError):
    """The sequencer's lock connection died: it may no longer sequence."""


@dataclass(frozen=True)
class Refusal:
    """Statements the journal will not take, and why (kept for the operator)."""

    producer: str
    keys: tuple[str, ...]
    reason: str
    message: bytes


log = logging.getLogger(__name__)


class _Halted(Exception):
    """The store's audit found damage: the commit under way does not happen."""


@dataclass(frozen=True)
class SequencerConfig:
    origin: str
    #: Messages per fetch (and so per commit); each may hold a batch of statements.
    batch_size: int = 32
    #: Sign a checkpoint once this many entries are not covered by one...
    checkpoint_every: int = 1000
    #: ...or once the oldest uncovered entry is this old.
    checkpoint_interval_s: float = 0.5
    fetch_timeout_s: float = 0.2
    #: A round (fetch, commit, publish) takes a second at most, NATS and PostgreSQL
    #: answering or failing; one that takes this long hangs: the journal exits,
    #: to be restarted, rather than stay up journaling nothing.
    stall_s: float = 60.0
    #: The NATS server's message limit (headers included), less room for headers.
    max_message_bytes: int = (1 << 20) - 2048


def _packed_size(entry: Entry) -> int:
    return len(entry.encode()) + 4  # its length prefix in pack_records


class Sequencer:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        js: JetStreamContext,
        subjects: Subjects,
        journal_signer: Signer,
        root_public: bytes,
        clock: Clock,
        config: SequencerConfig,
        audit: StoreAudit | None = None,
    ) -> None:
        self.store = JournalStore(pool)
        #: The journal's own check of its store; nothing is committed once it found damage.
        self.audit = audit
        self.pool = pool
        self.js = js
        self.subjects = subjects
        self.signer = journal_signer
        #: The platform root's public key: the root itself stays offline.
        self.root_public = root_public
        self.clock = clock
        self.config = config
        self.tree = CompactRange()
        self.prev_hash = GENESIS_PREV_HASH
        self.keys = KeySet(root_public)
        self.checkpointed = 0
        self._uncovered_since: float | None = None
        self._lock_conn: Any = None
        self._lock_lost = asyncio.Event()
        #: A publish failed: entries from the stored watermark must go out again.
        self._unpublished = False
        self._checkpoint_waiters: list[asyncio.Future[StoredCheckpoint]] = []
        #: Set once the sequencer has loaded its state and is consuming.
        self.ready = asyncio.Event()

    # -- start-up ---------------------------------------------------------

    async def take_leadership(self) -> None:
        """One sequencer per journal: a session advisory lock on a held connection.
        A standby waits for it inside PostgreSQL, which hands it over the moment
        the leader's session ends (stopped, crashed, killed)."""
        if self._lock_conn is not None:
            return
        conn = await self.pool.acquire()
        try:
            key = await sequencer_lock_key(conn)
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                log.info("another sequencer leads this journal; standing by")
                # Said where an operator's tools can hear it (scf bench failover does).
                await conn.execute(
                    "SELECT pg_notify('journal_standby_' || current_schema(),"
                    " pg_backend_pid()::text)"
                )
                await conn.execute("SELECT pg_advisory_lock($1)", key)
                log.info("the leader is gone: this journal takes over")
        except BaseException:
            # Stopped while asking: the server may have granted the lock all the
            # same, so the session ends rather than go back to the pool holding it.
            await _drop(self.pool, conn)
            raise
        conn.add_termination_listener(lambda _conn: self._lock_lost.set())
        self._lock_conn = conn

    async def _keep_leadership(self) -> None:
        """Fails once the connection that holds the lock is lost: another journal
        may lead by now, and this one must not sequence beside it. The process
        goes down and its supervisor starts it afresh (it verifies the store)."""
        await self._lock_lost.wait()
        raise LeadershipLost("the sequencer lost the connection that held its leadership")

    async def load(self, genesis: SignedBatch | None) -> None:
        """Load the tree and key set; into an empty journal, sequence ``genesis``
        (signed offline by the root key), or refuse to start without it."""
        size = await self.store.size()
        self.tree, self.prev_hash = CompactRange(), GENESIS_PREV_HASH
        self.keys, self.checkpointed = KeySet(self.root_public), 0
        if size == 0:
            if genesis is None:
                raise ConfigError(
                    "SCF_KEYS_DIR",
                    f"the journal is empty and has no {GENESIS_FILE}:"
                    " make it offline with `scf journal init`",
                )
            await self._genesis(genesis)
            return
        if self.audit is not None:
            # Carry on from what the audit verified, not from what the store says.
            if size != self.audit.size:
                await self.audit.report(
                    min(size, self.audit.size), f"{size} entries stored, {self.audit.size} written"
                )
                return
            self.tree = CompactRange(self.audit.tree.size, list(self.audit.tree.frontier))
            self.prev_hash = self.audit.leaves.get(size - 1) or GENESIS_PREV_HASH
        else:
            self.tree = await self.store.load_tree(size)
            self.prev_hash = await self.store.last_leaf_hash() or GENESIS_PREV_HASH
        self.keys = await self.store.load_keys(self.root_public)
        if all(k.public_key != self.signer.public_raw for k in self.keys.journal_keys()):
            # Its checkpoints would verify against no key: refuse rather than sign them.
            raise ConfigError(
                "SCF_KEYS_DIR", "journal.ed25519.pem is not a journal key this journal registered"
            )
        latest = await self.store.latest_checkpoint()
        self.checkpointed = latest.tree_size if latest else 0
        if self.checkpointed < self.tree.size:
            self._uncovered_since = time.monotonic()

    async def _genesis(self, genesis: SignedBatch) -> None:
        accepted, refused = self._sequence([genesis])
        if refused or not accepted:
            raise ConfigError("SCF_KEYS_DIR", f"the journal refused its genesis: {refused}")
        await self._commit(accepted, force_checkpoint=True)

    # -- the loop ---------------------------------------------------------

    async def run(self, genesis: SignedBatch | None) -> None:
        await self.take_leadership()
        try:
            await self.load(genesis)
            await self._republish()
            # Each message acknowledged by itself once journaled: with AckPolicy.ALL,
            # a restarted sequencer's first acknowledgement also acknowledged what
            # its predecessor had fetched and died holding, and that was never
            # journaled. Unacknowledged, it comes again after ack_wait.
            # (the operator's consumer: explicit acks, ack_wait 10 s; contracts.subjects)
            sub = await bind(self.js, self.subjects.sequencer)
            self.ready.set()
            watch = LoopWatch("the journal's sequencer", self.config.stall_s)
            await run_together(self._consume(sub, watch), watch.watch(), self._keep_leadership())
        finally:
            await self.release_leadership()

    async def release_leadership(self) -> None:
        # Pooled connections are not reset on release (runtime.db): the lock goes
        # explicitly, or the connection dies with it.
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        try:
            await conn.execute("SELECT pg_advisory_unlock_all()")
            await self.pool.release(conn)
        except BaseException:
            await _drop(self.pool, conn)
            raise

    def halted(self) -> bool:
        """The store is damaged: nothing more is sequenced on top of it."""
        return self.audit is not None and self.audit.damage is not None

    async def _consume(self, sub: Any, watch: LoopWatch) -> None:
        while True:
            watch.round("sequencing")
            if self.halted():  # submissions wait in the stream, unacknowledged
                await asyncio.sleep(1.0)
                continue
            msgs = await fetch(sub, self.config.batch_size, self.config.fetch_timeout_s)
            if self._unpublished:
                await self._republish()
            if msgs:
                await self.process(msgs)
            elif self._checkpoint_due():
                await self._commit([], force_checkpoint=True)
            if self._checkpoint_waiters:
                await self._answer_checkpoint_requests()

    async def process(self, msgs: Sequence[Msg]) -> None:
        """Journal everything in one fetch: one transaction, then acknowledgements."""
        started_ns = time.time_ns()
        batches: list[SignedBatch] = []
        submitters: list[str] = []
        refused: list[Refusal] = []
        for m in msgs:
            # Who submitted it is the subject it came on: only that service's
            # NATS user may publish there. A refusal goes back to it alone.
            submitter = m.subject.rsplit(".", 1)[-1]
            try:
                batches.append(decode_batch(m.data))
                submitters.append(submitter)
            except EncodingError as exc:
                refused.append(Refusal(submitter, (), f"malformed: {exc}", m.data))
        # Only a producer's own submissions may make the journal announce its
        # entries again: one naming another producer is refused below, unread.
        own = [b for b, who in zip(batches, submitters, strict=True) if b.producer == who]
        journaled = await self._journaled(own)
        accepted, key_refusals = self._sequence(batches, set(journaled), submitters)
        refused += key_refusals
        crash_point("sequencer.before_commit")
        if not await self._commit(accepted, refusals=refused):
            return  # unacknowledged: they wait for a restored store
        crash_point("sequencer.after_commit")
        if tracing.enabled():
            _trace_entries(msgs, accepted, started_ns)
        for m in msgs:
            await ack(m)
        if refused:
            await self._publish_refusals(refused)
        if journaled:
            await self._reannounce(sorted(set(journaled.values())))

    async def _journaled(self, batches: Sequence[SignedBatch]) -> dict[tuple[str, str], int]:
        """The (producer, idempotency key) pairs among ``batches`` already journaled."""
        pairs: list[tuple[str, str]] = []
        for batch in batches:
            with contextlib.suppress(EncodingError):
                pairs.extend((batch.producer, st.idempotency_key) for st in batch.decoded)
        return await self.store.existing(pairs)

    async def _reannounce(self, seqs: Sequence[int]) -> None:
        """A producer resubmitted what is journaled already: its confirmation may
        have been lost (a NATS crash loses what it had not flushed), so publish
        those entries again. Relays and replicas take duplicates in their stride."""
        entries = [e for seq in seqs if (e := await self.store.entry(seq)) is not None]
        log.info("re-announcing %d journaled entries to their producers", len(entries))
        await self._publish(entries, None, advance_watermark=False)

    def _sequence(
        self,
        batches: Sequence[SignedBatch],
        journaled: set[tuple[str, str]] | None = None,
        submitters: Sequence[str] | None = None,
    ) -> tuple[list[Accepted], list[Refusal]]:
        """Check and sequence in memory; the caller commits. ``submitters``: the
        producer whose subject each batch came on (None: the journal's own)."""
        journaled = set() if journaled is None else journaled
        accepted: list[Accepted] = []
        refused: list[Refusal] = []
        now = self.clock.now_micros()
        for i, batch in enumerate(batches):
            submitter = batch.producer if submitters is None else submitters[i]
            try:
                if submitter != batch.producer:
                    raise KeyRefused(
                        f"submitted on {submitter}'s subject but signed as {batch.producer}"
                    )
                statements = batch.decoded
                if any(
                    st.producer != batch.producer or st.key_id != batch.key_id for st in statements
                ):
                    raise KeyRefused("a statement in the batch names another producer or key")
                message = batch_signed_bytes(
                    batch.producer, batch.key_id, len(statements), batch_root(batch.statements)
                )
                self.keys.verify(batch.producer, batch.key_id, message, batch.signature)
            except (EncodingError, KeyRefused) as exc:
                keys = tuple(_keys_of(batch))
                refused.append(Refusal(submitter, keys, str(exc), batch.encode()))
                continue
            proofs = batch_proofs(batch.statements, batch.signature)
            for st, proof in zip(statements, proofs, strict=True):
                ident = (st.producer, st.idempotency_key)
                if ident in journaled:
                    continue
                entry = Entry(self.tree.size, now, self.prev_hash, st, proof)
                try:
                    if st.producer == PLATFORM_PRODUCER:
                        self.keys.apply(entry)
                except KeyRefused as exc:
                    refused.append(Refusal(st.producer, (st.idempotency_key,), str(exc), b""))
                    continue
                journaled.add(ident)
                leaf = entry.leaf_hash()
                nodes = self.tree.append(leaf)
                self.prev_hash = leaf
                accepted.append((entry, leaf, nodes))
        if accepted and self._uncovered_since is None:
            self._uncovered_since = time.monotonic()
        return accepted, refused

    def _checkpoint_due(self) -> bool:
        uncovered = self.tree.size - self.checkpointed
        if uncovered <= 0:
            return False
        if uncovered >= self.config.checkpoint_every:
            return True
        since = self._uncovered_since
        return since is not None and time.monotonic() - since >= self.config.checkpoint_interval_s

    async def _commit(
        self,
        accepted: Sequence[Accepted],
        *,
        refusals: Sequence[Refusal] = (),
        force_checkpoint: bool = False,
    ) -> bool:
        """Store entries (and a checkpoint when due), then publish them; False when
        the store's audit found damage and nothing was stored."""
        checkpoint = None
        if (force_checkpoint or self._checkpoint_due()) and self.tree.size > self.checkpointed:
            checkpoint = self.sign_checkpoint()
        started = time.perf_counter()
        try:
            async with self._audit_lock():
                if self.halted():
                    raise _Halted()
                await self.store.commit(
                    [(e, h) for e, h, _ in accepted],
                    [n for _, _, nodes in accepted for n in nodes],
                    [checkpoint] if checkpoint is not None else [],
                    [(r.producer, ",".join(r.keys), r.reason, r.message) for r in refusals],
                )
                if self.audit is not None:
                    self.audit.committed([h for _, h, _ in accepted])
        except _Halted:
            log.error("the store is damaged: %d entries not committed", len(accepted))
            return False
        except BaseException:
            # The in-memory tree ran ahead of the database: reload it.
            log.exception("journal commit failed; reloading state")
            await self.load(None)
            if self.halted():  # it failed on rows nobody should have written
                return False
            raise
        if accepted or refusals or checkpoint is not None:
            JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)
        if accepted:
            JOURNAL_ENTRIES.inc(len(accepted))
            JOURNAL_BATCH_ENTRIES.observe(len(accepted))
        for r in refusals:
            JOURNAL_REFUSALS.labels(r.producer).inc()
        JOURNAL_TREE_SIZE.set(self.tree.size)
        if checkpoint is not None:
            self.checkpointed = checkpoint.tree_size
            self._uncovered_since = None
            JOURNAL_CHECKPOINT_SECONDS.set(checkpoint.time_micros / 1_000_000)
        crash_point("sequencer.before_publish")
        await self._publish([e for e, _, _ in accepted], checkpoint)
        return True

    def _audit_lock(self) -> Any:
        return self.audit.lock if self.audit is not None else contextlib.nullcontext()

    async def request_checkpoint(self) -> StoredCheckpoint:
        """A checkpoint over everything committed so far, signed now if need be."""
        waiter: asyncio.Future[StoredCheckpoint] = asyncio.get_running_loop().create_future()
        self._checkpoint_waiters.append(waiter)
        return await waiter

    async def _answer_checkpoint_requests(self) -> None:
        waiters, self._checkpoint_waiters = self._checkpoint_waiters, []
        if not await self._commit([], force_checkpoint=True):
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StoreDamaged("the journal's store is damaged"))
            return
        latest = await self.store.latest_checkpoint()
        for waiter in waiters:
            if not waiter.done() and latest is not None:
                waiter.set_result(latest)

    def sign_checkpoint(self) -> StoredCheckpoint:
        cp = Checkpoint(
            self.config.origin, self.tree.size, self.tree.root(), self.clock.now_micros()
        )
        note = sign_checkpoint(cp, self.signer, self.config.origin)
        return StoredCheckpoint(cp.size, cp.root, cp.timestamp_micros, note)

    # -- publication --------------------------------------------------------

    async def _publish(
        self,
        entries: Sequence[Entry],
        checkpoint: StoredCheckpoint | None,
        *,
        advance_watermark: bool = True,
    ) -> None:
        """Entries and checkpoints to the journal stream (replicas, relays)."""
        by_producer: dict[str, list[Entry]] = {}
        for e in entries:
            by_producer.setdefault(e.statement.producer, []).append(e)
        # Each message at most ENTRIES_PER_MESSAGE entries and under NATS's
        # message limit, however large the entries.
        groups = [
            (producer, part)
            for producer, group in by_producer.items()
            for part in pack(
                group, _packed_size, ENTRIES_PER_MESSAGE, self.config.max_message_bytes
            )
        ]
        pubs = [
            self.js.publish(
                self.subjects.entries(producer),
                pack_records([e.encode() for e in group]),
                headers={
                    "Nats-Msg-Id": f"entries-{producer}-{group[0].seq}-{group[-1].seq}",
                    HDR_FIRST_SEQ: str(group[0].seq),
                    HDR_LAST_SEQ: str(group[-1].seq),
                },
                timeout=10,
            )
            for producer, group in groups
        ]
        if checkpoint is not None:
            pubs.append(
                self.js.publish(
                    self.subjects.checkpoints,
                    checkpoint.note.encode(),
                    headers={"Nats-Msg-Id": f"checkpoint-{checkpoint.tree_size}"},
                    timeout=10,
                )
            )
        results = await asyncio.gather(*pubs, return_exceptions=True)
        if any(isinstance(r, BaseException) for r in results):
            log.warning("publishing entries failed; will republish from the database")
            self._unpublished = True
            return
        if entries and advance_watermark and not self._unpublished:
            await self.store.set_publication(entries[-1].seq + 1)

    async def _republish(self) -> None:
        """After a crash between commit and publish: publish what was missed."""
        self._unpublished = False
        start = await self.store.publication()
        end = self.tree.size
        if start >= end:
            return
        log.info("republishing entries %d..%d", start, end - 1)
        batch: list[Entry] = []
        async for entry in self.store.entries(start, end):
            batch.append(entry)
            if len(batch) >= 1000:
                await self._publish(batch, None)
                batch = []
        if batch:
            await self._publish(batch, None)

    async def _publish_refusals(self, refused: Sequence[Refusal]) -> None:
        """Each refusal to its submitter, signed by the journal's key: a relay acts
        on nothing else, and only for the keys a refusal names."""
        for r in refused:
            log.error("refused %s %s: %s", r.producer, ",".join(r.keys) or "?", r.reason)
            subject = self.subjects.refusals(r.producer)
            body = bus_pb2.Refusal(
                producer=r.producer, idempotency_keys=r.keys, reason=r.reason[:500]
            )
            data = seal(
                self.signer, purpose_of(subject, "event"), f"refusal-{uuid.uuid4().hex}",
                body.SerializeToString(), now_micros=real_time_micros(), ttl_micros=None,
            )  # fmt: skip
            with contextlib.suppress(Exception):
                await self.js.publish(subject, data, timeout=5)


def _keys_of(batch: SignedBatch) -> list[str]:
    try:
        return [st.idempotency_key for st in batch.decoded]
    except EncodingError:
        return []
