"""Helpers the ``test_boss_*`` modules share: the database clock, fresh reads, snapshots, a second connection,
and a connection of a test's own on either API."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from apis import AwaitingBoss
from sqlalchemy import Connection, Engine, extract, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only
from support import drop_schema, install_schema, unique_name

from sqla_boss import AsyncBoss, Boss, Job
from sqla_boss import models as v24_models
from sqla_boss.identifiers import quote_identifier
from sqla_boss.v46 import models as v46_models

EPOCH = dt.datetime(1970, 1, 1)
"""``timestamp 'epoch'``: the naive UTC origin of pg-boss's ``singleton_on`` slots."""

TABLES = ("queue", "job", "schedule", "subscription", "archive")
"""The pg-boss tables of version 24 whose content a snapshot covers."""

TABLES_46 = ("queue", "job", "schedule", "subscription", "job_dependency", "bam")
"""The pg-boss tables of version 46 whose content a snapshot covers (there is no archive)."""

MODELS: dict[int, Any] = {24: v24_models, 46: v46_models}
"""The models module of each schema version: ``MODELS[version].Job`` and so on."""

JOB_MODELS = (v24_models.Job, v46_models.Job)

BOTH_VERSIONS = pytest.mark.parametrize("schema_version", [24, 46], indirect=True)
"""Run a test on a schema of version 24 and on one of version 46 (the module-scoped ``schema_version`` fixture),
for what behaves the same on both; a module's one schema (:func:`one_schema_per_module`) is installed once per
version."""


def db_now(session: Session | Connection) -> dt.datetime:
    """The transaction's ``now()``: what every row written in this transaction is stamped with."""
    value = session.scalar(select(func.now()))
    assert isinstance(value, dt.datetime)
    return value


def db_epoch(session: Session | Connection) -> float:
    """The transaction's ``now()`` as epoch seconds, as the slot formula of §4.4 reads it."""
    return float(session.scalar(select(extract("epoch", func.now()))))


def load(session: Session, name: str, job_id: uuid.UUID | str | None, model: type[Any] = Job) -> Any:
    """The job's row as it is now, read through the ORM (refreshing any object the session holds); ``model``
    is the version's ``Job`` (version 24's by default)."""
    assert job_id is not None, "expected a job id, got None"
    job = session.get(model, (name, uuid.UUID(str(job_id))), populate_existing=True)
    assert job is not None, f"job {job_id} of {name!r} does not exist"
    return job


def jobs_of(session: Session, name: str, model: type[Any] = Job) -> list[Any]:
    """Every job of the queue, oldest first (then by id), refreshed; ``model`` as for :func:`load`."""
    return list(
        session.scalars(
            select(model).where(model.name == name).order_by(model.created_on, model.id),
            execution_options={"populate_existing": True},
        )
    )


def snapshot(bind: Session | Connection, schema: str) -> dict[str, str]:
    """A digest of every row of the pg-boss tables of the schema's version, plus the schema's tables (partitions
    included)."""
    quoted = quote_identifier(schema)
    has_archive = bind.scalar(text("SELECT to_regclass(:table) IS NOT NULL"), {"table": f"{quoted}.archive"})
    digests = [
        f"(SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '') "
        f"FROM {quoted}.{table} r) AS {table}"
        for table in (TABLES if has_archive else TABLES_46)
    ]
    tables = (
        "(SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')) AS tables"
    )
    row = bind.execute(text(f"SELECT {', '.join(digests)}, {tables}"), {"schema": schema}).one()
    return dict(row._mapping)


def committed_snapshot(engine: Engine, schema: str) -> dict[str, str]:
    """:func:`snapshot` as another connection sees it: only what has been committed."""
    with engine.connect() as connection:
        connection.execute(text("SET lock_timeout = '5s'"))
        return snapshot(connection, schema)


def committed_count(engine: Engine, schema: str, table: str, where: str = "true", **params: Any) -> int:
    """``count(*)`` of ``schema.table`` rows matching ``where``, from a second connection."""
    with engine.connect() as connection:
        connection.execute(text("SET lock_timeout = '5s'"))
        count = connection.execute(
            text(f"SELECT count(*) FROM {quote_identifier(schema)}.{table} WHERE {where}"), params
        ).scalar_one()
    return int(count)


def assert_usable(boss: Boss, name: str = "q") -> uuid.UUID:
    """Prove the transaction still works: send a job to ``name`` and read it back."""
    marker = {"usable": uuid.uuid4().hex}
    job_id = boss.send(name, marker)
    assert job_id is not None
    job = boss.get_job_by_id(name, job_id)
    assert isinstance(job, JOB_MODELS)
    assert job.data == marker
    return job_id


def backend_waits_for_lock(engine: Engine, pid: int) -> bool:
    """Whether the server process ``pid`` is blocked waiting for a lock."""
    with engine.connect() as connection:
        wait = connection.execute(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar()
    return wait == "Lock"


def one_schema_per_module(engine: Engine, schema_version: int) -> Iterator[str]:
    """A pg-boss schema at ``schema_version`` (24 unless the module or test says otherwise: see the
    ``schema_version`` fixture) installed once for a whole test module, dropped after it.

    For modules whose tests never commit: each test works in the ``connection`` fixture's transaction,
    which is rolled back (DDL included), so the tests stay independent while the install is paid once.
    Use it as ``installed_schema = pytest.fixture(scope="module", name="installed_schema")(one_schema_per_module)``.
    """
    name = unique_name("t")
    install_schema(engine, name, schema_version)
    try:
        yield name
    finally:
        drop_schema(engine, name)


@dataclass
class PlainConnection:
    """A connection of a test's own, not the ``connection`` fixture's, and repositories on it.

    On the ``sync`` API it is an ``engine`` connection, and :meth:`boss` is ``Boss(connection)``. On ``async``
    it is an ``AsyncConnection`` of ``async_engine``: :attr:`connection` is its sync face (usable in the test
    body, which runs in the greenlet bridge) and :meth:`boss` is ``AsyncBoss(async_connection)`` behind an
    :class:`~apis.AwaitingBoss`.
    """

    connection: Connection
    async_connection: AsyncConnection | None = None
    _owners: list[AsyncSession] = field(default_factory=list)

    def boss(self, **kwargs: Any) -> Any:
        """``Boss(connection, **kwargs)``, or ``AsyncBoss(async_connection, **kwargs)`` on ``async``."""
        if self.async_connection is None:
            return Boss(self.connection, **kwargs)
        return AwaitingBoss(AsyncBoss(self.async_connection, **kwargs))

    def session(self) -> Session:
        """A new ORM session on the connection; on ``async`` the ``sync_session`` of an ``AsyncSession``.

        The ``AsyncSession`` is kept alive here, so that the ``make_boss`` fixture finds it.
        """
        if self.async_connection is None:
            return Session(bind=self.connection)
        owner = AsyncSession(bind=self.async_connection)
        self._owners.append(owner)
        return owner.sync_session


@contextmanager
def plain_connection(
    engine: Engine, async_engine: AsyncEngine | None, **execution_options: Any
) -> Iterator[PlainConnection]:
    """A new connection of ``engine``, or of ``async_engine`` when it is given (the ``async`` API).

    Pass the ``async_engine`` fixture, which is ``None`` on ``sync``. On ``async`` this must run in the
    greenlet bridge (a test body or a function fixture); the connection is closed at the end.
    """
    if async_engine is None:
        with engine.execution_options(**execution_options).connect() as connection:
            yield PlainConnection(connection)
        return
    async_connection: AsyncConnection = await_only(async_engine.execution_options(**execution_options).connect())
    try:
        yield PlainConnection(async_connection.sync_connection, async_connection)
    finally:
        await_only(async_connection.close())
