"""Reading repayment's rows into its domain types, and journaling a loan's change."""

from __future__ import annotations

from typing import Any

from services.repayment.domain import Financing, Quote, financing_of
from services.repayment.rentals import Rental
from services.runtime.errors import NotFound
from services.runtime.journal_client import Outbox

__all__ = ["LoanJournal", "financing", "quote", "rental_of", "rentals"]


def rental_of(row: Any) -> Rental:
    """A line of ``schedule_lines`` (a loan's one bullet line, or a lease's rental)."""
    return Rental(
        row["number"], row["due"], row["principal"], row["interest"], row["paid"], row["waived"],
        row["late_fee_charged"],
    )  # fmt: skip


async def rentals(conn: Any, loan_id: str) -> list[Rental]:
    rows = await conn.fetch(
        "SELECT * FROM schedule_lines WHERE loan_id = $1 ORDER BY number", loan_id
    )
    return [rental_of(r) for r in rows]


async def financing(conn: Any, row: Any) -> Financing:
    """The loan or lease of a row of ``loans``, with its schedule."""
    return financing_of(row, await rentals(conn, row["loan_id"]))


async def quote(conn: Any, loan_id: str, quote_id: str) -> Quote:
    row = await conn.fetchrow(
        "SELECT * FROM quotes WHERE quote_id = $1 AND loan_id = $2", quote_id, loan_id
    )
    if row is None:
        raise NotFound(f"no quote {quote_id!r} for loan {loan_id}")
    return Quote(row["quote_id"], row["amount_minor"], row["valid_until"])


class LoanJournal:
    """A loan's (or lease's) journal entries: subject ``loan/<id>``, one per version."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def add(
        self, conn: Any, loan_id: str, event: str, version: int, payload: dict[str, Any]
    ) -> None:
        await self.outbox.add(
            conn,
            subject=f"loan/{loan_id}",
            event_type=f"loan.{event}",
            payload={"loan_id": loan_id, "version": version, **payload},
            idempotency_key=f"loan/{loan_id}/v{version}",
        )
