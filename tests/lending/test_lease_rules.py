"""A lease's rules and its scorecard, as pure functions."""

from __future__ import annotations

from importlib import resources

import pytest

from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.leasing.v1 import leasing_pb2
from services.lending.leases import lease_contract_document, validate_lease
from services.runtime.errors import InvalidArgument
from services.scoring.characteristics import RepaymentHistory, lease_inputs_for
from services.scoring.scorecard import load_scorecard, score
from tests.lending.lease_helpers import lease_request

LEASE_CARD = load_scorecard(
    resources.files("services.scoring").joinpath("models/scf-lease-1.0.0.json").read_text()
)


def test_a_valid_request_becomes_the_lease_terms() -> None:
    lease = validate_lease(lease_request("k"), "acme-builders")
    assert (lease.price_minor, lease.down_payment_minor, lease.financed_minor) == (
        30_000_000, 6_000_000, 24_000_000,
    )  # fmt: skip
    assert (lease.periods, lease.per_year, lease.in_advance, lease.end_option) == (
        4, 4, False, "purchase",
    )  # fmt: skip
    assert lease.term_days == 365  # 12 months of 30.4375 days


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"down": "300000.00"}, "down_payment.amount"),
        ({"term": 0}, "term_months"),
        ({"term": 121}, "term_months"),
        ({"residual": "300000.01"}, "residual.amount"),
        ({"vendor": ""}, "asset.vendor_id"),
    ],
)
def test_refusals_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_lease(lease_request("k", **changes), "acme-builders")  # type: ignore[arg-type]
    assert info.value.field == field


def test_the_contract_is_canonical_and_names_all_three_parties() -> None:
    lease = validate_lease(lease_request("k"), "acme-builders")
    app = {"application_id": "LSE-1", "bank": "lease-one", "subcontractor_id": "acme-builders"}
    terms = {"amount_minor": 20_000_000, "rate_bps": 800, "tenor_days": 365}
    text, digest = lease_contract_document(app, lease, terms)
    again, same = lease_contract_document(dict(reversed(list(app.items()))), lease, terms)
    assert (text, digest) == (again, same)
    assert '"vendor":"liftco"' in text and '"lessee":"acme-builders"' in text
    # Approving less than asked raises the down payment in the contract.
    assert '"down_payment_minor":10000000' in text


def _score(down: int, usual: int, history: RepaymentHistory) -> tuple[int, str]:
    facts = bus_pb2.OrderFacts(found=True, usual_amount_minor=usual, completed_orders=4)
    lease = bus_pb2.LeaseFacts(
        lessee_id="acme-builders", currency="CNY", price_minor=1_000_000,
        down_payment_minor=down, residual_minor=100_000, term_months=36,
    )  # fmt: skip
    inputs, amount = lease_inputs_for(lease, facts, history)
    assert amount == 1_000_000 - down
    decision = score(LEASE_CARD, inputs, amount, None)
    return decision.score, decision.grade


def test_lease_score_rewards_a_larger_stake_and_a_good_record() -> None:
    clean = RepaymentHistory(repaid_on_time=3)
    assert _score(100_000, 2_000_000, clean)[0] < _score(400_000, 2_000_000, clean)[0]
    assert _score(200_000, 2_000_000, RepaymentHistory())[0] < _score(200_000, 2_000_000, clean)[0]
    # No orders at all: the asset counts as costing a hundred usual orders.
    assert _score(200_000, 0, clean)[0] < _score(200_000, 2_000_000, clean)[0]
    defaulted = RepaymentHistory(defaults=1)
    facts = bus_pb2.OrderFacts(found=True)
    lease = bus_pb2.LeaseFacts(price_minor=1_000, down_payment_minor=0, term_months=12)
    inputs, amount = lease_inputs_for(lease, facts, defaulted)
    assert score(LEASE_CARD, inputs, amount, None).recommendation == "decline"


def test_lease_facts_that_make_no_sense_are_refused() -> None:
    facts = bus_pb2.OrderFacts(found=True)
    for lease in (
        bus_pb2.LeaseFacts(price_minor=0, term_months=12),
        bus_pb2.LeaseFacts(price_minor=100, down_payment_minor=100, term_months=12),
        bus_pb2.LeaseFacts(price_minor=100, term_months=0),
    ):
        with pytest.raises(InvalidArgument):
            lease_inputs_for(lease, facts, RepaymentHistory())


def test_frequencies_and_options_cover_the_proto() -> None:
    from services.lending.leases import END_OPTIONS, FREQUENCIES

    assert len(FREQUENCIES) == len(leasing_pb2.PaymentFrequency.values()) - 1
    assert len(END_OPTIONS) == len(leasing_pb2.EndOption.values()) - 1
