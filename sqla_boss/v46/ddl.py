"""Installing, adopting and removing schema version 46 on a connection.

The fixed tables come from the models (:mod:`sqla_boss.v46.models`); ``job_common``, the job tables' keys
and indexes from :mod:`sqla_boss.v46.job_table`; the plpgsql from ``functions.sql`` beside this module.
Everything runs on the connection it is given and leaves the transaction to the caller (Alembic, in the
shipped migrations).
"""

from __future__ import annotations

import datetime as dt
from importlib import resources

from sqlalchemy import Connection, insert, text
from sqlalchemy.dialects.postgresql import CreateEnumType
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable, Table
from sqlalchemy.sql.elements import TextClause

from sqla_boss.identifiers import DEFAULT_SCHEMA, quote_identifier, quote_literal, validate_schema_name
from sqla_boss.schema import lock_schema, prepare_install, schema_has_objects, translated
from sqla_boss.v46 import VERSION
from sqla_boss.v46.job_table import common_table_ddl, partition_plpgsql
from sqla_boss.v46.models import (
    Bam,
    Instance,
    Job,
    JobDependency,
    JobStateType,
    PersistedWarning,
    Queue,
    QueueStats,
    Schedule,
    Subscription,
    Version,
    metadata,
)

_FIXED_TABLES: tuple[Table, ...] = tuple(
    metadata.tables[f"{DEFAULT_SCHEMA}.{model.__tablename__}"]
    for model in (
        Version,
        Queue,
        Schedule,
        Subscription,
        Bam,
        Job,
        PersistedWarning,
        QueueStats,
        JobDependency,
        Instance,
    )
)
"""The tables made from the models, in pg-boss's order (``job_common`` comes after ``job``, from SQL)."""

FUNCTIONS = (
    "create_queue(text, jsonb)",
    "delete_queue(text)",
    "job_table_run_async(text, integer, text, text, text)",
    "job_table_run(text, text, text)",
    "job_table_format(text, text)",
    "job_now()",
)
"""The signatures of the version's functions, for dropping them."""


def install(connection: Connection, schema: str = DEFAULT_SCHEMA) -> bool:
    """Create the pg-boss schema at version 46 in ``schema``, or adopt one that pg-boss 12.38 installed.

    Runs in the caller's transaction and does not commit. Holds pg-boss's advisory lock on the schema until
    the transaction ends, so it never races a Node pg-boss installing the same schema.

    Returns:
        ``True`` if it created the schema objects, ``False`` if version 46 was already installed.

    Raises:
        InvalidSchemaNameError: before any SQL runs.
        SchemaVersionError: the schema holds pg-boss at another version (24 is upgraded by
            :func:`sqla_boss.v46.from_v24.upgrade`, not here).
        SchemaConflictError: the schema holds other objects but no pg-boss ``version`` table.
    """
    if not prepare_install(connection, schema, VERSION):
        return False
    create(connection, schema)
    return True


def create(connection: Connection, schema: str) -> None:
    """Create every object of version 46 in ``schema`` (which may exist, empty), with the version row.

    No checks and no lock: :func:`install` and the upgrade from 24 call it once they hold the schema lock.
    """
    options = translated(schema)
    quoted = quote_identifier(validate_schema_name(schema))
    connection.execute(CreateSchema(schema, if_not_exists=True))
    connection.execute(CreateEnumType(JobStateType), execution_options=options)
    for table in _FIXED_TABLES:
        connection.execute(CreateTable(table), execution_options=options)
        for index in sorted(table.indexes, key=lambda index: index.name or ""):
            connection.execute(CreateIndex(index), execution_options=options)
        if table.name == "job":
            for statement in common_table_ddl(quoted):
                connection.execute(text(statement))
    today = connection.execute(text("SELECT (pg_catalog.now() AT TIME ZONE 'UTC')::date")).scalar_one()
    for day in (today, today + dt.timedelta(days=1)):
        connection.execute(text(queue_stats_partition(quoted, day)))
    connection.execute(function_ddl(schema))
    connection.execute(insert(Version).values(version=VERSION), execution_options=options)


def queue_stats_partition(quoted_schema: str, day: dt.date) -> str:
    """``CREATE TABLE`` of ``queue_stats``'s partition of one UTC day, named ``queue_stats_YYYYMMDD``."""
    after = day + dt.timedelta(days=1)
    name = quote_identifier(f"queue_stats_{day:%Y%m%d}")
    return (
        f"CREATE TABLE {quoted_schema}.{name} PARTITION OF {quoted_schema}.queue_stats "
        f"FOR VALUES FROM ('{day:%Y-%m-%d} 00:00:00+00') TO ('{after:%Y-%m-%d} 00:00:00+00')"
    )


def uninstall(connection: Connection, schema: str = DEFAULT_SCHEMA) -> None:
    """Drop every pg-boss object of version 46 in ``schema``, jobs included, then the schema if nothing else
    is left. Runs in the caller's transaction and does not commit; holds pg-boss's advisory lock on the schema.
    """
    validate_schema_name(schema)
    lock_schema(connection, schema)
    quoted = quote_identifier(schema)
    for function in FUNCTIONS:
        connection.execute(text(f"DROP FUNCTION IF EXISTS {quoted}.{function}"))
    for table in reversed(_FIXED_TABLES):  # partitions go with their parents
        connection.execute(text(f"DROP TABLE IF EXISTS {quoted}.{quote_identifier(table.name)} CASCADE"))
    connection.execute(text(f"DROP TYPE IF EXISTS {quoted}.{quote_identifier(str(JobStateType.name))}"))
    if not schema_has_objects(connection, schema):
        connection.execute(text(f"DROP SCHEMA IF EXISTS {quoted}"))


def function_ddl(schema: str) -> TextClause:
    """The ``CREATE FUNCTION`` statements of version 46 for ``schema``."""
    template = resources.files("sqla_boss.v46").joinpath("functions.sql").read_text(encoding="utf-8")
    quoted = quote_identifier(validate_schema_name(schema))
    sql = template.format(
        schema=quoted,
        schema_literal=quote_literal(schema),
        schema_in_literal=quoted.replace("'", "''"),
        partition_statements=partition_plpgsql(quoted),
    )
    return text(sql)


__all__ = ["FUNCTIONS", "create", "function_ddl", "install", "queue_stats_partition", "uninstall"]
