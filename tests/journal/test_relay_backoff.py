"""A statement the journal does not confirm is sent again, less and less often,
each time under a message id of its own."""

from __future__ import annotations

import pytest

from services.runtime.config import Settings
from services.runtime.journal_client import OutboxRelay
from tests.journal.helpers import producer

pytestmark = pytest.mark.integration


async def test_unconfirmed_statements_are_sent_again_less_and_less_often(
    settings: Settings,
) -> None:
    async with producer(settings, relay=False) as p:  # no journal: nothing is confirmed
        relay = OutboxRelay(p.pool, p.js, p.subjects, p.outbox, p.messenger, retry_after_s=5)
        await relay.setup()
        await p.append(1)

        async def sent_ago(seconds: int, attempts: int | None = None) -> int:
            """Pretend the last send was ``seconds`` ago; how many go out now."""
            await p.pool.execute(
                "UPDATE outbox SET published_at = now() - make_interval(secs => $1),"
                " attempts = coalesce($2, attempts)",
                seconds,
                attempts,
            )
            return await relay.publish_pending()

        assert await relay.publish_pending() == 1  # the first send
        assert await relay.publish_pending() == 0  # not due again at once
        assert await sent_ago(4) == 0
        assert await sent_ago(6) == 1  # sent once: again after 5 s
        assert await sent_ago(6) == 0  # sent twice: after 10 s
        assert await sent_ago(11) == 1
        assert await sent_ago(300, attempts=40) == 0  # at most 5 s x 64 apart
        assert await sent_ago(321) == 1
        assert await p.pool.fetchval("SELECT attempts FROM outbox") == 41

        stream = p.subjects.submit_stream.name
        info = await p.js.stream_info(stream)
        assert info.state.messages == 4
        ids = [
            (await p.js.get_msg(stream, seq)).headers["Nats-Msg-Id"]  # type: ignore[index]
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
        row = await p.pool.fetchval("SELECT id FROM outbox")
        assert ids[0] == f"orders:{row}-{row}"
        assert all(i.startswith(f"orders:{row}-{row}:retry-") for i in ids[1:])
        assert len(set(ids)) == 4  # none dropped by JetStream as a duplicate
