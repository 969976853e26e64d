"""How the journal service is assembled."""

from __future__ import annotations

import asyncio

from services.gen.scf.journal.v1 import journal_pb2_grpc
from services.journal.audit import AuditServicer
from services.journal.sequencer import Sequencer, SequencerConfig
from services.journal.storage import JournalStore
from services.runtime.config import SERVICE_NAMES
from services.runtime.keys import load_or_create_signer
from services.runtime.service import ServiceContext, ServiceSpec

ROOT_KEY_NAME = "platform-root"


def origin_for(prefix: str) -> str:
    """The checkpoint origin (and note key name) of the journal under ``prefix``."""
    return f"scf.journal/{prefix}"


async def setup(ctx: ServiceContext) -> None:
    keys_dir = ctx.settings.keys_dir
    # The root key signs only key entries. On one machine it lives beside the
    # others; an operator keeps it offline (docs/operations.md).
    root = load_or_create_signer(keys_dir, ROOT_KEY_NAME)
    genesis_keys = {n: load_or_create_signer(keys_dir, n).public_raw for n in SERVICE_NAMES}
    sequencer = Sequencer(
        ctx.pool,
        ctx.js,
        ctx.subjects,
        ctx.signer,
        root,
        ctx.clock,
        SequencerConfig(origin=origin_for(ctx.settings.nats_prefix)),
    )
    task = asyncio.create_task(sequencer.run(genesis_keys), name="sequencer")
    ctx.tasks.append(task)
    # Serve only once the journal has its genesis entry and first checkpoint.
    ready = asyncio.create_task(sequencer.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
    ctx.server.add(
        journal_pb2_grpc.add_AuditServiceServicer_to_server,
        AuditServicer(JournalStore(ctx.pool), root.public_raw),
        "scf.journal.v1.AuditService",
    )


SPEC = ServiceSpec(name="journal", package="services.journal", setup=setup, journals=False)
