"""The financing flow, every branch, over the real services."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from services.contracts.subjects import Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.orders.v1 import orders_pb2
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2
from services.runtime.config import Settings
from tests.lending.helpers import LendingEnv, lending_env
from tests.orders.helpers import register_request

pytestmark = pytest.mark.integration


async def _order(env: LendingEnv, oid: str) -> orders_pb2.Order:
    return (
        await env.orders.stub("acme-builders").GetOrder(orders_pb2.GetOrderRequest(order_id=oid))
    ).order


async def _facility(env: LendingEnv) -> lending_pb2.Facility:
    reply = await env.lending("acme-builders").ListFacilities(lending_pb2.ListFacilitiesRequest())
    return reply.facilities[0]


async def test_referred_four_eyes_signed_disbursed(settings: Settings) -> None:
    async with lending_env(settings) as env:
        await env.facility()
        oid = await env.confirmed_order("PO-F1")
        js = env.orders.nc.jetstream()
        sub = await js.subscribe(
            f"{settings.nats_prefix}.lending.disbursed",
            stream=Subjects(settings.nats_prefix).lending_stream.name,
        )

        app_id = await env.request(oid, "2000000.00")
        app = await env.wait_state(app_id, "referred")
        decision = json.loads(app.decision_json)
        assert decision["recommendation"] == "refer" and decision["grade"] == "C"
        assert (await _order(env, oid)).pledge.application_id == app_id

        queue = await env.underwriting("uw-bob").ListApplications(
            underwriting_pb2.ListApplicationsRequest()
        )
        assert [a.application_id for a in queue.applications] == [app_id]
        other_bank = await env.underwriting("uw-carol").ListApplications(
            underwriting_pb2.ListApplicationsRequest()
        )
        assert list(other_bank.applications) == []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.approve(app_id, "uw-carol", "2000000.00", "carol-1")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

        assert (
            await env.approve(app_id, "uw-alice", "2000000.00", "alice-1")
            == "pending_second_approval"
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.approve(app_id, "uw-alice", "2000000.00", "alice-2")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await env.approve(app_id, "uw-bob", "2000000.00", "bob-1") == "approved"

        app = await env.get(app_id)
        assert app.contract.sha256 and list(app.contract.signers) == [
            "acme-builders",
            "bank-north",
            "citybuild",
        ]
        assert (await _facility(env)).reserved.amount == "2000000.00"
        app = await env.sign_all(app)
        assert app.state in (
            lending_pb2.APPLICATION_STATE_EFFECTIVE,
            lending_pb2.APPLICATION_STATE_DISBURSED,
        )
        app = await env.wait_state(app_id, "disbursed")
        assert app.outcome == lending_pb2.APPLICATION_OUTCOME_DISBURSED
        facility = await _facility(env)
        assert (facility.drawn.amount, facility.reserved.amount, facility.available.amount) == (
            "2000000.00", "0.00", "3000000.00",
        )  # fmt: skip
        # Signed by lending: repayment books only what lending disbursed.
        signed = bus_pb2.Signed.FromString((await sub.next_msg(timeout=10)).data)
        assert signed.signer == "lending" and signed.purpose == "lending.disbursed.event"
        event = bus_pb2.Disbursed.FromString(signed.body)
        assert event.application_id == app_id and event.principal_minor == 200_000_000
        assert event.rate_bps == 600

        journaled = await env.orders.journaled()  # orders' own entries all journaled
        assert f"order/{oid}/v3" in journaled  # registered, confirmed, pledged


async def test_auto_approval(settings: Settings) -> None:
    async with lending_env(settings) as env:
        await env.facility()
        oid = await env.confirmed_order("PO-F2", accepted=True, due_in_days=20)
        app_id = await env.request(oid, "2000000.00")
        app = await env.wait_state(app_id, "approved")
        assert json.loads(app.decision_json)["recommendation"] == "approve"
        assert app.terms.amount.amount == "2000000.00" and app.terms.rate_bps == 350 + 250
        assert list(app.approvals) == []
        # A client that never saw the answer asks again, the order pledged by now:
        # it gets the same application, not "the order already backs one".
        assert await env.request(oid, "2000000.00") == app_id


async def test_reject_releases_pledge_and_facility(settings: Settings) -> None:
    async with lending_env(settings) as env:
        await env.facility()
        oid = await env.confirmed_order("PO-F3")
        app_id = await env.request(oid, "1000000.00")
        await env.wait_state(app_id, "referred")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.underwriting("uw-alice").Reject(
                underwriting_pb2.RejectRequest(application_id=app_id, idempotency_key="r0")
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        reply = await env.underwriting("uw-alice").Reject(
            underwriting_pb2.RejectRequest(
                application_id=app_id, reason_code="R07", text="concentration", idempotency_key="r1"
            )
        )
        assert reply.state == lending_pb2.APPLICATION_STATE_RELEASING
        app = await env.wait_state(app_id, "closed")
        assert app.outcome == lending_pb2.APPLICATION_OUTCOME_REJECTED and "R07" in app.reason
        assert not (await _order(env, oid)).HasField("pledge")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.approve(app_id, "uw-bob", "1000000.00", "late")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # The order is free again: a new application may pledge it.
        again = await env.request(oid, "1000000.00", key="second")
        await env.wait_state(again, "referred")


async def test_counter_offers_accepted_and_declined(settings: Settings) -> None:
    async with lending_env(settings) as env:
        await env.facility()
        for ref, accept in (("PO-F4", True), ("PO-F5", False)):
            oid = await env.confirmed_order(ref)
            app_id = await env.request(oid, "3000000.00")
            await env.wait_state(app_id, "referred")
            reply = await env.underwriting("uw-alice").CounterOffer(
                underwriting_pb2.CounterOfferRequest(
                    application_id=app_id,
                    terms=underwriting_pb2.Terms(
                        amount=money_pb2.Money(amount="900000.00", currency="CNY"),
                        rate_bps=700,
                        tenor_days=0,
                    ),
                    idempotency_key=f"co-{ref}",
                )
            )
            assert reply.state == lending_pb2.APPLICATION_STATE_OFFERED
            borrower = env.lending("acme-builders")
            if accept:
                app = (
                    await borrower.AcceptOffer(
                        lending_pb2.AcceptOfferRequest(application_id=app_id, idempotency_key="acc")
                    )
                ).application
                assert (
                    app.state == lending_pb2.APPLICATION_STATE_APPROVED
                    and app.terms.amount.amount == "900000.00"
                )
            else:
                await borrower.DeclineOffer(
                    lending_pb2.DeclineOfferRequest(application_id=app_id, idempotency_key="dec")
                )
                app = await env.wait_state(app_id, "closed")
                assert app.outcome == lending_pb2.APPLICATION_OUTCOME_DECLINED
                assert not (await _order(env, oid)).HasField("pledge")
        facility = await _facility(env)
        assert facility.reserved.amount == "900000.00"


async def test_withdrawal(settings: Settings) -> None:
    async with lending_env(settings) as env:
        await env.facility()
        oid = await env.confirmed_order("PO-F6")
        app_id = await env.request(oid, "1000000.00")
        await env.wait_state(app_id, "referred")
        await env.approve(app_id, "uw-alice", "1000000.00", "a1")
        assert (await _facility(env)).reserved.amount == "1000000.00"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.lending("delta-pumps").WithdrawApplication(
                lending_pb2.WithdrawApplicationRequest(application_id=app_id, idempotency_key="w0")
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await env.lending("acme-builders").WithdrawApplication(
            lending_pb2.WithdrawApplicationRequest(application_id=app_id, idempotency_key="w1")
        )
        app = await env.wait_state(app_id, "closed")
        assert app.outcome == lending_pb2.APPLICATION_OUTCOME_WITHDRAWN
        assert (await _facility(env)).reserved.amount == "0.00"
        assert not (await _order(env, oid)).HasField("pledge")


async def test_concurrent_drawdowns_never_exceed_the_facility(settings: Settings) -> None:
    async with lending_env(settings) as env:
        await env.facility(limit="3000000.00")
        apps = []
        for ref in ("PO-F7", "PO-F8"):
            oid = await env.confirmed_order(ref)
            apps.append(await env.request(oid, "2000000.00"))
        for app_id in apps:
            await env.wait_state(app_id, "referred")
        results = await asyncio.gather(
            *(env.approve(a, "uw-alice", "2000000.00", f"k-{a}") for a in apps),
            return_exceptions=True,
        )
        approved = [r for r in results if r == "pending_second_approval"]
        assert len(approved) == 2  # the first eyes reserve nothing yet
        results = await asyncio.gather(
            *(env.approve(a, "uw-bob", "2000000.00", f"b-{a}") for a in apps),
            return_exceptions=True,
        )
        oks = [r for r in results if r == "approved"]
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(oks) == 1 and len(errors) == 1
        assert errors[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        facility = await _facility(env)
        assert (
            facility.reserved.amount == "2000000.00" and facility.available.amount == "1000000.00"
        )


async def test_refusals(settings: Settings) -> None:
    async with lending_env(settings) as env:
        borrower = env.lending("acme-builders")
        sub = env.orders.stub("acme-builders")
        unconfirmed = (await sub.RegisterOrder(register_request("PO-U"))).order.order_id
        cases = [
            (
                lending_pb2.RequestFinancingRequest(
                    order_id=unconfirmed,
                    bank="bank-north",
                    amount=money_pb2.Money(amount="1.00", currency="CNY"),
                    idempotency_key="u1",
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
            ),
            (
                lending_pb2.RequestFinancingRequest(
                    order_id="ORD-NONE",
                    bank="bank-north",
                    amount=money_pb2.Money(amount="1.00", currency="CNY"),
                    idempotency_key="u2",
                ),
                grpc.StatusCode.NOT_FOUND,
            ),
        ]
        oid = await env.confirmed_order("PO-F9")
        cases += [
            # No facility at this bank yet.
            (
                lending_pb2.RequestFinancingRequest(
                    order_id=oid,
                    bank="bank-north",
                    amount=money_pb2.Money(amount="1.00", currency="CNY"),
                    idempotency_key="u3",
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
            ),
            (
                lending_pb2.RequestFinancingRequest(
                    order_id=oid,
                    bank="bank-north",
                    amount=money_pb2.Money(amount="4000000.01", currency="CNY"),
                    idempotency_key="u4",
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                lending_pb2.RequestFinancingRequest(
                    order_id=oid,
                    bank="bank-north",
                    amount=money_pb2.Money(amount="1.00", currency="USD"),
                    idempotency_key="u5",
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ]
        for request, code in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await borrower.RequestFinancing(request)
            assert info.value.code() == code, (request, info.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.lending("delta-pumps").RequestFinancing(
                lending_pb2.RequestFinancingRequest(
                    order_id=oid,
                    bank="bank-north",
                    amount=money_pb2.Money(amount="1.00", currency="CNY"),
                    idempotency_key="u6",
                )
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await env.facility(limit="1000000.00")
        with pytest.raises(grpc.aio.AioRpcError) as info:  # over what the facility has
            await env.request(oid, "1500000.00", key="u7")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        app_id = await env.request(oid, "500000.00")
        await env.wait_state(app_id, "referred")
        with pytest.raises(grpc.aio.AioRpcError) as info:  # already pledged
            await env.request(oid, "400000.00", key="u8")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and app_id in (
            info.value.details() or ""
        )
        state = await env.approve(app_id, "uw-alice", "500000.00", "ok")
        assert state == "approved"  # under the four-eyes amount: one underwriter suffices
        app = await env.get(app_id)
        # A signature that does not verify, and one from a stranger.
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        key = Ed25519PrivateKey.generate()
        await borrower.RegisterSigningKey(
            lending_pb2.RegisterSigningKeyRequest(
                public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                idempotency_key="k",
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await borrower.SignContract(
                lending_pb2.SignContractRequest(
                    contract_id=app.contract.contract_id,
                    signature=key.sign(b"something else"),
                    idempotency_key="s1",
                )
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.lending("harbor-works").SignContract(
                lending_pb2.SignContractRequest(
                    contract_id=app.contract.contract_id,
                    signature=b"\x00" * 64,
                    idempotency_key="s2",
                )
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (await env.get(app_id)).contract.signed_by == []
