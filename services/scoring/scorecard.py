"""The scorecard: a versioned data file, validated on load, applied by one pure function.

score = base points + the points of the bin each characteristic's value falls in
odds  = scaling.odds * 2 ** ((score - scaling.score) / scaling.points_to_double_odds)
PD    = 1 / (1 + odds), rounded half-even to 6 decimals

All arithmetic is ``Decimal`` under one fixed context, so a decision recomputed
from its recorded inputs is identical to the digit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

__all__ = ["Decision", "ModelError", "Scorecard", "load_scorecard", "score"]

_CTX = Context(prec=34, rounding=ROUND_HALF_EVEN)
_PD_STEP = Decimal("0.000001")


class ModelError(ValueError):
    """A scorecard file that cannot be used; says what is wrong where."""


class InputError(ValueError):
    """A characteristic's value that the scorecard does not cover."""


@dataclass(frozen=True)
class Bin:
    points: int
    reason: str
    values: frozenset[str] = frozenset()
    lo: Decimal | None = None
    hi: Decimal | None = None  # exclusive; None: no upper bound

    def holds(self, value: str, kind: str) -> bool:
        if kind == "category":
            return value in self.values
        v = Decimal(value)
        return (self.lo is None or v >= self.lo) and (self.hi is None or v < self.hi)


@dataclass(frozen=True)
class Characteristic:
    name: str
    kind: str
    label: str
    bins: tuple[Bin, ...]

    def bin_for(self, value: str) -> Bin:
        try:
            for b in self.bins:
                if b.holds(value, self.kind):
                    return b
        except InvalidOperation:
            raise InputError(f"{self.name}: {value!r} is not a number") from None
        raise InputError(f"{self.name}: no bin holds {value!r}")

    @property
    def best(self) -> int:
        return max(b.points for b in self.bins)


@dataclass(frozen=True)
class Knockout:
    characteristic: str
    reason: str
    values: frozenset[str] = frozenset()
    lo: Decimal | None = None

    def hit(self, value: str) -> bool:
        if self.values:
            return value in self.values
        return self.lo is not None and Decimal(value) >= self.lo


@dataclass(frozen=True)
class Grade:
    grade: str
    lo: int | None
    hi: int | None
    advance_rate: Decimal
    max_tenor_days: int
    spread_bps: int
    decision: str


@dataclass(frozen=True)
class Scorecard:
    model: str
    version: str
    sha256: str
    base_points: int
    scaling: tuple[int, Decimal, int]
    characteristics: tuple[Characteristic, ...]
    knockouts: tuple[Knockout, ...]
    grades: tuple[Grade, ...]
    text: str = field(repr=False, default="")

    def grade_for(self, points: int) -> Grade:
        for g in self.grades:
            if (g.lo is None or points >= g.lo) and (g.hi is None or points < g.hi):
                return g
        raise AssertionError("grades cover every score (checked at load)")


def _dec(value: Any, where: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ModelError(f"{where}: {value!r} is not a number") from None


def _numeric_bins(name: str, raw: list[dict[str, Any]]) -> tuple[Bin, ...]:
    bins = []
    for i, b in enumerate(raw):
        lo = _dec(b["from"], f"{name} bin {i}")
        hi = None if b["to"] is None else _dec(b["to"], f"{name} bin {i}")
        if hi is not None and hi <= lo:
            raise ModelError(f"{name} bin {i}: 'to' {hi} is not above 'from' {lo}")
        bins.append(Bin(int(b["points"]), str(b["reason"]), lo=lo, hi=hi))
    bins.sort(key=lambda b: b.lo if b.lo is not None else Decimal("-Infinity"))
    for prev, nxt in itertools.pairwise(bins):
        if prev.hi is None or prev.hi > nxt.lo:  # type: ignore[operator]
            raise ModelError(f"{name}: bins overlap at {nxt.lo}")
        if prev.hi < nxt.lo:  # type: ignore[operator]
            raise ModelError(f"{name}: gap between {prev.hi} and {nxt.lo}")
    if bins[-1].hi is not None:
        raise ModelError(f"{name}: the last bin must be open-ended ('to': null)")
    return tuple(bins)


def _category_bins(name: str, raw: list[dict[str, Any]]) -> tuple[Bin, ...]:
    seen: set[str] = set()
    bins = []
    for b in raw:
        values = frozenset(str(v) for v in b["values"])
        if values & seen:
            raise ModelError(f"{name}: values {sorted(values & seen)} are in two bins")
        seen |= values
        bins.append(Bin(int(b["points"]), str(b["reason"]), values=values))
    return tuple(bins)


def _grades(raw: list[dict[str, Any]]) -> tuple[Grade, ...]:
    grades = [
        Grade(
            str(g["grade"]),
            g["from"],
            g["to"],
            _dec(g["advance_rate"], f"grade {g['grade']}"),
            int(g["max_tenor_days"]),
            int(g["spread_bps"]),
            str(g["decision"]),
        )
        for g in raw
    ]
    grades.sort(key=lambda g: float("-inf") if g.lo is None else g.lo)
    if not grades or grades[0].lo is not None or grades[-1].hi is not None:
        raise ModelError("grade bands must run from no lower bound to no upper bound")
    for prev, nxt in itertools.pairwise(grades):
        if prev.hi != nxt.lo:
            raise ModelError(f"grade bands {prev.grade} and {nxt.grade} leave a gap or overlap")
    for g in grades:
        if g.decision not in ("approve", "refer", "decline"):
            raise ModelError(f"grade {g.grade}: decision must be approve, refer or decline")
        if not Decimal(0) <= g.advance_rate <= Decimal(1):
            raise ModelError(f"grade {g.grade}: advance rate must be between 0 and 1")
    return tuple(grades)


def load_scorecard(text: str) -> Scorecard:
    """Parse and validate a scorecard file; :class:`ModelError` says what is wrong."""
    try:
        body = json.loads(text)
        chars = []
        for c in body["characteristics"]:
            name, kind = str(c["name"]), str(c["kind"])
            if kind == "number":
                bins = _numeric_bins(name, c["bins"])
            elif kind == "category":
                bins = _category_bins(name, c["bins"])
            else:
                raise ModelError(f"{name}: kind must be number or category")
            if not bins:
                raise ModelError(f"{name}: no bins")
            chars.append(Characteristic(name, kind, str(c["label"]), bins))
        names = [c.name for c in chars]
        if len(set(names)) != len(names):
            raise ModelError("a characteristic appears twice")
        knockouts = []
        for k in body.get("knockouts", []):
            if k["characteristic"] not in names:
                raise ModelError(f"knock-out on unknown characteristic {k['characteristic']!r}")
            knockouts.append(
                Knockout(
                    k["characteristic"],
                    str(k["reason"]),
                    frozenset(k.get("values", [])),
                    _dec(k["from"], "knock-out") if "from" in k else None,
                )
            )
        s = body["scaling"]
        scaling = (
            int(s["score"]),
            _dec(s["odds"], "scaling.odds"),
            int(s["points_to_double_odds"]),
        )
        if scaling[1] <= 0 or scaling[2] <= 0:
            raise ModelError("scaling: odds and points to double the odds must be positive")
        return Scorecard(
            model=str(body["model"]),
            version=str(body["version"]),
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            base_points=int(body["base_points"]),
            scaling=scaling,
            characteristics=tuple(chars),
            knockouts=tuple(knockouts),
            grades=_grades(body["grades"]),
            text=text,
        )
    except ModelError:
        raise
    except RecursionError:  # JSON nested deeper than Python parses: not a scorecard
        raise ModelError("malformed scorecard: nested too deeply") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"malformed scorecard: {exc!r}") from None


@dataclass(frozen=True)
class Decision:
    model: str
    version: str
    model_sha256: str
    inputs: dict[str, str]
    points: dict[str, int]
    score: int
    pd: str
    grade: str
    knockouts: list[str]
    reasons: list[dict[str, Any]]
    recommendation: str
    advance_rate: str
    max_amount_minor: int
    max_tenor_days: int
    spread_bps: int

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pd_for(card: Scorecard, points: int) -> Decimal:
    score0, odds0, pdo = card.scaling
    exponent = _CTX.divide(Decimal(points - score0), Decimal(pdo))
    odds = _CTX.multiply(odds0, _CTX.exp(_CTX.multiply(exponent, _CTX.ln(Decimal(2)))))
    return _CTX.divide(Decimal(1), _CTX.add(Decimal(1), odds)).quantize(_PD_STEP, context=_CTX)


def score(
    card: Scorecard,
    inputs: Mapping[str, str],
    order_amount_minor: int,
    facility_available_minor: int | None,
) -> Decision:
    """Apply the scorecard. ``inputs`` holds one string per characteristic."""
    missing = [c.name for c in card.characteristics if c.name not in inputs]
    if missing:
        raise InputError(f"no value for {', '.join(missing)}")
    points = {c.name: c.bin_for(inputs[c.name]).points for c in card.characteristics}
    total = card.base_points + sum(points.values())
    knockouts = [k.reason for k in card.knockouts if k.hit(inputs[k.characteristic])]
    grade = card.grade_for(total)
    costly = sorted(
        ((c.best - points[c.name], c) for c in card.characteristics if c.best > points[c.name]),
        key=lambda item: (-item[0], item[1].name),
    )
    reasons = [
        {"code": c.name.upper(), "points_lost": lost, "text": c.bin_for(inputs[c.name]).reason}
        for lost, c in costly[:3]
    ]
    recommendation = "decline" if knockouts else grade.decision
    max_amount = 0
    if recommendation != "decline":
        max_amount = int((grade.advance_rate * order_amount_minor).to_integral_value(ROUND_DOWN))
        if facility_available_minor is not None:
            max_amount = min(max_amount, facility_available_minor)
    return Decision(
        model=card.model,
        version=card.version,
        model_sha256=card.sha256,
        inputs={
            **dict(inputs),
            "order_amount_minor": str(order_amount_minor),
            "facility_available_minor": ""
            if facility_available_minor is None
            else str(facility_available_minor),
        },
        points=points,
        score=total,
        pd=str(pd_for(card, total)),
        grade=grade.grade,
        knockouts=knockouts,
        reasons=reasons,
        recommendation=recommendation,
        advance_rate=str(grade.advance_rate),
        max_amount_minor=max_amount,
        max_tenor_days=grade.max_tenor_days,
        spread_bps=grade.spread_bps,
    )


def rescore(card: Scorecard, recorded: Mapping[str, str]) -> Decision:
    """Recompute a decision from the inputs it recorded."""
    inputs = {c.name: recorded[c.name] for c in card.characteristics if c.name in recorded}
    facility = recorded.get("facility_available_minor", "")
    return score(
        card, inputs, int(recorded["order_amount_minor"]), int(facility) if facility else None
    )
