"""How the repayment service is assembled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from services.contracts.values import enum_name
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.repayment.v1 import repayment_pb2_grpc
from services.repayment.contract import ContractMismatch
from services.repayment.loans import LoanBook
from services.repayment.servicer import RepaymentServicer
from services.runtime.bus import bind
from services.runtime.service import ServiceContext, ServiceSpec
from services.runtime.waiting import wait_event

log = logging.getLogger(__name__)


def _fields(event: bus_pb2.Disbursed) -> dict[str, Any]:
    fields = {f.name: getattr(event, f.name) for f in event.DESCRIPTOR.fields}
    return fields | {"kind": enum_name(bus_pb2.FinancingKind, event.kind)}


async def open_loans(ctx: ServiceContext, book: LoanBook) -> None:
    """Every disbursement from lending opens a loan, exactly once (durable consumer).
    Only a disbursement lending signed, carrying the contract its terms are, is
    booked; one that cannot be is set aside with an alarm, and the rest flow on."""
    sub = await bind(ctx.js, ctx.subjects.repayment_disbursed)

    async def book_it(event: bus_pb2.Disbursed) -> None:
        await book.open(_fields(event))

    await ctx.messenger.consume_events(
        sub, ctx.subjects.disbursed, bus_pb2.Disbursed, producers=("lending",), handle=book_it,
        describe=lambda event: f"disbursement {event.application_id}", quiet=(ContractMismatch,),
    )  # fmt: skip


#: Loans fall due as the date passes: the sweep looks at once when the clock
#: jumps (demo and test modes) and otherwise this often.
SWEEP_S = 30.0


async def sweep(book: LoanBook, moved: asyncio.Event) -> None:
    while True:
        moved.clear()
        try:
            await book.sweep()
        except Exception:  # retried on the next pass; a failure must not stop the sweeper
            log.exception("repayment sweep failed")
        await wait_event(moved, SWEEP_S)


async def setup(ctx: ServiceContext) -> None:
    book = LoanBook(ctx.pool, ctx.messenger, ctx.js, ctx.outbox, ctx.clock, ctx.subjects)
    ctx.server.add(
        repayment_pb2_grpc.add_RepaymentServiceServicer_to_server,
        RepaymentServicer(book, ctx.feed),
        "scf.repayment.v1.RepaymentService",
    )

    async def history(
        query: bus_pb2.RepaymentHistoryQuery, signer: str
    ) -> bus_pb2.RepaymentHistory:
        record = await book.history(query.subcontractor_id)
        return bus_pb2.RepaymentHistory(
            repaid_on_time=record["repaid_on_time"],
            max_days_past_due=record["max_days_past_due"],
            defaults=record["defaults"],
        )

    await ctx.messenger.serve(
        ctx.subjects.repayment_history, bus_pb2.RepaymentHistoryQuery, bus_pb2.RepaymentHistory,
        history, senders=("scoring",), queue="repayment",
    )  # fmt: skip

    async def lease_option(
        command: bus_pb2.LeaseOptionCommand, signer: str
    ) -> bus_pb2.LeaseOptionResult:
        """Lending's request to apply a lessee's end-of-lease choice (idempotent)."""
        option = enum_name(bus_pb2.LeaseOption, command.option)
        settled = await book.leases.exercise_option(
            command.lease_id, option, command.quote_id, command.renewal_periods
        )
        if settled:
            with contextlib.suppress(Exception):  # the sweeper announces it otherwise
                await book.announce_settlement(command.lease_id)
        return bus_pb2.LeaseOptionResult(settled=settled)

    await ctx.messenger.serve(
        ctx.subjects.lease_option, bus_pb2.LeaseOptionCommand, bus_pb2.LeaseOptionResult,
        lease_option, senders=("lending",), queue="repayment",
    )  # fmt: skip
    ctx.tasks.append(asyncio.create_task(open_loans(ctx, book), name="repayment-open-loans"))
    moved = asyncio.Event()
    ctx.on_clock_move.append(moved.set)
    ctx.singletons.append(lambda: sweep(book, moved))  # one sweeper: the leader


SPEC = ServiceSpec(name="repayment", package="services.repayment", setup=setup)
