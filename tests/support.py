"""Helpers the test modules share: names, clean-up and catalog look-ups on a real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from sqla_boss import migrations
from sqla_boss.identifiers import quote_identifier

ROOT = Path(__file__).resolve().parent.parent
"""The repository root."""


def unique_name(prefix: str) -> str:
    """A fresh lower-case identifier, so tests never share a schema or a database."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def drop_schema(engine: Engine, schema: str) -> None:
    """Drop ``schema`` and the Alembic version table of our revisions for it."""
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE"))
        for table in (migrations.version_table_name(schema), migrations.fetch_index_version_table_name(schema)):
            connection.execute(text(f"DROP TABLE IF EXISTS public.{quote_identifier(table)}"))


def _query(bind: Engine | Connection, sql: str, **params: Any) -> list[Any]:
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return list(connection.execute(text(sql), params))
    return list(bind.execute(text(sql), params))


def tables_in(bind: Engine | Connection, schema: str) -> set[str]:
    """The names of the ordinary and partitioned tables (partitions included) in ``schema``."""
    rows = _query(
        bind,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')",
        schema=schema,
    )
    return {name for (name,) in rows}


def schema_exists(bind: Engine | Connection, schema: str) -> bool:
    rows = _query(bind, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = :schema)", schema=schema)
    return bool(rows[0][0])


def create_queue(connection: Connection, schema: str, name: str, options: dict[str, Any] | None = None) -> str:
    """Create a queue through the schema's ``create_queue`` function, as pg-boss does; return its partition.

    ``options`` uses pg-boss's JSON keys (``policy``, ``retryLimit``, ...).
    """
    quoted = quote_identifier(schema)
    connection.execute(
        text(f"SELECT {quoted}.create_queue(:name, CAST(:options AS json))"),
        {"name": name, "options": json.dumps(options or {})},
    )
    partition = connection.execute(
        text(f"SELECT partition_name FROM {quoted}.queue WHERE name = :name"), {"name": name}
    ).scalar_one()
    return str(partition)
