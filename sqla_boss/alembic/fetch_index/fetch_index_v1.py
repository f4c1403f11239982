"""Opt-in: an index serving fetch's order on every partition of ``job``, so fetch cost stays flat as a
backlog grows. Not part of pg-boss's schema; pg-boss 10 works with it in place (and uses it too).

It lives outside ``versions/`` and is tracked in a version table of its own (``alembic_idx_<schema>``), so a
plain upgrade never installs it; ``sqla-boss migrate --fetch-index`` or
``sqla_boss.migrations.upgrade(..., fetch_index=True)`` does.

Revision ID: fetch_index_v1
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from sqla_boss import schema as pgboss_schema
from sqla_boss.errors import SchemaVersionError

revision: str = "fetch_index_v1"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("sqla_boss_fetch_index",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    connection = op.get_bind()
    schema = op.get_context().opts["sqla_boss_schema"]
    state, version = pgboss_schema.inspect_schema(connection, schema)
    if version != pgboss_schema.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"schema {schema!r} holds no pg-boss schema version {pgboss_schema.SCHEMA_VERSION} ({state.value}); "
            "migrate it first"
        )
    pgboss_schema.create_fetch_index(connection, schema)


def downgrade() -> None:
    pgboss_schema.drop_fetch_index(op.get_bind(), op.get_context().opts["sqla_boss_schema"])
