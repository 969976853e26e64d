"""Pledge, release and settle: signed commands from lending and repayment.

Request-reply on ``<prefix>.orders.{pledge,release,settle}`` with
``scf.bus.v1.PledgeCommand`` / ``PledgeResult``, each signed
(services/runtime/messaging.py): orders acts only on a command that the one
service allowed to send it signed (lending pledges and releases, repayment
settles), and acts in that service's name. Each command runs in one
transaction that locks the order row, so of two pledges arriving at the same
instant from two banks exactly one wins; each is idempotent, so a requester
that lost the reply simply asks again.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from services.contracts.subjects import OrderVerb, Subjects
from services.gen.scf.bus.v1 import bus_pb2
from services.orders.convert import to_proto
from services.orders.domain import Action, Pledge, apply
from services.orders.journaling import record
from services.orders.storage import OrderStore
from services.runtime.clock import Clock
from services.runtime.errors import InvalidArgument
from services.runtime.idempotency import once
from services.runtime.identity import Identity, Role
from services.runtime.journal_client import Outbox
from services.runtime.messaging import Messenger

__all__ = ["PledgeHandler"]

ACTIONS = {OrderVerb.PLEDGE: Action.PLEDGE, OrderVerb.RELEASE: Action.RELEASE,
           OrderVerb.SETTLE: Action.SETTLE}  # fmt: skip


class PledgeHandler:
    def __init__(self, pool: asyncpg.Pool[Any], outbox: Outbox, clock: Clock) -> None:
        self.pool = pool
        self.outbox = outbox
        self.clock = clock

    async def subscribe(self, messenger: Messenger, subjects: Subjects) -> None:
        for verb in OrderVerb:

            async def handle(
                command: bus_pb2.PledgeCommand, signer: str, verb: OrderVerb = verb
            ) -> bus_pb2.PledgeResult:
                return await self.run(verb, command, signer)

            await messenger.serve(
                subjects.order_command(verb), bus_pb2.PledgeCommand, bus_pb2.PledgeResult,
                handle, senders=(verb.sender,), queue="orders",
            )  # fmt: skip

    async def run(
        self, verb: OrderVerb, command: bus_pb2.PledgeCommand, signer: str
    ) -> bus_pb2.PledgeResult:
        if not command.order_id:
            raise InvalidArgument("order_id", "required")
        if not command.application_id:
            raise InvalidArgument("application_id", "required")
        if verb is OrderVerb.PLEDGE and not command.bank:
            raise InvalidArgument("bank", "required")
        action = ACTIONS[verb]
        # The sender is the service whose signature the command carries.
        sender = Identity(signer, Role.SERVICE, "platform")
        pledge = Pledge(command.application_id, command.bank, self.clock.now_micros())

        async def work(conn: Any) -> bus_pb2.PledgeResult:
            order = await OrderStore.lock(conn, command.order_id)
            updated = apply(order, action, sender, self.clock.now_micros(), pledge=pledge)
            await OrderStore.save(conn, updated)
            await record(conn, self.outbox, updated, action, sender.party_id)
            return bus_pb2.PledgeResult(order=to_proto(updated))

        key = f"{command.order_id}:{command.application_id}"
        return await once(
            self.pool, sender.party_id, verb.value, key, command, bus_pb2.PledgeResult, work
        )
