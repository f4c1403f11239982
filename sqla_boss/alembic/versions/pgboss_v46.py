"""The pg-boss 12.38 schema, version 46: install it, adopt the one pg-boss 12.38 installed, or upgrade a
version-24 schema in place with its data.

Reached by ``head`` only when pg-boss 12 is asked for (``-x pgboss=12``, ``sqla-boss migrate --pgboss 12``,
``migrations.upgrade(..., pgboss=12)``). Down to ``base`` it removes the schema; down to 24 it refuses.

Revision ID: pgboss_v46
Revises: pgboss_v24
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from sqla_boss import migrations
from sqla_boss.errors import MigrationError
from sqla_boss.schema import SchemaState, inspect_schema
from sqla_boss.v24 import VERSION as V24
from sqla_boss.v46 import ddl, from_v24

revision: str = "pgboss_v46"
down_revision: str | Sequence[str] | None = "pgboss_v24"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    context = op.get_context()
    connection = op.get_bind()
    schema = context.opts["sqla_boss_schema"]
    state, version = inspect_schema(connection, schema)
    if state is SchemaState.installed and version == V24:
        carried = from_v24.upgrade(connection, schema)
        context.opts.get("sqla_boss_report", []).append(carried)
        # The opt-in fetch index of version 24 went with its job table.
        migrations.forget_fetch_index(connection, schema, context.opts.get("version_table_schema"))
    else:
        ddl.install(connection, schema)


def downgrade() -> None:
    context = op.get_context()
    if context.opts.get("sqla_boss_destination") != "base":
        raise MigrationError(
            "sqla_boss does not take a pg-boss schema back from version 46 to 24: jobs of 46 carry what 24 "
            "cannot hold (groups, dependencies, heartbeats, policies 24 does not know). Downgrade to base to "
            "remove the schema, or keep it at 46"
        )
    ddl.uninstall(op.get_bind(), context.opts["sqla_boss_schema"])
