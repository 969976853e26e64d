"""Health as orchestrators and grpc's own clients read it: Check, List and Watch,
through the platform's interceptor (whose wrapping once broke Watch: UNKNOWN)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.metrics import RPC_TOTAL
from tests.support import bare_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_watch_follows_the_status_and_list_names_every_service(certs_dir: Path) -> None:
    async with bare_server(certs_dir, "health-test") as (server, channel):
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        first = await asyncio.wait_for(watch.read(), timeout=5)
        assert first.status == SERVING
        await server.not_serving()  # as the journal does on a damaged store
        second = await asyncio.wait_for(watch.read(), timeout=5)
        assert second.status == NOT_SERVING
        watch.cancel()
        listed = await stub.List(health_pb2.HealthListRequest(), timeout=5)
        assert listed.statuses[""].status == NOT_SERVING
        checked = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert checked.status == NOT_SERVING
    # Each call is counted under its own method, and none as a failure.
    counted = {
        (s.labels["method"], s.labels["code"])
        for metric in RPC_TOTAL.collect()
        for s in metric.samples
        if s.labels.get("service") == "health-test" and s.name.endswith("_total")
    }
    assert {("List", "OK"), ("Check", "OK")} <= counted
    assert not any(code in ("UNKNOWN", "INTERNAL") for _, code in counted)


async def test_reflection_answers_under_v1_and_v1alpha(certs_dir: Path) -> None:
    """grpcurl and other newer clients ask for v1 first; it was UNIMPLEMENTED."""
    from grpc_reflection.v1alpha import reflection_pb2

    async with bare_server(certs_dir, "reflection-test") as (_, channel):
        for version in ("v1", "v1alpha"):
            call = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            replies = [r async for r in call(iter([request]), timeout=5)]
            names = {s.name for s in replies[0].list_services_response.service}
            assert {
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            } <= names, version
