"""Packing things into messages that NATS will carry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["pack"]

T = TypeVar("T")


def pack(items: Sequence[T], size_of: Callable[[T], int], most: int, limit: int) -> list[list[T]]:
    """Consecutive groups, in order, of at most ``most`` items and ``limit`` bytes
    each (an item alone larger than ``limit`` makes a group of its own)."""
    groups: list[list[T]] = []
    current: list[T] = []
    size = 0
    for item in items:
        n = size_of(item)
        if current and (len(current) >= most or size + n > limit):
            groups.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        groups.append(current)
    return groups
