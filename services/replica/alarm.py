"""A replica's alarm: what it found, where, and the evidence it keeps."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AlarmRecord"]


@dataclass(frozen=True)
class AlarmRecord:
    kind: str  # "verification", "fork" or "cross-examination"
    seq: int
    problem: str
    evidence: tuple[str, ...]
