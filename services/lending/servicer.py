"""``scf.lending.v1.LendingService``: facilities, applications, signatures."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.contracts.orders import FINANCEABLE_STATES
from services.contracts.products import product_for
from services.contracts.subjects import Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.orders.v1 import orders_pb2
from services.lending.domain import (
    STAFF_ROLES,
    Action,
    Application,
    Facility,
    Kind,
    State,
    signer_for,
)
from services.lending.flow import FlowEngine
from services.lending.policy import maturity_of, policy_for
from services.lending.store import (
    Transitions,
    application_proto,
    contract_proto,
    facility_proto,
    load_contract,
)
from services.runtime.clock import Clock
from services.runtime.dates import parse_date
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.runtime.idempotency import M, once
from services.runtime.identity import Identity, Role, current_identity, require_role
from services.runtime.keys import key_id_of
from services.runtime.messages import build
from services.runtime.messaging import Messenger
from services.runtime.money import Money, parse_money
from services.runtime.paging import page_of
from services.runtime.watching import JournaledFeed, Snapshot, follow, journal_seq_of

__all__ = ["LendingServicer", "application_view"]

V = TypeVar("V")


async def usable_facility(
    conn: Any, organization: str, party_id: str, amount: Money, today: dt.date
) -> Any:
    """The organisation's facility for the party in the amount's currency, if it
    is in force and has the amount available; FAILED_PRECONDITION otherwise."""
    facility = await conn.fetchrow(
        "SELECT * FROM facilities WHERE bank = $1 AND subcontractor_id = $2 AND currency = $3",
        organization, party_id, amount.currency,
    )  # fmt: skip
    if facility is None:
        raise FailedPrecondition(f"{organization} has no {amount.currency} facility for {party_id}")
    Facility.from_row(facility).check_usable(amount, today)
    return facility


async def application_view(conn: Any, app: Any) -> lending_pb2.Application:
    found = await load_contract(conn, app["contract_id"]) if app["contract_id"] else None
    return application_proto(app, contract_proto(*found) if found else None)


def _may_read(who: Identity, app: Any) -> None:
    if not Application.from_row(app).can_read(who):
        raise PermissionDenied(
            f"{who.party_id} is not a party to application {app['application_id']}"
        )


#: The parties who sign contracts (and so register signing keys).
SIGNING_ROLES = (Role.SUBCONTRACTOR, Role.BUYER, Role.UNDERWRITER, Role.LEASING, Role.VENDOR)


class ApplicationCalls:
    """What the lending and leasing servicers share: idempotent calls, the steps
    an applicant (borrower or lessee) takes on its own, and watching one."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        messenger: Messenger,
        engine: FlowEngine,
        clock: Clock,
        subjects: Subjects,
        feed: JournaledFeed,
    ) -> None:
        self.pool = pool
        self.messenger = messenger
        self.engine = engine
        self.t: Transitions = engine.t
        self.clock = clock
        self.subjects = subjects
        self.feed = feed

    async def _watch(
        self, application_id: str, kind: Kind, view: Callable[[Any, Any], Awaitable[V]]
    ) -> AsyncIterator[Snapshot[V]]:
        """An application of ``kind`` as each of its versions is journaled, for
        whoever may read it, until it is closed."""
        who = current_identity()
        subject = f"application/{application_id}"

        async def read() -> Snapshot[V]:
            async with self.pool.acquire() as conn:
                app = await conn.fetchrow(
                    "SELECT * FROM applications WHERE application_id = $1 AND kind = $2",
                    application_id, kind.value,
                )  # fmt: skip
                if app is None:
                    raise NotFound(f"no {kind.value} {application_id!r}")
                _may_read(who, app)
                return Snapshot(
                    await view(conn, app), app["version"],
                    await journal_seq_of(conn, subject, app["version"]),
                    final=app["state"] == State.CLOSED,
                )  # fmt: skip

        async for snapshot in follow(self.feed, subject, read):
            yield snapshot

    async def _once(
        self, who: Identity, method: str, request: Any, response: type[M], work: Any
    ) -> M:
        # Each transition it commits starts the platform's next step (Transitions).
        return await once(
            self.pool, who.party_id, method, request.idempotency_key, request, response, work
        )

    async def _applicant_step(
        self,
        application_id: str,
        kinds: tuple[Kind, ...],
        request: Any,
        response: type[M],
        step: Callable[[Any, Any, Identity], Awaitable[Any]],
        view: Callable[[Any, Any], Awaitable[M]],
    ) -> M:
        """Lock an application of one of ``kinds``, take ``step`` (whose domain method
        checks that the caller is its applicant), answer ``view``."""
        who = require_role(Role.SUBCONTRACTOR)

        async def work(conn: Any) -> M:
            app = await self.t.lock(conn, application_id)
            if app["kind"] not in kinds:
                raise NotFound(f"no {kinds[0].value} {application_id!r}")
            return await view(conn, await step(conn, app, who))

        method = type(request).__name__.removesuffix("Request")
        return await self._once(who, method, request, response, work)


class LendingServicer(ApplicationCalls, lending_pb2_grpc.LendingServiceServicer):
    # -- facilities ------------------------------------------------------------------

    async def CreateFacility(
        self, request: lending_pb2.CreateFacilityRequest, context: Any
    ) -> lending_pb2.CreateFacilityResponse:
        who = require_role(*STAFF_ROLES)
        if not request.subcontractor_id:
            raise InvalidArgument("subcontractor_id", "required")
        limit = parse_money(request.limit.amount, request.limit.currency, "limit")
        expires = parse_date(request.expires_on, "expires_on")
        if expires <= self.clock.now().date():
            raise InvalidArgument("expires_on", "must be in the future")
        if not 0 <= request.spread_bps <= 5000:
            raise InvalidArgument("spread_bps", "0 to 5000 basis points")

        async def work(conn: Any) -> lending_pb2.CreateFacilityResponse:
            exists = await conn.fetchval(
                "SELECT facility_id FROM facilities WHERE bank = $1 AND subcontractor_id = $2"
                " AND currency = $3",
                who.organization, request.subcontractor_id, limit.currency,
            )  # fmt: skip
            if exists:
                raise AlreadyExists(
                    f"{who.organization} has facility {exists} for this subcontractor"
                )
            facility_id = f"FAC-{uuid.uuid4().hex[:10].upper()}"
            row = await conn.fetchrow(
                "INSERT INTO facilities (facility_id, bank, subcontractor_id, currency,"
                " limit_minor, expires_on, spread_bps, created_micros)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " RETURNING *",
                facility_id, who.organization, request.subcontractor_id, limit.currency,
                limit.minor, expires, request.spread_bps, self.clock.now_micros(),
            )  # fmt: skip
            await self.t.outbox.add(
                conn,
                subject=f"facility/{facility_id}",
                event_type="facility.created",
                payload={
                    "facility_id": facility_id, "bank": who.organization,
                    "subcontractor_id": request.subcontractor_id, "currency": limit.currency,
                    "limit_minor": limit.minor, "expires_on": expires.isoformat(),
                    "spread_bps": request.spread_bps, "by": who.party_id,
                },
                idempotency_key=f"facility/{facility_id}/created",
            )  # fmt: skip
            return lending_pb2.CreateFacilityResponse(facility=facility_proto(row))

        return await self._once(
            who, "CreateFacility", request, lending_pb2.CreateFacilityResponse, work
        )

    async def ListFacilities(
        self, request: Any, context: Any
    ) -> lending_pb2.ListFacilitiesResponse:
        who = current_identity()
        page = page_of(request.page_size, request.page_token, (str,))
        # Whose facilities the caller sees: a column of ours, never the request's.
        if who.role in STAFF_ROLES:
            whose = ("bank = $3", who.organization)
        elif who.role is Role.SUBCONTRACTOR:
            whose = ("subcontractor_id = $3", who.party_id)
        elif who.role in (Role.AUDITOR, Role.OPERATOR):
            whose = ("$3::text IS NOT NULL", "")  # every facility
        else:
            raise PermissionDenied(f"{who.role.value}s have no facilities")
        rows = await self.pool.fetch(
            f"SELECT * FROM facilities WHERE {whose[0]} AND facility_id > $1"
            " ORDER BY facility_id LIMIT $2",
            page.after[0] if page.after else "",
            page.fetch(),
            whose[1],
        )
        kept, token = page.cut(rows, lambda r: (r["facility_id"],))
        return lending_pb2.ListFacilitiesResponse(
            facilities=[facility_proto(r) for r in kept], next_page_token=token
        )

    # -- applications ------------------------------------------------------------------

    async def RequestFinancing(
        self, request: lending_pb2.RequestFinancingRequest, context: Any
    ) -> lending_pb2.RequestFinancingResponse:
        who = require_role(Role.SUBCONTRACTOR)
        if not request.order_id:
            raise InvalidArgument("order_id", "required")
        if not request.bank:
            raise InvalidArgument("bank", "required")
        amount = parse_money(request.amount.amount, request.amount.currency, "amount")

        async def work(conn: Any) -> lending_pb2.RequestFinancingResponse:
            # Inside the idempotent unit: a retry of a request that went through
            # replays its answer, rather than finding its own pledge in the way.
            facts_json = await self._financeable(who, request, amount)
            facility = await usable_facility(
                conn, request.bank, who.party_id, amount, self.clock.now().date()
            )
            common = {
                "subcontractor_id": who.party_id, "bank": request.bank,
                "order_id": request.order_id, "facility_id": facility["facility_id"],
                "currency": amount.currency, "requested_minor": amount.minor,
            }  # fmt: skip
            row = await self.t.open(
                conn, f"APP-{uuid.uuid4().hex[:12].upper()}", self.clock.now_micros(),
                {**common, "order_facts": facts_json}, common,
            )  # fmt: skip
            return lending_pb2.RequestFinancingResponse(application=application_proto(row))

        return await self._once(
            who, "RequestFinancing", request, lending_pb2.RequestFinancingResponse, work
        )

    async def _financeable(
        self, who: Identity, request: lending_pb2.RequestFinancingRequest, amount: Money
    ) -> dict[str, Any]:
        """The order's facts when it may back this financing; the refusal otherwise."""
        facts = await self.messenger.request(
            self.subjects.order_facts, bus_pb2.OrderFactsQuery(order_id=request.order_id),
            bus_pb2.OrderFacts, server="orders", timeout=5,
        )  # fmt: skip
        if not facts.found:
            raise NotFound(f"no order {request.order_id!r}")
        order = facts.order
        if order.subcontractor_id != who.party_id:
            raise PermissionDenied(f"order {order.order_id} is not {who.party_id}'s")
        if order.state not in FINANCEABLE_STATES:
            state = orders_pb2.OrderState.Name(order.state).removeprefix("ORDER_STATE_").lower()
            raise FailedPrecondition(
                f"order {order.order_id} is {state}; only a confirmed order is financed"
            )
        if order.HasField("pledge"):
            raise FailedPrecondition(
                f"order {order.order_id} already backs application {order.pledge.application_id}"
                f" at {order.pledge.bank}"
            )
        order_amount = parse_money(order.amount.amount, order.amount.currency, "order.amount")
        if amount.currency != order_amount.currency:
            raise InvalidArgument("amount.currency", f"the order is in {order_amount.currency}")
        if amount.minor > order_amount.minor:
            raise InvalidArgument("amount.amount", f"more than the order's {order.amount.amount}")
        due = dt.date.fromisoformat(order.due_date)
        today = self.clock.now().date()
        least = product_for(request.bank).min_tenor_days
        if (due - today).days < least:
            raise FailedPrecondition(
                f"order {order.order_id} is due on {due}, in {(due - today).days} days;"
                f" {request.bank} finances orders due in {least} days or more",
                reason="DUE_TOO_SOON", subject=f"order/{order.order_id}",
            )  # fmt: skip
        return {
            "buyer_id": order.buyer_id,
            "due_date": order.due_date,
            "order_amount_minor": order_amount.minor,
            # The days of interest: to the maturity, the due date rolled to a business day.
            "tenor_days": max(1, (maturity_of(request.bank, due) - today).days),
        }

    async def GetApplication(
        self, request: lending_pb2.GetApplicationRequest, context: Any
    ) -> lending_pb2.GetApplicationResponse:
        who = current_identity()
        async with self.pool.acquire() as conn:
            app = await conn.fetchrow(
                "SELECT * FROM applications WHERE application_id = $1", request.application_id
            )
            if app is None:
                raise NotFound(f"no application {request.application_id!r}")
            _may_read(who, app)
            return lending_pb2.GetApplicationResponse(application=await application_view(conn, app))

    async def WatchApplication(
        self, request: lending_pb2.WatchApplicationRequest, context: Any
    ) -> AsyncIterator[lending_pb2.WatchApplicationResponse]:
        async for s in self._watch(request.application_id, Kind.ORDER, application_view):
            yield lending_pb2.WatchApplicationResponse(
                application=s.view, version=s.version, journal_seq=s.journal_seq
            )

    async def _borrower_step(
        self, request: Any, response: type[M], step: Any, kinds: tuple[Kind, ...] = (Kind.ORDER,)
    ) -> M:
        async def view(conn: Any, app: Any) -> M:
            return build(response, application=await application_view(conn, app))

        # A withdrawal is the lessee's as well; the offers are order financing's.
        kinds = (
            (Kind.ORDER, Kind.LEASE)
            if response is lending_pb2.WithdrawApplicationResponse
            else (Kind.ORDER,)
        )
        return await self._applicant_step(
            request.application_id, kinds, request, response, step, view
        )

    async def AcceptOffer(
        self, request: lending_pb2.AcceptOfferRequest, context: Any
    ) -> lending_pb2.AcceptOfferResponse:
        async def step(conn: Any, app: Any, who: Identity) -> Any:
            outcome = Application.from_row(app).accept_offer(who, policy_for(app["bank"]))
            return await self.engine.carry_out(conn, app, outcome)

        return await self._borrower_step(request, lending_pb2.AcceptOfferResponse, step)

    async def DeclineOffer(
        self, request: lending_pb2.DeclineOfferRequest, context: Any
    ) -> lending_pb2.DeclineOfferResponse:
        async def step(conn: Any, app: Any, who: Identity) -> Any:
            move = Application.from_row(app).decline_offer(who)
            return await self.t.apply(conn, app, move, self.clock.now_micros())

        return await self._borrower_step(request, lending_pb2.DeclineOfferResponse, step)

    async def WithdrawApplication(
        self, request: lending_pb2.WithdrawApplicationRequest, context: Any
    ) -> lending_pb2.WithdrawApplicationResponse:
        async def step(conn: Any, app: Any, who: Identity) -> Any:
            move = Application.from_row(app).withdraw(who)
            return await self.t.apply(conn, app, move, self.clock.now_micros())

        # A lessee may withdraw too; the offers are order financing's only.
        return await self._borrower_step(
            request, lending_pb2.WithdrawApplicationResponse, step, (Kind.ORDER, Kind.LEASE)
        )

    # -- signatures ------------------------------------------------------------------------

    async def RegisterSigningKey(
        self, request: lending_pb2.RegisterSigningKeyRequest, context: Any
    ) -> lending_pb2.RegisterSigningKeyResponse:
        # Those who sign contracts register keys; an auditor or the operator writes nothing.
        who = require_role(*SIGNING_ROLES)
        if len(request.public_key) != 32:
            raise InvalidArgument("public_key", "an Ed25519 public key is 32 bytes")
        key_id = key_id_of(request.public_key)

        async def work(conn: Any) -> lending_pb2.RegisterSigningKeyResponse:
            in_force = await conn.fetchval(
                "SELECT public_key FROM signing_keys WHERE party_id = $1 FOR UPDATE", who.party_id
            )
            if in_force is not None and bytes(in_force) == request.public_key:
                # The key in force already: nothing changes, nothing to journal.
                return lending_pb2.RegisterSigningKeyResponse(key_id=key_id)
            version = await conn.fetchval(
                "INSERT INTO signing_keys (party_id, public_key, key_id) VALUES ($1, $2, $3)"
                " ON CONFLICT (party_id) DO UPDATE SET public_key = $2, key_id = $3,"
                " version = signing_keys.version + 1 RETURNING version",
                who.party_id, request.public_key, key_id,
            )  # fmt: skip
            await self.t.outbox.add(
                conn,
                subject=f"party/{who.party_id}",
                event_type="party.signing_key_registered",
                payload={
                    "party_id": who.party_id, "public_key": request.public_key.hex(),
                    "version": version,
                },
                idempotency_key=f"party/{who.party_id}/key/v{version}",
            )  # fmt: skip
            return lending_pb2.RegisterSigningKeyResponse(key_id=key_id)

        return await self._once(
            who, "RegisterSigningKey", request, lending_pb2.RegisterSigningKeyResponse, work
        )

    async def SignContract(
        self, request: lending_pb2.SignContractRequest, context: Any
    ) -> lending_pb2.SignContractResponse:
        who = current_identity()
        if len(request.signature) != 64:
            raise InvalidArgument("signature", "an Ed25519 signature is 64 bytes")

        async def work(conn: Any) -> lending_pb2.SignContractResponse:
            contract = await conn.fetchrow(
                "SELECT * FROM contracts WHERE contract_id = $1", request.contract_id
            )
            if contract is None:
                raise NotFound(f"no contract {request.contract_id!r}")
            app = await self.t.lock(conn, contract["application_id"])
            # Who may sign first: a stranger learns nothing of the contract's state.
            signers = tuple(contract["signers"])
            signer, place = signer_for(who, contract["contract_id"], signers)
            domain = Application.from_row(app)
            if not domain.may(Action.SIGN) or app["contract_id"] != contract["contract_id"]:
                raise FailedPrecondition(
                    f"application is {app['state']}; the contract is not open for signing"
                )
            key = await conn.fetchrow(
                "SELECT * FROM signing_keys WHERE party_id = $1", who.party_id
            )
            if key is None:
                raise FailedPrecondition(f"{who.party_id} has no signing key registered")
            try:
                Ed25519PublicKey.from_public_bytes(bytes(key["public_key"])).verify(
                    request.signature, bytes(contract["sha256"])
                )
            except InvalidSignature:
                raise InvalidArgument(
                    "signature", "does not verify under the caller's registered key"
                ) from None
            done = await conn.fetchval(
                "SELECT 1 FROM signatures WHERE contract_id = $1 AND signer = $2",
                contract["contract_id"],
                signer,
            )
            if done:
                raise AlreadyExists(
                    f"{signer} has signed contract {contract['contract_id']} already"
                )
            await conn.execute(
                "INSERT INTO signatures (contract_id, signer, party_id, key_id, signature)"
                " VALUES ($1, $2, $3, $4, $5)",
                contract["contract_id"], signer, who.party_id, bytes(key["key_id"]),
                request.signature,
            )  # fmt: skip
            count = await conn.fetchval(
                "SELECT count(*) FROM signatures WHERE contract_id = $1", contract["contract_id"]
            )
            now = self.clock.now_micros()
            for move in domain.signed(who, place, count == len(signers)):
                app = await self.t.apply(conn, app, move, now)
            return lending_pb2.SignContractResponse(application=await application_view(conn, app))

        return await self._once(
            who, "SignContract", request, lending_pb2.SignContractResponse, work
        )

    async def GetContract(
        self, request: lending_pb2.GetContractRequest, context: Any
    ) -> lending_pb2.GetContractResponse:
        who = current_identity()
        if bool(request.contract_id) == bool(request.application_id):
            raise InvalidArgument("contract_id", "name the contract_id or the application_id")
        async with self.pool.acquire() as conn:
            contract_id = request.contract_id or await conn.fetchval(
                "SELECT contract_id FROM applications WHERE application_id = $1",
                request.application_id,
            )
            found = await load_contract(conn, contract_id) if contract_id else None
            if found is None:
                raise NotFound(
                    f"no contract {request.contract_id!r}"
                    if request.contract_id
                    else f"application {request.application_id!r} has no contract"
                )
            row, signatures = found
            try:  # a signer reads what it signs
                signer_for(who, row["contract_id"], tuple(row["signers"]))
            except PermissionDenied:
                app = await conn.fetchrow(
                    "SELECT * FROM applications WHERE application_id = $1", row["application_id"]
                )
                _may_read(who, app)
            return lending_pb2.GetContractResponse(
                contract=contract_proto(row, signatures), application_id=row["application_id"]
            )
