"""``scf.orders.v1.OrdersService``."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg

from services.gen.scf.journal.v1 import journal_pb2
from services.gen.scf.orders.v1 import orders_pb2, orders_pb2_grpc
from services.orders.convert import PROTO_TO_STATE, STATE_TO_PROTO, money, to_proto
from services.orders.domain import Action, Order, State, apply, validate_draft
from services.orders.journaling import record
from services.orders.storage import OrderStore
from services.runtime.clock import Clock
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.runtime.idempotency import M, once
from services.runtime.identity import Identity, Role, current_identity, require_role
from services.runtime.journal_client import AuditClient, Outbox
from services.runtime.messages import build
from services.runtime.paging import page_of, paged
from services.runtime.watching import JournaledFeed, Snapshot, follow, journal_seq_of

__all__ = ["OrdersServicer"]

#: No change follows these (a watch ends there).
FINAL_STATES = frozenset({State.SETTLED, State.CANCELLED})


def _order_id(value: str) -> str:
    if not value or len(value) > 64:
        raise InvalidArgument("order_id", "required, such as ORD-1A2B3C4D5E6F")
    return value


class OrdersServicer(orders_pb2_grpc.OrdersServiceServicer):
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        outbox: Outbox,
        clock: Clock,
        audit_client: AuditClient,
        feed: JournaledFeed,
    ) -> None:
        self.feed = feed
        self.pool = pool
        self.store = OrderStore(pool)
        self.outbox = outbox
        self.clock = clock
        self.audit_client = audit_client

    # -- mutations ----------------------------------------------------------------

    async def RegisterOrder(
        self, request: orders_pb2.RegisterOrderRequest, context: Any
    ) -> orders_pb2.RegisterOrderResponse:
        who = require_role(Role.SUBCONTRACTOR)
        buyers = {b[0] for b in await self.store.buyers()}
        draft = validate_draft(
            who,
            request.buyer_id,
            (request.amount.amount, request.amount.currency),
            request.issue_date,
            request.due_date,
            [
                (i.description, i.quantity, i.unit_price.amount, i.unit_price.currency)
                for i in request.line_items
            ],
            request.contract_sha256,
            request.reference,
            buyers,
        )

        async def work(conn: Any) -> orders_pb2.RegisterOrderResponse:
            taken = await conn.fetchval(
                "SELECT order_id FROM orders WHERE subcontractor_id = $1 AND reference = $2",
                who.party_id,
                draft.reference,
            )
            if taken is not None:
                raise AlreadyExists(f"reference {draft.reference!r} is order {taken} already")
            order_id = f"ORD-{uuid.uuid4().hex[:12].upper()}"
            order = await OrderStore.insert(conn, order_id, draft, self.clock.now_micros())
            await record(conn, self.outbox, order, None, who.party_id)
            return orders_pb2.RegisterOrderResponse(order=to_proto(order))

        try:
            return await self._once(
                who, "RegisterOrder", request, orders_pb2.RegisterOrderResponse, work
            )
        except asyncpg.UniqueViolationError as exc:  # the same reference, registered concurrently
            if exc.constraint_name != "orders_subcontractor_reference":
                raise
            raise AlreadyExists(f"reference {draft.reference!r} is registered already") from None

    async def ConfirmOrder(
        self, request: orders_pb2.ConfirmOrderRequest, context: Any
    ) -> orders_pb2.ConfirmOrderResponse:
        return await self._transition(request, Action.CONFIRM, orders_pb2.ConfirmOrderResponse)

    async def DisputeOrder(
        self, request: orders_pb2.DisputeOrderRequest, context: Any
    ) -> orders_pb2.DisputeOrderResponse:
        return await self._transition(
            request, Action.DISPUTE, orders_pb2.DisputeOrderResponse, reason=request.reason
        )

    async def RecordDelivery(
        self, request: orders_pb2.RecordDeliveryRequest, context: Any
    ) -> orders_pb2.RecordDeliveryResponse:
        return await self._transition(request, Action.DELIVER, orders_pb2.RecordDeliveryResponse)

    async def AcceptDelivery(
        self, request: orders_pb2.AcceptDeliveryRequest, context: Any
    ) -> orders_pb2.AcceptDeliveryResponse:
        return await self._transition(request, Action.ACCEPT, orders_pb2.AcceptDeliveryResponse)

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context: Any
    ) -> orders_pb2.CancelOrderResponse:
        return await self._transition(request, Action.CANCEL, orders_pb2.CancelOrderResponse)

    async def _transition(
        self, request: Any, action: Action, response: type[M], reason: str = ""
    ) -> M:
        who = current_identity()
        order_id = _order_id(request.order_id)

        async def work(conn: Any) -> M:
            order = await OrderStore.lock(conn, order_id)
            updated = apply(order, action, who, self.clock.now_micros(), reason=reason)
            await OrderStore.save(conn, updated)
            await record(conn, self.outbox, updated, action, who.party_id)
            return build(response, order=to_proto(updated))

        method = type(request).__name__.removesuffix("Request")
        return await self._once(who, method, request, response, work)

    async def _once(
        self, who: Identity, method: str, request: Any, response: type[M], work: Any
    ) -> M:
        return await once(
            self.pool, who.party_id, method, request.idempotency_key, request, response, work
        )

    # -- reads ----------------------------------------------------------------------

    async def _readable(self, order_id: str) -> Order:
        who = current_identity()
        order = await self.store.get(_order_id(order_id))
        if not order.can_read(who):
            raise PermissionDenied(f"{who.party_id} is not a party to order {order_id}")
        return order

    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: Any
    ) -> orders_pb2.GetOrderResponse:
        return orders_pb2.GetOrderResponse(order=to_proto(await self._readable(request.order_id)))

    async def WatchOrder(
        self, request: orders_pb2.WatchOrderRequest, context: Any
    ) -> AsyncIterator[orders_pb2.WatchOrderResponse]:
        subject = f"order/{_order_id(request.order_id)}"

        async def read() -> Snapshot[Order]:
            order = await self._readable(request.order_id)
            async with self.pool.acquire() as conn:
                seq = await journal_seq_of(conn, subject, order.version)
            return Snapshot(order, order.version, seq, final=order.state in FINAL_STATES)

        async for s in follow(self.feed, subject, read):
            yield orders_pb2.WatchOrderResponse(order=to_proto(s.view), journal_seq=s.journal_seq)

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: Any
    ) -> orders_pb2.ListOrdersResponse:
        who = current_identity()
        if who.role in (Role.AUDITOR, Role.OPERATOR):
            party = None
        elif who.role in (Role.SUBCONTRACTOR, Role.BUYER):
            party = who.party_id
        else:
            raise PermissionDenied(f"{who.role.value}s see orders through their applications")
        page = page_of(request.page_size, request.page_token, (int, str), default=20)
        states = []
        for s in request.states:
            if s not in PROTO_TO_STATE:
                raise InvalidArgument("states", f"unknown state {s}")
            states.append(PROTO_TO_STATE[s].value)
        bounds = []
        for name in ("due_from", "due_to"):
            value = getattr(request, name)
            try:
                bounds.append(dt.date.fromisoformat(value) if value else None)
            except ValueError:
                raise InvalidArgument(name, f"{value!r} is not a date like 2027-03-31") from None
        after = cast("tuple[int, str] | None", page.after)
        found = await self.store.page(party, states, bounds[0], bounds[1], after, page.fetch())
        orders, token = page.cut(found, lambda o: (o.created_micros, o.order_id))
        return orders_pb2.ListOrdersResponse(
            orders=[to_proto(o) for o in orders], next_page_token=token
        )

    async def ListBuyers(
        self, request: orders_pb2.ListBuyersRequest, context: Any
    ) -> orders_pb2.ListBuyersResponse:
        current_identity()
        page = page_of(request.page_size, request.page_token, (str,))
        buyers, token = paged(await self.store.buyers(), page, lambda b: (b[0],))
        return orders_pb2.ListBuyersResponse(
            buyers=[orders_pb2.Buyer(buyer_id=b, name=n, rating=r) for b, n, r in buyers],
            next_page_token=token,
        )

    async def VerifyOrder(
        self, request: orders_pb2.VerifyOrderRequest, context: Any
    ) -> orders_pb2.VerifyOrderResponse:
        current_identity()  # anyone with a platform certificate
        order_id = _order_id(request.order_id)
        if len(request.contract_sha256) != 32:
            raise InvalidArgument("contract_sha256", "must be 32 bytes")
        try:
            order = await self.store.get(order_id)
        except NotFound:
            order = None
        if order is None or order.contract_sha256 != request.contract_sha256:
            raise NotFound("no order with that id and contract hash")
        # One call: the history comes with each entry's proof against the
        # checkpoint its first answer carries.
        checkpoint, proven = "", []
        async with self.audit_client() as stub:
            audit: Any = stub  # grpc-stubs types these calls as synchronous
            request_history = journal_pb2.GetSubjectHistoryRequest(subject=f"order/{order_id}")
            async for reply in audit.GetSubjectHistory(request_history, timeout=10):
                checkpoint = checkpoint or reply.checkpoint
                proven.append(
                    orders_pb2.ProvenEntry(
                        seq=reply.entry.seq, event_type=reply.entry.event_type,
                        leaf=reply.entry.leaf, inclusion_proof=list(reply.inclusion_proof),
                    )
                )  # fmt: skip
        if not proven:
            raise FailedPrecondition(
                f"order {order_id} is not in the journal yet; try again shortly"
            )
        return orders_pb2.VerifyOrderResponse(
            order_id=order.order_id,
            state=STATE_TO_PROTO[order.state],
            amount=money(order.amount),
            buyer_id=order.buyer_id,
            subcontractor_id=order.subcontractor_id,
            due_date=order.due_date.isoformat(),
            pledged=order.pledge is not None,
            checkpoint=checkpoint,
            entries=proven,
        )
