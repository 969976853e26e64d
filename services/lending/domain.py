"""Lending: applications and facilities, their states and every rule. Pure: no I/O.

An application finances an order (kind ``order``) or leases an asset (kind
``lease``). Each action below may start only from the states listed, only
for the kinds listed, and only by its actor; the method that takes it checks
the rest (four eyes, amounts, expiry) and answers the moves to record, each
a new state and its journal event. Servicers and the process manager call
these methods; nothing else decides.

    requested -pledge-> pledged -score-> approved | referred | releasing   (order)
    requested -score-> approved | referred | releasing                     (lease)
    referred -staff-> approved | pending_second_approval | offered | releasing
    pending_second_approval -another staff member, same terms-> approved | offered
    offered -applicant accepts-> approved; declines -> releasing
    approved -every signature-> effective -disburse-> disbursed            (order)
    effective -pay vendor-> vendor_paid -confirm delivery-> in_force       (lease)
    in_force -exercise option-> ending -settled-> closed                   (lease)
    an offer past its expiry, a withdrawal, a rejection -> releasing -> closed

Four eyes: whoever fixes or changes the terms, the terms take effect only
when as many different staff members as the bank's policy asks for
(``BankPolicy.approvals_needed``) have approved exactly those terms. This
holds for an approval, a counter-offer (and so for the offer the applicant
accepts) and for leases alike. Only the bank's automatic policy approves
without staff, within the limits its credit committee set (``policy.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.lending.policy import BankPolicy, auto_decision, maturity_of
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.runtime.identity import Identity, Role
from services.runtime.money import Money

__all__ = [
    "DECIDABLE",
    "EXPIRING",
    "OPENS_REPAYMENT",
    "PLATFORM_STEPS",
    "STAFF_ROLES",
    "Action",
    "Actor",
    "Application",
    "Facility",
    "Kind",
    "Move",
    "Outcome",
    "State",
    "Terms",
    "signer_for",
]

DAY_MICROS = 86_400_000_000
MAX_RATE_BPS = 5000
MAX_TENOR_DAYS = 730


class State(enum.StrEnum):
    REQUESTED = "requested"
    PLEDGED = "pledged"
    REFERRED = "referred"
    PENDING_SECOND_APPROVAL = "pending_second_approval"
    OFFERED = "offered"
    APPROVED = "approved"
    EFFECTIVE = "effective"
    DISBURSED = "disbursed"
    VENDOR_PAID = "vendor_paid"
    IN_FORCE = "in_force"
    ENDING = "ending"
    RELEASING = "releasing"
    CLOSED = "closed"


class Kind(enum.StrEnum):
    ORDER = "order"
    LEASE = "lease"


class Actor(enum.StrEnum):
    #: The subcontractor who applied (borrower or lessee).
    APPLICANT = "applicant"
    #: An underwriter of the bank, or a member of the leasing company's staff.
    STAFF = "staff"
    #: The leasing company's staff only (they pay the vendor).
    LESSOR = "lessor"
    #: One of the contract's signers.
    SIGNER = "signer"
    #: The platform: lending's process manager, on what orders, scoring,
    #: repayment or the clock said.
    PLATFORM = "platform"


class Action(enum.StrEnum):
    PLEDGE = "pledge"
    REFUSE = "refuse"
    SCORE = "score"
    APPROVE = "approve"
    REJECT = "reject"
    COUNTER_OFFER = "counter_offer"
    ACCEPT_OFFER = "accept_offer"
    DECLINE_OFFER = "decline_offer"
    WITHDRAW = "withdraw"
    SIGN = "sign"
    DISBURSE = "disburse"
    PAY_VENDOR = "pay_vendor"
    CONFIRM_DELIVERY = "confirm_delivery"
    EXERCISE_OPTION = "exercise_option"
    SETTLE = "settle"
    EXPIRE = "expire"
    RELEASE = "release"


S = State
ORDER_ONLY = frozenset({Kind.ORDER})
LEASE_ONLY = frozenset({Kind.LEASE})
BOTH = frozenset(Kind)
DECIDABLE = frozenset({S.REFERRED, S.PENDING_SECOND_APPROVAL})
#: Offers that lapse at ``offer_expires_micros`` unless signed (or accepted) first.
EXPIRING = frozenset({S.APPROVED, S.OFFERED, S.PENDING_SECOND_APPROVAL})
WITHDRAWABLE = frozenset(
    {S.REQUESTED, S.PLEDGED, S.REFERRED, S.PENDING_SECOND_APPROVAL, S.OFFERED, S.APPROVED}
)


@dataclass(frozen=True)
class Rule:
    #: The states the action may start from, by kind of application.
    starts: Mapping[Kind, frozenset[State]]
    actor: Actor


def _for(
    kinds: frozenset[Kind], states: frozenset[State] | set[State]
) -> dict[Kind, frozenset[State]]:
    return {kind: frozenset(states) for kind in kinds}


#: The transition table: which action starts where, for which kind, by whom.
RULES: dict[Action, Rule] = {
    Action.PLEDGE: Rule(_for(ORDER_ONLY, {S.REQUESTED}), Actor.PLATFORM),
    Action.REFUSE: Rule(_for(ORDER_ONLY, {S.REQUESTED}), Actor.PLATFORM),
    Action.SCORE: Rule(
        {Kind.ORDER: frozenset({S.PLEDGED}), Kind.LEASE: frozenset({S.REQUESTED})},
        Actor.PLATFORM,
    ),
    Action.APPROVE: Rule(_for(BOTH, DECIDABLE), Actor.STAFF),
    Action.REJECT: Rule(_for(BOTH, DECIDABLE), Actor.STAFF),
    # A lease is approved or rejected as applied for: nobody could accept an offer.
    Action.COUNTER_OFFER: Rule(_for(ORDER_ONLY, DECIDABLE), Actor.STAFF),
    Action.ACCEPT_OFFER: Rule(_for(ORDER_ONLY, {S.OFFERED}), Actor.APPLICANT),
    Action.DECLINE_OFFER: Rule(_for(ORDER_ONLY, {S.OFFERED}), Actor.APPLICANT),
    Action.WITHDRAW: Rule(_for(BOTH, WITHDRAWABLE), Actor.APPLICANT),
    Action.SIGN: Rule(_for(BOTH, {S.APPROVED}), Actor.SIGNER),
    Action.DISBURSE: Rule(_for(ORDER_ONLY, {S.EFFECTIVE}), Actor.PLATFORM),
    Action.PAY_VENDOR: Rule(_for(LEASE_ONLY, {S.EFFECTIVE}), Actor.LESSOR),
    Action.CONFIRM_DELIVERY: Rule(_for(LEASE_ONLY, {S.VENDOR_PAID}), Actor.APPLICANT),
    Action.EXERCISE_OPTION: Rule(_for(LEASE_ONLY, {S.IN_FORCE}), Actor.APPLICANT),
    Action.SETTLE: Rule(
        {Kind.ORDER: frozenset({S.DISBURSED}), Kind.LEASE: frozenset({S.IN_FORCE, S.ENDING})},
        Actor.PLATFORM,
    ),
    Action.EXPIRE: Rule(_for(BOTH, EXPIRING), Actor.PLATFORM),
    Action.RELEASE: Rule(_for(BOTH, {S.RELEASING}), Actor.PLATFORM),
}

#: What the process manager does, unprompted, in each (kind, state): the
#: steps that wait on nobody but the platform. Its query is built from this.
PLATFORM_STEPS: dict[tuple[Kind, State], Action] = {
    (Kind.ORDER, S.REQUESTED): Action.PLEDGE,
    (Kind.ORDER, S.PLEDGED): Action.SCORE,
    (Kind.LEASE, S.REQUESTED): Action.SCORE,
    (Kind.ORDER, S.EFFECTIVE): Action.DISBURSE,
    (Kind.ORDER, S.RELEASING): Action.RELEASE,
    (Kind.LEASE, S.RELEASING): Action.RELEASE,
}
#: Where repayment takes over: lending announces the financing once, here.
OPENS_REPAYMENT: dict[Kind, State] = {Kind.ORDER: S.DISBURSED, Kind.LEASE: S.IN_FORCE}
STAFF_ROLES = (Role.UNDERWRITER, Role.LEASING)
#: What each of a contract's three signers is, by kind of application.
SIGNER_ROLES = {
    Kind.ORDER: ("borrower", "lender", "buyer"),
    Kind.LEASE: ("lessee", "lessor", "vendor"),
}
#: How each lease option ends the lease, as its outcome.
LEASE_OUTCOMES = {
    "purchase": "purchased", "return": "returned", "renew": "renewed", "terminate": "terminated",
}  # fmt: skip


@dataclass(frozen=True)
class Terms:
    amount_minor: int
    rate_bps: int
    tenor_days: int

    def as_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(body: Mapping[str, Any] | None) -> Terms | None:
        if not body:
            return None
        return Terms(int(body["amount_minor"]), int(body["rate_bps"]), int(body["tenor_days"]))


@dataclass(frozen=True)
class Move:
    """One transition to record: the new state, its journal event, the columns it sets."""

    state: State
    event: str
    by: str
    changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What a decision leads to: the moves, in order, and, when the application is
    to be approved, the terms to reserve the facility for and draw the contract of."""

    moves: tuple[Move, ...]
    approve: Terms | None = None
    by: str = ""


@dataclass(frozen=True)
class Facility:
    facility_id: str
    bank: str
    subcontractor_id: str
    currency: str
    limit_minor: int
    reserved_minor: int
    drawn_minor: int
    expires_on: dt.date

    @staticmethod
    def from_row(row: Mapping[str, Any]) -> Facility:
        return Facility(*(row[f.name] for f in dataclasses.fields(Facility)))

    @property
    def available_minor(self) -> int:
        """The limit less what is reserved for approvals and what is drawn."""
        return self.limit_minor - self.reserved_minor - self.drawn_minor

    def check_usable(self, amount: Money, today: dt.date) -> None:
        """FAILED_PRECONDITION unless the facility is in force and has ``amount`` free."""
        if self.expires_on < today:
            raise FailedPrecondition(f"facility {self.facility_id} expired on {self.expires_on}")
        self.check_available(amount.minor)

    def check_available(self, amount_minor: int) -> None:
        if amount_minor > self.available_minor:
            raise FailedPrecondition(
                f"facility {self.facility_id} has {self.available_minor} minor units available,"
                f" not {amount_minor}",
                reason="FACILITY_EXHAUSTED",
            )


@dataclass(frozen=True)
class Application:
    application_id: str
    kind: Kind
    state: State
    bank: str
    subcontractor_id: str
    currency: str
    requested_minor: int
    terms: Terms | None
    approvals: tuple[str, ...]
    #: What the approvals so far are of, while a second one is awaited:
    #: "approve" or "counter_offer".
    proposal: str
    #: The scoring decision's recommended maximum (0 before scoring).
    recommended_minor: int
    offer_expires_micros: int
    #: A lease's term in days (0 for order financing): its tenor is fixed.
    lease_term_days: int
    vendor_id: str
    #: Order financing matures at the order's due date, rolled to a business day by
    #: the bank's product (None for a lease).
    maturity: dt.date | None = None

    @staticmethod
    def from_row(row: Mapping[str, Any]) -> Application:
        decision = row["decision"] or {}
        lease = row["lease"] or {}
        facts = row["order_facts"] if row["kind"] == Kind.ORDER.value else None
        months = int(lease.get("term_months", 0))
        return Application(
            application_id=row["application_id"],
            kind=Kind(row["kind"]),
            state=State(row["state"]),
            bank=row["bank"],
            subcontractor_id=row["subcontractor_id"],
            currency=row["currency"],
            requested_minor=row["requested_minor"],
            terms=Terms.from_json(row["terms"]),
            approvals=tuple(row["approvals"]),
            proposal=row["proposal"],
            recommended_minor=int(decision.get("max_amount_minor", 0)),
            offer_expires_micros=row["offer_expires_micros"],
            lease_term_days=months * 4383 // 144,
            vendor_id=str(lease.get("vendor_id", "")),
            maturity=maturity_of(row["bank"], dt.date.fromisoformat(facts["due_date"]))
            if facts
            else None,
        )

    # -- who may do what -----------------------------------------------------------

    def check(self, action: Action, who: Identity | None) -> None:
        """PERMISSION_DENIED unless ``who`` is the action's actor (None: the platform);
        FAILED_PRECONDITION unless the application is in a state it starts from."""
        rule = RULES[action]
        self._check_actor(rule.actor, who)
        starts = rule.starts.get(self.kind)
        if starts is None:
            raise FailedPrecondition(
                f"{self.noun} {self.application_id}: {action.value.replace('_', ' ')}"
                f" is not done for a {self.kind.value} financing",
                reason="WRONG_KIND", subject=self.subject,
            )  # fmt: skip
        if self.state not in starts:
            raise FailedPrecondition(
                f"{self.noun} is {self.state.value}; {action.value.replace('_', ' ')} needs"
                f" {' or '.join(sorted(s.value for s in starts))}",
                reason="WRONG_STATE", subject=self.subject,
            )  # fmt: skip

    def may(self, action: Action) -> bool:
        """Whether ``action`` may start from this application's kind and state."""
        return self.state in RULES[action].starts.get(self.kind, frozenset())

    def _check_actor(self, actor: Actor, who: Identity | None) -> None:
        if actor is Actor.PLATFORM:
            if who is not None:
                raise PermissionDenied("only the platform takes this step")
            return
        if who is None:
            raise PermissionDenied(f"this step is the {actor.value}'s, not the platform's")
        if actor is Actor.APPLICANT:
            if who.role is not Role.SUBCONTRACTOR or who.party_id != self.subcontractor_id:
                raise PermissionDenied(f"{self.noun} {self.application_id} is not {who.party_id}'s")
        elif actor in (Actor.STAFF, Actor.LESSOR):
            roles = STAFF_ROLES if actor is Actor.STAFF else (Role.LEASING,)
            if who.role not in roles:
                raise PermissionDenied(f"{who.party_id} is not staff of {self.bank}")
            if who.organization != self.bank:
                raise PermissionDenied(
                    f"{self.noun} {self.application_id} is for {self.bank}, not {who.organization}"
                )
        # A signer is checked against the contract's signers (signer_for).

    def can_read(self, who: Identity) -> bool:
        if who.role in (Role.AUDITOR, Role.OPERATOR) or who.party_id == self.subcontractor_id:
            return True
        if self.kind is Kind.LEASE and who.party_id == self.vendor_id:
            return True
        return who.role in STAFF_ROLES and who.organization == self.bank

    @property
    def noun(self) -> str:
        return "lease" if self.kind is Kind.LEASE else "application"

    @property
    def subject(self) -> str:
        return f"application/{self.application_id}"

    # -- terms and four eyes ---------------------------------------------------------

    def tenor_from(self, today: dt.date) -> int:
        """The financing's days from ``today``: a lease its term; order financing to
        its maturity, the order's due date."""
        if self.kind is Kind.LEASE or self.maturity is None:
            return self.lease_term_days
        return (self.maturity - today).days

    def terms_from(self, amount: Money, rate_bps: int, tenor_days: int, today: dt.date) -> Terms:
        """Staff's terms, checked against the application; INVALID_ARGUMENT naming the
        field. The tenor is not staff's to choose: a lease runs its term, and order
        financing matures at the order's due date (give 0, or those days)."""
        if amount.currency != self.currency:
            raise InvalidArgument("terms.amount.currency", f"the application is in {self.currency}")
        if amount.minor > self.requested_minor:
            raise InvalidArgument("terms.amount.amount", "more than the subcontractor asked for")
        if not 0 < rate_bps <= MAX_RATE_BPS:
            raise InvalidArgument("terms.rate_bps", f"1 to {MAX_RATE_BPS} basis points")
        days = self.tenor_from(today)
        if self.kind is Kind.LEASE:  # the term is the lessee's, in the contract already
            if tenor_days not in (0, days):
                raise InvalidArgument(
                    "terms.tenor_days", f"the lease runs {days} days; give 0 or that"
                )
        else:
            if tenor_days not in (0, days):
                raise InvalidArgument(
                    "terms.tenor_days",
                    f"order financing matures at the order's due date {self.maturity},"
                    f" {days} days from today; give 0 or {days}",
                )
            if not 0 < days <= MAX_TENOR_DAYS:
                raise FailedPrecondition(
                    f"the order is due in {days} days; order financing runs 1 to"
                    f" {MAX_TENOR_DAYS} days", reason="TENOR_OUT_OF_RANGE", subject=self.subject,
                )  # fmt: skip
        return Terms(amount.minor, rate_bps, days)

    def _staff_decision(
        self, proposal: str, who: Identity, terms: Terms, policy: BankPolicy
    ) -> tuple[tuple[str, ...], bool]:
        """The approvals with ``who``'s added, and whether they are enough. A second
        approval must be another person's, of the same decision and the same terms."""
        approvals = self.approvals
        if self.state is S.PENDING_SECOND_APPROVAL:
            if who.party_id in approvals:
                raise PermissionDenied(
                    "the second approval must come from a different staff member",
                    reason="FOUR_EYES",
                )
            if self.proposal != proposal:
                raise FailedPrecondition(
                    f"{', '.join(approvals)} proposed to {self.proposal.replace('_', ' ')};"
                    " a second approval confirms that, with the same terms, or rejects",
                    reason="FOUR_EYES", subject=self.subject,
                )  # fmt: skip
            if self.terms != terms:
                raise FailedPrecondition(
                    "the second approval must be of the same terms",
                    reason="FOUR_EYES", subject=self.subject,
                )  # fmt: skip
        else:
            approvals = ()
        approvals = (*approvals, who.party_id)
        return approvals, len(set(approvals)) >= policy.approvals_needed(terms.amount_minor)

    def approve(self, who: Identity, terms: Terms, reason: str, policy: BankPolicy) -> Outcome:
        self.check(Action.APPROVE, who)
        if terms.amount_minor > self.recommended_minor and not reason.strip():
            raise InvalidArgument(
                "reason", "an amount above the scoring recommendation needs a reason"
            )
        approvals, enough = self._staff_decision("approve", who, terms, policy)
        if not enough:
            first = Move(
                S.PENDING_SECOND_APPROVAL, "first_approval", who.party_id,
                {"approvals": list(approvals), "terms": terms.as_json(),
                 "reason": reason.strip(), "proposal": "approve"},
            )  # fmt: skip
            return Outcome((first,))
        final = Move(self.state, "approval", who.party_id, {"approvals": list(approvals)})
        return Outcome((final,), approve=terms, by=who.party_id)

    def counter_offer(
        self, who: Identity, terms: Terms, policy: BankPolicy, now_micros: int
    ) -> Outcome:
        self.check(Action.COUNTER_OFFER, who)
        approvals, enough = self._staff_decision("counter_offer", who, terms, policy)
        changes: dict[str, Any] = {"approvals": list(approvals), "terms": terms.as_json()}
        if not enough:
            changes["proposal"] = "counter_offer"
            return Outcome(
                (Move(S.PENDING_SECOND_APPROVAL, "first_approval", who.party_id, changes),)
            )
        changes["proposal"] = ""
        changes["offer_expires_micros"] = now_micros + policy.offer_days * DAY_MICROS
        return Outcome((Move(S.OFFERED, "counter_offered", who.party_id, changes),))

    def accept_offer(self, who: Identity, policy: BankPolicy) -> Outcome:
        self.check(Action.ACCEPT_OFFER, who)
        # The offer was made under four eyes; checked again, as the contract follows.
        terms = self.terms
        if terms is None or len(set(self.approvals)) < policy.approvals_needed(terms.amount_minor):
            raise FailedPrecondition(
                "the offer lacks the approvals its amount needs", reason="FOUR_EYES",
                subject=self.subject,
            )  # fmt: skip
        return Outcome((), approve=terms, by=who.party_id)

    def approval_move(self, terms: Terms, by: str, contract_id: str, now_micros: int,
                      policy: BankPolicy) -> Move:  # fmt: skip
        """The move into ``approved``, once the facility is reserved and the contract drawn."""
        return Move(
            S.APPROVED, "approved", by,
            {"terms": terms.as_json(), "reserved_minor": terms.amount_minor,
             "contract_id": contract_id, "proposal": "",
             "offer_expires_micros": now_micros + policy.offer_days * DAY_MICROS},
        )  # fmt: skip

    # -- the applicant's and staff's other steps ------------------------------------

    def reject(self, who: Identity, reason_code: str, text: str) -> Move:
        self.check(Action.REJECT, who)
        if not reason_code:
            raise InvalidArgument("reason_code", "required, such as R01")
        reason = f"{reason_code}: {text.strip()}".strip(": ")
        return Move(
            S.RELEASING, "rejected", who.party_id, {"outcome": "rejected", "reason": reason}
        )

    def decline_offer(self, who: Identity) -> Move:
        self.check(Action.DECLINE_OFFER, who)
        return Move(
            S.RELEASING, "offer_declined", who.party_id,
            {"outcome": "declined", "reason": "the subcontractor declined the counter-offer"},
        )  # fmt: skip

    def withdraw(self, who: Identity) -> Move:
        self.check(Action.WITHDRAW, who)
        applicant = "lessee" if self.kind is Kind.LEASE else "subcontractor"
        return Move(
            S.RELEASING, "withdrawn", who.party_id,
            {"outcome": "withdrawn", "reason": f"withdrawn by the {applicant}"},
        )  # fmt: skip

    def signed(self, who: Identity, signer_index: int, every_signer: bool) -> tuple[Move, ...]:
        self.check(Action.SIGN, who)
        role = SIGNER_ROLES[self.kind][signer_index]
        moves = [Move(S.APPROVED, f"signed_by_{role}", who.party_id)]
        if every_signer:
            moves.append(Move(S.EFFECTIVE, "effective", "lending"))
        return tuple(moves)

    def vendor_paid(self, who: Identity, payee_id: str, amount: Money, reserved_minor: int,
                    reference: str) -> Move:  # fmt: skip
        self.check(Action.PAY_VENDOR, who)
        if payee_id != self.vendor_id:
            raise InvalidArgument(
                "payee_id", f"the lessor pays the asset's vendor {self.vendor_id}, and no one else"
            )
        if amount.currency != self.currency or amount.minor != reserved_minor:
            raise InvalidArgument(
                "amount", f"the vendor is owed {Money(self.currency, reserved_minor)} exactly"
            )
        return Move(S.VENDOR_PAID, "vendor_paid", who.party_id,
                    {"vendor_payment_reference": reference})  # fmt: skip

    def delivered(self, who: Identity, serial_number: str, contract_serial: str,
                  today: dt.date) -> Move:  # fmt: skip
        self.check(Action.CONFIRM_DELIVERY, who)
        if serial_number.strip() != contract_serial:
            raise InvalidArgument(
                "serial_number", f"the contract's asset has serial number {contract_serial}"
            )
        return Move(S.IN_FORCE, "delivered_and_accepted", who.party_id, {"commenced_on": today})

    def option_exercised(self, who: Identity, option: str) -> Move:
        self.check(Action.EXERCISE_OPTION, who)
        return Move(S.ENDING, "option_exercised", who.party_id, {"lease_option": option})

    # -- the platform's steps --------------------------------------------------------

    def pledged(self) -> Move:
        self.check(Action.PLEDGE, None)
        return Move(S.PLEDGED, "pledged", "orders")

    def refused(self, reason: str) -> Move:
        self.check(Action.REFUSE, None)
        return Move(S.CLOSED, "refused", "orders", {"outcome": "refused", "reason": reason})

    def scoring_refused(self, reason: str) -> Move:
        self.check(Action.SCORE, None)
        return Move(S.RELEASING, "declined", "scoring", {"outcome": "declined", "reason": reason})

    def scored(self, decision: Mapping[str, Any], decision_id: str, policy: BankPolicy,
               today: dt.date) -> Outcome:  # fmt: skip
        """Record the decision, then the policy's verdict: approve, decline or refer."""
        self.check(Action.SCORE, None)
        moves = [Move(self.state, "scored", "scoring",
                      {"decision": dict(decision), "decision_id": decision_id})]  # fmt: skip
        max_tenor = int(decision["max_tenor_days"])
        tenor = self.tenor_from(today)  # the maturity is the order's (or the lease's term)
        verdict, terms = auto_decision(policy, dict(decision), self.requested_minor, tenor)
        if verdict == "approve" and not 0 < tenor <= max_tenor:
            verdict = "refer"  # longer than the grade allows (never shortened): staff decide
        if verdict == "approve" and terms is not None:
            approved = Terms(terms["amount_minor"], terms["rate_bps"], terms["tenor_days"])
            return Outcome(tuple(moves), approve=approved, by="policy")
        if verdict == "decline":
            reasons = "; ".join(decision["knockouts"] or [r["text"] for r in decision["reasons"]])
            moves.append(Move(S.RELEASING, "declined", "policy",
                              {"outcome": "declined", "reason": reasons}))  # fmt: skip
        else:
            moves.append(Move(S.REFERRED, "referred", "policy"))
        return Outcome(tuple(moves))

    def disbursed(self, today: dt.date) -> Move:
        """The money goes out; or, the order due by now, it never does: a loan
        that matures before it is paid out cannot be charged as signed."""
        self.check(Action.DISBURSE, None)
        if self.maturity is not None and today >= self.maturity:
            reason = f"the order fell due on {self.maturity}, before the money went out"
            return Move(S.RELEASING, "lapsed", "lending", {"outcome": "lapsed", "reason": reason})
        return Move(S.DISBURSED, "disbursed", "lending", {"outcome": "disbursed"})

    def expired(self, now_micros: int) -> Move | None:
        """The lapse of an offer past its expiry; None while it is still open."""
        if self.state not in EXPIRING or not 0 < self.offer_expires_micros < now_micros:
            return None
        reason = "the offer expired before every party signed"
        return Move(S.RELEASING, "expired", "clock", {"outcome": "expired", "reason": reason})

    def released(self) -> Move:
        self.check(Action.RELEASE, None)
        return Move(S.CLOSED, "closed", "lending", {"reserved_minor": 0})

    def facility_restored(self) -> Move:
        """Repayment settled the financing: the facility gets its amount back."""
        self.check(Action.SETTLE, None)
        return Move(self.state, "facility_restored", "repayment")

    def lease_ended(self, option: str, asset: str) -> tuple[Move, ...]:
        """Every rental (and the option price, if owed) is paid: the lease ends as chosen."""
        self.check(Action.SETTLE, None)
        if self.kind is not Kind.LEASE:
            return ()
        moves = []
        if option in ("purchase", "terminate"):
            reason = f"{asset} passes from {self.bank} to {self.subcontractor_id}"
            moves.append(Move(self.state, "ownership_transferred", "lending", {"reason": reason}))
        elif option == "return":
            moves.append(Move(self.state, "asset_returned", "lending",
                              {"reason": f"the asset goes back to {self.bank}"}))  # fmt: skip
        moves.append(Move(S.CLOSED, "lease_ended", "lending", {"outcome": LEASE_OUTCOMES[option]}))
        return tuple(moves)


def signer_for(who: Identity, contract_id: str, signers: tuple[str, str, str]) -> tuple[str, int]:
    """Which signer the caller is, and its place: the applicant and the third party
    (buyer or vendor) sign as themselves; any staff member of the lending
    organisation signs for it."""
    party, organization, third = signers
    if who.party_id in (party, third):
        return who.party_id, signers.index(who.party_id)
    if who.role in STAFF_ROLES and who.organization == organization:
        return organization, 1
    raise PermissionDenied(f"{who.party_id} is not a party to contract {contract_id}")
