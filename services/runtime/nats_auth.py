"""NATS users, made from the permission table (services/contracts/permissions.py).

One user per service and per bank's replica, each allowed exactly its row of
the table, and ``admin`` (the operator's tools and the supervisor) allowed
everything: it creates the streams, consumers and buckets, and alone moves
the platform clock.

Passwords are derived from one platform secret (HMAC-SHA-256), so the
supervisor can hand each process its own password without storing a file
per user; a service never sees the secret, only its own password.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re

from services.contracts.permissions import (
    ADMIN,
    DEFAULT_BANKS,
    grants,
    nats_permissions,
    replica_user,
)
from services.contracts.subjects import Subjects

__all__ = [
    "ADMIN",
    "deploy_users_conf",
    "nats_password",
    "password_variable",
    "replica_user",
    "server_authorization",
    "users",
]


def nats_password(secret: str, user: str) -> str:
    """The password of ``user`` under the platform's NATS secret."""
    return hmac.new(secret.encode(), f"nats-user:{user}".encode(), hashlib.sha256).hexdigest()[:40]


def password_variable(user: str) -> str:
    """The environment variable a deployment keeps ``user``'s NATS password in."""
    return "SCF_NATS_PASSWORD_" + user.upper().replace("-", "_")


def users(prefix: str, banks: tuple[str, ...] = DEFAULT_BANKS) -> list[str]:
    return [*grants(Subjects(prefix), banks), ADMIN]


def _user_blocks(prefix: str, banks: tuple[str, ...], password: dict[str, str]) -> list[object]:
    subjects = Subjects(prefix)
    blocks: list[object] = [
        {"user": g.user, "password": password[g.user], "permissions": nats_permissions(g, subjects)}
        for g in grants(subjects, banks).values()
    ]
    blocks.append(
        {
            "user": ADMIN,
            "password": password[ADMIN],
            "permissions": {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}},
        }
    )
    return blocks


def server_authorization(
    secret: str, prefix: str = "scf", banks: tuple[str, ...] = DEFAULT_BANKS
) -> str:
    """The ``authorization`` block of a nats-server configuration for every user."""
    password = {u: nats_password(secret, u) for u in users(prefix, banks)}
    # nats-server reads JSON, as its configuration syntax is a superset of it.
    blocks = _user_blocks(prefix, banks, password)
    return "authorization " + json.dumps({"users": blocks}, indent=2) + "\n"


def deploy_users_conf(prefix: str = "scf", banks: tuple[str, ...] = DEFAULT_BANKS) -> str:
    """deploy/nats/users.conf: the same users, their passwords read from the
    server's environment (``$SCF_NATS_PASSWORD_<USER>``) instead of a secret."""
    password = {u: f"@env:{password_variable(u)}@" for u in users(prefix, banks)}
    text = json.dumps({"users": _user_blocks(prefix, banks, password)}, indent=2)
    # A bare $VARIABLE is nats-server's reference to the environment.
    text = re.sub(r'"@env:(\w+)@"', r"$\1", text)
    header = (
        "# SCF's NATS users: generated from services/contracts/permissions.py"
        " (a test compares).\n"
        "# Each user may do exactly its row of the table; see docs/architecture.md.\n"
    )
    return header + "authorization " + text + "\n"
