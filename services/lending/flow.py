"""The financing process manager: moves each application on, and survives restarts.

It moves on events: every committed transition announces its application on
PostgreSQL's ``steps_<schema>`` channel (store.Transitions), and the manager
takes that application's next step at once; a pass over every application
with a step due is only a safety net (every ``safety_pass_s``, and when the
platform clock moves). Of several lending instances one leads and runs it.

Every step reads the application's state from PostgreSQL, makes its
(idempotent) call to another service, then records the outcome and its
journal entry in one transaction. A crash between the call and the record
repeats the call, which orders and scoring answer as before; nothing is done
twice. Which steps there are, and what each may lead to, is the domain's
(domain.py: ``PLATFORM_STEPS`` and the transition table); this module does
the I/O around them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from services.contracts.subjects import OrderVerb, Subjects
from services.contracts.values import enum_name
from services.gen.scf.bus.v1 import bus_pb2
from services.lending.domain import (
    EXPIRING,
    OPENS_REPAYMENT,
    PLATFORM_STEPS,
    Action,
    Application,
    Facility,
    Kind,
    Move,
    Outcome,
    State,
    Terms,
)
from services.lending.leases import LeaseRequest, lease_contract_document
from services.lending.policy import contract_document, maturity_of, policy_for
from services.lending.store import Transitions
from services.runtime import tracing
from services.runtime.bus import bind
from services.runtime.clock import Clock
from services.runtime.errors import SCFError, Unavailable
from services.runtime.faults import crash_point
from services.runtime.messaging import Messenger
from services.runtime.pg_listen import PgListener
from services.runtime.waiting import run_together, wait_event

__all__ = ["FlowEngine"]


log = logging.getLogger(__name__)


class FlowEngine:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        messenger: Messenger,
        js: JetStreamContext,
        transitions: Transitions,
        clock: Clock,
        subjects: Subjects,
        *,
        safety_pass_s: float = 5.0,
        concurrency: int = 32,
    ) -> None:
        self.pool = pool
        self.messenger = messenger
        self.js = js
        self.t = transitions
        self.clock = clock
        self.subjects = subjects
        #: Set to take a safety pass now (the clock moved: offers may have lapsed).
        self.wake = asyncio.Event()
        self.safety_pass_s = safety_pass_s
        self.listener = PgListener(pool, transitions.channel, self.kick)
        #: Applications of many borrowers move side by side; each step waits
        #: mostly on another service, so this many at once.
        self._limit = asyncio.Semaphore(concurrency)
        self._active: set[str] = set()
        self._again: set[str] = set()
        self._running: set[asyncio.Task[None]] = set()

    async def restore_facilities(self) -> None:
        """Repayment settled a loan: give its facility the amount back, once. Only
        a settlement repayment signed counts."""
        sub = await bind(self.js, self.subjects.lending_settled)
        await self.messenger.consume_events(
            sub, self.subjects.settled, bus_pb2.Settled, producers=("repayment",),
            handle=self._restore, describe=lambda event: f"settlement of {event.loan_id}",
        )  # fmt: skip

    async def _restore(self, event: bus_pb2.Settled) -> None:
        """One settlement: the facility's amount back (once), and a lease ended."""
        async with self.pool.acquire() as conn, conn.transaction():
            app = await self.t.lock(conn, event.loan_id)
            now = self.clock.now_micros()
            if not app["restored"]:
                move = Application.from_row(app).facility_restored()
                await conn.execute(
                    "UPDATE facilities SET drawn_minor = drawn_minor - $2 WHERE facility_id = $1",
                    app["facility_id"],
                    app["terms"]["amount_minor"],
                )
                app = await self.t.apply(conn, app, move, now, restored=True)
            if app["kind"] == "lease" and app["state"] in ("in_force", "ending"):
                # Paid off without a choice, the residual was paid too: a purchase.
                option = (
                    app["lease_option"]
                    or enum_name(bus_pb2.LeaseOption, event.lease_option)
                    or "purchase"
                )
                lease = LeaseRequest.from_json(app["lease"])
                asset = f"{lease.asset_description} (serial {lease.serial_number})"
                for move in Application.from_row(app).lease_ended(option, asset):
                    app = await self.t.apply(conn, app, move, now)

    async def run(self) -> None:
        """Both halves, for one instance (tests); a service runs them apart."""
        await run_together(self.restore_facilities(), self.run_steps())

    def kick(self, application_id: str) -> None:
        """A transition of ``application_id`` committed: take its next step now.
        One step of an application at a time; a kick meanwhile runs it again."""
        if application_id in self._active:
            self._again.add(application_id)
            return
        self._active.add(application_id)
        task = asyncio.create_task(self._drive(application_id), name=f"step-{application_id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _drive(self, application_id: str) -> None:
        try:
            while True:
                self._again.discard(application_id)
                async with self._limit:
                    # One read decides the step and serves it (steps lock what they change).
                    row = await self._get(application_id)
                    if row is not None and self.due(row):
                        with tracing.span(
                            f"lending.step {row['state']}", parent=row["trace_parent"] or None,
                            attributes={"scf.service": "lending",
                                        "scf.application_id": application_id},
                        ):  # fmt: skip
                            await self.step(row)
                if application_id not in self._again:
                    return
        except Exception:  # the safety pass takes it again
            log.exception("step of %s failed", application_id)
        finally:
            self._active.discard(application_id)

    def due(self, row: Any) -> bool:
        """Whether the platform has a step to take for this application now (as
        :meth:`step_all`'s query selects them)."""
        kind, state = Kind(row["kind"]), State(row["state"])
        if (kind, state) in PLATFORM_STEPS:
            return True
        if state in EXPIRING and 0 < row["offer_expires_micros"] < self.clock.now_micros():
            return True
        return OPENS_REPAYMENT.get(kind) == state and not row["announced"]

    async def run_steps(self) -> None:
        """Take every step as its transition commits, and the safety passes: the
        leader's work (two instances would take each step twice). It listens from
        its loop, which outlasts PostgreSQL restarts."""
        try:
            while True:
                self.wake.clear()
                try:
                    await self.listener.ensure()
                    await self.step_all()
                except Exception:  # one bad pass must not stop the service; it is retried
                    log.exception("lending pass failed")
                await wait_event(self.wake, self.safety_pass_s)
        finally:
            await self.listener.close()
            for task in list(self._running):
                task.cancel()

    async def step_all(self) -> None:
        """The safety net: every application with a step due, whatever its
        notification did (lost, or a step that failed), and offers that lapsed."""
        now = self.clock.now_micros()
        kinds, states = zip(*PLATFORM_STEPS, strict=True)
        opened_kinds, opened_states = zip(*OPENS_REPAYMENT.items(), strict=True)
        rows = await self.pool.fetch(
            "SELECT application_id FROM applications"
            " WHERE (kind, state) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
            " OR (state = ANY($3::text[]) AND offer_expires_micros > 0"
            "     AND offer_expires_micros < $4)"
            " OR ((kind, state) IN (SELECT * FROM unnest($5::text[], $6::text[]))"
            "     AND NOT announced)"
            " ORDER BY created_micros LIMIT 1000",
            list(kinds), list(states), list(EXPIRING), now,
            list(opened_kinds), list(opened_states),
        )  # fmt: skip
        for row in rows:
            self.kick(row["application_id"])

    async def step(self, app: Any) -> None:
        """The step due for the application ``app`` (its row as just read)."""
        application_id, state, kind = app["application_id"], app["state"], app["kind"]
        action = PLATFORM_STEPS.get((Kind(kind), State(state)))
        if action is Action.PLEDGE:
            await self._pledge(app)
        elif action is Action.SCORE:
            await self._score(app)
        elif action is Action.DISBURSE:
            await self._disburse(application_id)
        elif action is Action.RELEASE:
            await self._release(app)
        elif state in EXPIRING:
            await self._expire(application_id)
        elif OPENS_REPAYMENT.get(Kind(kind)) == state:
            await self._announce(application_id)

    # -- steps ---------------------------------------------------------------------

    async def _get(self, application_id: str) -> Any:
        return await self.pool.fetchrow(
            "SELECT * FROM applications WHERE application_id = $1", application_id
        )

    async def _order_command(self, verb: OrderVerb, app: Any) -> SCFError | None:
        """Orders' signed answer to a pledge or release: None, or its refusal.
        An answer orders did not sign raises Unavailable (the step is retried)."""
        command = bus_pb2.PledgeCommand(
            order_id=app["order_id"], application_id=app["application_id"], bank=app["bank"]
        )
        try:
            await self.messenger.request(
                self.subjects.order_command(verb), command, bus_pb2.PledgeResult,
                server="orders", timeout=10,
            )  # fmt: skip
        except Unavailable:
            raise
        except SCFError as exc:
            return exc
        return None

    async def _pledge(self, app: Any) -> None:
        application_id = app["application_id"]
        refusal = await self._order_command(OrderVerb.PLEDGE, app)
        crash_point("lending.after_pledge")
        async with self.pool.acquire() as conn, conn.transaction():
            app = await self.t.lock(conn, application_id)
            domain = Application.from_row(app)
            if not domain.may(Action.PLEDGE):
                return
            move = domain.pledged() if refusal is None else domain.refused(refusal.message)
            await self.t.apply(conn, app, move, self.clock.now_micros())

    async def _score(self, app: Any) -> None:
        application_id = app["application_id"]
        facility: Any = await self.pool.fetchrow(
            "SELECT * FROM facilities WHERE facility_id = $1", app["facility_id"]
        )
        ask = bus_pb2.ScoreRequest(
            application_id=application_id,
            order_id=app["order_id"],
            bank=app["bank"],
            facility_available_minor=Facility.from_row(facility).available_minor,
        )
        if app["kind"] == "lease":
            lease = LeaseRequest.from_json(app["lease"])
            ask.lease.CopyFrom(
                bus_pb2.LeaseFacts(
                    lessee_id=app["subcontractor_id"], currency=lease.currency,
                    price_minor=lease.price_minor, down_payment_minor=lease.down_payment_minor,
                    residual_minor=lease.residual_minor, term_months=lease.term_months,
                )
            )  # fmt: skip
        refusal: SCFError | None = None
        try:
            result = await self.messenger.request(
                self.subjects.score, ask, bus_pb2.ScoreResult, server="scoring", timeout=15
            )
        except Unavailable as exc:  # scoring could not ask; no decision: ask again later
            log.warning("scoring of %s unavailable: %s", application_id, exc)
            return
        except SCFError as exc:
            refusal, result = exc, bus_pb2.ScoreResult()
        crash_point("lending.after_score")
        async with self.pool.acquire() as conn, conn.transaction():
            app = await self.t.lock(conn, application_id)
            domain = Application.from_row(app)
            if not domain.may(Action.SCORE):
                return
            now = self.clock.now_micros()
            if refusal is not None:
                await self.t.apply(conn, app, domain.scoring_refused(refusal.message), now)
                return
            outcome = domain.scored(
                json.loads(result.decision_json), result.decision_id, policy_for(app["bank"]),
                self.clock.now().date(),
            )  # fmt: skip
            await self.carry_out(conn, app, outcome)

    async def carry_out(self, conn: Any, app: Any, outcome: Outcome) -> Any:
        """Record an outcome's moves and, if it approves, reserve and draw the contract."""
        now = self.clock.now_micros()
        for move in outcome.moves:
            app = await self.t.apply(conn, app, move, now)
        if outcome.approve is not None:
            app = await self.approve(conn, app, outcome.approve, outcome.by)
        return app

    async def approve(self, conn: Any, app: Any, terms: Terms, by: str) -> Any:
        """Reserve the facility, draw up the contract, and offer it for signature."""
        now = self.clock.now_micros()
        facility = await conn.fetchrow(
            "SELECT * FROM facilities WHERE facility_id = $1 FOR UPDATE", app["facility_id"]
        )
        Facility.from_row(facility).check_available(terms.amount_minor)
        await conn.execute(
            "UPDATE facilities SET reserved_minor = reserved_minor + $2 WHERE facility_id = $1",
            facility["facility_id"],
            terms.amount_minor,
        )
        if app["kind"] == "lease":
            lease = LeaseRequest.from_json(app["lease"])
            document, digest = lease_contract_document(dict(app), lease, terms.as_json())
            # Lessee, lessor, and the vendor, who sells the asset to the lessor.
            signers = [app["subcontractor_id"], app["bank"], lease.vendor_id]
        else:
            facts = app["order_facts"]
            maturity = maturity_of(app["bank"], dt.date.fromisoformat(facts["due_date"]))
            document, digest = contract_document(
                {**dict(app), "buyer_id": facts["buyer_id"]},
                terms.as_json(), facts["due_date"], maturity.isoformat(),
            )  # fmt: skip
            signers = [app["subcontractor_id"], app["bank"], app["order_facts"]["buyer_id"]]
        contract_id = f"CON-{uuid.uuid4().hex[:12].upper()}"
        await conn.execute(
            "INSERT INTO contracts (contract_id, application_id, document, sha256, signers)"
            " VALUES ($1, $2, $3, $4, $5)",
            contract_id,
            app["application_id"],
            document,
            digest,
            signers,
        )
        move = Application.from_row(app).approval_move(
            terms, by, contract_id, now, policy_for(app["bank"])
        )
        return await self.t.apply(conn, app, move, now)

    async def _expire(self, application_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            app = await self.t.lock(conn, application_id)
            now = self.clock.now_micros()
            move = Application.from_row(app).expired(now)
            if move is not None:
                await self.t.apply(conn, app, move, now)

    async def _disburse(self, application_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            app = await self.t.lock(conn, application_id)
            domain = Application.from_row(app)
            if not domain.may(Action.DISBURSE):
                return
            move = domain.disbursed(self.clock.now().date())
            if move.state is not State.DISBURSED:  # lapsed: released, nothing drawn
                await self.t.apply(conn, app, move, self.clock.now_micros())
                return
            await self.draw(conn, app, move)
        crash_point("lending.before_announce")
        await self._announce(application_id)

    async def draw(self, conn: Any, app: Any, move: Move) -> Any:
        """The money has gone out: the facility's reservation becomes a drawing."""
        await conn.execute(
            "UPDATE facilities SET reserved_minor = reserved_minor - $2,"
            " drawn_minor = drawn_minor + $2 WHERE facility_id = $1",
            app["facility_id"],
            app["reserved_minor"],
        )
        return await self.t.apply(conn, app, move, self.clock.now_micros(), reserved_minor=0)

    async def _announce(self, application_id: str) -> None:
        """Tell repayment to open the schedule (JetStream: not lost, deduplicated;
        signed, so repayment books only what lending disbursed)."""
        app = await self._get(application_id)
        announce = lease_commenced_event if app["kind"] == "lease" else loan_disbursed_event
        event = announce(app)
        # The signed contract travels with it: repayment books its terms, and
        # refuses an event whose terms are not the contract's.
        contract: Any = await self.pool.fetchrow(
            "SELECT document, sha256 FROM contracts WHERE contract_id = $1", app["contract_id"]
        )
        event.contract_document = contract["document"]
        event.contract_sha256 = bytes(contract["sha256"])
        await self.messenger.publish_event(
            self.js, self.subjects.disbursed, event, f"disbursed-{application_id}"
        )
        await self.pool.execute(
            "UPDATE applications SET announced = true WHERE application_id = $1", application_id
        )

    async def _release(self, app: Any) -> None:
        application_id = app["application_id"]
        if app["kind"] == "order":
            refusal = await self._order_command(OrderVerb.RELEASE, app)
            if refusal is not None and refusal.reason != "NOT_PLEDGED":
                log.warning("release of %s refused: %s", application_id, refusal.message)
                return
        async with self.pool.acquire() as conn, conn.transaction():
            app = await self.t.lock(conn, application_id)
            domain = Application.from_row(app)
            if not domain.may(Action.RELEASE):
                return
            if app["reserved_minor"]:
                await conn.execute(
                    "UPDATE facilities SET reserved_minor = reserved_minor - $2"
                    " WHERE facility_id = $1",
                    app["facility_id"],
                    app["reserved_minor"],
                )
            await self.t.apply(conn, app, domain.released(), self.clock.now_micros())


def loan_disbursed_event(app: Any) -> bus_pb2.Disbursed:
    return bus_pb2.Disbursed(
        kind=bus_pb2.FINANCING_KIND_LOAN,
        application_id=app["application_id"],
        subcontractor_id=app["subcontractor_id"],
        bank=app["bank"],
        order_id=app["order_id"],
        buyer_id=app["order_facts"]["buyer_id"],
        due_date=app["order_facts"]["due_date"],
        currency=app["currency"],
        principal_minor=app["terms"]["amount_minor"],
        rate_bps=app["terms"]["rate_bps"],
        tenor_days=app["terms"]["tenor_days"],
        disbursed_micros=app["updated_micros"],
        facility_id=app["facility_id"],
    )


def lease_commenced_event(app: Any) -> bus_pb2.Disbursed:
    """What repayment needs to open a lease's rental schedule."""
    lease = LeaseRequest.from_json(app["lease"])
    return bus_pb2.Disbursed(
        kind=bus_pb2.FINANCING_KIND_LEASE,
        application_id=app["application_id"],
        subcontractor_id=app["subcontractor_id"],
        bank=app["bank"],
        vendor_id=lease.vendor_id,
        currency=app["currency"],
        principal_minor=app["terms"]["amount_minor"],
        rate_bps=app["terms"]["rate_bps"],
        periods=lease.periods,
        per_year=lease.per_year,
        in_advance=lease.in_advance,
        residual_minor=lease.residual_minor,
        commenced_on=app["commenced_on"].isoformat(),
        facility_id=app["facility_id"],
    )
