"""The Merkle tree's shape: which stored nodes a root or a proof needs. Pure.

Only *perfect* subtrees are stored: node ``(level, index)`` is the root of
leaves ``[index * 2**level, (index + 1) * 2**level)``. Every other node of an
RFC 9162 tree lies on its right edge and is folded from O(log n) perfect
nodes, so a root or a proof costs O(log n) stored nodes, fetched in one read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.journal.hashing import EMPTY_ROOT, node_hash

__all__ = [
    "CompactRange",
    "NodeId",
    "consistency_ranges",
    "inclusion_ranges",
    "perfect_nodes",
    "range_hash",
]

#: (level, index) of a perfect subtree.
NodeId = tuple[int, int]
#: Leaves [lo, hi) of a subtree.
Range = tuple[int, int]


def _largest_power_of_two_below(n: int) -> int:
    """Largest power of two strictly less than ``n``; requires ``n > 1``."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_nodes(lo: int, hi: int) -> list[NodeId]:
    """The perfect subtrees whose hashes make up ``MTH(D[lo:hi])``, left to right.

    Requires ``0 <= lo < hi`` and ``[lo, hi)`` to be a subtree of some RFC 9162
    tree (``lo`` a multiple of the largest power of two below ``hi - lo``, as
    every range this module produces is).
    """
    out: list[NodeId] = []
    while True:
        n = hi - lo
        if n & (n - 1) == 0 and lo % n == 0:
            out.append((n.bit_length() - 1, lo // n))
            return out
        k = _largest_power_of_two_below(n)
        out.append(((k.bit_length() - 1), lo // k))
        lo += k


def range_hash(lo: int, hi: int, nodes: Mapping[NodeId, bytes]) -> bytes:
    """``MTH(D[lo:hi])`` folded from the perfect nodes of :func:`perfect_nodes`."""
    if lo == hi:
        return EMPTY_ROOT
    parts = [nodes[n] for n in perfect_nodes(lo, hi)]
    r = parts[-1]
    for left in reversed(parts[:-1]):
        r = node_hash(left, r)
    return r


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees whose hashes form the inclusion proof of leaf ``index``
    in the tree of ``size`` leaves, in proof order (RFC 9162 2.1.3.1).
    Requires ``0 <= index < size``."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is beyond tree size {size}")
    out: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def consistency_ranges(size1: int, size2: int) -> list[Range]:
    """The subtrees whose hashes form the consistency proof between sizes
    (RFC 9162 2.1.4.1). Requires ``0 < size1 <= size2``."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from {size1} to {size2}")
    out: list[Range] = []
    lo, hi, m, whole = 0, size2, size1, True
    while m != hi - lo:
        k = _largest_power_of_two_below(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        out.append((lo, hi))
    out.reverse()
    return out


def nodes_for(ranges: Iterable[Range]) -> set[NodeId]:
    return {n for lo, hi in ranges for n in perfect_nodes(lo, hi)}


@dataclass
class CompactRange:
    """The right frontier of a growing tree: the perfect subtrees covering [0, size).

    Appending a leaf returns the perfect nodes it completes, to be stored.
    """

    size: int = 0
    #: (level, hash) of each perfect subtree, largest (leftmost) first.
    frontier: list[tuple[int, bytes]] = field(default_factory=list)

    @classmethod
    def from_nodes(cls, size: int, nodes: Mapping[NodeId, bytes]) -> CompactRange:
        """The frontier of a tree of ``size`` leaves, from its stored perfect nodes
        (``perfect_nodes(0, size)`` says which)."""
        if size == 0:
            return cls()
        return cls(size, [(level, nodes[(level, idx)]) for level, idx in perfect_nodes(0, size)])

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; returns (level, index, hash) of every node it completes."""
        index = self.size
        created = [(0, index, leaf)]
        self.frontier.append((0, leaf))
        while len(self.frontier) > 1 and self.frontier[-1][0] == self.frontier[-2][0]:
            level, right = self.frontier.pop()
            _, left = self.frontier.pop()
            parent = node_hash(left, right)
            self.frontier.append((level + 1, parent))
            created.append((level + 1, index >> (level + 1), parent))
        self.size += 1
        return created

    def root(self) -> bytes:
        if not self.frontier:
            return EMPTY_ROOT
        r = self.frontier[-1][1]
        for _, left in reversed(self.frontier[:-1]):
            r = node_hash(left, r)
        return r
