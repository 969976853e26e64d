"""The most a client may send in any field, stated once and checked at the
gRPC boundary for every RPC (services/runtime/grpcserver.py).

Every string, bytes and repeated field of every request has a maximum: the
defaults below, or a larger one named in ``LARGER``. A request over a bound is
INVALID_ARGUMENT naming the field, before any service code runs, so nothing a
client sends can make a journal statement outgrow what a NATS message
carries. docs/architecture.md repeats the table for clients.
"""

from __future__ import annotations

from typing import Any

from services.runtime.errors import InvalidArgument

__all__ = ["LARGER", "MAX_BYTES", "MAX_ITEMS", "MAX_TEXT", "check_request"]

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


def check_request(message: Any, path: str = "") -> None:
    """INVALID_ARGUMENT for the first field over its bound, or holding a NUL
    character (PostgreSQL cannot store one, and no identifier contains one)."""
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
