"""``scf journal ...`` (operator) and ``scf audit ...`` (anyone, offline)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli.output import JsonFlag, print_json, print_rows
from services.journal.offline import export_journal, verify_database, verify_export
from services.journal.receipt import ReceiptError, verify_receipt
from services.journal.verify import VerificationError, VerifyReport
from services.runtime.config import Settings
from services.runtime.errors import ConfigError

journal_app = typer.Typer(help="Operator tools for the journal.", no_args_is_help=True)
audit_app = typer.Typer(
    help="Offline verification: trusts nothing the operator runs.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    from services.runtime.platform import read_state

    state = read_state(settings)
    if state is None:
        raise _fail("SCF_DATABASE_URL: not set, and no running platform under SCF_DATA_DIR", 2)
    return str(state["database_url"])


def _hex_key(
    value: str | None, file: Path | None, default_file: Path | None, what: str
) -> bytes | None:
    try:
        if value:
            raw = bytes.fromhex(value.strip())
        elif file is not None:
            raw = bytes.fromhex(file.read_text().strip())
        elif default_file is not None and default_file.exists():
            raw = bytes.fromhex(default_file.read_text().strip())
        else:
            return None
    except (OSError, ValueError) as exc:
        raise _fail(f"{what}: {exc}", 2) from None
    if len(raw) != 32:
        raise _fail(f"{what}: an Ed25519 public key is 32 bytes, got {len(raw)}", 2)
    return raw


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    )  # fmt: skip


@journal_app.command("export")
def export(
    file: Path, schema: str = typer.Option("", help="The journal's schema (SCF_JOURNAL_SCHEMA).")
) -> None:
    """Write the whole journal (entries, checkpoints, root key) to FILE."""
    settings = Settings.from_env()
    schema = schema or settings.endpoint("journal").schema
    dsn = _database_url(settings)
    root = _hex_key(None, None, settings.keys_dir / "platform-root.pub", "root key")
    if root is None:
        raise _fail(f"SCF_KEYS_DIR: no platform-root.pub in {settings.keys_dir}", 2)

    async def run() -> int:
        from services.journal.storage import JournalStore
        from services.runtime.db import connect_pool

        pool = await connect_pool(dsn, schema, max_size=2)
        try:
            store = JournalStore(pool)
            with _progress() as progress:
                task = progress.add_task("exporting", total=await store.size())
                return await export_journal(store, root, file, lambda n: progress.advance(task, n))
        finally:
            await pool.close()

    try:
        n = asyncio.run(run())
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except asyncpg.UndefinedTableError:
        raise _fail(f"no journal in schema {schema!r} of {dsn}", 2) from None
    out.print(f"exported {n} entries to {file}")


@journal_app.command("receipt")
def receipt(
    seq: int,
    file: Path = typer.Option(None, "--out", help="Where to write it (default receipt-SEQ.json)."),
    party: str = typer.Option("auditor-reg", "--as", help="Whose certificate to present."),
    min_cosignatures: int = typer.Option(
        0, help="Prove it against a checkpoint this many banks cosigned."
    ),
) -> None:
    """Fetch a self-contained receipt for entry SEQ from the journal's audit API."""
    settings = Settings.from_env()
    from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import client_channel

    async def run() -> str:
        tls = load_party(settings.certs_dir, party)
        async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
            reply = await journal_pb2_grpc.AuditServiceStub(channel).GetReceipt(
                journal_pb2.GetReceiptRequest(seq=seq, min_cosignatures=min_cosignatures),
                timeout=10,
            )
            return str(reply.receipt_json)

    import grpc

    try:
        text = asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        raise _fail(f"{exc.code().name}: {exc.details()}") from None
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    target = file or Path(f"receipt-{seq}.json")
    target.write_text(text)
    out.print(f"receipt for entry {seq} written to {target}")


def _print_report(report: VerifyReport) -> None:
    out.print(
        f"[green]verified[/green] {report.entries} entries and"
        f" {report.checkpoints} signed checkpoints; root {report.root.hex()}"
    )
    for producer, n in sorted(report.producers.items()):
        out.print(f"  {producer:<12} {n} entries")


@audit_app.command("verify")
def verify(
    file: Path = typer.Argument(None, help="An export file; omit it to verify a database."),
    database: str = typer.Option("", help="A journal or replica database DSN."),
    schema: str = typer.Option("", help="Its schema (default SCF_JOURNAL_SCHEMA)."),
    root_key: str = typer.Option("", help="The platform root public key, hex."),
    root_key_file: Path = typer.Option(None, help="A file holding it, hex."),
    witness: list[str] = typer.Option([], help="A trusted bank witness, NAME=HEXKEY; repeatable."),
    quorum: int = typer.Option(0, help="How many witnesses must have cosigned the latest one."),
    as_json: bool = JsonFlag,
) -> None:
    """Check every signature, chain link and Merkle root against every checkpoint
    (and that the latest checkpoint carries a quorum of the banks' cosignatures)."""
    settings = Settings.from_env()
    pinned = _hex_key(root_key, root_key_file, settings.keys_dir / "platform-root.pub", "root key")
    witnesses = _witnesses(witness)
    try:
        with _progress() as progress:
            task = progress.add_task("verifying", total=None)
            advance = lambda n: progress.advance(task, n)  # noqa: E731
            if file is not None:
                if pinned is None:
                    err.print("[yellow]no root key pinned: trusting the export's own[/]")
                report = verify_export(file, pinned, advance)
            else:
                if pinned is None:
                    raise _fail("a database check needs --root-key or --root-key-file", 2)
                dsn = database or _database_url(settings)
                schema = schema or settings.endpoint("journal").schema
                report = asyncio.run(verify_database(dsn, schema, pinned, advance))
    except VerificationError as exc:
        where = f"at entry {exc.seq}" if exc.seq >= 0 else "in the input"
        err.print(f"[red]FAILED[/red] {where}: {exc.problem}", highlight=False)
        raise typer.Exit(1) from None
    except (ConfigError, OSError) as exc:
        raise _fail(str(exc), 2) from None
    except asyncpg.UndefinedTableError:
        raise _fail(f"no journal in schema {schema!r}", 2) from None
    if quorum:
        from services.journal.checkpoint import parse_note
        from services.journal.witness import cosigners

        latest = report.latest_checkpoint
        got = cosigners(parse_note(latest), witnesses) if latest else set()
        if len(got) < quorum:
            have = ", ".join(sorted(got)) or "none"
            err.print(
                f"[red]FAILED[/red]: the latest checkpoint carries {len(got)} of the {quorum}"
                f" cosignatures required ({have})", highlight=False,
            )  # fmt: skip
            raise typer.Exit(1)
    if as_json:
        print_json(
            {"verified": True, "entries": report.entries, "checkpoints": report.checkpoints,
             "root": report.root.hex(), "producers": report.producers,
             "latest_checkpoint": report.latest_checkpoint}
        )  # fmt: skip
    else:
        _print_report(report)


def _witnesses(items: list[str]) -> dict[str, bytes]:
    """``--witness NAME=HEXKEY`` options: the banks' witness keys, as their replicas
    serve them (ReplicaService.GetStatus, ``witness_public_key``)."""
    witnesses: dict[str, bytes] = {}
    for item in items:
        name, _, hex_key = item.partition("=")
        pub = _hex_key(hex_key, None, None, f"witness {name}")
        if not name or pub is None:
            raise _fail(f"--witness: NAME=HEXKEY, got {item!r}", 2)
        witnesses[name] = pub
    return witnesses


@audit_app.command("verify-receipt")
def verify_receipt_cmd(
    file: Path,
    journal_key: str = typer.Option("", help="The journal's public key, hex."),
    journal_key_file: Path = typer.Option(None, help="A file holding it, hex."),
    root_key: str = typer.Option(
        "", help="Optional: the platform root key, to check the key entry too."
    ),
    witness: list[str] = typer.Option([], help="A trusted bank witness, NAME=HEXKEY; repeatable."),
    quorum: int = typer.Option(0, help="How many of the witnesses must have cosigned."),
    as_json: bool = JsonFlag,
) -> None:
    """Check a receipt offline with the journal's public key (and a quorum of banks)."""
    settings = Settings.from_env()
    key = _hex_key(journal_key, journal_key_file, settings.keys_dir / "journal.pub", "journal key")
    if key is None:
        raise _fail("pass --journal-key or --journal-key-file", 2)
    root = _hex_key(root_key, None, None, "root key")
    witnesses = _witnesses(witness)
    try:
        entry = verify_receipt(file.read_text(), key, root, witnesses, quorum)
    except ReceiptError as exc:
        err.print(f"[red]INVALID[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except OSError as exc:
        raise _fail(str(exc), 2) from None
    st = entry.statement
    if as_json:
        try:
            payload: Any = json.loads(st.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = st.payload.hex()
        print_json(
            {"valid": True, "seq": entry.seq, "event_type": st.event_type,
             "subject": st.subject, "producer": st.producer, "payload": payload}
        )  # fmt: skip
        return
    out.print(
        f"[green]valid[/green]: entry {entry.seq} {st.event_type} on {st.subject} by {st.producer}"
    )
    try:
        out.print_json(st.payload.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        out.print(f"payload: {st.payload.hex()}")


def _admin_call(method: str, request: object) -> Any:
    """One JournalAdminService call as the operator; errors become one line."""
    import grpc

    from services.gen.scf.journal.v1 import journal_pb2_grpc
    from services.runtime.certs import load_party
    from services.runtime.grpcserver import client_channel

    settings = Settings.from_env()

    async def run() -> Any:
        tls = load_party(settings.certs_dir, "operator")
        async with client_channel(settings.endpoint("journal").grpc_addr, tls) as channel:
            stub = journal_pb2_grpc.JournalAdminServiceStub(channel)
            return await getattr(stub, method)(request, timeout=15)

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        raise _fail(f"{exc.code().name}: {exc.details()}") from None
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


@journal_app.command("checkpoint")
def checkpoint() -> None:
    """Have the journal sign a checkpoint over everything committed, now."""
    from services.gen.scf.journal.v1 import journal_pb2

    reply = _admin_call("RequestCheckpoint", journal_pb2.RequestCheckpointRequest())
    out.print(reply.checkpoint, highlight=False, soft_wrap=True)


@journal_app.command("refusals")
def refusals(limit: int = typer.Option(20, min=1, max=1000), as_json: bool = JsonFlag) -> None:
    """The statements the journal refused most recently, and why."""
    from services.gen.scf.journal.v1 import journal_pb2

    reply = _admin_call("ListRefusals", journal_pb2.ListRefusalsRequest(limit=limit))
    rows = [
        {"producer": r.producer, "idempotency_keys": r.idempotency_keys, "reason": r.reason}
        for r in reply.refusals
    ]
    columns = {"producer": "producer", "idempotency_keys": "idempotency keys", "reason": "reason"}
    print_rows(out, rows, columns, as_json)


@journal_app.command("held-back")
def held_back_statements(as_json: bool = JsonFlag) -> None:
    """Statements a service's outbox holds back for good (set aside by its relay as
    too large for any message, or refused by the journal), with the reason; from
    each service's database. Exits 1 when there is any, so a script can alarm."""
    from services.runtime.config import SERVICE_NAMES
    from services.runtime.journal_client import held_back

    settings = Settings.from_env()
    dsn = _database_url(settings)

    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            found = []
            for service in SERVICE_NAMES:
                if service == "journal":
                    continue
                schema = settings.endpoint(service).schema
                await conn.execute(f'SET search_path TO "{schema}"')
                try:
                    rows = await held_back(conn)
                except asyncpg.UndefinedTableError:  # the service never ran here
                    continue
                found += [
                    {"service": service, "outbox_id": r["id"],
                     "idempotency_key": r["idempotency_key"], "subject": r["subject"],
                     "bytes": r["size"], "reason": r["refused_reason"]}
                    for r in rows
                ]  # fmt: skip
            return found
        finally:
            await conn.close()

    rows = asyncio.run(run())
    columns = {
        "service": "service", "outbox_id": "outbox id", "idempotency_key": "idempotency key",
        "subject": "subject", "bytes": "bytes", "reason": "reason",
    }  # fmt: skip
    print_rows(out, rows, columns, as_json, empty="nothing held back")
    if rows:
        raise typer.Exit(1)


@journal_app.command("restore")
def restore(
    from_replica: str = typer.Option(..., "--from-replica", help="The bank whose replica to copy."),
    quorum: int = typer.Option(
        1, min=0, help="Other banks whose cosigned checkpoints the copy must match."
    ),
) -> None:
    """Rebuild the journal's store (damaged, truncated or lost) from a bank's replica.

    Stop the journal first. Everything is verified from the platform root key and
    against the other banks' cosigned checkpoints before the store is replaced; the
    old tables are kept beside the new ones. Then start the journal again.
    """
    from services.journal.restore import RestoreError, plan_restore, write_restore
    from services.replica.config import ReplicaSettings
    from services.runtime.certs import load_party
    from services.runtime.db import apply_migrations, connect_pool
    from services.runtime.grpcserver import client_channel

    settings = Settings.from_env()
    dsn = _database_url(settings)
    root = _hex_key(None, None, settings.keys_dir / "platform-root.pub", "root key")
    if root is None:
        raise _fail(f"SCF_KEYS_DIR: no platform-root.pub in {settings.keys_dir}", 2)
    if from_replica not in settings.banks:
        raise _fail(
            f"--from-replica: {from_replica!r} is not one of {', '.join(settings.banks)}", 2
        )
    tls = load_party(settings.certs_dir, "operator")

    def addr(bank: str) -> str:
        return ReplicaSettings.from_env(bank, settings.database_url).grpc_addr

    async def status(bank: str) -> Any:
        from services.gen.scf.replica.v1 import replica_pb2, replica_pb2_grpc

        async with client_channel(addr(bank), tls) as channel:
            stub = replica_pb2_grpc.ReplicaServiceStub(channel)
            return await stub.GetStatus(replica_pb2.GetStatusRequest(), timeout=10)

    async def run() -> tuple[Any, str]:
        from services.gen.scf.journal.v1 import journal_pb2, journal_pb2_grpc

        source = await status(from_replica)
        cosigned: dict[str, str] = {}
        witnesses: dict[str, bytes] = {}
        for bank in settings.banks:
            if bank == from_replica:
                continue
            key = _hex_key(None, None, settings.keys_dir / f"witness-{bank}.pub", bank)
            try:
                other = await status(bank)
            except grpc.aio.AioRpcError as exc:
                err.print(f"{bank}'s replica did not answer ({exc.code().name}); not counted")
                continue
            if key is not None and other.cosigned_checkpoint:
                cosigned[bank], witnesses[bank] = other.cosigned_checkpoint, key
        async with client_channel(addr(from_replica), tls) as channel:
            audit = journal_pb2_grpc.AuditServiceStub(channel)
            checkpoint = await audit.GetCheckpoint(journal_pb2.GetCheckpointRequest(), timeout=10)
            request = journal_pb2.ListEntriesRequest(
                start=0, end=source.tree_size, beyond_checkpoint=True
            )
            with _progress() as progress:
                task = progress.add_task(f"copying {from_replica}", total=source.tree_size)
                leaves = []
                async for reply in audit.ListEntries(request):
                    leaves.append(reply.entry.leaf)
                    progress.advance(task)
        plan = plan_restore(root, leaves, checkpoint.checkpoint, cosigned, witnesses, quorum)
        schema = settings.endpoint("journal").schema
        pool = await connect_pool(dsn, schema, max_size=2)
        try:
            await apply_migrations(pool, schema, "services.journal")
            return plan, await write_restore(pool, plan)
        finally:
            await pool.close()

    try:
        plan, kept = asyncio.run(run())
    except RestoreError as exc:
        raise _fail(f"not restored: {exc}") from None
    except grpc.aio.AioRpcError as exc:
        raise _fail(f"{from_replica}'s replica: {exc.code().name}: {exc.details()}") from None
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    agreeing = ", ".join(sorted(plan.agreeing)) or "no other bank"
    out.print(
        f"restored {plan.size} entries from {from_replica}, root {plan.root.hex()};"
        f" matches the checkpoints cosigned by {agreeing}. The old tables are kept as"
        f" *_{kept}. Start the journal: it verifies the store again before sequencing."
    )


_ROOT_KEY_OPTION = typer.Option(
    None,
    "--root-key",
    help="The platform root's private key (PEM); default platform-root.ed25519.pem"
    " in SCF_KEYS_DIR. Keep it offline: only this command and `init` read it.",
)


def _root_signer(root_key: Path | None, settings: Settings) -> Any:
    from services.journal.genesis import ROOT_KEY_NAME
    from services.runtime.keys import load_signer

    path = root_key or settings.keys_dir / f"{ROOT_KEY_NAME}.ed25519.pem"
    name = path.name.removesuffix(".ed25519.pem")
    try:
        return load_signer(path.parent, name, hint="the root key is needed to sign key entries")
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None


def _root_signed(root: Any, event_type: str, body: dict[str, str], idempotency_key: str) -> Any:
    """A key entry's produced time and the root's signature over it, made here
    (the operator's machine), never in the journal."""
    import time

    from services.journal.encoding import sign_batch
    from services.journal.genesis import key_statement
    from services.journal.keyset import PLATFORM_PRODUCER

    micros = time.time_ns() // 1000
    st = key_statement(event_type, body, idempotency_key, micros, root.key_id)
    batch = sign_batch(PLATFORM_PRODUCER, root.key_id, root.sign, [st.encode()])
    return micros, batch.signature


@journal_app.command("init")
def init(json_out: bool = JsonFlag) -> None:
    """Make the journal's genesis offline: the platform root key (when missing),
    every service's signing key (when missing), and journal-genesis.batch, the
    root-signed entry 0 that names them, all in SCF_KEYS_DIR. Run it where the
    root key is kept; give each service its own key, and every service
    platform-root.pub and the journal the genesis (docs/operations.md)."""
    import time

    from services.journal.genesis import init_journal, origin_for
    from services.runtime.config import SERVICE_NAMES

    settings = Settings.from_env()
    keys_dir = settings.keys_dir
    try:
        path, made = init_journal(
            keys_dir, origin_for(settings.nats_prefix), SERVICE_NAMES, time.time_ns() // 1000
        )
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    if json_out:
        print_json({"genesis": str(path), "made": made, "keys_dir": str(keys_dir)})
        return
    verb = "made" if made else "kept (it verifies; entry 0 never changes)"
    out.print(f"genesis {verb}: {path}")


@journal_app.command("rotate-key")
def rotate_key(service: str, root_key: Path | None = _ROOT_KEY_OPTION) -> None:
    """Register a new signing key for SERVICE and put it in place of the old one.

    The key entry is signed here with the root key. Restart the service, then
    revoke the old key with `scf journal revoke-key`.
    """
    import time

    from services.gen.scf.journal.v1 import journal_pb2
    from services.journal.keyset import EV_REGISTERED
    from services.runtime.config import SERVICE_NAMES
    from services.runtime.keys import load_or_create_signer

    if service not in SERVICE_NAMES:  # checked before any key file is made
        raise _fail(f"{service!r} is not a service: one of {', '.join(SERVICE_NAMES)}", 2)
    settings = Settings.from_env()
    root = _root_signer(root_key, settings)
    current = load_or_create_signer(settings.keys_dir, service)
    staged = load_or_create_signer(settings.keys_dir, f"{service}.next")
    idempotency_key = f"rotate-{service}-{staged.key_id.hex()[:16]}"
    body = {"producer": service, "public_key": staged.public_raw.hex()}
    micros, signature = _root_signed(root, EV_REGISTERED, body, idempotency_key)
    reply = _admin_call(
        "RegisterKey",
        journal_pb2.RegisterKeyRequest(
            producer=service,
            public_key=staged.public_raw,
            idempotency_key=idempotency_key,
            produced_micros=micros,
            root_signature=signature,
        ),
    )
    keys = settings.keys_dir
    retired = f"{service}.retired-{int(time.time())}"
    for suffix in (".ed25519.pem", ".pub"):
        (keys / f"{service}{suffix}").rename(keys / f"{retired}{suffix}")
        (keys / f"{service}.next{suffix}").rename(keys / f"{service}{suffix}")
    out.print(f"registered the new key of {service} at entry {reply.seq}")
    out.print(f"restart {service}, then: scf journal revoke-key {current.key_id.hex()}")


@journal_app.command("revoke-key")
def revoke_key(key_id: str, root_key: Path | None = _ROOT_KEY_OPTION) -> None:
    """Journal the revocation of a key (hex key id), signed here with the root key:
    its statements are refused after it."""
    from services.gen.scf.journal.v1 import journal_pb2
    from services.journal.keyset import EV_REVOKED

    try:
        raw = bytes.fromhex(key_id)
    except ValueError:
        raise _fail("KEY_ID: not hex", 2) from None
    if len(raw) != 32:
        raise _fail("KEY_ID: a key id is 32 bytes (64 hex digits)", 2)
    root = _root_signer(root_key, Settings.from_env())
    idempotency_key = f"revoke-{key_id}"
    micros, signature = _root_signed(root, EV_REVOKED, {"key_id": raw.hex()}, idempotency_key)
    reply = _admin_call(
        "RevokeKey",
        journal_pb2.RevokeKeyRequest(
            key_id=raw,
            idempotency_key=idempotency_key,
            produced_micros=micros,
            root_signature=signature,
        ),
    )
    out.print(f"revoked at entry {reply.seq}")
