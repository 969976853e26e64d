"""Leases in repayment: rental schedules opened at commencement, paid rental by
rental, penalty on late rentals, early termination, and the end-of-lease option."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from services.repayment.calc import Allocation, annuity_schedule, bucket_for
from services.repayment.products import penalty_rate, product_for
from services.repayment.rentals import (
    Rental,
    allocate_rentals,
    due_now,
    penalty_between,
    rentals_days_past_due,
    termination_amount,
    waive_future_interest,
)
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound

if TYPE_CHECKING:
    from services.repayment.loans import LoanBook

__all__ = ["LeaseBook", "LeasePosition"]

OPTIONS = ("purchase", "return", "renew", "terminate")


def _rental(row: Any) -> Rental:
    return Rental(
        row["number"], row["due"], row["principal"], row["interest"], row["paid"], row["waived"]
    )


class LeasePosition:
    """A lease's balances as of a day: computed, never stored."""

    def __init__(self, loan: Any, rentals: list[Rental], day: dt.date) -> None:
        until = max(day, loan["accrued_until"])
        self.rentals = rentals
        self.penalty_minor = loan["penalty_owed"] + penalty_between(
            rentals, loan["accrued_until"], until, loan["grace_days"], loan["penalty_rate_bps"],
            loan["day_count"],
        )  # fmt: skip
        self.fees_minor: int = loan["fees_owed"]
        self.due_minor = due_now(rentals, day) + self.penalty_minor + self.fees_minor
        self.principal_minor = sum(r.unpaid_principal_minor for r in rentals)
        self.interest_due_minor = sum(r.unpaid_interest_minor for r in rentals if r.due <= day)
        self.total_minor = (
            sum(r.unpaid_minor for r in rentals) + self.penalty_minor + self.fees_minor
        )
        self.days_past_due = rentals_days_past_due(rentals, day, loan["grace_days"])


class LeaseBook:
    def __init__(self, book: LoanBook) -> None:
        self.book = book

    @staticmethod
    async def rentals(conn: Any, loan_id: str) -> list[Rental]:
        rows = await conn.fetch(
            "SELECT * FROM schedule_lines WHERE loan_id = $1 ORDER BY number", loan_id
        )
        return [_rental(r) for r in rows]

    async def position(self, loan: Any, day: dt.date) -> LeasePosition:
        async with self.book.pool.acquire() as conn:
            return LeasePosition(loan, await self.rentals(conn, loan["loan_id"]), day)

    async def open(self, event: dict[str, Any]) -> bool:
        """The rental schedule of a lease that commenced; False when open already."""
        loan_id = event["application_id"]
        start = dt.date.fromisoformat(event["commenced_on"])
        principal, rate = int(event["principal_minor"]), int(event["rate_bps"])
        residual = int(event["residual_minor"])
        lines = annuity_schedule(
            principal, rate, int(event["periods"]), start, per_year=int(event["per_year"]),
            in_advance=bool(event["in_advance"]), residual_minor=residual,
        )  # fmt: skip
        product = product_for(event["bank"])
        async with self.book.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO loans (loan_id, kind, subcontractor_id, bank, buyer_id, order_id,"
                " facility_id, currency, principal_minor, rate_bps, penalty_rate_bps, day_count,"
                " disbursed_on, due_date, accrued_until, principal_out, created_micros,"
                " grace_days, late_fee_minor, per_year) VALUES ($1, 'lease', $2, $3, '', '', $4,"
                " $5, $6, $7, $8, $9, $10, $11, $10, $6, $12, $13, $14, $15)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                loan_id, event["subcontractor_id"], event["bank"], event["facility_id"],
                event["currency"], principal, rate, penalty_rate(rate), product.day_count, start,
                lines[-1].due, self.book.clock.now_micros(), product.grace_days,
                product.late_fee_minor, int(event["per_year"]),
            )  # fmt: skip
            if not inserted:
                return False
            await conn.executemany(
                "INSERT INTO schedule_lines (loan_id, number, due, principal, interest, residual)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    (loan_id, ln.number, ln.due, ln.principal_minor, ln.interest_minor,
                     bool(residual) and ln.number == len(lines))
                    for ln in lines
                ],
            )  # fmt: skip
            await self.book.journal(
                conn, loan_id, "opened", 1,
                {
                    "kind": "lease", "principal_minor": principal, "currency": event["currency"],
                    "rate_bps": rate, "penalty_rate_bps": penalty_rate(rate),
                    "day_count": product.day_count, "grace_days": product.grace_days,
                    "commenced_on": start.isoformat(), "residual_minor": residual,
                    "in_advance": bool(event["in_advance"]), "per_year": int(event["per_year"]),
                    "schedule": _lines_json(lines),
                },
            )  # fmt: skip
        return True

    async def apply_payment(
        self, conn: Any, loan: Any, amount_minor: int, value_date: dt.date, quote_id: str
    ) -> tuple[Allocation, dict[str, Any]]:
        """Penalty to the value date, then the rental waterfall (rentals.py)."""
        rentals = await self.rentals(conn, loan["loan_id"])
        day = max(value_date, loan["accrued_until"])
        if quote_id:
            quote = await self.book.valid_quote(conn, loan, quote_id, value_date, amount_minor)
            day = max(day, quote["valid_until"])
            rentals = waive_future_interest(rentals, quote["valid_until"])
        position = LeasePosition(loan, rentals, day)
        split, after = allocate_rentals(
            amount_minor, position.penalty_minor, position.fees_minor, rentals
        )
        await conn.executemany(
            "UPDATE schedule_lines SET paid = $3, interest = $4 WHERE loan_id = $1 AND number = $2",
            [(loan["loan_id"], r.number, r.paid_minor, r.interest_minor) for r in after],
        )
        penalty = position.penalty_minor - split.penalty_minor
        fees = position.fees_minor - split.fees_minor
        outstanding = sum(r.unpaid_minor for r in after)
        return split, {
            "accrued_until": day,
            "principal_out": sum(r.unpaid_principal_minor for r in after),
            "penalty_owed": penalty,
            "fees_owed": fees,
            "settled": outstanding + penalty + fees == 0,
        }

    async def quote_amount(self, loan: Any, valid_until: dt.date) -> int:
        position = await self.position(loan, valid_until)
        return termination_amount(
            position.rentals, valid_until, position.penalty_minor, position.fees_minor
        )

    async def _delinquency(
        self, conn: Any, loan: Any, today: dt.date
    ) -> tuple[list[Any], int, str] | None:
        """The rentals newly late, days past due and bucket, if any of them changed."""
        late_lines = await conn.fetch(
            "SELECT number FROM schedule_lines WHERE loan_id = $1 AND NOT late_fee_charged"
            " AND NOT waived AND paid < principal + interest AND due + $2::integer < $3",
            loan["loan_id"], loan["grace_days"], today,
        )  # fmt: skip
        rentals = await self.rentals(conn, loan["loan_id"])
        dpd = rentals_days_past_due(rentals, today, loan["grace_days"])
        bucket = bucket_for(dpd)
        if bucket == loan["bucket"] and not late_lines:
            return None
        return list(late_lines), dpd, bucket

    async def sweep(self, loan: Any, today: dt.date) -> None:
        """Days past due and bucket; the product's late fee on each rental as it falls late.
        Read first: a lease whose standing has not changed costs no lock and no write."""
        async with self.book.pool.acquire() as conn:
            if await self._delinquency(conn, loan, today) is None:
                return
        async with self.book.pool.acquire() as conn, conn.transaction():
            loan = await conn.fetchrow(
                "SELECT * FROM loans WHERE loan_id = $1 FOR UPDATE", loan["loan_id"]
            )
            if loan["state"] != "open":
                return
            change = await self._delinquency(conn, loan, today)  # again, under the lock
            if change is None:
                return
            late_lines, dpd, bucket = change
            late_fee = loan["late_fee_minor"] * len(late_lines)
            version = loan["version"] + 1
            await conn.execute(
                "UPDATE schedule_lines SET late_fee_charged = true WHERE loan_id = $1"
                " AND number = ANY($2::integer[])",
                loan["loan_id"], [r["number"] for r in late_lines],
            )  # fmt: skip
            await conn.execute(
                "UPDATE loans SET bucket = $2, version = $4, fees_owed = fees_owed + $5,"
                " max_days_past_due = greatest(max_days_past_due, $3) WHERE loan_id = $1",
                loan["loan_id"], bucket, dpd, version, late_fee,
            )  # fmt: skip
            await self.book.journal(
                conn, loan["loan_id"], "delinquency", version,
                {
                    "bucket": bucket, "days_past_due": dpd, "as_of": today.isoformat(),
                    "late_fee_minor": late_fee,
                    "late_rentals": [r["number"] for r in late_lines],
                },
            )  # fmt: skip

    async def exercise_option(
        self, lease_id: str, option: str, quote_id: str, renewal_periods: int
    ) -> bool:
        """Apply the lessee's end-of-lease choice to the schedule; True when that
        settles the lease. The same choice again is a no-op; another is refused."""
        if option not in OPTIONS:
            raise InvalidArgument("option", f"one of {', '.join(OPTIONS)}")
        today = self.book.clock.now().date()
        async with self.book.pool.acquire() as conn, conn.transaction():
            loan = await conn.fetchrow(
                "SELECT * FROM loans WHERE loan_id = $1 AND kind = 'lease' FOR UPDATE", lease_id
            )
            if loan is None:
                raise NotFound(f"no lease {lease_id!r} in repayment")
            if loan["lease_option"]:
                if loan["lease_option"] == option:
                    return False
                raise FailedPrecondition(
                    f"lease {lease_id} is ending by {loan['lease_option']} already"
                )
            if loan["state"] != "open":
                raise FailedPrecondition(f"lease {lease_id} is {loan['state']}")
            rentals = await self.rentals(conn, lease_id)
            changes: dict[str, Any] = {}
            if option == "terminate":
                quote = await conn.fetchrow(
                    "SELECT * FROM quotes WHERE quote_id = $1 AND loan_id = $2", quote_id, lease_id
                )
                if quote is None:
                    raise NotFound(f"no early-termination quote {quote_id!r} for lease {lease_id}")
                if quote["valid_until"] < today:
                    raise FailedPrecondition(f"quote {quote_id} expired on {quote['valid_until']}")
                changes = {"quote_id": quote_id, "amount_minor": quote["amount_minor"]}
            elif option == "return":
                await conn.execute(
                    "UPDATE schedule_lines SET waived = true WHERE loan_id = $1 AND residual",
                    lease_id,
                )
                changes = {"residual_waived": True}
            elif option == "renew":
                changes = await self._renew(conn, loan, rentals, renewal_periods)
            version = loan["version"] + 1
            rentals = await self.rentals(conn, lease_id)
            settled = (
                sum(r.unpaid_minor for r in rentals) + loan["penalty_owed"] + loan["fees_owed"] == 0
            )
            await conn.execute(
                "UPDATE loans SET lease_option = $2, version = $3, state = $4,"
                " principal_out = $5 WHERE loan_id = $1",
                lease_id, option, version, "settled" if settled else "open",
                sum(r.unpaid_principal_minor for r in rentals),
            )  # fmt: skip
            await self.book.journal(
                conn, lease_id, "option_exercised", version, {"option": option, **changes}
            )
            if settled:
                await self.book.journal(
                    conn, lease_id, "settled", version + 1, {"settled_on": today.isoformat()}
                )
                await conn.execute(
                    "UPDATE loans SET version = $2 WHERE loan_id = $1", lease_id, version + 1
                )
        return bool(settled)

    async def _renew(
        self, conn: Any, loan: Any, rentals: list[Rental], periods: int
    ) -> dict[str, Any]:
        """The residual becomes the capital of a further term of equal rentals."""
        if periods <= 0:
            raise InvalidArgument("renewal_periods", "a renewal needs a positive number of rentals")
        line = await conn.fetchrow(
            "SELECT * FROM schedule_lines WHERE loan_id = $1 AND residual AND NOT waived",
            loan["loan_id"],
        )
        if line is None or _rental(line).unpaid_minor <= 0:
            raise FailedPrecondition("there is no residual left to renew the lease for")
        capital = _rental(line).unpaid_principal_minor
        lines = annuity_schedule(
            capital, loan["rate_bps"], periods, line["due"], per_year=loan["per_year"]
        )
        await conn.execute(
            "UPDATE schedule_lines SET waived = true WHERE loan_id = $1 AND residual",
            loan["loan_id"],
        )
        first = len(rentals) + 1
        await conn.executemany(
            "INSERT INTO schedule_lines (loan_id, number, due, principal, interest)"
            " VALUES ($1, $2, $3, $4, $5)",
            [
                (loan["loan_id"], first + i, ln.due, ln.principal_minor, ln.interest_minor)
                for i, ln in enumerate(lines)
            ],
        )
        await conn.execute(
            "UPDATE loans SET due_date = $2 WHERE loan_id = $1", loan["loan_id"], lines[-1].due
        )
        return {"renewed_capital_minor": capital, "schedule": _lines_json(lines, first)}


def _lines_json(lines: list[Any], first: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "number": first + i,
            "due": ln.due.isoformat(),
            "principal_minor": ln.principal_minor,
            "interest_minor": ln.interest_minor,
        }
        for i, ln in enumerate(lines)
    ]
