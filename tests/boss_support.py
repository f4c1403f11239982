"""Helpers the ``test_boss_*`` modules share: the database clock, fresh reads, snapshots, a second connection."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, Engine, extract, func, select, text
from sqlalchemy.orm import Session
from support import drop_schema, unique_name

from sqla_boss import Boss, Job, migrations
from sqla_boss.identifiers import quote_identifier

EPOCH = dt.datetime(1970, 1, 1)
"""``timestamp 'epoch'``: the naive UTC origin of pg-boss's ``singleton_on`` slots."""

TABLES = ("queue", "job", "schedule", "subscription", "archive")
"""The pg-boss tables whose content a snapshot covers."""


def db_now(session: Session | Connection) -> dt.datetime:
    """The transaction's ``now()``: what every row written in this transaction is stamped with."""
    value = session.scalar(select(func.now()))
    assert isinstance(value, dt.datetime)
    return value


def db_epoch(session: Session | Connection) -> float:
    """The transaction's ``now()`` as epoch seconds, as the slot formula of §4.4 reads it."""
    return float(session.scalar(select(extract("epoch", func.now()))))


def load(session: Session, name: str, job_id: uuid.UUID | str | None) -> Job:
    """The job's row as it is now, read through the ORM (refreshing any object the session holds)."""
    assert job_id is not None, "expected a job id, got None"
    job = session.get(Job, (name, uuid.UUID(str(job_id))), populate_existing=True)
    assert job is not None, f"job {job_id} of {name!r} does not exist"
    return job


def jobs_of(session: Session, name: str) -> list[Job]:
    """Every job of the queue, oldest first (then by id), refreshed."""
    return list(
        session.scalars(
            select(Job).where(Job.name == name).order_by(Job.created_on, Job.id),
            execution_options={"populate_existing": True},
        )
    )


def snapshot(bind: Session | Connection, schema: str) -> dict[str, str]:
    """A digest of every row of the pg-boss tables, plus the schema's tables (partitions included), in one query."""
    quoted = quote_identifier(schema)
    digests = [
        f"(SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '') "
        f"FROM {quoted}.{table} r) AS {table}"
        for table in TABLES
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
    assert isinstance(job, Job)
    assert job.data == marker
    return job_id


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def backend_waits_for_lock(engine: Engine, pid: int) -> bool:
    """Whether the server process ``pid`` is blocked waiting for a lock."""
    with engine.connect() as connection:
        wait = connection.execute(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar()
    return wait == "Lock"


def one_schema_per_module(engine: Engine) -> Iterator[str]:
    """A pg-boss schema installed once for a whole test module, dropped after it.

    For modules whose tests never commit: each test works in the ``connection`` fixture's transaction,
    which is rolled back (DDL included), so the tests stay independent while the install is paid once.
    Use it as ``installed_schema = pytest.fixture(scope="module", name="installed_schema")(one_schema_per_module)``.
    """
    name = unique_name("t")
    migrations.upgrade(engine, schema=name)
    try:
        yield name
    finally:
        drop_schema(engine, name)
