"""The rules of docs/journal-format.md that an outside verifier found `scf audit
verify` and `verify-receipt` did not enforce, each tried on a journal forged
with every key (as an operator holding them all could). Pure."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from services.journal.checkpoint import Checkpoint, sign_checkpoint
from services.journal.encoding import (
    GENESIS_PREV_HASH,
    Entry,
    Statement,
    batch_proofs,
    sign_batch,
)
from services.journal.keyset import canonical_json, genesis_payload
from services.journal.receipt import ReceiptError, verify_receipt
from services.journal.tree import CompactRange, inclusion_ranges, range_hash
from services.journal.verify import JournalVerifier, VerificationError
from services.runtime.keys import Signer, load_or_create_signer

ORIGIN = "scf.journal/forged"


class Forge:
    """Entries, tree and checkpoints, made as the sequencer makes them."""

    def __init__(self, keys: Path) -> None:
        self.root = load_or_create_signer(keys, "platform-root")
        self.journal = load_or_create_signer(keys, "journal")
        self.orders = load_or_create_signer(keys, "orders")
        self.entries: list[Entry] = []
        self.tree = CompactRange()
        self.nodes: dict[tuple[int, int], bytes] = {}
        payload = genesis_payload(
            ORIGIN, {"journal": self.journal.public_raw, "orders": self.orders.public_raw}
        )
        self.platform("keys.genesis", payload, "genesis")

    def add(self, producer: str, signer: Signer, subject: str, event: str, key: str,
            payload: bytes) -> Entry:  # fmt: skip
        st = Statement(producer, signer.key_id, 0, subject, event, key, payload)
        batch = sign_batch(producer, signer.key_id, signer.sign, [st.encode()])
        prev = self.entries[-1].leaf_hash() if self.entries else GENESIS_PREV_HASH
        proof = batch_proofs(batch.statements, batch.signature)[0]
        entry = Entry(len(self.entries), 0, prev, st, proof)
        self.entries.append(entry)
        for level, idx, h in self.tree.append(entry.leaf_hash()):
            self.nodes[(level, idx)] = h
        return entry

    def platform(
        self, event: str, payload: bytes, key: str, subject: str = "journal/keys"
    ) -> Entry:
        return self.add("platform", self.root, subject, event, key, payload)

    def order(self, key: str, signer: Signer | None = None) -> Entry:
        return self.add("orders", signer or self.orders, "order/ORD-1", "order.noted", key, b"{}")

    def checkpoint(self) -> str:
        cp = Checkpoint(ORIGIN, self.tree.size, self.tree.root(), 1)
        return sign_checkpoint(cp, self.journal, ORIGIN)

    def verify(self) -> None:
        verifier = JournalVerifier(self.root.public_raw)
        for entry in self.entries:
            verifier.add(entry.encode())
        verifier.finish()

    def proven(self, entry: Entry) -> dict[str, object]:
        size = self.tree.size
        proof = [range_hash(lo, hi, self.nodes) for lo, hi in inclusion_ranges(entry.seq, size)]
        return {
            "seq": entry.seq, "leaf": base64.b64encode(entry.encode()).decode(),
            "inclusion_proof": [base64.b64encode(p).decode() for p in proof],
        }  # fmt: skip


@pytest.fixture
def forge(tmp_path: Path) -> Forge:
    return Forge(tmp_path)


def _refused(forge: Forge) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        forge.verify()
    return info.value


def test_an_honest_forge_verifies(forge: Forge) -> None:
    forge.order("k-1")
    forge.verify()


def test_a_statement_journaled_twice_is_refused(forge: Forge) -> None:
    """Appended after the last checkpoint or not: a pair is journaled once."""
    forge.order("k-1")
    forge.order("k-2")
    forge.order("k-1")
    error = _refused(forge)
    assert error.seq == 3 and "journaled already, as entry 1" in error.problem


def test_a_key_entry_on_another_subject_is_refused(forge: Forge) -> None:
    body = canonical_json({"producer": "orders", "public_key": "22" * 32})
    forge.platform("keys.registered", body, "k", subject="order/ORD-1")
    assert "key entries are on journal/keys" in _refused(forge).problem


@pytest.mark.parametrize(
    ("event", "body", "words"),
    [
        ("keys.registered", {"producer": "orders", "public_key": "00" * 32, "note": "x"},
         "exactly the fields"),
        ("keys.revoked", {"key_id": "00" * 32, "reason": "x"}, "exactly the fields"),
        ("keys.revoked", {"key_id": "11" * 32}, "unknown key"),
    ],
)  # fmt: skip
def test_a_key_entry_has_exactly_its_fields(
    forge: Forge, event: str, body: dict[str, str], words: str
) -> None:
    forge.platform(event, canonical_json(body), "k")
    assert words in _refused(forge).problem


def test_a_key_entry_is_canonical_json(forge: Forge) -> None:
    body = json.dumps({"public_key": forge.orders.public_raw.hex(), "producer": "orders"},
                      indent=1).encode()  # fmt: skip
    forge.platform("keys.registered", body, "k")
    assert "not canonical JSON" in _refused(forge).problem


def test_a_key_revoked_twice_is_refused(forge: Forge) -> None:
    kid = forge.orders.key_id.hex()
    forge.platform("keys.revoked", canonical_json({"key_id": kid}), "r1")
    forge.platform("keys.revoked", canonical_json({"key_id": kid}), "r2")
    assert "revoked already" in _refused(forge).problem


def test_a_receipt_whose_key_entry_comes_after_its_entry_is_refused(
    forge: Forge, tmp_path: Path
) -> None:
    """An operator with every key: an entry signed by a key registered only later."""
    late = load_or_create_signer(tmp_path, "orders-late")
    entry = forge.order("k-1", signer=late)
    key_entry = forge.platform(
        "keys.registered",
        canonical_json({"producer": "orders", "public_key": late.public_raw.hex()}), "late",
    )  # fmt: skip
    receipt = json.dumps({
        "format": "scf-receipt-v1", "checkpoint": forge.checkpoint(),
        "entry": forge.proven(entry), "key_entry": forge.proven(key_entry),
    })  # fmt: skip
    with pytest.raises(ReceiptError) as info:
        verify_receipt(receipt, forge.journal.public_raw, forge.root.public_raw)
    assert "comes after the entry" in str(info.value)


def test_a_restore_needs_the_other_banks_word(forge: Forge, tmp_path: Path) -> None:
    """Without a quorum of other banks' matching cosigned checkpoints, nothing is restored."""
    from services.journal.restore import RestoreError, plan_restore
    from services.journal.witness import add_lines, cosign

    forge.order("k-1")
    leaves = [e.encode() for e in forge.entries]
    note = forge.checkpoint()
    with pytest.raises(RestoreError, match="0 of the 1"):
        plan_restore(forge.root.public_raw, leaves, note, {}, {}, quorum=1)
    south = load_or_create_signer(tmp_path, "witness-bank-south")
    cosigned = add_lines(note, [cosign(note, south, "bank-south", 1)])
    plan = plan_restore(
        forge.root.public_raw, leaves, note, {"bank-south": cosigned},
        {"bank-south": south.public_raw}, quorum=1,
    )  # fmt: skip
    assert plan.size == len(leaves) and plan.agreeing == {"bank-south"}
    # A cosignature under another key is no word of that bank's.
    with pytest.raises(RestoreError, match="does not verify"):
        plan_restore(
            forge.root.public_raw, leaves, note, {"bank-south": cosigned},
            {"bank-south": forge.orders.public_raw}, quorum=1,
        )  # fmt: skip
