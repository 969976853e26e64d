"""Lending's domain, pure: every state x action x role, and the invariants.

The expected table below is written out again, from docs/lending.md, rather
than read from the module: a change to the rules has to be made twice, once
on purpose.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.lending.domain import (
    Action,
    Application,
    Facility,
    Kind,
    Move,
    Outcome,
    State,
    Terms,
    signer_for,
)
from services.lending.policy import policy_for
from services.orders import domain as orders
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.runtime.identity import Identity, Role
from services.runtime.money import Money

S = State
TODAY = dt.date(2027, 3, 3)
BANK = {Kind.ORDER: "bank-north", Kind.LEASE: "lease-one"}
DECIDABLE = {S.REFERRED, S.PENDING_SECOND_APPROVAL}
WITHDRAWABLE = {
    S.REQUESTED, S.PLEDGED, S.REFERRED, S.PENDING_SECOND_APPROVAL, S.OFFERED, S.APPROVED,
}  # fmt: skip
BOTH = {Kind.ORDER, Kind.LEASE}


def both(states: set[State]) -> dict[Kind, set[State]]:
    return {kind: states for kind in BOTH}


#: action -> (who may: a set of the caller names below, {kind: states it starts from})
EXPECTED: dict[Action, tuple[set[str], dict[Kind, set[State]]]] = {
    Action.PLEDGE: ({"platform"}, {Kind.ORDER: {S.REQUESTED}}),
    Action.REFUSE: ({"platform"}, {Kind.ORDER: {S.REQUESTED}}),
    Action.SCORE: ({"platform"}, {Kind.ORDER: {S.PLEDGED}, Kind.LEASE: {S.REQUESTED}}),
    Action.APPROVE: ({"underwriter", "lessor"}, both(DECIDABLE)),
    Action.REJECT: ({"underwriter", "lessor"}, both(DECIDABLE)),
    Action.COUNTER_OFFER: ({"underwriter", "lessor"}, {Kind.ORDER: DECIDABLE}),
    Action.ACCEPT_OFFER: ({"applicant"}, {Kind.ORDER: {S.OFFERED}}),
    Action.DECLINE_OFFER: ({"applicant"}, {Kind.ORDER: {S.OFFERED}}),
    Action.WITHDRAW: ({"applicant"}, both(WITHDRAWABLE)),
    Action.SIGN: (
        {"applicant", "stranger", "underwriter", "lessor", "other bank", "buyer", "auditor"}
        | {"operator"},
        both({S.APPROVED}),
    ),
    Action.DISBURSE: ({"platform"}, {Kind.ORDER: {S.EFFECTIVE}}),
    Action.PAY_VENDOR: ({"lessor"}, {Kind.LEASE: {S.EFFECTIVE}}),
    Action.CONFIRM_DELIVERY: ({"applicant"}, {Kind.LEASE: {S.VENDOR_PAID}}),
    Action.EXERCISE_OPTION: ({"applicant"}, {Kind.LEASE: {S.IN_FORCE}}),
    Action.SETTLE: ({"platform"}, {Kind.ORDER: {S.DISBURSED}, Kind.LEASE: {S.IN_FORCE, S.ENDING}}),
    Action.EXPIRE: (
        {"platform"},
        both({S.APPROVED, S.OFFERED, S.PENDING_SECOND_APPROVAL}),
    ),
    Action.RELEASE: ({"platform"}, both({S.RELEASING})),
}


def callers(kind: Kind) -> dict[str, Identity | None]:
    bank = BANK[kind]
    return {
        "applicant": Identity("acme-builders", Role.SUBCONTRACTOR, "acme-builders"),
        "stranger": Identity("delta-pumps", Role.SUBCONTRACTOR, "delta-pumps"),
        # The organisation's own staff: an underwriter, and a leasing officer.
        "underwriter": Identity("uw-alice", Role.UNDERWRITER, bank),
        "lessor": Identity("ls-dana", Role.LEASING, bank),
        "other bank": Identity("uw-carol", Role.UNDERWRITER, "bank-south"),
        "buyer": Identity("citybuild", Role.BUYER, "citybuild"),
        "auditor": Identity("auditor-reg", Role.AUDITOR, "regulator"),
        "operator": Identity("operator", Role.OPERATOR, "platform"),
        "platform": None,
    }


def application(kind: Kind = Kind.ORDER, state: State = S.REFERRED, **over: Any) -> Application:
    base = Application(
        application_id="APP-1", kind=kind, state=state, bank=BANK[kind],
        subcontractor_id="acme-builders", currency="CNY", requested_minor=200_000_000,
        terms=None, approvals=(), proposal="", recommended_minor=200_000_000,
        offer_expires_micros=0, lease_term_days=365 if kind is Kind.LEASE else 0,
        vendor_id="liftco" if kind is Kind.LEASE else "",
        maturity=None if kind is Kind.LEASE else TODAY + dt.timedelta(days=90),
    )  # fmt: skip
    return dataclasses.replace(base, **over)


def test_the_table_has_every_action() -> None:
    assert set(EXPECTED) == set(Action)


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("action", list(Action))
def test_every_state_action_and_role(kind: Kind, state: State, action: Action) -> None:
    allowed, starts = EXPECTED[action]
    app = application(kind, state)
    for name, who in callers(kind).items():
        may_act = name in allowed
        try:
            app.check(action, who)
            outcome = "ok"
        except PermissionDenied:
            outcome = "denied"
        except FailedPrecondition as exc:
            outcome = exc.reason
        if not may_act:
            expected = "denied"
        elif kind not in starts:
            expected = "WRONG_KIND"
        elif state not in starts[kind]:
            expected = "WRONG_STATE"
        else:
            expected = "ok"
        assert outcome == expected, f"{action} by {name} on a {state} {kind}"
        assert app.may(action) == (kind in starts and state in starts[kind])


# -- four eyes ----------------------------------------------------------------------------


def after(app: Application, move: Move) -> Application:
    """The application once ``move`` is recorded (what Transitions.apply does in SQL)."""
    changes: dict[str, Any] = {"state": move.state}
    c = move.changes
    if "approvals" in c:
        changes["approvals"] = tuple(c["approvals"])
    if "terms" in c:
        changes["terms"] = Terms.from_json(c["terms"])
    if "proposal" in c:
        changes["proposal"] = c["proposal"]
    if "offer_expires_micros" in c:
        changes["offer_expires_micros"] = c["offer_expires_micros"]
    return dataclasses.replace(app, **changes)


def run(app: Application, outcome: Outcome) -> Application:
    for move in outcome.moves:
        app = after(app, move)
    if outcome.approve is not None:
        move = app.approval_move(outcome.approve, outcome.by, "CON-1", 0, policy_for(app.bank))
        app = after(app, move)
    return app


STAFF = [Identity(p, Role.UNDERWRITER, "bank-north") for p in ("uw-alice", "uw-bob", "uw-dan")]
APPLICANT = Identity("acme-builders", Role.SUBCONTRACTOR, "acme-builders")
AMOUNTS = [50_000_000, 100_000_000, 100_000_001, 200_000_000]  # around bank-north's 1,000,000.00


def needed(amount_minor: int) -> int:
    """bank-north's rule, as its credit policy states it: two above 1,000,000.00."""
    return 2 if amount_minor > 100_000_000 else 1


step = st.tuples(
    st.sampled_from(["approve", "counter", "accept", "reject"]),
    st.sampled_from(range(len(STAFF))),
    st.sampled_from(AMOUNTS),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(step, max_size=8))
def test_no_terms_take_effect_without_enough_different_approvers(
    steps: list[tuple[str, int, int]],
) -> None:
    policy = policy_for("bank-north")
    app = application()
    for verb, who_index, amount in steps:
        who = STAFF[who_index]
        terms = Terms(amount, 700, 90)
        try:
            if verb == "approve":
                outcome = app.approve(who, terms, "why", policy)
            elif verb == "counter":
                outcome = app.counter_offer(who, terms, policy, 0)
            elif verb == "accept":
                outcome = app.accept_offer(APPLICANT, policy)
            else:
                outcome = Outcome((app.reject(who, "R01", ""),))
        except (PermissionDenied, FailedPrecondition, InvalidArgument):
            continue
        approves = outcome.approve
        app = run(app, outcome)
        if approves is not None:
            # Approved or accepted: the approvals are of these terms, by enough people.
            assert app.state is S.APPROVED and app.terms == approves
            assert len(set(app.approvals)) == len(app.approvals)
            assert len(app.approvals) >= needed(approves.amount_minor)
        if app.state is S.OFFERED:
            assert app.terms is not None
            assert len(set(app.approvals)) >= needed(app.terms.amount_minor)


def test_the_policy_approves_alone_only_what_its_rules_allow() -> None:
    policy = policy_for("bank-north")
    decision = {
        "recommendation": "approve", "grade": "A", "max_amount_minor": 200_000_000,
        "max_tenor_days": 180, "spread_bps": 250, "knockouts": [], "reasons": [],
    }  # fmt: skip
    app = application(state=S.PLEDGED)
    outcome = app.scored(decision, "DEC-1", policy, TODAY)
    assert outcome.approve == Terms(200_000_000, 600, 90) and outcome.by == "policy"
    refer = app.scored({**decision, "grade": "C"}, "DEC-1", policy, TODAY)
    assert refer.approve is None and refer.moves[-1].state is S.REFERRED
    # Due later than the grade's longest tenor: referred, never shortened.
    long = app.scored({**decision, "max_tenor_days": 60}, "DEC-1", policy, TODAY)
    assert long.approve is None and long.moves[-1].state is S.REFERRED
    with pytest.raises(FailedPrecondition):
        application(state=S.REFERRED).scored(decision, "DEC-1", policy, TODAY)


def test_terms_are_bounded() -> None:
    app = application()
    cny = Money("CNY", 100)
    # Order financing matures at the order's due date: the tenor is derived.
    assert app.terms_from(cny, 1, 0, TODAY) == Terms(100, 1, 90)
    assert app.terms_from(cny, 1, 90, TODAY) == Terms(100, 1, 90)
    for money, rate, tenor, field in (
        (Money("USD", 100), 500, 90, "terms.amount.currency"),
        (Money("CNY", 200_000_001), 500, 90, "terms.amount.amount"),
        (cny, 0, 90, "terms.rate_bps"),
        (cny, 5001, 90, "terms.rate_bps"),
        (cny, 500, 20, "terms.tenor_days"),  # a term the contract would not hold to
        (cny, 500, 731, "terms.tenor_days"),
    ):
        with pytest.raises(InvalidArgument) as info:
            app.terms_from(money, rate, tenor, TODAY)
        assert info.value.field == field
    late = dataclasses.replace(app, maturity=TODAY)
    with pytest.raises(FailedPrecondition):
        late.terms_from(cny, 500, 0, TODAY)
    lease = application(Kind.LEASE)
    assert lease.terms_from(cny, 500, 0, TODAY).tenor_days == 365
    with pytest.raises(InvalidArgument):
        lease.terms_from(cny, 500, 90, TODAY)


def test_signers() -> None:
    signers = ("acme-builders", "bank-north", "citybuild")
    assert signer_for(APPLICANT, "C", signers) == ("acme-builders", 0)
    assert signer_for(STAFF[1], "C", signers) == ("bank-north", 1)
    assert signer_for(Identity("citybuild", Role.BUYER, "citybuild"), "C", signers) == (
        "citybuild", 2,
    )  # fmt: skip
    for stranger in (Identity("uw-carol", Role.UNDERWRITER, "bank-south"),
                     Identity("auditor-reg", Role.AUDITOR, "bank-north")):  # fmt: skip
        with pytest.raises(PermissionDenied):
            signer_for(stranger, "C", signers)


# -- the facility and the order ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 10**9),
    st.lists(st.tuples(st.sampled_from(["reserve", "draw", "release", "repay"]),
                       st.integers(1, 10**9)), max_size=20),
)  # fmt: skip
def test_a_facility_is_never_over_its_limit(limit: int, ops: list[tuple[str, int]]) -> None:
    """Reservations go through check_available, as the process manager's approve does."""
    facility = Facility("F", "bank-north", "acme", "CNY", limit, 0, 0, dt.date(2030, 1, 1))
    reservations: list[int] = []
    drawings: list[int] = []
    for op, amount in ops:
        if op == "reserve":
            try:
                facility.check_available(amount)
            except FailedPrecondition:
                continue
            reservations.append(amount)
            reserved = facility.reserved_minor + amount
            facility = dataclasses.replace(facility, reserved_minor=reserved)
        elif op == "draw" and reservations:
            taken = reservations.pop()
            facility = dataclasses.replace(
                facility, reserved_minor=facility.reserved_minor - taken,
                drawn_minor=facility.drawn_minor + taken,
            )  # fmt: skip
            drawings.append(taken)
        elif op == "release" and reservations:
            facility = dataclasses.replace(
                facility, reserved_minor=facility.reserved_minor - reservations.pop()
            )
        elif op == "repay" and drawings:
            facility = dataclasses.replace(
                facility, drawn_minor=facility.drawn_minor - drawings.pop()
            )
        assert facility.reserved_minor + facility.drawn_minor <= limit
        assert facility.available_minor >= 0


def test_an_expired_facility_is_not_used() -> None:
    facility = Facility("F", "b", "s", "CNY", 100, 0, 0, dt.date(2027, 1, 1))
    facility.check_usable(Money("CNY", 100), dt.date(2027, 1, 1))
    with pytest.raises(FailedPrecondition):
        facility.check_usable(Money("CNY", 100), dt.date(2027, 1, 2))
    with pytest.raises(FailedPrecondition):
        facility.check_usable(Money("CNY", 101), dt.date(2026, 1, 1))


SERVICE = Identity("lending", Role.SERVICE, "platform")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pledge", "release"]), st.sampled_from("ABC")),
                max_size=12))  # fmt: skip
def test_an_order_backs_at_most_one_live_financing(ops: list[tuple[str, str]]) -> None:
    order = orders.Order(
        "ORD-1", "acme-builders", "citybuild", Money("CNY", 100), dt.date(2027, 1, 1),
        dt.date(2027, 3, 1), (), bytes(32), "PO", orders.State.CONFIRMED, None, "", 0, 0, 1,
    )  # fmt: skip
    for verb, application_id in ops:
        pledge = orders.Pledge(application_id, "bank-north", 0)
        action = orders.Action.PLEDGE if verb == "pledge" else orders.Action.RELEASE
        holder = order.pledge
        try:
            order = orders.apply(order, action, SERVICE, 0, pledge=pledge)
        except FailedPrecondition:
            # Refused: a second pledge while one is held, or a release by another.
            assert (
                (holder is not None)
                if verb == "pledge"
                else (holder is None or holder.application_id != application_id)
            )
            continue
        if verb == "pledge":
            assert holder is None and order.pledge == pledge
        else:
            assert holder is not None and holder.application_id == application_id
            assert order.pledge is None


def test_money_never_goes_out_for_an_order_due_by_then() -> None:
    app = application(state=S.EFFECTIVE)
    assert app.disbursed(TODAY).state is S.DISBURSED
    lapsed = app.disbursed(TODAY + dt.timedelta(days=90))  # its maturity
    assert lapsed.state is S.RELEASING and lapsed.changes["outcome"] == "lapsed"
