"""The demo's repayment: the buyer pays at the due date; a second loan runs 45 days overdue."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table

from services.cli.clock_cmds import advance
from services.cli.waits import application_where, loan_where, order_where
from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.gen.scf.repayment.v1 import repayment_pb2, repayment_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.proto_enums import word_of


async def _loan(stub: Any, loan_id: str) -> Any:
    """The loan once repayment has opened it from lending's event."""
    return await loan_where(stub, loan_id, lambda _loan: True, f"loan {loan_id} opened")


def statement_table(reply: Any) -> Table:
    table = Table("date", "what", "amount", "reference", title=f"statement of {reply.loan.loan_id}")
    for line in reply.lines:
        amount = f"{line.amount.amount} {line.amount.currency}" if line.amount.currency else ""
        table.add_row(line.date, line.kind, amount, line.reference)
    return table


async def repay(settings: Settings, out: Console, first_loan: str, second_loan: str) -> int:
    addr = settings.endpoint("repayment").grpc_addr
    async with client_channel(addr, load_party(settings.certs_dir, "operator")) as channel:
        repayment = repayment_pb2_grpc.RepaymentServiceStub(channel)
        loan = await _loan(repayment, first_loan)
        await _loan(repayment, second_loan)
        today = dt.date.fromisoformat(loan.as_of)
        due = dt.date.fromisoformat(loan.due_date)
        out.rule("8. The due date comes: the platform clock moves for every service at once")
        moved = await advance(settings, (due - today).days)
        out.print(f"platform clock: {moved.now[:10]}")
        paid = await repayment.RecordPayment(
            repayment_pb2.RecordPaymentRequest(
                loan_id=first_loan,
                payer="citybuild",
                amount=money_pb2.Money(amount="4000000.00", currency="CNY"),
                value_date=due.isoformat(),
                bank_reference="SUPV-2027-0001",
                idempotency_key="SUPV-2027-0001",
            ),
            timeout=10,
        )
        out.print(
            f"citybuild pays 4,000,000.00 CNY into the supervised account: interest"
            f" {paid.interest.amount}, principal {paid.principal.amount}, to acme-builders"
            f" {paid.surplus.amount};"
            f" the loan is {word_of(repayment_pb2.LoanState, paid.loan.state)}"
        )
        out.print(
            statement_table(
                await repayment.GetStatement(repayment_pb2.GetStatementRequest(loan_id=first_loan))
            )
        )
        out.rule("9. A second loan runs 45 days past due, then is paid off with penalty interest")
        second = await _loan(repayment, second_loan)
        second_due = dt.date.fromisoformat(second.due_date)
        now = dt.date.fromisoformat(moved.now[:10])
        moved = await advance(settings, (second_due - now).days + second.grace_days + 45)
        second = await loan_where(
            repayment, second_loan, lambda loan: loan.bucket == "31-60", "45 days past due"
        )
        out.print(
            f"{second.days_past_due} days past due (bucket {second.bucket}): principal"
            f" {second.principal_outstanding.amount}, interest {second.interest_owed.amount},"
            f" penalty {second.penalty_owed.amount} at {second.penalty_rate_bps} bp"
        )
        today = dt.date.fromisoformat(moved.now[:10])
        quote = await repayment.QuotePayoff(
            repayment_pb2.QuotePayoffRequest(loan_id=second_loan, valid_until=today.isoformat())
        )
        paid = await repayment.RecordPayment(
            repayment_pb2.RecordPaymentRequest(
                loan_id=second_loan,
                payer="acme-builders",
                amount=quote.amount,
                value_date=today.isoformat(),
                bank_reference="SUPV-2027-0002",
                quote_id=quote.quote_id,
                idempotency_key="SUPV-2027-0002",
            )
        )
        out.print(
            f"payoff quote {quote.amount.amount} CNY paid: penalty {paid.penalty.amount};"
            f" loan {word_of(repayment_pb2.LoanState, paid.loan.state)}"
        )
        out.print(
            statement_table(
                await repayment.GetStatement(repayment_pb2.GetStatementRequest(loan_id=second_loan))
            )
        )
    await _show_settled(settings, out, (first_loan, second_loan))
    return 0


async def _show_settled(settings: Settings, out: Console, loans: tuple[str, ...]) -> None:
    tls = load_party(settings.certs_dir, "acme-builders")
    async with (
        client_channel(settings.endpoint("orders").grpc_addr, tls) as orders_ch,
        client_channel(settings.endpoint("lending").grpc_addr, tls) as lending_ch,
    ):
        orders = orders_pb2_grpc.OrdersServiceStub(orders_ch)
        lending = lending_pb2_grpc.LendingServiceStub(lending_ch)
        # Settlement reaches orders and lending by their own events: watch both.
        settled = []
        for loan_id in loans:
            app = await application_where(
                lending, loan_id, lambda a: a.facility_restored, f"{loan_id}'s facility restored"
            )
            order = await order_where(
                orders, app.order_id, lambda o: o.state == orders_pb2.ORDER_STATE_SETTLED,
                f"order {app.order_id} settled",
            )  # fmt: skip
            settled.append(order.order.order_id)
        facility = (await lending.ListFacilities(lending_pb2.ListFacilitiesRequest())).facilities[0]
    out.print(
        f"orders settled: {', '.join(settled)};"
        f" facility drawn {facility.drawn.amount}, available {facility.available.amount}"
    )
