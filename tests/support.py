"""Helpers the test modules share: names, clean-up and catalog look-ups on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from sqla_boss import migrations
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map

ROOT = Path(__file__).resolve().parent.parent
"""The repository root."""


Run = Callable[..., tuple[int, str, str]]
"""The ``run`` fixture's function: ``run(COMMAND, ..., schema=None)`` -> (exit status, stdout, stderr)."""


def unique_name(prefix: str) -> str:
    """A fresh lower-case identifier, so tests never share a schema or a database."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def schema_sessions(engine: Engine, schema: str) -> sessionmaker[Session]:
    """Sessions whose models map to ``schema``, objects kept readable after commit: what a worker is given."""
    return sessionmaker(
        bind=engine.execution_options(schema_translate_map=schema_translate_map(schema)), expire_on_commit=False
    )


def drop_schema(engine: Engine, schema: str) -> None:
    """Drop ``schema`` and the Alembic version table of our revisions for it.

    A worker stopped without grace does not wait for its loops: one may still be running a fetch when the test
    ends. Its locks meet the drop's, and PostgreSQL may pick the drop as a deadlock's victim. So the drop waits
    at most a few seconds for a lock; failing that, it ends the other sessions that hold locks in the schema
    (the test is over, nothing of it should) and tries again, until a deadline.
    """
    deadline = time.monotonic() + 30.0
    while True:
        try:
            with engine.begin() as connection:
                connection.execute(text("SET LOCAL lock_timeout = '3s'"))
                connection.execute(text(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE"))
                for table in (migrations.version_table_name(schema), migrations.fetch_index_version_table_name(schema)):
                    connection.execute(text(f"DROP TABLE IF EXISTS public.{quote_identifier(table)}"))
            return
        except OperationalError as error:
            if getattr(error.orig, "sqlstate", None) not in ("40P01", "55P03") or time.monotonic() > deadline:
                raise
        with engine.begin() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
                    "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :schema AND l.pid <> pg_backend_pid()"
                ),
                {"schema": schema},
            )


PGBOSS_OF_VERSION = {24: 10, 46: 12}
"""The pg-boss major release whose schema each version is, as :func:`sqla_boss.migrations.upgrade` names it."""


def install_schema(engine: Engine, schema: str, version: int = 24) -> None:
    """Install pg-boss schema ``version`` (24 or 46) in ``schema`` through our migrations, committed."""
    migrations.upgrade(engine, schema=schema, pgboss=PGBOSS_OF_VERSION[version])


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


def query(engine: Engine, sql: str, **params: Any) -> list[Any]:
    """The rows of ``sql`` on a connection of its own (autocommit reads of what others committed)."""
    with engine.connect() as connection:
        return list(connection.execute(text(sql), params))


def sql(engine: Engine, statement: str, **params: Any) -> list[Any]:
    """Run ``statement`` in a transaction of its own and commit; its rows, if it returns any."""
    with engine.begin() as connection:
        result = connection.execute(text(statement), params)
        return list(result) if result.returns_rows else []


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class LoopThread:
    """An event loop of its own in a background thread, for ``AsyncWorker``\\ s running beside threaded workers
    and Node. A subclass's :meth:`run` starts what it runs, sets :attr:`started`, and returns once the stop
    event it is given is set; :meth:`stop` sets it and re-raises what went wrong in the thread."""

    def __init__(self, name: str) -> None:
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    async def run(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        if not self.started.wait(timeout):
            pytest.fail(f"{self._thread.name} did not start")
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 60) -> None:
        """Stop what runs (the subclass stops it gracefully) and the loop; re-raise what went wrong there."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.ident is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), f"{self._thread.name} did not stop"
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        try:
            asyncio.run(self._run())  # also waits for plain handlers still running in the default executor
        except BaseException as error:
            self.error = error
        finally:
            self.started.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.run(self._stop)
