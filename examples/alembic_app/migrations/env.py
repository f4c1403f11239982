"""The application's Alembic environment, with sqla_boss's migrations run beside its own."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from models import Base
from sqlalchemy.pool import NullPool

from sqla_boss import migrations as sqla_boss_migrations
from sqla_boss.database import create_sync_engine

PGBOSS_SCHEMA = "pgboss"

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set DATABASE_URL, or sqlalchemy.url in alembic.ini")
    connectable = create_sync_engine(url, poolclass=NullPool)
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # Compare every schema, but leave pg-boss's alone: its schema, its Alembic version table
            # (public.alembic_pgboss) and the j<sha224> partition of every queue created at run time.
            include_schemas=True,
            include_name=sqla_boss_migrations.include_name_for(PGBOSS_SCHEMA),
            include_object=sqla_boss_migrations.include_object_for(PGBOSS_SCHEMA),
        )
        with context.begin_transaction():
            # sqla_boss's revisions first (install pg-boss's schema, or adopt it; they keep their own version
            # table), then ours: in this one transaction, so both commit together or not at all.
            sqla_boss_migrations.upgrade(connection, schema=PGBOSS_SCHEMA)
            context.run_migrations()
    connectable.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) mode is not supported: sqla_boss's revisions look at the database")
run_migrations_online()
