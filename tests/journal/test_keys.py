"""Key rotation and revocation are journal entries; the journal and verifiers obey them."""

from __future__ import annotations

import grpc
import pytest

from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.journal.checkpoint import parse_note
from services.journal.offline import verify_database
from services.journal.service import SPEC
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.keys import load_or_create_signer
from services.runtime.metrics import (
    JOURNAL_CHECKPOINT_SECONDS,
    JOURNAL_ENTRIES,
    JOURNAL_REFUSALS,
    JOURNAL_TREE_SIZE,
)
from tests.journal.helpers import producer, root_signed_register, root_signed_revoke
from tests.support import running

pytestmark = pytest.mark.integration


async def test_rotation_and_revocation(settings: Settings) -> None:
    addr = settings.endpoint("journal").grpc_addr
    entries_before = JOURNAL_ENTRIES._value.get()
    refusals_before = JOURNAL_REFUSALS.labels("orders")._value.get()
    async with running(SPEC, settings):
        async with producer(settings) as old:
            await old.append(3)
            await old.wait_confirmed(3)
        old_key = load_or_create_signer(settings.keys_dir, "orders")
        new_key = load_or_create_signer(settings.keys_dir, "orders-next")
        tls = load_party(settings.certs_dir, "operator")
        async with client_channel(addr, tls) as channel:
            admin = journal_pb2_grpc.JournalAdminServiceStub(channel)
            register = root_signed_register(settings, "orders", new_key.public_raw, "rotate-1")
            # Signed by the root key, but for another key than it names: refused
            # before the journal sees it, and nothing is journaled.
            forged = journal_pb2.RegisterKeyRequest()
            forged.CopyFrom(register)
            forged.public_key = load_or_create_signer(settings.keys_dir, "mallory").public_raw
            # Signed by a service's key (a compromised journal's, say), not the root's.
            by_journal = root_signed_register(settings, "orders", new_key.public_raw, "x")
            journal_key = load_or_create_signer(settings.keys_dir, "journal")
            by_journal.root_signature = journal_key.sign(b"anything")
            for bad in (forged, by_journal):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await admin.RegisterKey(bad)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "root_signature" in (info.value.details() or "")
            registered = await admin.RegisterKey(register)
            again = await admin.RegisterKey(register)
            assert again.seq == registered.seq and registered.key_id == new_key.key_id
            revoked = await admin.RevokeKey(
                root_signed_revoke(settings, old_key.key_id, "revoke-1")
            )
            assert revoked.seq == registered.seq + 1

            for call, request, code in [
                (
                    admin.RegisterKey,
                    root_signed_register(settings, "orders", b"short", "x"),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (
                    admin.RegisterKey,
                    root_signed_register(settings, "orders", new_key.public_raw, "dup"),
                    grpc.StatusCode.FAILED_PRECONDITION,  # registered already
                ),
                (
                    admin.RevokeKey,
                    root_signed_revoke(settings, b"\x01" * 32, "unknown"),
                    grpc.StatusCode.FAILED_PRECONDITION,
                ),
                (  # a producer nobody runs
                    admin.RegisterKey,
                    root_signed_register(settings, "nosuch", bytes(range(32)), "ns"),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(request)
                assert info.value.code() == code, info.value.details()

        async with producer(settings, relay=True) as stale:
            await stale.append(1, start=50)

            async def refused() -> bool:
                return bool(await stale.pool.fetchval(
                    "SELECT refused_reason FROM outbox WHERE idempotency_key = 'k-50'"
                ))  # fmt: skip

            await stale.wait_until(refused, "the revoked key's statement to be refused")
            reason = await stale.pool.fetchval(
                "SELECT refused_reason FROM outbox WHERE idempotency_key = 'k-50'"
            )
            assert "revoked" in reason
        async with producer(settings, key_name="orders-next") as rotated:
            await rotated.append(2, start=60)
            confirmed = await rotated.wait_confirmed(5)  # 3 old rows, 2 new
            assert confirmed["k-60"] > revoked.seq

        async with client_channel(addr, tls) as channel:
            admin = journal_pb2_grpc.JournalAdminServiceStub(channel)
            cp = await admin.RequestCheckpoint(journal_pb2.RequestCheckpointRequest())
            refusals = await admin.ListRefusals(journal_pb2.ListRefusalsRequest(limit=10))
        assert cp.tree_size == confirmed["k-61"] + 1
        assert any("revoked" in r.reason for r in refusals.refusals)
        # The same, as Prometheus reads it.
        assert JOURNAL_TREE_SIZE._value.get() == cp.tree_size
        assert JOURNAL_ENTRIES._value.get() - entries_before >= cp.tree_size - 1
        assert JOURNAL_REFUSALS.labels("orders")._value.get() - refusals_before >= 1
        signed_at = parse_note(cp.checkpoint).checkpoint.timestamp_micros / 1e6
        assert JOURNAL_CHECKPOINT_SECONDS._value.get() >= signed_at - 0.001

        auditor = load_party(settings.certs_dir, "auditor-reg")
        async with client_channel(addr, auditor) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await journal_pb2_grpc.JournalAdminServiceStub(channel).RequestCheckpoint(
                    journal_pb2.RequestCheckpointRequest()
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    root = bytes.fromhex((settings.keys_dir / "platform-root.pub").read_text())
    report = await verify_database(settings.database_url, settings.endpoint("journal").schema, root)
    assert report.entries == cp.tree_size and report.producers["platform"] == 3
