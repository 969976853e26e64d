"""Health that tells the truth: a service that loses its PostgreSQL answers
NOT_SERVING (gRPC health and the unauthenticated /readyz) until it is back.
PostgreSQL is real; between it and the service sits a TCP proxy the test cuts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import version
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.metrics import serve_metrics
from services.scoring.service import SPEC as SCORING
from tests.support import running

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Cuttable:
    """A loopback TCP proxy to a real server: cut, every connection through it
    drops and new ones are refused; restored, it passes traffic again."""

    def __init__(self, upstream: Callable[[], Awaitable[Streams]]) -> None:
        self.upstream = upstream
        self.cut = False
        self._open: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await self.upstream()
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._open -= {writer, up_writer}

    def sever(self) -> None:
        self.cut = True
        for writer in list(self._open):
            writer.transport.abort()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            self.sever()
            server.close()


def _probe(port: int, path: str) -> tuple[int, bytes]:
    """An orchestrator's probe: plain HTTP, no certificate."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _through(url: str) -> tuple[Callable[[], Awaitable[Streams]], Callable[[int], str]]:
    """How to reach the PostgreSQL of ``url`` (TCP, or the Unix socket embedded
    servers use), and the same URL by TCP on a loopback port."""
    db = urlsplit(url)
    query = dict(parse_qsl(db.query))
    port = db.port or int(query.get("port", 5432))
    if "host" in query:
        path = f"{query.pop('host')}/.s.PGSQL.{port}"
        upstream: Callable[[], Awaitable[Streams]] = lambda: asyncio.open_unix_connection(path)  # noqa: E731
    else:
        host = db.hostname or "127.0.0.1"
        upstream = lambda: asyncio.open_connection(host, port)  # noqa: E731
    query.pop("port", None)
    user = f"{db.username}@" if db.username else ""

    def at(local: int) -> str:
        netloc = f"{user}127.0.0.1:{local}"
        return urlunsplit(db._replace(netloc=netloc, query=urlencode(query)))

    return upstream, at


async def test_health_follows_a_lost_postgresql_and_its_return(settings: Settings) -> None:
    upstream, at = _through(settings.database_url)
    proxy = Cuttable(upstream)
    async with proxy.serving() as port:
        proxied = dataclasses.replace(settings, database_url=at(port))
        probes = serve_metrics("127.0.0.1:0")
        async with running(SCORING, proxied):
            tls = load_party(settings.certs_dir, "operator")
            async with client_channel(settings.endpoint("scoring").grpc_addr, tls) as channel:
                watch = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service=""), timeout=60
                )

                async def next_status() -> int:
                    return int((await asyncio.wait_for(watch.read(), timeout=15)).status)

                assert await next_status() == SERVING
                # The verdict and nothing else: no names, no addresses, no metrics.
                assert await asyncio.to_thread(_probe, probes, "/readyz") == (200, b"ok\n")
                proxy.sever()
                assert await next_status() == NOT_SERVING
                assert await asyncio.to_thread(_probe, probes, "/readyz") == (503, b"not ready\n")
                assert await asyncio.to_thread(_probe, probes, "/healthz") == (
                    200,
                    b"ok\n",
                )  # alive
                proxy.cut = False  # PostgreSQL is back
                assert await next_status() == SERVING
                assert (await asyncio.to_thread(_probe, probes, "/readyz"))[0] == 200
                watch.cancel()
        status, metrics = await asyncio.to_thread(_probe, probes, "/metrics")
        assert status == 200 and b"scf_rpc_total" in metrics  # /metrics beside them
        assert f'scf_build_info{{version="{version("scf")}"}} 1.0'.encode() in metrics
