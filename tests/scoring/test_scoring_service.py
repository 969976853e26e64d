"""Scoring over real NATS, PostgreSQL and gRPC: decisions, explanations, recomputation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

import grpc
import pytest

from services.contracts.subjects import Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.orders.v1 import orders_pb2
from services.gen.scf.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from services.repayment.service import SPEC as REPAYMENT
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.scoring.service import SPEC as SCORING
from tests.journal.helpers import wait_on_platform
from tests.orders.helpers import OrdersEnv, orders_env, register_request
from tests.support import ask, messenger_as, running

pytestmark = pytest.mark.integration

MODEL = Path(__file__).resolve().parents[2] / "services/scoring/models/scf-expert-1.0.0.json"


async def _ask(env: OrdersEnv, **fields: object) -> bus_pb2.ScoreResult:
    """As lending asks: signed; a refusal comes back in ``error``."""
    messenger = messenger_as(env.settings, env.nc, "lending")
    request = bus_pb2.ScoreRequest(**fields)  # type: ignore[arg-type]
    subject = Subjects(env.settings.nats_prefix).score
    return await ask(messenger, subject, request, bus_pb2.ScoreResult, "scoring")  # type: ignore[no-any-return]


async def _journal_events(env: OrdersEnv, settings: Settings) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        schema = settings.endpoint("journal").schema
        rows = await conn.fetch(f'SELECT event_type FROM "{schema}".entries ORDER BY seq')
        return [r["event_type"] for r in rows]
    finally:
        await conn.close()


async def test_decide_explain_recompute(settings: Settings) -> None:
    async with (
        orders_env(settings) as env,
        running(SCORING, settings),
        contextlib.AsyncExitStack() as later,
    ):
        sub, buyer = env.stub("acme-builders"), env.stub("citybuild")
        oid = (await sub.RegisterOrder(register_request("PO-S1"))).order.order_id
        refused = await _ask(env, application_id="APP-0", order_id=oid, bank="bank-north")
        assert (
            refused.HasField("error")
            and refused.error.code == "FAILED_PRECONDITION"
            and "registered" in refused.error.message
        )
        unknown = await _ask(env, application_id="APP-X", order_id="ORD-NONE", bank="bank-north")
        assert unknown.HasField("error") and unknown.error.code == "NOT_FOUND"
        await buyer.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key="c"))

        # Repayment away: no decision without the borrower's record, and none kept.
        away = await _ask(env, application_id="APP-1", order_id=oid, bank="bank-north")
        assert away.HasField("error") and away.error.code == "UNAVAILABLE" and not away.decision_id
        await later.enter_async_context(running(REPAYMENT, settings))

        first = await _ask(
            env, application_id="APP-1", order_id=oid, bank="bank-north",
            facility_available_minor=250_000_000,
        )  # fmt: skip
        assert not first.HasField("error"), first.error.message
        decision = json.loads(first.decision_json)
        assert decision["recommendation"] == "refer" and decision["grade"] == "C"
        assert decision["max_amount_minor"] == 250_000_000  # capped by the facility
        again = await _ask(env, application_id="APP-1", order_id=oid, bank="bank-north")
        assert again == first

        async def journaled() -> bool:
            return (await _journal_events(env, settings)).count("score.decided") == 1

        await wait_on_platform(settings, journaled, "the decision journaled")
        events = await _journal_events(env, settings)
        assert (
            events.count("score.decided") == 1 and events.count("scoring.model_loaded") == 2
        )  # order and lease scorecards

        addr = settings.endpoint("scoring").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "uw-alice")) as channel:
            scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
            explained = await scoring.Explain(
                scoring_pb2.ExplainRequest(decision_id=first.decision_id)
            )
            points = {c.name: c.points for c in explained.characteristics}
            assert (
                explained.base_points + sum(points.values()) == explained.score == decision["score"]
            )
            assert points["buyer_rating"] == 70 and explained.reasons
            recomputed = None
            for _ in range(100):  # until the entry is readable from the journal
                try:
                    recomputed = await scoring.Recompute(
                        scoring_pb2.RecomputeRequest(decision_id=first.decision_id)
                    )
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND
                    await asyncio.sleep(0.1)
            assert recomputed is not None and recomputed.identical
            assert json.loads(recomputed.recomputed_json)["score"] == decision["score"]

        explain = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "score", "explain", first.decision_id,
            "--as", "uw-alice", env={**os.environ, **settings.to_env(), "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await explain.communicate()
        assert explain.returncode == 0, stderr.decode()
        assert "the buyer's credit rating" in stdout.decode() and "refer" in stdout.decode()
        as_json = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "score", "explain", first.decision_id,
            "--as", "uw-alice", "--json", env={**os.environ, **settings.to_env()},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await as_json.communicate()
        assert as_json.returncode == 0, stderr.decode()
        explained = json.loads(stdout)
        assert explained["decision_id"] == first.decision_id
        assert explained["recommendation"] == "refer" and explained["characteristics"]

        async with client_channel(addr, load_party(settings.certs_dir, "uw-carol")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await scoring_pb2_grpc.ScoringServiceStub(channel).Explain(
                    scoring_pb2.ExplainRequest(decision_id=first.decision_id)
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_model_loading(settings: Settings) -> None:
    async with (
        orders_env(settings) as env,
        running(SCORING, settings),
        running(REPAYMENT, settings),
    ):
        addr = settings.endpoint("scoring").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "operator")) as channel:
            scoring = scoring_pb2_grpc.ScoringServiceStub(channel)
            body = json.loads(MODEL.read_text())
            body["grades"][1]["from"] = 630  # leaves a gap between grades B and C
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await scoring.LoadModel(
                    scoring_pb2.LoadModelRequest(
                        scorecard_json=json.dumps(body), idempotency_key="m0"
                    )
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "gap" in (
                info.value.details() or ""
            )
            models = await scoring.ListModels(scoring_pb2.ListModelsRequest())
            assert sorted((m.model, m.version, m.in_force) for m in models.models) == [
                ("scf-expert", "1.0.0", True),
                ("scf-lease", "1.0.0", True),
            ]

            body = json.loads(MODEL.read_text())
            body["version"] = "1.1.0"
            body["characteristics"][0]["bins"][1]["points"] = 75
            loaded = await scoring.LoadModel(
                scoring_pb2.LoadModelRequest(scorecard_json=json.dumps(body), idempotency_key="m1")
            )
            assert loaded.version == "1.1.0"
            models = await scoring.ListModels(scoring_pb2.ListModelsRequest())
            assert [(m.model, m.version, m.in_force) for m in models.models] == [
                ("scf-expert", "1.0.0", False),
                ("scf-expert", "1.1.0", True),
                ("scf-lease", "1.0.0", True),  # the other family keeps its version in force
            ]
            first = await scoring.ListModels(scoring_pb2.ListModelsRequest(page_size=2))
            rest = await scoring.ListModels(
                scoring_pb2.ListModelsRequest(page_size=2, page_token=first.next_page_token)
            )
            assert [*first.models, *rest.models] == list(models.models)
            assert len(first.models) == 2 and rest.next_page_token == ""

        sub, buyer = env.stub("acme-builders"), env.stub("citybuild")
        oid = (await sub.RegisterOrder(register_request("PO-S2"))).order.order_id
        await buyer.ConfirmOrder(orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key="c"))
        result = await _ask(env, application_id="APP-2", order_id=oid, bank="bank-north")
        assert json.loads(result.decision_json)["version"] == "1.1.0"
        assert json.loads(result.decision_json)["points"]["buyer_rating"] == 75

        async def loaded_journaled() -> bool:
            return (await _journal_events(env, settings)).count(
                "scoring.model_loaded"
            ) == 3  # two bundled, one loaded here

        await wait_on_platform(settings, loaded_journaled, "the model load journaled")

        async with client_channel(addr, load_party(settings.certs_dir, "uw-alice")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await scoring_pb2_grpc.ScoringServiceStub(channel).LoadModel(
                    scoring_pb2.LoadModelRequest(
                        scorecard_json=MODEL.read_text(), idempotency_key="u"
                    )
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
