"""Every RPC, called as every kind of party, on real objects.

The platform holds an order of acme-builders to citybuild, financed by
bank-north (disbursed: a loan, a contract, a scoring decision), and a lease
application of acme-builders at lease-one. Each RPC is called about those
objects by the subcontractor and another subcontractor, the buyer and
another buyer, an underwriter of the bank and one of another bank, the
leasing company's staff, the vendor, an auditor, the operator, and a caller
without a certificate. A party the RPC is not for gets PERMISSION_DENIED
(without a certificate: no connection at all), and the call changes nothing:
no service writes a journal statement. A party it is for gets past the gate
(the requests are built so that they then stop at validation or at the
object's state, or do something harmless).
"""

# ruff: noqa: E501  (the matrix is a table: one RPC a line)
from __future__ import annotations

from typing import Any

import asyncpg
import grpc
import pytest

from services.gen.scf.journal.v1 import journal_pb2 as J
from services.gen.scf.journal.v1 import journal_pb2_grpc as Jg
from services.gen.scf.leasing.v1 import leasing_pb2 as X
from services.gen.scf.leasing.v1 import leasing_pb2_grpc as Xg
from services.gen.scf.lending.v1 import lending_pb2 as L
from services.gen.scf.lending.v1 import lending_pb2_grpc as Lg
from services.gen.scf.orders.v1 import orders_pb2 as O
from services.gen.scf.orders.v1 import orders_pb2_grpc as Og
from services.gen.scf.platform.v1 import platform_pb2 as P
from services.gen.scf.platform.v1 import platform_pb2_grpc as Pg
from services.gen.scf.repayment.v1 import repayment_pb2 as R
from services.gen.scf.repayment.v1 import repayment_pb2_grpc as Rg
from services.gen.scf.scoring.v1 import scoring_pb2 as S
from services.gen.scf.scoring.v1 import scoring_pb2_grpc as Sg
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2 as U
from services.gen.scf.underwriting.v1 import underwriting_pb2_grpc as Ug
from services.runtime.certs import load_party
from services.runtime.config import SERVICE_NAMES, Settings
from services.runtime.grpcserver import client_channel
from tests.lending.lease_helpers import lease_env, lease_request
from tests.orders.helpers import CONTRACT

pytestmark = [pytest.mark.integration, pytest.mark.long]

SUB, SUB2, BUY, BUY2 = "acme-builders", "delta-pumps", "citybuild", "harbor-works"
UW, UW2, LEASE, VEN = "uw-alice", "uw-carol", "ls-dana", "liftco"
AUD, OP, NOCERT = "auditor-reg", "operator", "(no certificate)"
CALLERS = (SUB, SUB2, BUY, BUY2, UW, UW2, LEASE, VEN, AUD, OP)
ANYONE = frozenset(CALLERS)
JOURNAL_READERS = frozenset({UW, UW2, AUD, OP})
#: Roles that only read: whatever they call, nothing is stored or journaled.
READ_ONLY = frozenset({AUD})


def matrix(ids: dict[str, str]) -> list[tuple[str, Any, str, Any, frozenset[str]]]:
    """(service, stub, method, request, who gets past the gate)."""
    oid, app, lease, contract = ids["order"], ids["application"], ids["lease"], ids["contract"]
    key = {"idempotency_key": "authz"}
    order_parties = frozenset({SUB, BUY, UW, AUD, OP})
    loan_readers = frozenset({SUB, BUY, UW, AUD, OP})
    pay = X.PayVendorRequest(
        lease_id=lease, payee_id=VEN, amount=money_pb2.Money(amount="1.00", currency="CNY"),
        payment_reference="W", **key,
    )  # fmt: skip
    return [
        ("journal", Jg.AuditServiceStub, "GetCheckpoint", J.GetCheckpointRequest(), JOURNAL_READERS),
        ("journal", Jg.AuditServiceStub, "WatchCheckpoints", J.WatchCheckpointsRequest(), JOURNAL_READERS),
        ("journal", Jg.AuditServiceStub, "ListEntries", J.ListEntriesRequest(start=0, end=1), JOURNAL_READERS),
        ("journal", Jg.AuditServiceStub, "GetSubjectHistory", J.GetSubjectHistoryRequest(subject=f"order/{oid}"), JOURNAL_READERS),
        ("journal", Jg.AuditServiceStub, "GetInclusionProof", J.GetInclusionProofRequest(seq=0), JOURNAL_READERS),
        ("journal", Jg.AuditServiceStub, "GetConsistencyProof", J.GetConsistencyProofRequest(first_size=1, second_size=2), JOURNAL_READERS),
        ("journal", Jg.AuditServiceStub, "GetKeySet", J.GetKeySetRequest(), JOURNAL_READERS),
        ("journal", Jg.AuditServiceStub, "GetReceipt", J.GetReceiptRequest(seq=0), JOURNAL_READERS),
        ("journal", Jg.AuditServiceStub, "ListWitnesses", J.ListWitnessesRequest(), JOURNAL_READERS),
        ("journal", Jg.JournalAdminServiceStub, "RequestCheckpoint", J.RequestCheckpointRequest(), frozenset({OP})),
        ("journal", Jg.JournalAdminServiceStub, "RegisterKey", J.RegisterKeyRequest(producer=""), frozenset({OP})),
        ("journal", Jg.JournalAdminServiceStub, "RevokeKey", J.RevokeKeyRequest(), frozenset({OP})),
        ("journal", Jg.JournalAdminServiceStub, "ListRefusals", J.ListRefusalsRequest(limit=1), frozenset({OP})),
        ("journal", Jg.JournalAdminServiceStub, "GetStoreAudit", J.GetStoreAuditRequest(), frozenset({OP})),
        ("orders", Og.OrdersServiceStub, "RegisterOrder", O.RegisterOrderRequest(**key), frozenset({SUB, SUB2})),
        ("orders", Og.OrdersServiceStub, "ConfirmOrder", O.ConfirmOrderRequest(order_id=oid, **key), frozenset({BUY})),
        ("orders", Og.OrdersServiceStub, "DisputeOrder", O.DisputeOrderRequest(order_id=oid, **key), frozenset({BUY})),
        ("orders", Og.OrdersServiceStub, "RecordDelivery", O.RecordDeliveryRequest(order_id=oid, **key), frozenset({SUB})),
        ("orders", Og.OrdersServiceStub, "AcceptDelivery", O.AcceptDeliveryRequest(order_id=oid, **key), frozenset({BUY})),
        ("orders", Og.OrdersServiceStub, "CancelOrder", O.CancelOrderRequest(order_id=oid, **key), frozenset({SUB})),
        ("orders", Og.OrdersServiceStub, "GetOrder", O.GetOrderRequest(order_id=oid), order_parties),
        ("orders", Og.OrdersServiceStub, "WatchOrder", O.WatchOrderRequest(order_id=oid), order_parties),
        ("orders", Og.OrdersServiceStub, "ListOrders", O.ListOrdersRequest(), frozenset({SUB, SUB2, BUY, BUY2, AUD, OP})),
        ("orders", Og.OrdersServiceStub, "VerifyOrder", O.VerifyOrderRequest(order_id=oid, contract_sha256=CONTRACT), ANYONE),
        ("orders", Og.OrdersServiceStub, "ListBuyers", O.ListBuyersRequest(), ANYONE),
        ("orders", Pg.PlatformServiceStub, "WhoAmI", P.WhoAmIRequest(), ANYONE),
        ("scoring", Sg.ScoringServiceStub, "Explain", S.ExplainRequest(decision_id=f"DEC-{app}"), frozenset({SUB, UW, AUD, OP})),
        ("scoring", Sg.ScoringServiceStub, "Recompute", S.RecomputeRequest(decision_id=f"DEC-{app}"), frozenset({SUB, UW, AUD, OP})),
        ("scoring", Sg.ScoringServiceStub, "LoadModel", S.LoadModelRequest(scorecard_json="{", **key), frozenset({OP})),
        ("scoring", Sg.ScoringServiceStub, "ListModels", S.ListModelsRequest(), ANYONE),
        ("lending", Lg.LendingServiceStub, "CreateFacility", L.CreateFacilityRequest(**key), frozenset({UW, UW2, LEASE})),
        ("lending", Lg.LendingServiceStub, "ListFacilities", L.ListFacilitiesRequest(), frozenset({SUB, SUB2, UW, UW2, LEASE, AUD, OP})),
        ("lending", Lg.LendingServiceStub, "RequestFinancing", L.RequestFinancingRequest(**key), frozenset({SUB, SUB2})),
        ("lending", Lg.LendingServiceStub, "GetApplication", L.GetApplicationRequest(application_id=app), frozenset({SUB, UW, AUD, OP})),
        ("lending", Lg.LendingServiceStub, "WatchApplication", L.WatchApplicationRequest(application_id=app), frozenset({SUB, UW, AUD, OP})),
        ("lending", Lg.LendingServiceStub, "AcceptOffer", L.AcceptOfferRequest(application_id=app, **key), frozenset({SUB})),
        ("lending", Lg.LendingServiceStub, "DeclineOffer", L.DeclineOfferRequest(application_id=app, **key), frozenset({SUB})),
        ("lending", Lg.LendingServiceStub, "WithdrawApplication", L.WithdrawApplicationRequest(application_id=app, **key), frozenset({SUB})),
        ("lending", Lg.LendingServiceStub, "RegisterSigningKey", L.RegisterSigningKeyRequest(public_key=b"short", **key), ANYONE - {AUD, OP}),
        ("lending", Lg.LendingServiceStub, "SignContract", L.SignContractRequest(contract_id=contract, signature=bytes(64), **key), frozenset({SUB, UW, BUY})),
        ("lending", Lg.LendingServiceStub, "GetContract", L.GetContractRequest(contract_id=contract), frozenset({SUB, UW, BUY, AUD, OP})),
        ("lending", Ug.UnderwritingServiceStub, "ListApplications", U.ListApplicationsRequest(), frozenset({UW, UW2, LEASE})),
        ("lending", Ug.UnderwritingServiceStub, "GetApplication", U.GetApplicationRequest(application_id=app), frozenset({UW})),
        ("lending", Ug.UnderwritingServiceStub, "Approve", U.ApproveRequest(application_id=app, **key), frozenset({UW})),
        ("lending", Ug.UnderwritingServiceStub, "CounterOffer", U.CounterOfferRequest(application_id=app, **key), frozenset({UW})),
        ("lending", Ug.UnderwritingServiceStub, "Reject", U.RejectRequest(application_id=lease, **key), frozenset({LEASE})),
        ("lending", Ug.UnderwritingServiceStub, "GetApplication", U.GetApplicationRequest(application_id=lease), frozenset({LEASE})),
        ("lending", Xg.LeasingServiceStub, "ApplyForLease", X.ApplyForLeaseRequest(**key), frozenset({SUB, SUB2})),
        ("lending", Xg.LeasingServiceStub, "GetLease", X.GetLeaseRequest(lease_id=lease), frozenset({SUB, LEASE, VEN, AUD, OP})),
        ("lending", Xg.LeasingServiceStub, "WatchLease", X.WatchLeaseRequest(lease_id=lease), frozenset({SUB, LEASE, VEN, AUD, OP})),
        ("lending", Xg.LeasingServiceStub, "PayVendor", pay, frozenset({LEASE})),
        ("lending", Xg.LeasingServiceStub, "ConfirmDelivery", X.ConfirmDeliveryRequest(lease_id=lease, **key), frozenset({SUB})),
        ("lending", Xg.LeasingServiceStub, "ExerciseOption", X.ExerciseOptionRequest(lease_id=lease, option=1, **key), frozenset({SUB})),
        ("repayment", Rg.RepaymentServiceStub, "RecordPayment", R.RecordPaymentRequest(), frozenset({OP})),
        ("repayment", Rg.RepaymentServiceStub, "GetLoan", R.GetLoanRequest(loan_id=app), loan_readers),
        ("repayment", Rg.RepaymentServiceStub, "WatchLoan", R.WatchLoanRequest(loan_id=app), loan_readers),
        ("repayment", Rg.RepaymentServiceStub, "GetSchedule", R.GetScheduleRequest(loan_id=app), loan_readers),
        ("repayment", Rg.RepaymentServiceStub, "GetStatement", R.GetStatementRequest(loan_id=app), loan_readers),
        ("repayment", Rg.RepaymentServiceStub, "QuotePayoff", R.QuotePayoffRequest(loan_id=app), loan_readers),
        ("repayment", Rg.RepaymentServiceStub, "ListUnmatched", R.ListUnmatchedRequest(), frozenset({OP})),
    ]  # fmt: skip


async def _fingerprint(settings: Settings) -> tuple[int, str]:
    """What every service has stored: the statements written (journaled or not), and
    a digest of every other table's rows. The outbox's own columns change as the
    journal confirms rows in the background, so it is counted, not digested."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        schemas = [settings.endpoint(s).schema for s in SERVICE_NAMES if s != "journal"]
        counted = " + ".join(f'(SELECT count(*) FROM "{schema}".outbox)' for schema in schemas)
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'"
            " AND table_name <> 'outbox' ORDER BY 1, 2",
            schemas,
        )
        digests = " || ".join(
            f"coalesce((SELECT md5(string_agg(t::text, ',' ORDER BY t::text))"
            f' FROM "{r["table_schema"]}"."{r["table_name"]}" t), \'-\')'
            for r in tables
        )
        row = await conn.fetchrow(f"SELECT {counted} AS statements, md5({digests}) AS digest")
        return int(row["statements"]), str(row["digest"])
    finally:
        await conn.close()


async def _call(stub: Any, method: str, request: Any) -> grpc.StatusCode:
    try:
        reply = getattr(stub, method)(request, timeout=10)
        if hasattr(reply, "__aiter__"):
            # A listing ends by itself; a watch goes on: its first answer tells.
            async for _ in reply:
                if method.startswith("Watch"):
                    reply.cancel()
                    break
        else:
            await reply
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def _objects(env: Any) -> dict[str, str]:
    """A disbursed financing of an order, and a lease application waiting for staff."""
    lending = env.lending_env
    await lending.facility()
    oid = await lending.confirmed_order("PO-AUTHZ")
    app = await lending.request(oid, "500000.00")
    await lending.wait_state(app, "referred")
    await lending.approve(app, UW, "500000.00", "authz-approve")
    signed = await lending.sign_all(await lending.get(app))
    await lending.wait_state(app, "disbursed")
    await env.rentals_open(app)  # the loan is open in repayment
    await env.facility()
    lease = (await env.leasing(SUB).ApplyForLease(lease_request("authz-lease"))).lease
    await env.wait_state(lease.lease_id, "referred")
    return {"order": oid, "application": app, "lease": lease.lease_id,
            "contract": signed.contract.contract_id}  # fmt: skip


async def test_every_rpc_as_every_party(settings: Settings) -> None:
    async with lease_env(settings) as env:
        ids = await _objects(env)
        rows = matrix(ids)
        wrong: list[str] = []
        for party in CALLERS:
            tls = load_party(settings.certs_dir, party)
            channels: dict[str, Any] = {}
            try:
                for service, stub_type, method, request, allowed in rows:
                    if service not in channels:
                        channels[service] = client_channel(
                            settings.endpoint(service).grpc_addr, tls
                        )
                    # Refused calls, and every call of a read-only role, change nothing.
                    watched = party not in allowed or party in READ_ONLY
                    before = await _fingerprint(settings) if watched else None
                    code = await _call(stub_type(channels[service]), method, request)
                    denied = code == grpc.StatusCode.PERMISSION_DENIED
                    if denied == (party in allowed):
                        wrong.append(f"{stub_type.__name__}.{method} as {party}: {code.name}")
                    if before is not None:
                        after = await _fingerprint(settings)
                        if after[0] != before[0]:
                            wrong.append(f"{stub_type.__name__}.{method} as {party} journaled")
                        elif after[1] != before[1]:
                            wrong.append(f"{stub_type.__name__}.{method} as {party} wrote")
            finally:
                for channel in channels.values():
                    await channel.close()
        assert wrong == []


async def test_no_rpc_answers_a_caller_without_a_certificate(settings: Settings) -> None:
    async with lease_env(settings):
        before = (await _fingerprint(settings))[0]
        ids = {"order": "ORD-X", "application": "APP-X", "lease": "LSE-X", "contract": "CON-X"}
        ca = (settings.certs_dir / "ca.pem").read_bytes()
        answered: list[str] = []
        channels: dict[str, Any] = {}
        try:
            for service, stub_type, method, request, _ in matrix(ids):
                if service not in channels:
                    addr = settings.endpoint(service).grpc_addr
                    channels[service] = client_channel(addr, None, ca=ca)
                code = await _call(stub_type(channels[service]), method, request)
                # The TLS handshake fails: the server never sees the call.
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    answered.append(f"{stub_type.__name__}.{method}: {code.name}")
        finally:
            for channel in channels.values():
                await channel.close()
        assert answered == []
        assert (await _fingerprint(settings))[0] == before


def test_the_matrix_covers_every_rpc() -> None:
    ids = {"order": "o", "application": "a", "lease": "l", "contract": "c"}
    covered = {
        (stub.__name__.removesuffix("Stub"), method) for _, stub, method, _, _ in matrix(ids)
    }
    every = {
        (service.name, method.name)
        for module in (J, O, P, S, L, U, X, R)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert every - covered == set()
