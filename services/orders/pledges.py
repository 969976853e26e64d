"""Pledge, release and settle: commands from lending and repayment over NATS.

Request-reply on ``<prefix>.orders.{pledge,release,settle}`` with protobuf
``PledgeCommand`` / ``PledgeResult``. Each command runs in one transaction
that locks the order row, so of two pledges arriving at the same instant from
two banks exactly one wins; each is idempotent, so a requester that lost the
reply simply asks again.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.gen.scf.orders.v1 import orders_pb2
from services.orders.convert import to_proto
from services.orders.domain import Action, Pledge, apply
from services.orders.journaling import record
from services.orders.storage import OrderStore
from services.runtime.clock import Clock
from services.runtime.errors import InvalidArgument, SCFError
from services.runtime.idempotency import once
from services.runtime.identity import Identity, Role
from services.runtime.journal_client import Outbox

__all__ = ["PledgeHandler", "pledge_subject"]

log = logging.getLogger(__name__)

#: Which service sends which command (until NATS users pin it, issue 10).
SENDERS = {Action.PLEDGE: "lending", Action.RELEASE: "lending", Action.SETTLE: "repayment"}
VERBS = {Action.PLEDGE: "pledge", Action.RELEASE: "release", Action.SETTLE: "settle"}


def pledge_subject(prefix: str, action: Action) -> str:
    return f"{prefix}.orders.{VERBS[action]}"


class PledgeHandler:
    def __init__(self, pool: asyncpg.Pool[Any], outbox: Outbox, clock: Clock) -> None:
        self.pool = pool
        self.outbox = outbox
        self.clock = clock

    async def subscribe(self, nc: NATS, prefix: str) -> None:
        for action in SENDERS:
            await nc.subscribe(
                pledge_subject(prefix, action), queue="orders", cb=self._callback(action)
            )

    def _callback(self, action: Action) -> Any:
        async def handle(msg: Msg) -> None:
            result = await self.handle(action, msg.data)
            await msg.respond(result.SerializeToString())

        return handle

    async def handle(self, action: Action, data: bytes) -> orders_pb2.PledgeResult:
        try:
            command = orders_pb2.PledgeCommand.FromString(data)
            return await self.run(action, command)
        except SCFError as exc:
            return orders_pb2.PledgeResult(ok=False, code=exc.code.name, reason=exc.message)
        except Exception as exc:  # a malformed message must not take the handler down
            log.exception("pledge command failed")
            return orders_pb2.PledgeResult(ok=False, code="INVALID_ARGUMENT", reason=repr(exc))

    async def run(
        self, action: Action, command: orders_pb2.PledgeCommand
    ) -> orders_pb2.PledgeResult:
        if not command.order_id:
            raise InvalidArgument("order_id", "required")
        if not command.application_id:
            raise InvalidArgument("application_id", "required")
        if action is Action.PLEDGE and not command.bank:
            raise InvalidArgument("bank", "required")
        sender = Identity(SENDERS[action], Role.SERVICE, "platform")
        pledge = Pledge(command.application_id, command.bank, self.clock.now_micros())

        async def work(conn: Any) -> orders_pb2.PledgeResult:
            order = await OrderStore.lock(conn, command.order_id)
            updated = apply(order, action, sender, self.clock.now_micros(), pledge=pledge)
            await OrderStore.save(conn, updated)
            await record(conn, self.outbox, updated, action, sender.party_id)
            return orders_pb2.PledgeResult(ok=True, order=to_proto(updated))

        key = f"{command.order_id}:{command.application_id}"
        return await once(
            self.pool, sender.party_id, VERBS[action], key, command, orders_pb2.PledgeResult, work
        )
