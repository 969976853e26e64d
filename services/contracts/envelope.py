"""The signed envelope every service-to-service message travels in. Pure.

A receiver acts on a message only once :func:`open_envelope` has checked
that the expected producer signed exactly these bytes, for this purpose
(bound to the subject it came on), for this request, and that it has not
expired. The signed bytes have a fixed layout (bus.proto's ``Signed``), so
nothing depends on protobuf serializing the same way twice.

Expiry is on real time, not the platform clock: it bounds how long a
captured message can be replayed, and the platform clock may be moved in
demos and tests.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from google.protobuf.message import DecodeError

from services.gen.scf.bus.v1 import bus_pb2

__all__ = [
    "DOMAIN",
    "EnvelopeRefused",
    "KeyLookup",
    "SigningKey",
    "open_envelope",
    "seal",
    "signed_bytes",
]

DOMAIN = b"scf-bus-signed-v1\x00"
#: How long a command or an answer may be acted on after it was signed.
DEFAULT_TTL_MICROS = 30_000_000


class EnvelopeRefused(ValueError):
    """A message that must not be acted on, and why."""


class SigningKey(Protocol):
    """What seals: a producer's name, its key id and its signing function."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


#: ``(producer, key_id) -> verify(message, signature)``; raises when the key
#: is not the producer's, or revoked, or the signature does not verify.
KeyLookup = Callable[[str, bytes, bytes, bytes], Awaitable[None]]


def _short(text: str) -> bytes:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise ValueError("envelope field longer than 65535 bytes")
    return struct.pack(">H", len(data)) + data


def signed_bytes(
    purpose: str, request_id: str, signer: str, key_id: bytes, expires_micros: int, body: bytes
) -> bytes:
    """The exact bytes an envelope's signature covers."""
    if len(key_id) != 32:
        raise ValueError("key_id must be 32 bytes")
    return b"".join(
        (
            DOMAIN,
            _short(purpose),
            _short(request_id),
            _short(signer),
            key_id,
            struct.pack(">QI", max(0, expires_micros), len(body)),
            body,
        )
    )


def seal(
    key: SigningKey,
    purpose: str,
    request_id: str,
    body: bytes,
    *,
    now_micros: int,
    ttl_micros: int | None = DEFAULT_TTL_MICROS,
) -> bytes:
    """``body`` signed by ``key``: the bytes to publish. ``ttl_micros=None``:
    an event that stays valid (it is a fact, consumed whenever its reader runs)."""
    expires = 0 if ttl_micros is None else now_micros + ttl_micros
    message = signed_bytes(purpose, request_id, key.name, key.key_id, expires, body)
    return bus_pb2.Signed(
        purpose=purpose,
        request_id=request_id,
        signer=key.name,
        key_id=key.key_id,
        expires_micros=expires,
        body=body,
        signature=key.sign(message),
    ).SerializeToString()


async def open_envelope(
    data: bytes,
    *,
    purpose: str,
    signers: tuple[str, ...],
    verify: KeyLookup,
    now_micros: int,
    request_id: str | None = None,
) -> bus_pb2.Signed:
    """The envelope in ``data``, once every check passed; :class:`EnvelopeRefused` otherwise."""
    try:
        env = bus_pb2.Signed.FromString(data)
    except DecodeError:
        raise EnvelopeRefused("not a signed envelope") from None
    if env.purpose != purpose:
        raise EnvelopeRefused(f"signed for {env.purpose!r}, not {purpose!r}")
    if env.signer not in signers:
        raise EnvelopeRefused(f"signed by {env.signer!r}; only {', '.join(signers)} may send this")
    if request_id is not None and env.request_id != request_id:
        raise EnvelopeRefused(f"an answer to request {env.request_id!r}, not {request_id!r}")
    if env.expires_micros and env.expires_micros < now_micros:
        raise EnvelopeRefused(f"expired at {env.expires_micros}")
    try:
        message = signed_bytes(
            env.purpose, env.request_id, env.signer, env.key_id, env.expires_micros, env.body
        )
    except ValueError as exc:
        raise EnvelopeRefused(str(exc)) from None
    try:
        await verify(env.signer, env.key_id, message, env.signature)
    except EnvelopeRefused:
        raise
    except ValueError as exc:  # the key set's refusal (unknown, revoked, someone else's)
        raise EnvelopeRefused(str(exc)) from None
    return env
