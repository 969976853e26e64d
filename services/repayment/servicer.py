"""``scf.repayment.v1.RepaymentService``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from services.gen.scf.repayment.v1 import repayment_pb2, repayment_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.repayment.calc import bucket_for
from services.repayment.loans import LoanBook
from services.repayment.store import financing
from services.runtime.dates import parse_date
from services.runtime.errors import AWAY, InvalidArgument, NotFound, PermissionDenied, SCFError
from services.runtime.idempotency import once
from services.runtime.identity import Identity, Role, current_identity, require_role
from services.runtime.money import Money, parse_money
from services.runtime.paging import page_of
from services.runtime.proto_enums import enum_number
from services.runtime.watching import JournaledFeed, Snapshot, follow, journal_seq_of

__all__ = ["RepaymentServicer"]


def _m(currency: str, minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount=Money(currency, minor).major(), currency=currency)


def _may_read(who: Identity, loan: Any) -> None:
    if who.role in (Role.AUDITOR, Role.OPERATOR, Role.SERVICE):
        return
    if who.party_id in (loan["subcontractor_id"], loan["buyer_id"]):
        return
    if who.role in (Role.UNDERWRITER, Role.LEASING) and who.organization == loan["bank"]:
        return
    raise PermissionDenied(f"{who.party_id} is not a party to loan {loan['loan_id']}")


class RepaymentServicer(repayment_pb2_grpc.RepaymentServiceServicer):
    def __init__(self, book: LoanBook, feed: JournaledFeed) -> None:
        self.book = book
        self.feed = feed

    async def loan_view(self, loan: Any, conn: Any = None) -> repayment_pb2.Loan:
        """The loan or lease with its balances as of the clock (as of its last
        accrual once settled)."""
        today = self.book.clock.now().date()
        day = today if loan["state"] == "open" else loan["accrued_until"]
        if conn is None:
            async with self.book.pool.acquire() as own:
                standing = (await financing(own, loan)).standing(day, today)
        else:  # inside the caller's transaction: its rentals as it changed them
            standing = (await financing(conn, loan)).standing(day, today)
        owed = (
            standing.principal_minor, standing.interest_minor, standing.penalty_minor,
            standing.fees_minor,
        )  # fmt: skip
        total, due, dpd = standing.total_minor, standing.due_minor, standing.days_past_due
        c = loan["currency"]
        principal, interest, penalty, fees = (_m(c, amount) for amount in owed)
        return repayment_pb2.Loan(
            loan_id=loan["loan_id"],
            kind=loan["kind"],
            subcontractor_id=loan["subcontractor_id"],
            bank=loan["bank"],
            buyer_id=loan["buyer_id"],
            order_id=loan["order_id"],
            principal=_m(c, loan["principal_minor"]),
            rate_bps=loan["rate_bps"],
            penalty_rate_bps=loan["penalty_rate_bps"],
            day_count=loan["day_count"],
            disbursed_on=loan["disbursed_on"].isoformat(),
            due_date=loan["due_date"].isoformat(),
            state=enum_number(repayment_pb2.LoanState, loan["state"]),
            principal_outstanding=principal,
            interest_owed=interest,
            penalty_owed=penalty,
            fees_owed=fees,
            grace_days=loan["grace_days"],
            business_days=loan["business_days"],
            holiday_calendar=loan["holiday_calendar"],
            total_owed=_m(c, total),
            due_now=_m(c, due),
            days_past_due=dpd,
            bucket=bucket_for(dpd),
            as_of=today.isoformat(),
        )

    async def _readable(self, loan_id: str) -> Any:
        loan = await self.book.loan(loan_id)
        _may_read(current_identity(), loan)
        return loan

    async def RecordPayment(
        self, request: repayment_pb2.RecordPaymentRequest, context: Any
    ) -> repayment_pb2.RecordPaymentResponse:
        who = require_role(Role.OPERATOR)
        if not request.loan_id:
            raise InvalidArgument("loan_id", "required")
        if not request.payer:
            raise InvalidArgument("payer", "required")
        amount = parse_money(request.amount.amount, request.amount.currency, "amount")
        value_date = parse_date(request.value_date, "value_date")
        settled: list[str] = []

        async def work(conn: Any) -> repayment_pb2.RecordPaymentResponse:
            payment_id, split, expected, loan, settles = await self.book.record_payment(
                conn, request.loan_id, request.payer, amount.currency, amount.minor,
                value_date, request.bank_reference, request.quote_id,
            )  # fmt: skip
            if settles:
                settled.append(request.loan_id)
            c = amount.currency
            return repayment_pb2.RecordPaymentResponse(
                payment_id=payment_id,
                penalty=_m(c, split.penalty_minor),
                fees=_m(c, split.fees_minor),
                interest=_m(c, split.interest_minor),
                principal=_m(c, split.principal_minor),
                surplus=_m(c, split.surplus_minor),
                expected_payer=expected,
                loan=await self.loan_view(loan, conn),
            )

        # The key makes a retry safe; the bank reference stays a business rule
        # (a second payment with one reference is DUPLICATE_REFERENCE).
        response = await once(
            self.book.pool, who.party_id, "RecordPayment", request.idempotency_key, request,
            repayment_pb2.RecordPaymentResponse, work,
        )  # fmt: skip
        for loan_id in settled:  # committed: orders and lending hear of it (or the sweep tells)
            with contextlib.suppress(*AWAY, SCFError):
                await self.book.announce_settlement(loan_id)
        return response

    async def GetLoan(
        self, request: repayment_pb2.GetLoanRequest, context: Any
    ) -> repayment_pb2.GetLoanResponse:
        return repayment_pb2.GetLoanResponse(
            loan=await self.loan_view(await self._readable(request.loan_id))
        )

    async def WatchLoan(
        self, request: repayment_pb2.WatchLoanRequest, context: Any
    ) -> AsyncIterator[repayment_pb2.WatchLoanResponse]:
        if not request.loan_id:
            raise InvalidArgument("loan_id", "required: the application's id")
        subject = f"loan/{request.loan_id}"

        async def read() -> Snapshot[repayment_pb2.Loan] | None:
            try:
                loan = await self._readable(request.loan_id)
            except NotFound:  # lending disbursed it; repayment opens it in a moment
                return None
            async with self.book.pool.acquire() as conn:
                seq = await journal_seq_of(conn, subject, loan["version"])
                view = await self.loan_view(loan, conn)
            return Snapshot(view, loan["version"], seq, final=loan["state"] == "settled")

        async for s in follow(self.feed, subject, read):
            yield repayment_pb2.WatchLoanResponse(
                loan=s.view, version=s.version, journal_seq=s.journal_seq
            )

    async def GetSchedule(
        self, request: repayment_pb2.GetScheduleRequest, context: Any
    ) -> repayment_pb2.GetScheduleResponse:
        loan = await self._readable(request.loan_id)
        rows = await self.book.pool.fetch(
            "SELECT * FROM schedule_lines WHERE loan_id = $1 ORDER BY number", request.loan_id
        )
        c = loan["currency"]
        return repayment_pb2.GetScheduleResponse(
            lines=[
                repayment_pb2.ScheduleLine(
                    number=r["number"],
                    due=r["due"].isoformat(),
                    principal=_m(c, r["principal"]),
                    interest=_m(c, r["interest"]),
                    total=_m(c, r["principal"] + r["interest"]),
                    paid=_m(c, r["paid"]),
                    waived=r["waived"],
                )
                for r in rows
            ]
        )

    async def GetStatement(
        self, request: repayment_pb2.GetStatementRequest, context: Any
    ) -> repayment_pb2.GetStatementResponse:
        loan = await self._readable(request.loan_id)
        c = loan["currency"]
        entries = await self.book.journaled(request.loan_id)
        lines = [
            repayment_pb2.StatementLine(
                date=loan["disbursed_on"].isoformat(),
                kind="disbursed",
                amount=_m(c, loan["principal_minor"]),
                reference=loan["loan_id"],
                journal_seq=entries.get("opened", 0),
            )
        ]
        payments = await self.book.pool.fetch(
            "SELECT * FROM payments WHERE loan_id = $1 ORDER BY value_date, recorded_micros",
            request.loan_id,
        )
        for p in payments:
            day, a = p["value_date"].isoformat(), p["allocation"]
            seq = entries.get(f"payment_allocated/{p['payment_id']}", 0)
            lines.append(
                repayment_pb2.StatementLine(
                    date=day, kind="payment", amount=_m(c, p["amount_minor"]),
                    reference=p["bank_reference"], journal_seq=seq, party=p["payer"],
                )
            )  # fmt: skip
            for part in ("penalty", "fees", "interest", "principal", "surplus"):
                if a[f"{part}_minor"]:
                    surplus = part == "surplus"
                    lines.append(
                        repayment_pb2.StatementLine(
                            date=day,
                            kind="surplus-to-subcontractor" if surplus else f"allocated-{part}",
                            amount=_m(c, a[f"{part}_minor"]),
                            reference=p["payment_id"],
                            journal_seq=seq,
                            party=loan["subcontractor_id"] if surplus else "",
                        )
                    )
        if loan["state"] == "settled":
            lines.append(
                repayment_pb2.StatementLine(
                    date=lines[-1].date, kind="settled", reference=loan["loan_id"],
                    journal_seq=entries.get("settled", 0),
                )
            )  # fmt: skip
        return repayment_pb2.GetStatementResponse(loan=await self.loan_view(loan), lines=lines)

    async def QuotePayoff(
        self, request: repayment_pb2.QuotePayoffRequest, context: Any
    ) -> repayment_pb2.QuotePayoffResponse:
        loan = await self._readable(request.loan_id)
        valid_until = parse_date(request.valid_until, "valid_until")
        quote_id, amount = await self.book.quote(loan["loan_id"], valid_until)
        return repayment_pb2.QuotePayoffResponse(
            quote_id=quote_id,
            amount=_m(loan["currency"], amount),
            valid_until=valid_until.isoformat(),
        )

    async def ListUnmatched(
        self, request: repayment_pb2.ListUnmatchedRequest, context: Any
    ) -> repayment_pb2.ListUnmatchedResponse:
        require_role(Role.OPERATOR)
        page = page_of(request.page_size, request.page_token, (int,))
        rows, token = page.cut(
            await self.book.pool.fetch(
                "SELECT * FROM unmatched_payments WHERE id > $1 ORDER BY id LIMIT $2",
                page.after[0] if page.after else 0,
                page.fetch(),
            ),
            lambda r: (r["id"],),
        )
        return repayment_pb2.ListUnmatchedResponse(
            next_page_token=token,
            payments=[
                repayment_pb2.UnmatchedPayment(
                    loan_id=r["loan_id"],
                    payer=r["payer"],
                    amount=_m(r["currency"], r["amount_minor"]),
                    value_date=r["value_date"],
                    bank_reference=r["bank_reference"],
                    reason=r["reason"],
                )
                for r in rows
            ],
        )
