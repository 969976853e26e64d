"""A replica cross-examines the operator: what the journal's audit API serves,
against the replica's own verified copy.

Auditors, banks and clients read the journal through its audit API. The
replica checks that what it serves there is what the replica verified from
the stream: a sweep over the whole verified history once every ``period_s``
(a chunk each round), and a few random samples each round (an entry's
inclusion proof against the replica's own checkpoint root, and its subject's
history). It also watches the journal's size: a store that goes backwards
lost its tail. Any difference raises the replica's alarm, holding the
evidence: what the operator served, what the replica holds, and the signed
checkpoint the replica verified. A journal that answers DATA_LOSS (its own
check found its store damaged) is an alarm too, with the journal's words.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from services.gen.scf.journal.v1 import journal_pb2
from services.journal import JournalStore, ProofError, leaf_hash, verify_inclusion
from services.replica.alarm import AlarmRecord
from services.runtime.journal_client import AuditClient

__all__ = ["CrossExamination"]

log = logging.getLogger(__name__)


class _Differs(Exception):
    def __init__(self, seq: int, problem: str, evidence: tuple[str, ...]) -> None:
        super().__init__(problem)
        self.seq, self.problem, self.evidence = seq, problem, evidence


class Examiner(Protocol):
    """What the cross-examination needs of its replica."""

    bank: str
    store: JournalStore
    alarm: AlarmRecord | None

    @property
    def audit_client(self) -> AuditClient: ...

    #: How many entries the replica has verified and stored: what its store answers for.
    stored_size: int

    async def raise_alarm(self, alarm: AlarmRecord) -> None: ...


@dataclass
class CrossExamination:
    replica: Examiner
    #: The audit API examined: the journal's (the replica's own client) unless given.
    audit_client: AuditClient | None = None
    #: The whole verified history is compared once in this period.
    period_s: float = 300.0
    #: Between rounds.
    interval_s: float = 1.0
    #: Random entries checked each round (proof and subject history).
    samples: int = 3
    rng: random.Random = field(default_factory=random.Random)
    #: Where the sweep is, and how many whole passes it made.
    position: int = 0
    sweeps: int = 0
    #: The largest size the journal itself said it had.
    journal_said: int = 0

    async def run(self) -> None:
        while self.replica.alarm is None:
            alarm = await self.round()
            if alarm is not None:
                await self.replica.raise_alarm(alarm)
                return
            await asyncio.sleep(self.interval_s)

    async def round(self) -> AlarmRecord | None:
        """One round: the journal's size, a chunk of the sweep, a few samples."""
        if self.replica.stored_size == 0:
            return None
        try:
            client = self.audit_client or self.replica.audit_client
            async with client() as audit:
                await self._size(audit)
                await self._sweep(audit)
                for _ in range(self.samples):
                    await self._sample(audit, self.rng.randrange(self.replica.stored_size))
        except _Differs as d:
            return AlarmRecord("cross-examination", d.seq, d.problem, d.evidence)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DATA_LOSS:
                return AlarmRecord(
                    "cross-examination", self.replica.stored_size,
                    f"the journal reports its store damaged: {exc.details()}",
                    (await self._our_checkpoint(),),
                )  # fmt: skip
            log.warning("replica %s cannot cross-examine the journal: %s", self.replica.bank, exc)
        except OSError as exc:  # the journal away: the stream still works
            log.warning("replica %s cannot cross-examine the journal: %r", self.replica.bank, exc)
        return None

    async def _our_checkpoint(self) -> str:
        latest = await self.replica.store.latest_checkpoint()
        return latest.note if latest is not None else ""

    async def _size(self, audit: Any) -> None:
        """A journal whose size goes backwards lost entries it had published."""
        # Entries verify one by one, before a checkpoint covers them: the size to
        # hold the journal to is the largest it signed, not what this replica holds.
        # Ours is read before asking: a checkpoint the journal signs after it answered
        # may reach this replica before the answer is compared.
        ours = await self.replica.store.latest_checkpoint()
        reply = await audit.GetCheckpoint(journal_pb2.GetCheckpointRequest(), timeout=5)
        said = max(self.journal_said, ours.tree_size if ours is not None else 0)
        if reply.tree_size < said:
            raise _Differs(
                reply.tree_size,
                f"the journal's store went backwards: its latest checkpoint covers"
                f" {reply.tree_size} entries, it signed one of {said} before",
                (reply.checkpoint, await self._our_checkpoint()),
            )
        self.journal_said = max(self.journal_said, int(reply.tree_size))

    async def _sweep(self, audit: Any) -> None:
        # The entries a checkpoint of ours covers: the journal signed it, so its
        # own latest covers them as well and serves every one (ListEntries is
        # cut at its latest checkpoint).
        ours = await self.replica.store.latest_checkpoint()
        size = min(self.replica.stored_size, ours.tree_size if ours is not None else 0)
        rounds = max(1.0, self.period_s / self.interval_s)
        chunk = max(256, math.ceil(size / rounds))
        start = self.position if self.position < size else 0
        end = min(size, start + chunk)
        stream: Any = audit.ListEntries(journal_pb2.ListEntriesRequest(start=start, end=end))
        served = {reply.entry.seq: reply.entry.leaf async for reply in stream}
        async for held in self.replica.store.entries(start, end):
            if held.seq not in served:
                raise _Differs(
                    held.seq,
                    f"the journal serves {len(served)} of entries {start}..{end - 1}:"
                    f" entry {held.seq} is missing from its store",
                    (f"held {held.encode().hex()}", await self._our_checkpoint()),
                )
            self._same(held.seq, served[held.seq], held.encode(), "ListEntries")
        self.position = end
        if end >= size:
            self.position, self.sweeps = 0, self.sweeps + 1

    def _same(self, seq: int, served: bytes, held: bytes, how: str) -> None:
        if leaf_hash(served) != leaf_hash(held):
            raise _Differs(
                seq, f"the journal's {how} serves entry {seq} differently from the one verified",
                (f"served {served.hex()}", f"held {held.hex()}"),
            )  # fmt: skip

    async def _sample(self, audit: Any, seq: int) -> None:
        store = self.replica.store
        mine = await store.entry(seq)
        if mine is None:
            return
        checkpoint = await store.latest_checkpoint()
        if checkpoint is not None and seq < checkpoint.tree_size:
            reply = await audit.GetInclusionProof(
                journal_pb2.GetInclusionProofRequest(seq=seq, tree_size=checkpoint.tree_size),
                timeout=5,
            )
            try:
                verify_inclusion(
                    seq, checkpoint.tree_size, mine.leaf_hash(), list(reply.proof),
                    checkpoint.root_hash,
                )  # fmt: skip
            except ProofError as exc:
                raise _Differs(
                    seq, f"the journal's inclusion proof of entry {seq} does not verify: {exc}",
                    (f"proof {[p.hex() for p in reply.proof]}", checkpoint.note),
                ) from None  # fmt: skip
        subject = mine.statement.subject
        # The history is compared up to what this replica held when it asked: entries
        # it verifies while the answer is on its way may be newer than the answer.
        asked_at = self.replica.stored_size
        request = journal_pb2.GetSubjectHistoryRequest(subject=subject)
        stream: Any = audit.GetSubjectHistory(request, timeout=10)
        served: dict[int, bytes] = {}
        proven_to = 0
        async for r in stream:
            served[r.entry.seq] = r.entry.leaf
            proven_to = max(proven_to, r.tree_size)
        # A history ends at the checkpoint it is proven against: entries this
        # replica verified past that one (a journal restarting has not signed
        # its next yet) are not left out. Never below our own checkpoint, which
        # the journal signed and so its latest covers.
        ours_size = checkpoint.tree_size if checkpoint is not None else 0
        upto = min(asked_at, max(proven_to, ours_size))
        held = [e for e in await store.subject_history(subject) if e.seq < upto]
        for e in held:
            if e.seq not in served:
                raise _Differs(
                    e.seq, f"the journal's history of {subject} leaves out entry {e.seq}",
                    (f"held {e.encode().hex()}", await self._our_checkpoint()),
                )  # fmt: skip
            self._same(e.seq, served[e.seq], e.encode(), f"history of {subject}")
        ours = {e.seq for e in held}
        extra = sorted(s for s in served if s < upto and s not in ours)
        if extra:
            raise _Differs(
                extra[0], f"the journal's history of {subject} has entry {extra[0]}, which is"
                f" not {subject}'s", (f"served {served[extra[0]].hex()}",),
            )  # fmt: skip
