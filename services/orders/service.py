"""How the orders service is assembled."""

from __future__ import annotations

from services.gen.scf.orders.v1 import orders_pb2_grpc
from services.orders.facts import FactsResponder
from services.orders.pledges import PledgeHandler
from services.orders.servicer import OrdersServicer
from services.runtime.certs import load_party
from services.runtime.journal_client import audit_client
from services.runtime.service import ServiceContext, ServiceSpec


async def setup(ctx: ServiceContext) -> None:
    journal = audit_client(
        ctx.settings.endpoint("journal").grpc_addr, load_party(ctx.settings.certs_dir, "orders")
    )
    ctx.server.add(
        orders_pb2_grpc.add_OrdersServiceServicer_to_server,
        OrdersServicer(ctx.pool, ctx.outbox, ctx.clock, journal, ctx.feed),
        "scf.orders.v1.OrdersService",
    )
    await PledgeHandler(ctx.pool, ctx.outbox, ctx.clock).subscribe(ctx.messenger, ctx.subjects)
    await FactsResponder(ctx.pool).subscribe(ctx.messenger, ctx.subjects)


SPEC = ServiceSpec(name="orders", package="services.orders", setup=setup)
