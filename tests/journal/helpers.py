"""A producer for journal tests: the shared outbox and relay, as a service uses them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.contracts.subjects import Subjects
from services.runtime.bus import connect_nats
from services.runtime.certs import load_party
from services.runtime.clock import SystemClock
from services.runtime.config import Settings
from services.runtime.db import apply_migrations, connect_pool
from services.runtime.journal_client import Outbox, OutboxRelay, audit_client
from services.runtime.keys import Signer, load_or_create_signer
from services.runtime.messaging import Messenger
from services.runtime.peer_keys import PeerKeys


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    timeout: float = 30.0,
    what: str = "condition",
    *,
    wake: tuple[str, ...],
    nc: Any,
) -> None:
    """Await a condition that another process brings about, with a deadline: it
    is checked again when a message arrives on ``wake`` (NATS subjects on which
    the platform says it moved: a relay's ``journaled.<producer>``, a replica's
    cosignature, or everything under the prefix), and once a second besides."""
    moved = asyncio.Event()

    async def woken(_msg: Any) -> None:
        moved.set()

    subs = [await nc.subscribe(subject, cb=woken) for subject in wake]
    try:
        async with asyncio.timeout(timeout):
            while True:
                moved.clear()
                if await check():
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await moved.wait()
    except TimeoutError:
        raise TimeoutError(f"{what} not reached in {timeout} s") from None
    finally:
        for sub in subs:
            await sub.unsubscribe()


class Heard(list[str]):
    """What a NATS server said to a connection (its permission refusals), kept as
    it comes; :meth:`at_least` awaits it."""

    def __init__(self) -> None:
        super().__init__()
        self._grew = asyncio.Event()

    def append(self, text: str) -> None:
        super().append(text)
        self._grew.set()

    async def at_least(self, n: int, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while len(self) < n:
                    self._grew.clear()
                    await self._grew.wait()
        except TimeoutError:
            raise TimeoutError(f"{what}: {len(self)} of {n} in {timeout} s") from None


async def wait_on_platform(
    settings: Settings,
    check: Callable[[], Awaitable[bool]],
    what: str,
    timeout: float = 30.0,
) -> None:
    """Until ``check`` holds, looked at again whenever the platform under
    ``settings`` says anything on NATS (and each second besides)."""
    nc = await connect_nats(
        settings.nats_url, "test-wait", user=settings.nats_user, password=settings.nats_password
    )
    try:
        await wait_until(check, timeout, what, wake=(f"{settings.nats_prefix}.>",), nc=nc)
    finally:
        await nc.close()


@dataclass
class Producer:
    pool: asyncpg.Pool[Any]
    outbox: Outbox
    js: Any
    subjects: Subjects
    #: Opens the journal's signed refusals, as a service's does.
    messenger: Any
    #: The relay's task, when the producer runs one.
    relay: asyncio.Task[None] | None = None
    nc: Any = None

    async def append(self, n: int, subject: str = "order/ORD-1", start: int = 0) -> list[str]:
        keys = [f"k-{i}" for i in range(start, start + n)]
        async with self.pool.acquire() as conn, conn.transaction():
            for key in keys:
                await self.outbox.add(conn, subject, "order.noted", {"n": key}, key)
        return keys

    async def confirmed(self) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT idempotency_key, journal_seq FROM outbox WHERE journal_seq IS NOT NULL"
        )
        return {r["idempotency_key"]: r["journal_seq"] for r in rows}

    async def wait_until(
        self, check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0
    ) -> None:
        """Until ``check`` holds, looked at again whenever the platform says anything
        on NATS (entries, refusals, checkpoints, notifications) and each second."""
        await wait_until(check, timeout, what, wake=(f"{self.subjects.prefix}.>",), nc=self.nc)

    async def wait_confirmed(self, n: int, timeout: float = 30.0) -> dict[str, int]:
        async def done() -> bool:
            return len(await self.confirmed()) >= n

        # Woken by the relay once it recorded what the journal confirmed.
        wake = (self.subjects.journaled(self.outbox.signer.name),)
        await wait_until(done, timeout, f"{n} outbox rows journaled", wake=wake, nc=self.nc)
        return await self.confirmed()


def relay_messenger(settings: Settings, nc: Any, signer: Signer) -> Messenger:
    """What a relay checks the journal's refusals with: its key set, from the root."""
    tls = load_party(settings.certs_dir, "orders")
    peers = PeerKeys(audit_client(settings.endpoint("journal").grpc_addr, tls), settings.keys_dir)
    return Messenger(nc, signer, peers)


@contextlib.asynccontextmanager
async def producer(
    settings: Settings,
    name: str = "orders",
    *,
    relay: bool = True,
    key_name: str | None = None,
    schema: str | None = None,
    retry_after_s: float = 2.0,
) -> AsyncIterator[Producer]:
    schema = schema or settings.endpoint(name).schema
    pool = await connect_pool(settings.database_url, schema)
    await apply_migrations(pool, schema, "services.runtime")
    nc = await connect_nats(
        settings.nats_url, f"test-{name}", user=settings.nats_user,
        password=settings.nats_password,
    )  # fmt: skip
    js = nc.jetstream()
    subjects = Subjects(settings.nats_prefix)
    signer = load_or_create_signer(settings.keys_dir, key_name or name)
    if key_name is not None:
        signer = type(signer)(name, signer.private_key)  # claims to be `name`, with another key
    outbox = Outbox(signer, SystemClock(), schema)
    messenger = relay_messenger(settings, nc, signer)
    task = None
    if relay:

        async def notify(data: bytes) -> None:  # as a service's relay tells its watchers
            await nc.publish(subjects.journaled(name), data)

        r = OutboxRelay(
            pool, js, subjects, outbox, messenger, retry_after_s=retry_after_s, notify=notify
        )
        await r.setup()
        task = asyncio.create_task(r.run())
    try:
        yield Producer(pool, outbox, js, subjects, messenger, task, nc)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await nc.close()
        await pool.close()


def root_signed_register(
    settings: Settings, producer: str, public_key: bytes, idempotency_key: str
) -> Any:
    """A RegisterKeyRequest signed with the root key, as `scf journal rotate-key` makes it."""
    from services.gen.scf.journal.v1 import journal_pb2
    from services.journal.keyset import EV_REGISTERED

    body = {"producer": producer, "public_key": public_key.hex()}
    micros, signature = _root_sign(settings, EV_REGISTERED, body, idempotency_key)
    return journal_pb2.RegisterKeyRequest(
        producer=producer, public_key=public_key, idempotency_key=idempotency_key,
        produced_micros=micros, root_signature=signature,
    )  # fmt: skip


def root_signed_revoke(settings: Settings, key_id: bytes, idempotency_key: str) -> Any:
    from services.gen.scf.journal.v1 import journal_pb2
    from services.journal.keyset import EV_REVOKED

    micros, signature = _root_sign(settings, EV_REVOKED, {"key_id": key_id.hex()}, idempotency_key)
    return journal_pb2.RevokeKeyRequest(
        key_id=key_id, idempotency_key=idempotency_key, produced_micros=micros,
        root_signature=signature,
    )  # fmt: skip


def _root_sign(
    settings: Settings, event_type: str, body: dict[str, str], idempotency_key: str
) -> tuple[int, bytes]:
    import time

    from services.journal.encoding import sign_batch
    from services.journal.genesis import ROOT_KEY_NAME, key_statement
    from services.journal.keyset import PLATFORM_PRODUCER

    root = load_or_create_signer(settings.keys_dir, ROOT_KEY_NAME)
    micros = time.time_ns() // 1000
    statement = key_statement(event_type, body, idempotency_key, micros, root.key_id)
    batch = sign_batch(PLATFORM_PRODUCER, root.key_id, root.sign, [statement.encode()])
    return micros, batch.signature
