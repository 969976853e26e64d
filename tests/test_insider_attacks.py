"""An insider holding one service's NATS user and password (scoring's), and
what it cannot do: each attack of issue 14, on a real NATS with the platform's
users, real PostgreSQL and real gRPC. Services run under their own users."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.js.api import ConsumerConfig, StreamConfig

from services.contracts.permissions import grants
from services.contracts.subjects import OrderVerb, Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.journal.service import SPEC as JOURNAL
from services.orders.service import SPEC as ORDERS
from services.runtime.config import Settings
from services.runtime.embedded import EmbeddedNats
from services.runtime.errors import FailedPrecondition, PermissionDenied, Unavailable
from services.runtime.keys import load_or_create_signer
from services.runtime.nats_auth import ADMIN, nats_password
from tests.journal.helpers import Heard, producer
from tests.orders.helpers import register_request
from tests.support import messenger_as, provision_for, running

pytestmark = [pytest.mark.integration, pytest.mark.own_servers]

SECRET = "insider-test-secret"


@dataclasses.dataclass
class Guarded:
    """A NATS server that requires the platform's users, for one test."""

    settings: Settings  # as the operator (admin)
    server: EmbeddedNats

    def as_user(self, user: str) -> Settings:
        return dataclasses.replace(
            self.settings, nats_user=user, nats_password=nats_password(SECRET, user)
        )

    async def connect(self, user: str, errors: Heard | None = None) -> Any:
        async def on_error(exc: Exception) -> None:
            if errors is not None:
                errors.append(str(exc))

        return await nats.connect(
            self.settings.nats_url, user=user, password=nats_password(SECRET, user),
            inbox_prefix=Subjects("").inbox(user), error_cb=on_error,
            max_reconnect_attempts=0,
        )  # fmt: skip


@pytest.fixture
async def guarded(settings: Settings, tmp_path: Path) -> AsyncIterator[Guarded]:
    server = EmbeddedNats(
        tmp_path / "nats", auth_secret=SECRET, prefix=settings.nats_prefix, banks=settings.banks
    )
    url = await asyncio.to_thread(server.start)
    admin = dataclasses.replace(
        settings, nats_url=url, nats_user=ADMIN, nats_password=nats_password(SECRET, ADMIN)
    )
    await provision_for(admin)
    try:
        yield Guarded(admin, server)
    finally:
        await asyncio.to_thread(server.stop)


@dataclasses.dataclass
class Services:
    """Journal and orders, each under its own NATS user."""

    guarded: Guarded

    def __call__(self, *specs: Any) -> Any:
        stack = [running(spec, self.guarded.as_user(spec.name)) for spec in specs]
        return _all(stack)


class _all:
    def __init__(self, managers: list[Any]) -> None:
        self.managers = managers

    async def __aenter__(self) -> None:
        for m in self.managers:
            await m.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        for m in reversed(self.managers):
            await m.__aexit__(*exc)


async def _refused(call: Any) -> None:
    """A JetStream API call the user may not make: the server drops the request
    (a permissions violation), so no answer comes."""
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError)):
        await call


async def test_the_streams_buckets_and_consumers_are_the_operators_alone(
    guarded: Guarded,
) -> None:
    s = Subjects(guarded.settings.nats_prefix)
    admin = await guarded.connect(ADMIN)
    errors = Heard()
    insider = await guarded.connect("scoring", errors)
    try:
        ajs, js = admin.jetstream(), insider.jetstream(timeout=1)
        submit = s.submit_stream.name
        await ajs.publish(s.submit("platform"), b"kept", timeout=5)
        before = await ajs.stream_info(submit)
        # Its own stream, and a push consumer delivering into orders' command queue.
        await _refused(js.add_stream(StreamConfig(name="EVIL", subjects=["evil.>"])))
        await _refused(
            js.add_consumer(
                submit,
                ConsumerConfig(
                    durable_name="evil", deliver_subject=s.order_command(OrderVerb.RELEASE),
                    deliver_group="orders",
                ),
            )
        )  # fmt: skip
        await _refused(js.update_stream(StreamConfig(name=submit, subjects=["x.>"])))
        await _refused(js.purge_stream(submit))
        await _refused(js.delete_msg(submit, 1))
        await _refused(js.delete_consumer(submit, "sequencer"))
        await _refused(js.delete_stream(submit))
        # Another service's consumer: not even its next message.
        orders_relay = s.relay("orders", "entries")
        sub = await js.pull_subscribe_bind(orders_relay.durable, stream=orders_relay.stream)
        with pytest.raises((nats.errors.TimeoutError, TimeoutError)):
            await sub.fetch(1, timeout=1)
        # The clock: read, never written.
        kv = await js.key_value(s.clock_bucket)
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await kv.create("offset_micros", b"-3600000000")
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await kv.put("offset_micros", b"-3600000000")
        # Nothing changed: the stream, its consumers, the clock.
        after = await ajs.stream_info(submit)
        assert after.config.subjects == before.config.subjects
        assert after.state.messages == before.state.messages == 1
        assert {c.name for c in await ajs.consumers_info(submit)} == {"sequencer"}
        assert [i.config.name for i in await ajs.streams_info()].count("EVIL") == 0
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await (await ajs.key_value(s.clock_bucket)).get("offset_micros")
        await errors.at_least(8, 10, "the server's permission refusals")
        assert all("permissions violation" in e.lower() for e in errors), errors
    finally:
        await insider.close()
        await admin.close()


async def test_no_user_can_do_more_than_its_row_of_the_table(guarded: Guarded) -> None:
    """Every service user, against every subject of the table not in its row:
    each publish and each subscription is refused by the server."""
    s = Subjects(guarded.settings.nats_prefix)
    table = grants(s, guarded.settings.banks)
    concrete = {
        subject.replace("*", "x")
        for g in table.values()
        for subject in (*g.publishes, *g.requests, *g.serves, *g.listens)
    }
    admin = await guarded.connect(ADMIN)
    try:
        for user in ("journal", "orders", "scoring", "lending", "repayment"):
            row = table[user]
            mine_pub = {p.replace("*", "x") for p in (*row.publishes, *row.requests)}
            mine_sub = {p.replace("*", "x") for p in (*row.serves, *row.listens)}
            # The journal's patterns cover concrete names: compare by wildcard.
            forbidden_pub = sorted(
                x
                for x in concrete
                if not any(_matches(p, x) for p in (*row.publishes, *row.requests))
            )
            forbidden_sub = sorted(
                x for x in concrete if not any(_matches(p, x) for p in (*row.serves, *row.listens))
            )
            assert mine_pub and mine_sub | mine_pub
            seen: asyncio.Queue[Any] = asyncio.Queue()
            for subject in forbidden_pub:
                await admin.subscribe(subject, cb=seen.put)
            await admin.flush()
            errors = Heard()
            nc = await guarded.connect(user, errors)
            try:
                for subject in forbidden_pub:
                    await nc.publish(subject, b"more than its row")
                for subject in forbidden_sub:
                    await nc.subscribe(subject)
                # And another user's inbox: replies meant for someone else.
                other = "orders" if user != "orders" else "lending"
                await nc.subscribe(f"{s.inbox(other)}.>")
                await nc.flush()
                expected = len(forbidden_pub) + len(forbidden_sub) + 1
                await errors.at_least(expected, 10, f"{user}'s refusals")
                assert all("permissions violation" in e.lower() for e in errors), errors
                await admin.flush()
                assert seen.empty(), f"{user} published where it may not"
            finally:
                await nc.close()
    finally:
        await admin.close()


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


async def test_impostor_answers_and_double_financing(guarded: Guarded) -> None:
    """Scoring may neither listen on orders' subjects nor answer for orders; and
    an answer orders did not sign (a misconfigured NATS) is not acted on."""
    s = Subjects(guarded.settings.nats_prefix)
    settings = guarded.as_user("lending")
    async with Services(guarded)(JOURNAL):
        errors = Heard()
        insider = await guarded.connect("scoring", errors)
        admin = await guarded.connect(ADMIN)
        lending = await guarded.connect("lending")
        try:
            for subject in (s.order_facts, s.order_command(OrderVerb.PLEDGE)):
                await insider.subscribe(subject, cb=_answer_with(b"confirmed, not pledged"))
            await insider.flush()
            await errors.at_least(2, 10, "the subscriptions refused")
            messenger = messenger_as(settings, lending, "lending")
            command = bus_pb2.PledgeCommand(order_id="ORD-X", application_id="APP-X", bank="b")
            # Nobody else answers: the impostor's subscription never took.
            with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
                await messenger.request(
                    s.order_command(OrderVerb.PLEDGE), command, bus_pb2.PledgeResult,
                    server="orders", timeout=2,
                )  # fmt: skip
            # A NATS that lets anyone answer (admin plays the impostor): unsigned,
            # signed by scoring's key, or orders' genuine answer to another request.
            scoring_key = messenger_as(settings, admin, "scoring")
            orders_key = messenger_as(settings, admin, "orders")
            pledge = s.order_command(OrderVerb.PLEDGE)
            fakes = [
                bus_pb2.PledgeResult().SerializeToString(),
                scoring_key.seal(pledge, "reply", "?", bus_pb2.PledgeResult()),
                orders_key.seal(pledge, "reply", "an-old-request", bus_pb2.PledgeResult()),
                orders_key.seal(pledge, "request", "?", bus_pb2.PledgeResult()),
            ]
            for fake in fakes:
                sub = await admin.subscribe(pledge, cb=_answer_with(fake))
                await admin.flush()
                with pytest.raises(Unavailable, match="could not be trusted"):
                    await messenger.request(
                        pledge, command, bus_pb2.PledgeResult, server="orders", timeout=5
                    )
                await sub.unsubscribe()
        finally:
            for nc in (insider, admin, lending):
                await nc.close()


def _answer_with(data: bytes) -> Any:
    async def answer(msg: Any) -> None:
        await msg.respond(data)

    return answer


async def test_a_command_only_its_sender_signed_moves_a_pledge(guarded: Guarded) -> None:
    """Orders releases a pledge only for lending's signature: a release sealed
    with scoring's key, or repayment's, changes nothing."""
    settings = guarded.as_user("lending")
    s = Subjects(guarded.settings.nats_prefix)
    async with Services(guarded)(JOURNAL, ORDERS):
        admin = await guarded.connect(ADMIN)
        try:
            from services.gen.scf.orders.v1 import orders_pb2_grpc
            from services.runtime.certs import load_party
            from services.runtime.grpcserver import client_channel

            addr = settings.endpoint("orders").grpc_addr
            async with (
                client_channel(addr, load_party(settings.certs_dir, "acme-builders")) as a,
                client_channel(addr, load_party(settings.certs_dir, "citybuild")) as b,
            ):
                from services.gen.scf.orders.v1 import orders_pb2

                oid = (
                    await orders_pb2_grpc.OrdersServiceStub(a).RegisterOrder(
                        register_request("PO-SIGNED")
                    )
                ).order.order_id
                await orders_pb2_grpc.OrdersServiceStub(b).ConfirmOrder(
                    orders_pb2.ConfirmOrderRequest(order_id=oid, idempotency_key="c")
                )
            lending = messenger_as(settings, admin, "lending")
            pledge = bus_pb2.PledgeCommand(order_id=oid, application_id="APP-N", bank="bank-north")
            await lending.request(
                s.order_command(OrderVerb.PLEDGE), pledge, bus_pb2.PledgeResult, server="orders"
            )
            for impostor in ("scoring", "repayment"):
                forged = messenger_as(settings, admin, impostor)
                release = bus_pb2.PledgeCommand(order_id=oid, application_id="APP-N")
                with pytest.raises(PermissionDenied, match="request refused: signed by"):
                    await forged.request(
                        s.order_command(OrderVerb.RELEASE), release, bus_pb2.PledgeResult,
                        server="orders",
                    )  # fmt: skip
            # A second bank's pledge is still refused: one live financing per order.
            south = bus_pb2.PledgeCommand(order_id=oid, application_id="APP-S", bank="bank-south")
            with pytest.raises(FailedPrecondition, match="already backs application APP-N") as info:
                await lending.request(
                    s.order_command(OrderVerb.PLEDGE), south, bus_pb2.PledgeResult,
                    server="orders",
                )  # fmt: skip
            # The refusal crosses typed: its class, reason and subject, not just text.
            assert (info.value.reason, info.value.subject) == ("ALREADY_PLEDGED", f"order/{oid}")
        finally:
            await admin.close()


async def test_refusals_only_from_the_journal_and_for_each_key_they_name(
    guarded: Guarded,
) -> None:
    settings = guarded.as_user("orders")
    s = Subjects(settings.nats_prefix)
    async with Services(guarded)(JOURNAL):
        admin = await guarded.connect(ADMIN)
        errors = Heard()
        insider = await guarded.connect("scoring", errors)
        try:
            async with producer(settings) as genuine:
                journaled = await genuine.append(2, start=0)
                await genuine.wait_confirmed(2)
                # Scoring may not publish a refusal, nor submit as lending or orders.
                for subject in (s.refusals("orders"), s.submit("orders"), s.submit("lending")):
                    await insider.publish(subject, b"forged")
                await insider.flush()
                await errors.at_least(3, 10, "the publishes refused")
                # A refusal on orders' subject that the journal did not sign (a
                # misconfigured NATS lets admin stand in for an insider) is ignored;
                # one the journal signed never touches a journaled row.
                pending = await genuine.append(1, start=10)
                forged = messenger_as(settings, admin, "journal")
                for key, names in (("scoring", pending), ("journal", journaled)):
                    forged.key = load_or_create_signer(settings.keys_dir, key)
                    refusal = bus_pb2.Refusal(producer="orders", idempotency_keys=names)
                    data = forged.seal(s.refusals("orders"), "event", key, refusal)
                    await admin.jetstream().publish(s.refusals("orders"), data)
                relay = s.relay("orders", "refusals")

                async def taken() -> bool:
                    info = await admin.jetstream().consumer_info(relay.stream, relay.durable)
                    return info.num_pending == 0 and info.num_ack_pending == 0

                await genuine.wait_until(taken, "the relay to take both refusals")
                assert set(await genuine.wait_confirmed(3)) == {*journaled, *pending}
                rows = await genuine.pool.fetch("SELECT refused_reason FROM outbox")
                assert [r["refused_reason"] for r in rows] == [None, None, None]
            # A genuine refusal of several statements marks each of them.
            async with producer(settings, key_name="impostor") as wrong_key:
                keys = await wrong_key.append(3, start=100)

                async def all_refused() -> bool:
                    rows = await wrong_key.pool.fetch(
                        "SELECT refused_reason FROM outbox WHERE idempotency_key = ANY($1)", keys
                    )
                    return len(rows) == 3 and all(r["refused_reason"] for r in rows)

                await wrong_key.wait_until(
                    all_refused, "each statement of the batch marked refused"
                )
        finally:
            await insider.close()
            await admin.close()


async def test_a_party_certificate_cannot_pass_for_a_service(certs_dir: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.runtime.certs import load_party
    from services.runtime.grpcserver import GrpcServer, client_channel
    from services.runtime.ports import free_ports

    async def check(server_party: str, server_name: str | None = None) -> bool:
        port = free_ports(1)[0]
        server = GrpcServer("x", f"127.0.0.1:{port}", load_party(certs_dir, server_party))
        await server.start()
        try:
            tls = load_party(certs_dir, "operator")
            async with client_channel(f"127.0.0.1:{port}", tls, server_name=server_name) as ch:
                await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=3
                )
            return True
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            return False
        finally:
            await server.stop(0)

    assert await check("orders")  # a service, at the address dialled
    assert await check("journal", "journal")  # by the name in its certificate
    assert not await check("acme-builders")  # a party's certificate: client-auth only
    assert not await check("acme-builders", "acme-builders")
    assert not await check("journal", "orders")  # a service's certificate, another's name


async def test_a_submission_in_another_producers_name_announces_nothing_again(
    guarded: Guarded, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch on scoring's subject claiming orders' journaled keys is refused to
    scoring, and the journal does not publish orders' entries again for it."""
    from services.journal import sign_batch

    caplog.set_level(logging.INFO, logger="services.journal.sequencer")
    settings = guarded.as_user("orders")
    s = Subjects(settings.nats_prefix)
    async with Services(guarded)(JOURNAL):
        admin = await guarded.connect(ADMIN)
        try:
            ajs = admin.jetstream()
            async with producer(settings) as orders:
                keys = await orders.append(2, start=0)
                await orders.wait_confirmed(2)
                stream = s.journal_stream.name
                before = (await ajs.stream_info(stream, subjects_filter=s.entries("orders"))).state
                rows = await orders.pool.fetch("SELECT statement FROM outbox ORDER BY id")
                forged = sign_batch(
                    "orders", orders.outbox.signer.key_id, orders.outbox.signer.sign,
                    [bytes(r["statement"]) for r in rows],
                )  # fmt: skip
                # Scoring's subject (a NATS that let it publish orders' bytes there).
                await ajs.publish(s.submit("scoring"), forged.encode())
                await orders.append(1, start=10)  # journaled after the forged one
                await orders.wait_confirmed(3)
                after = (await ajs.stream_info(stream, subjects_filter=s.entries("orders"))).state
                # One more message of orders' entries: the new entry's, not a
                # re-announcement of the keys the forged batch named.
                subject = s.entries("orders")
                assert after.subjects[subject] == before.subjects[subject] + 1
                # JetStream would drop a re-announcement inside its duplicate window,
                # so ask the journal itself whether it tried.
                assert not [r for r in caplog.records if "re-announcing" in r.getMessage()]
                assert set(await orders.confirmed()) == {*keys, "k-10"}
        finally:
            await admin.close()
