from __future__ import annotations

from order_common.db import UnitOfWork
from orders_service.repository import IdempotencyKeyRepository, OrderRepository, OutboxRepository


class OrdersUnitOfWork(UnitOfWork):
    """One transaction over the orders and the outbox: an order is never saved unannounced."""

    orders: OrderRepository
    outbox: OutboxRepository
    idempotency_keys: IdempotencyKeyRepository

    def _start(self) -> None:
        self.orders = OrderRepository(self.session)
        self.outbox = OutboxRepository(self.session)
        self.idempotency_keys = IdempotencyKeyRepository(self.session)
