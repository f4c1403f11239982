"""The models against a migrated schema: types, defaults, enums, relationships and ORM queries."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.orm import Session

from sqla_boss import migrations
from sqla_boss.models import (
    Archive,
    Base,
    Job,
    JobColumns,
    JobState,
    QueuePolicy,
    Schedule,
    Subscription,
)
from sqla_boss.testing import ArchiveFactory, JobFactory, QueueFactory, bind_factories


@pytest.fixture
def orm(session: Session) -> Session:
    bind_factories(session)
    return session


def test_job_state_members_are_the_enum_labels_in_order(connection: Connection, installed_schema: str) -> None:
    labels = connection.execute(
        text(f'SELECT unnest(enum_range(NULL::"{installed_schema}".job_state))::text')
    ).scalars()
    assert list(labels) == [state.value for state in JobState]


def test_job_state_compares_like_postgresql(connection: Connection, installed_schema: str) -> None:
    pairs = list(itertools.product(JobState, repeat=2))
    for left, right in pairs:
        in_sql = connection.execute(
            text(f'SELECT CAST(:l AS "{installed_schema}".job_state) < CAST(:r AS "{installed_schema}".job_state)'),
            {"l": left.value, "r": right.value},
        ).scalar_one()
        assert (left < right) is in_sql, (left, right)
        assert (left <= right) is (in_sql or left == right)
        assert (left > right) is (not in_sql and left != right)


def test_enums_accept_their_string_values() -> None:
    assert JobState("failed") is JobState.failed
    assert JobState.failed == "failed"
    assert JobState.created < "active" < JobState.completed
    assert QueuePolicy("stately") is QueuePolicy.stately
    assert str(QueuePolicy.short) == "short"
    with pytest.raises(ValueError, match="nope"):
        JobState("nope")
    with pytest.raises(TypeError):
        assert JobState.created < 3


def test_a_job_takes_pg_boss_defaults(orm: Session) -> None:
    queue = QueueFactory(policy="short", retry_limit=5)
    job = Job(name=queue.name)
    orm.add(job)
    orm.flush()
    orm.refresh(job)
    assert isinstance(job.id, uuid.UUID)
    assert job.state is JobState.created
    assert (job.priority, job.retry_limit, job.retry_count, job.retry_delay) == (0, 2, 0, 0)
    assert job.retry_backoff is False
    assert job.expire_in == dt.timedelta(minutes=15)
    assert job.keep_until - job.created_on == dt.timedelta(days=14)
    assert job.policy is None  # the column default; only the repository copies the queue's policy
    assert queue.policy is QueuePolicy.short
    assert job.queue is queue


def test_singleton_on_is_naive_and_expire_in_is_a_timedelta(orm: Session) -> None:
    slot = dt.datetime(2026, 1, 2, 3, 4)
    job = JobFactory(singleton_on=slot, expire_in=dt.timedelta(seconds=90))
    orm.expire(job)
    assert job.singleton_on == slot
    assert job.singleton_on.tzinfo is None
    assert job.expire_in == dt.timedelta(seconds=90)
    assert job.start_after.tzinfo is not None


def test_orm_queries_by_state_and_data(orm: Session) -> None:
    queue = QueueFactory()
    jobs = [JobFactory(name=queue.name, data={"customer": n % 2, "n": n}) for n in range(6)]
    jobs[1].state = JobState.failed
    jobs[3].state = JobState.failed
    orm.flush()

    failed = orm.scalars(select(Job).where(Job.state == JobState.failed).order_by(Job.data["n"].as_integer()))
    assert [job.data["n"] for job in failed] == [1, 3]
    queued = orm.scalar(select(func.count()).select_from(Job).where(Job.name == queue.name, Job.state < "active"))
    assert queued == 4
    by_content = orm.scalars(select(Job).where(Job.data.contains({"customer": 0})))
    assert sorted(job.data["n"] for job in by_content) == [0, 2, 4]


def test_queue_relationships(orm: Session) -> None:
    dead = QueueFactory(name="dead")
    queue = QueueFactory(name="live", dead_letter="dead", policy=QueuePolicy.stately)
    orm.add(Schedule(name="live", cron="*/5 * * * *", timezone="UTC", data={"a": 1}, options={}))
    orm.add_all([Subscription(event="order.placed", name="live"), Subscription(event="order.paid", name="live")])
    orm.flush()
    orm.expire_all()
    assert queue.dead_letter_queue is dead
    assert queue.schedule is not None
    assert queue.schedule.cron == "*/5 * * * *"
    assert sorted(subscription.event for subscription in queue.subscriptions) == [
        "order.paid",
        "order.placed",
    ]
    assert queue.partition_name is not None
    assert len(queue.partition_name) == 57


def test_archive_rows(orm: Session) -> None:
    archived = ArchiveFactory(data={"x": 1})
    orm.expire(archived)
    assert archived.archived_on is not None
    row = orm.scalars(select(Archive).where(Archive.data["x"].as_integer() == 1)).one()
    assert row.state is JobState.completed


def test_archive_shares_jobs_column_definitions_without_defaults() -> None:
    job_columns = Job.__table__.columns
    archive_columns = Archive.__table__.columns
    assert [column.name for column in archive_columns] == [*job_columns.keys(), "archived_on"]
    for column in job_columns:
        twin = archive_columns[column.name]
        assert repr(twin.type) == repr(column.type)
        assert twin.nullable == column.nullable
        assert twin.server_default is None
    assert sum(column.server_default is not None for column in job_columns) == 11
    assert issubclass(Job, JobColumns)
    assert issubclass(Archive, JobColumns)


def test_models_have_their_own_metadata() -> None:
    assert Base.metadata.schema == "pgboss"
    assert sorted(table.name for table in Base.metadata.tables.values()) == [
        "archive",
        "job",
        "queue",
        "schedule",
        "subscription",
        "version",
    ]


def test_models_match_the_migrated_database(fresh_engine: Engine) -> None:
    """Alembic's own comparison finds nothing between the models and what the migrations installed."""
    migrations.upgrade(fresh_engine)

    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        if type_ == "schema":
            return name == "pgboss"
        return not (type_ == "table" and name is not None and name.startswith("alembic_"))

    with fresh_engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": include_name,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        assert compare_metadata(context, Base.metadata) == []
