"""The scorecard: the documented worked examples, properties, and refused model files."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scoring.scorecard import ModelError, load_scorecard, pd_for, rescore, score

ROOT = Path(__file__).resolve().parents[2]
MODEL_TEXT = (ROOT / "services/scoring/models/scf-expert-1.0.0.json").read_text()
CARD = load_scorecard(MODEL_TEXT)
RATINGS = ["CCC", "B", "BB", "BBB", "A", "AA", "AAA"]


def _examples() -> list[dict[str, Any]]:
    text = (ROOT / "docs/scoring.md").read_text()
    block = re.search(r"```json scoring-examples\n(.*?)```", text, re.S)
    assert block is not None
    return list(json.loads(block.group(1)))


@pytest.mark.parametrize("example", _examples(), ids=lambda e: e["name"])
def test_documented_examples(example: dict[str, Any]) -> None:
    d = score(CARD, example["inputs"], example["order_amount_minor"], None)
    got = {k: getattr(d, k) for k in ("score", "pd", "grade", "recommendation", "max_amount_minor")}
    assert got == {k: example[k] for k in got}
    assert rescore(CARD, d.inputs) == d


inputs = st.fixed_dictionaries(
    {
        "buyer_rating": st.sampled_from(RATINGS),
        "order_state": st.sampled_from(["confirmed", "delivered", "accepted"]),
        "completed_orders": st.integers(0, 50).map(str),
        "repaid_on_time": st.integers(0, 20).map(str),
        "max_days_past_due": st.integers(0, 200).map(str),
        "defaults": st.integers(0, 3).map(str),
        "amount_to_usual": st.decimals(0, 10, places=4).map(str),
        "open_exposure_to_amount": st.decimals(0, 10, places=4).map(str),
        "tenor_days": st.integers(0, 800).map(str),
        "buyer_concentration": st.decimals(0, 1, places=4).map(str),
    }
)


@given(inputs, st.integers(1, 10**12))
def test_a_better_buyer_rating_never_lowers_the_score(values: dict[str, str], amount: int) -> None:
    scores = [score(CARD, {**values, "buyer_rating": r}, amount, None).score for r in RATINGS]
    assert scores == sorted(scores)


@given(inputs, st.integers(1, 10**12))
def test_a_better_repayment_record_never_lowers_the_score(
    values: dict[str, str], amount: int
) -> None:
    base = score(CARD, values, amount, None)
    better = dict(values)
    better["repaid_on_time"] = str(int(values["repaid_on_time"]) + 1)
    better["max_days_past_due"] = str(max(0, int(values["max_days_past_due"]) - 30))
    better["defaults"] = str(max(0, int(values["defaults"]) - 1))
    assert score(CARD, better, amount, None).score >= base.score


@given(st.integers(0, 1200), st.integers(1, 200))
def test_pd_falls_as_the_score_rises(points: int, step: int) -> None:
    assert Decimal(pd_for(CARD, points + step)) <= Decimal(pd_for(CARD, points))


@given(inputs, st.integers(1, 10**12), st.integers(0, 10**12))
def test_decisions_recompute_identically_and_respect_the_facility(
    values: dict[str, str], amount: int, facility: int
) -> None:
    d = score(CARD, values, amount, facility)
    assert rescore(CARD, d.inputs) == d
    assert 0 <= d.max_amount_minor <= min(amount, facility)
    if d.knockouts:
        assert d.recommendation == "decline" and d.max_amount_minor == 0


def _model(change: Any) -> str:
    body = json.loads(MODEL_TEXT)
    change(body)
    return json.dumps(body)


def _char(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in body["characteristics"] if c["name"] == name)


BAD_MODELS = {
    "gap in bins": (lambda b: _char(b, "tenor_days")["bins"].pop(1), "gap"),
    "overlapping bins": (
        lambda b: _char(b, "tenor_days")["bins"][0].update({"to": "40"}),
        "overlap",
    ),
    "closed last bin": (
        lambda b: _char(b, "tenor_days")["bins"][-1].update({"to": "999"}),
        "open-ended",
    ),
    "category twice": (
        lambda b: _char(b, "buyer_rating")["bins"][0]["values"].append("AA"),
        "two bins",
    ),
    "grade gap": (lambda b: b["grades"][1].update({"from": 630}), "gap"),
    "grades not covering the top": (lambda b: b["grades"][0].update({"to": 900}), "no upper bound"),
    "unknown knock-out": (lambda b: b["knockouts"][0].update({"characteristic": "x"}), "unknown"),
    "not json": (None, "malformed"),
}


@pytest.mark.parametrize("name", list(BAD_MODELS))
def test_bad_model_files_are_refused(name: str) -> None:
    change, words = BAD_MODELS[name]
    text = "{not json" if change is None else _model(change)
    with pytest.raises(ModelError, match=words):
        load_scorecard(text)


def test_json_nested_deeper_than_python_parses_is_a_malformed_model() -> None:
    with pytest.raises(ModelError, match="nested too deeply"):
        load_scorecard("[" * 50_000 + "]" * 50_000)
