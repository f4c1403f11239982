"""Create the orders table.

Revision ID: 724e53f01aba
Revises:
Create Date: 2026-11-28 01:06:12.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "724e53f01aba"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer", sa.String(length=100), nullable=False),
        sa.Column("total_cents", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_orders_customer"), "orders", ["customer"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_orders_customer"), table_name="orders")
    op.drop_table("orders")
