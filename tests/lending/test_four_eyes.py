"""Four eyes on every path that fixes or changes the terms: tried as an underwriter
who wants to decide alone would, over real gRPC, NATS and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest

from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2
from services.runtime.config import Settings
from services.runtime.proto_enums import enum_word
from tests.lending.helpers import LendingEnv, lending_env

pytestmark = pytest.mark.integration


def _terms(amount: str, rate_bps: int = 700) -> underwriting_pb2.Terms:
    return underwriting_pb2.Terms(
        amount=money_pb2.Money(amount=amount, currency="CNY"), rate_bps=rate_bps, tenor_days=0
    )


async def _counter(env: LendingEnv, app_id: str, party: str, amount: str, key: str) -> str:
    reply = await env.underwriting(party).CounterOffer(
        underwriting_pb2.CounterOfferRequest(
            application_id=app_id, terms=_terms(amount), idempotency_key=key
        )
    )
    return enum_word(lending_pb2.ApplicationState, reply.state, "state")


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def _accept(env: LendingEnv, app_id: str, key: str) -> lending_pb2.Application:
    reply = await env.lending("acme-builders").AcceptOffer(
        lending_pb2.AcceptOfferRequest(application_id=app_id, idempotency_key=key)
    )
    return reply.application


async def test_a_counter_offer_above_the_threshold_needs_a_second_underwriter(
    settings: Settings,
) -> None:
    """The issue's walk-around: uw-alice alone counter-offers the full 2,000,000.00
    and the subcontractor accepts. Now her offer waits for a second underwriter."""
    async with lending_env(settings) as env:
        await env.facility()
        app_id = await env.request(await env.confirmed_order("PO-4E1"), "2000000.00")
        await env.wait_state(app_id, "referred")

        assert await _counter(env, app_id, "uw-alice", "2000000.00", "a1") == (
            "pending_second_approval"
        )
        # Nothing to accept yet, and nothing reserved.
        refused = await _refused(_accept(env, app_id, "acc-early"))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (await env.get(app_id)).contract.contract_id == ""
        # She cannot be her own second pair of eyes, by either call.
        refused = await _refused(_counter(env, app_id, "uw-alice", "2000000.00", "a2"))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        refused = await _refused(env.approve(app_id, "uw-alice", "2000000.00", "a3"))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        # The second underwriter confirms what was proposed, or nothing.
        refused = await _refused(env.approve(app_id, "uw-bob", "2000000.00", "b0"))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "counter offer" in (refused.details() or "")
        refused = await _refused(_counter(env, app_id, "uw-bob", "1900000.00", "b1"))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        app = await env.get(app_id)
        assert app.state == lending_pb2.APPLICATION_STATE_PENDING_SECOND_APPROVAL and list(
            app.approvals
        ) == ["uw-alice"]

        assert await _counter(env, app_id, "uw-bob", "2000000.00", "b2") == "offered"
        app = await _accept(env, app_id, "acc")
        assert app.state == lending_pb2.APPLICATION_STATE_APPROVED and app.contract.contract_id
        assert list(app.approvals) == ["uw-alice", "uw-bob"]


async def test_a_counter_offer_within_one_underwriters_authority(settings: Settings) -> None:
    async with lending_env(settings) as env:
        await env.facility()
        app_id = await env.request(await env.confirmed_order("PO-4E2"), "3000000.00")
        await env.wait_state(app_id, "referred")
        assert await _counter(env, app_id, "uw-alice", "900000.00", "a1") == "offered"
        app = await _accept(env, app_id, "acc")
        assert app.state == lending_pb2.APPLICATION_STATE_APPROVED and list(app.approvals) == [
            "uw-alice"
        ]
        assert app.terms.amount.amount == "900000.00"


async def test_after_her_own_first_approval_she_cannot_turn_it_into_an_offer(
    settings: Settings,
) -> None:
    """The second finding: from pending_second_approval after her own approval."""
    async with lending_env(settings) as env:
        await env.facility()
        app_id = await env.request(await env.confirmed_order("PO-4E3"), "2000000.00")
        await env.wait_state(app_id, "referred")
        assert await env.approve(app_id, "uw-alice", "2000000.00", "a1") == (
            "pending_second_approval"
        )
        for amount in ("2000000.00", "900000.00"):
            refused = await _refused(_counter(env, app_id, "uw-alice", amount, f"c-{amount}"))
            assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        # Another underwriter's counter-offer is no confirmation of an approval.
        refused = await _refused(_counter(env, app_id, "uw-bob", "2000000.00", "b1"))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        refused = await _refused(_accept(env, app_id, "acc"))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        app = await env.get(app_id)
        assert app.state == lending_pb2.APPLICATION_STATE_PENDING_SECOND_APPROVAL and list(
            app.approvals
        ) == ["uw-alice"]
        assert await env.approve(app_id, "uw-bob", "2000000.00", "b2") == "approved"
