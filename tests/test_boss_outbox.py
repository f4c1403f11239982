"""The transactional outbox: a job exists exactly when the caller's transaction commits, with its own rows.

These tests commit for real (``committing_session_factory``) and look from a second connection. They run on
``Boss`` and on ``AsyncBoss`` (the ``make_boss`` fixture); on the async API the plain-connection test uses an
``AsyncConnection``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from boss_support import BOTH_VERSIONS, JOB_MODELS, committed_count, committed_snapshot, db_now, plain_connection
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, sessionmaker

from sqla_boss import JobState, Queue
from sqla_boss.identifiers import quote_identifier


@pytest.fixture
def orders(engine: Engine, installed_schema: str) -> str:
    """The application's own business table, committed in the test schema (dropped with it)."""
    table = f"{quote_identifier(installed_schema)}.orders"
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (id integer PRIMARY KEY, item text NOT NULL)"))
    return table


@pytest.fixture
def emails(
    committing_session_factory: sessionmaker[Session], make_boss: Callable[..., Any], installed_schema: str
) -> str:
    """A committed queue named ``emails``."""
    with committing_session_factory.begin() as session:
        make_boss(session, schema=installed_schema).create_queue("emails")
    return "emails"


def _orders(engine: Engine, table: str) -> list[tuple[int, str]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(f"SELECT id, item FROM {table} ORDER BY id"))]


def _committed_job_ids(engine: Engine, schema: str, name: str) -> set[uuid.UUID]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT id FROM {quote_identifier(schema)}.job WHERE name = :name"), {"name": name}
        ).scalars()
        return set(rows)


@BOTH_VERSIONS
def test_the_job_and_the_business_row_commit_together(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    engine: Engine,
    installed_schema: str,
    orders: str,
    emails: str,
    models: ModuleType,
) -> None:
    with committing_session_factory() as session:
        boss = make_boss(session, schema=installed_schema)
        session.execute(text(f"INSERT INTO {orders} VALUES (1, 'book')"))
        job_id = boss.send(emails, {"order_id": 1})
        assert job_id is not None
        # Both exist in the transaction, neither outside it.
        assert session.get(models.Job, (emails, job_id)) is not None
        assert _orders(engine, orders) == []
        assert _committed_job_ids(engine, installed_schema, emails) == set()
        session.commit()

    assert _orders(engine, orders) == [(1, "book")]
    assert _committed_job_ids(engine, installed_schema, emails) == {job_id}
    with committing_session_factory() as reader:
        job = reader.get(models.Job, (emails, job_id))
        assert job is not None
        assert (job.data, job.state) == ({"order_id": 1}, JobState.created)


@BOTH_VERSIONS
def test_the_job_and_the_business_row_roll_back_together(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    engine: Engine,
    installed_schema: str,
    orders: str,
    emails: str,
) -> None:
    with committing_session_factory() as session:
        boss = make_boss(session, schema=installed_schema)
        session.execute(text(f"INSERT INTO {orders} VALUES (2, 'pen')"))
        job_id = boss.send(emails, {"order_id": 2})
        assert job_id is not None
        session.rollback()
        # Gone for this session too.
        assert boss.get_job_by_id(emails, job_id) is None
        assert session.execute(text(f"SELECT count(*) FROM {orders}")).scalar_one() == 0

    assert _orders(engine, orders) == []
    assert committed_count(engine, installed_schema, "job") == 0


@BOTH_VERSIONS
def test_a_rolled_back_savepoint_takes_its_jobs_and_keeps_the_others(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    engine: Engine,
    installed_schema: str,
    orders: str,
    emails: str,
    models: ModuleType,
) -> None:
    with committing_session_factory() as session:
        boss = make_boss(session, schema=installed_schema)
        session.execute(text(f"INSERT INTO {orders} VALUES (1, 'kept before')"))
        before = boss.send(emails, {"order_id": 1})

        savepoint = session.begin_nested()
        session.execute(text(f"INSERT INTO {orders} VALUES (2, 'dropped')"))
        dropped = boss.send(emails, {"order_id": 2})
        dropped_batch = boss.insert([{"name": emails, "data": {"order_id": 2, "n": n}} for n in range(3)])
        savepoint.rollback()

        def abandoned_unit_of_work() -> None:
            with session.begin_nested():  # rolled back by the exception
                job_id = boss.send(emails, {"order_id": 3})
                raise RuntimeError(f"abandon {job_id}")

        with pytest.raises(RuntimeError, match="abandon") as abandoned:
            abandoned_unit_of_work()
        dropped_too = uuid.UUID(str(abandoned.value).split()[-1])

        session.execute(text(f"INSERT INTO {orders} VALUES (4, 'kept after')"))
        after = boss.send(emails, {"order_id": 4})
        assert set(session.scalars(select(models.Job.id).where(models.Job.name == emails))) == {before, after}
        session.commit()

    assert None not in (before, dropped, dropped_too, after)
    assert len(dropped_batch) == 3
    assert _committed_job_ids(engine, installed_schema, emails) == {before, after}
    assert _orders(engine, orders) == [(1, "kept before"), (4, "kept after")]


@BOTH_VERSIONS
def test_a_committed_savepoint_keeps_its_jobs_until_the_outer_transaction_decides(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    engine: Engine,
    installed_schema: str,
    emails: str,
) -> None:
    with committing_session_factory() as session:
        boss = make_boss(session, schema=installed_schema)
        with session.begin_nested():
            inner = boss.send(emails, {"inner": True})
        assert committed_count(engine, installed_schema, "job") == 0
        session.rollback()
    assert inner is not None
    assert committed_count(engine, installed_schema, "job") == 0


@BOTH_VERSIONS
def test_boss_on_a_plain_connection_commits_with_the_connection(
    engine: Engine, async_engine: AsyncEngine | None, installed_schema: str
) -> None:
    # On the async API: AsyncBoss(async_connection) on an AsyncConnection, whose sync face is ``connection``.
    with plain_connection(engine, async_engine) as plain:
        connection = plain.connection
        with connection.begin():
            boss = plain.boss(schema=installed_schema)
            assert boss.session.get_bind() is connection
            boss.create_queue("plain")
            job_id = boss.send("plain", {"via": "connection"})
            job = boss.get_job_by_id("plain", job_id)  # type: ignore[arg-type]
            assert isinstance(job, JOB_MODELS)
            assert job.data == {"via": "connection"}
            assert job.created_on == db_now(connection)
            assert committed_count(engine, installed_schema, "queue") == 0
        assert committed_count(engine, installed_schema, "job", "id = :id", id=job_id) == 1

        # A second transaction on the same connection, rolled back: its job never appears.
        connection.begin()
        rolled_back = plain.boss(schema=installed_schema).send("plain", {"n": 2})
        assert rolled_back is not None
        connection.rollback()
    assert committed_count(engine, installed_schema, "job") == 1
    assert committed_count(engine, installed_schema, "queue", "name = 'plain'") == 1


def test_no_boss_call_commits(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    engine: Engine,
    installed_schema: str,
) -> None:
    with committing_session_factory.begin() as setup:
        setup_boss = make_boss(setup, schema=installed_schema)
        setup_boss.create_queue("work")
        setup_boss.create_queue("dlq")
        setup_boss.create_queue("stale")
        stale_id = setup_boss.send("stale", {"old": True})
    baseline = committed_snapshot(engine, installed_schema)

    with committing_session_factory() as session:
        boss = make_boss(session, schema=installed_schema)
        calls: list[str] = []

        def check(label: str) -> None:
            calls.append(label)
            assert session.in_transaction(), f"{label} ended the transaction"
            assert committed_snapshot(engine, installed_schema) == baseline, f"{label} committed something"

        boss.create_queue("fresh", policy="short")
        check("create_queue")
        boss.update_queue("work", retry_limit=4, dead_letter="dlq")
        check("update_queue")
        first = boss.send("work", {"n": 1}, retry_limit=0)
        check("send")
        boss.send_after("work", {"n": 2}, after=60)
        check("send_after")
        boss.send_throttled("work", {"n": 3}, seconds=60, key="throttled")
        check("send_throttled")
        boss.send_debounced("work", {"n": 4}, seconds=60, key="debounced")
        boss.send_debounced("work", {"n": 5}, seconds=60, key="debounced")
        check("send_debounced")
        inserted = boss.insert([{"name": "work", "data": {"n": 6}}, {"name": "work", "data": {"n": 7}}])
        check("insert")
        fetched = boss.fetch("work", batch_size=10)
        check("fetch")
        by_n = {job.data["n"]: job.id for job in fetched}
        assert sorted(by_n) == [1, 3, 4, 6, 7]
        assert boss.complete("work", by_n[3], {"done": True}) == 1
        check("complete")
        assert boss.fail("work", by_n[1], {"failed": True}) == 1  # no retry left: failed, copied to dlq
        check("fail")
        assert boss.cancel("work", by_n[4]) == 1
        check("cancel")
        assert boss.resume("work", by_n[4]) == 1
        check("resume")
        assert boss.retry("work", by_n[1]) == 1
        check("retry")
        assert boss.delete_job("work", by_n[7]) == 1
        check("delete_job")
        boss.subscribe("event", "work")
        check("subscribe")
        published = boss.publish("event", {"n": 8})
        check("publish")
        boss.unsubscribe("event", "work")
        check("unsubscribe")
        boss.subscribe("event", "work")
        boss.schedule("work", "*/5 * * * *", {"cron": True}, tz="Europe/Paris")
        check("schedule")
        boss.schedule("fresh", "0 * * * *")
        boss.unschedule("fresh")
        check("unschedule")
        assert boss.purge_queue("stale") == 1
        check("purge_queue")
        assert boss.get_queue("work") is not None
        assert len(boss.get_queues()) == 4
        assert boss.get_queue_size("work") > 0
        assert boss.get_job_by_id("work", first) is not None  # type: ignore[arg-type]
        assert len(boss.get_schedules()) == 1
        check("the getters")
        assert calls[-1] == "the getters"
        session.commit()

    assert len(inserted) == 2
    assert len(published) == 1
    after = committed_snapshot(engine, installed_schema)
    assert after != baseline
    assert committed_count(engine, installed_schema, "queue") == 4
    assert committed_count(engine, installed_schema, "job", "name = 'work'") == 7
    assert committed_count(engine, installed_schema, "job", "name = 'dlq'") == 1
    assert committed_count(engine, installed_schema, "job", "name = 'stale' AND id = :id", id=stale_id) == 0
    assert committed_count(engine, installed_schema, "schedule") == 1
    assert committed_count(engine, installed_schema, "subscription") == 1


def test_delete_queue_does_not_commit_and_locks_the_job_and_queue_tables_until_the_end(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    engine: Engine,
    installed_schema: str,
) -> None:
    with committing_session_factory.begin() as setup:
        make_boss(setup, schema=installed_schema).create_queue("doomed")
        partition = setup.scalars(select(Queue.partition_name).where(Queue.name == "doomed")).one()

    def partition_exists() -> bool:
        with engine.connect() as observer:  # the catalog takes no table locks
            return bool(
                observer.execute(
                    text("SELECT count(*) FROM pg_class WHERE relname = :name"), {"name": partition}
                ).scalar_one()
            )

    with committing_session_factory() as session:
        boss = make_boss(session, schema=installed_schema)
        assert boss.delete_queue("doomed") is True
        assert session.in_transaction()
        assert partition_exists()
        # DROP TABLE of a partition holds ACCESS EXCLUSIVE on job and queue: every reader waits.
        for table in ("job", "queue"):
            with engine.connect() as observer:
                observer.execute(text("SET lock_timeout = '50ms'"))
                with pytest.raises(OperationalError, match="lock timeout"):
                    observer.execute(text(f"SELECT count(*) FROM {quote_identifier(installed_schema)}.{table}"))
        session.commit()
    assert not partition_exists()
    assert committed_count(engine, installed_schema, "queue", "name = 'doomed'") == 0
