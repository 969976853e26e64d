"""The operator's and auditor's commands, as a person runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.runtime.config import Settings
from services.runtime.platform import Platform
from tests.journal.helpers import producer
from tests.support import scf

pytestmark = pytest.mark.integration


async def test_export_verify_receipt(settings: Settings, tmp_path: Path) -> None:
    platform = Platform(settings, services=("journal",))
    try:
        platform.spawn("journal")
        await platform.wait_ready("journal")
        async with producer(settings) as p:
            await p.append(12)
            await p.wait_confirmed(12)
        # A checkpoint over everything: the sequencer signs one within its interval.
        import asyncio

        for _ in range(100):
            r = scf(settings, "journal", "receipt", "12", "--out", "r.json", cwd=tmp_path)
            if r.returncode == 0:
                break
            assert "not yet covered" in r.stderr, r.stderr
            await asyncio.sleep(0.1)
        assert r.returncode == 0, r.stderr
        export = scf(settings, "journal", "export", "j.export", cwd=tmp_path)
        assert export.returncode == 0, export.stderr
        assert "exported 13 entries" in export.stdout
    finally:
        platform.stop()

    ok = scf(settings, "audit", "verify", "j.export", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "verified 13 entries" in ok.stdout
    verified = json.loads(
        scf(settings, "audit", "verify", "j.export", "--json", cwd=tmp_path).stdout
    )
    assert verified["verified"] and verified["entries"] == 13 and len(verified["root"]) == 64

    db = scf(settings, "audit", "verify", cwd=tmp_path)
    assert db.returncode == 0, db.stderr

    receipt = scf(settings, "audit", "verify-receipt", "r.json", cwd=tmp_path)
    assert receipt.returncode == 0, receipt.stderr
    assert "valid" in receipt.stdout and "entry 12" in receipt.stdout
    as_json = scf(settings, "audit", "verify-receipt", "r.json", "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    valid = json.loads(as_json.stdout)
    assert valid["valid"] and valid["seq"] == 12 and valid["subject"] == "order/ORD-1"

    wrong_key = scf(
        settings, "audit", "verify-receipt", "r.json", "--journal-key", "00" * 32, cwd=tmp_path
    )
    assert wrong_key.returncode == 1 and "INVALID" in wrong_key.stderr

    data = bytearray((tmp_path / "j.export").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "j.export").write_bytes(bytes(data))
    bad = scf(settings, "audit", "verify", "j.export", cwd=tmp_path)
    assert bad.returncode == 1
    assert "FAILED at entry 12" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_verify_of_a_missing_file_is_one_line(settings: Settings, tmp_path: Path) -> None:
    r = scf(settings, "audit", "verify", "nope.export", "--root-key", "00" * 32, cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "nope.export" in r.stderr


async def test_operator_key_rotation_commands(settings: Settings, tmp_path: Path) -> None:
    # The root key is kept offline: the journal runs without it and never makes one.
    offline = tmp_path / "offline"
    offline.mkdir()
    root_pem = offline / "platform-root.ed25519.pem"
    (settings.keys_dir / "platform-root.ed25519.pem").rename(root_pem)
    platform = Platform(settings, services=("journal",))
    try:
        platform.spawn("journal")
        await platform.wait_ready("journal")
        assert not (settings.keys_dir / "platform-root.ed25519.pem").exists()
        old = (settings.keys_dir / "orders.pub").read_text().strip()
        keys_before = sorted(p.name for p in settings.keys_dir.iterdir())
        no_root = scf(settings, "journal", "rotate-key", "orders", cwd=tmp_path)
        assert no_root.returncode == 2 and "platform-root.ed25519.pem" in no_root.stderr
        assert sorted(p.name for p in settings.keys_dir.iterdir()) == keys_before
        rotated = scf(
            settings, "journal", "rotate-key", "orders", "--root-key", str(root_pem), cwd=tmp_path
        )
        assert rotated.returncode == 0, rotated.stderr
        new = (settings.keys_dir / "orders.pub").read_text().strip()
        assert new != old
        from services.runtime.keys import key_id_of

        old_id = key_id_of(bytes.fromhex(old)).hex()
        assert old_id in rotated.stdout
        revoked = scf(
            settings, "journal", "revoke-key", old_id, "--root-key", str(root_pem), cwd=tmp_path
        )
        assert revoked.returncode == 0 and "revoked at entry 2" in revoked.stdout
        again = scf(settings, "journal", "revoke-key", "zz", cwd=tmp_path)
        assert again.returncode == 2 and "not hex" in again.stderr
        cp = scf(settings, "journal", "checkpoint", cwd=tmp_path)
        assert cp.returncode == 0 and "\n3\n" in cp.stdout  # genesis and two key entries
        listed = scf(settings, "journal", "refusals", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        listed = scf(settings, "journal", "refusals", "--json", cwd=tmp_path)
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
        # A key for a service that does not exist: refused before any key file is
        # made, and nothing journaled (it journaled a permanent key before).
        keys_before = sorted(p.name for p in settings.keys_dir.iterdir())
        nosuch = scf(settings, "journal", "rotate-key", "nosuch", cwd=tmp_path)
        assert nosuch.returncode == 2 and "'nosuch' is not a service" in nosuch.stderr
        assert sorted(p.name for p in settings.keys_dir.iterdir()) == keys_before
        cp = scf(settings, "journal", "checkpoint", cwd=tmp_path)
        assert cp.returncode == 0 and "\n3\n" in cp.stdout
        assert not (settings.keys_dir / "platform-root.ed25519.pem").exists()
    finally:
        platform.stop()


def test_version(settings: Settings, tmp_path: Path) -> None:
    from importlib.metadata import version

    shown = scf(settings, "--version", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.strip() == f"scf {version('scf')}"


async def test_status_asks_the_settings_addresses_and_answers_json(
    settings: Settings, tmp_path: Path
) -> None:
    """`scf status` read only the run file beside `scf up` ("not running" anywhere
    else) and printed a table even when piped."""
    platform = Platform(settings, services=("journal",))
    try:
        platform.spawn("journal")
        await platform.wait_ready("journal")
        shown = scf(settings, "status", "--json", cwd=tmp_path)
        assert shown.returncode == 1, shown.stderr  # the other services are not running
        report = json.loads(shown.stdout)
        assert report["source"] == "settings" and report["ok"] is False
        by_name = {p["name"]: p for p in report["processes"]}
        assert set(by_name) == {
            "journal", "orders", "scoring", "lending", "repayment",
            *(f"replica-{bank}" for bank in settings.banks),
        }  # fmt: skip
        journal = by_name["journal"]
        assert journal["grpc_addr"] == settings.endpoint("journal").grpc_addr
        assert journal["health"] == "SERVING" and "entries verified" in journal["detail"]
        assert by_name["orders"]["health"].startswith("unreachable")
        table = scf(settings, "status", cwd=tmp_path)
        assert table.returncode == 1 and "journal" in table.stdout and "SERVING" in table.stdout
    finally:
        platform.stop()


def test_the_offline_key_commands(settings: Settings, tmp_path: Path) -> None:
    """`scf journal init` makes a genesis once and keeps it; `scf witness-key`
    makes a bank's own key once and prints its public half."""
    import dataclasses

    offline = dataclasses.replace(settings, keys_dir=tmp_path / "offline")
    made = scf(offline, "journal", "init", "--json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    first = json.loads(made.stdout)
    assert first["made"] and Path(first["genesis"]).name == "journal-genesis.batch"
    genesis = Path(first["genesis"]).read_bytes()
    again = scf(offline, "journal", "init", "--json", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["made"] is False
    assert Path(first["genesis"]).read_bytes() == genesis
    # A genesis for another journal (another prefix) under the same root is refused.
    other = dataclasses.replace(offline, nats_prefix="elsewhere")
    refused = scf(other, "journal", "init", cwd=tmp_path)
    assert refused.returncode == 2 and "another journal" in refused.stderr

    bank = dataclasses.replace(settings, keys_dir=tmp_path / "bank")
    key = scf(bank, "witness-key", "--bank", "bank-east", "--json", cwd=tmp_path)
    assert key.returncode == 0, key.stderr
    shown = json.loads(key.stdout)
    assert (tmp_path / "bank" / "witness-bank-east.pub").read_text().strip() == shown["public_key"]
    assert json.loads(scf(bank, "witness-key", "--bank", "bank-east", "--json",
                          cwd=tmp_path).stdout) == shown  # fmt: skip
    bad = scf(bank, "witness-key", "--bank", "../etc", cwd=tmp_path)
    assert bad.returncode == 2 and "--bank" in bad.stderr
