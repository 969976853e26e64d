"""The order state machine and money rules as pure functions."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.orders.domain import NEXT, RULES, Action, Order, Pledge, State, apply
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.runtime.identity import Identity, Role
from services.runtime.money import Money, parse_money

SUB = Identity("acme-builders", Role.SUBCONTRACTOR, "acme-builders")
BUYER = Identity("citybuild", Role.BUYER, "citybuild")
LENDING = Identity("lending", Role.SERVICE, "platform")
ACTOR = {"buyer": BUYER, "subcontractor": SUB, "service": LENDING}
PLEDGE = Pledge("APP-1", "bank-north", 1)


def order(state: State, pledge: Pledge | None = None) -> Order:
    return Order(
        "ORD-1", "acme-builders", "citybuild", Money("CNY", 100), dt.date(2027, 1, 1),
        dt.date(2027, 2, 1), (), b"h" * 32, "PO-1", state, pledge, "", 0, 0, 1,
    )  # fmt: skip


@pytest.mark.parametrize(("state", "action"), list(itertools.product(State, Action)))
def test_every_state_and_action(state: State, action: Action) -> None:
    allowed, whose = RULES[action]
    held = PLEDGE if action in (Action.RELEASE, Action.SETTLE) else None
    before = order(state, held)
    try:
        after = apply(before, action, ACTOR[whose], 5, reason="why", pledge=PLEDGE)
    except FailedPrecondition:
        assert state not in allowed
        return
    assert state in allowed
    assert after.state == (NEXT[action] or state)
    assert after.version == 2 and after.updated_micros == 5
    assert (after.pledge is not None) == (action is Action.PLEDGE)


@pytest.mark.parametrize("action", list(Action))
def test_only_the_right_party_acts(action: Action) -> None:
    whose = RULES[action][1]
    for name, who in ACTOR.items():
        if name == whose:
            continue
        with pytest.raises(PermissionDenied):
            apply(order(State.REGISTERED), action, who, 5, reason="r", pledge=PLEDGE)


def test_pledged_order_cannot_be_cancelled_or_pledged_twice() -> None:
    with pytest.raises(FailedPrecondition, match="pledged"):
        apply(order(State.CONFIRMED, PLEDGE), Action.CANCEL, SUB, 5)
    with pytest.raises(FailedPrecondition, match="APP-1"):
        apply(
            order(State.CONFIRMED, PLEDGE),
            Action.PLEDGE,
            LENDING,
            5,
            pledge=Pledge("APP-2", "b", 1),
        )


@given(st.integers(1, 10**14), st.sampled_from(["CNY", "JPY", "KWD"]))
def test_money_round_trips_through_its_decimal_string(minor: int, currency: str) -> None:
    money = Money(currency, minor)
    assert parse_money(money.major(), currency, "amount") == money


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("1.001", "CNY"), ("1.5", "JPY"), ("0", "CNY"), ("-1", "CNY"), ("1,00", "CNY"), ("NaN", "CNY"),
     ("1.00", "ABC"), ("", "CNY"), ("1e3", "CNY")],
)  # fmt: skip
def test_money_refusals(amount: str, currency: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_money(amount, currency, "amount")
