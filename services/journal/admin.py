"""``scf.journal.v1.JournalAdminService``: the operator's levers, each one journaled."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nats.js import JetStreamContext

from services.contracts.subjects import Subjects
from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.journal.encoding import SignedBatch
from services.journal.genesis import key_statement, verify_root_batch
from services.journal.keyset import (
    EV_REGISTERED,
    EV_REVOKED,
    PLATFORM_PRODUCER,
    KeyRefused,
)
from services.journal.self_audit import StoreAudit
from services.journal.sequencer import Sequencer
from services.journal.storage import JournalStore
from services.runtime.config import SERVICE_NAMES
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.runtime.identity import Role, require_role
from services.runtime.keys import key_id_of

__all__ = ["AdminServicer"]

_WAIT_S = 10.0


class AdminServicer(journal_pb2_grpc.JournalAdminServiceServicer):
    def __init__(
        self,
        sequencer: Sequencer,
        store: JournalStore,
        js: JetStreamContext,
        subjects: Subjects,
        root_public: bytes,
        audit: StoreAudit | None = None,
    ) -> None:
        self.audit = audit
        self.sequencer = sequencer
        self.store = store
        self.js = js
        self.subjects = subjects
        self.root_public = root_public
        self.root_key_id = key_id_of(root_public)

    async def RequestCheckpoint(
        self, request: Any, context: Any
    ) -> journal_pb2.RequestCheckpointResponse:
        require_role(Role.OPERATOR)
        async with asyncio.timeout(_WAIT_S):
            cp = await self.sequencer.request_checkpoint()
        return journal_pb2.RequestCheckpointResponse(checkpoint=cp.note, tree_size=cp.tree_size)

    async def RegisterKey(
        self, request: journal_pb2.RegisterKeyRequest, context: Any
    ) -> journal_pb2.RegisterKeyResponse:
        require_role(Role.OPERATOR)
        producer = request.producer
        if producer not in SERVICE_NAMES:
            # A key for a producer nobody runs would stand in the key set for good.
            raise InvalidArgument(
                "producer", f"{producer!r} is not a service: one of {', '.join(SERVICE_NAMES)}"
            )
        if len(request.public_key) != 32:
            raise InvalidArgument("public_key", "an Ed25519 public key is 32 bytes")
        body = {"producer": producer, "public_key": request.public_key.hex()}
        seq = await self._journal(EV_REGISTERED, body, request)
        return journal_pb2.RegisterKeyResponse(seq=seq, key_id=key_id_of(request.public_key))

    async def RevokeKey(
        self, request: journal_pb2.RevokeKeyRequest, context: Any
    ) -> journal_pb2.RevokeKeyResponse:
        require_role(Role.OPERATOR)
        if len(request.key_id) != 32:
            raise InvalidArgument("key_id", "a key id is the 32-byte SHA-256 of the public key")
        seq = await self._journal(EV_REVOKED, {"key_id": request.key_id.hex()}, request)
        return journal_pb2.RevokeKeyResponse(seq=seq)

    async def ListRefusals(
        self, request: journal_pb2.ListRefusalsRequest, context: Any
    ) -> journal_pb2.ListRefusalsResponse:
        require_role(Role.OPERATOR)
        rows = await self.store.pool.fetch(
            "SELECT producer, idempotency_key, reason,"
            " (extract(epoch FROM refused_at) * 1000000)::bigint AS micros"
            " FROM refusals ORDER BY id DESC LIMIT $1",
            min(request.limit or 100, 1000),
        )
        return journal_pb2.ListRefusalsResponse(
            refusals=[
                journal_pb2.Refusal(
                    producer=r["producer"],
                    idempotency_keys=r["idempotency_key"],
                    reason=r["reason"],
                    refused_micros=r["micros"],
                )
                for r in rows
            ]
        )

    async def _journal(
        self,
        event_type: str,
        body: dict[str, str],
        request: journal_pb2.RegisterKeyRequest | journal_pb2.RevokeKeyRequest,
    ) -> int:
        """Carry a key entry the root key signed offline to the journal, like any
        producer's batch; wait for its fate. The signature is checked here first,
        so a wrong one is the caller's error, not a refusal in the journal."""
        key = request.idempotency_key
        if not key or len(key) > 200:
            raise InvalidArgument("idempotency_key", "required, at most 200 characters")
        if request.produced_micros <= 0:
            raise InvalidArgument("produced_micros", "the statement's time as signed")
        st = key_statement(event_type, body, key, request.produced_micros, self.root_key_id)
        batch = SignedBatch(
            PLATFORM_PRODUCER, self.root_key_id, (st.encode(),), request.root_signature
        )
        try:
            verify_root_batch(batch, self.root_public)
        except KeyRefused:
            raise PermissionDenied(
                "root_signature: not the platform root key's signature over this statement"
            ) from None
        await self.js.publish(self.subjects.submit(PLATFORM_PRODUCER), batch.encode(), timeout=5)
        deadline = time.monotonic() + _WAIT_S
        while time.monotonic() < deadline:
            done = await self.store.existing([(PLATFORM_PRODUCER, key)])
            if done:
                return next(iter(done.values()))
            reason = await self.store.pool.fetchval(
                "SELECT reason FROM refusals WHERE producer = $1 AND idempotency_key = $2"
                " ORDER BY id DESC LIMIT 1",
                PLATFORM_PRODUCER,
                key,
            )
            if reason is not None:
                raise FailedPrecondition(f"the journal refused it: {reason}")
            await asyncio.sleep(0.05)
        raise FailedPrecondition(
            "the journal did not take the entry in time; retry with the same key"
        )

    async def GetStoreAudit(
        self, request: journal_pb2.GetStoreAuditRequest, context: Any
    ) -> journal_pb2.GetStoreAuditResponse:
        require_role(Role.OPERATOR)
        audit = self.audit
        if audit is None:
            return journal_pb2.GetStoreAuditResponse()
        reply = journal_pb2.GetStoreAuditResponse(
            verified_size=audit.size, sweeps=audit.sweeps,
            last_sweep_micros=audit.last_sweep_micros,
        )  # fmt: skip
        if audit.damage is not None:
            d = audit.damage
            reply.damage.CopyFrom(
                journal_pb2.StoreDamage(
                    seq=max(d.seq, 0),
                    problem=d.problem,
                    evidence=list(d.evidence),
                    detected_micros=d.detected_micros,
                )
            )
        return reply
