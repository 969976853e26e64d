"""The Merkle code against the published RFC 6962 / RFC 9162 vectors
(transparency-dev/merkle, copied into tests/journal/vectors)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.journal.hashing import leaf_hash
from services.journal.proofs import ProofError, verify_consistency, verify_inclusion
from services.journal.tree import (
    CompactRange,
    consistency_ranges,
    inclusion_ranges,
    nodes_for,
    range_hash,
)

VECTORS = Path(__file__).parent / "vectors"
ROOTS = json.loads((VECTORS / "tree-roots.json").read_text())
LEAVES = [bytes.fromhex(h) for h in ROOTS["leaf_inputs_hex"]]


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


def _cases(kind: str) -> list[Path]:
    return sorted((VECTORS / "testdata" / kind).rglob("*.json"))


def _build(leaves: list[bytes]) -> tuple[CompactRange, dict[tuple[int, int], bytes]]:
    tree = CompactRange()
    nodes: dict[tuple[int, int], bytes] = {}
    for data in leaves:
        for level, idx, h in tree.append(leaf_hash(data)):
            nodes[(level, idx)] = h
    return tree, nodes


@pytest.mark.parametrize("size", range(len(ROOTS["root_by_size_hex"])))
def test_reference_roots(size: int) -> None:
    tree, nodes = _build(LEAVES[:size])
    expected = bytes.fromhex(ROOTS["root_by_size_hex"][size])
    assert tree.root() == expected
    assert range_hash(0, size, nodes) == expected


@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    args = (case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof, _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _cases("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


@pytest.mark.parametrize(
    "path",
    [p for p in _cases("inclusion") if p.name == "happy-path.json"],
    ids=lambda p: str(p.relative_to(VECTORS)),
)
def test_our_inclusion_proofs_equal_the_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    _, nodes = _build(LEAVES[: case["treeSize"]])
    ranges = inclusion_ranges(case["leafIdx"], case["treeSize"])
    assert [range_hash(lo, hi, nodes) for lo, hi in ranges] == [
        _b64(p) for p in case["proof"] or []
    ]


@given(st.integers(1, 300), st.data())
def test_generated_proofs_verify(size: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    tree, nodes = _build(leaves)
    root = tree.root()
    index = data.draw(st.integers(0, size - 1))
    ranges = inclusion_ranges(index, size)
    assert nodes_for(ranges) <= nodes.keys()
    proof = [range_hash(lo, hi, nodes) for lo, hi in ranges]
    verify_inclusion(index, size, leaf_hash(leaves[index]), proof, root)
    size1 = data.draw(st.integers(1, size))
    tree1, _ = _build(leaves[:size1])
    cproof = [range_hash(lo, hi, nodes) for lo, hi in consistency_ranges(size1, size)]
    verify_consistency(size1, size, cproof, tree1.root(), root)
    if size1 < size:
        with pytest.raises(ProofError):
            verify_consistency(size1, size, cproof, tree1.root(), tree1.root())


def test_frontier_reload_matches() -> None:
    tree, nodes = _build([bytes([i]) for i in range(37)])
    again = CompactRange.from_nodes(37, nodes)
    assert again.root() == tree.root()
    assert again.append(b"x" * 32) == tree.append(b"x" * 32)


@given(st.integers(1, 300))
def test_batch_proofs_match_the_tree(size: int) -> None:
    from services.journal.encoding import batch_proofs, batch_root
    from services.journal.proofs import root_from_inclusion_proof

    statements = [i.to_bytes(4, "big") for i in range(size)]
    tree, nodes = _build(statements)
    root = batch_root(statements)
    assert root == tree.root()
    for proof in batch_proofs(statements, b"s" * 64):
        expected = [range_hash(lo, hi, nodes) for lo, hi in inclusion_ranges(proof.index, size)]
        assert list(proof.path) == expected
        assert (
            root_from_inclusion_proof(
                proof.index, size, leaf_hash(statements[proof.index]), proof.path
            )
            == root
        )
