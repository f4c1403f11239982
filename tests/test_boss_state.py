"""State changes (PGBOSS10.md §6): complete, fail, cancel, resume, retry, delete_job and get_job_by_id."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from boss_support import assert_usable, db_now, jobs_of, load, one_schema_per_module
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import ObjectDeletedError

from sqla_boss import Archive, Boss, Job, JobState, QueuePolicy
from sqla_boss.errors import JobConflictError
from sqla_boss.testing import ArchiveFactory, bind_factories

installed_schema = pytest.fixture(scope="module", name="installed_schema")(one_schema_per_module)
"""One schema for the module: its tests never commit, each one's transaction is rolled back."""


@pytest.fixture
def q(boss: Boss) -> str:
    boss.create_queue("q")
    return "q"


def _active(boss: Boss, name: str, **options: Any) -> uuid.UUID:
    """A job of ``name`` that has just been fetched."""
    job_id = boss.send(name, {"for": "test"}, **options)
    assert job_id is not None
    jobs = boss.fetch(name, batch_size=100)
    assert job_id in {job.id for job in jobs}
    return job_id


def _in_state(boss: Boss, name: str, state: JobState) -> uuid.UUID:
    """A job of ``name`` in ``state``."""
    if state is JobState.created:
        job_id = boss.send(name)
        assert job_id is not None
        return job_id
    job_id = _active(boss, name, retry_limit=0 if state is JobState.failed else 1)
    if state is JobState.retry or state is JobState.failed:
        assert boss.fail(name, job_id) == 1
    elif state is JobState.completed:
        assert boss.complete(name, job_id) == 1
    elif state is JobState.cancelled:
        assert boss.cancel(name, job_id) == 1
    return job_id


# ------------------------------------------------------------------------------------------ complete


def test_complete_finishes_an_active_job(boss: Boss, session: Session, q: str) -> None:
    job_id = _active(boss, q)
    assert boss.complete(q, job_id, {"ok": True}) == 1
    job = load(session, q, job_id)
    assert (job.state, job.output, job.completed_on) == (JobState.completed, {"ok": True}, db_now(session))
    assert boss.complete(q, job_id, {"again": True}) == 0
    assert load(session, q, job_id).output == {"ok": True}


class _Failure(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = "E1"
        self.details = {"z": 1}
        self.unserialisable = {1, 2}


@pytest.mark.parametrize(
    ("output", "stored"),
    [
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}),
        ([1, 2], {"value": [1, 2]}),
        ((1, "two"), {"value": [1, "two"]}),
        ("hello", {"value": "hello"}),
        ("", {"value": ""}),
        (0, {"value": 0}),
        (7, {"value": 7}),
        (2.5, {"value": 2.5}),
        (False, {"value": False}),
        (True, {"value": True}),
        (None, None),
        ({}, {}),
    ],
    ids=repr,
)
def test_complete_stores_output_as_pg_boss_does(boss: Boss, session: Session, q: str, output: Any, stored: Any) -> None:
    job_id = _active(boss, q)
    boss.complete(q, job_id, output)
    assert load(session, q, job_id).output == stored
    if stored is None:
        assert session.scalar(select(Job.output.is_(None)).where(Job.id == job_id)) is True


def test_an_exception_is_stored_with_name_message_stack_and_attributes(boss: Boss, session: Session, q: str) -> None:
    def explode() -> None:
        raise _Failure("bad thing")

    try:
        explode()
    except _Failure as exc:
        error = exc
    completed, failed = _active(boss, q), _active(boss, q)
    boss.complete(q, completed, error)
    boss.fail(q, failed, error)
    for job_id in (completed, failed):
        output = load(session, q, job_id).output
        assert output["name"] == "_Failure"
        assert output["message"] == "bad thing"
        assert output["stack"].startswith("Traceback (most recent call last):")
        assert "in explode" in output["stack"]
        assert output["stack"].endswith("_Failure: bad thing")
        assert (output["code"], output["details"]) == ("E1", {"z": 1})
        assert output["unserialisable"] == "{1, 2}"


def test_an_exception_never_raised_has_a_one_line_stack(boss: Boss, session: Session, q: str) -> None:
    job_id = _active(boss, q)
    boss.complete(q, job_id, ValueError("plain"))
    assert load(session, q, job_id).output == {"name": "ValueError", "message": "plain", "stack": "ValueError: plain"}


@pytest.mark.parametrize("state", [JobState.created, JobState.retry, JobState.completed, JobState.failed])
def test_complete_accepts_only_active_jobs(boss: Boss, session: Session, q: str, state: JobState) -> None:
    job_id = _in_state(boss, q, state)
    before = load(session, q, job_id).output
    assert boss.complete(q, job_id, {"x": 1}) == 0
    job = load(session, q, job_id)
    assert (job.state, job.output) == (state, before)


def test_complete_many_counts_only_the_active_ones(boss: Boss, q: str) -> None:
    active = [_active(boss, q), _active(boss, q)]
    created = boss.send(q)
    assert boss.complete(q, [*active, created, uuid.uuid4()]) == 2
    assert boss.complete(q, (str(created),)) == 0


# ---------------------------------------------------------------------------------------------- fail


def test_fail_with_retries_left_goes_to_retry(boss: Boss, session: Session, q: str) -> None:
    job_id = _active(boss, q, retry_delay=10)
    started_on = load(session, q, job_id).started_on
    assert boss.fail(q, job_id, {"error": "boom"}) == 1
    job = load(session, q, job_id)
    assert (job.state, job.output, job.completed_on) == (JobState.retry, {"error": "boom"}, None)
    assert job.start_after == db_now(session) + dt.timedelta(seconds=10)
    assert (job.retry_count, job.started_on) == (0, started_on)


def test_fail_without_retries_left_goes_to_failed_and_keeps_start_after(boss: Boss, session: Session, q: str) -> None:
    job_id = _active(boss, q, retry_limit=0, retry_delay=10)
    start_after = load(session, q, job_id).start_after
    assert boss.fail(q, job_id, "no") == 1
    job = load(session, q, job_id)
    assert (job.state, job.output, job.completed_on) == (JobState.failed, {"value": "no"}, db_now(session))
    assert job.start_after == start_after
    assert boss.fail(q, job_id) == 0


def test_fail_accepts_created_retry_and_active_jobs(boss: Boss, q: str) -> None:
    jobs = [_in_state(boss, q, state) for state in (JobState.created, JobState.retry)] + [_active(boss, q)]
    done = [_in_state(boss, q, state) for state in (JobState.completed, JobState.cancelled, JobState.failed)]
    assert boss.fail(q, jobs + done) == 3


def test_backoff_delays_stay_within_their_bounds(boss: Boss, session: Session, q: str) -> None:
    # §6.2: with backoff, start_after = now + d·2^c·(1 + U), U in [0, 1), so within [d·2^c, d·2^(c+1)).
    ids = [boss.send(q, None, retry_limit=5, retry_delay=10, retry_backoff=True) for _ in range(4)]
    now = db_now(session)
    for count in range(4):
        jobs = boss.fetch(q, batch_size=10, ignore_start_after=True)
        assert {job.id for job in jobs} == set(ids)
        assert {job.retry_count for job in jobs} == {count}
        assert boss.fail(q, ids) == 4
        for job_id in ids:
            job = load(session, q, job_id)
            delay = (job.start_after - now).total_seconds()
            assert job.state is JobState.retry
            assert 10 * 2**count <= delay < 10 * 2 ** (count + 1), (count, delay)


def test_fail_never_increments_retry_count(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, None, retry_limit=10)
    for _ in range(3):
        boss.fail(q, job_id)
    assert load(session, q, job_id).retry_count == 0
    assert load(session, q, job_id).state is JobState.retry


def test_a_dead_letter_copy_takes_only_what_pg_boss_copies(boss: Boss, session: Session) -> None:
    boss.create_queue("dlq", policy="short", retry_limit=7, expire_in_seconds=11, retention_minutes=5)
    boss.create_queue("src", policy="stately", dead_letter="dlq", retry_delay=4, retry_backoff=True)
    job_id = _active(boss, "src", priority=3, retry_limit=0, singleton_key="k", singleton_seconds=60, retention_days=3)
    source = load(session, "src", job_id)
    assert boss.fail("src", job_id, {"error": "final"}) == 1
    source = load(session, "src", job_id)
    assert (source.state, source.dead_letter) == (JobState.failed, "dlq")

    [copy] = jobs_of(session, "dlq")
    now = db_now(session)
    assert copy.id != job_id
    assert (copy.name, copy.data, copy.output, copy.retry_limit) == ("dlq", {"for": "test"}, {"error": "final"}, 0)
    assert copy.keep_until == source.keep_until + (source.keep_until - source.start_after)
    assert copy.keep_until - now == dt.timedelta(days=6)
    assert (copy.priority, copy.state, copy.retry_count, copy.retry_delay, copy.retry_backoff) == (
        0,
        JobState.created,
        0,
        0,
        False,
    )
    assert (copy.start_after, copy.created_on, copy.expire_in) == (now, now, dt.timedelta(minutes=15))
    assert (copy.singleton_key, copy.singleton_on, copy.dead_letter, copy.policy) == (None, None, None, None)
    assert (copy.started_on, copy.completed_on) == (None, None)


def test_dead_letter_copies_are_made_only_on_failed(boss: Boss, session: Session) -> None:
    boss.create_queue("dlq")
    boss.create_queue("src", dead_letter="dlq")
    boss.create_queue("self", dead_letter="self")
    retried = _active(boss, "src", retry_limit=1)
    never_started = boss.send("src", {"never": "started"}, retry_limit=0)
    boss.fail("src", [retried, never_started])
    assert load(session, "src", retried).state is JobState.retry
    assert [job.data for job in jobs_of(session, "dlq")] == [{"never": "started"}]
    own = _active(boss, "self", retry_limit=0)
    assert boss.fail("self", own) == 1
    assert [job.id for job in jobs_of(session, "self")] == [own]  # no copy into its own queue


def test_stately_fail_is_forced_to_failed_when_the_retry_slot_is_taken(boss: Boss, session: Session) -> None:
    # Trap 8: the re-insert as retry conflicts, so the job fails at once, dead letter copy included.
    boss.create_queue("dlq")
    boss.create_queue("stately", policy="stately", dead_letter="dlq", retry_delay=60)
    waiting = _active(boss, "stately", singleton_key="k")
    boss.fail("stately", waiting)
    assert load(session, "stately", waiting).state is JobState.retry
    forced = _active(boss, "stately", singleton_key="k", retry_limit=5)
    start_after = load(session, "stately", forced).start_after
    assert boss.fail("stately", forced, {"error": "second"}) == 1
    job = load(session, "stately", forced)
    assert (job.state, job.output, job.completed_on) == (JobState.failed, {"error": "second"}, db_now(session))
    assert (job.start_after, job.retry_count, job.retry_limit) == (start_after, 0, 5)
    assert [(copy.data, copy.output) for copy in jobs_of(session, "dlq")] == [({"for": "test"}, {"error": "second"})]
    assert_usable(boss, "stately")


# -------------------------------------------------------------------------------- cancel and resume


def test_cancel_accepts_created_retry_and_active_jobs(boss: Boss, session: Session, q: str) -> None:
    live = [_in_state(boss, q, state) for state in (JobState.created, JobState.retry, JobState.active)]
    done = [_in_state(boss, q, state) for state in (JobState.completed, JobState.failed, JobState.cancelled)]
    assert boss.cancel(q, live + done) == 3
    for job_id in live:
        job = load(session, q, job_id)
        assert (job.state, job.completed_on) == (JobState.cancelled, db_now(session))
    assert [load(session, q, job_id).state for job_id in done] == [
        JobState.completed,
        JobState.failed,
        JobState.cancelled,
    ]


def test_resume_returns_cancelled_jobs_to_created(boss: Boss, session: Session, q: str) -> None:
    job_id = _active(boss, q)
    boss.fail(q, job_id)
    [again] = boss.fetch(q)
    assert again.retry_count == 1
    started_on, start_after = again.started_on, again.start_after
    boss.cancel(q, job_id)
    assert boss.resume(q, job_id) == 1
    job = load(session, q, job_id)
    assert (job.state, job.completed_on) == (JobState.created, None)
    assert (job.started_on, job.retry_count, job.start_after) == (started_on, 1, start_after)
    assert boss.resume(q, job_id) == 0


@pytest.mark.parametrize("state", [JobState.created, JobState.retry, JobState.active, JobState.failed])
def test_resume_accepts_only_cancelled_jobs(boss: Boss, session: Session, q: str, state: JobState) -> None:
    job_id = _in_state(boss, q, state)
    assert boss.resume(q, job_id) == 0
    assert load(session, q, job_id).state is state


def test_resume_into_a_taken_throttling_slot_raises_and_changes_nothing(boss: Boss, session: Session, q: str) -> None:
    innocent = boss.send(q)
    boss.cancel(q, innocent)
    cancelled = boss.send_throttled(q, None, seconds=60, key="k")
    boss.cancel(q, cancelled)
    taken = boss.send_throttled(q, None, seconds=60, key="k")
    assert taken is not None
    with pytest.raises(JobConflictError):
        boss.resume(q, [innocent, cancelled])
    assert load(session, q, cancelled).state is JobState.cancelled
    assert load(session, q, innocent).state is JobState.cancelled  # the whole call changed nothing
    assert load(session, q, taken).state is JobState.created
    assert_usable(boss, q)
    assert boss.resume(q, innocent) == 1


def test_resume_into_a_taken_stately_state_raises(boss: Boss, session: Session) -> None:
    boss.create_queue("stately", policy="stately")
    cancelled = boss.send("stately", None, singleton_key="k")
    boss.cancel("stately", cancelled)
    boss.send("stately", None, singleton_key="k")
    with pytest.raises(JobConflictError, match="nothing was resumed"):
        boss.resume("stately", cancelled)
    assert load(session, "stately", cancelled).state is JobState.cancelled
    assert_usable(boss, "stately")


# ----------------------------------------------------------------------------------- retry and delete


def test_retry_gives_a_failed_job_one_more_try(boss: Boss, session: Session, q: str) -> None:
    job_id = _active(boss, q, retry_limit=0)
    boss.fail(q, job_id, {"error": "first"})
    failed = load(session, q, job_id)
    completed_on, start_after = failed.completed_on, failed.start_after
    assert boss.retry(q, job_id) == 1
    job = load(session, q, job_id)
    assert (job.state, job.retry_limit, job.retry_count) == (JobState.retry, 1, 0)
    assert (job.completed_on, job.start_after, job.output) == (completed_on, start_after, {"error": "first"})
    assert job.completed_on is not None  # trap 12
    [again] = boss.fetch(q)
    assert again.retry_count == 1
    assert boss.retry(q, job_id) == 0


@pytest.mark.parametrize(
    "state", [JobState.created, JobState.retry, JobState.active, JobState.completed, JobState.cancelled]
)
def test_retry_accepts_only_failed_jobs(boss: Boss, session: Session, q: str, state: JobState) -> None:
    job_id = _in_state(boss, q, state)
    limit = load(session, q, job_id).retry_limit
    assert boss.retry(q, job_id) == 0
    assert (load(session, q, job_id).state, load(session, q, job_id).retry_limit) == (state, limit)


def test_delete_job_removes_jobs_in_any_state_without_archiving(boss: Boss, session: Session, q: str) -> None:
    ids = [_in_state(boss, q, state) for state in JobState]
    kept = boss.send(q)
    assert boss.delete_job(q, ids) == len(JobState)
    assert [job.id for job in jobs_of(session, q)] == [kept]
    assert session.scalar(select(func.count()).select_from(Archive)) == 0
    assert boss.delete_job(q, ids) == 0
    assert boss.get_job_by_id(q, ids[0], include_archive=True) is None


# ------------------------------------------------------------------------------- wrong queue, wrong id

_CHANGES: dict[str, tuple[JobState, Callable[[Boss, str, uuid.UUID], int]]] = {
    "complete": (JobState.active, lambda boss, name, job_id: boss.complete(name, job_id)),
    "fail": (JobState.active, lambda boss, name, job_id: boss.fail(name, job_id)),
    "cancel": (JobState.created, lambda boss, name, job_id: boss.cancel(name, job_id)),
    "resume": (JobState.cancelled, lambda boss, name, job_id: boss.resume(name, job_id)),
    "retry": (JobState.failed, lambda boss, name, job_id: boss.retry(name, job_id)),
    "delete_job": (JobState.completed, lambda boss, name, job_id: boss.delete_job(name, job_id)),
}


@pytest.mark.parametrize("operation", list(_CHANGES))
def test_another_queue_name_or_an_unknown_id_affects_nothing(
    boss: Boss, session: Session, q: str, operation: str
) -> None:
    state, change = _CHANGES[operation]
    boss.create_queue("other")
    job_id = _in_state(boss, q, state)
    assert change(boss, "other", job_id) == 0
    assert change(boss, "missing", job_id) == 0
    assert change(boss, q, uuid.uuid4()) == 0
    assert load(session, q, job_id).state is state
    assert change(boss, q, job_id) == 1


_AFTER = {
    "complete": JobState.completed,
    "fail": JobState.retry,
    "cancel": JobState.cancelled,
    "resume": JobState.created,
    "retry": JobState.retry,
}


@pytest.mark.parametrize("operation", list(_AFTER))
def test_loaded_jobs_show_the_new_state_after_the_call(boss: Boss, q: str, operation: str) -> None:
    state, change = _CHANGES[operation]
    job_id = _in_state(boss, q, state)
    job = boss.get_job_by_id(q, job_id)
    assert isinstance(job, Job)
    assert job.state is state
    assert change(boss, q, job_id) == 1
    assert job.state is _AFTER[operation]  # expired by the call, reloaded on access


def test_a_loaded_job_is_gone_after_delete_job(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q)
    job = boss.get_job_by_id(q, job_id)  # type: ignore[arg-type]
    assert isinstance(job, Job)
    assert boss.delete_job(q, job_id) == 1
    with pytest.raises(ObjectDeletedError):
        _ = job.state


def test_a_loaded_job_is_gone_after_purge_queue(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q)
    job = boss.get_job_by_id(q, job_id)  # type: ignore[arg-type]
    assert isinstance(job, Job)
    assert boss.purge_queue(q) == 1
    assert session.get(Job, (q, job_id)) is None


# ------------------------------------------------------------------------------------- get_job_by_id


def test_get_job_by_id_finds_live_and_archived_jobs(boss: Boss, session: Session, q: str) -> None:
    bind_factories(session)
    live = boss.send(q, {"live": True})
    archived = ArchiveFactory(name=q, data={"archived": True}, state=JobState.completed)
    assert isinstance(boss.get_job_by_id(q, live), Job)  # type: ignore[arg-type]
    assert boss.get_job_by_id(q, str(live)).data == {"live": True}  # type: ignore[union-attr]
    assert boss.get_job_by_id(q, archived.id) is None
    found = boss.get_job_by_id(q, archived.id, include_archive=True)
    assert isinstance(found, Archive)
    assert (found.id, found.data, found.state) == (archived.id, {"archived": True}, JobState.completed)
    assert isinstance(boss.get_job_by_id(q, live, include_archive=True), Job)  # type: ignore[arg-type]
    assert boss.get_job_by_id("other", archived.id, include_archive=True) is None
    assert boss.get_job_by_id("other", live) is None  # type: ignore[arg-type]
    assert boss.get_job_by_id(q, uuid.uuid4(), include_archive=True) is None


def test_get_job_by_id_returns_every_column(boss: Boss, session: Session) -> None:
    boss.create_queue("single", policy="singleton")
    job_id = boss.send("single", {"n": 1}, singleton_key="k", singleton_seconds=30, priority=2)
    job = boss.get_job_by_id("single", job_id)  # type: ignore[arg-type]
    assert isinstance(job, Job)
    assert (job.policy, job.singleton_key, job.priority) == (QueuePolicy.singleton, "k", 2)
    assert job.singleton_on is not None
    assert job.queue.name == "single"
