"""The lending schema, and each application transition with its journal entry."""

from __future__ import annotations

import datetime as dt
from typing import Any

from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.types.v1 import money_pb2
from services.journal import canonical_json
from services.lending.domain import Facility, Move
from services.runtime import tracing
from services.runtime.errors import NotFound
from services.runtime.journal_client import Outbox
from services.runtime.money import Money
from services.runtime.proto_enums import enum_number

__all__ = [
    "Transitions",
    "application_proto",
    "contract_proto",
    "facility_proto",
    "load_contract",
    "money_pb",
]


def money_pb(currency: str, minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount=Money(currency, minor).major(), currency=currency)


def facility_proto(row: Any) -> lending_pb2.Facility:
    c = row["currency"]
    available = Facility.from_row(row).available_minor
    return lending_pb2.Facility(
        facility_id=row["facility_id"],
        bank=row["bank"],
        subcontractor_id=row["subcontractor_id"],
        limit=money_pb(c, row["limit_minor"]),
        reserved=money_pb(c, row["reserved_minor"]),
        drawn=money_pb(c, row["drawn_minor"]),
        available=money_pb(c, available),
        expires_on=row["expires_on"].isoformat(),
        spread_bps=row["spread_bps"],
    )


async def load_contract(conn: Any, contract_id: str) -> tuple[Any, list[Any]] | None:
    """A contract's row and its signatures (by signer), or None."""
    row = await conn.fetchrow("SELECT * FROM contracts WHERE contract_id = $1", contract_id)
    if row is None:
        return None
    signatures = await conn.fetch(
        "SELECT signer, party_id, key_id, signature FROM signatures WHERE contract_id = $1"
        " ORDER BY signer",
        contract_id,
    )
    return row, list(signatures)


def contract_proto(row: Any, signatures: list[Any]) -> lending_pb2.Contract:
    return lending_pb2.Contract(
        contract_id=row["contract_id"],
        document=row["document"],
        sha256=bytes(row["sha256"]),
        signers=list(row["signers"]),
        signed_by=[s["signer"] for s in signatures],
        signatures=[
            lending_pb2.ContractSignature(
                signer=s["signer"], party_id=s["party_id"], key_id=bytes(s["key_id"]),
                signature=bytes(s["signature"]),
            )
            for s in signatures
        ],
    )  # fmt: skip


def application_proto(
    row: Any, contract: lending_pb2.Contract | None = None
) -> lending_pb2.Application:
    c = row["currency"]
    app = lending_pb2.Application(
        application_id=row["application_id"],
        subcontractor_id=row["subcontractor_id"],
        bank=row["bank"],
        order_id=row["order_id"],
        facility_id=row["facility_id"],
        requested=money_pb(c, row["requested_minor"]),
        state=enum_number(lending_pb2.ApplicationState, row["state"]),
        outcome=enum_number(lending_pb2.ApplicationOutcome, row["outcome"]),
        reason=row["reason"],
        decision_id=row["decision_id"],
        decision_json=canonical_json(row["decision"]).decode() if row["decision"] else "",
        approvals=list(row["approvals"]),
        offer_expires_micros=row["offer_expires_micros"],
        created_micros=row["created_micros"],
        updated_micros=row["updated_micros"],
        facility_restored=row["restored"],
    )
    terms = row["terms"]
    if terms:
        app.terms.CopyFrom(
            lending_pb2.Terms(
                amount=money_pb(c, terms["amount_minor"]),
                rate_bps=terms["rate_bps"],
                tenor_days=terms["tenor_days"],
            )
        )
    if contract is not None:
        app.contract.CopyFrom(contract)
    return app


#: The columns whose new value a transition's journal entry carries.
JOURNALED_COLUMNS = (
    "outcome", "reason", "terms", "approvals", "decision_id", "contract_id", "lease_option",
    "vendor_payment_reference", "commenced_on", "proposal",
)  # fmt: skip


class Transitions:
    """Moves an application from state to state, journaling each move once."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        #: Each transition, once committed, is announced here with its application
        #: id: the process managers of every lending instance take the next step.
        self.channel = f"steps_{outbox.schema}"

    async def open(
        self,
        conn: Any,
        application_id: str,
        now: int,
        columns: dict[str, Any],
        journaled: dict[str, Any],
    ) -> Any:
        """Insert a new application in state ``requested`` and journal it as version 1;
        ``journaled`` is what the entry says beyond its id and the version."""
        # The process manager's steps continue the trace of the call that opened it.
        columns = {**columns, "trace_parent": tracing.current_traceparent()}
        names = ["application_id", "state", "created_micros", "updated_micros", *columns]
        values = [application_id, "requested", now, now, *columns.values()]
        row = await conn.fetchrow(
            f"INSERT INTO applications ({', '.join(names)})"
            f" VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))}) RETURNING *",
            *values,
        )
        await self.outbox.add(
            conn,
            subject=f"application/{application_id}",
            event_type="application.requested",
            payload={"application_id": application_id, **journaled, "version": 1},
            idempotency_key=f"application/{application_id}/v1",
            notify=(self.channel, application_id),
        )
        return row

    @staticmethod
    async def lock(conn: Any, application_id: str) -> Any:
        row = await conn.fetchrow(
            "SELECT * FROM applications WHERE application_id = $1 FOR UPDATE", application_id
        )
        if row is None:
            raise NotFound(f"no application {application_id!r}")
        return row

    async def apply(self, conn: Any, app: Any, move: Move, now: int, **more: Any) -> Any:
        """Record a move the domain decided (with ``more`` columns set beside it)."""
        return await self.move(
            conn, app, move.state, move.event, now, move.by, **move.changes, **more
        )

    async def move(
        self, conn: Any, app: Any, state: str, event: str, now: int, by: str, **changes: Any
    ) -> Any:
        """Set ``state`` (and other columns), bump the version, journal ``event``."""
        sets = ["state = $2", "version = version + 1", "updated_micros = $3"]
        args: list[Any] = [app["application_id"], state, now]
        for column, value in changes.items():
            args.append(value)
            sets.append(f"{column} = ${len(args)}")
        row = await conn.fetchrow(
            f"UPDATE applications SET {', '.join(sets)} WHERE application_id = $1 RETURNING *",
            *args,
        )
        payload: dict[str, Any] = {
            "application_id": row["application_id"],
            "state": state,
            "version": row["version"],
            "by": by,
            "order_id": row["order_id"],
            "bank": row["bank"],
        }
        if row["kind"] == "lease":
            payload["kind"] = "lease"
        for key in JOURNALED_COLUMNS:
            if key in changes:
                value = changes[key]
                if isinstance(value, (list, tuple)):
                    value = list(value)
                elif isinstance(value, dt.date):
                    value = value.isoformat()
                payload[key] = value
        await self.outbox.add(
            conn,
            subject=f"application/{row['application_id']}",
            event_type=f"application.{event}",
            payload=payload,
            idempotency_key=f"application/{row['application_id']}/v{row['version']}",
            notify=(self.channel, row["application_id"]),
        )
        return row
