"""A NUL character anywhere in a request's text is refused, naming the field."""

from __future__ import annotations

import pytest

from services.gen.scf.journal.v1 import journal_pb2
from services.gen.scf.leasing.v1 import leasing_pb2
from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.orders.v1 import orders_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.grpcserver import refuse_nul


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (orders_pb2.RegisterOrderRequest(reference="PO\x001"), "reference"),
        (
            orders_pb2.RegisterOrderRequest(line_items=[orders_pb2.LineItem(description="a\x00")]),
            "line_items[0].description",
        ),
        (
            leasing_pb2.ApplyForLeaseRequest(asset=leasing_pb2.Asset(vendor_id="x\x00")),
            "asset.vendor_id",
        ),
    ],
)
def test_nul_is_refused_with_its_field(request_: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        refuse_nul(request_)
    assert info.value.field == field


def test_text_without_nul_passes() -> None:
    refuse_nul(orders_pb2.RegisterOrderRequest(reference="PO-1", contract_sha256=b"\x00" * 32))


@pytest.mark.parametrize(
    ("request_", "field", "problem"),
    [
        (orders_pb2.RegisterOrderRequest(reference="x" * 1001), "reference", "1000 characters"),
        (
            orders_pb2.RegisterOrderRequest(
                line_items=[orders_pb2.LineItem(description="d")] * 2
                + [orders_pb2.LineItem(description="d" * 3_000_000)]
            ),
            "line_items[2].description",
            "1000 characters",
        ),
        (
            orders_pb2.RegisterOrderRequest(line_items=[orders_pb2.LineItem()] * 201),
            "line_items",
            "200 entries",
        ),
        (
            orders_pb2.RegisterOrderRequest(contract_sha256=b"\x01" * 1025),
            "contract_sha256",
            "1024 bytes",
        ),
    ],
)
def test_every_field_has_a_bound(request_: object, field: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as info:
        refuse_nul(request_)
    assert info.value.field == field


def test_a_field_named_larger_takes_its_own_bound() -> None:
    from services.gen.scf.scoring.v1 import scoring_pb2

    refuse_nul(scoring_pb2.LoadModelRequest(scorecard_json="{}" + " " * 50_000))
    with pytest.raises(InvalidArgument, match="100000 characters"):
        refuse_nul(scoring_pb2.LoadModelRequest(scorecard_json=" " * 100_001))


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            orders_pb2.RegisterOrderRequest(line_items=[orders_pb2.LineItem(quantity=-3)]),
            "line_items[0].quantity",
        ),
        (orders_pb2.ListOrdersRequest(page_size=101), "page_size"),
        (lending_pb2.ListFacilitiesRequest(page_size=101), "page_size"),
        (leasing_pb2.ApplyForLeaseRequest(term_months=121), "term_months"),
        (leasing_pb2.ExerciseOptionRequest(renewal_periods=-1), "renewal_periods"),
        (
            underwriting_pb2.ApproveRequest(terms=underwriting_pb2.Terms(rate_bps=5001)),
            "terms.rate_bps",
        ),
        (journal_pb2.ListEntriesRequest(end=2**53), "end"),
        (leasing_pb2.ApplyForLeaseRequest(frequency=99), "frequency"),  # type: ignore[arg-type]
        (orders_pb2.ListOrdersRequest(states=[1, 77]), "states[1]"),  # type: ignore[list-item]
    ],
)
def test_every_integer_has_a_range_and_every_enum_its_values(request_: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        refuse_nul(request_)
    assert info.value.field == field


def test_integers_within_their_ranges_pass() -> None:
    refuse_nul(orders_pb2.ListOrdersRequest(page_size=100, states=[1, 2]))
    terms = underwriting_pb2.Terms(rate_bps=5000, tenor_days=3652)
    refuse_nul(underwriting_pb2.ApproveRequest(terms=terms))
    refuse_nul(journal_pb2.ListEntriesRequest(start=0, end=2**53 - 1))
