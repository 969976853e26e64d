"""The explorer in a real browser (Debian's Chromium, driven by Playwright), on
a platform that ran a real financing: the order's card verifies every entry in
the browser; the same page fed a tampered entry or checkpoint by the server
says which check failed and at which sequence number; search finds the order
by its id and by its subcontractor; whoever may not look is refused."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from services.bench.load import FlowLoad
from services.replica.config import database_beside
from services.runtime.config import Settings
from services.runtime.platform import Platform
from services.runtime.ports import free_ports
from tests.journal.helpers import wait_on_platform
from tests.replica.helpers import drop_database
from tests.support import unique, with_endpoint

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.long,  # the platform's own pages: once, in make test
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]
#: Where the screenshots go: docs/explorer when SCF_SCREENSHOTS=docs (to refresh
#: docs/explorer.md's pictures), otherwise a temporary directory.
DOCS = Path(__file__).resolve().parents[2] / "docs" / "explorer"


async def _order_of(settings: Settings, application_id: str) -> tuple[str, str, int]:
    """The order the financing was for, its subcontractor, and the last entry of its story."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        schema = settings.endpoint("journal").schema
        payload = await conn.fetchval(
            f'SELECT payload FROM "{schema}".entries WHERE subject = $1'
            " AND event_type = 'application.requested'",
            f"application/{application_id}",
        )
        body = json.loads(payload)
        last = await conn.fetchval(
            f'SELECT max(seq) FROM "{schema}".entries WHERE subject = ANY($1::text[])',
            [f"order/{body['order_id']}", f"application/{application_id}",
             f"loan/{application_id}"],
        )  # fmt: skip
        return body["order_id"], body["subcontractor_id"], int(last)
    finally:
        await conn.close()


async def _replica_covers(bank_db: str, seq: int) -> bool:
    """The bank's copy holds a checkpoint past ``seq``, and has cosigned its latest."""
    conn = await asyncpg.connect(bank_db)
    try:
        size = await conn.fetchval("SELECT max(tree_size) FROM journal.checkpoints")
        cosigned = await conn.fetchval("SELECT max(tree_size) FROM journal.cosigned")
        return size is not None and size > seq and cosigned == size
    except asyncpg.UndefinedTableError:
        return False
    finally:
        await conn.close()


async def _earlier_checkpoint(bank_db: str) -> dict[str, Any]:
    """A checkpoint before the latest, as a card scanned earlier would name it."""
    conn = await asyncpg.connect(bank_db)
    try:
        row = await conn.fetchrow(
            "SELECT tree_size, root_hash FROM journal.checkpoints WHERE tree_size > 1"
            " ORDER BY tree_size LIMIT 1"
        )
        return {"size": row["tree_size"], "root": bytes(row["root_hash"])}
    finally:
        await conn.close()


class Explorer:
    def __init__(self, settings: Settings, base: str, browser: Any) -> None:
        self.settings = settings
        self.base = base
        self.browser = browser

    async def as_party(self, party: str) -> Any:
        parties = self.settings.certs_dir / "parties"
        return await self.browser.new_context(
            ignore_https_errors=True,  # the platform CA is not the browser's
            client_certificates=[
                {
                    "origin": self.base,
                    "certPath": str(parties / f"{party}.pem"),
                    "keyPath": str(parties / f"{party}.key"),
                }
            ],
            viewport={"width": 1200, "height": 900},
        )


#: The bank's explorer, the journal's, and the financing's order and subcontractor.
Explored = tuple[Explorer, Explorer, dict[str, Any]]


@pytest.fixture
async def explored(settings: Settings) -> AsyncIterator[Explored]:
    from playwright.async_api import async_playwright

    journal_port, replica_port = free_ports(2)
    settings = with_endpoint(settings, "journal", explorer_addr=f"127.0.0.1:{journal_port}")
    bank_db = database_beside(settings.database_url, unique("rep_explorer"))
    env = {"SCF_REPLICA_BANK_NORTH_EXPLORER_ADDR": f"127.0.0.1:{replica_port}",
           "SCF_REPLICA_BANK_NORTH_ADDR": f"127.0.0.1:{free_ports(1)[0]}",
           "SCF_REPLICA_BANK_NORTH_DATABASE_URL": bank_db}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    platform = Platform(settings, replicas=("bank-north",))
    try:
        await platform.start()
        load = FlowLoad(settings, 1, 1, 120)
        await load.run()
        assert load.errors == [] and len(load.disbursed) == 1, load.errors
        order_id, subcontractor, last = await _order_of(settings, load.disbursed[0])
        await wait_on_platform(
            settings, lambda: _replica_covers(bank_db, last),
            "bank-north's copy covering the financing with a checkpoint", timeout=60,
        )  # fmt: skip
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            try:
                yield (
                    Explorer(settings, f"https://127.0.0.1:{replica_port}", browser),
                    Explorer(settings, f"https://127.0.0.1:{journal_port}", browser),
                    {
                        "order": order_id,
                        "subcontractor": subcontractor,
                        "earlier": await _earlier_checkpoint(bank_db),
                    },
                )
            finally:
                await browser.close()
    finally:
        platform.stop()
        await drop_database(bank_db)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _verdict(page: Any) -> str:
    verdict = page.locator("#verdict")
    try:
        await verdict.and_(page.locator(".ok, .bad")).wait_for(timeout=20_000)
    except Exception as exc:  # say what the page said
        raise AssertionError(f"{await verdict.inner_text()}; {page.said}") from exc
    return str(await verdict.inner_text())


async def _page(context: Any) -> Any:
    """A page that keeps what its scripts said and the errors they raised."""
    page = await context.new_page()
    page.said = []
    page.on("console", lambda msg: page.said.append(f"console: {msg.text}"))
    page.on("pageerror", lambda err: page.said.append(f"error: {err}"))
    return page


async def test_the_explorer_in_a_browser(explored: Explored, tmp_path: Path) -> None:
    bank, journal, facts = explored
    order = facts["order"]
    shots = DOCS if os.environ.get("SCF_SCREENSHOTS") == "docs" else tmp_path
    auditor = await bank.as_party("auditor-reg")
    page = await _page(auditor)

    # The card: every entry verified by the browser itself.
    await page.goto(f"{bank.base}/orders/{order}/card")
    verdict = await _verdict(page)
    assert verdict.startswith("verified: all "), verdict
    rows = page.locator("#card-entries tbody tr")
    count = await rows.count()
    assert count >= 8  # registered ... pledged, scored, approved, signed, disbursed, loan
    checks = await page.locator("#card-entries tbody tr td:last-child").all_inner_texts()
    assert set(checks) == {"verified"}, checks
    events = await page.locator("#card-entries tbody tr td:nth-child(2)").all_inner_texts()
    assert "order.registered" in events and "application.disbursed" in events, events
    await page.screenshot(path=str(shots / "card.png"), full_page=True)

    # The same page, the server feeding it a tampered entry: the browser names it.
    card = json.loads(await (await page.request.get(f"{bank.base}/api/orders/{order}/card")).text())
    victim = card["entries"][2]
    leaf = bytearray(base64.b64decode(victim["leaf"]))
    leaf[-80] ^= 1  # a byte of the statement's payload or its batch path
    forged = dict(card, entries=[dict(e) for e in card["entries"]])
    forged["entries"][2]["leaf"] = base64.b64encode(bytes(leaf)).decode()

    async def tampered(route: Any) -> None:
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(forged))

    await page.route("**/api/orders/*/card", tampered)
    await page.reload()
    verdict = await _verdict(page)
    assert verdict.startswith("NOT verified: ") and f"entry {victim['seq']}:" in verdict, verdict
    bad = page.locator(f"#card-entries tbody tr.bad[data-seq='{victim['seq']}']")
    assert await bad.count() == 1
    await page.screenshot(path=str(shots / "card-tampered.png"), full_page=True)

    # ... a proof with one hash changed ...
    forged = dict(card, entries=[dict(e) for e in card["entries"]])
    proof = list(forged["entries"][0]["proof"])
    proof[0] = base64.b64encode(bytes(32)).decode()
    forged["entries"][0]["proof"] = proof
    await page.reload()
    verdict = await _verdict(page)
    seq0 = card["entries"][0]["seq"]
    assert f"entry {seq0}: root mismatch" in verdict, verdict
    # ... and a checkpoint whose size the server changed: its signature fails.
    forged = dict(card, checkpoint=card["checkpoint"].replace(
        f"\n{card['tree_size']}\n", f"\n{card['tree_size'] + 1}\n", 1))  # fmt: skip
    await page.reload()
    verdict = await _verdict(page)
    assert "checkpoint: the signature of" in verdict and "does not verify" in verdict, verdict
    await page.unroute("**/api/orders/*/card")

    # The QR code's link: the card it was made from (an earlier checkpoint) is
    # proven a prefix of the journal now, by a consistency proof checked here.
    earlier = facts["earlier"]
    root = base64.urlsafe_b64encode(earlier["root"]).decode().rstrip("=")
    uri = f"scf-order:{order}?sha256=00&log=x&size={earlier['size']}&root={root}"
    await page.goto(f"{bank.base}/open?uri={quote(uri, safe='')}")
    verdict = await _verdict(page)
    assert verdict.endswith(f"which extends the scanned card's {earlier['size']}"), verdict
    forged_root = base64.urlsafe_b64encode(bytes(32)).decode().rstrip("=")
    await page.goto(f"{bank.base}/open?uri={quote(uri.replace(root, forged_root), safe='')}")
    verdict = await _verdict(page)
    assert "is not in this journal's history" in verdict, verdict

    # Search: by the order's id, and by its subcontractor.
    for query in (order, facts["subcontractor"]):
        await page.goto(f"{bank.base}/search?q={query}")
        subjects = await page.locator("table.found td:first-child").all_inner_texts()
        assert f"order/{order}" in subjects, (query, subjects)
    await page.screenshot(path=str(shots / "search.png"), full_page=True)

    # The story, the checkpoints, an entry, the status: as an auditor sees them.
    await page.goto(f"{bank.base}/subjects/order/{order}")
    story = await page.locator(".timeline strong").all_inner_texts()
    assert story[0] == "order.registered" and "application.disbursed" in story, story
    await page.screenshot(path=str(shots / "story.png"), full_page=True)
    await page.goto(f"{bank.base}/")
    sigs = await page.locator("#latest tbody tr").all_inner_texts()
    assert any("journal" in s and "verified" in s for s in sigs), sigs
    assert any("bank-north" in s and "witness" in s and "verified" in s for s in sigs), sigs
    assert await page.locator("svg.chart").count() == 1
    await page.screenshot(path=str(shots / "checkpoints.png"), full_page=True)
    await page.goto(f"{bank.base}/entries/{card['entries'][0]['seq']}")
    assert order in await page.locator("main").inner_text()
    await page.screenshot(path=str(shots / "entry.png"), full_page=True)
    await page.goto(f"{bank.base}/status")
    assert await page.locator("#no-alarm").count() == 1
    assert "bank-north's replica" in await page.locator("h1").inner_text()
    await page.screenshot(path=str(shots / "status.png"), full_page=True)
    await auditor.close()

    # The journal serves the same explorer over its own store.
    operator = await journal.as_party("operator")
    page = await _page(operator)
    await page.goto(f"{journal.base}/orders/{order}/card")
    assert (await _verdict(page)).startswith("verified: all ")
    await operator.close()

    # Whoever may not look is refused (on the same platform: it takes a while to start).
    await _who_may_not_look_is_refused(explored)


async def _who_may_not_look_is_refused(explored: Explored) -> None:
    bank, journal, facts = explored
    # A subcontractor, and another bank's auditor, at bank-north's replica.
    for party, where in (("acme-builders", bank), ("replica-bank-south", bank),
                         ("acme-builders", journal)):  # fmt: skip
        context = await where.as_party(party)
        reply = await context.request.get(f"{where.base}/orders/{facts['order']}/card")
        assert reply.status == 403, (party, reply.status)
        assert facts["order"] not in await reply.text()
        await context.close()
    # No certificate at all: the TLS handshake itself is refused.
    host, port = bank.base.removeprefix("https://").split(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    def handshake() -> bytes:
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return tls.recv(100)

    try:  # TLS 1.3: the refusal (an alert, or the connection closed) comes on the first read
        answer = await asyncio.to_thread(handshake)
    except (ssl.SSLError, ConnectionError):
        answer = b""
    assert answer == b"", answer
    # Read-only: nothing but GET, even for an auditor.
    auditor = await bank.as_party("auditor-reg")
    reply = await auditor.request.post(f"{bank.base}/search", data={"q": "x"})
    assert reply.status == 405
    await auditor.close()
