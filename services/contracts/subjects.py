"""Every NATS subject, JetStream stream, consumer and bucket of the platform.

All names hang under one prefix (``SCF_NATS_PREFIX``), so several platforms
(or tests) can share one server. The permission table
(:mod:`services.contracts.permissions`) is written in terms of these names,
and the operator creates every stream, consumer and bucket from them
(:func:`services.runtime.provision.provision`); services only bind.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "HDR_FIRST_SEQ",
    "HDR_LAST_SEQ",
    "HDR_TRACES",
    "JOURNALING_PRODUCERS",
    "ConsumerSpec",
    "OrderVerb",
    "StreamSpec",
    "Subjects",
]

#: The services that journal through an outbox relay (the journal itself sequences).
JOURNALING_PRODUCERS: tuple[str, ...] = ("orders", "scoring", "lending", "repayment")


#: Headers on each message of journal entries: the sequence numbers it holds.
HDR_FIRST_SEQ = "Scf-First-Seq"
HDR_LAST_SEQ = "Scf-Last-Seq"
#: On a journal submission: ``<index>=<traceparent>,...`` for its traced statements
#: (a W3C trace context per statement, by its place in the batch; not signed:
#: it places the journal's span in a trace and decides nothing).
HDR_TRACES = "Scf-Traces"


class OrderVerb(Enum):
    """Commands orders takes over NATS, and who alone may send each."""

    PLEDGE = "pledge"
    RELEASE = "release"
    SETTLE = "settle"

    @property
    def sender(self) -> str:
        return "repayment" if self is OrderVerb.SETTLE else "lending"


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream the platform relies on."""

    name: str
    subjects: tuple[str, ...]
    #: Messages older than this many seconds are dropped (0 keeps them until limits).
    max_age_s: float = 0
    max_msgs: int = -1
    duplicate_window_s: float = 120
    #: Copies JetStream keeps; None: the platform's setting (SCF_STREAM_REPLICAS).
    replicas: int | None = None


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer: made by the operator, bound by its one user."""

    stream: str
    durable: str
    filter_subject: str | None
    #: "explicit" (each message acknowledged by itself) or "all" (cumulative).
    ack_policy: str = "explicit"
    ack_wait_s: float = 30
    max_ack_pending: int = 1000


def _token(name: str) -> str:
    """A bank or producer name as one subject token and a legal consumer name."""
    return name.replace("-", "_").replace(".", "_")


@dataclass(frozen=True)
class Subjects:
    """The platform's names under one prefix."""

    prefix: str

    # -- request-reply between services (core NATS) -------------------------

    def order_command(self, verb: OrderVerb) -> str:
        return f"{self.prefix}.orders.{verb.value}"

    @property
    def order_facts(self) -> str:
        return f"{self.prefix}.orders.facts"

    @property
    def score(self) -> str:
        return f"{self.prefix}.scoring.score"

    @property
    def repayment_history(self) -> str:
        return f"{self.prefix}.repayment.history"

    @property
    def lease_option(self) -> str:
        return f"{self.prefix}.repayment.lease_option"

    # -- events -------------------------------------------------------------

    @property
    def disbursed(self) -> str:
        """JetStream: lending's disbursements, for repayment."""
        return f"{self.prefix}.lending.disbursed"

    @property
    def settled(self) -> str:
        """JetStream: repayment's settlements, for lending."""
        return f"{self.prefix}.repayment.settled"

    @property
    def delinquency(self) -> str:
        """Core NATS: a loan changed bucket (for anyone watching)."""
        return f"{self.prefix}.repayment.delinquency"

    def journaled(self, producer: str) -> str:
        """Core NATS: which of ``producer``'s subjects the journal has just
        confirmed (its relay tells its watch calls; unsigned, grants nothing)."""
        return f"{self.prefix}.journaled.{producer}"

    @property
    def clock_moved(self) -> str:
        """Core NATS: the operator moved the platform clock; every follower answers."""
        return f"{self.prefix}.clock.moved"

    # -- the journal ----------------------------------------------------------

    def submit(self, producer: str) -> str:
        return f"{self.prefix}.journal.submit.{producer}"

    def entries(self, producer: str) -> str:
        return f"{self.prefix}.journal.entries.{producer}"

    def refusals(self, producer: str) -> str:
        return f"{self.prefix}.journal.refusals.{producer}"

    @property
    def journal_leader(self) -> str:
        """Core NATS: a journal instance began to lead (a standby took over); the
        relays send again at once what they sent and saw no entry for."""
        return f"{self.prefix}.journal.leader"

    @property
    def checkpoints(self) -> str:
        return f"{self.prefix}.journal.checkpoints"

    def cosignatures(self, bank: str = "*") -> str:
        """Core NATS: a replica's cosignature, for the journal to collect."""
        return f"{self.prefix}.journal.cosignatures.{bank}"

    def replica_checkpoints(self, bank: str = "*") -> str:
        """Core NATS: checkpoints a replica verified, for the other replicas to compare."""
        return f"{self.prefix}.replicas.checkpoints.{bank}"

    def inbox(self, user: str) -> str:
        """The inbox prefix of one NATS user: nobody else may read its replies."""
        return f"_INBOX_{_token(user)}"

    # -- streams, consumers, buckets -------------------------------------------

    @property
    def submit_stream(self) -> StreamSpec:
        return StreamSpec(
            name=f"{self.prefix.upper()}_JOURNAL_SUBMIT",
            subjects=(f"{self.prefix}.journal.submit.>",),
        )

    @property
    def journal_stream(self) -> StreamSpec:
        return StreamSpec(
            name=f"{self.prefix.upper()}_JOURNAL",
            subjects=(
                f"{self.prefix}.journal.entries.>",
                f"{self.prefix}.journal.refusals.>",
                self.checkpoints,
            ),
        )

    @property
    def lending_stream(self) -> StreamSpec:
        """Lending's disbursements and repayment's settlements: both must not be lost."""
        return StreamSpec(
            name=f"{self.prefix.upper()}_LENDING", subjects=(self.disbursed, self.settled)
        )

    @property
    def streams(self) -> tuple[StreamSpec, ...]:
        return (self.submit_stream, self.journal_stream, self.lending_stream)

    @property
    def clock_bucket(self) -> str:
        """The key-value bucket of the platform clock (demo and test modes)."""
        return f"{self.prefix.upper()}_CLOCK"

    @property
    def sequencer(self) -> ConsumerSpec:
        # Each submission acknowledged by itself once journaled (see the sequencer).
        return ConsumerSpec(
            self.submit_stream.name, "sequencer", None, ack_wait_s=10, max_ack_pending=4096
        )

    def relay(self, producer: str, kind: str) -> ConsumerSpec:
        """A relay's confirmations (``entries``) or refusals; a restarted relay's
        old pull request can swallow a message, so ack_wait is short."""
        subject = self.entries(producer) if kind == "entries" else self.refusals(producer)
        return ConsumerSpec(
            self.journal_stream.name, f"relay_{_token(producer)}_{kind}", subject,
            ack_wait_s=5, max_ack_pending=10_000,
        )  # fmt: skip

    @property
    def repayment_disbursed(self) -> ConsumerSpec:
        return ConsumerSpec(self.lending_stream.name, "repayment_disbursed", self.disbursed)

    @property
    def lending_settled(self) -> ConsumerSpec:
        return ConsumerSpec(self.lending_stream.name, "lending_settled", self.settled)

    def replica(self, bank: str) -> ConsumerSpec:
        return ConsumerSpec(
            self.journal_stream.name, f"replica_{_token(bank)}", None,
            ack_policy="all", max_ack_pending=20_000,
        )  # fmt: skip

    def consumers(self, banks: tuple[str, ...]) -> tuple[ConsumerSpec, ...]:
        """Every consumer the platform (with these banks' replicas) binds."""
        relays = tuple(
            self.relay(p, kind) for p in JOURNALING_PRODUCERS for kind in ("entries", "refusals")
        )
        return (
            self.sequencer,
            *relays,
            self.repayment_disbursed,
            self.lending_settled,
            *(self.replica(bank) for bank in banks),
        )
