"""The authorization matrix: every role-gated RPC, called as every role.

A role that may not call an RPC gets PERMISSION_DENIED; one that may gets past
the gate (and here, with empty requests, stops at validation or lookup). No
call in the matrix changes anything: the journal holds the same entries after.
"""

from __future__ import annotations

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
from services.gen.scf.underwriting.v1 import underwriting_pb2 as U
from services.gen.scf.underwriting.v1 import underwriting_pb2_grpc as Ug
from services.journal.service import SPEC as JOURNAL
from services.lending.service import SPEC as LENDING
from services.orders.service import SPEC as ORDERS
from services.repayment.service import SPEC as REPAYMENT
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.scoring.service import SPEC as SCORING
from tests.support import running

pytestmark = pytest.mark.integration

#: One party per role (and a second of some, for "another" of the same role).
PARTIES = {
    "subcontractor": "acme-builders",
    "buyer": "citybuild",
    "underwriter": "uw-alice",
    "leasing": "lease-one",
    "auditor": "auditor-reg",
    "operator": "operator",
    "service": "orders",
    "vendor": "liftco",
}
SUB, BUY, UW, LEASE, AUD, OP, SVC, VEN = PARTIES

READERS = {AUD, UW, OP, SVC}
# (service, stub, method, request, roles allowed past the gate)
MATRIX = [
    (
        "orders",
        Og.OrdersServiceStub,
        "RegisterOrder",
        O.RegisterOrderRequest(idempotency_key="k"),
        {SUB},
    ),
    (
        "orders",
        Og.OrdersServiceStub,
        "ListOrders",
        O.ListOrdersRequest(page_size=500),
        {SUB, BUY, AUD, OP},
    ),
    (
        "lending",
        Lg.LendingServiceStub,
        "CreateFacility",
        L.CreateFacilityRequest(idempotency_key="k"),
        {UW, LEASE},
    ),
    (
        "lending",
        Lg.LendingServiceStub,
        "RequestFinancing",
        L.RequestFinancingRequest(idempotency_key="k"),
        {SUB},
    ),
    (
        "lending",
        Lg.LendingServiceStub,
        "ListFacilities",
        L.ListFacilitiesRequest(),
        {UW, LEASE, SUB, AUD, OP},
    ),
    (
        "lending",
        Lg.LendingServiceStub,
        "AcceptOffer",
        L.AcceptOfferRequest(application_id="APP-X", idempotency_key="k"),
        {SUB},
    ),
    (
        "lending",
        Lg.LendingServiceStub,
        "DeclineOffer",
        L.DeclineOfferRequest(application_id="APP-X", idempotency_key="k"),
        {SUB},
    ),
    (
        "lending",
        Lg.LendingServiceStub,
        "WithdrawApplication",
        L.WithdrawApplicationRequest(application_id="APP-X", idempotency_key="k"),
        {SUB},
    ),
    (
        "lending",
        Ug.UnderwritingServiceStub,
        "ListApplications",
        U.ListApplicationsRequest(),
        {UW, LEASE},
    ),
    (
        "lending",
        Ug.UnderwritingServiceStub,
        "GetApplication",
        U.GetApplicationRequest(application_id="APP-X"),
        {UW, LEASE},
    ),
    (
        "lending",
        Ug.UnderwritingServiceStub,
        "Approve",
        U.ApproveRequest(application_id="APP-X", idempotency_key="k"),
        {UW, LEASE},
    ),
    (
        "lending",
        Ug.UnderwritingServiceStub,
        "Reject",
        U.RejectRequest(application_id="APP-X", idempotency_key="k"),
        {UW, LEASE},
    ),
    (
        "lending",
        Ug.UnderwritingServiceStub,
        "CounterOffer",
        U.CounterOfferRequest(application_id="APP-X", idempotency_key="k"),
        {UW, LEASE},
    ),
    (
        "lending",
        Xg.LeasingServiceStub,
        "ApplyForLease",
        X.ApplyForLeaseRequest(idempotency_key="k"),
        {SUB},
    ),
    (
        "lending",
        Xg.LeasingServiceStub,
        "PayVendor",
        X.PayVendorRequest(lease_id="LSE-X", idempotency_key="k"),
        {LEASE},
    ),
    (
        "lending",
        Xg.LeasingServiceStub,
        "ConfirmDelivery",
        X.ConfirmDeliveryRequest(lease_id="LSE-X", idempotency_key="k"),
        {SUB},
    ),
    (
        "lending",
        Xg.LeasingServiceStub,
        "ExerciseOption",
        X.ExerciseOptionRequest(lease_id="LSE-X", option=1, idempotency_key="k"),
        {SUB},
    ),
    (
        "scoring",
        Sg.ScoringServiceStub,
        "LoadModel",
        S.LoadModelRequest(scorecard_json="{", idempotency_key="k"),
        {OP},
    ),
    ("repayment", Rg.RepaymentServiceStub, "RecordPayment", R.RecordPaymentRequest(), {OP}),
    ("repayment", Rg.RepaymentServiceStub, "ListUnmatched", R.ListUnmatchedRequest(), {OP}),
    (
        "journal",
        Jg.AuditServiceStub,
        "GetCheckpoint",
        J.GetCheckpointRequest(min_cosignatures=99),
        READERS,
    ),
    (
        "journal",
        Jg.AuditServiceStub,
        "GetInclusionProof",
        J.GetInclusionProofRequest(seq=10**9),
        READERS,
    ),
    (
        "journal",
        Jg.AuditServiceStub,
        "GetConsistencyProof",
        J.GetConsistencyProofRequest(first_size=0),
        READERS,
    ),
    ("journal", Jg.AuditServiceStub, "GetReceipt", J.GetReceiptRequest(seq=10**9), READERS),
    ("journal", Jg.JournalAdminServiceStub, "RegisterKey", J.RegisterKeyRequest(producer=""), {OP}),
    ("journal", Jg.JournalAdminServiceStub, "RevokeKey", J.RevokeKeyRequest(), {OP}),
    ("journal", Jg.JournalAdminServiceStub, "ListRefusals", J.ListRefusalsRequest(limit=1), {OP}),
    ("orders", Pg.PlatformServiceStub, "AdvanceClock", P.AdvanceClockRequest(), {OP}),
]


async def _journal_size(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        schema = settings.endpoint("journal").schema
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".entries'))
    finally:
        await conn.close()


async def test_every_rpc_as_every_role(settings: Settings) -> None:
    async with (
        running(JOURNAL, settings),
        running(ORDERS, settings),
        running(SCORING, settings),
        running(LENDING, settings),
        running(REPAYMENT, settings),
    ):
        before = await _journal_size(settings)
        wrong: list[str] = []
        for role, party in PARTIES.items():
            tls = load_party(settings.certs_dir, party)
            channels = {}
            try:
                for service, stub_type, method, request, allowed in MATRIX:
                    if service not in channels:
                        channels[service] = client_channel(
                            settings.endpoint(service).grpc_addr, tls
                        )
                    call = getattr(stub_type(channels[service]), method)
                    try:
                        reply = call(request, timeout=10)
                        if hasattr(reply, "__aiter__"):
                            reply = [r async for r in reply]
                        else:
                            await reply
                        code = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as exc:
                        code = exc.code()
                    denied = code == grpc.StatusCode.PERMISSION_DENIED
                    if denied == (role in allowed):
                        wrong.append(f"{method} as {role}: {code.name}")
            finally:
                for channel in channels.values():
                    await channel.close()
        assert wrong == []
        assert await _journal_size(settings) == before  # nothing refused changed anything
