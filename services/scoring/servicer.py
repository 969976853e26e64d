"""``scf.scoring.v1.ScoringService``: explain, recompute, load models."""

from __future__ import annotations

import json
from typing import Any

from services.gen.scf.journal.v1 import journal_pb2
from services.gen.scf.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from services.journal import EncodingError, canonical_json, decode_entry
from services.runtime.errors import InvalidArgument, NotFound, PermissionDenied
from services.runtime.idempotency import once
from services.runtime.identity import Identity, Role, current_identity, require_role
from services.runtime.journal_client import AuditClient, Outbox
from services.runtime.paging import page_of, paged
from services.scoring.scorecard import InputError, ModelError, load_scorecard, rescore
from services.scoring.storage import ScoringStore

__all__ = ["ScoringServicer", "journal_model_load"]


def _may_read(who: Identity, decision: dict[str, Any]) -> None:
    if who.role in (Role.AUDITOR, Role.OPERATOR, Role.SERVICE):
        return
    staff = who.role in (Role.UNDERWRITER, Role.LEASING)
    if staff and who.organization == decision.get("bank"):
        return
    if who.party_id == decision.get("subcontractor_id"):  # why it was scored so
        return
    raise PermissionDenied(f"{who.party_id} may not read decisions of {decision.get('bank')}")


async def journal_model_load(
    conn: Any, outbox: Outbox, model: str, version: str, sha256: str
) -> None:
    await outbox.add(
        conn,
        subject=f"model/{model}",
        event_type="scoring.model_loaded",
        payload={"model": model, "version": version, "sha256": sha256},
        idempotency_key=f"model/{model}/{version}",
    )


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    def __init__(self, store: ScoringStore, outbox: Outbox, audit_client: AuditClient) -> None:
        self.store = store
        self.outbox = outbox
        self.audit_client = audit_client

    async def Explain(
        self, request: scoring_pb2.ExplainRequest, context: Any
    ) -> scoring_pb2.ExplainResponse:
        who = current_identity()
        decision = await self.store.decision(request.decision_id)
        _may_read(who, decision)
        card = await self.store.model(decision["version"], decision["model"])
        inputs = decision["inputs"]
        return scoring_pb2.ExplainResponse(
            decision_id=request.decision_id,
            model=decision["model"],
            version=decision["version"],
            base_points=card.base_points,
            characteristics=[
                scoring_pb2.CharacteristicPoints(
                    name=c.name,
                    label=c.label,
                    value=inputs[c.name],
                    points=decision["points"][c.name],
                    best_points=c.best,
                    reason=c.bin_for(inputs[c.name]).reason,
                )
                for c in card.characteristics
            ],
            score=decision["score"],
            pd=decision["pd"],
            grade=decision["grade"],
            knockouts=decision["knockouts"],
            reasons=[r["text"] for r in decision["reasons"]],
            recommendation=decision["recommendation"],
            max_amount_minor=decision["max_amount_minor"],
            spread_bps=decision["spread_bps"],
        )

    async def Recompute(
        self, request: scoring_pb2.RecomputeRequest, context: Any
    ) -> scoring_pb2.RecomputeResponse:
        who = current_identity()
        leaf = request.journal_entry or await self._entry_of(request.decision_id)
        try:
            entry = decode_entry(leaf)
        except EncodingError as exc:
            raise InvalidArgument("journal_entry", str(exc)) from None
        if entry.statement.event_type != "score.decided":
            raise InvalidArgument(
                "journal_entry", f"a {entry.statement.event_type} entry, not a decision"
            )
        recorded = json.loads(entry.statement.payload)
        _may_read(who, recorded)
        card = await self.store.model(recorded["version"], recorded["model"])
        try:
            again = rescore(card, recorded["inputs"]).as_json()
        except InputError as exc:
            raise InvalidArgument("journal_entry", f"recorded inputs: {exc}") from None
        ours = {k: recorded[k] for k in again}
        return scoring_pb2.RecomputeResponse(
            identical=canonical_json(ours) == canonical_json(again),
            recorded_json=canonical_json(ours).decode(),
            recomputed_json=canonical_json(again).decode(),
            journal_seq=entry.seq,
        )

    async def _entry_of(self, decision_id: str) -> bytes:
        if not decision_id.startswith("DEC-"):
            raise InvalidArgument("decision_id", "give journal_entry or a decision id like DEC-...")
        subject = f"application/{decision_id.removeprefix('DEC-')}"
        async with self.audit_client() as stub:
            audit: Any = stub
            async for reply in audit.GetSubjectHistory(
                journal_pb2.GetSubjectHistoryRequest(subject=subject), timeout=10
            ):
                if reply.entry.event_type == "score.decided":
                    return bytes(reply.entry.leaf)
        raise NotFound(f"decision {decision_id} is not in the journal (yet)")

    async def LoadModel(
        self, request: scoring_pb2.LoadModelRequest, context: Any
    ) -> scoring_pb2.LoadModelResponse:
        who = require_role(Role.OPERATOR)
        try:
            card = load_scorecard(request.scorecard_json)
        except ModelError as exc:
            raise InvalidArgument("scorecard_json", str(exc)) from None

        async def work(conn: Any) -> scoring_pb2.LoadModelResponse:
            if await self.store.add_model(conn, card):
                await journal_model_load(conn, self.outbox, card.model, card.version, card.sha256)
            return scoring_pb2.LoadModelResponse(
                model=card.model, version=card.version, sha256=card.sha256
            )

        return await once(
            self.store.pool, who.party_id, "LoadModel", request.idempotency_key, request,
            scoring_pb2.LoadModelResponse, work,
        )  # fmt: skip

    async def ListModels(
        self, request: scoring_pb2.ListModelsRequest, context: Any
    ) -> scoring_pb2.ListModelsResponse:
        current_identity()
        page = page_of(request.page_size, request.page_token, (str, str))
        listed, seen = [], set()
        for m, v, h in await self.store.models():  # newest first: the first of a family is in force
            listed.append(scoring_pb2.Model(model=m, version=v, sha256=h, in_force=m not in seen))
            seen.add(m)
        models, token = paged(listed, page, lambda m: (m.model, m.version))
        return scoring_pb2.ListModelsResponse(models=models, next_page_token=token)
