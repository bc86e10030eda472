from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from order_common.db import UnitOfWork
from orders_service.repository import IdempotencyKeyRepository, OrderRepository, OutboxRepository


class OrdersUnitOfWork(UnitOfWork):
    """One transaction over the orders and the outbox: an order is never saved unannounced.

    ``on_outbox_commit`` runs after a commit that wrote outbox rows: the API's
    ``OutboxNotifier.notify``, which wakes the relays outside the transaction."""

    orders: OrderRepository
    outbox: OutboxRepository
    idempotency_keys: IdempotencyKeyRepository

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        on_outbox_commit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(session_factory)
        self._on_outbox_commit = on_outbox_commit

    def _start(self) -> None:
        self.orders = OrderRepository(self.session)
        self.outbox = OutboxRepository(self.session)
        self.idempotency_keys = IdempotencyKeyRepository(self.session)

    async def commit(self) -> None:
        await super().commit()
        if self.outbox.added and self._on_outbox_commit is not None:
            self.outbox.added = 0
            self._on_outbox_commit()
