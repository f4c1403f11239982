"""The testing kit's pytest plugin: a session per test that always rolls back, and a guard against commits.

Installed with sqla_boss (entry point ``pytest11``), it is active in every pytest run, and does nothing for
tests that request none of its fixtures:

* ``sqla_boss_database_url`` (session): ``$DATABASE_URL`` (``postgresql://`` or ``postgresql+psycopg://``),
  else an embedded PostgreSQL started for the run (``pip install "sqla-boss[embedded]"``); override the
  fixture in your ``conftest.py`` to take the URL from elsewhere;
* ``sqla_boss_schema`` (session): the pg-boss schema, from the ini option ``sqla_boss_schema`` (default
  ``pgboss``), installed or adopted once per run by :func:`sqla_boss.migrations.upgrade` (committed), at the
  version of the ini option ``sqla_boss_pgboss``: ``10`` (schema version 24) or ``12`` (version 46); unset,
  a new schema gets version 24 and an installed one keeps its version;
* ``sqla_boss_engine`` (session): a plain ``Engine`` on that database;
* ``boss_session``: a ``Session`` on a connection whose transaction is rolled back after the test, whatever
  the test commits (SQLAlchemy's "join a session into an external transaction" recipe: its ``commit()``
  releases a savepoint), with the models pointed at the schema and the factories bound to it;
* ``boss``: ``Boss(boss_session, schema)``;
* ``async_boss_session`` / ``async_boss``: the same on ``AsyncSession`` / ``AsyncBoss`` (needs
  pytest-asyncio; mark the tests ``@pytest.mark.asyncio``, or set ``asyncio_mode = auto``);
* ``sqla_boss_commit_guard``: requested by both sessions. Jobs **committed** to the schema while the test
  ran (by code that used a connection of its own, so they escape the rollback) fail the test, listed, and
  are deleted afterwards. ``@pytest.mark.sqla_boss_allow_commits`` turns the guard off for a test.

The guard looks for jobs created, and committed, since the test's set-up began: the schema must serve one
test process at a time (give each pytest-xdist worker a database of its own).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import URL, Engine, delete, func, select, text, tuple_
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from sqla_boss import embedded, migrations
from sqla_boss.async_boss import AsyncBoss
from sqla_boss.boss import Boss
from sqla_boss.database import create_sync_engine, url_from_env
from sqla_boss.errors import EmbeddedPostgresUnavailableError, InvalidOptionError, InvalidSchemaNameError
from sqla_boss.identifiers import DEFAULT_SCHEMA, validate_schema_name
from sqla_boss.models import Job
from sqla_boss.schema import DEFAULT_PGBOSS, PGBOSS_MAJORS, inspect_schema, pgboss_major, schema_translate_map

ALLOW_COMMITS = "sqla_boss_allow_commits"
"""The marker that turns the commit guard off for a test."""

SCHEMA_INI = "sqla_boss_schema"
"""The ini option naming the pg-boss schema of the fixtures."""
PGBOSS_INI = "sqla_boss_pgboss"
"""The ini option naming the pg-boss release whose schema version the fixtures install: 10 or 12."""

LISTED = 20
"""How many committed jobs the guard's message lists."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(SCHEMA_INI, f"sqla_boss: the pg-boss schema of the kit's fixtures (default {DEFAULT_SCHEMA})")
    parser.addini(
        PGBOSS_INI,
        "sqla_boss: 10 (schema version 24) or 12 (version 46); unset, a new schema gets 24, an installed one stays",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{ALLOW_COMMITS}: sqla_boss: the test may commit jobs (the kit's commit guard neither fails it nor "
        "deletes them)",
    )


# ---------------------------------------------------------------------------------------------- database


@pytest.fixture(scope="session")
def sqla_boss_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """``$DATABASE_URL``, normalised to psycopg 3, else an embedded PostgreSQL started once for the run."""
    configured = url_from_env()
    if configured is not None:
        yield configured
        return
    try:
        server = embedded.start(tmp_path_factory.mktemp("sqla_boss_embedded") / "pgdata", delete=True)
    except EmbeddedPostgresUnavailableError as error:
        pytest.fail(f"sqla_boss: DATABASE_URL is unset, and {error}", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqla_boss_engine(sqla_boss_database_url: URL) -> Iterator[Engine]:
    """An ``Engine`` on the test database (no schema translation of its own), disposed after the run."""
    engine = create_sync_engine(sqla_boss_database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqla_boss_schema(request: pytest.FixtureRequest, sqla_boss_engine: Engine) -> str:
    """The pg-boss schema named by the ini option ``sqla_boss_schema`` (default ``pgboss``), installed or
    adopted (committed) once per run; left in place afterwards."""
    configured = str(request.config.getini(SCHEMA_INI) or DEFAULT_SCHEMA).strip()
    try:
        schema = validate_schema_name(configured)
    except InvalidSchemaNameError as error:
        pytest.fail(f"sqla_boss: the ini option {SCHEMA_INI} = {configured!r}: {error}", pytrace=False)
    pgboss_text = str(request.config.getini(PGBOSS_INI) or "").strip()
    try:
        pgboss = pgboss_major(pgboss_text) if pgboss_text else _installed_major(sqla_boss_engine, schema)
    except InvalidOptionError as error:
        pytest.fail(f"sqla_boss: the ini option {PGBOSS_INI} = {pgboss_text!r}: {error}", pytrace=False)
    migrations.upgrade(sqla_boss_engine, schema=schema, pgboss=pgboss)
    return schema


def _installed_major(engine: Engine, schema: str) -> int:
    """The pg-boss release whose schema version ``schema`` holds (12 for 46), else the default, 10."""
    with engine.connect() as connection:
        _, version = inspect_schema(connection, schema)
    return next((major for major, number in PGBOSS_MAJORS.items() if number == version), DEFAULT_PGBOSS)


# ------------------------------------------------------------------------------------------------ sessions


@pytest.fixture
def boss_session(
    sqla_boss_engine: Engine, sqla_boss_schema: str, sqla_boss_commit_guard: CommitGuard | None
) -> Iterator[Session]:
    """A ``Session`` in a transaction that is rolled back after the test; its ``commit()`` and ``rollback()``
    only end savepoints. The models point at the kit's schema, and the factories build in this session."""
    with sqla_boss_engine.connect() as connection:
        connection.execution_options(schema_translate_map=schema_translate_map(sqla_boss_schema))
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            with _factories_bound(session):
                yield session
        finally:
            session.close()
            transaction.rollback()


@pytest.fixture
def boss(boss_session: Session, sqla_boss_schema: str) -> Boss:
    """``Boss(boss_session, schema)``: everything it writes is rolled back after the test."""
    return Boss(boss_session, sqla_boss_schema)


async def _async_boss_session(
    sqla_boss_database_url: URL, sqla_boss_schema: str, sqla_boss_commit_guard: CommitGuard | None
) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` in a transaction rolled back after the test, as ``boss_session``
    (``expire_on_commit=False``). Call the factories through ``await session.run_sync(lambda _: ...)``."""
    engine = create_async_engine(sqla_boss_database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(schema_translate_map=schema_translate_map(sqla_boss_schema))
            transaction = await connection.begin()
            session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
            try:
                with _factories_bound(session.sync_session):
                    yield session
            finally:
                await session.close()
                await transaction.rollback()
    finally:
        await engine.dispose()


def _async_unavailable() -> None:
    pytest.fail(
        "sqla_boss: the async_boss_session and async_boss fixtures need pytest-asyncio: "
        'pip install pytest-asyncio (or "sqla-boss[dev]"), and mark the tests @pytest.mark.asyncio',
        pytrace=False,
    )


async_boss_session: Any
try:
    import pytest_asyncio
except ImportError:  # the async fixtures say what to install when a test asks for them
    async_boss_session = pytest.fixture(name="async_boss_session")(_async_unavailable)
else:
    async_boss_session = pytest_asyncio.fixture(name="async_boss_session")(_async_boss_session)


@pytest.fixture
def async_boss(async_boss_session: AsyncSession, sqla_boss_schema: str) -> AsyncBoss:
    """``AsyncBoss(async_boss_session, schema)``: everything it writes is rolled back after the test."""
    return AsyncBoss(async_boss_session, sqla_boss_schema)


def _factories() -> ModuleType | None:
    try:
        from sqla_boss.testing import factories
    except ImportError:  # factory-boy is not installed: there is nothing to bind
        return None
    return factories


@contextmanager
def _factories_bound(session: Session) -> Iterator[None]:
    factories = _factories()
    if factories is None:
        yield
        return
    previous = factories.bound_session()
    factories.bind_factories(session)
    try:
        yield
    finally:
        factories.bind_factories(previous)


# --------------------------------------------------------------------------------------------- the guard


@dataclass
class CommitGuard:
    """Finds the jobs committed to ``schema`` since ``since``, through connections of its own."""

    engine: Engine
    schema: str
    since: dt.datetime
    reported: set[tuple[str, uuid.UUID]] = field(default_factory=set)

    @classmethod
    def start(cls, engine: Engine, schema: str) -> CommitGuard:
        with engine.connect() as connection:
            since = connection.execute(select(func.clock_timestamp())).scalar_one()
        return cls(engine, schema, since)

    def committed(self, lock_timeout: str) -> list[Any]:
        """The jobs committed since the start: name, id, state, data. Waits at most ``lock_timeout`` for
        locks (a test's open transaction may hold one on ``job``: dropping a queue does)."""
        statement = (
            select(Job.name, Job.id, Job.state, Job.data)
            .where(Job.created_on >= self.since)
            .order_by(Job.created_on, Job.name, Job.id)
        )
        with self.engine.connect() as connection, connection.begin():
            connection.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
            options = {"schema_translate_map": schema_translate_map(self.schema)}
            return list(connection.execute(statement, execution_options=options))

    def check(self) -> str | None:
        """After the test's call: the failure message for jobs committed meanwhile, else ``None`` (also when
        locks the test's transaction holds keep the guard from looking: the teardown looks again)."""
        try:
            rows = self.committed("1s")
        except OperationalError:
            return None
        if not rows:
            return None
        self.reported.update((row.name, row.id) for row in rows)
        return self.message(rows, "are deleted after the test")

    def finish(self) -> str | None:
        """After the test's sessions rolled back: delete the jobs committed since the start; the failure
        message for those no check has reported, else ``None``."""
        rows = self.committed("5s")
        if not rows:
            return None
        keys = [(row.name, row.id) for row in rows]
        with self.engine.connect() as connection, connection.begin():
            connection.execute(text("SET LOCAL lock_timeout = '5s'"))
            options = {"schema_translate_map": schema_translate_map(self.schema)}
            connection.execute(delete(Job).where(tuple_(Job.name, Job.id).in_(keys)), execution_options=options)
        fresh = [row for row in rows if (row.name, row.id) not in self.reported]
        return self.message(fresh, "have been deleted") if fresh else None

    def message(self, rows: Sequence[Any], fate: str) -> str:
        lines = [
            f"sqla_boss: {len(rows)} job(s) were COMMITTED to schema {self.schema!r} while this test ran, outside "
            "the test's transaction (which the kit always rolls back):"
        ]
        lines += [f"  - queue {row.name!r}, id {row.id}, state {row.state.value}, data {row.data!r}" for row in rows]
        lines = lines[: LISTED + 1]
        if len(rows) > LISTED:
            lines.append(f"  ... and {len(rows) - LISTED} more")
        lines.append(
            "The code under test committed them through a connection of its own (an engine or sessionmaker of "
            "its own?), so they would outlive the test and leak into the next ones. Run it on the test's "
            "session (the boss_session or async_boss_session fixture), or mark the test "
            f"@pytest.mark.{ALLOW_COMMITS} if it means to commit (and clean up after itself). These jobs {fate}."
        )
        return "\n".join(lines)


_GUARD = pytest.StashKey[CommitGuard]()


@pytest.fixture
def sqla_boss_commit_guard(
    request: pytest.FixtureRequest, sqla_boss_engine: Engine, sqla_boss_schema: str
) -> Iterator[CommitGuard | None]:
    """Fails the test when jobs were committed to the schema while it ran, and deletes them afterwards
    (``None``, and no check, under ``@pytest.mark.sqla_boss_allow_commits``). The session fixtures request
    it; it is set up before them and torn down after their rollback."""
    if request.node.get_closest_marker(ALLOW_COMMITS) is not None:
        yield None
        return
    guard = CommitGuard.start(sqla_boss_engine, sqla_boss_schema)
    request.node.stash[_GUARD] = guard
    try:
        yield guard
    finally:
        del request.node.stash[_GUARD]
    message = guard.finish()
    if message is not None:
        pytest.fail(message, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Run the guard of a test that has one right after the test: committed jobs fail it there. A test that
    failed already keeps its own failure, with the guard's findings as a report section."""
    guard = item.stash.get(_GUARD, None)
    if guard is None:
        return (yield)
    try:
        result = yield
    except (Exception, pytest.fail.Exception):
        found = guard.check()
        if found is not None:
            item.add_report_section("call", "sqla_boss", found)
        raise
    found = guard.check()
    if found is not None:
        pytest.fail(found, pytrace=False)
    return result


__all__ = [
    "ALLOW_COMMITS",
    "SCHEMA_INI",
    "CommitGuard",
    "async_boss",
    "async_boss_session",
    "boss",
    "boss_session",
    "sqla_boss_commit_guard",
    "sqla_boss_database_url",
    "sqla_boss_engine",
    "sqla_boss_schema",
]
