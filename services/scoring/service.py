"""How the scoring service is assembled."""

from __future__ import annotations

from importlib import resources

from services.gen.scf.scoring.v1 import scoring_pb2_grpc
from services.runtime.certs import load_party
from services.runtime.journal_client import audit_client
from services.runtime.service import ServiceContext, ServiceSpec
from services.scoring.decisions import ScoreHandler
from services.scoring.scorecard import load_scorecard
from services.scoring.servicer import ScoringServicer, journal_model_load
from services.scoring.storage import ScoringStore


async def load_bundled_models(ctx: ServiceContext, store: ScoringStore) -> None:
    """The scorecards shipped with the service, each loaded (and journaled) once."""
    files = sorted(
        (
            f
            for f in resources.files("services.scoring").joinpath("models").iterdir()
            if f.name.endswith(".json")
        ),
        key=lambda f: f.name,
    )
    for f in files:
        card = load_scorecard(f.read_text())
        async with ctx.pool.acquire() as conn, conn.transaction():
            if await store.add_model(conn, card):
                await journal_model_load(conn, ctx.outbox, card.model, card.version, card.sha256)


async def setup(ctx: ServiceContext) -> None:
    store = ScoringStore(ctx.pool)
    await load_bundled_models(ctx, store)
    journal = audit_client(
        ctx.settings.endpoint("journal").grpc_addr, load_party(ctx.settings.certs_dir, "scoring")
    )
    ctx.server.add(
        scoring_pb2_grpc.add_ScoringServiceServicer_to_server,
        ScoringServicer(store, ctx.outbox, journal),
        "scf.scoring.v1.ScoringService",
    )
    await ScoreHandler(ctx.pool, ctx.messenger, ctx.outbox, ctx.clock, ctx.subjects).subscribe()


SPEC = ServiceSpec(name="scoring", package="services.scoring", setup=setup)
