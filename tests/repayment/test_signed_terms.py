"""What is signed is what is charged: the contract every party signs carries the
product's terms and the maturity, repayment books exactly those, and refuses a
disbursement whose terms are not the contract's. Over real gRPC, NATS and
PostgreSQL (and the model validator's findings, each failing before)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from fractions import Fraction
from typing import Any

import grpc
import pytest

from services.cli.waits import loan_where
from services.contracts.business_days import Convention, is_business_day, roll
from services.contracts.products import penalty_rate, product_for
from services.contracts.subjects import Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.gen.scf.lending.v1 import lending_pb2
from services.gen.scf.repayment.v1 import repayment_pb2, repayment_pb2_grpc
from services.gen.scf.types.v1 import money_pb2
from services.gen.scf.underwriting.v1 import underwriting_pb2
from services.runtime.certs import load_party
from services.runtime.config import Settings
from services.runtime.grpcserver import client_channel
from services.runtime.money import Money
from tests.lending.helpers import TODAY, LendingEnv, lending_env, sign_contract
from tests.support import messenger_as

pytestmark = pytest.mark.integration

#: bank -> (its underwriter, an amount within one underwriter's authority)
BANKS = {"bank-north": ("uw-alice", "500000.00"), "bank-south": ("uw-carol", "400000.00")}


async def _loan(settings: Settings, loan_id: str) -> repayment_pb2.Loan:
    addr = settings.endpoint("repayment").grpc_addr
    async with client_channel(addr, load_party(settings.certs_dir, "operator")) as ch:
        stub = repayment_pb2_grpc.RepaymentServiceStub(ch)
        loan: repayment_pb2.Loan = await loan_where(
            stub, loan_id, lambda _loan: True, f"loan {loan_id} opened"
        )
        return loan


async def _financed(
    env: LendingEnv, bank: str, ref: str, due_in_days: int = 45
) -> lending_pb2.Application:
    underwriter, amount = BANKS[bank]
    await env.facility(bank_party=underwriter)
    oid = await env.confirmed_order(ref, due_in_days=due_in_days)
    app_id = await env.request(oid, amount, bank=bank)
    await env.wait_state(app_id, "referred", "approved")
    app = await env.get(app_id)
    if app.state == lending_pb2.APPLICATION_STATE_REFERRED:
        await env.approve(app_id, underwriter, amount, f"a-{ref}")
        app = await env.get(app_id)
    for party in ("acme-builders", underwriter, "citybuild"):
        app = (
            await sign_contract(
                env.lending(party), party, app.contract.contract_id, app.contract.sha256
            )
        ).application
    return await env.wait_state(app_id, "disbursed")


@pytest.mark.parametrize("bank", list(BANKS))
async def test_the_booked_loan_is_the_signed_contract(settings: Settings, bank: str) -> None:
    """bank-south's contract said ACT/365 and the loan was charged ACT/360; the
    contract carried no maturity; the penalty rate was a rule written nowhere."""
    async with lending_env(settings) as env:
        app = await _financed(env, bank, f"PO-T-{bank}")
        signed = json.loads(app.contract.document)
        product = product_for(bank)
        loan = await _loan(settings, app.application_id)
        assert signed["day_count"] == loan.day_count == product.day_count
        assert signed["grace_days"] == loan.grace_days == product.grace_days
        assert (
            signed["penalty_rate_bps"] == loan.penalty_rate_bps == penalty_rate(signed["rate_bps"])
        )
        assert signed["rate_bps"] == loan.rate_bps
        assert Money("CNY", signed["principal_minor"]).major() == loan.principal.amount
        assert signed["maturity"] == loan.due_date
        fee = round(Fraction(signed["principal_minor"] * signed["arrangement_fee_bps"], 10_000))
        assert loan.fees_owed.amount == Money("CNY", fee).major()
        assert signed["late_fee_minor"] == product.late_fee_minor


async def test_a_maturity_on_a_shut_day_rolls_and_interest_runs_to_the_rolled_date(
    settings: Settings,
) -> None:
    """Due dates on weekends and holidays were never rolled. bank-south rolls by
    modified following on China's calendar: an order due on a shut day matures on
    the business day the convention gives, the contract says both dates, and
    the loan is charged ACT/360 to the rolled maturity."""
    product = product_for("bank-south")
    assert product.business_days is Convention.MODIFIED_FOLLOWING
    days = next(
        n for n in range(45, 120) if not is_business_day(TODAY + dt.timedelta(days=n), "CN")
    )
    order_due = TODAY + dt.timedelta(days=days)
    maturity = roll(order_due, Convention.MODIFIED_FOLLOWING, "CN")
    assert maturity != order_due
    async with lending_env(settings) as env:
        app = await _financed(env, "bank-south", "PO-T-ROLL", due_in_days=days)
        signed = json.loads(app.contract.document)
        assert signed["order_due_date"] == order_due.isoformat()
        assert signed["maturity"] == maturity.isoformat()
        assert (signed["business_days"], signed["holiday_calendar"]) == ("modified_following", "CN")
        assert signed["calendar_source"].startswith("holidays ")
        assert app.terms.tenor_days == signed["tenor_days"] == (maturity - TODAY).days
        loan = await _loan(settings, app.application_id)
        assert loan.due_date == maturity.isoformat()
        assert (loan.business_days, loan.holiday_calendar) == ("modified_following", "CN")
        addr = settings.endpoint("repayment").grpc_addr
        async with client_channel(addr, load_party(settings.certs_dir, "operator")) as ch:
            stub = repayment_pb2_grpc.RepaymentServiceStub(ch)
            schedule = await stub.GetSchedule(
                repayment_pb2.GetScheduleRequest(loan_id=app.application_id)
            )
        (line,) = schedule.lines
        assert line.due == maturity.isoformat()
        # ACT/360 to the rolled date, rounded half-even once: reckoned here afresh.
        disbursed = dt.date.fromisoformat(loan.disbursed_on)
        exact = Fraction(signed["principal_minor"] * signed["rate_bps"], 10_000) * Fraction(
            (maturity - disbursed).days, 360
        )
        assert line.interest.amount == Money("CNY", round(exact)).major()


def test_the_penalty_rate_is_rounded_half_up_to_a_basis_point() -> None:
    assert penalty_rate(525) == 788  # 787.5: floored to 787 before, a rule written nowhere
    assert penalty_rate(600) == 900 and penalty_rate(531) == 797


async def test_the_tenor_is_the_maturity_and_a_contradicting_one_is_refused(
    settings: Settings,
) -> None:
    """Approved for 20 days, the loan ran (and was charged) to the order's due date."""
    async with lending_env(settings) as env:
        await env.facility()
        oid = await env.confirmed_order("PO-T-TENOR", due_in_days=40)
        app_id = await env.request(oid, "1000000.00")
        await env.wait_state(app_id, "referred")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.underwriting("uw-alice").Approve(
                underwriting_pb2.ApproveRequest(
                    application_id=app_id, idempotency_key="t20",
                    terms=underwriting_pb2.Terms(
                        amount=money_pb2.Money(amount="1000000.00", currency="CNY"),
                        rate_bps=600, tenor_days=20,
                    ),
                )
            )  # fmt: skip
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "matures at the order's due date" in (info.value.details() or "")
        assert await env.approve(app_id, "uw-alice", "1000000.00", "t0") == "approved"
        app = await env.get(app_id)
        assert app.terms.tenor_days == 40
        assert json.loads(app.contract.document)["tenor_days"] == 40


async def test_an_order_due_too_soon_is_not_financed(settings: Settings) -> None:
    """An order past (or at) its due date was financed, and repayment restart-looped."""
    async with lending_env(settings) as env:
        await env.facility()
        for ref, days in (("PO-T-TODAY", 0), ("PO-T-SOON", 3), ("PO-T-WEEK", 6)):
            oid = await env.confirmed_order(ref, due_in_days=days)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await env.request(oid, "100000.00")
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "finances orders due in 7 days or more" in (info.value.details() or "")


async def test_a_disbursement_whose_terms_are_not_its_contracts_is_set_aside(
    settings: Settings,
) -> None:
    """Signed by lending, but its terms differ from the contract it carries (or it
    carries none): not booked, an alarm, and the disbursements after it flow on."""
    async with lending_env(settings) as env:
        app = await _financed(env, "bank-north", "PO-T-REAL")
        await _loan(settings, app.application_id)
        lending = messenger_as(settings, env.orders.nc, "lending")
        subject = Subjects(settings.nats_prefix).disbursed
        js = env.orders.nc.jetstream()
        document = app.contract.document
        base: dict[str, Any] = dict(
            kind=bus_pb2.FINANCING_KIND_LOAN, bank="bank-north",
            subcontractor_id="acme-builders", buyer_id="citybuild", order_id=app.order_id,
            due_date=json.loads(document)["order_due_date"], currency="CNY",
            principal_minor=json.loads(document)["principal_minor"],
            rate_bps=json.loads(document)["rate_bps"], disbursed_micros=app.updated_micros,
            facility_id=app.facility_id,
        )  # fmt: skip
        bad = {
            "APP-T-RATE": dict(rate_bps=1, contract_document=document,
                               contract_sha256=app.contract.sha256),
            "APP-T-NONE": {},
            "APP-T-HASH": dict(contract_document=document, contract_sha256=bytes(32)),
            # Its own hash, but a maturity on a Saturday its convention would roll.
            "APP-T-UNROLLED": _unrolled(document),
        }  # fmt: skip
        for loan_id, extra in bad.items():
            event = bus_pb2.Disbursed(application_id=loan_id, **{**base, **extra})
            await js.publish(subject, lending.seal(subject, "event", f"d-{loan_id}", event))
        after = await _financed(env, "bank-north", "PO-T-AFTER")
        await _loan(settings, after.application_id)  # the one after them is booked
        for loan_id in bad:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _loan_now(settings, loan_id)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _unrolled(document: str) -> dict[str, Any]:
    """A contract that rolls by following, but matures on the Saturday it is due."""
    saturday = next(
        TODAY + dt.timedelta(days=n) for n in range(45, 60)
        if (TODAY + dt.timedelta(days=n)).weekday() == 5
    )  # fmt: skip
    body = {**json.loads(document), "business_days": "following", "holiday_calendar": "CN",
            "order_due_date": saturday.isoformat(), "maturity": saturday.isoformat()}  # fmt: skip
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return dict(
        contract_document=text, contract_sha256=hashlib.sha256(text.encode()).digest(),
        due_date=saturday.isoformat(),
    )  # fmt: skip


async def _loan_now(settings: Settings, loan_id: str) -> repayment_pb2.Loan:
    addr = settings.endpoint("repayment").grpc_addr
    async with client_channel(addr, load_party(settings.certs_dir, "operator")) as ch:
        stub = repayment_pb2_grpc.RepaymentServiceStub(ch)
        return (await stub.GetLoan(repayment_pb2.GetLoanRequest(loan_id=loan_id))).loan
