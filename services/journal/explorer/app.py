"""The auditors' web explorer: an ASGI app over a journal store, read-only.

Pages for checkpoints (with every signature and whether it verifies), entries
(by sequence, producer and event type), a subject's story as a timeline,
search, the replica's or journal's own status, and the order's identity card,
whose entries and checkpoint the browser verifies itself (static/verify.js)
against the journal keys pinned in the page, not trusting this server.

Only GET: there is nothing to write. Who may look is decided by the caller's
client certificate (:class:`Access`), never by anything in the request.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlparse

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.journal.explorer.data import PAGE, ExplorerData, entry_view
from services.runtime.identity import Identity, Role, identity_from_pem

__all__ = ["Access", "make_app"]

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Access:
    """Who may look: auditors, and, at the journal, the operator. At a bank's
    replica only the bank's own auditors and the regulator's."""

    bank: str = ""

    def allows(self, who: Identity) -> bool:
        if self.bank:
            return who.role is Role.AUDITOR and who.organization in (self.bank, "regulator")
        return who.role in (Role.AUDITOR, Role.OPERATOR)


def _caller(request: Request) -> Identity | None:
    der = request.scope.get("extensions", {}).get("scf.peer", {}).get("der")
    if not der:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
    try:
        return identity_from_pem(pem)
    except Exception:  # a certificate without a role of ours
        return None


def _time(micros: int) -> str:
    return dt.datetime.fromtimestamp(micros / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _chart(history: list[dict[str, Any]], width: int = 640, height: int = 160) -> str:
    """The tree's size over time, as an SVG polyline (server-drawn: no script)."""
    points = sorted((h["time_micros"], h["size"]) for h in history)
    if len(points) < 2:
        return ""
    t0, t1 = points[0][0], points[-1][0]
    top = max(size for _, size in points)
    span = max(t1 - t0, 1)
    xy = " ".join(
        f"{(t - t0) / span * (width - 20) + 10:.1f},{height - 10 - size / top * (height - 20):.1f}"
        for t, size in points
    )
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="tree size over time, up to {top} entries">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{xy}"/>'
        f'<text x="10" y="14">{top} entries</text></svg>'
    )


def make_app(
    data: ExplorerData,
    *,
    title: str,
    access: Access,
    status: Callable[[], Awaitable[dict[str, Any]]],
) -> Starlette:
    env = Environment(
        loader=PackageLoader("services.journal.explorer", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["time"] = _time
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)

    async def page(request: Request, template: str, **context: Any) -> HTMLResponse:
        # What the browser checks against: the journal keys the pinned root key
        # registered, set by the deployment, never by what a data call returns.
        config = json.dumps({"journal_keys": [k.hex() for k in await data.journal_keys()]})
        # Script text is not HTML-unescaped: JSON with '<' '>' '&' written as escapes.
        config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        body = env.get_template(template).render(
            title=title, who=request.state.who, config=config, **context
        )
        return HTMLResponse(body)

    async def checkpoints(request: Request) -> Response:
        history = await data.checkpoint_history()
        return await page(request, "checkpoints.html", latest=await data.latest(),
                    history=history[:50], chart=_chart(history))  # fmt: skip

    async def entries(request: Request) -> Response:
        q = request.query_params
        start = _int(q.get("start", "0"))
        rows = await data.entries(start, q.get("producer", ""), q.get("event_type", ""))
        return await page(request, "entries.html", rows=rows, start=start, page=PAGE,
                    producer=q.get("producer", ""), event_type=q.get("event_type", ""),
                    facets=await data.facets())  # fmt: skip

    async def entry(request: Request) -> Response:
        seq = _int(request.path_params["seq"])
        found = await data.entry(seq)
        if found is None:
            return await page(request, "missing.html", what=f"entry {seq}")
        return await page(request, "entry.html", e=found)

    async def subject(request: Request) -> Response:
        name = request.path_params["subject"]
        story = [entry_view(e) for e in await data.story(name)]
        if not story:
            return await page(request, "missing.html", what=name)
        order = name.removeprefix("order/") if name.startswith("order/") else ""
        return await page(request, "subject.html", subject=name, story=story, order=order)

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "")
        return await page(request, "search.html", q=query, found=await data.search(query))

    async def card(request: Request) -> Response:
        order_id = request.path_params["order_id"]
        return await page(request, "card.html", order_id=order_id,
                    scanned=request.query_params.get("size", ""),
                    scanned_root=request.query_params.get("root", ""))  # fmt: skip

    async def card_data(request: Request) -> Response:
        found = await data.card(request.path_params["order_id"])
        if found is None:
            return JSONResponse({"error": "no such order in this journal"}, status_code=404)
        return JSONResponse(found)

    async def consistency(request: Request) -> Response:
        try:
            first, second = (
                _int(request.query_params["first"]),
                _int(request.query_params["second"]),
            )
            return JSONResponse({"proof": await data.consistency(first, second)})
        except (KeyError, ValueError) as exc:
            return JSONResponse({"error": f"first and second sizes: {exc}"}, status_code=400)

    async def open_link(request: Request) -> Response:
        """What an order card's QR code holds (``scf-order:<id>?...``), opened."""
        link = urlparse(request.query_params.get("uri", ""))
        if link.scheme != "scf-order" or not link.path:
            return await page(request, "missing.html", what="an order card link")
        params = {k: v[0] for k, v in parse_qs(link.query).items()}
        query = urlencode({"size": params.get("size", ""), "root": params.get("root", "")})
        target = f"/orders/{quote(link.path, safe='')}/card?{query}"
        return RedirectResponse(target, status_code=303)

    async def status_page(request: Request) -> Response:
        return await page(request, "status.html", status=await status())

    async def only_those_allowed(request: Request, call_next: Any) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response("the explorer is read-only\n", status_code=405,
                            headers={"Allow": "GET, HEAD"})  # fmt: skip
        who = _caller(request)
        if who is None:
            return Response("a client certificate of the platform is required\n", 401)
        if not access.allows(who):
            return Response(f"{who.party_id} ({who.role.value}) may not look here\n", 403)
        request.state.who = who
        response: Response = await call_next(request)
        # Nothing of this page runs or loads from anywhere else.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'"
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def bad_request(request: Request, exc: Exception) -> Response:
        return Response(f"{exc}\n", status_code=400)

    return Starlette(
        routes=[
            Route("/", checkpoints),
            Route("/entries", entries),
            Route("/entries/{seq}", entry),
            Route("/subjects/{subject:path}", subject),
            Route("/search", search),
            Route("/orders/{order_id}/card", card),
            Route("/api/orders/{order_id}/card", card_data),
            Route("/api/consistency", consistency),
            Route("/open", open_link),
            Route("/status", status_page),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=only_those_allowed)],
        exception_handlers={ValueError: bad_request},
    )


def _int(value: str) -> int:
    if not value.isdigit() or len(value) > 19:
        raise ValueError(f"not a sequence number: {value[:40]!r}")
    return int(value)
