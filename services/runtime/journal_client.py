"""How services append to the journal: the outbox and its relay.

A service writes its state change and :meth:`Outbox.add` in one PostgreSQL
transaction, so there is no state without its statement and no statement
without its state. :class:`OutboxRelay` signs pending statements in batches
(one Ed25519 signature over the root of each batch), publishes each batch as
one JetStream message, and marks a row done only when the journal's entry for
it comes back on the entries stream, not when NATS acknowledged the publish:
a NATS crash that loses an acknowledged message only delays the entry, the
relay publishes it again and the journal absorbs any duplicate.

A row is marked refused only by a refusal the journal signed, for exactly
the idempotency keys it names, and never once the row is journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.contracts.envelope import EnvelopeRefused
from services.contracts.subjects import HDR_TRACES, Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.journal.v1 import journal_pb2_grpc
from services.journal import (
    SignedBatch,
    Statement,
    canonical_json,
    decode_entry,
    sign_batch,
    unpack_records,
)
from services.runtime import tracing
from services.runtime.bus import ack, bind, fetch
from services.runtime.certs import PartyCert
from services.runtime.clock import Clock
from services.runtime.errors import RETRY_LATER, TRANSIENT
from services.runtime.faults import crash_point
from services.runtime.grpcserver import client_channel
from services.runtime.keys import Signer
from services.runtime.messaging import Messenger
from services.runtime.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_SECONDS, OUTBOX_SET_ASIDE
from services.runtime.packing import pack
from services.runtime.pg_listen import PgListener
from services.runtime.waiting import LoopWatch, run_together, wait_event
from services.runtime.watching import notification

__all__ = [
    "AuditClient",
    "Outbox",
    "OutboxRelay",
    "audit_client",
]

log = logging.getLogger(__name__)


class Outbox:
    """Stores statements beside the state change they describe."""

    def __init__(self, signer: Signer, clock: Clock, schema: str) -> None:
        self.signer = signer
        self.clock = clock
        self.schema = schema
        self.channel = f"outbox_{schema}"

    def statement(
        self,
        subject: str,
        event_type: str,
        payload: Mapping[str, Any] | bytes,
        idempotency_key: str,
    ) -> bytes:
        """The statement's bytes (signed later, in a batch, by the relay)."""
        body = payload if isinstance(payload, bytes) else canonical_json(payload)
        return Statement(
            producer=self.signer.name,
            key_id=self.signer.key_id,
            produced_micros=self.clock.now_micros(),
            subject=subject,
            event_type=event_type,
            idempotency_key=idempotency_key,
            payload=body,
        ).encode()

    def sign(self, statements: list[bytes]) -> SignedBatch:
        return sign_batch(self.signer.name, self.signer.key_id, self.signer.sign, statements)

    async def add(
        self,
        conn: Any,
        subject: str,
        event_type: str,
        payload: Mapping[str, Any] | bytes,
        idempotency_key: str,
        notify: tuple[str, str] | None = None,
    ) -> None:
        """Within the caller's transaction: queue one statement for the journal, and
        wake the relay (and, with ``notify``, a channel and payload of the caller's)
        when the transaction commits; one round trip."""
        also, args = "", [self.channel]
        if notify is not None:
            also, args = ", pg_notify($6, $7)", [self.channel, *notify]
        await conn.execute(
            "WITH queued AS (INSERT INTO outbox (idempotency_key, subject, statement, trace_parent)"
            f" VALUES ($1, $2, $3, $4) RETURNING id) SELECT pg_notify($5, ''){also} FROM queued",
            idempotency_key,
            subject,
            self.statement(subject, event_type, payload, idempotency_key),
            tracing.current_traceparent(),
            *args,
        )

    @staticmethod
    async def journal_seqs(conn: Any, subject: str) -> list[int]:
        """The journal sequence numbers of ``subject``'s statements journaled so far."""
        rows = await conn.fetch(
            "SELECT journal_seq FROM outbox WHERE subject = $1 AND journal_seq IS NOT NULL"
            " ORDER BY journal_seq",
            subject,
        )
        return [r["journal_seq"] for r in rows]


def _with_traces(headers: dict[str, str], group: list[Any]) -> dict[str, str]:
    """Each traced statement's ``traceparent`` by its place in the batch, so the
    journal's span for its entry joins that trace (``HDR_TRACES``)."""
    traces = [f"{i}={r['trace_parent']}" for i, r in enumerate(group) if r["trace_parent"]]
    if traces:
        headers[HDR_TRACES] = ",".join(traces)
    return headers


#: What the relay outlasts by trying again: the database or NATS away, or a
#: statement PostgreSQL refused for now.
_RETRIED: tuple[type[BaseException], ...] = (
    *TRANSIENT, OSError, asyncpg.PostgresError, nats.errors.Error,
)  # fmt: skip


#: A statement the journal has not confirmed is sent again after retry_after_s,
#: then after twice that, and so on, doubling at most this many times.
RETRY_DOUBLINGS = 6


class OutboxRelay:
    """Publishes a service's outbox to the journal and records the outcome."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        js: JetStreamContext,
        subjects: Subjects,
        outbox: Outbox,
        refusals: Messenger,
        *,
        batch: int = 1000,
        statements_per_message: int = 256,
        retry_after_s: float = 5.0,
        stall_s: float = 60.0,
        max_payload: int = 1 << 20,
        notify: Callable[[bytes], Awaitable[None]] | None = None,
        nc: NATS | None = None,
    ) -> None:
        self.pool = pool
        self.js = js
        self.subjects = subjects
        self.outbox = outbox
        #: Opens the journal's signed refusals.
        self.refusals = refusals
        self.producer = outbox.signer.name
        self.channel = outbox.channel
        self.batch = batch
        self.per_message = statements_per_message
        self.retry_after_s = retry_after_s
        #: The NATS server's message limit: a submission never grows past it.
        self.max_payload = max_payload
        #: Publishes which subjects were journaled, for watch calls (watching.py).
        self.notify = notify
        #: Hears when a journal standby took over (then sends again at once).
        self.nc = nc
        self._resend_now = False
        self._wake = asyncio.Event()
        self._listener = PgListener(pool, self.channel, lambda _payload: self._wake.set())
        #: Each loop comes round within seconds, whether NATS and PostgreSQL answer
        #: or fail; one that has not for stall_s stops the relay (and its service).
        self.loops = LoopWatch(f"{self.producer}'s outbox relay", stall_s)

    async def setup(self) -> None:
        """Bind both consumers now, so a missing one stops start-up with its name."""
        self._subs = {
            kind: await bind(self.js, self.subjects.relay(self.producer, kind))
            for kind in ("entries", "refusals")
        }

    async def run(self) -> None:
        """Publish and confirm (one instance of the service)."""
        await run_together(self.run_confirming(), self.run_publishing())

    async def run_confirming(self) -> None:
        """Record the journal's entries and refusals: every instance takes its
        share of the consumers' messages."""
        if not getattr(self, "_subs", None):
            await self.setup()
        await run_together(
            self._confirm_loop("entries"), self._confirm_loop("refusals"), self.loops.watch()
        )

    async def run_publishing(self) -> None:
        """Publish pending statements: one instance at a time (the leader), or
        two would sign and send the same rows. It listens from its loop, which
        outlasts PostgreSQL restarts (leadership may come back in the middle of one)."""
        new_leader = None
        if self.nc is not None:
            new_leader = await self.nc.subscribe(
                self.subjects.journal_leader, cb=self._on_new_leader
            )
        try:
            await self._publish_loop()
        finally:
            self.loops.forget("publish")
            await self._listener.close()
            if new_leader is not None:
                with contextlib.suppress(nats.errors.Error):
                    await new_leader.unsubscribe()

    async def _on_new_leader(self, _msg: Any) -> None:
        self._resend_now = True
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch of due rows; returns how many were published. Once a
        new journal leader said so, every unconfirmed row is due at once: the
        last leader may have taken them and died."""
        resend, self._resend_now = self._resend_now, False
        rows = await self.pool.fetch(
            "SELECT id, idempotency_key, statement, attempts, trace_parent FROM outbox"
            " WHERE journal_seq IS NULL AND refused_reason IS NULL"
            " AND (published_at IS NULL OR $4 OR published_at < now()"
            "      - make_interval(secs => $1 * power(2, least(attempts - 1, $3))))"
            " ORDER BY id LIMIT $2",
            self.retry_after_s,
            self.batch,
            RETRY_DOUBLINGS,
            resend,
        )
        if not rows:
            return 0
        subject = self.subjects.submit(self.producer)
        groups, too_big = split_for_messages(rows, self.per_message, self.max_payload)
        if too_big:
            await self._set_aside(too_big)
        # Pipelined: every batch in flight at once, each awaited for its ack.
        results = await asyncio.gather(
            *(
                self.js.publish(
                    subject,
                    self.outbox.sign([bytes(r["statement"]) for r in group]).encode(),
                    headers=_with_traces({"Nats-Msg-Id": self._message_id(group)}, group),
                    timeout=5,
                )
                for group in groups
            ),
            return_exceptions=True,
        )
        sent = [
            r["id"]
            for group, res in zip(groups, results, strict=True)
            if not isinstance(res, BaseException)
            for r in group
        ]
        crash_point("relay.after_publish")
        if len(sent) < len(rows) - len(too_big):
            failed = len(rows) - len(too_big) - len(sent)
            log.warning("%d outbox publishes failed; retrying", failed)
        await self.pool.execute(
            "UPDATE outbox SET published_at = now(), attempts = attempts + 1"
            " WHERE id = ANY($1::bigint[])",
            sent,
        )
        return len(sent)

    async def _set_aside(self, rows: list[Any]) -> None:
        """Statements no NATS message can carry: kept, marked, alarmed; the rest flow on."""
        limit = self.max_payload - _FRAMING
        for r in rows:
            log.error(
                "ALARM: outbox row %s (%s) is %d bytes, over the %d a submission may carry;"
                " set aside (its outbox row keeps the reason)", r["id"], r["idempotency_key"],
                len(r["statement"]), limit,
            )  # fmt: skip
        await self.pool.execute(
            "UPDATE outbox SET refused_reason = $2 WHERE id = ANY($1::bigint[])"
            " AND journal_seq IS NULL",
            [r["id"] for r in rows],
            f"set aside by the relay: larger than the {limit} bytes a submission may carry",
        )
        OUTBOX_SET_ASIDE.labels(self.producer).inc(len(rows))

    def _message_id(self, group: list[Any]) -> str:
        """The first publication's id is fixed, so JetStream drops the copy a
        relay that died before recording it sends again. A retry (published,
        never confirmed: the journal lost it) gets an id of its own, or JetStream
        would drop it too, for the two minutes of its duplicate window. The
        journal itself journals a statement once, whatever arrives twice."""
        first, last = group[0]["id"], group[-1]["id"]
        if all(r["attempts"] == 0 for r in group):
            return f"{self.producer}:{first}-{last}"
        return f"{self.producer}:{first}-{last}:retry-{uuid.uuid4().hex[:12]}"

    async def _publish_loop(self) -> None:
        while True:
            self.loops.round("publish")
            self._wake.clear()
            # The database or NATS away: try again shortly; the pool reconnects.
            try:
                await self._listener.ensure()
                published = await self.publish_pending()
                OUTBOX_BACKLOG.labels(self.producer).set(await self._backlog())
            except _RETRIED as exc:
                log.warning("outbox relay: %r", exc)
                published = 0
            if published == self.batch:
                continue
            await wait_event(self._wake, min(1.0, self.retry_after_s))

    async def _backlog(self) -> int:
        """How many statements wait for the journal; the oldest one's age is set too."""
        row: Any = await self.pool.fetchrow(
            "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)"
            " AS oldest FROM outbox WHERE journal_seq IS NULL AND refused_reason IS NULL"
        )
        OUTBOX_OLDEST_SECONDS.labels(self.producer).set(float(row["oldest"]))
        return int(row["n"])

    async def _confirm_loop(self, kind: str) -> None:
        sub = self._subs[kind]
        while True:
            self.loops.round(kind)
            msgs = await fetch(sub, self.batch, 1.0)
            if not msgs:
                continue
            updates: list[tuple[str, int | None, str | None]] = []
            journaled: list[tuple[str, int]] = []
            settled = []  # messages done with: recorded, or set aside
            for m in msgs:
                if kind == "entries":
                    for record in unpack_records(m.data):
                        entry = decode_entry(record)
                        updates.append((entry.statement.idempotency_key, entry.seq, None))
                        journaled.append((entry.statement.subject, entry.seq))
                    settled.append(m)
                    continue
                try:
                    refusal = await self._open_refusal(m.data)
                except (EnvelopeRefused, DecodeError) as exc:
                    log.error("ALARM: ignored a refusal that is not the journal's: %s", exc)
                    settled.append(m)
                    continue
                except RETRY_LATER as exc:  # the journal's keys out of reach
                    log.warning("cannot check a refusal yet: %r", exc)
                    continue
                why = refusal.reason or "refused"
                updates.extend((key, None, why) for key in refusal.idempotency_keys)
                settled.append(m)
            try:
                # A journaled row stays journaled: a refusal never overrides an entry.
                await self.pool.executemany(
                    "UPDATE outbox SET journal_seq = coalesce($2, journal_seq),"
                    " refused_reason = CASE WHEN $2::bigint IS NOT NULL THEN NULL"
                    "   WHEN journal_seq IS NULL THEN coalesce($3, refused_reason)"
                    "   ELSE refused_reason END"
                    " WHERE idempotency_key = $1",
                    updates,
                )
            except TRANSIENT as exc:  # unacknowledged: they come again after ack_wait
                log.warning("outbox relay could not record %s: %r", kind, exc)
                continue
            for m in settled:
                await ack(m)
            if journaled and self.notify is not None:
                with contextlib.suppress(nats.errors.Error):  # it costs watchers latency only
                    await self.notify(notification(journaled))
            if kind == "refusals":
                for key, _, refusal_reason in updates:
                    log.error("journal refused %s: %s", key, refusal_reason)

    async def _open_refusal(self, data: bytes) -> bus_pb2.Refusal:
        subject = self.subjects.refusals(self.producer)
        refusal = await self.refusals.open_event(
            data, subject, bus_pb2.Refusal, producers=("journal",)
        )
        if refusal.producer != self.producer:
            raise EnvelopeRefused(f"a refusal for {refusal.producer}, not {self.producer}")
        return refusal


#: Bytes of a submission besides its statements: the batch's framing, producer,
#: key id and signature, the message's headers; with room to spare.
_FRAMING = 2048
#: Each statement's own framing inside a batch (its length prefix).
_PER_STATEMENT = 4


async def held_back(conn: Any) -> list[Any]:
    """The statements this outbox holds back for good: set aside by the relay (too
    large for any message) or refused by the journal, each with its reason."""
    rows: list[Any] = await conn.fetch(
        "SELECT id, idempotency_key, subject, length(statement) AS size, refused_reason,"
        " created_at FROM outbox WHERE refused_reason IS NOT NULL AND journal_seq IS NULL"
        " ORDER BY id"
    )
    return rows


def split_for_messages(
    rows: list[Any], per_message: int, max_payload: int
) -> tuple[list[list[Any]], list[Any]]:
    """Rows in groups that each fit one NATS message, in order; and the rows that
    fit none (a statement alone over the limit), to be set aside."""
    limit = max_payload - _FRAMING

    def size(r: Any) -> int:
        return len(r["statement"]) + _PER_STATEMENT

    fits = [r for r in rows if size(r) <= limit]
    too_big = [r for r in rows if size(r) > limit]
    return pack(fits, size, per_message, limit), too_big


AuditClient = Callable[[], AbstractAsyncContextManager[journal_pb2_grpc.AuditServiceStub]]


def audit_client(addr: str, tls: PartyCert) -> AuditClient:
    """A factory of short-lived channels to a journal (or replica) audit API."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[journal_pb2_grpc.AuditServiceStub]:
        async with client_channel(addr, tls) as channel:
            yield journal_pb2_grpc.AuditServiceStub(channel)

    return connect
