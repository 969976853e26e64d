"""The journal's PostgreSQL storage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.journal.encoding import BatchProof, Entry, Statement
from services.journal.keyset import PLATFORM_PRODUCER, KeySet
from services.journal.tree import CompactRange, NodeId, nodes_for, perfect_nodes, range_hash

__all__ = ["ENTRY_COLUMNS", "JournalStore", "StoredCheckpoint", "entry_record"]

ENTRY_COLUMNS = (
    "seq", "time_micros", "prev_hash", "producer", "key_id", "produced_micros",
    "subject", "event_type", "idempotency_key", "payload",
    "batch_size", "batch_index", "batch_path", "signature", "leaf_hash",
)  # fmt: skip


def checkpoints_channel(schema: str) -> str:
    return f"checkpoints_{schema}"


#: Announces (on commit) a new checkpoint or cosignature of this schema's journal.
_NOTIFY_CHECKPOINTS = "SELECT pg_notify('checkpoints_' || current_schema(), '')"

_SELECT_ENTRY = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries"


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    root_hash: bytes
    time_micros: int
    note: str


def entry_from_row(row: Mapping[str, Any]) -> Entry:
    path = bytes(row["batch_path"])
    return Entry(
        seq=row["seq"],
        time_micros=row["time_micros"],
        prev_hash=row["prev_hash"],
        statement=Statement(
            producer=row["producer"],
            key_id=row["key_id"],
            produced_micros=row["produced_micros"],
            subject=row["subject"],
            event_type=row["event_type"],
            idempotency_key=row["idempotency_key"],
            payload=row["payload"],
        ),
        batch=BatchProof(
            size=row["batch_size"],
            index=row["batch_index"],
            path=tuple(path[i : i + 32] for i in range(0, len(path), 32)),
            signature=row["signature"],
        ),
    )


def entry_record(entry: Entry, leaf_hash: bytes) -> tuple[Any, ...]:
    st = entry.statement
    return (
        entry.seq, entry.time_micros, entry.prev_hash, st.producer, st.key_id,
        st.produced_micros, st.subject, st.event_type, st.idempotency_key, st.payload,
        entry.batch.size, entry.batch.index, entry.batch.encode_path(), entry.signature, leaf_hash,
    )  # fmt: skip


class JournalStore:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool

    async def size(self) -> int:
        n = await self.pool.fetchval("SELECT coalesce(max(seq) + 1, 0) FROM entries")
        return int(n)

    async def nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        ids = list(ids)
        if not ids:
            return {}
        rows = await self.pool.fetch(
            "SELECT level, idx, hash FROM tree_nodes"
            " WHERE (level, idx) IN (SELECT * FROM unnest($1::smallint[], $2::bigint[]))",
            [i[0] for i in ids],
            [i[1] for i in ids],
        )
        return {(r["level"], r["idx"]): r["hash"] for r in rows}

    async def load_tree(self, size: int) -> CompactRange:
        nodes = await self.nodes(perfect_nodes(0, size)) if size else {}
        return CompactRange.from_nodes(size, nodes)

    async def last_leaf_hash(self) -> bytes | None:
        h = await self.pool.fetchval("SELECT leaf_hash FROM entries ORDER BY seq DESC LIMIT 1")
        return bytes(h) if h is not None else None

    async def load_keys(self, root_public_key: bytes, upto: int | None = None) -> KeySet:
        keys = KeySet(root_public_key)
        rows = await self.pool.fetch(
            f"{_SELECT_ENTRY} WHERE producer = $1 AND ($2::bigint IS NULL OR seq < $2)"
            " ORDER BY seq",
            PLATFORM_PRODUCER,
            upto,
        )
        for row in rows:
            keys.apply(entry_from_row(row))
        return keys

    async def existing(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Sequence numbers of the (producer, idempotency key) pairs already journaled."""
        if not keys:
            return {}
        rows = await self.pool.fetch(
            "SELECT producer, idempotency_key, seq FROM entries"
            " WHERE (producer, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {(r["producer"], r["idempotency_key"]): r["seq"] for r in rows}

    async def commit(
        self,
        entries: Sequence[tuple[Entry, bytes]],
        nodes: Sequence[tuple[int, int, bytes]],
        checkpoints: Sequence[StoredCheckpoint] = (),
        refusals: Sequence[tuple[str, str, str, bytes]] = (),
    ) -> None:
        """Store a batch of entries, their tree nodes and checkpoints, atomically."""
        async with self.pool.acquire() as conn, conn.transaction():
            if entries:
                await conn.copy_records_to_table(
                    "entries",
                    records=[entry_record(e, h) for e, h in entries],
                    columns=ENTRY_COLUMNS,
                )
                await conn.copy_records_to_table(
                    "tree_nodes", records=list(nodes), columns=("level", "idx", "hash")
                )
            if checkpoints:
                await conn.executemany(
                    "INSERT INTO checkpoints (tree_size, root_hash, time_micros, note)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size) DO NOTHING",
                    [(c.tree_size, c.root_hash, c.time_micros, c.note) for c in checkpoints],
                )
                await conn.execute(_NOTIFY_CHECKPOINTS)
            if refusals:
                await conn.executemany(
                    "INSERT INTO refusals (producer, idempotency_key, reason, message)"
                    " VALUES ($1, $2, $3, $4)",
                    refusals,
                )

    async def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        row = await self.pool.fetchrow("SELECT * FROM checkpoints WHERE tree_size = $1", size)
        return StoredCheckpoint(**dict(row)) if row is not None else None

    async def root_at(self, size: int) -> bytes:
        """MTH of the first ``size`` stored entries, from stored tree nodes."""
        return range_hash(0, size, await self.nodes(perfect_nodes(0, size)))

    async def add_cosignature(self, size: int, witness: str, line: str) -> None:
        await self.pool.execute(
            "WITH added AS (INSERT INTO cosignatures (tree_size, witness, line)"
            " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1)"
            f" {_NOTIFY_CHECKPOINTS} FROM added",
            size,
            witness,
            line,
        )

    async def checkpoints_channel(self) -> str:
        """The channel on which this store announces each new checkpoint and
        cosignature once committed (watch calls listen to it)."""
        return checkpoints_channel(str(await self.pool.fetchval("SELECT current_schema()")))

    async def cosigned_checkpoint(self, min_cosignatures: int) -> StoredCheckpoint | None:
        """The latest checkpoint with at least ``min_cosignatures``, its lines appended."""
        from services.journal.witness import add_lines

        row = await self.pool.fetchrow(
            "SELECT c.*, coalesce(array_agg(s.line ORDER BY s.witness)"
            " FILTER (WHERE s.line IS NOT NULL), '{}') AS lines"
            " FROM checkpoints c LEFT JOIN cosignatures s USING (tree_size)"
            " GROUP BY c.tree_size HAVING count(s.line) >= $1"
            " ORDER BY c.tree_size DESC LIMIT 1",
            min_cosignatures,
        )
        if row is None:
            return None
        note = add_lines(row["note"], list(row["lines"])) if row["lines"] else row["note"]
        return StoredCheckpoint(row["tree_size"], row["root_hash"], row["time_micros"], note)

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        row = await self.pool.fetchrow("SELECT * FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
        return StoredCheckpoint(**dict(row)) if row is not None else None

    async def checkpoint_notes(self) -> list[str]:
        """Every checkpoint's note, with the cosignature lines collected for it."""
        from services.journal.witness import add_lines

        rows = await self.pool.fetch(
            "SELECT c.note, coalesce(array_agg(s.line ORDER BY s.witness)"
            " FILTER (WHERE s.line IS NOT NULL), '{}') AS lines"
            " FROM checkpoints c LEFT JOIN cosignatures s USING (tree_size)"
            " GROUP BY c.tree_size ORDER BY c.tree_size"
        )
        return [add_lines(r["note"], list(r["lines"])) if r["lines"] else r["note"] for r in rows]

    async def checkpoints(self) -> list[StoredCheckpoint]:
        rows = await self.pool.fetch("SELECT * FROM checkpoints ORDER BY tree_size")
        return [StoredCheckpoint(**dict(r)) for r in rows]

    async def entries(self, start: int, end: int, chunk: int = 2000) -> AsyncIterator[Entry]:
        """Entries [start, end) in order, read in chunks."""
        pos = start
        while pos < end:
            rows = await self.pool.fetch(
                f"{_SELECT_ENTRY} WHERE seq >= $1 AND seq < $2 ORDER BY seq",
                pos,
                min(end, pos + chunk),
            )
            if not rows:
                return
            for row in rows:
                yield entry_from_row(row)
            pos = rows[-1]["seq"] + 1

    async def entry(self, seq: int) -> Entry | None:
        row = await self.pool.fetchrow(f"{_SELECT_ENTRY} WHERE seq = $1", seq)
        return entry_from_row(row) if row is not None else None

    async def subject_history(self, subject: str) -> list[Entry]:
        rows = await self.pool.fetch(f"{_SELECT_ENTRY} WHERE subject = $1 ORDER BY seq", subject)
        return [entry_from_row(r) for r in rows]

    async def key_entry_for(self, key_id: bytes) -> Entry | None:
        """The platform entry that registered ``key_id``."""
        rows = await self.pool.fetch(
            f"{_SELECT_ENTRY} WHERE producer = $1 AND event_type IN"
            " ('keys.genesis', 'keys.registered') ORDER BY seq",
            PLATFORM_PRODUCER,
        )
        needle = key_id.hex()
        for row in rows:
            entry = entry_from_row(row)
            if needle in _registered_key_ids(entry):
                return entry
        return None

    async def proof(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        nodes = await self.nodes(nodes_for(ranges))
        return [range_hash(lo, hi, nodes) for lo, hi in ranges]

    async def publication(self) -> int:
        return int(await self.pool.fetchval("SELECT next_seq FROM publication"))

    async def set_publication(self, next_seq: int) -> None:
        await self.pool.execute(
            "UPDATE publication SET next_seq = $1 WHERE next_seq < $1", next_seq
        )


def _registered_key_ids(entry: Entry) -> set[str]:
    import json

    from services.runtime.keys import key_id_of

    body = json.loads(entry.statement.payload)
    keys = body.get("keys") or [body]
    return {key_id_of(bytes.fromhex(k["public_key"])).hex() for k in keys if "public_key" in k}
