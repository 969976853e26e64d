"""How the lending service is assembled."""

from __future__ import annotations

import asyncio

from services.gen.scf.leasing.v1 import leasing_pb2_grpc
from services.gen.scf.lending.v1 import lending_pb2_grpc
from services.gen.scf.underwriting.v1 import underwriting_pb2_grpc
from services.lending.flow import FlowEngine
from services.lending.leasing import LeasingServicer
from services.lending.servicer import LendingServicer
from services.lending.store import Transitions
from services.lending.underwriting import UnderwritingServicer
from services.runtime.service import ServiceContext, ServiceSpec


async def setup(ctx: ServiceContext) -> None:
    engine = FlowEngine(
        ctx.pool, ctx.messenger, ctx.js, Transitions(ctx.outbox), ctx.clock, ctx.subjects
    )
    ctx.server.add(
        lending_pb2_grpc.add_LendingServiceServicer_to_server,
        LendingServicer(ctx.pool, ctx.messenger, engine, ctx.clock, ctx.subjects, ctx.feed),
        "scf.lending.v1.LendingService",
    )
    ctx.server.add(
        underwriting_pb2_grpc.add_UnderwritingServiceServicer_to_server,
        UnderwritingServicer(ctx.pool, engine, ctx.clock),
        "scf.underwriting.v1.UnderwritingService",
    )
    ctx.server.add(
        leasing_pb2_grpc.add_LeasingServiceServicer_to_server,
        LeasingServicer(ctx.pool, ctx.messenger, engine, ctx.clock, ctx.subjects, ctx.feed),
        "scf.leasing.v1.LeasingService",
    )
    ctx.on_clock_move.append(engine.wake.set)  # offers may have lapsed
    # Settlements: every instance takes its share. The steps: the leader.
    ctx.tasks.append(asyncio.create_task(engine.restore_facilities(), name="lending-settled"))
    ctx.singletons.append(engine.run_steps)


SPEC = ServiceSpec(name="lending", package="services.lending", setup=setup)
