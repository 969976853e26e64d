"""How the journal service is assembled."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from services.gen.scf.journal.v1 import journal_pb2_grpc
from services.journal.admin import AdminServicer
from services.journal.audit import AuditServicer
from services.journal.checkpoint import parse_note
from services.journal.explorer import Access, ExplorerData, make_app, serve_explorer
from services.journal.genesis import (
    GENESIS_FILE,
    ROOT_KEY_NAME,
    load_genesis,
    load_root_public,
    origin_for,
)
from services.journal.self_audit import Damage, StoreAudit
from services.journal.sequencer import Sequencer, SequencerConfig
from services.journal.storage import JournalStore
from services.journal.witness import add_lines, cosigners
from services.journal.witness_keys import read_witness_keys
from services.runtime.certs import load_party
from services.runtime.service import ServiceContext, ServiceSpec

__all__ = ["ROOT_KEY_NAME", "SPEC", "origin_for"]

log = logging.getLogger(__name__)


class CosignatureCollector:
    """Keeps the cosignatures that bank replicas send, once they verify.

    Witness keys are ``witness-<bank>.pub`` in the keys directory: the banks
    whose cosignatures the operator agreed to collect.
    """

    def __init__(self, store: JournalStore, keys_dir: Path) -> None:
        self.store = store
        self.keys_dir = keys_dir

    async def on_message(self, msg: Msg) -> None:
        bank = msg.subject.rsplit(".", 1)[-1]
        try:
            body = json.loads(msg.data)
            size, line = int(body["tree_size"]), str(body["line"])
            public = read_witness_keys(self.keys_dir)[bank]
        except (ValueError, KeyError, OSError) as exc:
            log.warning("ignoring a cosignature from %s: %r", bank, exc)
            return
        checkpoint = await self.store.checkpoint_at(size)
        if checkpoint is None:
            log.warning("cosignature from %s for unknown checkpoint %d", bank, size)
            return
        note = parse_note(add_lines(checkpoint.note, [line]))
        if bank not in cosigners(note, {bank: public}):
            log.warning("cosignature from %s for checkpoint %d does not verify", bank, size)
            return
        await self.store.add_cosignature(size, bank, line)


async def setup(ctx: ServiceContext) -> None:
    keys_dir = ctx.settings.keys_dir
    # The root key signs only key entries, offline (scf journal init, rotate-key):
    # the journal holds its public half and the genesis it signed, never the key.
    origin = origin_for(ctx.settings.nats_prefix)
    root_public = load_root_public(keys_dir)
    genesis = (
        load_genesis(keys_dir, root_public, origin)
        if (keys_dir / GENESIS_FILE).exists()
        else None  # needed only by an empty store; the sequencer says so then
    )

    async def damaged(damage: Damage) -> None:
        await ctx.server.not_serving()

    audit = StoreAudit(ctx.pool, root_public, on_damage=damaged)
    sequencer = Sequencer(
        ctx.pool,
        ctx.js,
        ctx.subjects,
        ctx.signer,
        root_public,
        ctx.clock,
        SequencerConfig(
            origin=origin,
            max_message_bytes=ctx.nc.max_payload - 2048,
        ),
        audit=audit,
    )
    # A standby journal waits here until the leader is gone; then, before
    # anything is sequenced, the whole store, verified from the root key.
    await sequencer.take_leadership()
    try:
        intact = await audit.verify_all()
    except BaseException:  # stopped or failed while verifying: lead no more
        await sequencer.release_leadership()
        raise
    if intact:
        task = asyncio.create_task(sequencer.run(genesis), name="sequencer")
        ctx.tasks.append(task)
        # Serve only once the journal has its genesis entry and first checkpoint.
        ready = asyncio.create_task(sequencer.ready.wait())
        await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()
        # Statements the last leader took and died with come again now, not
        # after each relay's retry interval.
        await ctx.nc.publish(ctx.subjects.journal_leader, b"")
        ctx.tasks.append(asyncio.create_task(audit.run(), name="store-audit"))
    else:
        # Nothing is sequenced on a damaged store; the process stays up to say so.
        await sequencer.release_leadership()
        log.error("the journal does not sequence: its store is damaged (see the ALARM above)")
    collector = CosignatureCollector(JournalStore(ctx.pool), keys_dir)
    await ctx.nc.subscribe(ctx.subjects.cosignatures(), cb=collector.on_message)
    store = JournalStore(ctx.pool)
    ctx.server.add(
        journal_pb2_grpc.add_AuditServiceServicer_to_server,
        AuditServicer(store, root_public, audit, keys_dir=keys_dir),
        "scf.journal.v1.AuditService",
    )
    if ctx.endpoint.explorer_addr:
        serve_journal_explorer(ctx, store, root_public, audit)
    ctx.server.add(
        journal_pb2_grpc.add_JournalAdminServiceServicer_to_server,
        AdminServicer(sequencer, store, ctx.js, ctx.subjects, root_public, audit),
        "scf.journal.v1.JournalAdminService",
    )


def serve_journal_explorer(
    ctx: ServiceContext, store: JournalStore, root_public: bytes, audit: StoreAudit
) -> None:
    """The auditors' explorer over the journal's own store, with its self-audit."""

    async def status() -> dict[str, Any]:
        damage = audit.damage
        return {
            "heading": "The journal",
            "facts": [
                ("entries stored", await store.size()),
                ("verified by the journal's own audit", audit.size),
                ("audit sweeps since start", audit.sweeps),
            ],
            "alarm": None if damage is None else {
                "kind": "store damage", "seq": damage.seq, "problem": damage.problem,
                "evidence": list(damage.evidence),
            },
        }  # fmt: skip

    data = ExplorerData(store, ctx.settings.keys_dir, root_public)
    app = make_app(data, title="SCF journal", access=Access(), status=status)
    tls = load_party(ctx.settings.certs_dir, "journal")
    task = serve_explorer(app, ctx.endpoint.explorer_addr, tls)
    ctx.tasks.append(asyncio.create_task(task, name="explorer"))


SPEC = ServiceSpec(name="journal", package="services.journal", setup=setup, journals=False)
