"""The demo's financing: request, scoring, four eyes, signatures, disbursement."""

from __future__ import annotations

import datetime as dt
import io
import json

import grpc
from rich.console import Console

from services.cli.score_cmds import show
from services.cli.waits import application_in
from services.gen.scf.lending.v1 import lending_pb2, lending_pb2_grpc
from services.gen.scf.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2, underwriting_pb2_grpc
from services.lending.signing import sign_contract
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.proto_enums import word_of

PARTIES = ("acme-builders", "citybuild", "uw-alice", "uw-bob")


async def finance(settings: Settings, out: Console, order_id: str, quiet: bool = False) -> str:
    """Finance ``order_id`` to disbursement; returns the application id."""
    if quiet:
        out = Console(file=io.StringIO())
    addr = settings.endpoint("lending").grpc_addr
    channels = {p: client_channel(addr, load_party(settings.certs_dir, p)) for p in PARTIES}
    try:
        lending = {p: lending_pb2_grpc.LendingServiceStub(c) for p, c in channels.items()}
        uw = {
            p: underwriting_pb2_grpc.UnderwritingServiceStub(channels[p])
            for p in ("uw-alice", "uw-bob")
        }
        out.rule("4. bank-north grants acme-builders a facility; acme-builders asks for financing")
        expires = (dt.date.today() + dt.timedelta(days=365)).isoformat()
        facility = (
            await lending["uw-alice"].CreateFacility(  # the same key: created once
                lending_pb2.CreateFacilityRequest(
                    subcontractor_id="acme-builders",
                    limit=money_pb2.Money(amount="5000000.00", currency="CNY"),
                    expires_on=expires,
                    spread_bps=200,
                    idempotency_key="demo-facility",
                ),
                timeout=10,
            )
        ).facility
        out.print(
            f"facility {facility.facility_id}: limit {facility.limit.amount} CNY until {expires}"
        )
        app = (
            await lending["acme-builders"].RequestFinancing(
                lending_pb2.RequestFinancingRequest(
                    order_id=order_id,
                    bank="bank-north",
                    amount=money_pb2.Money(amount="2000000.00", currency="CNY"),
                    idempotency_key=f"demo-finance-{order_id}",
                ),
                timeout=10,
            )
        ).application
        out.print(f"application {app.application_id} for 2,000,000.00 CNY against {order_id}")
        app = await application_in(
            lending["acme-builders"], app.application_id, "referred", "approved", "closed"
        )
        out.rule("5. Orders pledges the order; scoring scores the request, and refers it")
        decision = json.loads(app.decision_json)
        async with client_channel(
            settings.endpoint("scoring").grpc_addr, load_party(settings.certs_dir, "uw-alice")
        ) as channel:
            explained = await scoring_pb2_grpc.ScoringServiceStub(channel).Explain(
                scoring_pb2.ExplainRequest(decision_id=app.decision_id), timeout=10
            )
        out.print(show(explained))
        if app.state != lending_pb2.APPLICATION_STATE_REFERRED:
            raise RuntimeError(
                f"expected a referral, got {word_of(lending_pb2.ApplicationState, app.state)}"
                f" ({decision['recommendation']})"
            )
        try:
            await lending["acme-builders"].RequestFinancing(
                lending_pb2.RequestFinancingRequest(
                    order_id=order_id,
                    bank="bank-south",
                    amount=money_pb2.Money(amount="1000000.00", currency="CNY"),
                    idempotency_key=f"demo-finance-2-{order_id}",
                ),
                timeout=10,
            )
            raise RuntimeError("a second financing of a pledged order was accepted")
        except grpc.aio.AioRpcError as exc:
            out.print(
                f"a second financing at bank-south is refused: {exc.code().name}: {exc.details()}"
            )
        out.rule("6. Two underwriters of bank-north approve (four eyes above 1,000,000.00)")
        terms = underwriting_pb2.Terms(
            amount=money_pb2.Money(amount="2000000.00", currency="CNY"),
            rate_bps=600,
            tenor_days=0,  # it matures at the order's due date, as the contract says
        )
        for who in ("uw-alice", "uw-bob"):
            reply = await uw[who].Approve(
                underwriting_pb2.ApproveRequest(
                    application_id=app.application_id,
                    terms=terms,
                    idempotency_key=f"demo-{who}-{app.application_id}",
                ),
                timeout=10,
            )
            out.print(f"{who} approves: {word_of(lending_pb2.ApplicationState, reply.state)}")
        out.rule("7. Every party signs the contract; the money is disbursed")
        app = await application_in(lending["acme-builders"], app.application_id, "approved")
        out.print(f"contract {app.contract.contract_id}, SHA-256 {app.contract.sha256.hex()[:16]}…")
        signed = json.loads(app.contract.document)
        out.print(
            f"{signed['rate_bps']} bp a year, {signed['day_count']}, maturing on"
            f" {signed['maturity']} (the order's due date), arrangement fee"
            f" {signed['arrangement_fee_bps']} bp, penalty {signed['penalty_rate_bps']} bp"
            f" after {signed['grace_days']} days' grace, business days"
            f" {signed['business_days']} (due dates stand, whatever the day)"
        )
        for party in ("acme-builders", "uw-alice", "citybuild"):
            await sign_contract(
                lending[party], party, app.contract.contract_id, app.contract.sha256, "demo"
            )
            out.print(f"{party} signed")
        app = await application_in(lending["acme-builders"], app.application_id, "disbursed")
        facilities = await lending["acme-builders"].ListFacilities(
            lending_pb2.ListFacilitiesRequest(), timeout=10
        )
        f = facilities.facilities[0]
        out.print(
            f"disbursed {app.terms.amount.amount} CNY at {app.terms.rate_bps} bp a year for"
            f" {app.terms.tenor_days} days; facility drawn {f.drawn.amount},"
            f" available {f.available.amount}"
        )
        return str(app.application_id)
    finally:
        for channel in channels.values():
            await channel.close()
