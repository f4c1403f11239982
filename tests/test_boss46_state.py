"""State changes on schema version 46 (PGBOSS12.md §6): complete (with include_queued), fail with retries,
backoff and dead-letter copies, cancel, resume, retry, delete_job, touch, the fence on fetched attempts, and
reading jobs (get_job_by_id, find_jobs), with exact job rows."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from boss46_support import (  # noqa: F401  (the module's fixtures)
    fresh_job,
    ids,
    in_state,
    installed_schema_46,
    job_row,
    job_rows,
    schema_version_46,
    set_job,
)
from boss_support import assert_usable, db_now, snapshot
from sqlalchemy.orm import Session

from sqla_boss import Boss, JobState
from sqla_boss.errors import InvalidOptionError, JobConflictError, UnsupportedOperationError
from sqla_boss.v46.models import Job, QueuePolicy

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def q(boss: Boss) -> str:
    boss.create_queue("q")
    return "q"


def _fetched(boss: Boss, name: str, **options: Any) -> Job:
    """A job of ``name`` sent with ``options`` and fetched (with a priority of its own): the fetched object."""
    job = boss.get_job_by_id(name, in_state(boss, name, JobState.active, {"for": "test"}, **options))
    assert isinstance(job, Job)
    return job


def _attempt(job_id: uuid.UUID, name: str, retry_count: int) -> Job:
    """A job object as a worker holds it: the attempt ``retry_count`` of the job (not in the session)."""
    return Job(id=job_id, name=name, retry_count=retry_count)


# ---------------------------------------------------------------------------------------------- complete


def test_complete_finishes_an_active_job(boss: Boss, session: Session, q: str) -> None:
    job = _fetched(boss, q)
    before = job_row(session, q, job.id)
    assert boss.complete(q, job.id, {"ok": True}) == 1
    now = db_now(session)
    assert job_row(session, q, job.id) == before | {
        "state": JobState.completed,
        "completed_on": now,
        "output": {"ok": True},
    }
    assert boss.complete(q, job.id, {"again": True}) == 0
    assert job_row(session, q, job.id)["output"] == {"ok": True}
    assert job.state is JobState.completed  # the ORM object is expired and reloads


@pytest.mark.parametrize(
    ("output", "stored"),
    [
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}),
        ([1, 2], {"value": [1, 2]}),
        ("hello", {"value": "hello"}),
        (0, {"value": 0}),
        (False, {"value": False}),
        (None, None),
    ],
    ids=repr,
)
def test_output_is_stored_as_pg_boss_12_stores_it(
    boss: Boss, session: Session, q: str, output: Any, stored: Any
) -> None:
    completed, failed = _fetched(boss, q), _fetched(boss, q)
    boss.complete(q, completed.id, output)
    boss.fail(q, failed.id, output)
    assert job_row(session, q, completed.id)["output"] == stored
    assert job_row(session, q, failed.id)["output"] == stored


def test_an_exception_is_stored_with_its_name_message_and_stack(boss: Boss, session: Session, q: str) -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        error = exc
    job = _fetched(boss, q)
    boss.fail(q, job.id, error)
    output = job_row(session, q, job.id)["output"]
    assert (output["name"], output["message"]) == ("KeyError", "'missing'")
    assert output["stack"].startswith("Traceback (most recent call last):")


def test_complete_leaves_queued_jobs_unless_include_queued(boss: Boss, session: Session, q: str) -> None:
    created = boss.send(q)
    retry = in_state(boss, q, JobState.retry)
    blocked = boss.send(q)
    set_job(session, q, blocked, blocked=True, pending_dependencies=2)
    finished = in_state(boss, q, JobState.cancelled)
    assert boss.complete(q, [created, retry, blocked, finished]) == 0
    before = job_row(session, q, blocked)
    assert boss.complete(q, [created, retry, blocked, finished], {"forced": True}, include_queued=True) == 3
    now = db_now(session)
    done = {"state": JobState.completed, "completed_on": now, "output": {"forced": True}}
    assert job_row(session, q, blocked) == before | done | {"blocked": False, "pending_dependencies": 0}
    assert job_row(session, q, created)["state"] is JobState.completed
    assert job_row(session, q, retry)["state"] is JobState.completed
    assert job_row(session, q, finished)["state"] is JobState.cancelled


def test_a_wrong_queue_name_changes_nothing(boss: Boss, session: Session, q: str) -> None:
    boss.create_queue("other")
    job = _fetched(boss, q)
    before = job_row(session, q, job.id)
    for call in (boss.complete, boss.fail, boss.cancel, boss.delete_job, boss.touch):
        assert call("other", job.id) == 0
    assert job_row(session, q, job.id) == before


# ----------------------------------------------------------------------------------------------- fencing


@pytest.mark.parametrize("operation", ["complete", "fail", "cancel", "delete_job", "touch"])
def test_job_objects_settle_only_the_attempt_that_was_fetched(
    boss: Boss, session: Session, q: str, operation: str
) -> None:
    first = _fetched(boss, q, retry_limit=1)
    job_id = first.id
    assert boss.fail(q, job_id) == 1  # the attempt was lost (as an expiry would): retry, then fetched again
    [again] = boss.fetch(q, ignore_start_after=True)
    assert (again.id, again.retry_count) == (job_id, 1)
    before = job_row(session, q, job_id)
    assert getattr(boss, operation)(q, [_attempt(job_id, q, 0)]) == 0  # the stale worker's attempt
    assert job_row(session, q, job_id) == before
    assert getattr(boss, operation)(q, [_attempt(job_id, q, 1)]) == 1


@pytest.mark.parametrize("operation", ["complete", "fail", "cancel", "delete_job", "touch"])
def test_job_objects_only_settle_active_jobs(boss: Boss, session: Session, q: str, operation: str) -> None:
    created = boss.send(q)
    assert getattr(boss, operation)(q, [_attempt(created, q, 0)]) == 0
    assert job_row(session, q, created)["state"] is JobState.created


def test_plain_ids_are_not_fenced(boss: Boss, session: Session, q: str) -> None:
    job = _fetched(boss, q, retry_limit=1)
    boss.fail(q, job.id)
    boss.fetch(q, ignore_start_after=True)
    assert boss.complete(q, str(job.id)) == 1
    cancelled = boss.send(q)
    assert boss.cancel(q, cancelled) == 1  # and reach queued jobs too


def test_the_fetched_objects_settle_a_whole_batch(boss: Boss, session: Session, q: str) -> None:
    sent = {boss.send(q, {"n": n}) for n in range(3)}
    batch = boss.fetch(q, batch_size=3)
    assert boss.complete(q, batch, {"batch": True}) == 3
    assert {row["id"] for row in job_rows(session, q) if row["state"] is JobState.completed} == sent


def test_ids_and_job_objects_do_not_mix(boss: Boss, session: Session, installed_schema: str, q: str) -> None:
    job = _fetched(boss, q)
    other = boss.send(q)
    before = snapshot(session, installed_schema)
    for call in (boss.complete, boss.fail, boss.cancel, boss.delete_job, boss.touch):
        with pytest.raises(InvalidOptionError, match="not a mix"):
            call(q, [job, other])
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, q)


# -------------------------------------------------------------------------------------------------- fail


def test_fail_with_retries_left_puts_the_job_back_after_its_delay(boss: Boss, session: Session, q: str) -> None:
    job = _fetched(boss, q, retry_limit=2, retry_delay=30, heartbeat_seconds=10)
    before = job_row(session, q, job.id)
    assert boss.fail(q, job.id, {"oops": 1}) == 1
    now = db_now(session)
    assert job_row(session, q, job.id) == before | {
        "state": JobState.retry,
        "start_after": now + 30 * SECOND,
        "output": {"oops": 1},
        "heartbeat_on": None,
    }


def test_fail_without_retries_left_fails_for_good(boss: Boss, session: Session, q: str) -> None:
    job = _fetched(boss, q, retry_limit=0, retry_delay=30)
    before = job_row(session, q, job.id)
    assert boss.fail(q, job.id, "no") == 1
    now = db_now(session)
    assert job_row(session, q, job.id) == before | {
        "state": JobState.failed,
        "completed_on": now,
        "output": {"value": "no"},
        "heartbeat_on": None,
    }
    assert boss.fail(q, job.id) == 0  # finished jobs are not failed again


@pytest.mark.parametrize(
    ("retry_count", "low", "high"),
    [(0, 10, 20), (1, 20, 35.001), (2, 35, 35.001), (5, 35, 35.001)],
)
def test_backoff_doubles_the_delay_with_jitter_up_to_retry_delay_max(
    boss: Boss, session: Session, q: str, retry_count: int, low: float, high: float
) -> None:
    """retry_delay 10, at most 35: [10, 20) after the first attempt, [20, 35] after the second, then 35."""
    job_id = boss.send(q, None, retry_limit=9, retry_delay=10, retry_backoff=True, retry_delay_max=35)
    for _ in range(retry_count + 1):
        [job] = boss.fetch(q, ignore_start_after=True)
        boss.fail(q, job_id)
    assert job.retry_count == retry_count
    delay = (job_row(session, q, job_id)["start_after"] - db_now(session)).total_seconds()
    assert low <= delay < high


def test_backoff_from_a_zero_delay_starts_at_one_second(boss: Boss, session: Session, q: str) -> None:
    delays = []
    for _ in range(5):
        job = _fetched(boss, q, retry_backoff=True, retry_delay=0)
        boss.fail(q, job.id)
        delays.append((job_row(session, q, job.id)["start_after"] - db_now(session)).total_seconds())
    assert all(1 <= delay < 2 for delay in delays), delays


def test_backoff_without_a_maximum_keeps_doubling(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, None, retry_limit=9, retry_delay=10, retry_backoff=True)
    for _ in range(4):
        assert len(boss.fetch(q, ignore_start_after=True)) == 1
        boss.fail(q, job_id)
    delay = (job_row(session, q, job_id)["start_after"] - db_now(session)).total_seconds()
    assert 80 <= delay < 160


@pytest.fixture
def dlq(boss: Boss) -> str:
    """A short dead letter queue with settings of its own; queue ``work`` sends its failures there."""
    boss.create_queue("dlq2")
    boss.create_queue(
        "dlq",
        policy="short",
        retry_limit=7,
        retry_delay=3,
        retry_backoff=True,
        retry_delay_max=9,
        expire_in_seconds=11,
        retention_seconds=100,
        delete_after_seconds=50,
        heartbeat_seconds=20,
        dead_letter="dlq2",
    )
    boss.create_queue("work", dead_letter="dlq", retry_limit=0)
    return "dlq"


TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_a_failed_job_is_copied_to_its_dead_letter_queue(boss: Boss, session: Session, dlq: str) -> None:
    job = _fetched(boss, "work", singleton_key="k", group={"id": "g", "tier": "t"}, trace_context=TRACE, retry_delay=5)
    original = job_row(session, "work", job.id)
    assert boss.fail("work", job.id, {"error": "boom"}) == 1
    [copy] = job_rows(session, dlq)
    now = db_now(session)
    copy_id = copy.pop("id")
    assert copy_id != job.id
    del copy["name"]
    # Settings from the dead letter queue, payload and key copied, provenance in source_*, policy NULL (§6.4).
    assert copy == fresh_job(
        now,
        data={"for": "test"},
        priority=original["priority"],
        singleton_key="k",
        group_id="g",
        group_tier="t",
        trace_context=TRACE,
        retry_limit=7,
        retry_delay=3,
        retry_backoff=True,
        expire_seconds=11,
        deletion_seconds=50,
        heartbeat_seconds=20,
        keep_until=now + 100 * SECOND,
        policy=None,
        source_name="work",
        source_id=job.id,
        source_created_on=original["created_on"],
        source_retry_count=0,
        source_output={"error": "boom"},
        source_root_id=job.id,
    )
    # The failed job itself keeps its output and its own dead letter.
    failed = job_row(session, "work", job.id)
    assert (failed["state"], failed["output"], failed["dead_letter"]) == (JobState.failed, {"error": "boom"}, "dlq")


def test_a_short_dead_letter_queue_takes_any_number_of_copies(boss: Boss, session: Session, dlq: str) -> None:
    for _ in range(3):
        boss.fail("work", _fetched(boss, "work", singleton_key="same").id)
    copies = job_rows(session, dlq)
    assert len(copies) == 3
    assert {(row["policy"], row["singleton_key"]) for row in copies} == {(None, "same")}


def test_a_copy_keeps_the_root_of_a_job_that_came_from_a_dead_letter_queue(
    boss: Boss, session: Session, dlq: str
) -> None:
    job = _fetched(boss, "work")
    root = uuid.uuid4()
    set_job(session, "work", job.id, source_root_id=root)
    boss.fail("work", job.id)
    [copy] = job_rows(session, dlq)
    assert (copy["source_id"], copy["source_root_id"]) == (job.id, root)


def test_a_retried_failure_is_copied_at_its_last_attempt_only(boss: Boss, session: Session, dlq: str) -> None:
    job_id = boss.send("work", None, retry_limit=1)
    for attempt in range(2):
        assert len(boss.fetch("work", ignore_start_after=True)) == 1
        boss.fail("work", job_id, {"attempt": attempt})
        assert len(job_rows(session, dlq)) == attempt
    [copy] = job_rows(session, dlq)
    assert (copy["source_retry_count"], copy["source_output"]) == (1, {"attempt": 1})


def test_a_job_without_a_dead_letter_queue_is_not_copied(boss: Boss, session: Session, dlq: str) -> None:
    boss.fail("work", _fetched(boss, "work", dead_letter="dlq2").id)
    boss.create_queue("plain")
    boss.fail("plain", _fetched(boss, "plain", retry_limit=0).id)
    assert job_rows(session, dlq) == []
    assert len(job_rows(session, "dlq2")) == 1  # the job's own dead letter wins over the queue's


def test_stately_a_retry_that_would_break_the_policy_fails_for_good(boss: Boss, session: Session, dlq: str) -> None:
    boss.create_queue("stately", policy="stately", retry_limit=3, dead_letter="dlq")
    waiting = in_state(boss, "stately", JobState.retry, singleton_key="k")
    running = _fetched(boss, "stately", singleton_key="k")
    before = job_row(session, "stately", running.id)
    assert boss.fail("stately", running.id, {"n": 2}) == 1
    now = db_now(session)
    assert job_row(session, "stately", running.id) == before | {
        "state": JobState.failed,
        "completed_on": now,
        "output": {"n": 2},
        "heartbeat_on": None,
    }
    assert job_row(session, "stately", waiting)["state"] is JobState.retry
    assert [row["source_id"] for row in job_rows(session, dlq)] == [running.id]


# ----------------------------------------------------------------------------------- cancel, resume, retry


@pytest.mark.parametrize("state", [JobState.created, JobState.retry, JobState.active])
def test_cancel_stops_an_unfinished_job(boss: Boss, session: Session, q: str, state: JobState) -> None:
    job_id = in_state(boss, q, state)
    before = job_row(session, q, job_id)
    assert boss.cancel(q, job_id) == 1
    assert job_row(session, q, job_id) == before | {"state": JobState.cancelled, "completed_on": db_now(session)}


@pytest.mark.parametrize("state", [JobState.completed, JobState.cancelled, JobState.failed])
def test_cancel_leaves_a_finished_job(boss: Boss, session: Session, q: str, state: JobState) -> None:
    job_id = in_state(boss, q, state)
    before = job_row(session, q, job_id)
    assert boss.cancel(q, job_id) == 0
    assert job_row(session, q, job_id) == before


@pytest.mark.parametrize("start_after", [-60, 60])
def test_resume_returns_a_cancelled_job_to_created(boss: Boss, session: Session, q: str, start_after: int) -> None:
    job_id = in_state(boss, q, JobState.cancelled)
    now = db_now(session)
    set_job(session, q, job_id, upsert_by_key=True, start_after=now + start_after * SECOND)
    before = job_row(session, q, job_id)
    assert boss.resume(q, job_id) == 1
    assert job_row(session, q, job_id) == before | {
        "state": JobState.created,
        "completed_on": None,
        "upsert_by_key": None,
        "start_after": max(now, now + start_after * SECOND),
    }
    assert boss.resume(q, job_id) == 0


def test_resume_into_a_taken_slot_raises_and_changes_nothing(
    boss: Boss, session: Session, installed_schema: str
) -> None:
    boss.create_queue("short", policy="short")
    cancelled = in_state(boss, "short", JobState.cancelled, singleton_key="k")
    boss.send("short", None, singleton_key="k")
    before = snapshot(session, installed_schema)
    with pytest.raises(JobConflictError):
        boss.resume("short", cancelled)
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, "short")


@pytest.mark.parametrize("start_after", [-60, 60])
def test_retry_gives_a_failed_job_one_more_try(boss: Boss, session: Session, q: str, start_after: int) -> None:
    job_id = boss.send(q, None, retry_limit=0)
    boss.fetch(q)
    boss.fail(q, job_id, {"why": "x"})
    now = db_now(session)
    set_job(session, q, job_id, start_after=now + start_after * SECOND)
    before = job_row(session, q, job_id)
    assert boss.retry(q, job_id) == 1
    assert job_row(session, q, job_id) == before | {
        "state": JobState.retry,
        "retry_limit": 1,
        "completed_on": None,  # pg-boss 12 clears it (10 did not)
        "start_after": max(now, now + start_after * SECOND),
    }
    assert job_row(session, q, job_id)["output"] == {"why": "x"}
    assert boss.retry(q, job_id) == 0


# ------------------------------------------------------------------------------------ delete_job and touch


def test_delete_job_deletes_in_any_state(boss: Boss, session: Session, q: str) -> None:
    every = [in_state(boss, q, state) for state in JobState]
    assert boss.delete_job(q, every) == len(JobState)
    assert job_rows(session, q) == []
    assert boss.delete_job(q, every) == 0


def test_touch_refreshes_the_heartbeat_of_active_jobs(boss: Boss, session: Session, q: str) -> None:
    job = _fetched(boss, q, heartbeat_seconds=10)
    now = db_now(session)
    set_job(session, q, job.id, heartbeat_on=now - 60 * SECOND)
    before = job_row(session, q, job.id)
    assert boss.touch(q, [job]) == 1
    assert job_row(session, q, job.id) == before | {"heartbeat_on": now}
    queued = boss.send(q)
    assert boss.touch(q, queued) == 0
    assert job_row(session, q, queued)["heartbeat_on"] is None


# ------------------------------------------------------------------------------------------- reading jobs


def test_get_job_by_id(boss: Boss, session: Session, installed_schema: str, q: str) -> None:
    job_id = boss.send(q, {"n": 1})
    job = boss.get_job_by_id(q, job_id)
    assert isinstance(job, Job)
    assert (job.id, job.name, job.data, job.policy) == (job_id, q, {"n": 1}, QueuePolicy.standard)
    assert boss.get_job_by_id(q, uuid.uuid4()) is None
    boss.create_queue("other")
    assert boss.get_job_by_id("other", job_id) is None
    before = snapshot(session, installed_schema)
    with pytest.raises(UnsupportedOperationError, match="no archive"):
        boss.get_job_by_id(q, job_id, True)
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, q)


@pytest.fixture
def findable(boss: Boss, session: Session, q: str) -> list[uuid.UUID]:
    """Five jobs of ``q``, one minute apart, oldest first; the third is active, the fifth cancelled."""
    sent = [boss.send(q, {"n": n, "even": n % 2 == 0}, singleton_key="odd" if n % 2 else "even") for n in range(5)]
    now = db_now(session)
    for age, job_id in enumerate(reversed(sent)):
        set_job(session, q, job_id, created_on=now - age * 60 * SECOND)
    set_job(session, q, sent[2], state=JobState.active)
    boss.cancel(q, sent[4])
    return sent  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [0, 1, 2, 3, 4]),
        ({"key": "odd"}, [1, 3]),
        ({"data": {"even": True}}, [0, 2, 4]),
        ({"data": {"n": 3, "even": False}}, [3]),
        ({"queued": True}, [0, 1, 3]),
        ({"key": "even", "queued": True}, [0]),
        ({"limit": 2}, [0, 1]),
        ({"after": 1}, [2, 3, 4]),
        ({"after": 1, "limit": 1}, [2]),
        ({"id": 3}, [3]),
        ({"id": 3, "key": "even"}, []),
    ],
    ids=repr,
)
def test_find_jobs(boss: Boss, findable: list[uuid.UUID], filters: dict[str, Any], expected: list[int]) -> None:
    given = {name: findable[value] if name in ("id", "after") else value for name, value in filters.items()}
    found = boss.find_jobs("q", **given)
    assert all(isinstance(job, Job) for job in found)
    assert [job.id for job in found] == [findable[n] for n in expected]


def test_find_jobs_orders_by_created_on_then_id(boss: Boss, q: str) -> None:
    sent = [boss.send(q) for _ in range(4)]  # one transaction: one created_on
    assert [job.id for job in boss.find_jobs(q)] == sorted(sent)  # type: ignore[type-var]


@pytest.mark.parametrize(
    "filters",
    [{"after": "gone"}, {"limit": 0}, {"limit": 100_001}, {"queued": 1}, {"id": "x"}, {"key": 5}, {"data": {1}}],
    ids=repr,
)
def test_find_jobs_refuses_bad_filters(
    boss: Boss, session: Session, installed_schema: str, q: str, filters: dict[str, Any]
) -> None:
    given = {**filters, "after": uuid.uuid4()} if filters.get("after") == "gone" else filters
    before = snapshot(session, installed_schema)
    with pytest.raises(InvalidOptionError):
        boss.find_jobs(q, **given)
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, q)


def test_find_jobs_of_a_missing_queue_finds_nothing(boss: Boss) -> None:
    assert boss.find_jobs("nope") == []
    assert ids(boss.find_jobs("nope", queued=True)) == set()
