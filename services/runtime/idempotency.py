"""Idempotent mutating calls: one transaction that either replays the first
answer to a key or does the work and records its answer."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from google.protobuf.message import Message

from services.runtime.errors import AlreadyExists, InvalidArgument

__all__ = ["once"]

M = TypeVar("M", bound=Message)


async def once(
    pool: asyncpg.Pool[Any],
    party: str,
    method: str,
    idempotency_key: str,
    request: Message,
    response_type: type[M],
    work: Callable[[Any], Awaitable[M]],
) -> M:
    """Run ``work`` in a transaction, once per (party, method, key).

    The whole request is fingerprinted: a retry (same key, same request) gets
    the first answer, also when it arrives while the first is still running
    (a transaction-level advisory lock on the key serializes them); the same
    key with a different request is refused.
    """
    if not idempotency_key or len(idempotency_key) > 200:
        raise InvalidArgument("idempotency_key", "required, at most 200 characters")
    fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
    for attempt in range(2):
        try:
            async with pool.acquire() as conn, conn.transaction():
                # Identical calls at once queue here, so the later ones find the
                # first one's answer instead of racing it to an error. The lookup is a
                # statement of its own: its snapshot must be taken after the wait
                # (in one statement it would predate the first call's commit).
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    f"{party}\x1f{method}\x1f{idempotency_key}",
                )
                row = await conn.fetchrow(
                    "SELECT request_sha256, response FROM idempotency"
                    " WHERE party = $1 AND method = $2 AND idempotency_key = $3",
                    party,
                    method,
                    idempotency_key,
                )
                if row is not None:
                    if bytes(row["request_sha256"]) != fingerprint:
                        raise AlreadyExists(
                            f"idempotency key {idempotency_key!r} was used for a different request",
                            reason="IDEMPOTENCY_KEY_REUSED",
                        )
                    return response_type.FromString(bytes(row["response"]))
                response = await work(conn)
                await conn.execute(
                    "INSERT INTO idempotency (party, method, idempotency_key, request_sha256,"
                    " response) VALUES ($1, $2, $3, $4, $5)",
                    party,
                    method,
                    idempotency_key,
                    fingerprint,
                    response.SerializeToString(deterministic=True),
                )
                return response
        except asyncpg.UniqueViolationError as exc:
            # A concurrent retry of the same key committed first: replay its answer.
            if exc.constraint_name != "idempotency_pkey" or attempt:
                raise
    raise AssertionError("unreachable")
