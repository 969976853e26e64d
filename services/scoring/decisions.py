"""Scoring requests from lending (NATS request-reply on ``<prefix>.scoring.score``).

One decision per application: asked again, scoring answers with the decision
it made (and journaled) the first time.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.gen.scf.orders.v1 import orders_pb2
from services.gen.scf.scoring.v1 import scoring_pb2
from services.journal.keyset import canonical_json
from services.orders.facts import facts_subject
from services.runtime.clock import Clock
from services.runtime.errors import InvalidArgument, SCFError
from services.runtime.journal_client import Outbox
from services.scoring.characteristics import (
    RepaymentHistory,
    check_lease,
    check_order,
    inputs_for,
    lease_inputs_for,
)
from services.scoring.scorecard import score
from services.scoring.storage import LEASE_MODEL, ORDER_MODEL, ScoringStore

__all__ = ["ScoreHandler", "score_subject"]

log = logging.getLogger(__name__)


def score_subject(prefix: str) -> str:
    return f"{prefix}.scoring.score"


def history_subject(prefix: str) -> str:
    return f"{prefix}.repayment.history"


class ScoreHandler:
    def __init__(
        self, pool: asyncpg.Pool[Any], nc: NATS, outbox: Outbox, clock: Clock, prefix: str
    ) -> None:
        self.store = ScoringStore(pool)
        self.nc = nc
        self.outbox = outbox
        self.clock = clock
        self.prefix = prefix

    async def subscribe(self) -> None:
        await self.nc.subscribe(score_subject(self.prefix), queue="scoring", cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        try:
            result = await self.decide(scoring_pb2.ScoreRequest.FromString(msg.data))
        except SCFError as exc:
            result = scoring_pb2.ScoreResult(ok=False, code=exc.code.name, reason=exc.message)
        except (nats.errors.Error, TimeoutError) as exc:  # orders or repayment away: no decision
            result = scoring_pb2.ScoreResult(ok=False, code="UNAVAILABLE", reason=repr(exc))
        except Exception as exc:  # a malformed request is answered, never dropped
            log.exception("score request failed")
            result = scoring_pb2.ScoreResult(ok=False, code="INVALID_ARGUMENT", reason=repr(exc))
        await msg.respond(result.SerializeToString())

    async def _history(self, subcontractor: str) -> RepaymentHistory:
        """The repayment record. When repayment does not answer, this raises
        (and the request is answered UNAVAILABLE): a borrower is never scored
        as one without a record because the record was out of reach."""
        reply = await self.nc.request(
            history_subject(self.prefix), subcontractor.encode(), timeout=2
        )
        body = json.loads(reply.data)
        return RepaymentHistory(
            int(body["repaid_on_time"]), int(body["max_days_past_due"]), int(body["defaults"])
        )

    async def _facts(self, query: orders_pb2.OrderFactsQuery) -> orders_pb2.OrderFacts:
        reply = await self.nc.request(
            facts_subject(self.prefix), query.SerializeToString(), timeout=5
        )
        return orders_pb2.OrderFacts.FromString(reply.data)

    async def decide(self, request: scoring_pb2.ScoreRequest) -> scoring_pb2.ScoreResult:
        if not request.application_id:
            raise InvalidArgument("application_id", "required")
        existing = await self.store.decision_for(request.application_id)
        if existing is not None:
            return existing
        if request.HasField("lease"):
            lease = request.lease
            facts = await self._facts(
                orders_pb2.OrderFactsQuery(
                    subcontractor_id=lease.lessee_id, currency=lease.currency
                )
            )
            subcontractor = lease.lessee_id
            check_lease(lease)  # a refusal needs no record: refuse before asking repayment
            history = await self._history(subcontractor)
            inputs, amount = lease_inputs_for(lease, facts, history)
            card = await self.store.active_model(LEASE_MODEL)
        else:
            facts = await self._facts(orders_pb2.OrderFactsQuery(order_id=request.order_id))
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
        return scoring_pb2.ScoreResult(
            ok=True, decision_id=decision_id, decision_json=canonical_json(document).decode()
        )
