"""Who may publish, request, serve, listen to and consume what: one table.

Each service (and each bank's replica) is one NATS user. What a user may do
follows from its row below and nothing else:

- **publishes**: events and journal submissions of its own;
- **requests**: the commands and queries it sends to other services;
- **serves**: the subjects it answers (subscribed in its queue group); only
  it can answer there, so an answer cannot come from an impostor;
- **listens**: core NATS subjects it reads;
- **consumes**: the durable consumers it binds, each by name: fetch, ack and
  info on that consumer alone, never create, update, purge or delete of a
  stream or consumer, nor message deletes;
- every user reads its replies under an inbox prefix of its own
  (``_INBOX_<user>``), so no user can read another's.

Streams, consumers and buckets are created by the operator (the ``admin``
user: ``scf up``, ``scf nats init``), who alone may write the platform clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.contracts.subjects import (
    JOURNALING_PRODUCERS,
    ConsumerSpec,
    OrderVerb,
    Subjects,
)

__all__ = [
    "ADMIN",
    "DEFAULT_BANKS",
    "Grant",
    "grants",
    "nats_permissions",
    "replica_user",
]

ADMIN = "admin"
#: The example banks whose replicas `scf up` runs (SCF_BANKS changes them).
DEFAULT_BANKS: tuple[str, ...] = ("bank-north", "bank-south")


def replica_user(bank: str) -> str:
    return f"replica-{bank}"


@dataclass(frozen=True)
class Grant:
    """One user's row of the table."""

    user: str
    publishes: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()
    serves: tuple[str, ...] = ()
    listens: tuple[str, ...] = ()
    consumes: tuple[ConsumerSpec, ...] = field(default_factory=tuple)
    #: Reads the platform clock bucket (every service, in demo and test modes),
    #: and answers the operator's word that it moved.
    reads_clock: bool = True


def grants(subjects: Subjects, banks: tuple[str, ...] = DEFAULT_BANKS) -> dict[str, Grant]:
    """The table, for one platform prefix and its banks' replicas."""
    s = subjects

    def relays(producer: str) -> tuple[ConsumerSpec, ...]:
        return (s.relay(producer, "entries"), s.relay(producer, "refusals"))

    rows = [
        Grant(
            "journal",
            publishes=(
                s.entries("*"), s.refusals("*"), s.checkpoints,
                # root-signed key statements (rotation, revocation) from the admin API
                s.submit("platform"), s.journal_leader,
            ),
            listens=(s.cosignatures("*"),),
            consumes=(s.sequencer,),
        ),
        Grant(
            "orders",
            publishes=(s.submit("orders"), s.journaled("orders")),
            serves=(*(s.order_command(v) for v in OrderVerb), s.order_facts),
            listens=(s.journaled("orders"), s.journal_leader),
            consumes=relays("orders"),
        ),
        Grant(
            "scoring",
            publishes=(s.submit("scoring"), s.journaled("scoring")),
            requests=(s.order_facts, s.repayment_history),
            serves=(s.score,),
            listens=(s.journaled("scoring"), s.journal_leader),
            consumes=relays("scoring"),
        ),
        Grant(
            "lending",
            publishes=(s.submit("lending"), s.journaled("lending"), s.disbursed),
            requests=(
                s.order_command(OrderVerb.PLEDGE), s.order_command(OrderVerb.RELEASE),
                s.order_facts, s.score, s.lease_option,
            ),
            listens=(s.journaled("lending"), s.journal_leader),
            consumes=(*relays("lending"), s.lending_settled),
        ),
        Grant(
            "repayment",
            publishes=(s.submit("repayment"), s.journaled("repayment"), s.settled, s.delinquency),
            requests=(s.order_command(OrderVerb.SETTLE),),
            serves=(s.repayment_history, s.lease_option),
            listens=(s.journaled("repayment"), s.journal_leader),
            consumes=(*relays("repayment"), s.repayment_disbursed),
        ),
        *(
            Grant(
                replica_user(bank),
                publishes=(s.cosignatures(bank), s.replica_checkpoints(bank)),
                listens=(s.replica_checkpoints("*"),),
                consumes=(s.replica(bank),),
                reads_clock=False,
            )
            for bank in banks
        ),
    ]  # fmt: skip
    table = {g.user: g for g in rows}
    assert set(JOURNALING_PRODUCERS) <= set(table)
    return table


def nats_permissions(grant: Grant, subjects: Subjects) -> dict[str, object]:
    """A user's row as nats-server permissions (allow lists; all else denied)."""
    publish = [*grant.publishes, *grant.requests]
    for c in grant.consumes:
        publish += [
            f"$JS.API.CONSUMER.MSG.NEXT.{c.stream}.{c.durable}",
            f"$JS.API.CONSUMER.INFO.{c.stream}.{c.durable}",
            f"$JS.ACK.{c.stream}.{c.durable}.>",
        ]
    if grant.reads_clock:
        kv = f"KV_{subjects.clock_bucket}"
        publish += [
            f"$JS.API.STREAM.INFO.{kv}",
            f"$JS.API.DIRECT.GET.{kv}.>",
            f"$JS.API.STREAM.MSG.GET.{kv}",
        ]
    listens = [*grant.listens, *((subjects.clock_moved,) if grant.reads_clock else ())]
    permissions: dict[str, object] = {
        "publish": {"allow": publish},
        "subscribe": {"allow": [*grant.serves, *listens, f"{subjects.inbox(grant.user)}.>"]},
    }
    if grant.serves or grant.reads_clock:
        # Answers go only to the reply subjects of requests this user received.
        permissions["allow_responses"] = {"max": 1, "expires": "30s"}
    return permissions


def table_markdown(prefix: str = "scf", banks: tuple[str, ...] = DEFAULT_BANKS) -> str:
    """The table as docs/architecture.md shows it (a test keeps the two alike)."""
    subjects = Subjects(prefix)
    rows = [
        "| user | publishes | requests | serves (answers) | listens | consumes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def cell(items: tuple[str, ...]) -> str:
        return "<br>".join(f"`{i}`" for i in items) or "–"

    for g in grants(subjects, banks).values():
        consumes = tuple(f"{c.stream}/{c.durable}" for c in g.consumes)
        rows.append(
            f"| `{g.user}` | {cell(g.publishes)} | {cell(g.requests)} | {cell(g.serves)}"
            f" | {cell(g.listens)} | {cell(consumes)} |"
        )
    rows.append(
        f"| `{ADMIN}` | everything: creates every stream, consumer and bucket"
        " (`scf up`, `scf nats init`), writes the platform clock | | | | |"
    )
    return "\n".join(rows) + "\n"
