"""Alembic environment of sqla_boss's own revisions: the pg-boss schema, tracked in its own version table.

Settings, first found wins:

* schema: ``-x schema=NAME``, ``Config.attributes["schema"]``, ``sqla_boss.schema`` in the ini, ``pgboss``;
* database: ``Config.attributes["connection"]``, ``$DATABASE_URL``, ``sqlalchemy.url`` in the ini;
* version table schema: ``-x version_table_schema=NAME``, ``Config.attributes``, ``public``;
* pg-boss release: ``-x pgboss=12``, ``Config.attributes["pgboss"]``, ``sqla_boss.pgboss`` in the ini, ``10``.
  It says where ``head`` leads: version 24's revision (``pgboss_v24``) for 10, version 46's
  (``pgboss_v46``, after 24's in the history) for 12. A revision named outright is taken as named.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

from sqla_boss.database import create_sync_engine, url_from_env
from sqla_boss.errors import SqlaBossError
from sqla_boss.identifiers import DEFAULT_SCHEMA, validate_schema_name
from sqla_boss.migrations import DEFAULT_VERSION_TABLE_SCHEMA, HEADS, version_table_name
from sqla_boss.schema import DEFAULT_PGBOSS, SchemaState, check_migration, inspect_schema, pgboss_major

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


pgboss = pgboss_major(
    x_arguments.get("pgboss")
    or config.attributes.get("pgboss")
    or config.get_main_option("sqla_boss.pgboss")
    or DEFAULT_PGBOSS
)
fetch_index = bool(config.attributes.get("fetch_index"))
# The command's own settings: where it goes, and whether it is an upgrade (its step function's name).
environment: EnvironmentContext = vars(context)["_proxy"]
destination = environment.context_opts.get("destination_rev")
upgrading = getattr(environment.context_opts.get("fn"), "__name__", "") == "upgrade"


def _head_of_choice(revision: Any, migration_context: Any) -> Any:
    """Alembic's upgrade step, with ``head`` read as the head of the chosen pg-boss release."""
    return environment.script._upgrade_revs(HEADS[pgboss], revision)


def run_on(connection: Connection) -> None:
    options: dict[str, Any] = {}
    checked = upgrading and not fetch_index
    if checked and destination in ("head", "heads"):
        options["fn"] = _head_of_choice
    context.configure(
        connection=connection,
        version_table=config.attributes.get("version_table") or version_table_name(schema),
        version_table_schema=version_table_schema,
        sqla_boss_schema=schema,
        sqla_boss_pgboss=pgboss,
        sqla_boss_destination=destination,
        sqla_boss_report=config.attributes.setdefault("report", []),
        **options,
    )
    with context.begin_transaction():
        if checked:  # refused before any step runs, whatever our version table says
            state, version = inspect_schema(connection, schema)
            check_migration(schema, version if state is SchemaState.installed else None, pgboss)
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
