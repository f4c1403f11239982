"""The driver's short way to the database: a Core step's statement run on psycopg's own connection.

SQLAlchemy's execute path (the compiled cache's lookup, the execution context, the result's set-up) costs more
Python than a single send spends anywhere else. For a step that cannot tell the difference, the driver runs
the statement compiled here, once per dialect and schema, straight on the psycopg connection underneath the
caller's SQLAlchemy connection, in the same transaction. It can tell the difference, and the driver takes
SQLAlchemy's way, when:

- the driver is not psycopg (sync or async): asyncpg, psycopg2 and the others go through SQLAlchemy; nor is
  it when sync code runs on an async engine (``AsyncSession.run_sync``);
- the engine echoes, or a listener of the connection or its engine waits for ``before_execute``,
  ``after_execute``, ``before_cursor_execute`` or ``after_cursor_execute`` (logging, tracing, statement
  counters): they see every statement;
- SQLAlchemy has not begun the connection's transaction (a bare ``Connection`` before its first statement),
  so that its ``commit()`` commits what the step wrote;
- a column of the result needs SQLAlchemy's conversion (an enum, say), the statement expands parameters at
  run time, or the step loads ORM objects.

Errors stay SQLAlchemy's: psycopg's exception goes to the connection, which wraps it (``IntegrityError``,
``OperationalError``...), invalidates a connection that broke and calls the ``handle_error`` listeners, as when
it runs a statement itself. Nothing here does I/O.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import Compiled
from sqlalchemy.ext.asyncio import AsyncConnection

from sqla_boss.identifiers import DEFAULT_SCHEMA

_EVENTS = ("before_execute", "after_execute", "before_cursor_execute", "after_cursor_execute")


@dataclass(frozen=True)
class DirectStatement:
    """A statement compiled for one dialect and schema: its SQL, and how its parameters are made."""

    sql: bytes
    """The SQL with psycopg's ``%(name)s`` placeholders and the schema written in."""
    compiled: Compiled
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    """The bind processors SQLAlchemy would run on the parameters (booleans, enums, arrays)."""

    def parameters(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters as psycopg takes them: every bind of the statement, processed as SQLAlchemy would.

        Raises:
            sqlalchemy.exc.InvalidRequestError: a parameter the statement needs is missing (a bug).
        """
        values = self.compiled.construct_params(params)
        assert values is not None  # None only for a compiled DDL
        for name, process in self.processors:
            if name in values:
                values[name] = process(values[name])
        return dict(values)


_COMPILED: weakref.WeakKeyDictionary[Dialect, dict[tuple[Executable, str], DirectStatement | None]] = (
    weakref.WeakKeyDictionary()
)


def _compile(statement: Executable, schema: str, dialect: Dialect) -> DirectStatement | None:
    """``statement`` compiled with ``schema`` written in, or ``None`` if only SQLAlchemy may run it."""
    compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, schema_translate_map={DEFAULT_SCHEMA: schema}, render_schema_translate=True
    )
    if compiled.literal_execute_params or compiled.post_compile_params:
        return None  # the SQL changes with the parameters
    for column in getattr(compiled, "_result_columns", ()):
        if column[3]._cached_result_processor(dialect, None) is not None:
            return None  # SQLAlchemy converts this column's values
    processors = tuple(compiled._bind_processors.items())
    return DirectStatement(compiled.string.encode(), compiled, processors)


def direct_statement(
    connection: Connection | AsyncConnection, statement: Executable, schema: str
) -> tuple[DirectStatement, Any] | None:
    """The compiled ``statement`` and the psycopg connection to run it on, or ``None`` when the step must go
    through SQLAlchemy (see the module's docstring). The caller reads the result itself and sends psycopg's
    errors to :func:`sync_connection` ``(connection)._handle_dbapi_exception``. No I/O."""
    found = _psycopg_under(connection)
    if found is None:
        return None
    sync, raw = found
    if sync.engine.echo:
        return None
    if (sync._has_events or sync.engine._has_events) and any(getattr(sync.dispatch, name) for name in _EVENTS):
        return None  # someone listens to the statements (the flags stay set after a listener is removed)
    if not sync.in_transaction() and not raw.autocommit:
        return None
    try:
        by_statement = _COMPILED[sync.dialect]
    except KeyError:
        by_statement = _COMPILED.setdefault(sync.dialect, {})
    key = (statement, schema)
    try:
        compiled = by_statement[key]
    except KeyError:
        compiled = by_statement[key] = _compile(statement, schema, sync.dialect)
    return None if compiled is None else (compiled, raw)


def untouched_transaction(connection: Connection | AsyncConnection) -> Any | None:
    """psycopg's connection under ``connection`` when SQLAlchemy has begun a transaction in which no statement
    has run yet (psycopg has not even sent ``BEGIN``), else ``None``. Rolling that transaction back loses
    nothing of the caller's. No I/O."""
    found = _psycopg_under(connection)
    if found is None:
        return None
    sync, raw = found
    return raw if sync.in_transaction() and begins(raw) else None


def autocommitting(connection: Connection | AsyncConnection) -> bool:
    """Whether ``connection`` runs each statement as a transaction of its own (``isolation_level="AUTOCOMMIT"``,
    on the connection, its engine's options or the engine itself). No I/O."""
    sync = sync_connection(connection)
    check = getattr(sync, "_is_autocommit_isolation", None)  # SQLAlchemy's own test, where it has one
    if check is not None:
        return bool(check())
    return sync.get_execution_options().get("isolation_level") == "AUTOCOMMIT"


def _psycopg_under(connection: Connection | AsyncConnection) -> tuple[Connection, Any] | None:
    """The SQLAlchemy ``Connection`` and the psycopg connection under it, when it is open, valid, psycopg's, and
    of the caller's flavour: a sync ``Connection`` of an async engine (the ORM's ``run_sync``) holds psycopg's
    ``AsyncConnection``, which sync code cannot call."""
    sync = sync_connection(connection)
    if sync.closed or sync.invalidated:
        return None
    dialect = sync.dialect
    if dialect.driver != "psycopg" or bool(dialect.is_async) != isinstance(connection, AsyncConnection):
        return None
    return sync, sync.connection.driver_connection


def begins(raw: Any) -> bool:
    """Whether psycopg will send ``BEGIN`` before the next statement (psycopg's connection ``raw`` is in a
    transaction that has not started yet)."""
    return not raw.autocommit and raw.info.transaction_status == TransactionStatus.IDLE


def sync_connection(connection: Connection | AsyncConnection) -> Connection:
    """The SQLAlchemy ``Connection`` itself, or the one an ``AsyncConnection`` runs on."""
    if isinstance(connection, AsyncConnection):
        sync = connection.sync_connection
        assert sync is not None
        return sync
    return connection


__all__ = [
    "DirectStatement",
    "autocommitting",
    "begins",
    "direct_statement",
    "sync_connection",
    "untouched_transaction",
]
