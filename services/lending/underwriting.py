"""``scf.underwriting.v1.UnderwritingService``: a bank's queue, four eyes."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2, underwriting_pb2_grpc
from services.journal import canonical_json
from services.lending.flow import DAY_MICROS, FlowEngine
from services.lending.leases import LeaseRequest
from services.lending.policy import policy_for
from services.lending.store import money_pb
from services.runtime.clock import Clock
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.runtime.idempotency import M, once
from services.runtime.identity import Identity, Role, require_role
from services.runtime.money import parse_money

__all__ = ["UnderwritingServicer"]

DECIDABLE = ("referred", "pending_second_approval")


def _item(app: Any, seqs: list[int]) -> underwriting_pb2.QueueItem:
    m = money_pb(app["currency"], app["requested_minor"])
    facts = app["lease"] if app["kind"] == "lease" else app["order_facts"]
    return underwriting_pb2.QueueItem(
        application_id=app["application_id"],
        subcontractor_id=app["subcontractor_id"],
        order_id=app["order_id"],
        requested=money_pb2.Money(amount=m.amount, currency=m.currency),
        state=app["state"],
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

    async def _seqs(self, application_id: str) -> list[int]:
        rows = await self.pool.fetch(
            "SELECT journal_seq FROM outbox WHERE idempotency_key LIKE $1"
            " AND journal_seq IS NOT NULL ORDER BY journal_seq",
            f"application/{application_id}/%",
        )
        return [r["journal_seq"] for r in rows]

    async def ListApplications(
        self, request: underwriting_pb2.ListApplicationsRequest, context: Any
    ) -> underwriting_pb2.ListApplicationsResponse:
        who = require_role(Role.UNDERWRITER, Role.LEASING)
        states = list(request.states) or list(DECIDABLE)
        rows = await self.pool.fetch(
            "SELECT * FROM applications WHERE bank = $1 AND state = ANY($2::text[])"
            " ORDER BY created_micros",
            who.organization,
            states,
        )
        return underwriting_pb2.ListApplicationsResponse(applications=[_item(r, []) for r in rows])

    async def GetApplication(
        self, request: underwriting_pb2.GetApplicationRequest, context: Any
    ) -> underwriting_pb2.GetApplicationResponse:
        who = require_role(Role.UNDERWRITER, Role.LEASING)
        app = await self.pool.fetchrow(
            "SELECT * FROM applications WHERE application_id = $1", request.application_id
        )
        if app is None:
            raise NotFound(f"no application {request.application_id!r}")
        _own_bank(who, app)
        seqs = await self._seqs(app["application_id"])
        return underwriting_pb2.GetApplicationResponse(application=_item(app, seqs))

    async def _decide(self, request: Any, response: type[M], method: str, step: Any) -> M:
        who = require_role(Role.UNDERWRITER, Role.LEASING)

        async def work(conn: Any) -> M:
            app = await self.t.lock(conn, request.application_id)
            _own_bank(who, app)
            if app["state"] not in DECIDABLE:
                raise FailedPrecondition(
                    f"application is {app['state']}; it is not waiting for a decision"
                )
            app = await step(conn, app, who)
            return response(state=app["state"])

        result = await once(
            self.pool, who.party_id, method, request.idempotency_key, request, response, work
        )
        self.engine.wake.set()
        return result

    def _terms(self, app: Any, terms: underwriting_pb2.Terms) -> dict[str, Any]:
        money = parse_money(terms.amount.amount, terms.amount.currency, "terms.amount")
        if money.currency != app["currency"]:
            raise InvalidArgument(
                "terms.amount.currency", f"the application is in {app['currency']}"
            )
        if money.minor > app["requested_minor"]:
            raise InvalidArgument("terms.amount.amount", "more than the subcontractor asked for")
        if not 0 < terms.rate_bps <= 5000:
            raise InvalidArgument("terms.rate_bps", "1 to 5000 basis points")
        tenor = terms.tenor_days
        if app["kind"] == "lease":  # the term is the lessee's, in the contract already
            term_days = LeaseRequest.from_json(app["lease"]).term_days
            if tenor not in (0, term_days):
                raise InvalidArgument(
                    "terms.tenor_days", f"the lease runs {term_days} days; give 0 or that"
                )
            tenor = term_days
        elif not 0 < tenor <= 730:
            raise InvalidArgument("terms.tenor_days", "1 to 730 days")
        return {"amount_minor": money.minor, "rate_bps": terms.rate_bps, "tenor_days": tenor}

    async def Approve(
        self, request: underwriting_pb2.ApproveRequest, context: Any
    ) -> underwriting_pb2.ApproveResponse:
        async def step(conn: Any, app: Any, who: Identity) -> Any:
            terms = self._terms(app, request.terms)
            recommended = int((app["decision"] or {}).get("max_amount_minor", 0))
            if terms["amount_minor"] > recommended and not request.reason.strip():
                raise InvalidArgument(
                    "reason", "an amount above the scoring recommendation needs a reason"
                )
            now = self.clock.now_micros()
            approvals = list(app["approvals"])
            if app["state"] == "pending_second_approval":
                if who.party_id in approvals:
                    raise PermissionDenied(
                        "the second approval must come from a different underwriter"
                    )
                if app["terms"] and dict(app["terms"]) != terms:
                    raise FailedPrecondition("the second approval must be of the same terms")
            approvals.append(who.party_id)
            needs_two = terms["amount_minor"] > policy_for(app["bank"]).four_eyes_minor
            if needs_two and len(approvals) < 2:
                return await self.t.move(
                    conn, app, "pending_second_approval", "first_approval", now, who.party_id,
                    approvals=approvals, terms=terms, reason=request.reason.strip(),
                )  # fmt: skip
            app = await self.t.move(
                conn, app, app["state"], "approval", now, who.party_id, approvals=approvals
            )
            return await self.engine.approve(conn, app, terms, who.party_id)

        return await self._decide(request, underwriting_pb2.ApproveResponse, "Approve", step)

    async def Reject(
        self, request: underwriting_pb2.RejectRequest, context: Any
    ) -> underwriting_pb2.RejectResponse:
        async def step(conn: Any, app: Any, who: Identity) -> Any:
            if not request.reason_code:
                raise InvalidArgument("reason_code", "required, such as R01")
            reason = f"{request.reason_code}: {request.text.strip()}".strip(": ")
            return await self.t.move(
                conn, app, "releasing", "rejected", self.clock.now_micros(), who.party_id,
                outcome="rejected", reason=reason,
            )  # fmt: skip

        return await self._decide(request, underwriting_pb2.RejectResponse, "Reject", step)

    async def CounterOffer(
        self, request: underwriting_pb2.CounterOfferRequest, context: Any
    ) -> underwriting_pb2.CounterOfferResponse:
        async def step(conn: Any, app: Any, who: Identity) -> Any:
            terms = self._terms(app, request.terms)
            now = self.clock.now_micros()
            return await self.t.move(
                conn, app, "offered", "counter_offered", now, who.party_id, terms=terms,
                offer_expires_micros=now + policy_for(app["bank"]).offer_days * DAY_MICROS,
            )  # fmt: skip

        return await self._decide(
            request, underwriting_pb2.CounterOfferResponse, "CounterOffer", step
        )


def _own_bank(who: Identity, app: Any) -> None:
    if who.organization != app["bank"]:
        raise PermissionDenied(
            f"application {app['application_id']} is for {app['bank']}, not {who.organization}"
        )
