"""The most a client may send in any field, stated once and checked at the
gRPC boundary for every RPC (services/runtime/grpcserver.py).

Every string, bytes and repeated field of every request has a maximum: the
defaults below, or a larger one named in ``LARGER``. A request over a bound is
INVALID_ARGUMENT naming the field, before any service code runs, so nothing a
client sends can make a journal statement outgrow what a NATS message
carries. Every integer has a range (``RANGES``, or 0 to 2^53 - 1) and every
enum field one of its values. docs/architecture.md repeats the tables for
clients (a test keeps them alike).
"""

from __future__ import annotations

from typing import Any

from services.runtime.errors import InvalidArgument

__all__ = [
    "LARGER",
    "MAX_BYTES",
    "MAX_INTEGER",
    "MAX_ITEMS",
    "MAX_TEXT",
    "RANGES",
    "check_request",
    "ranges_markdown",
]

#: Characters of any text field (ids, references, reasons, descriptions).
MAX_TEXT = 1_000
#: Bytes of any bytes field (hashes, keys and signatures are 32 or 64).
MAX_BYTES = 1_024
#: Entries of any repeated field (line items, states, ...).
MAX_ITEMS = 200
#: Fields that may hold more: full proto name of the field -> its maximum.
LARGER: dict[str, int] = {
    # A scorecard model (docs/scoring.md): the bundled ones are about 7 KB.
    "scf.scoring.v1.LoadModelRequest.scorecard_json": 100_000,
}


#: Any integer field not named in ``RANGES``: a count, a sequence number or a
#: tree size, never negative, and exact in a JSON number (2^53 - 1).
MAX_INTEGER = 2**53 - 1
#: Integer fields with a range of their own: full proto name -> (least, most).
#: Zero is a field not given (proto3): the service says whether it is needed.
RANGES: dict[str, tuple[int, int]] = {
    "scf.underwriting.v1.Terms.rate_bps": (1, 5000),
    # Order financing runs at most 730 days (lending's domain); a lease its term, to 120 months.
    "scf.underwriting.v1.Terms.tenor_days": (1, 3652),
    "scf.lending.v1.CreateFacilityRequest.spread_bps": (0, 5000),
    "scf.leasing.v1.ApplyForLeaseRequest.term_months": (1, 120),
    "scf.leasing.v1.ExerciseOptionRequest.renewal_periods": (1, 480),
    "scf.orders.v1.LineItem.quantity": (1, 1_000_000_000),
    **{
        f"scf.{name}Request.page_size": (1, 100)
        for name in (
            "orders.v1.ListOrders",
            "orders.v1.ListBuyers",
            "lending.v1.ListFacilities",
            "underwriting.v1.ListApplications",
            "scoring.v1.ListModels",
            "repayment.v1.ListUnmatched",
        )
    },
    "scf.journal.v1.ListRefusalsRequest.limit": (1, 1000),
    "scf.journal.v1.GetCheckpointRequest.min_cosignatures": (0, 16),
    "scf.journal.v1.GetReceiptRequest.min_cosignatures": (0, 16),
}


def ranges_markdown() -> str:
    """The integer ranges as a table, for docs/architecture.md."""
    lines = ["| field | least | most |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {lo:,} | {hi:,} |" for name, (lo, hi) in sorted(RANGES.items())]
    lines.append(f"| any other integer | 0 | {MAX_INTEGER:,} |")
    return "\n".join(lines)


def _check_scalar(field: Any, label: str, item: Any) -> None:
    """An integer within its range, an enum one of its values."""
    if field.enum_type is not None:
        if item not in field.enum_type.values_by_number:
            raise InvalidArgument(label, f"{item} is not a {field.enum_type.name}")
    elif isinstance(item, int) and not isinstance(item, bool):
        least, most = RANGES.get(field.full_name, (0, MAX_INTEGER))
        if not least <= item <= most:
            raise InvalidArgument(label, f"{least:,} to {most:,}, got {item:,}")


def check_request(message: Any, path: str = "") -> None:
    """INVALID_ARGUMENT for the first field over its bound, or holding a NUL
    character (PostgreSQL cannot store one, and no identifier contains one), or
    an integer out of its range, or an enum value the schema does not have."""
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        if field.is_repeated:
            most = LARGER.get(field.full_name, MAX_ITEMS)
            if len(value) > most:
                raise InvalidArgument(name, f"at most {most} entries, got {len(value)}")
            items = [(f"{name}[{i}]", item) for i, item in enumerate(value)]
        else:
            items = [(name, value)]
        for label, item in items:
            if isinstance(item, str):
                most = LARGER.get(field.full_name, MAX_TEXT)
                if len(item) > most:
                    raise InvalidArgument(label, f"at most {most} characters, got {len(item)}")
                if "\x00" in item:
                    raise InvalidArgument(label, "must not contain a NUL character")
            elif isinstance(item, bytes):
                most = LARGER.get(field.full_name, MAX_BYTES)
                if len(item) > most:
                    raise InvalidArgument(label, f"at most {most} bytes, got {len(item)}")
            elif hasattr(item, "ListFields"):
                check_request(item, f"{label}.")
            else:
                _check_scalar(field, label, item)
