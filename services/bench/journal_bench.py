"""Journal benchmarks: append throughput, offline verification, proof latency."""

from __future__ import annotations

import asyncio
import platform as host
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nats

from services.contracts.subjects import Subjects
from services.journal.checkpoint import Checkpoint, sign_checkpoint
from services.journal.encoding import (
    GENESIS_PREV_HASH,
    Entry,
    SignedBatch,
    Statement,
    batch_proofs,
    decode_statement,
    sign_batch,
)
from services.journal.keyset import EV_GENESIS, KEYS_SUBJECT, canonical_json, genesis_payload
from services.journal.offline import EXPORT_MAGIC, REC_CHECKPOINT, REC_ENTRY, REC_ROOT_KEY
from services.journal.tree import CompactRange
from services.runtime.config import SERVICE_NAMES, Settings
from services.runtime.db import connect_pool
from services.runtime.keys import Signer, load_or_create_signer
from services.runtime.platform import Platform

PRODUCERS = ("orders", "scoring", "lending", "repayment")


def machine() -> str:
    import os

    return f"{host.machine()}, {os.cpu_count()} cores, Python {host.python_version()}"


def _payload(i: int) -> bytes:
    # About the size of a real order event: a 400-byte entry in all.
    return canonical_json(
        {
            "order_id": f"ORD-{i:08d}",
            "amount_minor": 400_000_000 + i,
            "currency": "CNY",
            "buyer": "citybuild",
            "supplier": "acme-builders",
            "due_date": "2027-03-31",
            "contract_sha256": f"{i:064x}",
        }
    )


def statements(signer: Signer, n: int, start: int, micros: int) -> list[bytes]:
    return [
        Statement(
            producer=signer.name,
            key_id=signer.key_id,
            produced_micros=micros + i,
            subject=f"order/ORD-{i:08d}",
            event_type="order.registered",
            idempotency_key=f"bench-{i}",
            payload=_payload(i),
        ).encode()
        for i in range(start, start + n)
    ]


def signed_batches(signers: list[Signer], n: int, per_batch: int = 256) -> list[SignedBatch]:
    """``n`` statements in signed batches, as producers' relays submit them."""
    micros = time.time_ns() // 1000
    out = []
    for start in range(0, n, per_batch):
        signer = signers[(start // per_batch) % len(signers)]
        raws = statements(signer, min(per_batch, n - start), start, micros)
        out.append(sign_batch(signer.name, signer.key_id, signer.sign, raws))
    return out


@dataclass
class AppendResult:
    entries: int
    seconds: float
    entries_per_s: float
    publish_seconds: float
    machine: str


async def publish_batches(js: Any, subjects: Subjects, batches: list[SignedBatch]) -> None:
    """Publish pre-signed batches, 50 in flight at a time."""
    for chunk in range(0, len(batches), 50):
        await asyncio.gather(
            *(
                js.publish(subjects.submit(b.producer), b.encode(), timeout=30)
                for b in batches[chunk : chunk + 50]
            )
        )


async def wait_size(pool: Any, size: int, deadline: float, progress: Any = None) -> None:
    """Until the ``entries`` table behind ``pool`` holds ``size`` entries."""
    have = 0
    while have < size:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"reached only {have} entries of {size}")
        await asyncio.sleep(0.05)
        have = int(await pool.fetchval("SELECT coalesce(max(seq) + 1, 0) FROM entries"))
        if progress is not None:
            progress(have)


def bench_signers(settings: Settings) -> list[Signer]:
    for name in SERVICE_NAMES:
        load_or_create_signer(settings.keys_dir, name)
    return [load_or_create_signer(settings.keys_dir, p) for p in PRODUCERS]


async def fill_journal(
    settings: Settings, platform: Platform, n: int, progress: Any = None
) -> tuple[float, float]:
    """Start the journal and journal ``n`` pre-signed statements.

    Returns (seconds to publish, seconds until all were committed)."""
    batches = signed_batches(bench_signers(settings), n)
    await platform.probe_servers()  # and, as the operator, the streams and consumers
    platform.spawn("journal")
    await platform.wait_ready("journal")
    nc = await nats.connect(settings.nats_url)
    pool = await connect_pool(settings.database_url, settings.endpoint("journal").schema)
    try:
        started = time.perf_counter()
        await publish_batches(nc.jetstream(), Subjects(settings.nats_prefix), batches)
        published = time.perf_counter() - started
        await wait_size(pool, n + 1, started + max(300.0, n / 500), progress)
        return published, time.perf_counter() - started
    finally:
        await pool.close()
        await nc.close()


async def bench_append(settings: Settings, n: int, progress: Any = None) -> AppendResult:
    """Publish ``n`` pre-signed statements; time until the journal has committed all."""
    platform = Platform(settings, services=("journal",))
    try:
        published, elapsed = await fill_journal(settings, platform, n, progress)
    finally:
        platform.stop()
    return AppendResult(n, elapsed, n / elapsed, published, machine())


@dataclass
class AuditResult:
    entries: int
    #: The start-up check: everything verified from the root key.
    startup_seconds: float
    #: One background sweep at full speed, and within the default share of a core.
    sweep_seconds: float
    sweep_shared_seconds: float
    share: float
    machine: str


async def bench_audit(settings: Settings, n: int, progress: Any = None) -> AuditResult:
    """The journal's own check of a store of ``n`` entries: start-up, and one sweep."""
    from services.journal.self_audit import StoreAudit

    platform = Platform(settings, services=("journal",))
    try:
        await fill_journal(settings, platform, n, progress)
    finally:
        platform.stop()
    pool = await connect_pool(settings.database_url, settings.endpoint("journal").schema)
    try:
        root = load_or_create_signer(settings.keys_dir, "platform-root").public_raw
        audit = StoreAudit(pool, root, share=1.0)
        started = time.perf_counter()
        if not await audit.verify_all():
            raise RuntimeError(f"the store does not verify: {audit.damage}")
        startup = time.perf_counter() - started
        started = time.perf_counter()
        await audit.sweep()
        full = time.perf_counter() - started
        shared = StoreAudit(pool, root)
        await shared.verify_all()
        started = time.perf_counter()
        await shared.sweep()
        return AuditResult(
            audit.size, round(startup, 2), round(full, 2),
            round(time.perf_counter() - started, 2), shared.share, machine(),
        )  # fmt: skip
    finally:
        await pool.close()


def write_synthetic_export(
    path: Path, n: int, keys_dir: Path, checkpoint_every: int = 1000
) -> bytes:
    """An export of ``n`` signed entries plus genesis, built without any server.
    Returns the root public key."""
    root = load_or_create_signer(keys_dir, "platform-root")
    journal = load_or_create_signer(keys_dir, "journal")
    signers = [load_or_create_signer(keys_dir, p) for p in PRODUCERS]
    origin = "scf.journal/bench"
    keys = {s.name: s.public_raw for s in [journal, *signers]}
    genesis = Statement(
        "platform",
        root.key_id,
        0,
        KEYS_SUBJECT,
        EV_GENESIS,
        "genesis",
        genesis_payload(origin, keys),
    )
    tree = CompactRange()
    prev = GENESIS_PREV_HASH
    leaves: list[bytes] = []
    notes: list[str] = []

    def add(batch: SignedBatch) -> None:
        nonlocal prev
        for raw, proof in zip(
            batch.statements, batch_proofs(batch.statements, batch.signature), strict=True
        ):
            entry = Entry(
                tree.size, 1_700_000_000_000_000 + tree.size, prev, decode_statement(raw), proof
            )
            leaf = entry.encode()
            h = entry.leaf_hash()
            tree.append(h)
            prev = h
            leaves.append(leaf)
            if tree.size % checkpoint_every == 0 or tree.size == n + 1:
                cp = Checkpoint(origin, tree.size, tree.root(), tree.size)
                notes.append(sign_checkpoint(cp, journal, origin))

    add(sign_batch("platform", root.key_id, root.sign, [genesis.encode()]))
    for batch in signed_batches(signers, n):
        add(batch)
    import struct

    with path.open("wb") as f:
        f.write(EXPORT_MAGIC)
        f.write(struct.pack(">BI", REC_ROOT_KEY, 32) + root.public_raw)
        for note in notes:
            data = note.encode()
            f.write(struct.pack(">BI", REC_CHECKPOINT, len(data)) + data)
        for leaf in leaves:
            f.write(struct.pack(">BI", REC_ENTRY, len(leaf)) + leaf)
    return root.public_raw


@dataclass
class ProofResult:
    tree_size: int
    samples: int
    inclusion_p50_ms: float
    inclusion_p99_ms: float
    consistency_p50_ms: float
    consistency_p99_ms: float
    build_seconds: float
    machine: str


async def bench_proofs(
    settings: Settings, size: int, samples: int, progress: Any = None
) -> ProofResult:
    """Store the tree nodes of a ``size``-leaf tree, then time proofs read from PostgreSQL."""
    from services.journal.hashing import leaf_hash
    from services.journal.storage import JournalStore
    from services.journal.tree import (
        consistency_ranges,
        inclusion_ranges,
        perfect_nodes,
        range_hash,
    )
    from services.runtime.db import apply_migrations

    schema = settings.endpoint("journal").schema
    pool = await connect_pool(settings.database_url, schema, max_size=2)
    await apply_migrations(pool, schema, "services.journal")
    started = time.perf_counter()
    tree = CompactRange()
    chunk: list[tuple[int, int, bytes]] = []
    async with pool.acquire() as conn:
        for i in range(size):
            chunk.extend(tree.append(leaf_hash(i.to_bytes(8, "big"))))
            if len(chunk) >= 200_000 or i == size - 1:
                await conn.copy_records_to_table(
                    "tree_nodes", records=chunk, columns=("level", "idx", "hash")
                )
                chunk = []
                if progress is not None:
                    progress(i + 1)
        await conn.execute("ANALYZE tree_nodes")
    build = time.perf_counter() - started
    store = JournalStore(pool)
    root = tree.root()
    rng = random.Random(7)
    inclusion, consistency = [], []
    from services.journal.proofs import verify_consistency, verify_inclusion

    for _ in range(samples):
        index = rng.randrange(size)
        t0 = time.perf_counter()
        proof = await store.proof(inclusion_ranges(index, size))
        inclusion.append(time.perf_counter() - t0)
        verify_inclusion(index, size, leaf_hash(index.to_bytes(8, "big")), proof, root)
        first = rng.randrange(1, size)
        t0 = time.perf_counter()
        cproof = await store.proof(consistency_ranges(first, size))
        consistency.append(time.perf_counter() - t0)
        nodes = await store.nodes(perfect_nodes(0, first))
        verify_consistency(first, size, cproof, range_hash(0, first, nodes), root)
    await pool.close()

    def pct(xs: list[float], q: float) -> float:
        return round(sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000, 3)

    return ProofResult(
        size, samples, pct(inclusion, 0.5), pct(inclusion, 0.99),
        pct(consistency, 0.5), pct(consistency, 0.99), round(build, 1), machine(),
    )  # fmt: skip


def as_dict(result: Any) -> dict[str, Any]:
    out = asdict(result)
    for k, v in out.items():
        if isinstance(v, float):
            out[k] = round(v, 3)
    return out


__all__ = ["bench_append", "bench_proofs", "write_synthetic_export"]
