"""The pg-boss 10 schema, version 24: install it, or adopt the one pg-boss already installed.

Revision ID: pgboss_v24
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from sqla_boss import migrations
from sqla_boss.schema import SchemaState, inspect_schema
from sqla_boss.v24 import VERSION, ddl

revision: str = "pgboss_v24"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("sqla_boss",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    opts = op.get_context().opts
    schema = opts["sqla_boss_schema"]
    if opts.get("sqla_boss_pgboss") == 12:
        # On the way to version 46 this step only adopts a version-24 schema; the next one installs 46, adopts
        # it, or upgrades 24 with the data.
        state, version = inspect_schema(op.get_bind(), schema)
        if not (state is SchemaState.installed and version == VERSION):
            return
    ddl.install(op.get_bind(), schema)


def downgrade() -> None:
    context = op.get_context()
    schema = context.opts["sqla_boss_schema"]
    ddl.uninstall(op.get_bind(), schema)
    migrations.forget_fetch_index(op.get_bind(), schema, context.opts.get("version_table_schema"))
