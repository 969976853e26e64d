"""What the explorer shows, read from a journal store (the journal's own, or a
bank replica's verified copy). Read-only: nothing here writes.

Every entry it shows comes from the ``entries`` table as stored; what makes it
trustworthy is the browser's own check (static/verify.js) against a signed
checkpoint, not this module's word.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.journal.checkpoint import CheckpointError, parse_note
from services.journal.encoding import Entry
from services.journal.storage import ENTRY_COLUMNS, JournalStore, entry_from_row
from services.journal.tree import consistency_ranges, inclusion_ranges
from services.journal.witness import add_lines, cosigners
from services.journal.witness_keys import read_witness_keys

__all__ = ["ExplorerData", "entry_view"]

_SELECT_ENTRY = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries"
#: Entries on one page of the browser.
PAGE = 50
#: Subjects one search lists at most.
SEARCH_LIMIT = 100


def entry_view(entry: Entry) -> dict[str, Any]:
    """An entry as the templates show it: its fields, its payload decoded."""
    st = entry.statement
    try:
        payload: Any = json.loads(st.payload)
    except ValueError:
        payload = st.payload.hex()
    return {
        "seq": entry.seq,
        "time_micros": entry.time_micros,
        "producer": st.producer,
        "key_id": st.key_id.hex(),
        "produced_micros": st.produced_micros,
        "subject": st.subject,
        "event_type": st.event_type,
        "idempotency_key": st.idempotency_key,
        "payload": payload,
        "batch": {"size": entry.batch.size, "index": entry.batch.index},
        "prev_hash": entry.prev_hash.hex(),
        "leaf_hash": entry.leaf_hash().hex(),
        "signature": entry.signature.hex(),
    }


@dataclass
class ExplorerData:
    store: JournalStore
    #: Where the banks' witness public keys are (``witness-<bank>.pub``).
    keys_dir: Path
    #: The platform root's public key, the deployment's trust anchor: the journal
    #: keys it registered are pinned in every page the browser checks.
    root_public: bytes

    async def journal_keys(self) -> list[bytes]:
        keys = await self.store.load_keys(self.root_public)
        return [k.public_key for k in keys.journal_keys()]

    @property
    def pool(self) -> Any:
        return self.store.pool

    def witnesses(self) -> dict[str, bytes]:
        return read_witness_keys(self.keys_dir)

    async def latest(self) -> dict[str, Any] | None:
        """The latest checkpoint, every signature line on it, and whether each verifies."""
        cp = await self.store.cosigned_checkpoint(0)
        if cp is None:
            return None
        note = parse_note(add_lines(cp.note, await self._own_cosignatures(cp.tree_size)))
        origin = note.checkpoint.origin
        signed_by_journal = False
        for key in await self.journal_keys():
            try:
                note.verify(origin, key)
                signed_by_journal = True
            except CheckpointError:
                continue
        witnesses = self.witnesses()
        good = cosigners(note, witnesses)
        lines = []
        for name, _, _ in note.signatures:
            if name == origin:
                lines.append({"name": name, "role": "journal", "verified": signed_by_journal})
            else:
                known = name in witnesses
                lines.append({"name": name, "role": "witness" if known else "unknown key",
                              "verified": name in good})  # fmt: skip
        return {
            "size": cp.tree_size,
            "root": cp.root_hash.hex(),
            "time_micros": cp.time_micros,
            "origin": origin,
            "note": note.text,
            "signatures": lines,
        }

    async def _own_cosignatures(self, size: int) -> list[str]:
        """A bank replica's own cosignature on the checkpoint of ``size`` (its
        ``cosigned`` table; the journal's store has none: it collects the banks')."""
        if await self.pool.fetchval("SELECT to_regclass('cosigned')") is None:
            return []
        rows = await self.pool.fetch("SELECT line FROM cosigned WHERE tree_size = $1", size)
        return [r["line"] for r in rows]

    async def checkpoint_history(self, limit: int = 500) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT c.tree_size, c.root_hash, c.time_micros, count(s.line) AS cosignatures"
            " FROM checkpoints c LEFT JOIN cosignatures s USING (tree_size)"
            " GROUP BY c.tree_size ORDER BY c.tree_size DESC LIMIT $1",
            limit,
        )
        return [
            {"size": r["tree_size"], "root": bytes(r["root_hash"]).hex(),
             "time_micros": r["time_micros"], "cosignatures": r["cosignatures"]}
            for r in rows
        ]  # fmt: skip

    async def entries(
        self, start: int, producer: str = "", event_type: str = ""
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"{_SELECT_ENTRY} WHERE seq >= $1 AND ($2 = '' OR producer = $2)"
            " AND ($3 = '' OR event_type = $3) ORDER BY seq LIMIT $4",
            start, producer, event_type, PAGE,
        )  # fmt: skip
        return [entry_view(entry_from_row(r)) for r in rows]

    async def facets(self) -> dict[str, list[str]]:
        """The producers and event types there are, to filter by."""
        producers = await self.pool.fetch("SELECT DISTINCT producer FROM entries ORDER BY 1")
        events = await self.pool.fetch("SELECT DISTINCT event_type FROM entries ORDER BY 1")
        return {"producers": [r[0] for r in producers], "event_types": [r[0] for r in events]}

    async def entry(self, seq: int) -> dict[str, Any] | None:
        entry = await self.store.entry(seq)
        return entry_view(entry) if entry is not None else None

    async def story(self, subject: str) -> list[Entry]:
        """Everything that happened to ``subject``; for an order, its money too:
        the applications that name it, their scoring, and their loans."""
        kind, _, ident = subject.partition("/")
        if kind != "order":
            return await self.store.subject_history(subject)
        needle = json.dumps({"order_id": ident}, separators=(",", ":"))[1:-1].encode()
        rows = await self.pool.fetch(
            "WITH apps AS (SELECT DISTINCT substr(subject, 13) AS id FROM entries"
            "  WHERE subject LIKE 'application/%' AND position($2::bytea IN payload) > 0)"
            f" {_SELECT_ENTRY} WHERE subject = $1"
            " OR subject IN (SELECT 'application/' || id FROM apps)"
            " OR subject IN (SELECT 'loan/' || id FROM apps) ORDER BY seq",
            subject, needle,
        )  # fmt: skip
        return [entry_from_row(r) for r in rows]

    async def search(self, query: str) -> list[dict[str, Any]]:
        """Subjects named ``query`` (an order, application, loan, lease, facility
        or party id), and subjects whose entries name it as a value (an order's
        subcontractor or buyer, say)."""
        query = query.strip()
        if not query:
            return []
        exact = [f"{kind}/{query}" for kind in
                 ("order", "application", "loan", "facility", "party", "model")]  # fmt: skip
        quoted = json.dumps(query).encode()
        rows = await self.pool.fetch(
            "SELECT subject, count(*) AS n, min(seq) AS first, max(seq) AS last FROM entries"
            " WHERE subject = ANY($1::text[]) OR position($2::bytea IN payload) > 0"
            " GROUP BY subject ORDER BY min(seq) LIMIT $3",
            exact, quoted, SEARCH_LIMIT,
        )  # fmt: skip
        return [dict(r) for r in rows]

    async def card(self, order_id: str) -> dict[str, Any] | None:
        """An order's story with what a browser needs to check it on its own:
        the latest checkpoint as signed, and each entry's bytes and inclusion
        proof against it (entries after it are listed as not yet covered)."""
        entries = await self.story(f"order/{order_id}")
        if not entries:
            return None
        cp = await self.store.cosigned_checkpoint(0)
        if cp is None:
            return None
        size = cp.tree_size
        covered, pending = [], []
        for entry in entries:
            if entry.seq >= size:
                pending.append(entry.seq)
                continue
            proof = await self.store.proof(inclusion_ranges(entry.seq, size))
            covered.append({
                "seq": entry.seq,
                "leaf": _b64(entry.encode()),
                "proof": [_b64(p) for p in proof],
            })  # fmt: skip
        return {"order_id": order_id, "checkpoint": cp.note, "tree_size": size,
                "entries": covered, "pending": pending}  # fmt: skip

    async def consistency(self, first: int, second: int) -> list[str]:
        """The proof that the tree of ``first`` entries is a prefix of ``second``'s."""
        if not 0 < first <= second:
            raise ValueError("0 < first <= second")
        return [_b64(p) for p in await self.store.proof(consistency_ranges(first, second))]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
