"""Scoring requests from lending (signed request-reply on ``<prefix>.scoring.score``).

One decision per application: asked again, scoring answers with the decision
it made (and journaled) the first time. It acts only on a request lending
signed, and relies only on facts orders signed and a record repayment signed.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from services.contracts.subjects import Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.journal import canonical_json
from services.runtime.clock import Clock
from services.runtime.errors import InvalidArgument
from services.runtime.journal_client import Outbox
from services.runtime.messaging import Messenger
from services.scoring.characteristics import (
    RepaymentHistory,
    check_lease,
    check_order,
    inputs_for,
    lease_inputs_for,
)
from services.scoring.scorecard import score
from services.scoring.storage import LEASE_MODEL, ORDER_MODEL, ScoringStore

__all__ = ["ScoreHandler"]

log = logging.getLogger(__name__)


class ScoreHandler:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        messenger: Messenger,
        outbox: Outbox,
        clock: Clock,
        subjects: Subjects,
    ) -> None:
        self.store = ScoringStore(pool)
        self.messenger = messenger
        self.outbox = outbox
        self.clock = clock
        self.subjects = subjects

    async def subscribe(self) -> None:
        await self.messenger.serve(
            self.subjects.score, bus_pb2.ScoreRequest, bus_pb2.ScoreResult, self.answer,
            senders=("lending",), queue="scoring",
        )  # fmt: skip

    async def answer(self, request: bus_pb2.ScoreRequest, signer: str) -> bus_pb2.ScoreResult:
        # Orders or repayment away (or their answer untrusted): UNAVAILABLE, no decision.
        return await self.decide(request)

    async def _history(self, subcontractor: str) -> RepaymentHistory:
        """The repayment record. When repayment does not answer, this raises
        (and the request is answered UNAVAILABLE): a borrower is never scored
        as one without a record because the record was out of reach."""
        body = await self.messenger.request(
            self.subjects.repayment_history,
            bus_pb2.RepaymentHistoryQuery(subcontractor_id=subcontractor),
            bus_pb2.RepaymentHistory, server="repayment", timeout=2,
        )  # fmt: skip
        return RepaymentHistory(body.repaid_on_time, body.max_days_past_due, body.defaults)

    async def _facts(self, query: bus_pb2.OrderFactsQuery) -> bus_pb2.OrderFacts:
        return await self.messenger.request(
            self.subjects.order_facts, query, bus_pb2.OrderFacts, server="orders", timeout=5
        )

    async def decide(self, request: bus_pb2.ScoreRequest) -> bus_pb2.ScoreResult:
        if not request.application_id:
            raise InvalidArgument("application_id", "required")
        existing = await self.store.decision_for(request.application_id)
        if existing is not None:
            return existing
        if request.HasField("lease"):
            lease = request.lease
            facts = await self._facts(
                bus_pb2.OrderFactsQuery(subcontractor_id=lease.lessee_id, currency=lease.currency)
            )
            subcontractor = lease.lessee_id
            check_lease(lease)  # a refusal needs no record: refuse before asking repayment
            history = await self._history(subcontractor)
            inputs, amount = lease_inputs_for(lease, facts, history)
            card = await self.store.active_model(LEASE_MODEL)
        else:
            facts = await self._facts(bus_pb2.OrderFactsQuery(order_id=request.order_id))
            check_order(facts)
            subcontractor = facts.order.subcontractor_id
            history = await self._history(subcontractor)
            inputs, amount = inputs_for(facts, history, self.clock.now().date())
            card = await self.store.active_model(ORDER_MODEL)
        facility = (
            request.facility_available_minor
            if request.HasField("facility_available_minor")
            else None
        )
        decision = score(card, inputs, amount, facility)
        decision_id = f"DEC-{request.application_id}"
        document = {
            "decision_id": decision_id,
            "application_id": request.application_id,
            "order_id": request.order_id,
            "subcontractor_id": subcontractor,
            "bank": request.bank,
            **decision.as_json(),
        }
        async with self.store.pool.acquire() as conn, conn.transaction():
            await self.store.insert(conn, decision_id, request, document, self.clock.now_micros())
            await self.outbox.add(
                conn,
                subject=f"application/{request.application_id}",
                event_type="score.decided",
                payload=document,
                idempotency_key=f"score/{request.application_id}",
            )
        return bus_pb2.ScoreResult(
            decision_id=decision_id, decision_json=canonical_json(document).decode()
        )
