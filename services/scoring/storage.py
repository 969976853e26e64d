"""The scoring schema: model versions and decisions."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.gen.scf.scoring.v1 import scoring_pb2
from services.journal.keyset import canonical_json
from services.runtime.errors import FailedPrecondition, NotFound
from services.scoring.scorecard import Scorecard, load_scorecard

__all__ = ["ScoringStore"]


class ScoringStore:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool
        self._cards: dict[str, Scorecard] = {}

    async def model(self, version: str) -> Scorecard:
        if version not in self._cards:
            body = await self.pool.fetchval("SELECT body FROM models WHERE version = $1", version)
            if body is None:
                raise NotFound(f"no scorecard version {version!r}")
            self._cards[version] = load_scorecard(body)
        return self._cards[version]

    async def active_model(self) -> Scorecard:
        version = await self.pool.fetchval(
            "SELECT version FROM models ORDER BY loaded_seq DESC LIMIT 1"
        )
        if version is None:
            raise FailedPrecondition("no scorecard is loaded")
        return await self.model(version)

    async def models(self) -> list[tuple[str, str, str]]:
        rows = await self.pool.fetch(
            "SELECT model, version, sha256 FROM models ORDER BY loaded_seq DESC"
        )
        return [(r["model"], r["version"], r["sha256"]) for r in rows]

    @staticmethod
    async def add_model(conn: Any, card: Scorecard) -> bool:
        """Store a new version; False when that version is stored already."""
        existing = await conn.fetchval("SELECT sha256 FROM models WHERE version = $1", card.version)
        if existing is not None:
            if existing != card.sha256:
                raise FailedPrecondition(
                    f"version {card.version} is loaded already with other contents;"
                    " give the file a new version"
                )
            return False
        await conn.execute(
            "INSERT INTO models (version, model, sha256, body) VALUES ($1, $2, $3, $4)",
            card.version,
            card.model,
            card.sha256,
            card.text,
        )
        return True

    async def decision_for(self, application_id: str) -> scoring_pb2.ScoreResult | None:
        row = await self.pool.fetchrow(
            "SELECT decision_id, decision FROM decisions WHERE application_id = $1", application_id
        )
        if row is None:
            return None
        return scoring_pb2.ScoreResult(
            ok=True,
            decision_id=row["decision_id"],
            decision_json=canonical_json(row["decision"]).decode(),
        )

    async def decision(self, decision_id: str) -> dict[str, Any]:
        row = await self.pool.fetchval(
            "SELECT decision FROM decisions WHERE decision_id = $1", decision_id
        )
        if row is None:
            raise NotFound(f"no decision {decision_id!r}")
        return dict(row)

    @staticmethod
    async def insert(
        conn: Any,
        decision_id: str,
        request: scoring_pb2.ScoreRequest,
        document: dict[str, Any],
        now: int,
    ) -> None:
        await conn.execute(
            "INSERT INTO decisions (decision_id, application_id, order_id, bank, decision,"
            " created_micros) VALUES ($1, $2, $3, $4, $5, $6)",
            decision_id,
            request.application_id,
            request.order_id,
            request.bank,
            document,
            now,
        )
