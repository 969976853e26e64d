"""deploy/monitoring: the alert rules and the dashboard name only metrics (and
labels) the code exports, and every alert says how bad and what happened."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.metrics import MetricWrapperBase

from services.runtime import metrics

MONITORING = Path(__file__).resolve().parents[1] / "deploy" / "monitoring"
#: Labels Prometheus itself adds to every series it scrapes, and histograms' ``le``.
SCRAPE_LABELS = {"job", "instance", "le"}


def exported() -> dict[str, set[str]]:
    """Every series name the code exports, with the labels it carries."""
    names: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        base, labels = value._name, set(value._labelnames)
        if isinstance(value, Counter):
            suffixes = ("_total",)
        elif isinstance(value, Histogram):
            suffixes = ("_bucket", "_sum", "_count")
        elif isinstance(value, Info):
            suffixes = ("_info",)
            labels |= {"version"}
        else:
            assert isinstance(value, Gauge)
            suffixes = ("",)
        for suffix in suffixes:
            names[base.removesuffix("_total") + suffix] = labels
    return names


def _used(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, labels named beside it or in a by/on clause) of one expression."""
    labels = set(re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", expr))
    grouped = {name.strip() for group in labels for name in group.split(",") if name.strip()}
    out = []
    for name, selector in re.findall(r"\b(scf_[a-z_]+)(\{[^}]*\})?", expr):
        matched = set(re.findall(r"([a-z_]+)\s*=~?", selector or ""))
        out.append((name, matched | grouped))
    return out


def _alerts() -> list[dict[str, object]]:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_every_alert_names_exported_metrics_and_labels() -> None:
    names = exported()
    alerts = _alerts()
    assert len(alerts) >= 8
    for rule in alerts:
        assert re.fullmatch(r"Scf[A-Za-z]+", str(rule["alert"])), rule
        assert rule["labels"]["severity"] in ("page", "ticket"), rule  # type: ignore[index]
        assert rule["annotations"]["summary"], rule  # type: ignore[index]
        used = _used(str(rule["expr"]))
        assert used, rule
        for name, labels in used:
            assert name in names, f"{rule['alert']}: {name} is not exported"
            assert labels - SCRAPE_LABELS <= names[name], f"{rule['alert']}: {name} {labels}"
    # What must wake someone does.
    paging = {str(r["alert"]) for r in alerts if r["labels"]["severity"] == "page"}  # type: ignore[index]
    assert {"ScfJournalStoreDamaged", "ScfReplicaAlarm", "ScfLeadersNotOne"} <= paging


def test_the_dashboard_names_exported_metrics_and_labels() -> None:
    names = exported()
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    shown = set()
    for expr in exprs:
        for name, labels in _used(expr):
            assert name in names, f"{name} is not exported"
            assert labels - SCRAPE_LABELS <= names[name], (name, labels)
            shown.add(_family(name))
    # Every metric the code exports is on the dashboard.
    assert {_family(n) for n in names} <= shown, {_family(n) for n in names} - shown


def _family(name: str) -> str:
    return name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        ["promtool", "check", "rules", str(MONITORING / "alerts.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
