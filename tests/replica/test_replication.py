"""Bank replicas over real NATS, PostgreSQL and gRPC."""

from __future__ import annotations

import base64

import pytest

from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
from services.gen.scf.platform.v1 import platform_pb2, platform_pb2_grpc
from services.journal.offline import verify_database
from services.journal.receipt import ReceiptError, verify_receipt
from services.journal.service import SPEC
from services.journal.witness import QuorumError, verify_quorum, witness_key_hash
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from tests.journal.helpers import producer, wait_on_platform
from tests.replica.helpers import journal_size, replica_running, replica_settings, wait_in_step
from tests.support import running

pytestmark = pytest.mark.integration


def _key(settings: Settings, name: str) -> bytes:
    return bytes.fromhex((settings.keys_dir / f"{name}.pub").read_text())


async def test_two_replicas_follow_and_cosign(settings: Settings) -> None:
    north_settings = replica_settings(settings, "bank-north")
    async with (
        running(SPEC, settings),
        replica_running(settings, "bank-north", north_settings) as north,
        replica_running(settings, "bank-south") as south,
    ):
        async with producer(settings) as p:
            for i in range(10):
                await p.append(200, subject=f"order/ORD-{i}", start=i * 200)
            await p.wait_confirmed(2000, timeout=60)
        size = await journal_size(settings)
        assert size == 2001
        await wait_in_step(north, size)
        await wait_in_step(south, size)
        assert north.verifier.tree.root() == south.verifier.tree.root()

        tls = load_party(settings.certs_dir, "auditor-reg")
        async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
            journal = journal_pb2_grpc.AuditServiceStub(channel)
            cp = await journal.GetCheckpoint(journal_pb2.GetCheckpointRequest())
            assert cp.tree_size == size and cp.root_hash == north.verifier.tree.root()

            witnesses = {b: _key(settings, f"witness-{b}") for b in ("bank-north", "bank-south")}

            async def cosigned_by_both() -> journal_pb2.GetCheckpointResponse:
                return await journal.GetCheckpoint(
                    journal_pb2.GetCheckpointRequest(min_cosignatures=2)
                )

            async def both() -> bool:
                try:
                    return (await cosigned_by_both()).tree_size == size
                except Exception:
                    return False

            await wait_on_platform(settings, both, "a checkpoint cosigned by both banks")
            cosigned = await cosigned_by_both()
            verify_quorum(cosigned.checkpoint, _key(settings, "journal"), witnesses, 2)
            # The witnesses and their keys, as the audit API serves them: what the
            # cosignature lines name and verify under.
            served = (await journal.ListWitnesses(journal_pb2.ListWitnessesRequest())).witnesses
            assert {w.name: w.public_key for w in served} == witnesses
            lines = cosigned.checkpoint.split("\n\n", 1)[1]
            for w in served:
                assert w.note_key_hash == witness_key_hash(w.name, w.public_key)
                line = next(x for x in lines.splitlines() if x.startswith(f"— {w.name} "))
                assert base64.b64decode(line.split()[-1])[:4] == w.note_key_hash
            # A client that trusts a third bank and asks for all three is refused.
            with pytest.raises(QuorumError, match="2 of the 3"):
                verify_quorum(
                    cosigned.checkpoint,
                    _key(settings, "journal"),
                    {**witnesses, "bank-east": _key(settings, "orders")},
                    3,
                )
            # Receipts carry the cosignatures: a client can demand both banks.
            receipt = await journal.GetReceipt(
                journal_pb2.GetReceiptRequest(seq=5, min_cosignatures=2)
            )
            entry = verify_receipt(
                receipt.receipt_json, _key(settings, "journal"), witnesses=witnesses, quorum=2
            )
            assert entry.seq == 5
            with pytest.raises(ReceiptError):
                verify_receipt(
                    receipt.receipt_json,
                    _key(settings, "journal"),
                    witnesses={"bank-north": witnesses["bank-north"]},
                    quorum=2,
                )
            # A checkpoint no bank has cosigned yet does not pass a quorum of one.
            bare = (await journal.GetCheckpoint(journal_pb2.GetCheckpointRequest())).checkpoint
            first = bare.split("\n\n")[0] + "\n\n" + bare.split("\n\n")[1].split("\n")[0] + "\n"
            with pytest.raises(QuorumError):
                verify_quorum(first, _key(settings, "journal"), witnesses, 1)

        # The bank's own audit API serves its verified copy.
        async with client_channel(north_settings.grpc_addr, tls) as channel:
            bank_audit = journal_pb2_grpc.AuditServiceStub(channel)
            listed = [
                r.entry
                async for r in bank_audit.ListEntries(journal_pb2.ListEntriesRequest(start=1990))
            ]
            assert [e.seq for e in listed] == list(range(1990, 2001))
            # Like every process with an API, it says whom it reads the caller as.
            who = await platform_pb2_grpc.PlatformServiceStub(channel).WhoAmI(
                platform_pb2.WhoAmIRequest()
            )
            assert (who.party_id, who.role, who.service) == (
                "auditor-reg",
                "auditor",
                "replica-bank-north",
            )
            # And its checkpoint watch answers from the copy it verified.
            watched = await bank_audit.WatchCheckpoints(
                journal_pb2.WatchCheckpointsRequest(min_size=size), timeout=30
            ).read()
            assert watched.tree_size == size and watched.root_hash == north.verifier.tree.root()
        # The bank's database passes the offline verifier on its own.
        report = await verify_database(
            north_settings.database_url, "journal", _key(settings, "platform-root")
        )
        assert report.entries == size
