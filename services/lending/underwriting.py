"""``scf.underwriting.v1.UnderwritingService``: a bank's queue, four eyes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2, underwriting_pb2_grpc
from services.journal import canonical_json
from services.lending.domain import (
    DECIDABLE,
    STAFF_ROLES,
    Action,
    Application,
    Outcome,
    Terms,
)
from services.lending.flow import FlowEngine
from services.lending.policy import policy_for
from services.lending.store import money_pb
from services.runtime.clock import Clock
from services.runtime.errors import NotFound, PermissionDenied
from services.runtime.idempotency import M, once
from services.runtime.identity import Identity, require_role
from services.runtime.messages import build
from services.runtime.money import parse_money
from services.runtime.paging import page_of
from services.runtime.proto_enums import enum_number, enum_word

__all__ = ["UnderwritingServicer"]


def _item(app: Any, seqs: list[int]) -> underwriting_pb2.QueueItem:
    m = money_pb(app["currency"], app["requested_minor"])
    facts = app["lease"] if app["kind"] == "lease" else app["order_facts"]
    return underwriting_pb2.QueueItem(
        application_id=app["application_id"],
        subcontractor_id=app["subcontractor_id"],
        order_id=app["order_id"],
        requested=money_pb2.Money(amount=m.amount, currency=m.currency),
        state=enum_number(lending_pb2.ApplicationState, app["state"]),
        decision_json=canonical_json(app["decision"]).decode() if app["decision"] else "",
        approvals=list(app["approvals"]),
        journal_seqs=seqs,
        order_json=canonical_json(facts).decode() if facts else "",
    )


class UnderwritingServicer(underwriting_pb2_grpc.UnderwritingServiceServicer):
    def __init__(self, pool: asyncpg.Pool[Any], engine: FlowEngine, clock: Clock) -> None:
        self.pool = pool
        self.engine = engine
        self.t = engine.t
        self.clock = clock

    async def ListApplications(
        self, request: underwriting_pb2.ListApplicationsRequest, context: Any
    ) -> underwriting_pb2.ListApplicationsResponse:
        who = require_role(*STAFF_ROLES)
        states = [
            enum_word(lending_pb2.ApplicationState, state, f"states[{i}]")
            for i, state in enumerate(request.states)
        ] or sorted(DECIDABLE)
        page = page_of(request.page_size, request.page_token, (int, str))
        after = page.after or (-1, "")
        rows, token = page.cut(
            await self.pool.fetch(
                "SELECT * FROM applications WHERE bank = $1 AND state = ANY($2::text[])"
                " AND (created_micros, application_id) > ($3, $4)"
                " ORDER BY created_micros, application_id LIMIT $5",
                who.organization, states, after[0], after[1], page.fetch(),
            ),
            lambda r: (r["created_micros"], r["application_id"]),
        )  # fmt: skip
        return underwriting_pb2.ListApplicationsResponse(
            applications=[_item(r, []) for r in rows], next_page_token=token
        )

    async def GetApplication(
        self, request: underwriting_pb2.GetApplicationRequest, context: Any
    ) -> underwriting_pb2.GetApplicationResponse:
        who = require_role(*STAFF_ROLES)
        async with self.pool.acquire() as conn:
            app = await conn.fetchrow(
                "SELECT * FROM applications WHERE application_id = $1", request.application_id
            )
            if app is None:
                raise NotFound(f"no application {request.application_id!r}")
            if who.organization != app["bank"]:
                raise PermissionDenied(
                    f"application {app['application_id']} is for {app['bank']},"
                    f" not {who.organization}"
                )
            seqs = await self.t.outbox.journal_seqs(conn, f"application/{app['application_id']}")
        return underwriting_pb2.GetApplicationResponse(application=_item(app, seqs))

    async def _decide(
        self,
        request: Any,
        response: type[M],
        action: Action,
        decide: Callable[[Application, Identity], Outcome],
    ) -> M:
        """Staff's decision on an application of their organisation, by the domain's rules."""
        who = require_role(*STAFF_ROLES)

        async def work(conn: Any) -> M:
            app = await self.t.lock(conn, request.application_id)
            domain = Application.from_row(app)
            domain.check(action, who)  # who and when first: a stranger learns nothing more
            app = await self.engine.carry_out(conn, app, decide(domain, who))
            return build(response, state=enum_number(lending_pb2.ApplicationState, app["state"]))

        method = type(request).__name__.removesuffix("Request")
        return await once(
            self.pool, who.party_id, method, request.idempotency_key, request, response, work
        )

    def _terms(self, app: Application, terms: underwriting_pb2.Terms) -> Terms:
        money = parse_money(terms.amount.amount, terms.amount.currency, "terms.amount")
        return app.terms_from(money, terms.rate_bps, terms.tenor_days, self.clock.now().date())

    async def Approve(
        self, request: underwriting_pb2.ApproveRequest, context: Any
    ) -> underwriting_pb2.ApproveResponse:
        def decide(app: Application, who: Identity) -> Outcome:
            terms = self._terms(app, request.terms)
            return app.approve(who, terms, request.reason, policy_for(app.bank))

        return await self._decide(request, underwriting_pb2.ApproveResponse, Action.APPROVE, decide)

    async def Reject(
        self, request: underwriting_pb2.RejectRequest, context: Any
    ) -> underwriting_pb2.RejectResponse:
        def decide(app: Application, who: Identity) -> Outcome:
            return Outcome((app.reject(who, request.reason_code, request.text),))

        return await self._decide(request, underwriting_pb2.RejectResponse, Action.REJECT, decide)

    async def CounterOffer(
        self, request: underwriting_pb2.CounterOfferRequest, context: Any
    ) -> underwriting_pb2.CounterOfferResponse:
        def decide(app: Application, who: Identity) -> Outcome:
            terms = self._terms(app, request.terms)
            return app.counter_offer(who, terms, policy_for(app.bank), self.clock.now_micros())

        return await self._decide(
            request, underwriting_pb2.CounterOfferResponse, Action.COUNTER_OFFER, decide
        )
