"""Durable consumers: created explicitly by the operator, replaced when their ack
policy changes, and only bound (never made) by a service."""

from __future__ import annotations

import nats
import pytest
from nats.js.api import AckPolicy

from services.contracts.subjects import ConsumerSpec
from services.runtime.bus import StreamSpec, bind, ensure_consumer, ensure_stream, fetch
from services.runtime.config import Settings
from services.runtime.errors import ConfigError

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
        all_acks = ConsumerSpec(spec.name, "worker", None, ack_policy="all")
        explicit = ConsumerSpec(spec.name, "worker", None)
        missing = r"consumer worker .* is missing: run `scf nats init`"
        with pytest.raises(ConfigError, match=missing):
            await bind(js, explicit)
        await ensure_consumer(js, all_acks)
        old = await bind(js, all_acks)
        taken = await fetch(old, 2, 5)
        assert [m.data for m in taken] == [b"1", b"2"]
        await taken[-1].ack_sync()
        await old.unsubscribe()
        # This version acknowledges each message: NATS cannot change the policy of
        # a consumer, so it is replaced, starting after what was acknowledged.
        with pytest.raises(ConfigError, match="differs from the platform's declaration"):
            await bind(js, explicit)
        await ensure_consumer(js, explicit)
        new = await bind(js, explicit)
        info = await js.consumer_info(spec.name, "worker")
        assert info.config.ack_policy == AckPolicy.EXPLICIT
        rest = await fetch(new, 10, 5)
        assert [m.data for m in rest] == [b"3", b"4"]
        for m in rest:
            await m.ack_sync()
        # Unchanged policy: the same consumer, nothing delivered again.
        await ensure_consumer(js, explicit)
        again = await bind(js, explicit)
        assert await fetch(again, 10, 0.5) == []
    finally:
        await js.delete_stream(spec.name)
        await nc.close()
