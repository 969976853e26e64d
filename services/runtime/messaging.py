"""Signed requests, answers and events between services: the one way they talk.

Every message goes out sealed by the sending service's journal-registered
key (:mod:`services.contracts.envelope`), for a purpose bound to its subject
(``orders.pledge.request``, ``orders.pledge.reply``, ``lending.disbursed.event``),
and is acted on only once the receiver has checked who signed it. An answer
must carry its request's id, so an old answer cannot stand in for a new one.
A message that fails a check is refused with an alarm in the log; a caller
that gets an answer it cannot trust sees UNAVAILABLE and asks again later.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.contracts.envelope import EnvelopeRefused, SigningKey, open_envelope, seal
from services.contracts.errors import from_wire, to_wire
from services.gen.scf.bus.v1 import bus_pb2
from services.runtime import tracing
from services.runtime.bus import ack, fetch
from services.runtime.deadlines import within_call
from services.runtime.errors import AWAY, RETRY_LATER, SCFError, Unavailable
from services.runtime.messages import build
from services.runtime.peer_keys import PeerKeys

__all__ = ["Messenger", "purpose_of", "real_time_micros"]

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=Message)
Reply = TypeVar("Reply", bound=Message)
Event = TypeVar("Event", bound=Message)


def real_time_micros() -> int:
    """Message expiry runs on real time (the platform clock may be moved in demos)."""
    return time.time_ns() // 1000


def purpose_of(subject: str, kind: str) -> str:
    """``<prefix>.orders.pledge`` and ``request`` -> ``orders.pledge.request``."""
    return f"{subject.split('.', 1)[1]}.{kind}"


class Messenger:
    def __init__(
        self,
        nc: NATS,
        key: SigningKey,
        peers: PeerKeys,
        *,
        now_micros: Callable[[], int] = real_time_micros,
    ) -> None:
        self.nc = nc
        self.key = key
        self.peers = peers
        self.now_micros = now_micros

    def seal(self, subject: str, kind: str, request_id: str, message: Message) -> bytes:
        ttl = None if kind == "event" else 30_000_000
        return seal(
            self.key, purpose_of(subject, kind), request_id, message.SerializeToString(),
            now_micros=self.now_micros(), ttl_micros=ttl,
        )  # fmt: skip

    async def open(
        self,
        data: bytes,
        subject: str,
        kind: str,
        signers: tuple[str, ...],
        request_id: str | None = None,
    ) -> bus_pb2.Signed:
        return await open_envelope(
            data, purpose=purpose_of(subject, kind), signers=signers, verify=self.peers.verify,
            now_micros=self.now_micros(), request_id=request_id,
        )  # fmt: skip

    async def request(
        self, subject: str, message: Message, reply_type: type[Reply], *, server: str,
        timeout: float = 10.0,
    ) -> Reply:  # fmt: skip
        """Ask ``server``; its answer, or the error it answered with, raised as ours."""
        request_id = uuid.uuid4().hex
        data = self.seal(subject, "request", request_id, message)
        with tracing.span(
            purpose_of(subject, "request"), kind=tracing.SpanKind.CLIENT,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject,
                        "scf.server": server},
        ):  # fmt: skip
            # No longer than the gRPC caller this is asked for still waits.
            reply = await self.nc.request(
                subject, data, timeout=within_call(timeout), headers=tracing.inject({}) or None
            )
        try:
            env = await self.open(reply.data, subject, "reply", (server,), request_id)
            result = reply_type.FromString(env.body)
        except (EnvelopeRefused, DecodeError) as exc:
            log.error("ALARM: refused an answer on %s: %s", subject, exc)
            raise Unavailable(f"the answer on {subject} could not be trusted: {exc}") from None
        if result.HasField("error"):
            raise from_wire(result.error)  # type: ignore[attr-defined]
        return result

    async def serve(
        self,
        subject: str,
        request_type: type[Req],
        reply_type: type[Reply],
        handler: Callable[[Req, str], Awaitable[Reply]],
        *,
        senders: tuple[str, ...],
        queue: str,
    ) -> None:
        """Answer signed requests on ``subject`` from ``senders``; the handler gets
        the request and the service that signed it."""

        async def on_message(msg: Msg) -> None:
            with tracing.span(
                purpose_of(subject, "request"), kind=tracing.SpanKind.SERVER, parent=msg.headers,
                attributes={"messaging.system": "nats", "messaging.destination.name": subject},
            ):  # fmt: skip
                await answer(msg)

        async def answer(msg: Msg) -> None:
            request_id = ""
            try:
                env = await self.open(msg.data, subject, "request", senders)
                request_id = env.request_id
                result = await handler(request_type.FromString(env.body), env.signer)
            except EnvelopeRefused as exc:
                log.error("ALARM: refused a request on %s: %s", subject, exc)
                result = _failed(reply_type, "PERMISSION_DENIED", f"request refused: {exc}")
                with contextlib.suppress(DecodeError):  # a refusal the requester can match
                    request_id = bus_pb2.Signed.FromString(msg.data).request_id
            except DecodeError:
                result = _failed(reply_type, "INVALID_ARGUMENT", "the request does not decode")
            except SCFError as exc:
                result = build(reply_type, error=to_wire(exc))
            except AWAY as exc:
                result = _failed(reply_type, "UNAVAILABLE", f"retry: {type(exc).__name__}")
            except Exception:  # answered, never dropped: the requester must not wait
                error_id = uuid.uuid4().hex[:12]
                log.exception("request on %s failed (error id %s)", subject, error_id)
                result = _failed(reply_type, "INTERNAL", f"internal error {error_id}")
            if not msg.reply:
                return
            try:
                await msg.respond(self.seal(subject, "reply", request_id, result))
            except nats.errors.Error as exc:  # the requester times out and asks again
                log.warning("could not answer on %s: %r", subject, exc)

        await self.nc.subscribe(subject, queue=queue, cb=on_message)

    async def publish_event(
        self, js: JetStreamContext, subject: str, message: Message, event_id: str
    ) -> None:
        """A JetStream event, deduplicated by ``event_id``; it does not expire."""
        await js.publish(
            subject,
            self.seal(subject, "event", event_id, message),
            headers=tracing.inject({"Nats-Msg-Id": event_id}),
            timeout=5,
        )

    async def notify(self, subject: str, message: Message, event_id: str) -> None:
        """A core NATS event (at most once: for watchers, never for what must not be lost)."""
        await self.nc.publish(subject, self.seal(subject, "event", event_id, message))

    async def consume_events(
        self,
        sub: Any,
        subject: str,
        event_type: type[Event],
        *,
        producers: tuple[str, ...],
        handle: Callable[[Event], Awaitable[None]],
        describe: Callable[[Event], str],
        quiet: tuple[type[Exception], ...] = (),
    ) -> None:
        """Take a durable consumer's events for good: each one ``producers`` signed
        is handled, in the trace of whoever published it, and acknowledged; one
        that meets something away is left to come again; one that fails is set
        aside with an alarm (it would fail alike each time) and the rest flow on.
        ``quiet``: failures the alarm names without a traceback."""
        while True:
            for msg in await fetch(sub, 50, 1.0):
                with self.consuming(msg, subject):
                    event = await self.take_event(msg, subject, event_type, producers=producers)
                    if event is None:
                        continue
                    try:
                        await handle(event)
                    except RETRY_LATER as exc:  # unacknowledged: it comes again
                        log.warning("%s deferred: %r", describe(event), exc)
                        continue
                    except Exception as exc:
                        log.error(
                            "ALARM: %s set aside, not applied: %s", describe(event), exc,
                            exc_info=not isinstance(exc, quiet),
                        )  # fmt: skip
                        with contextlib.suppress(nats.errors.Error):
                            await msg.term()
                        continue
                    await ack(msg)

    def consuming(self, msg: Msg, subject: str) -> contextlib.AbstractContextManager[object]:
        """A span for taking one JetStream event, in the trace of whoever published it."""
        return tracing.span(
            purpose_of(subject, "event"), kind=tracing.SpanKind.CONSUMER, parent=msg.headers,
            attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject},
        )  # fmt: skip

    async def take_event(
        self, msg: Msg, subject: str, event_type: type[Event], *, producers: tuple[str, ...]
    ) -> Event | None:
        """A consumed JetStream event, if one of ``producers`` signed it. None when
        it is not to be acted on now: not signed so (set aside for good, with an
        alarm) or the producers' keys out of reach (left to come again)."""
        try:
            return await self.open_event(msg.data, subject, event_type, producers=producers)
        except RETRY_LATER as exc:
            log.warning("event on %s deferred: %r", subject, exc)
            return None
        except (EnvelopeRefused, DecodeError) as exc:
            log.error("ALARM: set aside an event on %s that %s did not sign: %s",
                      subject, " or ".join(producers), exc)  # fmt: skip
            with contextlib.suppress(nats.errors.Error):
                await msg.term()
            return None

    async def open_event(
        self, data: bytes, subject: str, event_type: type[Event], *, producers: tuple[str, ...]
    ) -> Event:
        """The event, if one of ``producers`` signed it; EnvelopeRefused or DecodeError if not."""
        env = await self.open(data, subject, "event", producers)
        return event_type.FromString(env.body)


def _failed(reply_type: type[Reply], code: str, message: str) -> Reply:
    return build(reply_type, error=bus_pb2.Error(code=code, message=message))
