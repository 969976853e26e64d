"""The explorer's in-browser verifier (static/verify.js), run by Node's Web
Crypto: the same RFC 6962 / RFC 9162 vectors as the Python verifier, and the
same checkpoints and entries the journal writes."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from services.journal.checkpoint import Checkpoint, sign_checkpoint
from services.journal.encoding import BatchProof, Entry, Statement
from services.journal.explorer.app import STATIC
from services.runtime.keys import load_or_create_signer

HERE = Path(__file__).parent
VECTORS = HERE.parent / "journal" / "vectors" / "testdata"
VERIFIER = STATIC / "verify.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")


def _node(script: str, *args: str) -> list[dict[str, object]]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(HERE / script), str(VERIFIER), *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_javascript_verifier_passes_every_rfc6962_vector() -> None:
    cases = sorted(str(p) for p in VECTORS.rglob("*.json"))
    assert len(cases) > 150
    results = _node("vectors.mjs", *cases)
    assert len(results) == len(cases)
    wrong = [r for r in results if r["wantErr"] != r["gotErr"]]
    assert not wrong, wrong
    # Both kinds, and both verdicts, were exercised.
    assert any(not r["gotErr"] for r in results) and any(r["gotErr"] for r in results)
    assert any("consistency" in str(r["path"]) for r in results)


def _case(tmp_path: Path, **change: object) -> dict[str, object]:
    journal = load_or_create_signer(tmp_path, "journal")
    origin = "scf.journal/test"
    note = sign_checkpoint(Checkpoint(origin, 7, bytes(range(32)), 1_700_000_000_000_000),
                           journal, origin)  # fmt: skip
    statement = Statement("orders", bytes(32), 5, "order/ORD-1", "order.registered", "k-1",
                          b'{"order_id":"ORD-1"}')  # fmt: skip
    entry = Entry(3, 1_700_000_000_000_001, bytes(32), statement,
                  BatchProof(1, 0, (), bytes(64)))  # fmt: skip
    case: dict[str, object] = {
        "note": note, "keys": [journal.public_raw.hex()],
        "entry": base64.b64encode(entry.encode()).decode(),
        "leaf_hash": entry.leaf_hash().hex(),
    }  # fmt: skip
    case.update(change)
    return case


def test_the_javascript_verifier_reads_what_the_journal_writes(tmp_path: Path) -> None:
    case = _case(tmp_path)
    [out] = _node("checks.mjs", json.dumps(case))
    assert out["note"] == "verified"
    assert out["entry"] == {
        "seq": 3, "subject": "order/ORD-1", "eventType": "order.registered",
        "producer": "orders", "payload": '{"order_id":"ORD-1"}', "leafHash": case["leaf_hash"],
    }  # fmt: skip


def test_the_javascript_verifier_refuses_what_was_altered(tmp_path: Path) -> None:
    good = _case(tmp_path)
    note = str(good["note"])
    other = load_or_create_signer(tmp_path / "other", "journal").public_raw.hex()
    altered = {
        "a changed size": note.replace("\n7\n", "\n8\n", 1),
        "no signature": note.split("\n\n")[0] + "\n\n",
    }
    for what, text in altered.items():
        [out] = _node("checks.mjs", json.dumps({**good, "note": text}))
        assert out["note"] != "verified", what
    [out] = _node("checks.mjs", json.dumps({**good, "keys": [other]}))
    assert "pinned journal key" in str(out["note"])
    entry = bytearray(base64.b64decode(str(good["entry"])))
    del entry[-70:]  # cut into the batch proof and signature
    [out] = _node("checks.mjs", json.dumps({**good, "entry": base64.b64encode(entry).decode()}))
    assert isinstance(out["entry"], str) and "entry:" in out["entry"]
