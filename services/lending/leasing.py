"""``scf.leasing.v1.LeasingService``: a financial lease from application to its end.

Leases are applications of kind ``lease`` and share everything else with
order financing: the facility, scoring, the staff's queue and four eyes
(underwriting.py), the contract and its signatures (servicer.py), the
journal entry of every transition (store.py), and repayment's schedules.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

from services.contracts.values import lease_option_value
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.leasing.v1 import leasing_pb2, leasing_pb2_grpc
from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.types.v1 import money_pb2
from services.journal import canonical_json
from services.lending.domain import Action, Application, Kind
from services.lending.leases import END_OPTIONS, LeaseRequest, validate_lease
from services.lending.servicer import ApplicationCalls, usable_facility
from services.lending.store import load_contract
from services.runtime.dates import add_months
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.runtime.idempotency import M
from services.runtime.identity import Identity, Role, current_identity, require_role
from services.runtime.messages import build
from services.runtime.money import Money, parse_money
from services.runtime.proto_enums import enum_number

__all__ = ["LeasingServicer", "lease_view"]

_FREQUENCY = {
    "monthly": leasing_pb2.PAYMENT_FREQUENCY_MONTHLY,
    "quarterly": leasing_pb2.PAYMENT_FREQUENCY_QUARTERLY,
    "semiannual": leasing_pb2.PAYMENT_FREQUENCY_SEMIANNUAL,
    "annual": leasing_pb2.PAYMENT_FREQUENCY_ANNUAL,
}
_OPTION: dict[str, leasing_pb2.EndOption.ValueType] = {
    "purchase": leasing_pb2.END_OPTION_PURCHASE,
    "return": leasing_pb2.END_OPTION_RETURN,
    "renew": leasing_pb2.END_OPTION_RENEW,
}


def _money(currency: str, minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount=Money(currency, minor).major(), currency=currency)


async def lease_view(conn: Any, app: Any) -> leasing_pb2.Lease:
    lease = LeaseRequest.from_json(app["lease"])
    c = lease.currency
    financed = app["terms"]["amount_minor"] if app["terms"] else lease.financed_minor
    view = leasing_pb2.Lease(
        lease_id=app["application_id"],
        lessee_id=app["subcontractor_id"],
        lessor=app["bank"],
        asset=leasing_pb2.Asset(
            description=lease.asset_description,
            vendor_id=lease.vendor_id,
            serial_number=lease.serial_number,
            price=_money(c, lease.price_minor),
        ),
        down_payment=_money(c, lease.price_minor - financed),
        financed=_money(c, financed),
        residual=_money(c, lease.residual_minor),
        term_months=lease.term_months,
        frequency=_FREQUENCY[lease.frequency],
        timing=leasing_pb2.PAYMENT_TIMING_IN_ADVANCE
        if lease.in_advance
        else leasing_pb2.PAYMENT_TIMING_IN_ARREARS,
        end_option=_OPTION[lease.end_option],
        state=enum_number(lending_pb2.ApplicationState, app["state"]),
        outcome=enum_number(lending_pb2.ApplicationOutcome, app["outcome"]),
        reason=app["reason"],
        decision_json=canonical_json(app["decision"]).decode() if app["decision"] else "",
        rate_bps=app["terms"]["rate_bps"] if app["terms"] else 0,
        approvals=list(app["approvals"]),
        vendor_payment_reference=app["vendor_payment_reference"],
        commenced_on=app["commenced_on"].isoformat() if app["commenced_on"] else "",
        option_exercised=_OPTION.get(
            "purchase" if app["lease_option"] == "terminate" else app["lease_option"],
            leasing_pb2.END_OPTION_UNSPECIFIED,
        ),
        facility_id=app["facility_id"],
        created_micros=app["created_micros"],
        updated_micros=app["updated_micros"],
    )
    found = await load_contract(conn, app["contract_id"]) if app["contract_id"] else None
    if found is not None:
        contract, signed = found
        view.contract.CopyFrom(
            leasing_pb2.LeaseContract(
                contract_id=contract["contract_id"],
                document=contract["document"],
                sha256=bytes(contract["sha256"]),
                signers=list(contract["signers"]),
                signed_by=[r["signer"] for r in signed],
            )
        )
    return view


def term_end(app: Any) -> dt.date:
    """The last day of the lease's term: commencement plus the months leased."""
    lease = LeaseRequest.from_json(app["lease"])
    return add_months(app["commenced_on"], lease.term_months)


class LeasingServicer(ApplicationCalls, leasing_pb2_grpc.LeasingServiceServicer):
    async def _lease(self, conn: Any, lease_id: str, *, lock: bool) -> Any:
        app = await conn.fetchrow(
            "SELECT * FROM applications WHERE application_id = $1 AND kind = 'lease'"
            + (" FOR UPDATE" if lock else ""),
            lease_id,
        )
        if app is None:
            raise NotFound(f"no lease {lease_id!r}")
        return app

    async def ApplyForLease(
        self, request: leasing_pb2.ApplyForLeaseRequest, context: Any
    ) -> leasing_pb2.ApplyForLeaseResponse:
        who = require_role(Role.SUBCONTRACTOR)
        lease = validate_lease(request, who.party_id)
        financed = Money(lease.currency, lease.financed_minor)

        async def work(conn: Any) -> leasing_pb2.ApplyForLeaseResponse:
            facility = await usable_facility(
                conn, request.lessor, who.party_id, financed, self.clock.now().date()
            )
            common = {
                "kind": "lease", "subcontractor_id": who.party_id, "bank": request.lessor,
                "facility_id": facility["facility_id"], "currency": lease.currency,
                "requested_minor": lease.financed_minor, "lease": lease.as_json(),
            }  # fmt: skip
            row = await self.t.open(
                conn, f"LSE-{uuid.uuid4().hex[:12].upper()}", self.clock.now_micros(),
                {**common, "order_id": ""}, common,
            )  # fmt: skip
            return leasing_pb2.ApplyForLeaseResponse(lease=await lease_view(conn, row))

        return await self._once(
            who, "ApplyForLease", request, leasing_pb2.ApplyForLeaseResponse, work
        )

    async def GetLease(
        self, request: leasing_pb2.GetLeaseRequest, context: Any
    ) -> leasing_pb2.GetLeaseResponse:
        who = current_identity()
        async with self.pool.acquire() as conn:
            app = await self._lease(conn, request.lease_id, lock=False)
            if not Application.from_row(app).can_read(who):
                raise PermissionDenied(
                    f"{who.party_id} is not a party to lease {app['application_id']}"
                )
            return leasing_pb2.GetLeaseResponse(lease=await lease_view(conn, app))

    async def WatchLease(
        self, request: leasing_pb2.WatchLeaseRequest, context: Any
    ) -> AsyncIterator[leasing_pb2.WatchLeaseResponse]:
        async for s in self._watch(request.lease_id, Kind.LEASE, lease_view):
            yield leasing_pb2.WatchLeaseResponse(
                lease=s.view, version=s.version, journal_seq=s.journal_seq
            )

    async def PayVendor(
        self, request: leasing_pb2.PayVendorRequest, context: Any
    ) -> leasing_pb2.PayVendorResponse:
        who = require_role(Role.LEASING)
        if not request.payment_reference.strip():
            raise InvalidArgument("payment_reference", "required: the bank transfer's reference")
        amount = parse_money(request.amount.amount, request.amount.currency, "amount")

        async def work(conn: Any) -> leasing_pb2.PayVendorResponse:
            app = await self._lease(conn, request.lease_id, lock=True)
            move = Application.from_row(app).vendor_paid(
                who, request.payee_id, amount, app["reserved_minor"],
                request.payment_reference.strip(),
            )  # fmt: skip
            app = await self.engine.draw(conn, app, move)
            return leasing_pb2.PayVendorResponse(lease=await lease_view(conn, app))

        return await self._once(who, "PayVendor", request, leasing_pb2.PayVendorResponse, work)

    async def _lessee_step(self, request: Any, response: type[M], step: Any) -> M:
        async def view(conn: Any, app: Any) -> M:
            return build(response, lease=await lease_view(conn, app))

        return await self._applicant_step(
            request.lease_id, (Kind.LEASE,), request, response, step, view
        )

    async def ConfirmDelivery(
        self, request: leasing_pb2.ConfirmDeliveryRequest, context: Any
    ) -> leasing_pb2.ConfirmDeliveryResponse:
        async def step(conn: Any, app: Any, who: Identity) -> Any:
            move = Application.from_row(app).delivered(
                who, request.serial_number, app["lease"]["serial_number"], self.clock.now().date()
            )
            return await self.t.apply(conn, app, move, self.clock.now_micros())

        return await self._lessee_step(request, leasing_pb2.ConfirmDeliveryResponse, step)

    async def ExerciseOption(
        self, request: leasing_pb2.ExerciseOptionRequest, context: Any
    ) -> leasing_pb2.ExerciseOptionResponse:
        if request.option not in END_OPTIONS:
            raise InvalidArgument("option", "purchase, return or renew")
        option = END_OPTIONS[request.option]

        async def step(conn: Any, app: Any, who: Identity) -> Any:
            domain = Application.from_row(app)
            domain.check(Action.EXERCISE_OPTION, who)
            chosen = option
            end = term_end(app)
            if self.clock.now().date() < end:
                if not request.quote_id:
                    raise FailedPrecondition(
                        f"the term ends on {end}; before then the lease ends only early,"
                        " with an early-termination quote (RepaymentService.QuotePayoff)"
                    )
                if option != "purchase":
                    raise FailedPrecondition(
                        "an early termination buys the asset: exercise purchase with the quote"
                    )
                chosen = "terminate"
            if option == "renew" and request.renewal_periods <= 0:
                raise InvalidArgument("renewal_periods", "a renewal needs a number of rentals")
            await self._tell_repayment(app, chosen, request)
            move = domain.option_exercised(who, chosen)
            # A return with every rental paid waits for nothing more: the
            # transition's notification starts the release.
            return await self.t.apply(conn, app, move, self.clock.now_micros())

        return await self._lessee_step(request, leasing_pb2.ExerciseOptionResponse, step)

    async def _tell_repayment(
        self, app: Any, option: str, request: leasing_pb2.ExerciseOptionRequest
    ) -> bool:
        """Repayment changes the schedule first (idempotently): a retry after a crash
        here asks again and gets the same answer."""
        command = bus_pb2.LeaseOptionCommand(
            lease_id=app["application_id"], option=lease_option_value(option),
            quote_id=request.quote_id,
            renewal_periods=request.renewal_periods,
        )  # fmt: skip
        # Repayment's refusal comes back as this call's own (same class and field).
        answer = await self.messenger.request(
            self.subjects.lease_option, command, bus_pb2.LeaseOptionResult,
            server="repayment", timeout=10,
        )  # fmt: skip
        return answer.settled
