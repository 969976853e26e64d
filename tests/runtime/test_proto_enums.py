"""The protos' state and outcome enums name every word the domain uses, and
nothing more; a value a caller sends is checked."""

from __future__ import annotations

import pytest

from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.repayment.v1 import repayment_pb2
from services.lending.domain import LEASE_OUTCOMES, State
from services.runtime.errors import InvalidArgument
from services.runtime.proto_enums import enum_number, enum_word, word_of

#: Every outcome lending writes (services/lending/domain.py).
OUTCOMES = {"refused", "declined", "rejected", "withdrawn", "expired", "lapsed", "disbursed",
            *LEASE_OUTCOMES.values()}  # fmt: skip


def _words(enum: object) -> set[str]:
    return {word_of(enum, n) for n in enum.values() if n}  # type: ignore[attr-defined]


def test_every_domain_state_is_an_enum_value_and_back() -> None:
    assert _words(lending_pb2.ApplicationState) == {s.value for s in State}
    for state in State:
        number = enum_number(lending_pb2.ApplicationState, state.value)
        assert enum_word(lending_pb2.ApplicationState, number, "state") == state.value


def test_every_outcome_and_loan_state_is_an_enum_value() -> None:
    assert _words(lending_pb2.ApplicationOutcome) == OUTCOMES
    assert _words(repayment_pb2.LoanState) == {"open", "settled"}
    assert enum_number(lending_pb2.ApplicationOutcome, "") == 0  # not ended yet


def test_a_word_the_enum_lacks_is_an_error_not_a_default() -> None:
    with pytest.raises(ValueError):
        enum_number(lending_pb2.ApplicationState, "aproved")


@pytest.mark.parametrize("number", [0, 99, -1])
def test_a_value_a_caller_sends_must_be_named(number: int) -> None:
    with pytest.raises(InvalidArgument) as refused:
        enum_word(lending_pb2.ApplicationState, number, "states[0]")
    assert refused.value.field == "states[0]"
