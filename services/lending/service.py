"""How the lending service is assembled."""

from __future__ import annotations

import asyncio

from services.gen.scf.lending.v1 import lending_pb2_grpc
from services.gen.scf.underwriting.v1 import underwriting_pb2_grpc
from services.lending.flow import FlowEngine
from services.lending.servicer import LendingServicer
from services.lending.store import Transitions
from services.lending.underwriting import UnderwritingServicer
from services.runtime.service import ServiceContext, ServiceSpec


async def setup(ctx: ServiceContext) -> None:
    prefix = ctx.settings.nats_prefix
    engine = FlowEngine(ctx.pool, ctx.nc, ctx.js, Transitions(ctx.outbox), ctx.clock, prefix)
    ctx.server.add(
        lending_pb2_grpc.add_LendingServiceServicer_to_server,
        LendingServicer(ctx.pool, ctx.nc, engine, ctx.clock, prefix),
        "scf.lending.v1.LendingService",
    )
    ctx.server.add(
        underwriting_pb2_grpc.add_UnderwritingServiceServicer_to_server,
        UnderwritingServicer(ctx.pool, engine, ctx.clock),
        "scf.underwriting.v1.UnderwritingService",
    )
    ctx.tasks.append(asyncio.create_task(engine.run(), name="lending-flow"))


SPEC = ServiceSpec(name="lending", package="services.lending", setup=setup)
