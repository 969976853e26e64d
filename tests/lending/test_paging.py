"""The lists of lending page by key: every item once, only the caller's, a
token only as given out."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2
from services.runtime.config import Settings
from tests.lending.helpers import TODAY, LendingEnv, lending_env

pytestmark = pytest.mark.integration


async def _facility(env: LendingEnv, staff: str, subcontractor: str) -> str:
    reply = await env.lending(staff).CreateFacility(
        lending_pb2.CreateFacilityRequest(
            subcontractor_id=subcontractor,
            limit=money_pb2.Money(amount="5000000.00", currency="CNY"),
            expires_on=(TODAY + dt.timedelta(days=365)).isoformat(),
            idempotency_key=f"page-{staff}-{subcontractor}",
        )
    )
    return reply.facility.facility_id


async def _all_facilities(env: LendingEnv, party: str, size: int) -> tuple[list[str], int]:
    ids, token, pages = [], "", 0
    while True:
        reply = await env.lending(party).ListFacilities(
            lending_pb2.ListFacilitiesRequest(page_size=size, page_token=token)
        )
        assert len(reply.facilities) <= size
        ids += [f.facility_id for f in reply.facilities]
        pages += 1
        token = reply.next_page_token
        if not token:
            return ids, pages


async def test_facilities_and_the_queue_page(settings: Settings) -> None:
    async with lending_env(settings) as env:
        acme_north = await _facility(env, "uw-alice", "acme-builders")
        delta_north = await _facility(env, "uw-alice", "delta-pumps")
        acme_south = await _facility(env, "uw-carol", "acme-builders")

        # Each caller pages through its own: its bank's, or its own facilities.
        assert await _all_facilities(env, "uw-bob", 1) == (sorted([acme_north, delta_north]), 2)
        assert await _all_facilities(env, "uw-carol", 1) == ([acme_south], 1)
        assert (await _all_facilities(env, "acme-builders", 1))[0] == sorted(
            [acme_north, acme_south]
        )
        assert await _all_facilities(env, "operator", 2) == (
            sorted([acme_north, delta_north, acme_south]),
            2,
        )

        # Two referred applications at bank-north: one page each, oldest first.
        apps = []
        for ref in ("PO-PG1", "PO-PG2"):
            app_id = await env.request(await env.confirmed_order(ref), "2000000.00")
            await env.wait_state(app_id, "referred")
            apps.append(app_id)
        uw = env.underwriting("uw-bob")
        first = await uw.ListApplications(underwriting_pb2.ListApplicationsRequest(page_size=1))
        second = await uw.ListApplications(
            underwriting_pb2.ListApplicationsRequest(page_size=1, page_token=first.next_page_token)
        )
        got = [a.application_id for a in [*first.applications, *second.applications]]
        assert got == apps and second.next_page_token == ""

        # A state filter names enum values; UNSPECIFIED or an unknown number is refused.
        approved_only = await uw.ListApplications(
            underwriting_pb2.ListApplicationsRequest(
                states=[lending_pb2.APPLICATION_STATE_APPROVED]
            )
        )
        assert list(approved_only.applications) == []
        referred = await uw.ListApplications(
            underwriting_pb2.ListApplicationsRequest(
                states=[lending_pb2.APPLICATION_STATE_REFERRED]
            )
        )
        assert {a.state for a in referred.applications} == {lending_pb2.APPLICATION_STATE_REFERRED}
        for states in ([0], [lending_pb2.APPLICATION_STATE_REFERRED, 99]):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await uw.ListApplications(
                    underwriting_pb2.ListApplicationsRequest(states=states)  # type: ignore[arg-type]
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # A token from another list, made up, or a page too large: refused.
        for bad in (
            lending_pb2.ListFacilitiesRequest(page_token=first.next_page_token),
            lending_pb2.ListFacilitiesRequest(page_token="bm90IGEgdG9rZW4="),
            lending_pb2.ListFacilitiesRequest(page_size=101),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await env.lending("uw-bob").ListFacilities(bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
