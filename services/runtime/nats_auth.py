"""NATS users: one per service, each allowed to publish only its own subjects.

A service publishes its events under ``<prefix>.<service>.>``, submits its
journal statements on ``<prefix>.journal.submit.<service>``, and sends
requests only to the subjects of the services it calls. Replies to requests
it receives go back through ``allow_responses``, so no service may publish
on another's inbox. Every user may subscribe to anything (reading is not
what the journal has to defend; the journal's signatures are) and may use
the JetStream API. The ``admin`` user (operators' tools, the supervisor's
probe) may publish anything.

Passwords are derived from one platform secret (HMAC-SHA-256), so the
supervisor can hand each process its own password without storing a file
per user; a service never sees the secret, only its own password.
"""

from __future__ import annotations

import hashlib
import hmac
import json

__all__ = ["ADMIN", "PUBLISH", "REPLICA", "nats_password", "server_authorization"]

ADMIN = "admin"
#: Every bank's replica connects as this user.
REPLICA = "replica"

# The prefix (one subject token) differs per platform and per test: "*" takes any.
_JETSTREAM = ("$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.*.>")
PUBLISH: dict[str, tuple[str, ...]] = {
    "journal": ("*.journal.>",),
    "orders": ("*.orders.>", "*.journal.submit.orders"),
    "scoring": (
        "*.scoring.>", "*.journal.submit.scoring", "*.orders.facts", "*.repayment.history",
    ),
    "lending": (
        "*.lending.>", "*.journal.submit.lending", "*.orders.pledge", "*.orders.release",
        "*.orders.facts", "*.scoring.score", "*.repayment.lease_option",
    ),
    "repayment": ("*.repayment.>", "*.journal.submit.repayment", "*.orders.settle"),
    REPLICA: ("*.journal.cosignatures.*", "*.replicas.>"),
}  # fmt: skip


def nats_password(secret: str, user: str) -> str:
    """The password of ``user`` under the platform's NATS secret."""
    return hmac.new(secret.encode(), f"nats-user:{user}".encode(), hashlib.sha256).hexdigest()[:40]


def server_authorization(secret: str) -> str:
    """The ``authorization`` block of a nats-server configuration for every user."""
    users = []
    for user, subjects in PUBLISH.items():
        permissions = {
            "publish": {"allow": [*subjects, *_JETSTREAM]},
            "subscribe": {"allow": [">"]},
            "allow_responses": True,
        }
        users.append(
            {"user": user, "password": nats_password(secret, user), "permissions": permissions}
        )
    users.append(
        {
            "user": ADMIN,
            "password": nats_password(secret, ADMIN),
            "permissions": {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}},
        }
    )
    # nats-server reads JSON as its configuration syntax is a superset of it.
    return "authorization " + json.dumps({"users": users}, indent=2) + "\n"
