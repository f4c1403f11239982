"""Queues (PGBOSS10.md §3): create, update, delete, purge, and the getters, as ORM ``Queue`` objects."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from boss_support import assert_usable, jobs_of, load, one_schema_per_module, snapshot
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session
from support import tables_in

from sqla_boss import Boss, JobState, Queue, QueuePolicy, Schedule, Subscription
from sqla_boss.errors import DeadLetterQueueNotFoundError, QueueInUseError, QueueNotEmptyError, QueueNotFoundError

installed_schema = pytest.fixture(scope="module", name="installed_schema")(one_schema_per_module)
"""One schema for the module: its tests never commit, each one's transaction is rolled back."""


def _partition(name: str) -> str:
    return "j" + hashlib.sha224(name.encode()).hexdigest()


def _settings(queue: Queue | None) -> tuple[object, ...]:
    assert queue is not None
    return (
        queue.policy,
        queue.retry_limit,
        queue.retry_delay,
        queue.retry_backoff,
        queue.expire_seconds,
        queue.retention_minutes,
        queue.dead_letter,
    )


# ---------------------------------------------------------------------------------------------- create


def test_create_queue_stores_its_settings_and_makes_its_partition(
    boss: Boss, connection: Connection, installed_schema: str
) -> None:
    boss.create_queue("dlq")
    boss.create_queue(
        "emails",
        policy=QueuePolicy.stately,
        retry_limit=3,
        retry_delay=dt.timedelta(seconds=30),
        retry_backoff=True,
        expire_in_seconds=dt.timedelta(minutes=5),
        retention_minutes=60,
        dead_letter="dlq",
    )
    queue = boss.get_queue("emails")
    assert isinstance(queue, Queue)
    assert _settings(queue) == (QueuePolicy.stately, 3, 30, True, 300, 60, "dlq")
    assert queue.partition_name == _partition("emails")
    assert queue.dead_letter_queue is boss.get_queue("dlq")
    assert _partition("emails") in tables_in(connection, installed_schema)


def test_create_queue_defaults_to_a_standard_queue_with_no_settings(boss: Boss) -> None:
    boss.create_queue("plain")
    assert _settings(boss.get_queue("plain")) == (QueuePolicy.standard, None, None, None, None, None, None)


@pytest.mark.parametrize("name", ["*weird name!", "4abc", "a.b", "é-ü", "x" * 300, "-"])
def test_queue_names_follow_pg_boss_rule(boss: Boss, session: Session, name: str) -> None:
    boss.create_queue(name)
    queue = boss.get_queue(name)
    assert queue is not None
    assert queue.partition_name == _partition(name)
    assert load(session, name, boss.send(name, {"ok": True})).data == {"ok": True}


def test_create_queue_again_keeps_the_first_settings(boss: Boss) -> None:
    boss.create_queue("q", policy="short", retry_limit=1)
    boss.create_queue("q", policy="singleton", retry_limit=9, expire_in_seconds=5)
    assert _settings(boss.get_queue("q")) == (QueuePolicy.short, 1, None, None, None, None, None)
    assert [queue.name for queue in boss.get_queues()] == ["q"]


def test_a_queue_may_be_its_own_dead_letter(boss: Boss) -> None:
    boss.create_queue("self", dead_letter="self")
    assert _settings(boss.get_queue("self"))[-1] == "self"


def test_create_queue_with_an_unknown_dead_letter_writes_nothing(
    boss: Boss, session: Session, installed_schema: str
) -> None:
    before = snapshot(session, installed_schema)
    with pytest.raises(DeadLetterQueueNotFoundError) as raised:
        boss.create_queue("q", dead_letter="nowhere")
    assert raised.value.names == ("nowhere",)
    assert snapshot(session, installed_schema) == before
    boss.create_queue("q")
    assert_usable(boss, "q")


# ---------------------------------------------------------------------------------------------- update


def test_update_queue_changes_the_given_settings_and_keeps_the_rest(boss: Boss) -> None:
    boss.create_queue("dlq")
    boss.create_queue("q", policy="short", retry_limit=1, retry_delay=2, expire_in_seconds=60)
    boss.update_queue("q", retry_limit=3)
    # pg-boss would reset the policy to standard here (trap 13); sqla_boss keeps it.
    assert _settings(boss.get_queue("q")) == (QueuePolicy.short, 3, 2, None, 60, None, None)
    boss.update_queue(
        "q",
        policy="singleton",
        retry_delay=dt.timedelta(seconds=9),
        retry_backoff=False,
        expire_in_seconds=120,
        retention_minutes=30,
        dead_letter="dlq",
    )
    assert _settings(boss.get_queue("q")) == (QueuePolicy.singleton, 3, 9, False, 120, 30, "dlq")


def test_update_queue_applies_to_new_jobs_only(boss: Boss, session: Session) -> None:
    boss.create_queue("q", retry_limit=1)
    old = boss.send("q")
    boss.update_queue("q", retry_limit=4, policy="short")
    new = boss.send("q")
    assert (load(session, "q", old).retry_limit, load(session, "q", old).policy) == (1, QueuePolicy.standard)
    assert (load(session, "q", new).retry_limit, load(session, "q", new).policy) == (4, QueuePolicy.short)


def test_update_queue_of_a_missing_queue_raises(boss: Boss, session: Session, installed_schema: str) -> None:
    boss.create_queue("q")
    before = snapshot(session, installed_schema)
    with pytest.raises(QueueNotFoundError) as raised:
        boss.update_queue("missing", retry_limit=1)
    assert type(raised.value) is QueueNotFoundError
    assert raised.value.names == ("missing",)
    with pytest.raises(DeadLetterQueueNotFoundError):
        boss.update_queue("q", dead_letter="nowhere", retry_limit=5)
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, "q")


def test_a_loaded_queue_shows_the_update(boss: Boss) -> None:
    boss.create_queue("q", retry_limit=1)
    queue = boss.get_queue("q")
    assert queue is not None
    boss.update_queue("q", retry_limit=5)
    assert queue.retry_limit == 5


# ---------------------------------------------------------------------------------------------- delete


def test_delete_queue_drops_the_queue_and_its_partition(
    boss: Boss, session: Session, connection: Connection, installed_schema: str
) -> None:
    boss.create_queue("q")
    assert boss.delete_queue("q") is True
    assert boss.get_queue("q") is None
    assert _partition("q") not in tables_in(connection, installed_schema)
    assert boss.delete_queue("q") is False
    assert boss.delete_queue("never-existed") is False
    boss.create_queue("q")  # the name can be used again
    assert_usable(boss, "q")


@pytest.mark.parametrize("state", [JobState.created, JobState.active, JobState.completed])
def test_delete_queue_refuses_while_jobs_exist(
    boss: Boss, session: Session, installed_schema: str, state: JobState
) -> None:
    boss.create_queue("q")
    job_id = boss.send("q")
    if state is not JobState.created:
        boss.fetch("q")
    if state is JobState.completed:
        boss.complete("q", job_id)
    before = snapshot(session, installed_schema)
    with pytest.raises(QueueNotEmptyError):
        boss.delete_queue("q")
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, "q")


def test_delete_queue_after_emptying_it_in_the_same_transaction(boss: Boss, session: Session) -> None:
    boss.create_queue("q")
    job_id = boss.send("q")
    boss.delete_job("q", job_id)
    try:
        deleted = boss.delete_queue("q")
    except Exception as exc:  # an SQLAlchemy error here means the transaction is lost
        raise AssertionError(f"delete_queue raised {exc!r}") from exc
    assert deleted is True
    assert boss.get_queue("q") is None


def test_delete_queue_refuses_a_dead_letter_queue_in_use(boss: Boss, session: Session, installed_schema: str) -> None:
    boss.create_queue("dlq")
    boss.create_queue("src", dead_letter="dlq")
    boss.create_queue("job-dlq")
    boss.create_queue("plain")
    boss.send("plain", None, dead_letter="job-dlq")
    before = snapshot(session, installed_schema)
    with pytest.raises(QueueInUseError, match="another queue"):
        boss.delete_queue("dlq")
    with pytest.raises(QueueInUseError, match="jobs of another queue"):
        boss.delete_queue("job-dlq")
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, "plain")


def test_delete_queue_cascades_to_its_schedule_and_subscriptions(boss: Boss, session: Session) -> None:
    boss.create_queue("q")
    boss.create_queue("other")
    boss.schedule("q", "0 * * * *")
    boss.schedule("other", "0 * * * *")
    boss.subscribe("event", "q")
    boss.subscribe("event", "other")
    boss.subscribe("another", "q")
    assert boss.delete_queue("q") is True
    assert [schedule.name for schedule in boss.get_schedules()] == ["other"]
    assert session.execute(select(Subscription.event, Subscription.name)).all() == [("event", "other")]
    assert boss.publish("event") != []
    assert session.scalar(select(func.count()).select_from(Schedule).where(Schedule.name == "q")) == 0


# ----------------------------------------------------------------------------------------------- purge


def test_purge_queue_deletes_created_and_retry_jobs_only(boss: Boss, session: Session) -> None:
    boss.create_queue("q")
    boss.create_queue("other")
    created = boss.send("q")
    retry = boss.send("q", None, retry_delay=60)
    active = boss.send("q")
    boss.fetch("q", batch_size=10)
    boss.fail("q", retry)
    boss.cancel("q", created)  # cancelled: kept
    created_again = boss.send("q", None, start_after=3600)
    done = boss.send("q")
    boss.fetch("q")
    boss.complete("q", done)
    untouched = boss.send("other")
    assert {job.id: job.state for job in jobs_of(session, "q")}[retry] is JobState.retry
    assert boss.purge_queue("q") == 2
    assert {job.id for job in jobs_of(session, "q")} == {created, active, done}
    assert created_again not in {job.id for job in jobs_of(session, "q")}
    assert [job.id for job in jobs_of(session, "other")] == [untouched]
    assert boss.purge_queue("q") == 0
    assert boss.purge_queue("missing") == 0


# --------------------------------------------------------------------------------------------- getters


def test_get_queues_lists_every_queue_by_name(boss: Boss) -> None:
    assert boss.get_queues() == []
    for name in ("b", "a", "c"):
        boss.create_queue(name, policy="short" if name == "b" else "standard")
    queues = boss.get_queues()
    assert [queue.name for queue in queues] == ["a", "b", "c"]
    assert all(isinstance(queue, Queue) for queue in queues)
    assert queues[1].policy is QueuePolicy.short
    assert boss.get_queue("b") is queues[1]
    assert boss.get_queue("missing") is None


def test_get_queue_size_counts_the_states_before_the_given_one(boss: Boss) -> None:
    boss.create_queue("q")
    boss.create_queue("other")
    ids = [boss.send("q", None, priority=10 - n) for n in range(5)]
    boss.send("other")
    boss.fetch("q")  # ids[0] active
    boss.fetch("q")  # ids[1] active
    boss.complete("q", ids[1])
    boss.fail("q", ids[2])  # retry
    assert boss.get_queue_size("q") == 3  # created, created, retry
    assert boss.get_queue_size("q", before=JobState.created) == 0
    assert boss.get_queue_size("q", before="retry") == 2
    assert boss.get_queue_size("q", before="completed") == 4
    assert boss.get_queue_size("q", before=JobState.failed) == 5
    assert boss.get_queue_size("missing") == 0
