"""A replica's alarm: what it found, where, and the evidence it keeps."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALARM_KINDS", "AlarmRecord"]

#: What a replica can find: an entry that does not verify, a journal that shows
#: two histories, or an audit API that serves otherwise than the store it signed.
ALARM_KINDS = ("verification", "fork", "cross-examination")


@dataclass(frozen=True)
class AlarmRecord:
    kind: str  # one of ALARM_KINDS
    seq: int
    problem: str
    evidence: tuple[str, ...]
