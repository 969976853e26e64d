"""NATS and JetStream: connection, the operator's stream and consumer set-up,
and a service's binding to what the operator made.

Streams and consumers are created or updated explicitly and their
configuration compared, because ``pull_subscribe`` never updates an existing
consumer (nats.py #603).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
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

from services.contracts.subjects import ConsumerSpec, StreamSpec, Subjects
from services.runtime.errors import ConfigError
from services.runtime.metrics import NATS_REDELIVERIES
from services.runtime.waiting import pause, stop_if_cancelled

__all__ = [
    "StreamSpec",
    "ack",
    "bind",
    "connect_nats",
    "ensure_consumer",
    "ensure_stream",
    "fetch",
]

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
    if user:  # replies come under this user's own prefix, which only it may read
        options["inbox_prefix"] = Subjects("").inbox(user)
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


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> None:
    """Create the stream, or update it when its configuration differs (the
    operator's step: services never make streams)."""
    wanted = StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=spec.max_age_s,
        max_msgs=spec.max_msgs,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=spec.replicas or 1,
    )
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("created stream %s", spec.name)
        return
    current = info.config
    if (
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


def _consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=spec.durable,
        filter_subject=spec.filter_subject,
        ack_policy=AckPolicy.ALL if spec.ack_policy == "all" else AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_ack_pending=spec.max_ack_pending,
        deliver_policy=DeliverPolicy.ALL,
    )


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create (or update) a durable pull consumer: the operator's step.

    NATS cannot change a consumer's ack policy; a consumer made with another
    one (by an earlier version) is replaced by one that starts after the last
    message the old one had acknowledged."""
    config = _consumer_config(spec)
    try:
        existing = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        existing = None
    if existing is not None and existing.config.ack_policy != config.ack_policy:
        await js.delete_consumer(spec.stream, spec.durable)
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = existing.ack_floor.stream_seq + 1 if existing.ack_floor else 1
        log.info("replaced consumer %s (ack policy %s)", spec.durable, existing.config.ack_policy)
    elif existing is not None:  # where it starts cannot be updated either
        config.deliver_policy = existing.config.deliver_policy
        config.opt_start_seq = existing.config.opt_start_seq
    await js.add_consumer(spec.stream, config)


async def bind(js: JetStreamContext, spec: ConsumerSpec) -> Any:
    """Bind to a consumer the operator made: a service never creates, updates or
    deletes streams or consumers (its NATS user may not)."""
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        raise ConfigError(
            "SCF_NATS_URL",
            f"consumer {spec.durable} on stream {spec.stream} is missing: run `scf nats init`",
        ) from None
    wanted = _consumer_config(spec)
    if (info.config.filter_subject or None) != wanted.filter_subject or (
        info.config.ack_policy != wanted.ack_policy
    ):
        raise ConfigError(
            "SCF_NATS_URL",
            f"consumer {spec.durable} on stream {spec.stream} differs from the platform's"
            " declaration: run `scf nats init`",
        )
    return await js.pull_subscribe_bind(spec.durable, stream=spec.stream)
