"""NATS and JetStream: connection and explicit stream set-up.

Streams are created or updated at start-up and their configuration compared,
because ``pull_subscribe`` never updates an existing consumer (nats.py #603).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from services.runtime.errors import ConfigError
from services.runtime.metrics import NATS_REDELIVERIES
from services.runtime.waiting import pause, stop_if_cancelled

__all__ = ["StreamSpec", "ack", "connect_nats", "durable_subscription", "ensure_stream", "fetch"]

log = logging.getLogger(__name__)


async def connect_nats(
    url: str,
    name: str,
    *,
    connect_timeout: float = 5.0,
    user: str = "",
    password: str = "",
    ca_file: Path | None = None,
) -> NATS:
    """Connect, failing with the setting's name when the server does not answer.

    ``tls://`` servers are verified against ``ca_file`` (the platform CA)."""
    options: dict[str, Any] = {"user": user, "password": password} if user else {}
    if "tls://" in url and ca_file is not None:
        options["tls"] = ssl.create_default_context(cafile=str(ca_file))

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    try:
        # The client retries an unreachable server forever (max_reconnect_attempts
        # also covers the first connect), so bound the first connect here.
        async with asyncio.timeout(connect_timeout * 2):
            return await nats.connect(
                # A cluster: several URLs, comma-separated (the client takes a list).
                [u.strip() for u in url.split(",") if u.strip()],
                name=name,
                connect_timeout=connect_timeout,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=on_error,
                **options,
            )
    except Exception as exc:  # nats raises several unrelated types for "cannot connect"
        raise ConfigError("SCF_NATS_URL", f"cannot connect to NATS at {url}: {exc!r}") from None


_stream_replicas = 1


def set_stream_replicas(replicas: int) -> None:
    """How many copies JetStream keeps of every stream and bucket the platform
    creates (``SCF_STREAM_REPLICAS``: 3 on a three-node cluster). Set once, at start-up."""
    global _stream_replicas
    _stream_replicas = replicas


def stream_replicas() -> int:
    return _stream_replicas


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream the platform relies on."""

    name: str
    subjects: tuple[str, ...]
    #: Messages older than this many seconds are dropped (0 keeps them until limits).
    max_age_s: float = 0
    max_msgs: int = -1
    duplicate_window_s: float = 120
    #: Copies JetStream keeps; None: the platform's setting (set_stream_replicas).
    replicas: int | None = None


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, *, update: bool = True) -> None:
    """Create the stream, or update it when its configuration differs (unless
    ``update`` is False: a reader that starts first creates the stream it reads,
    but never reconfigures the one its owner made)."""
    wanted = StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=spec.max_age_s,
        max_msgs=spec.max_msgs,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=spec.replicas or _stream_replicas,
    )
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("created stream %s", spec.name)
        return
    current = info.config
    if update and (
        sorted(current.subjects or []) != sorted(spec.subjects)
        or (current.max_msgs or -1) != spec.max_msgs
        or float(current.max_age or 0) != float(spec.max_age_s)
        or (current.num_replicas or 1) != wanted.num_replicas
    ):
        await js.update_stream(wanted)
        log.info("updated stream %s", spec.name)


async def fetch(sub: JetStreamContext.PullSubscription, batch: int, timeout: float) -> list[Msg]:
    """A pull fetch for which "nothing yet" and "NATS is away" both mean an
    empty batch; while NATS is away it pauses, so callers do not spin. The
    client reconnects by itself, and unacknowledged messages come again."""
    try:
        msgs: list[Msg] = await sub.fetch(batch, timeout=timeout)
    except TimeoutError:  # nats raises its own TimeoutError or asyncio's
        msgs = []
    except nats.errors.Error as exc:
        log.warning("fetch failed (%r); retrying", exc)
        await pause(0.5)
        msgs = []
    # The fetch waits with wait_for, which may have swallowed a cancellation.
    stop_if_cancelled()
    if not msgs:
        return []
    redelivered = sum(1 for m in msgs if m.metadata.num_delivered > 1)
    if redelivered:
        NATS_REDELIVERIES.labels(msgs[0].metadata.consumer).inc(redelivered)
    return msgs


async def ack(msg: Msg) -> None:
    """Acknowledge; if NATS is away the message is redelivered, which callers absorb."""
    try:
        await msg.ack()
    except nats.errors.Error as exc:
        log.warning("ack failed (%r); the message will be redelivered", exc)


async def durable_subscription(
    js: JetStreamContext,
    stream: str,
    durable: str,
    filter_subject: str | None = None,
    *,
    ack_policy: AckPolicy = AckPolicy.EXPLICIT,
    ack_wait: float = 30,
    max_ack_pending: int = 1000,
) -> Any:
    """Create (or update) a durable pull consumer explicitly, then bind to it:
    ``pull_subscribe`` alone would not update an existing consumer (nats.py #603).

    NATS cannot change a consumer's ack policy; a consumer made with another
    one (by an earlier version) is replaced by one that starts after the last
    message the old one had acknowledged."""
    config = ConsumerConfig(
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=ack_policy,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        existing = await js.consumer_info(stream, durable)
    except NotFoundError:
        existing = None
    if existing is not None and existing.config.ack_policy != ack_policy:
        await js.delete_consumer(stream, durable)
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = existing.ack_floor.stream_seq + 1 if existing.ack_floor else 1
        log.info("replaced consumer %s (ack policy %s)", durable, existing.config.ack_policy)
    elif existing is not None:  # where it starts cannot be updated either
        config.deliver_policy = existing.config.deliver_policy
        config.opt_start_seq = existing.config.opt_start_seq
    await js.add_consumer(stream, config)
    return await js.pull_subscribe_bind(durable, stream=stream)
