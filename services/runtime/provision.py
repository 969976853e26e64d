"""The operator's NATS set-up: every stream, consumer and bucket the platform uses.

Run as the ``admin`` user by ``scf up`` before any service starts, and by
``scf nats init`` in a deployment (deploy/). Services only bind to what this
made; their NATS users may not create, update or delete any of it.
"""

from __future__ import annotations

import dataclasses
import logging

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError

from services.contracts.permissions import DEFAULT_BANKS
from services.contracts.subjects import Subjects
from services.runtime.bus import ensure_consumer, ensure_stream

__all__ = ["provision"]

log = logging.getLogger(__name__)


async def provision(
    js: JetStreamContext,
    prefix: str,
    banks: tuple[str, ...] = DEFAULT_BANKS,
    *,
    replicas: int = 1,
) -> None:
    """Create or update everything; idempotent. ``replicas``: copies of each
    stream and bucket (SCF_STREAM_REPLICAS: 3 on a three-node cluster)."""
    subjects = Subjects(prefix)
    copies = replicas
    for stream in subjects.streams:
        await ensure_stream(js, dataclasses.replace(stream, replicas=copies))
    for consumer in subjects.consumers(banks):
        await ensure_consumer(js, consumer)
    try:
        await js.key_value(subjects.clock_bucket)
    except BucketNotFoundError:
        try:
            await js.create_key_value(bucket=subjects.clock_bucket, history=1, replicas=copies)
        except nats.errors.Error:  # made at the same moment by another operator's run
            await js.key_value(subjects.clock_bucket)
    log.info("NATS streams, consumers and buckets in place for prefix %s", prefix)
