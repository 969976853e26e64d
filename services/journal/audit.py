"""The audit API (``scf.journal.v1.AuditService``): read-only, for auditors.

Served by the journal over its own store, and by each bank replica over its
verified copy; every answer carries what is needed to check it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.journal.encoding import Entry
from services.journal.self_audit import StoreAudit, StoreDamaged
from services.journal.storage import JournalStore
from services.journal.tree import consistency_ranges, inclusion_ranges
from services.journal.witness import witness_key_hash
from services.journal.witness_keys import read_witness_keys
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.identity import Role, require_role
from services.runtime.pg_listen import PgListener
from services.runtime.waiting import wait_event
from services.runtime.watching import SAFETY_READ_S, Changes

#: How long a subject's history waits for a checkpoint that covers all of it.
COVER_WAIT_S = 5.0

__all__ = ["RECEIPT_FORMAT", "AuditServicer", "entry_message"]

#: Who may read the journal. Parties see their own orders' proofs through the
#: order's public verification call instead.
READERS = (Role.AUDITOR, Role.UNDERWRITER, Role.OPERATOR, Role.SERVICE)
RECEIPT_FORMAT = "scf-receipt-v1"


def entry_message(entry: Entry) -> journal_pb2.Entry:
    st = entry.statement
    return journal_pb2.Entry(
        seq=entry.seq,
        leaf=entry.encode(),
        time_micros=entry.time_micros,
        producer=st.producer,
        key_id=st.key_id,
        subject=st.subject,
        event_type=st.event_type,
        idempotency_key=st.idempotency_key,
        payload=st.payload,
        prev_hash=entry.prev_hash,
        signature=entry.signature,
        produced_micros=st.produced_micros,
    )


class AuditServicer(journal_pb2_grpc.AuditServiceServicer):
    """The journal's (and each replica's) read API. With ``audit`` (the journal's
    own check of its store) it serves only entries whose hash it verified, and
    nothing once it found damage."""

    def __init__(
        self,
        store: JournalStore,
        root_public_key: bytes,
        audit: StoreAudit | None = None,
        *,
        keys_dir: Path | None = None,
    ) -> None:
        self.store = store
        #: Where the banks' witness public keys are (``witness-<bank>.pub``).
        self.keys_dir = keys_dir
        self.root_public_key = root_public_key
        self.audit = audit
        self._changes = Changes()
        #: Listens only while a watch call runs (it holds a connection of the pool).
        self._listener: PgListener | None = None
        self._watchers = 0

    async def WatchCheckpoints(
        self, request: journal_pb2.WatchCheckpointsRequest, context: Any
    ) -> AsyncIterator[journal_pb2.WatchCheckpointsResponse]:
        self._guard()
        async with self._listening() as changes:
            async for reply in self._checkpoints(changes, request):
                yield reply

    @contextlib.asynccontextmanager
    async def _listening(self) -> AsyncIterator[Changes]:
        """Told of each checkpoint and cosignature while the block runs."""
        self._watchers += 1
        try:
            yield await self._checkpoint_changes()
        finally:
            self._watchers -= 1
            if not self._watchers and self._listener is not None:
                await self._listener.close()  # its connection back, or shutdown would wait

    async def _checkpoints(
        self, changes: Changes, request: journal_pb2.WatchCheckpointsRequest
    ) -> AsyncIterator[journal_pb2.WatchCheckpointsResponse]:
        sent: tuple[int, str] | None = None
        with changes.waiter() as changed:  # before the first read: nothing missed
            while True:
                changed.clear()
                self._guard()
                cp = await self.store.cosigned_checkpoint(request.min_cosignatures)
                fresh = cp is not None and (cp.tree_size, cp.note) != sent
                if cp is not None and fresh and cp.tree_size >= request.min_size:
                    sent = (cp.tree_size, cp.note)
                    yield journal_pb2.WatchCheckpointsResponse(
                        checkpoint=cp.note, tree_size=cp.tree_size, root_hash=cp.root_hash
                    )
                await wait_event(changed, SAFETY_READ_S)

    async def _checkpoint_changes(self) -> Changes:
        """Told by PostgreSQL of each checkpoint and cosignature committed, by this
        process or another one on the store (a standby's watchers too)."""
        if self._listener is None:
            channel = await self.store.checkpoints_channel()
            self._listener = PgListener(self.store.pool, channel, self._changes.notify)
        await self._listener.ensure()
        return self._changes

    def _guard(self) -> None:
        require_role(*READERS)
        if self.audit is not None and self.audit.damage is not None:
            d = self.audit.damage
            raise StoreDamaged(
                f"the journal's store is damaged at entry {d.seq}: {d.problem};"
                " ask a bank's replica meanwhile", reason="STORE_DAMAGED",
            )  # fmt: skip

    async def _checked(self, entries: list[Entry]) -> list[Entry]:
        return entries if self.audit is None else await self.audit.check_served(entries)

    async def _stored_size(self) -> int:
        """Entries that may be served: with the audit, those it verified."""
        stored = await self.store.size()
        return stored if self.audit is None else min(stored, self.audit.size)

    async def _latest(self) -> Any:
        latest = await self.store.latest_checkpoint()
        if latest is None:
            raise FailedPrecondition("the journal has no checkpoint yet")
        return latest

    async def ListWitnesses(
        self, request: journal_pb2.ListWitnessesRequest, context: Any
    ) -> journal_pb2.ListWitnessesResponse:
        self._guard()
        known = read_witness_keys(self.keys_dir) if self.keys_dir is not None else {}
        return journal_pb2.ListWitnessesResponse(
            witnesses=[
                journal_pb2.Witness(
                    name=name, public_key=key, note_key_hash=witness_key_hash(name, key)
                )
                for name, key in sorted(known.items())
            ]
        )

    async def GetCheckpoint(self, request: Any, context: Any) -> journal_pb2.GetCheckpointResponse:
        self._guard()
        cp = await self.store.cosigned_checkpoint(request.min_cosignatures)
        if cp is None:
            raise FailedPrecondition(
                f"no checkpoint has {request.min_cosignatures} cosignatures yet"
            )
        return journal_pb2.GetCheckpointResponse(
            checkpoint=cp.note, tree_size=cp.tree_size, root_hash=cp.root_hash
        )

    async def ListEntries(
        self, request: journal_pb2.ListEntriesRequest, context: Any
    ) -> AsyncIterator[journal_pb2.ListEntriesResponse]:
        self._guard()
        if request.end and request.end < request.start:
            raise InvalidArgument("end", f"{request.end} is before start {request.start}")
        size = await self._stored_size()
        end = min(request.end or size, size)
        if end <= request.start:
            return
        if request.beyond_checkpoint:
            cp = await self.store.latest_checkpoint()  # the operator's copy: no wait, no cut
        else:
            cp = await self._checkpoint_covering(end, context)
            end = min(end, cp.tree_size)
        tree_size, note = (cp.tree_size, cp.note) if cp is not None else (0, "")
        async for chunk in _batches(self.store.entries(request.start, end), 500):
            for checked in await self._checked(chunk):
                yield journal_pb2.ListEntriesResponse(
                    entry=entry_message(checked), tree_size=tree_size, checkpoint=note
                )
                note = ""  # in the first message only

    async def GetSubjectHistory(
        self, request: journal_pb2.GetSubjectHistoryRequest, context: Any
    ) -> AsyncIterator[journal_pb2.GetSubjectHistoryResponse]:
        self._guard()
        if not request.subject:
            raise InvalidArgument("subject", "required, such as order/ORD-1")
        entries = await self._checked(await self.store.subject_history(request.subject))
        if not entries:
            return
        cp = await self._checkpoint_covering(entries[-1].seq + 1, context)
        first = True
        for entry in entries:
            if entry.seq >= cp.tree_size:
                break  # newer than any checkpoint yet: it could not be proven
            proof = await self.store.proof(inclusion_ranges(entry.seq, cp.tree_size))
            yield journal_pb2.GetSubjectHistoryResponse(
                entry=entry_message(entry), inclusion_proof=proof, tree_size=cp.tree_size,
                checkpoint=cp.note if first else "",
            )  # fmt: skip
            first = False

    async def _checkpoint_covering(self, size: int, context: Any) -> Any:
        """The latest checkpoint (its cosignatures with it), once it covers ``size``
        entries, or at the caller's deadline (5 s at most) the latest there is."""
        cp = await self.store.cosigned_checkpoint(0)
        if cp is not None and cp.tree_size >= size:
            return cp  # the usual case: no need to listen for one
        left = context.time_remaining() if context is not None else None
        patience = COVER_WAIT_S if left is None else min(COVER_WAIT_S, max(0.0, left - 0.5))
        deadline = time.monotonic() + patience
        async with self._listening() as changes:
            with changes.waiter() as changed:
                while True:
                    changed.clear()
                    cp = await self.store.cosigned_checkpoint(0)
                    if cp is not None and cp.tree_size >= size:
                        return cp
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        break
                    await wait_event(changed, min(SAFETY_READ_S, wait))
        if cp is None:
            raise FailedPrecondition("the journal has no checkpoint yet")
        return cp

    async def _size(self, requested: int) -> int:
        if requested:
            return requested
        return int((await self._latest()).tree_size)

    async def GetInclusionProof(
        self, request: journal_pb2.GetInclusionProofRequest, context: Any
    ) -> journal_pb2.GetInclusionProofResponse:
        self._guard()
        size = await self._size(request.tree_size)
        stored = await self._stored_size()
        if size > stored:
            raise InvalidArgument("tree_size", f"{size} is beyond the journal's {stored} entries")
        if request.seq >= size:
            raise InvalidArgument("seq", f"{request.seq} is not below tree size {size}")
        entry = await self.store.entry(request.seq)
        if entry is None or not await self._checked([entry]):
            raise NotFound(f"entry {request.seq}")
        proof = await self.store.proof(inclusion_ranges(request.seq, size))
        return journal_pb2.GetInclusionProofResponse(
            seq=request.seq, tree_size=size, proof=proof, leaf_hash=entry.leaf_hash()
        )

    async def GetConsistencyProof(
        self, request: journal_pb2.GetConsistencyProofRequest, context: Any
    ) -> journal_pb2.GetConsistencyProofResponse:
        self._guard()
        second = await self._size(request.second_size)
        stored = await self._stored_size()
        if second > stored:
            raise InvalidArgument(
                "second_size", f"{second} is beyond the journal's {stored} entries"
            )
        if not 0 < request.first_size <= second:
            raise InvalidArgument("first_size", f"must be between 1 and {second}")
        proof = await self.store.proof(consistency_ranges(request.first_size, second))
        return journal_pb2.GetConsistencyProofResponse(
            first_size=request.first_size, second_size=second, proof=proof
        )

    async def GetKeySet(
        self, request: journal_pb2.GetKeySetRequest, context: Any
    ) -> journal_pb2.GetKeySetResponse:
        self._guard()
        size = request.tree_size or await self._stored_size()
        keys = await self.store.load_keys(self.root_public_key, upto=size)
        return journal_pb2.GetKeySetResponse(
            tree_size=size,
            keys=[
                journal_pb2.ProducerKey(
                    producer=k.producer,
                    key_id=k.key_id,
                    public_key=k.public_key,
                    registered_at=k.registered_at,
                    revoked_at=k.revoked_at,
                )
                for k in keys.keys.values()
            ],
        )

    async def GetReceipt(
        self, request: journal_pb2.GetReceiptRequest, context: Any
    ) -> journal_pb2.GetReceiptResponse:
        self._guard()
        entry = await self.store.entry(request.seq)
        if entry is not None:
            await self._checked([entry])
        receipt = await build_receipt(self.store, request.seq, request.min_cosignatures)
        return journal_pb2.GetReceiptResponse(receipt_json=json.dumps(receipt, indent=2))


async def build_receipt(store: JournalStore, seq: int, min_cosignatures: int = 0) -> dict[str, Any]:
    """The entry, the entry that registered its key, both proven against the
    latest signed checkpoint with ``min_cosignatures`` bank cosignatures, which
    it carries (docs/journal-format.md, "Receipts")."""
    latest = await store.cosigned_checkpoint(min_cosignatures)
    if latest is None:
        raise FailedPrecondition(f"no checkpoint has {min_cosignatures} cosignatures yet")
    if seq >= latest.tree_size:
        raise FailedPrecondition(
            f"entry {seq} is not yet covered by a checkpoint (latest covers {latest.tree_size})"
        )
    entry = await store.entry(seq)
    if entry is None:
        raise NotFound(f"entry {seq}")

    async def proven(e: Entry) -> dict[str, Any]:
        proof = await store.proof(inclusion_ranges(e.seq, latest.tree_size))
        return {
            "seq": e.seq,
            "leaf": base64.b64encode(e.encode()).decode(),
            "inclusion_proof": [base64.b64encode(p).decode() for p in proof],
        }

    receipt: dict[str, Any] = {"format": RECEIPT_FORMAT, "checkpoint": latest.note}
    receipt["entry"] = await proven(entry)
    if entry.statement.producer != "platform":
        key_entry = await store.key_entry_for(entry.statement.key_id)
        if key_entry is None:
            raise NotFound(f"no entry registers the key of entry {seq}")
        receipt["key_entry"] = await proven(key_entry)
    return receipt


async def _batches(entries: AsyncIterator[Entry], size: int) -> AsyncIterator[list[Entry]]:
    """``entries`` in lists of ``size`` (the last one shorter)."""
    batch: list[Entry] = []
    async for entry in entries:
        batch.append(entry)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
