"""Outbox dead letters: a row that fails to publish on its own content (it cannot be made into a
message, or the broker nacks it while it takes the others) ``relay_max_attempts`` times is set
aside (``dead_lettered_at``) with its last error, instead of being retried for ever; the backlog
index leaves such rows out, and a small index finds them for ``orders-service dlq``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_events", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column(
        "outbox_events", sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.drop_index("ix_outbox_events_unpublished_created_at", table_name="outbox_events")
    op.create_index(
        "ix_outbox_events_unpublished_created_at",
        "outbox_events",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL AND dead_lettered_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_events_dead_lettered_at",
        "outbox_events",
        ["dead_lettered_at"],
        unique=False,
        postgresql_where=sa.text("dead_lettered_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_events_dead_lettered_at", table_name="outbox_events")
    op.drop_index("ix_outbox_events_unpublished_created_at", table_name="outbox_events")
    op.create_index(
        "ix_outbox_events_unpublished_created_at",
        "outbox_events",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_column("outbox_events", "dead_lettered_at")
    op.drop_column("outbox_events", "last_error")
