"""The explorer's HTTPS server: mutual TLS, the caller known by its certificate.

Hypercorn serves the ASGI app over connections this module accepts itself,
because no ASGI server hands the client certificate to the app: each
connection's certificate is read once its TLS handshake is done and kept for
the app (``scope["extensions"]["scf.peer"]``), keyed by the connection's
address, for as long as the connection lasts.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.utils import wrap_app

from services.runtime.certs import PartyCert
from services.runtime.errors import ConfigError

__all__ = ["serve_explorer"]

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def _tls(server: PartyCert) -> ssl.SSLContext:
    """The server's certificate; a client certificate of the platform CA required."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=server.ca.decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    # load_cert_chain reads files only: the PEMs go through a private directory.
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(server.cert)
        key.write_bytes(server.key)
        ctx.load_cert_chain(cert, key)
    return ctx


async def serve_explorer(app: ASGIApp, addr: str, tls: PartyCert) -> None:
    """Serve ``app`` on ``addr`` (host:port) until cancelled."""
    host, _, port = addr.rpartition(":")
    config = Config()
    config.accesslog = None
    #: This explorer's connections: address -> the client certificate (DER).
    peers: dict[tuple[str, int], bytes] = {}
    wrapped = wrap_app(_with_peer(app, peers), config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    context = WorkerContext(None)
    loop = asyncio.get_running_loop()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        key = (peer[0], peer[1])
        if der:
            peers[key] = der
        try:
            await TCPServer(wrapped, loop, config, context, {}, reader, writer)
        finally:
            peers.pop(key, None)

    try:
        server = await asyncio.start_server(
            connection, host or "127.0.0.1", int(port), ssl=_tls(tls), ssl_handshake_timeout=10
        )
    except OSError as exc:
        raise ConfigError("explorer address", f"cannot listen on {addr}: {exc.strerror}") from None
    async with server:
        await server.serve_forever()


def _with_peer(app: ASGIApp, peers: dict[tuple[str, int], bytes]) -> ASGIApp:
    async def with_peer(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            der = peers.get((client[0], client[1])) if client else None
            scope.setdefault("extensions", {})["scf.peer"] = {"der": der}
        await app(scope, receive, send)

    return with_peer
