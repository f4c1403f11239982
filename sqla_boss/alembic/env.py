"""Alembic environment of sqla_boss's own revisions: the pg-boss schema, tracked in its own version table.

Settings, first found wins:

* schema: ``-x schema=NAME``, ``Config.attributes["schema"]``, ``sqla_boss.schema`` in the ini, ``pgboss``;
* database: ``Config.attributes["connection"]``, ``$DATABASE_URL``, ``sqlalchemy.url`` in the ini;
* version table schema: ``-x version_table_schema=NAME``, ``Config.attributes``, ``public``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

from sqla_boss.database import create_sync_engine, url_from_env
from sqla_boss.errors import SqlaBossError
from sqla_boss.identifiers import DEFAULT_SCHEMA, validate_schema_name
from sqla_boss.migrations import DEFAULT_VERSION_TABLE_SCHEMA, version_table_name

config = context.config
if config.config_file_name is not None and config.get_section("loggers") is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)
x_arguments = context.get_x_argument(as_dictionary=True)
schema = validate_schema_name(
    x_arguments.get("schema")
    or config.attributes.get("schema")
    or config.get_main_option("sqla_boss.schema")
    or DEFAULT_SCHEMA
)
version_table_schema = (
    x_arguments.get("version_table_schema")
    or config.attributes.get("version_table_schema")
    or DEFAULT_VERSION_TABLE_SCHEMA
)


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        version_table=config.attributes.get("version_table") or version_table_name(schema),
        version_table_schema=version_table_schema,
        sqla_boss_schema=schema,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SqlaBossError(
        "sqla_boss's migrations need a database connection: they look at what is installed before they "
        "install or adopt the pg-boss schema, so they cannot be rendered as offline SQL (--sql)"
    )

given = config.attributes.get("connection")
if given is not None:
    run_on(given)
else:
    url = url_from_env(config.get_main_option("sqlalchemy.url") or None)
    if url is None:
        raise SqlaBossError("no database: set DATABASE_URL or sqlalchemy.url in alembic.ini")
    engine = create_sync_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            run_on(connection)
    finally:
        engine.dispose()
