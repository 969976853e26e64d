"""Leases in repayment: rental schedules opened at commencement, paid rental by
rental, penalty on late rentals, early termination, and the end-of-lease option."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from services.contracts.business_days import roll
from services.repayment.calc import annuity_schedule, bucket_for, rolled
from services.repayment.contract import signed_terms
from services.repayment.rentals import Rental, rentals_days_past_due
from services.repayment.store import LoanJournal, rental_of
from services.repayment.store import rentals as rentals_of
from services.runtime.clock import Clock
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = ["LeaseBook"]

OPTIONS = ("purchase", "return", "renew", "terminate")


class LeaseBook:
    def __init__(self, pool: asyncpg.Pool[Any], clock: Clock, journal: LoanJournal) -> None:
        self.pool = pool
        self.clock = clock
        self.journal = journal

    async def open(self, event: dict[str, Any]) -> bool:
        """The rental schedule of a lease that commenced; False when open already."""
        loan_id = event["application_id"]
        start = dt.date.fromisoformat(event["commenced_on"])
        terms = signed_terms(event)  # what every party signed is what is charged
        principal, rate = terms.principal_minor, terms.rate_bps
        residual = int(event["residual_minor"])
        lines = rolled(annuity_schedule(
            principal, rate, int(event["periods"]), start, per_year=int(event["per_year"]),
            in_advance=bool(event["in_advance"]), residual_minor=residual,
        ), terms.roll)  # fmt: skip
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO loans (loan_id, kind, subcontractor_id, bank, buyer_id, order_id,"
                " facility_id, currency, principal_minor, rate_bps, penalty_rate_bps, day_count,"
                " disbursed_on, due_date, accrued_until, principal_out, created_micros,"
                " grace_days, late_fee_minor, per_year, business_days, holiday_calendar) VALUES"
                " ($1, 'lease', $2, $3, '', '', $4, $5, $6, $7, $8, $9, $10, $11, $10, $6, $12,"
                " $13, $14, $15, $16, $17) ON CONFLICT DO NOTHING RETURNING 1",
                loan_id, event["subcontractor_id"], event["bank"], event["facility_id"],
                event["currency"], principal, rate, terms.penalty_rate_bps, terms.day_count, start,
                lines[-1].due, self.clock.now_micros(), terms.grace_days,
                terms.late_fee_minor, int(event["per_year"]), terms.business_days.value,
                terms.holiday_calendar,
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
            await self.journal.add(
                conn, loan_id, "opened", 1,
                {
                    "kind": "lease", "principal_minor": principal, "currency": event["currency"],
                    "rate_bps": rate, "penalty_rate_bps": terms.penalty_rate_bps,
                    "day_count": terms.day_count, "grace_days": terms.grace_days,
                    "late_fee_minor": terms.late_fee_minor,
                    "contract_sha256": bytes(event["contract_sha256"]).hex(),
                    "commenced_on": start.isoformat(), "residual_minor": residual,
                    "in_advance": bool(event["in_advance"]), "per_year": int(event["per_year"]),
                    "schedule": _lines_json(lines),
                },
            )  # fmt: skip
        return True

    async def _delinquency(
        self, conn: Any, loan: Any, today: dt.date
    ) -> tuple[list[Any], int, str] | None:
        """The rentals newly late, days past due and bucket, if any of them changed."""
        late_lines = await conn.fetch(
            "SELECT number FROM schedule_lines WHERE loan_id = $1 AND NOT late_fee_charged"
            " AND NOT waived AND paid < principal + interest AND due + $2::integer < $3",
            loan["loan_id"], loan["grace_days"], today,
        )  # fmt: skip
        rentals = await rentals_of(conn, loan["loan_id"])
        dpd = rentals_days_past_due(rentals, today, loan["grace_days"])
        bucket = bucket_for(dpd)
        if bucket == loan["bucket"] and not late_lines:
            return None
        return list(late_lines), dpd, bucket

    async def sweep(self, loan: Any, today: dt.date) -> None:
        """Days past due and bucket; the product's late fee on each rental as it falls late.
        Read first: a lease whose standing has not changed costs no lock and no write."""
        async with self.pool.acquire() as conn:
            if await self._delinquency(conn, loan, today) is None:
                return
        async with self.pool.acquire() as conn, conn.transaction():
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
            await self.journal.add(
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
        today = self.clock.now().date()
        async with self.pool.acquire() as conn, conn.transaction():
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
            rentals = await rentals_of(conn, lease_id)
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
            rentals = await rentals_of(conn, lease_id)
            settled = (
                sum(r.unpaid_minor for r in rentals) + loan["penalty_owed"] + loan["fees_owed"] == 0
            )
            await conn.execute(
                "UPDATE loans SET lease_option = $2, version = $3, state = $4,"
                " principal_out = $5 WHERE loan_id = $1",
                lease_id, option, version, "settled" if settled else "open",
                sum(r.unpaid_principal_minor for r in rentals),
            )  # fmt: skip
            await self.journal.add(
                conn, lease_id, "option_exercised", version, {"option": option, **changes}
            )
            if settled:
                await self.journal.add(
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
        if line is None or rental_of(line).unpaid_minor <= 0:
            raise FailedPrecondition("there is no residual left to renew the lease for")
        # The residual itself becomes the capital (docs/leasing.md), not its value
        # discounted one period, which an in-advance lease's line holds as capital.
        capital = rental_of(line).unpaid_minor
        # The new term runs from the day the residual fell due, and its rentals roll
        # as the contract says.
        lines = rolled(
            annuity_schedule(capital, loan["rate_bps"], periods, line["due"],
                             per_year=loan["per_year"]),
            lambda d: roll(d, loan["business_days"], loan["holiday_calendar"]),
        )  # fmt: skip
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
