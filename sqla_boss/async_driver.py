"""``AsyncDriver``: where the repository's operations meet the database, on an ``AsyncSession``.

An operation (:mod:`sqla_boss.operations`) validates its input and yields the statements to run; the driver
runs them in the caller's transaction and sends the results back. Everything sqla_boss executes at run time
goes through it: the repository, the workers, maintenance and the testing kit.
"""

from __future__ import annotations

import weakref
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.util import greenlet_spawn

from sqla_boss.binding import bind_session, expire_stale, pool_of, read_result
from sqla_boss.direct import (
    DirectStatement,
    autocommitting,
    direct_statement,
    sync_connection,
    untouched_transaction,
)
from sqla_boss.flavours import ASYNC
from sqla_boss.identifiers import validate_schema_name
from sqla_boss.operations import Expire, Operation, Step, verify_schema
from sqla_boss.schema import SUPPORTED_VERSIONS, schema_translate_map

T = TypeVar("T")

_VERIFIED: weakref.WeakKeyDictionary[object, dict[str, int]] = weakref.WeakKeyDictionary()
"""The version of each schema checked, by connection pool."""


class AsyncDriver:
    """Runs operations on one pg-boss schema, each in the transaction of the session (or connection) it is
    given. It holds no session of its own, so one driver serves a repository, a worker or maintenance for
    their whole life. Never commits.

    Args:
        schema: the pg-boss schema every statement is translated to.
        runs: the schema versions the caller has statements for (the repository: 24 and 46).

    Raises:
        InvalidSchemaNameError: ``schema`` is not a name pg-boss can use.
    """

    def __init__(self, schema: str, runs: tuple[int, ...] = SUPPORTED_VERSIONS) -> None:
        self.schema = validate_schema_name(schema)
        """The pg-boss schema the statements run in."""
        self.runs = runs
        """The schema versions this driver's caller runs on; the first run checks the schema holds one."""
        self.execution_options: dict[str, Any] = {"schema_translate_map": schema_translate_map(schema)}
        """The options every statement runs with: the translation of the models to :attr:`schema`."""
        self._entity_options = {**self.execution_options, "populate_existing": True}

    async def run(
        self,
        bind: AsyncSession | AsyncConnection,
        operation: Operation[T],
        *,
        connection: AsyncConnection | None = None,
    ) -> T:
        """Run ``operation`` to its end in ``bind``'s transaction and return its value.

        ``bind`` is a session, or a connection when no step loads ORM objects. Core statements go to
        ``connection`` when it is given (the connection the session is bound to: one layer less), else to
        ``bind``'s connection, after the session's pending changes are flushed, as ``Session.execute`` would.

        Does not commit. A step run in a savepoint that fails with ``IntegrityError`` is rolled back to it and
        the error thrown into the operation, so the transaction stays usable; any other error propagates, and
        the transaction is the caller's to roll back. Locks what the operation's statements lock.

        The first run on a connection pool and schema checks that the schema holds a pg-boss version this
        release runs, and remembers it for the pool's life (two reads that cannot fail).

        Raises:
            SchemaNotInstalledError, SchemaVersionError: the schema is not one to run on; nothing was written.
        """
        return await self._steps(bind, operation, connection, verify=True)

    async def version(self, bind: AsyncSession | AsyncConnection, *, connection: AsyncConnection | None = None) -> int:
        """The schema's pg-boss version, read once per connection pool (two reads that cannot fail), in
        ``bind``'s transaction. Does not commit; takes no locks.

        Raises:
            SchemaNotInstalledError, SchemaVersionError: the schema is not at a version of :attr:`runs`.
        """
        verified = _VERIFIED.setdefault(pool_of(bind), {})
        version = verified.get(self.schema)
        if version not in self.runs:
            version = verified[self.schema] = await self._steps(bind, verify_schema(self.schema, self.runs), connection)
        return version

    async def _steps(
        self,
        bind: AsyncSession | AsyncConnection,
        operation: Operation[T],
        connection: AsyncConnection | None,
        *,
        verify: bool = False,
    ) -> T:
        try:
            step = next(operation)  # the operation validates its input first: bad input never reaches SQL
            if verify:
                verified = _VERIFIED.setdefault(pool_of(bind), {})
                if verified.get(self.schema) not in self.runs:
                    verified[self.schema] = await self._steps(bind, verify_schema(self.schema, self.runs), connection)
            while True:
                if isinstance(step, Expire):
                    if isinstance(bind, AsyncSession):
                        expire_stale(bind, step)
                    step = operation.send(None)
                    continue
                try:
                    result = await self._perform(bind, connection, step)
                except IntegrityError as exc:
                    if not step.savepoint:
                        raise
                    step = operation.throw(exc)
                else:
                    step = operation.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value

    async def _perform(
        self, bind: AsyncSession | AsyncConnection, connection: AsyncConnection | None, step: Step
    ) -> Any:
        if not step.savepoint:
            return await self._execute(bind, connection, step)
        current = await self._connection(bind, connection)
        if autocommitting(current):
            # The statement is a transaction of its own (and a SAVEPOINT an error there): a failure undoes it
            # alone, as rolling back to a savepoint would.
            return await self._execute(bind, connection, step)
        raw = untouched_transaction(current)
        if raw is None:
            async with bind.begin_nested():
                return await self._execute(bind, connection, step)
        # Nothing has run in this transaction yet: rolling it back undoes the step alone, as rolling back to a
        # savepoint would, without the round trips of SAVEPOINT and RELEASE. The caller's transaction goes on
        # (psycopg begins the next one with the next statement).
        try:
            return await self._execute(bind, connection, step)
        except IntegrityError:
            await raw.rollback()
            raise

    async def _connection(
        self, bind: AsyncSession | AsyncConnection, connection: AsyncConnection | None
    ) -> AsyncConnection:
        """The connection Core statements run on: ``connection``, or ``bind``'s once a session's pending changes
        are flushed, as ``Session.execute`` would, so they reach the database in the order they were made."""
        if connection is not None:
            return connection
        if isinstance(bind, AsyncSession):
            if bind.autoflush:
                await bind.flush()
            return await bind.connection()
        return bind

    async def _execute(
        self, bind: AsyncSession | AsyncConnection, connection: AsyncConnection | None, step: Step
    ) -> Any:
        if step.result == "entities":
            if not isinstance(bind, AsyncSession):
                raise TypeError("a step that loads ORM objects needs a session")
            bind_session(bind, self.schema)  # the ORM objects refresh in this schema
            return (await bind.scalars(step.statement, step.params, execution_options=self._entity_options)).all()
        # Core statements go to the connection, in its transaction, past the ORM's execution layer (a
        # measurable part of a single send), and past SQLAlchemy's when nothing can tell (sqla_boss.direct).
        connection = await self._connection(bind, connection)
        direct = direct_statement(connection, step.statement, self.schema)
        if direct is None:
            result = await connection.execute(step.statement, step.params, execution_options=self.execution_options)
            return read_result(result, step)
        return await _run_direct(connection, *direct, step)


async def _run_direct(connection: AsyncConnection, statement: DirectStatement, raw: Any, step: Step) -> Any:
    """Run ``statement`` on psycopg's connection ``raw``, under ``connection`` (see :mod:`sqla_boss.direct`)."""
    params = statement.parameters(step.params)
    cursor = None
    try:
        cursor = await raw.execute(statement.sql, params)
        if step.result == "rowcount":
            return cursor.rowcount
        if step.result == "scalar":
            row = await cursor.fetchone()
            return None if row is None else row[0]
        return await cursor.fetchall()
    except BaseException as exc:
        # SQLAlchemy's own handling: wraps the error, invalidates a broken connection, calls handle_error.
        sync = sync_connection(connection)
        if ASYNC:
            await greenlet_spawn(sync._handle_dbapi_exception, exc, statement.compiled.string, params, cursor, None)
        else:
            sync._handle_dbapi_exception(exc, statement.compiled.string, params, cursor, None)
        raise


__all__ = ["AsyncDriver"]
