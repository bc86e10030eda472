"""orders.announced_at: when an order's `new_order` was published, so that an order still
unprocessed long after is announced again; indexed for the unprocessed orders only.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True))
    # Orders already waiting count as announced when they were created (at worst one extra
    # `new_order`, which the worker's per-order record absorbs).
    op.execute("UPDATE orders SET announced_at = created_at WHERE processed_at IS NULL")
    op.create_index(
        "ix_orders_unprocessed_announced_at",
        "orders",
        ["announced_at"],
        unique=False,
        postgresql_where=sa.text("processed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_orders_unprocessed_announced_at", table_name="orders")
    op.drop_column("orders", "announced_at")
