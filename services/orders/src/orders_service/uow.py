from __future__ import annotations

from order_common.db import UnitOfWork
from orders_service.repository import OrderRepository, OutboxRepository


class OrdersUnitOfWork(UnitOfWork):
    """One transaction over the orders and the outbox: an order is never saved unannounced."""

    orders: OrderRepository
    outbox: OutboxRepository

    def _start(self) -> None:
        self.orders = OrderRepository(self.session)
        self.outbox = OutboxRepository(self.session)
