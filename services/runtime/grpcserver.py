"""gRPC bootstrap: mTLS, caller identity, error mapping, health, reflection.

Identity cannot be read in a ``ServerInterceptor`` (it never sees the
``ServicerContext``, grpc/grpc #18459), so the interceptor wraps the method
handler instead: the wrapper gets ``(request, context)``, reads the peer
certificate from ``context.auth_context()`` and sets a ContextVar for the
servicer. The same wrapper turns :class:`SCFError` into statuses, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from services.contracts.bounds import check_request
from services.runtime import identity as ident
from services.runtime import tracing
from services.runtime.certs import PartyCert
from services.runtime.deadlines import CALL_DEADLINE
from services.runtime.errors import (
    AWAY,
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    SCFError,
    Unauthenticated,
)
from services.runtime.logs import LOG_FIELDS
from services.runtime.metrics import RPC_LATENCY, RPC_TOTAL

__all__ = ["GrpcServer", "client_channel", "status_for"]

log = logging.getLogger(__name__)


def _packed(message: Any) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def status_for(exc: SCFError) -> status_pb2.Status:
    """The rich ``google.rpc.Status`` for a domain error: the detail of its kind
    (BadRequest naming the field, PreconditionFailure), then always an ErrorInfo
    whose reason is a stable UPPER_SNAKE code a program may branch on (the error's
    own, or its status code's name) and whose metadata names the subject."""
    details = []
    if isinstance(exc, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=exc.problem
        )
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    elif isinstance(exc, FailedPrecondition):
        violation = error_details_pb2.PreconditionFailure.Violation(
            type=exc.reason or "STATE", subject=exc.subject, description=exc.message
        )
        details.append(_packed(error_details_pb2.PreconditionFailure(violations=[violation])))
    metadata = {"subject": exc.subject} if exc.subject else {}
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason or exc.code.name, domain="scf", metadata=metadata
    )
    details.append(_packed(info))
    return status_pb2.Status(
        code=getattr(code_pb2, exc.code.name), message=exc.message, details=details
    )


#: How long a caller should wait before retrying a call that found a dependency away.
RETRY_AFTER = duration_pb2.Duration(seconds=1)


def unavailable_status(exc: BaseException) -> status_pb2.Status:
    """UNAVAILABLE, with when to retry (RetryInfo) and a reason to branch on."""
    return status_pb2.Status(
        code=code_pb2.UNAVAILABLE,
        message=unavailable(exc),
        details=[
            _packed(error_details_pb2.RetryInfo(retry_delay=RETRY_AFTER)),
            _packed(error_details_pb2.ErrorInfo(reason="DEPENDENCY_UNAVAILABLE", domain="scf")),
        ],
    )


def unavailable(exc: BaseException) -> str:
    log.warning("a call found what it needs away: %r", exc)
    return "a service this call needs is unavailable; retry with the same idempotency key"


#: Every request's bounds and its NUL refusal, checked once for every RPC.
refuse_nul = check_request


def _identity_of(context: Any) -> ident.Identity:
    pems = list(context.auth_context().get("x509_pem_cert") or ())
    if not pems:
        raise Unauthenticated("a client certificate from the platform CA is required")
    return _parsed_identity(pems[0])


@functools.lru_cache(maxsize=4096)
def _parsed_identity(pem: bytes) -> ident.Identity:
    """A certificate is parsed once, not on every call of its connection (TLS has
    verified it against the platform CA on the handshake; these are its bytes)."""
    return ident.identity_from_pem(pem)


class _Undecodable:
    """A request body that did not decode: refused as INVALID_ARGUMENT, not UNKNOWN."""

    def __init__(self, size: int) -> None:
        self.size = size


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, invalid UTF-8 in a string field, ...
            return _Undecodable(len(data))

    return deserialize


def _decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            "request", f"the request body ({request.size} bytes) does not decode as this RPC's"
            " message",
        )  # fmt: skip


def _internal(method: str) -> str:
    """An unexpected failure: logged with its traceback under an id the caller gets."""
    error_id = uuid.uuid4().hex[:12]
    log.exception("%s failed unexpectedly (error id %s)", method, error_id)
    return f"internal error {error_id}; it is logged under this id"


@contextlib.asynccontextmanager
async def _guarded(service: str, method: str, request: Any, context: Any) -> AsyncIterator[None]:
    """One call, whatever its shape: the caller's identity set for its duration, the
    request checked, every failure a status (never UNKNOWN), counted, timed and
    traced by the code it ended with."""
    name = method.rsplit("/", 1)[-1]
    started = time.perf_counter()
    code = "OK"
    token = None
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    call_span = tracing.start_span(
        method.lstrip("/"), kind=tracing.SpanKind.SERVER, parent=metadata,
        attributes={"rpc.system": "grpc", "rpc.service": method.split("/")[1], "rpc.method": name,
                    "scf.service": service},
    )  # fmt: skip
    span_token = tracing.attach(call_span)
    fields = {"rpc": method}
    fields_token = LOG_FIELDS.set(fields)
    left = context.time_remaining()
    deadline_token = CALL_DEADLINE.set(None if left is None else time.monotonic() + left)
    try:
        caller = _identity_of(context)
        fields["party"] = caller.party_id
        if key := getattr(request, "idempotency_key", ""):
            fields["idempotency_key"] = str(key)[:200]
        token = ident.set_identity(caller)
        _decoded(request)
        refuse_nul(request)
        yield
    except SCFError as exc:
        code = exc.code.name
        await context.abort_with_status(rpc_status.to_status(status_for(exc)))
    except AWAY as exc:
        code = "UNAVAILABLE"
        await context.abort_with_status(rpc_status.to_status(unavailable_status(exc)))
    except grpc.aio.AbortError:
        raise
    except asyncio.CancelledError:
        # The caller went away, or its deadline passed: a watch call's usual end.
        left = context.time_remaining()
        code = "DEADLINE_EXCEEDED" if left is not None and left <= 0 else "CANCELLED"
        raise
    except Exception:
        code = "INTERNAL"
        await context.abort(grpc.StatusCode.INTERNAL, _internal(method))
    finally:
        RPC_TOTAL.labels(service, name, code).inc()
        RPC_LATENCY.labels(service, name).observe(time.perf_counter() - started)
        tracing.end_span(call_span, code)
        # A stream closed from elsewhere (its caller gone) ends in another context,
        # where these tokens cannot be reset; that context is discarded anyway.
        with contextlib.suppress(ValueError):
            if token is not None:
                ident.reset_identity(token)
            LOG_FIELDS.reset(fields_token)
            CALL_DEADLINE.reset(deadline_token)
        tracing.detach(span_token)


class _CallerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        service, method = self._service, details.method
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                async with _guarded(service, method, request, context):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, deserializer, handler.response_serializer
            )
        if handler.unary_stream is None:
            return handler
        inner_stream: Any = handler.unary_stream
        if inspect.isasyncgenfunction(inner_stream):

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                async with _guarded(service, method, request, context):
                    async for item in inner_stream(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                stream, deserializer, handler.response_serializer
            )

        # A stream that writes with ``context.write`` and returns a coroutine, as the
        # health service's Watch does: wrapped as one, since ``async for`` breaks it.
        async def written(request: Any, context: Any) -> None:
            async with _guarded(service, method, request, context):
                await inner_stream(request, context)

        return grpc.unary_stream_rpc_method_handler(
            written, deserializer, handler.response_serializer
        )


class _Health(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """grpc's health service, with the List its aio servicer leaves unimplemented."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )


#: Newer clients (grpcurl, Postman) ask for v1 first; grpcio-reflection serves v1alpha.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _serve_reflection(names: list[str], server: grpc.aio.Server) -> None:
    """Reflection under both names: v1's messages are v1alpha's, field for field, so
    one servicer answers both."""
    servicer = reflection.aio.ReflectionServicer(names)  # type: ignore[attr-defined]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )


class GrpcServer:
    """A grpc.aio server with mTLS, health, reflection and graceful shutdown.

    Create it inside the running event loop (grpc/grpc #32480).
    """

    def __init__(self, service: str, addr: str, tls: PartyCert) -> None:
        self.service = service
        self.addr = addr
        # No SO_REUSEPORT: a second server on the same port must fail to start,
        # not silently share the port and answer UNIMPLEMENTED to half the calls.
        self.server = grpc.aio.server(
            interceptors=[_CallerInterceptor(service)], options=[("grpc.so_reuseport", 0)]
        )
        credentials = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
        )
        try:
            self.port = self.server.add_secure_port(addr, credentials)
        except RuntimeError:  # grpc.aio raises RuntimeError("Failed to bind ...")
            self.port = 0
        if self.port == 0:
            raise ConfigError(f"SCF_{service.upper()}_ADDR", f"cannot listen on {addr} (in use?)")
        self.health = _Health()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = []
        #: False once the service found it cannot do its work (the journal's damaged store).
        self.serving = True
        self._started = False
        #: Dependencies lost for now (PostgreSQL, NATS), each with what went wrong.
        self.failing: dict[str, str] = {}

    def add(
        self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, name: str
    ) -> None:
        """Register a servicer; ``name`` is its full proto service name."""
        register(servicer, self.server)
        self._service_names.append(name)

    async def start(self) -> None:
        names = [
            *self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1
        ]  # fmt: skip
        _serve_reflection(names, self.server)
        await self.server.start()
        self._started = True
        await self._set_health()
        log.info("gRPC %s listening on %s", self.service, self.addr)

    async def not_serving(self) -> None:
        """Health NOT_SERVING from now on (before or after start), for every service."""
        self.serving = False
        if self._started:
            await self._set_health()

    @property
    def ready(self) -> bool:
        """SERVING: started, able to do its work, and every dependency there."""
        return self._started and self.serving and not self.failing

    async def dependency(self, name: str, problem: str | None) -> None:
        """A dependency lost (``problem`` says how) or back (None): health follows."""
        if self.failing.get(name) == problem:
            return
        if problem is None:
            self.failing.pop(name, None)
            log.info("%s: %s is back", self.service, name)
        else:
            if name not in self.failing:
                log.warning("%s: %s lost, NOT_SERVING until it is back: %s", self.service,
                            name, problem)  # fmt: skip
            self.failing[name] = problem
        if self._started:
            await self._set_health()

    async def _set_health(self) -> None:
        status = health_pb2.HealthCheckResponse
        for name in ["", *self._service_names]:
            await self.health.set(name, status.SERVING if self.ready else status.NOT_SERVING)

    async def stop(self, grace: float = 3.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def wait_for_signal(
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Return when the process is asked to stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def client_channel(
    target: str,
    tls: PartyCert | None,
    *,
    ca: bytes | None = None,
    server_name: str | None = None,
) -> Any:
    """A channel to a platform service, presenting ``tls``'s certificate.

    The server's certificate must name the host dialled (``target``), or
    ``server_name`` when given: a certificate of the platform CA that names
    neither (a party's, which names no host at all) is refused.
    ``tls=None`` with ``ca`` builds a channel without a client certificate (for
    tests that check the server refuses it).
    """
    if tls is not None:
        creds = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
    else:
        creds = grpc.ssl_channel_credentials(ca)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.aio.secure_channel(
        target, creds, options=options,
        interceptors=[_TraceUnary(), _TraceStream()],  # type: ignore[list-item]
    )  # fmt: skip


def _traced(details: Any) -> Any:
    """The call's details with the current trace context added to its metadata."""
    carrier = tracing.inject({})
    if not carrier:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in carrier.items():
        metadata[key] = value
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def _method_name(details: Any) -> str:
    method = details.method
    return (method.decode() if isinstance(method, bytes) else method).lstrip("/")


class _TraceUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """A client span for each call, its context carried in the metadata; it ends
    when the answer (or its error) is in."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if not tracing.enabled():  # the context still goes on, without a span of ours
            return await continuation(_traced(details), request)
        call_span = tracing.start_span(_method_name(details), kind=tracing.SpanKind.CLIENT)
        token = tracing.attach(call_span)
        try:
            call = await continuation(_traced(details), request)
        except BaseException:
            tracing.end_span(call_span, "UNKNOWN")
            raise
        finally:
            tracing.detach(token)
        call.add_done_callback(lambda done: _end_when_known(call_span, done))
        return call


def _end_when_known(call_span: Any, call: Any) -> None:
    """A done callback cannot await the call's code (a coroutine in grpc.aio); it
    is known by now, so a task reads it at once."""

    async def end() -> None:
        code = "CANCELLED" if call.cancelled() else (await call.code()).name
        tracing.end_span(call_span, code)

    task = asyncio.ensure_future(end())
    _ENDING.add(task)
    task.add_done_callback(_ENDING.discard)


#: Span-ending tasks, held until done (the loop keeps only weak references).
_ENDING: set[asyncio.Future[None]] = set()


class _TraceStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    """A watch carries the caller's trace context (its messages make no span here)."""

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_traced(details), request)
