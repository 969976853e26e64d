"""No poison rows: statements too big to travel together are split into messages
that fit; one too big for any message is set aside with an alarm, and
everything after it flows on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.journal.service import SPEC as JOURNAL
from services.runtime.config import Settings
from services.runtime.journal_client import split_for_messages
from services.runtime.metrics import OUTBOX_SET_ASIDE
from tests.journal.helpers import producer
from tests.support import running, scf


def _rows(*sizes: int) -> list[dict[str, object]]:
    return [{"id": i, "statement": b"x" * n} for i, n in enumerate(sizes)]


def test_groups_fit_a_message_in_order_and_what_fits_none_is_set_aside() -> None:
    groups, too_big = split_for_messages(_rows(10, 600_000, 600_000, 2_000_000, 10), 256, 1 << 20)
    assert [[r["id"] for r in g] for g in groups] == [[0, 1], [2, 4]]
    assert [r["id"] for r in too_big] == [3]
    groups, _ = split_for_messages(_rows(*([1] * 600)), 256, 1 << 20)
    assert [len(g) for g in groups] == [256, 256, 88]


@pytest.mark.integration
async def test_large_statements_flow_and_one_too_large_is_set_aside(
    settings: Settings, tmp_path: Path
) -> None:
    before = OUTBOX_SET_ASIDE.labels("orders")._value.get()
    async with running(JOURNAL, settings), producer(settings) as p:
        keys = ["small-1", "large-1", "large-2", "huge", "small-2"]
        payloads = [b"{}", b"a" * 600_000, b"b" * 600_000, b"c" * 1_047_000, b"{}"]
        async with p.pool.acquire() as conn, conn.transaction():
            for key, payload in zip(keys, payloads, strict=True):
                await p.outbox.add(conn, "order/ORD-BIG", "order.noted", payload, key)
        confirmed = await p.wait_confirmed(4)
        assert set(confirmed) == {"small-1", "large-1", "large-2", "small-2"}

        async def set_aside() -> bool:
            reason = await p.pool.fetchval(
                "SELECT refused_reason FROM outbox WHERE idempotency_key = 'huge'"
            )
            return reason is not None

        await p.wait_until(set_aside, "the statement no message can carry set aside")
        row = await p.pool.fetchrow("SELECT * FROM outbox WHERE idempotency_key = 'huge'")
        assert row["journal_seq"] is None and "set aside by the relay" in row["refused_reason"]
        assert OUTBOX_SET_ASIDE.labels("orders")._value.get() == before + 1
        # The operator's listing names it (and exits 1: something is held back).
        listed = scf(settings, "journal", "held-back", cwd=tmp_path)
        assert listed.returncode == 1, listed.stderr
        assert "huge" in listed.stdout and "set aside by the relay" in listed.stdout
        assert "small-1" not in listed.stdout
        as_json = scf(settings, "journal", "held-back", "--json", cwd=tmp_path)
        assert as_json.returncode == 1, as_json.stderr
        (held,) = [r for r in json.loads(as_json.stdout) if r["idempotency_key"] == "huge"]
        assert held["service"] == "orders" and "set aside by the relay" in held["reason"]
        # Journaled in order, the large ones among them.
        seqs = [confirmed[k] for k in ("small-1", "large-1", "large-2", "small-2")]
        assert seqs == sorted(seqs)
