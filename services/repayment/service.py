"""How the repayment service is assembled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.aio.msg import Msg

from services.gen.scf.repayment.v1 import repayment_pb2_grpc
from services.lending.flow import lending_stream
from services.repayment.leases import lease_option_subject
from services.repayment.loans import LoanBook
from services.repayment.servicer import RepaymentServicer
from services.runtime.bus import ack, durable_subscription, ensure_stream, fetch
from services.runtime.errors import SCFError
from services.runtime.service import ServiceContext, ServiceSpec
from services.runtime.waiting import pause

log = logging.getLogger(__name__)


async def open_loans(ctx: ServiceContext, book: LoanBook) -> None:
    """Every disbursement from lending opens a loan, exactly once (durable consumer)."""
    stream = lending_stream(ctx.settings.nats_prefix)
    await ensure_stream(ctx.js, stream)
    sub = await durable_subscription(
        ctx.js, stream.name, "repayment_disbursed", f"{ctx.settings.nats_prefix}.lending.disbursed"
    )
    while True:
        for msg in await fetch(sub, 50, 1.0):
            await book.open(json.loads(msg.data))
            await ack(msg)


async def sweep(book: LoanBook) -> None:
    while True:
        try:
            await book.sweep()
        except Exception:  # retried on the next pass; a failure must not stop the sweeper
            log.exception("repayment sweep failed")
        await pause(1.0)


async def setup(ctx: ServiceContext) -> None:
    prefix = ctx.settings.nats_prefix
    book = LoanBook(ctx.pool, ctx.nc, ctx.js, ctx.outbox, ctx.clock, prefix)
    ctx.server.add(
        repayment_pb2_grpc.add_RepaymentServiceServicer_to_server,
        RepaymentServicer(book),
        "scf.repayment.v1.RepaymentService",
    )

    async def history(msg: Msg) -> None:
        with contextlib.suppress(Exception):
            await msg.respond(json.dumps(await book.history(msg.data.decode())).encode())

    await ctx.nc.subscribe(f"{prefix}.repayment.history", queue="repayment", cb=history)

    async def lease_option(msg: Msg) -> None:
        """Lending's request to apply a lessee's end-of-lease choice (idempotent)."""
        try:
            body = json.loads(msg.data)
            settled = await book.leases.exercise_option(
                str(body["lease_id"]), str(body["option"]), str(body.get("quote_id", "")),
                int(body.get("renewal_periods", 0)),
            )  # fmt: skip
            reply: dict[str, Any] = {"ok": True, "settled": settled}
        except SCFError as exc:
            field = getattr(exc, "field", "")
            reply = {"ok": False, "code": exc.code.name, "reason": exc.message, "field": field}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "code": "INVALID_ARGUMENT", "reason": f"malformed: {exc!r}"}
        await msg.respond(json.dumps(reply).encode())
        if reply.get("settled"):
            with contextlib.suppress(Exception):  # the sweeper announces it otherwise
                await book.announce_settlement(str(body["lease_id"]))

    await ctx.nc.subscribe(lease_option_subject(prefix), queue="repayment", cb=lease_option)
    ctx.tasks.append(asyncio.create_task(open_loans(ctx, book), name="repayment-open-loans"))
    ctx.tasks.append(asyncio.create_task(sweep(book), name="repayment-sweep"))


SPEC = ServiceSpec(name="repayment", package="services.repayment", setup=setup)
