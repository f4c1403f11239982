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

from sqla_boss.binding import bind_session, expire_stale, pool_of, read_result
from sqla_boss.identifiers import validate_schema_name
from sqla_boss.operations import Expire, Operation, Step, verify_schema
from sqla_boss.schema import schema_translate_map

T = TypeVar("T")

_VERIFIED: weakref.WeakKeyDictionary[object, set[str]] = weakref.WeakKeyDictionary()
"""The schemas whose version was checked, by connection pool."""


class AsyncDriver:
    """Runs operations on one pg-boss schema, each in the transaction of the session (or connection) it is
    given. It holds no session of its own, so one driver serves a repository, a worker or maintenance for
    their whole life. Never commits.

    Args:
        schema: the pg-boss schema every statement is translated to.

    Raises:
        InvalidSchemaNameError: ``schema`` is not a name pg-boss can use.
    """

    def __init__(self, schema: str) -> None:
        self.schema = validate_schema_name(schema)
        """The pg-boss schema the statements run in."""
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
                verified = _VERIFIED.setdefault(pool_of(bind), set())
                if self.schema not in verified:
                    await self._steps(bind, verify_schema(self.schema), connection)
                    verified.add(self.schema)
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
        async with bind.begin_nested():
            return await self._execute(bind, connection, step)

    async def _execute(
        self, bind: AsyncSession | AsyncConnection, connection: AsyncConnection | None, step: Step
    ) -> Any:
        if step.result == "entities":
            if not isinstance(bind, AsyncSession):
                raise TypeError("a step that loads ORM objects needs a session")
            bind_session(bind, self.schema)  # the ORM objects refresh in this schema
            return (await bind.scalars(step.statement, step.params, execution_options=self._entity_options)).all()
        # Core statements go to the connection, in its transaction, past the ORM's execution layer (a
        # measurable part of a single send); a session's pending changes are flushed first, as
        # Session.execute would, so they reach the database in the order they were made.
        if connection is None:
            if isinstance(bind, AsyncSession):
                if bind.autoflush:
                    await bind.flush()
                connection = await bind.connection()
            else:
                connection = bind
        result = await connection.execute(step.statement, step.params, execution_options=self.execution_options)
        return read_result(result, step)


__all__ = ["AsyncDriver"]
