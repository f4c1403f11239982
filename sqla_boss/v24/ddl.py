"""Installing, adopting and removing schema version 24 on a connection.

Table DDL comes from the models (:mod:`sqla_boss.models`); the plpgsql that Core cannot express comes from
``functions.sql`` beside this module. Everything runs on the connection it is given and leaves the
transaction to the caller (Alembic, in the shipped migrations).
"""

from __future__ import annotations

from importlib import resources

from sqlalchemy import Connection, insert, text
from sqlalchemy.dialects.postgresql import CreateEnumType
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable, DropTable
from sqlalchemy.sql.elements import TextClause

from sqla_boss.identifiers import DEFAULT_SCHEMA, quote_identifier, quote_literal, validate_schema_name
from sqla_boss.models import Archive, Job, JobStateType, Queue, Schedule, Subscription, Version, metadata
from sqla_boss.schema import lock_schema, prepare_install, schema_has_objects, translated
from sqla_boss.v24 import VERSION

_TABLES_IN_CREATION_ORDER = tuple(
    metadata.tables[f"{DEFAULT_SCHEMA}.{model.__tablename__}"]
    for model in (Version, Queue, Schedule, Subscription, Job, Archive)
)


def install(connection: Connection, schema: str = DEFAULT_SCHEMA) -> bool:
    """Create the pg-boss schema at version 24 in ``schema``, or adopt one that is already there.

    Runs in the caller's transaction and does not commit. Holds pg-boss's advisory lock on the schema
    until the transaction ends, so it never races a Node pg-boss installing the same schema.

    Returns:
        ``True`` if it created the schema objects, ``False`` if pg-boss 24 was already installed.

    Raises:
        InvalidSchemaNameError: before any SQL runs.
        SchemaVersionError: the schema holds pg-boss at another version.
        SchemaConflictError: the schema holds other objects but no pg-boss ``version`` table.
    """
    if not prepare_install(connection, schema, VERSION):
        return False
    options = translated(schema)
    connection.execute(CreateSchema(schema, if_not_exists=True))
    connection.execute(CreateEnumType(JobStateType), execution_options=options)
    for table in _TABLES_IN_CREATION_ORDER:
        connection.execute(CreateTable(table), execution_options=options)
        for index in sorted(table.indexes, key=lambda index: index.name or ""):
            connection.execute(CreateIndex(index), execution_options=options)
    connection.execute(function_ddl(schema))
    connection.execute(insert(Version).values(version=VERSION), execution_options=options)
    return True


def uninstall(connection: Connection, schema: str = DEFAULT_SCHEMA) -> None:
    """Drop every pg-boss object in ``schema``, jobs included, then the schema if nothing else is left.

    Runs in the caller's transaction and does not commit; holds pg-boss's advisory lock on the schema.
    """
    validate_schema_name(schema)
    lock_schema(connection, schema)
    options = translated(schema)
    quoted = quote_identifier(schema)
    for function in ("delete_queue(text)", "create_queue(text, json)"):
        connection.execute(text(f"DROP FUNCTION IF EXISTS {quoted}.{function}"))
    for table in reversed(_TABLES_IN_CREATION_ORDER):
        connection.execute(DropTable(table, if_exists=True), execution_options=options)
    connection.execute(text(f"DROP TYPE IF EXISTS {quoted}.{quote_identifier(str(JobStateType.name))}"))
    if not schema_has_objects(connection, schema):
        connection.execute(text(f"DROP SCHEMA IF EXISTS {quoted}"))


def function_ddl(schema: str) -> TextClause:
    """The ``CREATE FUNCTION`` statements of ``create_queue`` and ``delete_queue`` for ``schema``."""
    template = resources.files("sqla_boss.v24").joinpath("functions.sql").read_text(encoding="utf-8")
    validate_schema_name(schema)
    return text(template.format(schema=quote_identifier(schema), schema_literal=quote_literal(schema)))


__all__ = ["function_ddl", "install", "uninstall"]
