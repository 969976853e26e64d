"""Loans: opened by lending's disbursement, paid through the supervised account."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from fractions import Fraction
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from services.contracts.subjects import OrderVerb, Subjects
from services.contracts.values import BUCKETS, lease_option_value
from services.gen.scf.bus.v1 import bus_pb2
from services.journal import decode_statement
from services.repayment.calc import Allocation, bullet_schedule
from services.repayment.contract import ContractMismatch, signed_terms
from services.repayment.domain import Loan
from services.repayment.leases import LeaseBook
from services.repayment.store import LoanJournal, financing, quote
from services.runtime.clock import Clock
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SCFError,
    Unavailable,
)
from services.runtime.journal_client import Outbox
from services.runtime.messaging import Messenger

__all__ = ["LoanBook"]

log = logging.getLogger(__name__)


class LoanBook:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        messenger: Messenger,
        js: JetStreamContext,
        outbox: Outbox,
        clock: Clock,
        subjects: Subjects,
    ) -> None:
        self.pool = pool
        self.messenger = messenger
        self.js = js
        self.outbox = outbox
        self.clock = clock
        self.subjects = subjects
        self.journal = LoanJournal(outbox).add
        self.leases = LeaseBook(pool, clock, LoanJournal(outbox))

    async def open(self, event: dict[str, Any]) -> bool:
        """Open the loan of a disbursement; False when it is open already."""
        if event.get("kind") == "lease":
            return await self.leases.open(event)
        loan_id = event["application_id"]
        disbursed = dt.datetime.fromtimestamp(event["disbursed_micros"] / 1_000_000, dt.UTC).date()
        terms = signed_terms(event)  # what every party signed is what is charged
        assert terms.maturity is not None
        due = terms.maturity
        if due <= disbursed:
            raise ContractMismatch(f"the contract matures on {due}, not after {disbursed}")
        principal, rate = terms.principal_minor, terms.rate_bps
        lines = bullet_schedule(principal, rate, disbursed, due, terms.day_count)
        fee = round(Fraction(principal * terms.arrangement_fee_bps, 10_000))
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO loans (loan_id, subcontractor_id, bank, buyer_id, order_id,"
                " facility_id, currency, principal_minor, rate_bps, penalty_rate_bps, day_count,"
                " disbursed_on, due_date, accrued_until, principal_out, created_micros, fees_owed,"
                " grace_days, late_fee_minor, business_days, holiday_calendar) VALUES ($1, $2,"
                " $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $12, $8, $14, $15, $16, $17,"
                " $18, $19)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                loan_id,
                event["subcontractor_id"],
                event["bank"],
                event["buyer_id"],
                event["order_id"],
                event["facility_id"],
                event["currency"],
                principal,
                rate,
                terms.penalty_rate_bps,
                terms.day_count,
                disbursed,
                due,
                self.clock.now_micros(),
                fee,
                terms.grace_days,
                terms.late_fee_minor,
                terms.business_days.value,
                terms.holiday_calendar,
            )
            if not inserted:
                return False
            await conn.executemany(
                "INSERT INTO schedule_lines (loan_id, number, due, principal, interest)"
                " VALUES ($1, $2, $3, $4, $5)",
                [
                    (loan_id, ln.number, ln.due, ln.principal_minor, ln.interest_minor)
                    for ln in lines
                ],
            )
            await self.journal(
                conn,
                loan_id,
                "opened",
                1,
                {
                    "principal_minor": principal,
                    "currency": event["currency"],
                    "rate_bps": rate,
                    "penalty_rate_bps": terms.penalty_rate_bps,
                    "day_count": terms.day_count,
                    "arrangement_fee_minor": fee,
                    "grace_days": terms.grace_days,
                    "late_fee_minor": terms.late_fee_minor,
                    "contract_sha256": bytes(event["contract_sha256"]).hex(),
                    "disbursed_on": disbursed.isoformat(),
                    "due_date": due.isoformat(),
                    "schedule": [
                        {
                            "due": ln.due.isoformat(),
                            "principal_minor": ln.principal_minor,
                            "interest_minor": ln.interest_minor,
                        }
                        for ln in lines
                    ],
                },
            )
        return True

    async def journaled(self, loan_id: str) -> dict[str, int]:
        """The journal sequence of each confirmed entry of the loan, by what it records:
        "opened", "settled", and "payment_allocated/<payment id>"."""
        rows = await self.pool.fetch(
            "SELECT statement, journal_seq FROM outbox WHERE subject = $1"
            " AND journal_seq IS NOT NULL",
            f"loan/{loan_id}",
        )
        found: dict[str, int] = {}
        for row in rows:
            st = decode_statement(bytes(row["statement"]))
            event = st.event_type.removeprefix("loan.")
            if event == "payment_allocated":
                event = f"{event}/{json.loads(st.payload)['payment_id']}"
            found[event] = row["journal_seq"]
        return found

    async def loan(self, loan_id: str) -> Any:
        row = await self.pool.fetchrow("SELECT * FROM loans WHERE loan_id = $1", loan_id)
        if row is None:
            raise NotFound(f"no loan {loan_id!r}")
        return row

    async def record_payment(
        self,
        conn: Any,
        loan_id: str,
        payer: str,
        currency: str,
        amount_minor: int,
        value_date: dt.date,
        reference: str,
        quote_id: str,
    ) -> tuple[str, Allocation, bool, Any, bool]:
        """Within the caller's transaction: allocate one payment, or refuse it. Once it
        commits, a payment that settled the financing is announced (announce_settlement)."""
        today = self.clock.now().date()
        if value_date > today:
            raise InvalidArgument("value_date", f"{value_date} is in the future")
        if not reference:
            raise InvalidArgument("bank_reference", "required")
        # Payments with one bank reference at once queue here: the later ones
        # are told it is a duplicate instead of tripping the unique index.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"payment\x1f{reference}"
        )
        if await conn.fetchval("SELECT 1 FROM payments WHERE bank_reference = $1", reference):
            raise AlreadyExists(
                f"bank reference {reference!r} was recorded already: a duplicate",
                reason="DUPLICATE_REFERENCE",
            )
        loan: Any = await conn.fetchrow(
            "SELECT * FROM loans WHERE loan_id = $1 FOR UPDATE", loan_id
        )
        problem: NotFound | FailedPrecondition | None = None
        if loan is None:
            problem = NotFound(f"no loan {loan_id!r}; the payment is kept as unmatched")
        elif loan["state"] != "open":
            problem = FailedPrecondition(
                f"loan {loan_id} is {loan['state']}; the payment is kept as unmatched"
            )
        elif currency != loan["currency"]:
            raise InvalidArgument("amount.currency", f"loan {loan_id} is in {loan['currency']}")
        if problem is not None:
            # On a connection of its own: kept although this transaction fails.
            await self._unmatched(
                loan_id, payer, currency, amount_minor, value_date, reference, problem.message
            )
            raise problem
        owed = await financing(conn, loan)
        by_quote = await quote(conn, loan_id, quote_id) if quote_id else None
        effect = owed.apply_payment(amount_minor, value_date, by_quote)
        split, settled = effect.split, effect.settled
        if effect.rentals:
            await conn.executemany(
                "UPDATE schedule_lines SET paid = $3, interest = $4, late_fee_charged = $5"
                " WHERE loan_id = $1 AND number = $2",
                [
                    (loan_id, r.number, r.paid_minor, r.interest_minor, r.late_fee_charged)
                    for r in effect.rentals
                ],
            )
        version = loan["version"] + 1
        columns = {
            **effect.changes, "state": "settled" if settled else "open", "version": version,
        }  # fmt: skip
        await conn.execute(
            "UPDATE loans SET "
            + ", ".join(f"{c} = ${n}" for n, c in enumerate(columns, start=2))
            + " WHERE loan_id = $1",
            loan_id,
            *columns.values(),
        )
        payment_id = f"PAY-{uuid.uuid4().hex[:12].upper()}"
        expected = payer == owed.expected_payer
        allocation = split.__dict__ | {"expected_payer": expected}
        await conn.execute(
            "INSERT INTO payments (payment_id, loan_id, payer, amount_minor, value_date,"
            " bank_reference, allocation, recorded_micros)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            payment_id,
            loan_id,
            payer,
            amount_minor,
            value_date,
            reference,
            allocation,
            self.clock.now_micros(),
        )
        await self.journal(
            conn,
            loan_id,
            "payment_allocated",
            version,
            {
                "payment_id": payment_id,
                "payer": payer,
                "amount_minor": amount_minor,
                "value_date": value_date.isoformat(),
                "bank_reference": reference,
                "quote_id": quote_id,
                "allocation": allocation,
                "principal_out": effect.changes["principal_out"],
                # A correction, journaled with the payment that calls for it.
                **(
                    {"late_fee_reversed_minor": effect.late_fee_reversed_minor}
                    if effect.late_fee_reversed_minor
                    else {}
                ),
                **(
                    {"late_fee_charged_minor": effect.late_fee_charged_minor}
                    if effect.late_fee_charged_minor
                    else {}
                ),
            },
        )
        if settled:
            await self.journal(
                conn, loan_id, "settled", version + 1, {"settled_on": value_date.isoformat()}
            )
            await conn.execute(
                "UPDATE loans SET version = $2 WHERE loan_id = $1", loan_id, version + 1
            )
        row: Any = await conn.fetchrow("SELECT * FROM loans WHERE loan_id = $1", loan_id)
        return payment_id, split, expected, row, settled

    async def _unmatched(
        self,
        loan_id: str,
        payer: str,
        currency: str,
        amount: int,
        value_date: dt.date,
        reference: str,
        reason: str,
    ) -> None:
        await self.pool.execute(
            "INSERT INTO unmatched_payments (loan_id, payer, amount_minor, currency, value_date,"
            " bank_reference, reason, recorded_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (bank_reference) DO NOTHING",
            loan_id,
            payer,
            amount,
            currency,
            value_date.isoformat(),
            reference,
            reason,
            self.clock.now_micros(),
        )

    async def quote(self, loan_id: str, valid_until: dt.date) -> tuple[str, int]:
        loan = await self.loan(loan_id)
        if loan["state"] != "open":
            raise FailedPrecondition(f"loan {loan_id} is {loan['state']}")
        if valid_until < self.clock.now().date():
            raise InvalidArgument("valid_until", "must not be in the past")
        async with self.pool.acquire() as conn:
            amount = (await financing(conn, loan)).quote_amount(valid_until)
        quote_id = f"QTE-{uuid.uuid4().hex[:12].upper()}"
        await self.pool.execute(
            "INSERT INTO quotes (quote_id, loan_id, amount_minor, valid_until, created_micros)"
            " VALUES ($1, $2, $3, $4, $5)",
            quote_id,
            loan_id,
            amount,
            valid_until,
            self.clock.now_micros(),
        )
        return quote_id, amount

    async def announce_settlement(self, loan_id: str) -> None:
        """Orders marks the order settled; lending restores the facility. Retried until done."""
        loan = await self.loan(loan_id)
        if loan["kind"] == "loan":  # a lease has no order behind it
            command = bus_pb2.PledgeCommand(order_id=loan["order_id"], application_id=loan_id)
            try:
                await self.messenger.request(
                    self.subjects.order_command(OrderVerb.SETTLE), command,
                    bus_pb2.PledgeResult, server="orders", timeout=10,
                )  # fmt: skip
            except Unavailable:
                raise
            except SCFError as exc:  # settled already (the retry's first answer is kept)
                log.warning("orders did not settle %s: %s", loan["order_id"], exc.message)
        settled = bus_pb2.Settled(
            loan_id=loan_id,
            facility_id=loan["facility_id"],
            principal_minor=loan["principal_minor"],
            # A lease's end as repayment applied it (lending may not have
            # recorded the choice yet if it crashed after asking).
            lease_option=lease_option_value(loan["lease_option"] or ""),
        )
        await self.messenger.publish_event(
            self.js, self.subjects.settled, settled, f"settled-{loan_id}"
        )
        await self.pool.execute("UPDATE loans SET announced = true WHERE loan_id = $1", loan_id)

    async def sweep(self) -> None:
        """Days past due and buckets as of the clock; a bucket change is journaled and announced."""
        today = self.clock.now().date()
        for lease in await self.pool.fetch(
            "SELECT * FROM loans l WHERE state = 'open' AND kind = 'lease' AND (bucket <> 'current'"
            " OR EXISTS (SELECT 1 FROM schedule_lines s WHERE s.loan_id = l.loan_id"
            " AND NOT s.waived AND s.paid < s.principal + s.interest AND s.due < $1))",
            today,
        ):
            await self.leases.sweep(lease, today)
        for loan in await self.pool.fetch(
            "SELECT * FROM loans WHERE state = 'open' AND kind = 'loan' AND due_date < $1", today
        ):
            change = Loan.from_row(loan).delinquency(today)
            if change is None:
                continue
            dpd, bucket, late_fee = change
            async with self.pool.acquire() as conn, conn.transaction():
                version = loan["version"] + 1
                # Only the version read: a payment since (which may have charged the
                # late fee itself, or settled the loan) makes the next pass decide again.
                updated = await conn.execute(
                    "UPDATE loans SET bucket = $2, version = $4, fees_owed = fees_owed + $5,"
                    " late_fee_charged = late_fee_charged OR $5 > 0,"
                    " max_days_past_due = greatest(max_days_past_due, $3)"
                    " WHERE loan_id = $1 AND version = $4 - 1 AND state = 'open'",
                    loan["loan_id"],
                    bucket,
                    dpd,
                    version,
                    late_fee,
                )
                if updated != "UPDATE 1":
                    continue
                await self.journal(
                    conn,
                    loan["loan_id"],
                    "delinquency",
                    version,
                    {
                        "bucket": bucket,
                        "days_past_due": dpd,
                        "as_of": today.isoformat(),
                        "late_fee_minor": late_fee,
                    },
                )
            delinquency = bus_pb2.Delinquency(
                loan_id=loan["loan_id"], bucket=BUCKETS[bucket], days_past_due=dpd
            )
            await self.messenger.notify(self.subjects.delinquency, delinquency, loan["loan_id"])
        for loan in await self.pool.fetch(
            "SELECT loan_id FROM loans WHERE state = 'settled' AND NOT announced"
        ):
            await self.announce_settlement(loan["loan_id"])

    async def history(self, subcontractor: str) -> dict[str, int]:
        row: Any = await self.pool.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'settled' AND max_days_past_due = 0) AS on_time,"
            " coalesce(max(max_days_past_due), 0) AS worst,"
            " count(*) FILTER (WHERE max_days_past_due > 90) AS defaults"
            " FROM loans WHERE subcontractor_id = $1",
            subcontractor,
        )
        return {
            "repaid_on_time": row["on_time"],
            "max_days_past_due": row["worst"],
            "defaults": row["defaults"],
        }
