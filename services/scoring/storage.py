"""The scoring schema: model versions and decisions."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.gen.scf.bus.v1 import bus_pb2
from services.journal import canonical_json
from services.runtime.errors import FailedPrecondition, NotFound
from services.scoring.scorecard import Scorecard, load_scorecard

__all__ = ["LEASE_MODEL", "ORDER_MODEL", "ScoringStore"]

#: The scorecard families: order financing, and financial leases.
ORDER_MODEL = "scf-expert"
LEASE_MODEL = "scf-lease"


class ScoringStore:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool
        self._cards: dict[str, Scorecard] = {}

    async def model(self, version: str, model: str = ORDER_MODEL) -> Scorecard:
        key = f"{model}/{version}"
        if key not in self._cards:
            body = await self.pool.fetchval(
                "SELECT body FROM models WHERE model = $1 AND version = $2", model, version
            )
            if body is None:
                raise NotFound(f"no {model} scorecard version {version!r}")
            self._cards[key] = load_scorecard(body)
        return self._cards[key]

    async def active_model(self, model: str = ORDER_MODEL) -> Scorecard:
        """The version of ``model`` loaded last: each model family has one in force."""
        version = await self.pool.fetchval(
            "SELECT version FROM models WHERE model = $1 ORDER BY loaded_seq DESC LIMIT 1", model
        )
        if version is None:
            raise FailedPrecondition(f"no {model} scorecard is loaded")
        return await self.model(version, model)

    async def models(self) -> list[tuple[str, str, str]]:
        rows = await self.pool.fetch(
            "SELECT model, version, sha256 FROM models ORDER BY loaded_seq DESC"
        )
        return [(r["model"], r["version"], r["sha256"]) for r in rows]

    @staticmethod
    async def add_model(conn: Any, card: Scorecard) -> bool:
        """Store a new version; False when that version is stored already."""
        existing = await conn.fetchval(
            "SELECT sha256 FROM models WHERE model = $1 AND version = $2", card.model, card.version
        )
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

    async def decision_for(self, application_id: str) -> bus_pb2.ScoreResult | None:
        row = await self.pool.fetchrow(
            "SELECT decision_id, decision FROM decisions WHERE application_id = $1", application_id
        )
        if row is None:
            return None
        return bus_pb2.ScoreResult(
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
        request: bus_pb2.ScoreRequest,
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
