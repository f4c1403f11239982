"""Queues on schema version 46 (PGBOSS12.md §1.15, §3): create, update, delete, the job deletes and the live
counts, with exact ``queue`` rows."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest
from boss46_support import (  # noqa: F401  (the module's fixtures)
    DAY,
    JOB,
    QUEUE,
    fresh_job,
    fresh_queue,
    in_state,
    installed_schema_46,
    job_row,
    queue_row,
    schema_version_46,
    set_job,
)
from boss_support import assert_usable, db_now, snapshot
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import ObjectDeletedError

from sqla_boss import Boss, JobState
from sqla_boss.errors import (
    DeadLetterQueueNotFoundError,
    InvalidOptionError,
    QueueInUseError,
    QueueNotFoundError,
    SqlaBossError,
    UnsupportedOperationError,
)
from sqla_boss.identifiers import quote_identifier
from sqla_boss.v46.models import Queue, QueuePolicy

EVERY_SETTING: dict[str, Any] = {
    "policy": "short",
    "retry_limit": 3,
    "retry_delay": 4,
    "retry_backoff": True,
    "retry_delay_max": 50,
    "expire_in_seconds": 60,
    "retention_seconds": 100,
    "delete_after_seconds": 10,
    "dead_letter": "dlq",
    "heartbeat_seconds": 30,
    "notify": True,
    "warning_queue_size": 5,
}
"""Every setting of a queue, none at its default."""

EVERY_COLUMN: dict[str, Any] = {
    "policy": QueuePolicy.short,
    "retry_limit": 3,
    "retry_delay": 4,
    "retry_backoff": True,
    "retry_delay_max": 50,
    "expire_seconds": 60,
    "retention_seconds": 100,
    "deletion_seconds": 10,
    "dead_letter": "dlq",
    "heartbeat_seconds": 30,
    "notify": True,
    "warning_queued": 5,
}
"""The queue columns :data:`EVERY_SETTING` writes."""


def _refused(boss: Boss, session: Session, schema: str, call: Any, error: type[SqlaBossError]) -> SqlaBossError:
    before = snapshot(session, schema)
    with pytest.raises(SqlaBossError) as raised:
        call()
    assert type(raised.value) is error, f"{type(raised.value).__name__}: {raised.value}"
    assert snapshot(session, schema) == before
    return raised.value


def _table_exists(session: Session, schema: str, table: str) -> bool:
    return bool(
        session.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{quote_identifier(schema)}.{table}"})
    )


# ------------------------------------------------------------------------------------------ create_queue


def test_create_queue_fills_every_setting_with_pg_boss_12s_defaults(boss: Boss, session: Session) -> None:
    assert boss.create_queue("q") is None
    assert queue_row(session, "q") == fresh_queue(db_now(session))
    queue = boss.get_queue("q")
    assert isinstance(queue, Queue)
    assert (queue.name, queue.policy, queue.table_name) == ("q", QueuePolicy.standard, "job_common")


def test_create_queue_stores_every_setting(boss: Boss, session: Session) -> None:
    boss.create_queue("dlq")
    boss.create_queue("q", **EVERY_SETTING)
    assert queue_row(session, "q") == fresh_queue(db_now(session), **EVERY_COLUMN)


def test_create_queue_takes_durations_as_timedeltas(boss: Boss, session: Session) -> None:
    seconds = dt.timedelta(seconds=1)
    boss.create_queue(
        "q",
        retry_delay=4 * seconds,
        retry_backoff=True,
        retry_delay_max=50 * seconds,
        expire_in_seconds=dt.timedelta(days=1),  # 86,400 s is allowed on 46 (24 h inclusive)
        retention_seconds=dt.timedelta(minutes=2),
        delete_after_seconds=dt.timedelta(0),
        heartbeat_seconds=10 * seconds,
    )
    assert queue_row(session, "q") == fresh_queue(
        db_now(session),
        retry_delay=4,
        retry_backoff=True,
        retry_delay_max=50,
        expire_seconds=DAY,
        retention_seconds=120,
        deletion_seconds=0,
        heartbeat_seconds=10,
    )


@pytest.mark.parametrize("policy", list(QueuePolicy))
def test_each_policy_is_stored(boss: Boss, session: Session, policy: QueuePolicy) -> None:
    boss.create_queue("q", policy=policy.value)
    assert queue_row(session, "q")["policy"] is policy


def test_create_queue_on_an_existing_queue_changes_nothing(boss: Boss, session: Session) -> None:
    boss.create_queue("q", retry_limit=1)
    before = queue_row(session, "q")
    boss.create_queue("q", retry_limit=9, policy="short", partition=True)
    assert queue_row(session, "q") == before


@pytest.mark.parametrize("name", ["a.b", "a-b/c", "4abc", "A_Z", "x" * 200])
def test_queue_names_take_letters_digits_and_the_four_signs(boss: Boss, session: Session, name: str) -> None:
    boss.create_queue(name)
    assert boss.get_queue(name).name == name
    assert boss.send(name, {"n": 1}) is not None


def test_a_partitioned_queue_gets_a_table_of_its_own(boss: Boss, session: Session, installed_schema: str) -> None:
    boss.create_queue("fifo/q", partition=True, policy="key_strict_fifo")
    table = "j" + hashlib.sha224(b"fifo/q").hexdigest()
    assert queue_row(session, "fifo/q") == fresh_queue(
        db_now(session), policy=QueuePolicy.key_strict_fifo, partition=True, table_name=table
    )
    bound = session.scalar(
        text(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relname = :table"
        ),
        {"schema": installed_schema, "table": table},
    )
    assert bound == "FOR VALUES IN ('fifo/q')"
    indexes = set(
        session.scalars(
            text("SELECT indexname FROM pg_indexes WHERE schemaname = :schema AND tablename = :table"),
            {"schema": installed_schema, "table": table},
        )
    )
    # The policy's own indexes only (§1.8): key_strict_fifo has i8 and i10, not those of short/singleton/...
    assert {f"{table}_i{n}" for n in (4, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)} | {f"{table}_pkey"} == indexes
    job_id = boss.send("fifo/q", {"n": 1}, singleton_key="k")
    in_partition = session.scalar(text(f"SELECT count(*) FROM {quote_identifier(installed_schema)}.{table}"))
    assert in_partition == 1
    assert job_row(session, "fifo/q", job_id)["policy"] is QueuePolicy.key_strict_fifo


def test_create_queue_checks_its_dead_letter_queue(boss: Boss, session: Session, installed_schema: str) -> None:
    raised = _refused(
        boss,
        session,
        installed_schema,
        lambda: boss.create_queue("q", dead_letter="nope"),
        DeadLetterQueueNotFoundError,
    )
    assert raised.names == ("nope",)  # type: ignore[attr-defined]
    _refused(boss, session, installed_schema, lambda: boss.create_queue("q", dead_letter="q"), InvalidOptionError)
    boss.create_queue("dlq")
    boss.create_queue("q", dead_letter="dlq")
    assert queue_row(session, "q")["dead_letter"] == "dlq"


@pytest.mark.parametrize(
    "options",
    [
        {"retry_delay_max": 5},  # only with retry_backoff=True
        {"retry_delay_max": 5, "retry_backoff": False},
        {"retry_delay_max": -1, "retry_backoff": True},
        {"heartbeat_seconds": 9},
        {"expire_in_seconds": 86401},
        {"expire_in_seconds": 0},
        {"retention_seconds": 0},
        {"delete_after_seconds": -1},
        {"warning_queue_size": -1},
        {"notify": "yes"},
        {"partition": 1},
        {"policy": "fifo"},
    ],
    ids=repr,
)
def test_create_queue_refuses_bad_settings(
    boss: Boss, session: Session, installed_schema: str, options: dict[str, Any]
) -> None:
    _refused(boss, session, installed_schema, lambda: boss.create_queue("q", **options), InvalidOptionError)
    assert_usable_after_creating(boss)


def assert_usable_after_creating(boss: Boss) -> None:
    boss.create_queue("usable")
    assert_usable(boss, "usable")


@pytest.mark.parametrize(("option", "value"), [("retention_minutes", 5)])
def test_create_queue_refuses_pg_boss_10s_settings(
    boss: Boss, session: Session, installed_schema: str, option: str, value: Any
) -> None:
    _refused(
        boss, session, installed_schema, lambda: boss.create_queue("q", **{option: value}), UnsupportedOperationError
    )


# ------------------------------------------------------------------------------------------ update_queue


@pytest.fixture
def configured(boss: Boss, session: Session) -> str:
    """Queue ``q`` with every setting (dead letter ``dlq``), created and updated a day ago; ``dlq2`` exists."""
    boss.create_queue("dlq")
    boss.create_queue("dlq2")
    boss.create_queue("q", **EVERY_SETTING)
    yesterday = db_now(session) - dt.timedelta(days=1)
    session.execute(update(QUEUE).where(QUEUE.c.name == "q").values(created_on=yesterday, updated_on=yesterday))
    return "q"


def test_update_queue_changes_only_what_it_is_given(boss: Boss, session: Session, configured: str) -> None:
    yesterday = db_now(session) - dt.timedelta(days=1)
    boss.update_queue(configured, retry_limit=7)
    expected = fresh_queue(yesterday, **{**EVERY_COLUMN, "retry_limit": 7}) | {"updated_on": db_now(session)}
    assert queue_row(session, configured) == expected
    boss.update_queue(
        configured,
        retry_delay=1,
        retry_backoff=False,
        expire_in_seconds=DAY,
        retention_seconds=2,
        delete_after_seconds=0,
        notify=False,
        warning_queue_size=0,
    )
    changed = {
        "retry_delay": 1,
        "retry_backoff": False,
        "expire_seconds": DAY,
        "retention_seconds": 2,
        "deletion_seconds": 0,
        "notify": False,
        "warning_queued": 0,
    }
    assert queue_row(session, configured) == expected | changed


def test_update_queue_keeps_most_settings_given_none(boss: Boss, session: Session, configured: str) -> None:
    before = queue_row(session, configured)
    keep = ("policy", "retry_delay_max", "heartbeat_seconds", "dead_letter", "notify")
    boss.update_queue(configured, notify=False, **{key: None for key in EVERY_SETTING if key not in keep})
    assert queue_row(session, configured) == before | {"notify": False, "updated_on": db_now(session)}


def test_update_queue_clears_the_dead_letter_retry_delay_max_and_heartbeat_given_none(
    boss: Boss, session: Session, configured: str
) -> None:
    before = queue_row(session, configured)
    boss.update_queue(configured, dead_letter=None)
    assert queue_row(session, configured) == before | {"dead_letter": None, "updated_on": db_now(session)}
    boss.update_queue(configured, retry_delay_max=None, heartbeat_seconds=None)
    cleared = {"dead_letter": None, "retry_delay_max": None, "heartbeat_seconds": None, "updated_on": db_now(session)}
    assert queue_row(session, configured) == before | cleared
    boss.update_queue(configured, dead_letter="dlq2", heartbeat_seconds=10, retry_backoff=True, retry_delay_max=0)
    replaced = {"dead_letter": "dlq2", "heartbeat_seconds": 10, "retry_delay_max": 0, "updated_on": db_now(session)}
    assert queue_row(session, configured) == before | replaced


def test_jobs_keep_the_settings_they_were_sent_with(boss: Boss, session: Session, configured: str) -> None:
    job_id = boss.send(configured, {"n": 1}, singleton_key="k")
    before = job_row(session, configured, job_id)
    assert (before["dead_letter"], before["retry_limit"]) == ("dlq", 3)
    boss.update_queue(configured, dead_letter="dlq2", retry_limit=0, expire_in_seconds=5)
    assert job_row(session, configured, job_id) == before


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"policy": "standard"}, InvalidOptionError),
        ({"policy": None}, InvalidOptionError),
        ({}, InvalidOptionError),
        ({"retry_delay_max": 5}, InvalidOptionError),  # retry_backoff=True in the same call, as pg-boss checks
        ({"heartbeat_seconds": 5}, InvalidOptionError),
        ({"expire_in_seconds": 86401}, InvalidOptionError),
        ({"dead_letter": "q"}, InvalidOptionError),
        ({"dead_letter": "nope"}, DeadLetterQueueNotFoundError),
        ({"retention_minutes": 5}, UnsupportedOperationError),
    ],
    ids=repr,
)
def test_update_queue_refuses_before_writing(
    boss: Boss,
    session: Session,
    installed_schema: str,
    configured: str,
    changes: dict[str, Any],
    error: type[SqlaBossError],
) -> None:
    _refused(boss, session, installed_schema, lambda: boss.update_queue(configured, **changes), error)
    assert_usable(boss, configured)


def test_update_queue_of_a_missing_queue_raises(boss: Boss, session: Session, installed_schema: str) -> None:
    raised = _refused(
        boss, session, installed_schema, lambda: boss.update_queue("nope", retry_limit=1), QueueNotFoundError
    )
    assert raised.names == ("nope",)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ delete_queue


def test_delete_queue_deletes_its_jobs_schedules_and_subscriptions(boss: Boss, session: Session) -> None:
    boss.create_queue("q")
    boss.create_queue("other")
    for state in JobState:
        in_state(boss, "q", state)
    kept = boss.send("other", {"kept": True})
    boss.schedule("q", "0 * * * *", key="k")
    boss.subscribe("event", "q")
    boss.subscribe("event", "other")
    assert boss.delete_queue("q") is True
    assert boss.get_queue("q") is None
    assert session.scalar(select(func.count()).select_from(JOB).where(JOB.c.name == "q")) == 0
    assert boss.get_schedules() == []
    assert boss.publish("event", {"n": 1}) != []
    assert job_row(session, "other", kept)["data"] == {"kept": True}
    assert boss.delete_queue("q") is False


def test_delete_queue_drops_a_partitioned_queues_table(boss: Boss, session: Session, installed_schema: str) -> None:
    boss.create_queue("p", partition=True)
    table = queue_row(session, "p")["table_name"]
    in_state(boss, "p", JobState.active)
    assert _table_exists(session, installed_schema, table)
    assert boss.delete_queue("p") is True
    assert not _table_exists(session, installed_schema, table)
    assert boss.get_queue("p") is None
    boss.create_queue("p", partition=True)  # the name is free again
    assert boss.send("p") is not None


def test_delete_queue_of_a_missing_queue_is_false(boss: Boss, session: Session, installed_schema: str) -> None:
    before = snapshot(session, installed_schema)
    assert boss.delete_queue("nope") is False
    assert snapshot(session, installed_schema) == before


def test_delete_queue_refuses_a_dead_letter_queue_in_use(boss: Boss, session: Session, installed_schema: str) -> None:
    boss.create_queue("dlq")
    boss.create_queue("q", dead_letter="dlq")
    _refused(boss, session, installed_schema, lambda: boss.delete_queue("dlq"), QueueInUseError)
    assert_usable(boss, "dlq")
    # Jobs still name it after the queue stops doing so.
    boss.send("q", {"n": 1})
    boss.update_queue("q", dead_letter=None)
    _refused(boss, session, installed_schema, lambda: boss.delete_queue("dlq"), QueueInUseError)
    assert_usable(boss, "dlq")
    boss.delete_queued_jobs("q")
    assert boss.delete_queue("dlq") is True


# ------------------------------------------------------------------------------------------- job deletes


@pytest.fixture
def every_state(boss: Boss) -> dict[JobState, Any]:
    """Queue ``q`` with one job in each state (two in created: one deferred), and ``other`` with one job."""
    boss.create_queue("q")
    boss.create_queue("other")
    jobs = {state: in_state(boss, "q", state) for state in JobState}
    jobs["deferred"] = boss.send("q", None, start_after=3600)  # type: ignore[index]
    jobs["other"] = boss.send("other")  # type: ignore[index]
    return jobs


def _states(session: Session, name: str) -> list[str]:
    return sorted(str(state) for state in session.scalars(select(JOB.c.state).where(JOB.c.name == name)))


def test_delete_queued_jobs_deletes_created_and_retry_jobs(boss: Boss, session: Session, every_state: Any) -> None:
    assert boss.delete_queued_jobs("q") == 3
    assert _states(session, "q") == ["active", "cancelled", "completed", "failed"]
    assert _states(session, "other") == ["created"]
    assert boss.delete_queued_jobs("q") == 0
    assert boss.delete_queued_jobs("nope") == 0


def test_purge_queue_is_delete_queued_jobs(boss: Boss, session: Session, every_state: Any) -> None:
    assert boss.purge_queue("q") == 3
    assert _states(session, "q") == ["active", "cancelled", "completed", "failed"]


def test_delete_stored_jobs_deletes_finished_jobs(boss: Boss, session: Session, every_state: Any) -> None:
    assert boss.delete_stored_jobs("q") == 3
    assert _states(session, "q") == ["active", "created", "created", "retry"]
    assert _states(session, "other") == ["created"]


def test_delete_all_jobs_of_a_queue(boss: Boss, session: Session, every_state: Any) -> None:
    assert boss.delete_all_jobs("q") == 7
    assert _states(session, "q") == []
    assert _states(session, "other") == ["created"]


def test_delete_all_jobs_of_every_queue_zeroes_the_cached_counts(
    boss: Boss, session: Session, every_state: Any
) -> None:
    counts = ("deferred_count", "blocked_count", "queued_count", "ready_count", "active_count", "failed_count")
    session.execute(update(QUEUE).values(**dict.fromkeys(counts, 3), total_count=9))
    assert boss.delete_all_jobs() == 8
    assert session.scalar(select(func.count()).select_from(JOB)) == 0
    for name in ("q", "other"):
        row = queue_row(session, name)
        assert {column: row[column] for column in (*counts, "total_count")} == dict.fromkeys(
            (*counts, "total_count"), 0
        )


def test_deleting_jobs_expires_the_orm_objects(boss: Boss, session: Session, every_state: Any) -> None:
    job = boss.get_job_by_id("q", every_state[JobState.created])
    boss.delete_queued_jobs("q")
    assert boss.get_job_by_id("q", every_state[JobState.created]) is None
    with pytest.raises(ObjectDeletedError):
        _ = job.state


# ----------------------------------------------------------------------------------------- get_queue(s)


def test_get_queues_lists_every_queue_by_name(boss: Boss) -> None:
    for name in ("b", "a/x", "c"):
        boss.create_queue(name)
    assert [queue.name for queue in boss.get_queues()] == ["a/x", "b", "c"]
    assert boss.get_queue("nope") is None


# -------------------------------------------------------------------------------------- get_queue_stats


def test_get_queue_stats_counts_the_jobs_live(boss: Boss, session: Session) -> None:
    boss.create_queue("q")
    boss.create_queue("other")
    now = db_now(session)
    old = boss.send("q", {"ready": "old"})
    set_job(session, "q", old, created_on=now - dt.timedelta(seconds=60), start_after=now - dt.timedelta(seconds=30))
    boss.send("q", {"ready": "new"})
    late = boss.send("q", {"ready": "start_after wins"}, start_after=0)
    set_job(session, "q", late, created_on=now - dt.timedelta(seconds=90), start_after=now - dt.timedelta(seconds=10))
    boss.send("q", None, start_after=60)
    blocked = boss.send("q")
    set_job(session, "q", blocked, blocked=True, created_on=now - dt.timedelta(hours=1))
    for state in (JobState.active, JobState.active, JobState.retry, JobState.completed, JobState.cancelled):
        in_state(boss, "q", state)
    in_state(boss, "q", JobState.failed)
    boss.send("other")
    stats = boss.get_queue_stats("q")
    assert (stats.name, stats.deferred, stats.blocked, stats.queued, stats.ready) == ("q", 1, 1, 6, 4)
    assert (stats.active, stats.completed, stats.cancelled, stats.failed, stats.total) == (2, 1, 1, 1, 11)
    assert stats.ready_oldest_seconds == 30.0  # the oldest ready job waits since max(created_on, start_after)
    empty = boss.get_queue_stats("other")
    assert (empty.queued, empty.ready, empty.total, empty.ready_oldest_seconds) == (1, 1, 1, 0.0)


def test_get_queue_stats_of_an_empty_and_of_a_missing_queue(
    boss: Boss, session: Session, installed_schema: str
) -> None:
    boss.create_queue("q")
    stats = boss.get_queue_stats("q")
    assert (stats.queued, stats.total, stats.ready_oldest_seconds) == (0, 0, None)
    raised = _refused(boss, session, installed_schema, lambda: boss.get_queue_stats("nope"), QueueNotFoundError)
    assert raised.names == ("nope",)  # type: ignore[attr-defined]
    assert_usable(boss, "q")
