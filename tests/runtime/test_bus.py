"""Durable consumers: created explicitly, and replaced when their ack policy changes."""

from __future__ import annotations

import nats
import pytest
from nats.js.api import AckPolicy

from services.runtime.bus import StreamSpec, durable_subscription, ensure_stream, fetch
from services.runtime.config import Settings

pytestmark = pytest.mark.integration


async def test_a_consumer_whose_ack_policy_changes_goes_on_where_it_was(
    settings: Settings,
) -> None:
    prefix = settings.nats_prefix
    spec = StreamSpec(name=f"{prefix.upper()}_ACKS", subjects=(f"{prefix}.acks.>",))
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    try:
        await ensure_stream(js, spec)
        for i in range(1, 5):
            await js.publish(f"{prefix}.acks.x", str(i).encode())
        # An earlier version: acknowledging message 2 acknowledged 1 and 2.
        old = await durable_subscription(js, spec.name, "worker", ack_policy=AckPolicy.ALL)
        taken = await fetch(old, 2, 5)
        assert [m.data for m in taken] == [b"1", b"2"]
        await taken[-1].ack_sync()
        await old.unsubscribe()
        # This version acknowledges each message: NATS cannot change the policy of
        # a consumer, so it is replaced, starting after what was acknowledged.
        new = await durable_subscription(js, spec.name, "worker", ack_policy=AckPolicy.EXPLICIT)
        info = await js.consumer_info(spec.name, "worker")
        assert info.config.ack_policy == AckPolicy.EXPLICIT
        rest = await fetch(new, 10, 5)
        assert [m.data for m in rest] == [b"3", b"4"]
        for m in rest:
            await m.ack_sync()
        # Unchanged policy: the same consumer, nothing delivered again.
        again = await durable_subscription(js, spec.name, "worker", ack_policy=AckPolicy.EXPLICIT)
        assert await fetch(again, 10, 0.5) == []
    finally:
        await js.delete_stream(spec.name)
        await nc.close()
