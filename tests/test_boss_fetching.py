"""Fetching (PGBOSS10.md §5): order, batches, start_after, retry_count, SKIP LOCKED and policy gating."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from boss_support import assert_usable, backend_waits_for_lock, committed_count, db_now, jobs_of, load
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from support import wait_until

from sqla_boss import Boss, Job, JobState
from sqla_boss.binding import driver_backend_pid

SYNC_ONLY = pytest.mark.parametrize("api", ["sync"], indirect=True)
"""Tests with threads of their own: each thread needs a sync session (the async driver shares the operations).

Concurrent fetchers on ``AsyncBoss`` (AsyncSessions under ``asyncio.gather``) are in test_async_drivers.py.
"""


@pytest.fixture
def q(boss: Boss) -> str:
    boss.create_queue("q")
    return "q"


def _ids(jobs: list[Job]) -> set[uuid.UUID]:
    return {job.id for job in jobs}


def _age(session: Session, ages: dict[uuid.UUID | None, int]) -> None:
    """Backdate ``created_on`` by the given minutes: jobs sent in one transaction share one ``now()``."""
    now = db_now(session)
    for job_id, minutes in ages.items():
        session.execute(update(Job).where(Job.id == job_id).values(created_on=now - dt.timedelta(minutes=minutes)))


# ------------------------------------------------------------------------------------------- order


def test_jobs_come_by_priority_then_age_then_id(boss: Boss, session: Session, q: str) -> None:
    low = boss.send(q, None, priority=1)
    high = boss.send(q, None, priority=10)
    mid = boss.send(q, None, priority=5)
    negative = boss.send(q, None, priority=-1)
    zero_old, zero_new = boss.send(q), boss.send(q)
    _age(session, {zero_old: 10, zero_new: 5})
    tie_a, tie_b = sorted([boss.send(q, None, priority=3), boss.send(q, None, priority=3)])  # type: ignore[type-var]
    order = [boss.fetch(q)[0].id for _ in range(8)]
    assert order == [high, mid, tie_a, tie_b, low, zero_old, zero_new, negative]
    assert boss.fetch(q) == []


def test_without_priority_jobs_come_oldest_first(boss: Boss, session: Session, q: str) -> None:
    oldest = boss.send(q, None, priority=0)
    middle = boss.send(q, None, priority=10)
    newest = boss.send(q, None, priority=5)
    _age(session, {oldest: 30, middle: 20, newest: 10})
    assert [boss.fetch(q, priority=False)[0].id for _ in range(3)] == [oldest, middle, newest]


def test_a_batch_takes_the_best_jobs(boss: Boss, session: Session, q: str) -> None:
    by_priority = {boss.send(q, None, priority=p): p for p in range(6)}
    batch = boss.fetch(q, batch_size=3)
    assert len(batch) == 3
    assert sorted(by_priority[job.id] for job in batch) == [3, 4, 5]
    assert all(job.state is JobState.active for job in batch)
    rest = boss.fetch(q, batch_size=10)
    assert sorted(by_priority[job.id] for job in rest) == [0, 1, 2]
    assert boss.fetch(q, batch_size=10) == []


def test_fetch_activates_and_stamps_started_on(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, {"n": 1})
    [job] = boss.fetch(q)
    assert (job.id, job.state, job.data, job.retry_count) == (job_id, JobState.active, {"n": 1}, 0)
    assert job.started_on == db_now(session)
    assert load(session, q, job_id).state is JobState.active
    assert boss.get_queue_size(q) == 0


def test_fetch_from_an_empty_or_unknown_queue_returns_an_empty_list(boss: Boss, q: str) -> None:
    assert boss.fetch(q) == []
    assert boss.fetch("missing", batch_size=5) == []
    assert_usable(boss, q)


def test_fetch_returns_orm_jobs_of_the_session(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, {"n": 1})
    loaded = load(session, q, job_id)
    assert loaded.state is JobState.created
    [fetched] = boss.fetch(q, include_metadata=True)
    assert isinstance(fetched, Job)
    assert fetched in session
    assert fetched is loaded  # the same identity, refreshed in place
    assert loaded.state is JobState.active
    assert session.get(Job, (q, job_id)) is fetched


# -------------------------------------------------------------------------------------- start_after


def test_a_job_due_later_is_fetched_only_when_ignoring_start_after(boss: Boss, session: Session, q: str) -> None:
    later = boss.send(q, None, start_after=60)
    past = boss.send(q, None, start_after=db_now(session) - dt.timedelta(hours=1))
    assert _ids(boss.fetch(q, batch_size=5)) == {past}
    assert boss.fetch(q) == []
    assert _ids(boss.fetch(q, ignore_start_after=True)) == {later}


def test_retry_jobs_are_fetched_too(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q)
    boss.fetch(q)
    boss.fail(q, job_id)
    assert load(session, q, job_id).state is JobState.retry
    assert _ids(boss.fetch(q)) == {job_id}


# --------------------------------------------------------------------------------------- retry_count


def test_retry_count_grows_only_when_a_started_job_is_fetched_again(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q)  # retry_limit 2: three runs
    counts = []
    for _ in range(3):
        [job] = boss.fetch(q)
        counts.append(job.retry_count)
        boss.fail(q, job_id, {"attempt": job.retry_count})
    job = load(session, q, job_id)
    assert counts == [0, 1, 2]
    assert (job.state, job.retry_count, job.output) == (JobState.failed, 2, {"attempt": 2})
    assert boss.fetch(q) == []


def test_failing_a_job_that_never_started_uses_no_retry(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, None, retry_limit=1)
    assert boss.fail(q, job_id) == 1
    job = load(session, q, job_id)
    assert (job.state, job.retry_count, job.started_on) == (JobState.retry, 0, None)
    [fetched] = boss.fetch(q)
    assert fetched.retry_count == 0
    boss.fail(q, job_id)
    assert load(session, q, job_id).state is JobState.retry  # 0 < 1: still a retry left
    assert boss.fetch(q)[0].retry_count == 1
    boss.fail(q, job_id)
    assert load(session, q, job_id).state is JobState.failed


def test_a_cancelled_and_resumed_job_counts_a_retry_when_fetched_again(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q)
    boss.fetch(q)
    boss.cancel(q, job_id)
    boss.resume(q, job_id)
    assert boss.fetch(q)[0].retry_count == 1


# ------------------------------------------------------------------------------------------- gating


def _keys(jobs: list[Job]) -> list[str | None]:
    return sorted((job.singleton_key for job in jobs), key=lambda key: (key is not None, key or ""))


@pytest.mark.parametrize("policy", ["singleton", "stately"])
def test_a_batch_holds_one_job_per_key(boss: Boss, policy: str) -> None:
    boss.create_queue("gated", policy=policy)
    for key in (None, "a", "b"):
        boss.send("gated", None, singleton_key=key)
    if policy == "singleton":  # stately refuses a second created job per key
        boss.send("gated", None, singleton_key="a")
        boss.send("gated", None, singleton_key=None)
    assert _keys(boss.fetch("gated", batch_size=10)) == [None, "a", "b"]


def test_a_batch_is_not_gated_on_standard_and_short_queues(boss: Boss) -> None:
    boss.create_queue("standard")
    boss.create_queue("short", policy="short")
    for _ in range(2):
        boss.send("standard", None, singleton_key="a")
    assert _keys(boss.fetch("standard", batch_size=10)) == ["a", "a"]
    boss.send("short", None, singleton_key="a")
    boss.fetch("short")
    boss.send("short", None, singleton_key="a")
    assert _keys(boss.fetch("short")) == ["a"]  # any number may be active


@pytest.mark.parametrize("policy", ["singleton", "stately"])
@pytest.mark.parametrize("batch_size", [1, 10])
def test_a_busy_key_is_passed_over_while_other_keys_are_fetched(
    boss: Boss, session: Session, policy: str, batch_size: int
) -> None:
    # pg-boss returns [] here (trap 4: head-of-line blocking); sqla_boss skips the busy key.
    boss.create_queue("gated", policy=policy)
    a1 = boss.send("gated", None, singleton_key="a")
    assert _ids(boss.fetch("gated")) == {a1}
    a2 = boss.send("gated", None, singleton_key="a", priority=10)
    b1 = boss.send("gated", None, singleton_key="b")
    assert _ids(boss.fetch("gated", batch_size=batch_size)) == {b1}
    assert boss.fetch("gated", batch_size=batch_size) == []
    assert load(session, "gated", a2).state is JobState.created
    assert boss.complete("gated", a1) == 1
    assert _ids(boss.fetch("gated", batch_size=batch_size)) == {a2}


def test_a_stately_retry_and_created_job_of_one_key_are_never_active_together(boss: Boss, session: Session) -> None:
    boss.create_queue("stately", policy="stately")
    first = boss.send("stately", None, singleton_key="k")
    boss.fetch("stately")
    boss.fail("stately", first)
    second = boss.send("stately", None, singleton_key="k")
    assert {job.state for job in jobs_of(session, "stately")} == {JobState.retry, JobState.created}
    batch = boss.fetch("stately", batch_size=10)
    assert len(batch) == 1
    assert batch[0].id in {first, second}
    assert boss.fetch("stately", batch_size=10) == []


# ------------------------------------------------------------------------------------- concurrency


@pytest.fixture
def committed_queue(
    committing_session_factory: sessionmaker[Session], make_boss: Callable[..., Any], installed_schema: str
) -> str:
    with committing_session_factory.begin() as session:
        boss = make_boss(session, schema=installed_schema)
        boss.create_queue("shared")
        boss.insert([{"name": "shared", "data": {"n": n}} for n in range(12)])
    return "shared"


@SYNC_ONLY
def test_concurrent_fetchers_get_disjoint_jobs(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    engine: Engine,
    installed_schema: str,
    committed_queue: str,
) -> None:
    workers = 4
    barrier = threading.Barrier(workers, timeout=20)

    def worker() -> list[uuid.UUID]:
        with committing_session_factory() as session:
            boss = make_boss(session, schema=installed_schema)
            barrier.wait()  # all fetch at once
            jobs = boss.fetch(committed_queue, batch_size=3)
            ids = [job.id for job in jobs]
            barrier.wait()  # everyone holds their locks until everyone has fetched
            session.commit()
            return ids

    with ThreadPoolExecutor(workers) as pool:
        batches = [future.result(timeout=30) for future in [pool.submit(worker) for _ in range(workers)]]
    fetched = [job_id for batch in batches for job_id in batch]
    assert [len(batch) for batch in batches] == [3] * workers
    assert len(set(fetched)) == 12
    assert committed_count(engine, installed_schema, "job", "state = 'active'") == 12


def test_a_second_fetcher_skips_the_rows_the_first_one_holds(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    installed_schema: str,
    committed_queue: str,
) -> None:
    with committing_session_factory() as first, committing_session_factory() as second:
        held = make_boss(first, schema=installed_schema).fetch(committed_queue, batch_size=5)
        rest = make_boss(second, schema=installed_schema).fetch(committed_queue, batch_size=20)
        assert len(held) == 5
        assert len(rest) == 7
        assert not _ids(held) & _ids(rest)
        second.commit()
        first.rollback()
    with committing_session_factory() as reader:
        states = reader.execute(
            select(Job.state, func.count()).where(Job.name == committed_queue).group_by(Job.state)
        ).all()
        assert dict(states) == {JobState.active: 7, JobState.created: 5}


@SYNC_ONLY
@pytest.mark.parametrize(
    ("other_key", "winner_commits", "loser_gets"),
    [(True, True, "b1"), (False, True, None), (False, False, "a2")],
    ids=["other-key", "nothing-left", "winner-rolls-back"],
)
@pytest.mark.parametrize("fetch_first", [False, True], ids=["after-a-statement", "first-statement"])
def test_a_race_for_one_singleton_key_never_aborts_the_loser(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    engine: Engine,
    installed_schema: str,
    other_key: bool,
    winner_commits: bool,
    loser_gets: str | None,
    fetch_first: bool,
) -> None:
    """After a statement, the fetch runs in a savepoint; as the transaction's first statement, it runs bare and
    a collision rolls back the (empty) transaction instead: the loser's transaction goes on either way."""
    with committing_session_factory.begin() as setup:
        boss = make_boss(setup, schema=installed_schema)
        boss.create_queue("single", policy="singleton")
        sent = {
            "a1": boss.send("single", None, singleton_key="a", priority=3),
            "a2": boss.send("single", None, singleton_key="a", priority=2),
        }
        if other_key:
            sent["b1"] = boss.send("single", None, singleton_key="b", priority=1)

    with committing_session_factory() as winner, committing_session_factory() as loser:
        assert _ids(make_boss(winner, schema=installed_schema).fetch("single")) == {sent["a1"]}
        loser_boss = make_boss(loser, schema=installed_schema)
        if fetch_first:  # begin the transaction without a statement, and ask psycopg for the backend
            loser_pid = driver_backend_pid(loser.connection())
        else:
            loser_pid = loser.scalar(select(func.pg_backend_pid()))
        assert isinstance(loser_pid, int)
        result: list[list[Job]] = []
        errors: list[BaseException] = []

        def fetch() -> None:
            try:
                result.append(loser_boss.fetch("single"))
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)

        thread = threading.Thread(target=fetch)
        thread.start()
        try:
            # a1 is locked (skipped), a2 looks free, and activating it waits on the unique index for a1.
            wait_until(lambda: backend_waits_for_lock(engine, loser_pid), what="the loser to wait for the winner")
        finally:
            if winner_commits:
                winner.commit()
            else:
                winner.rollback()
            thread.join(timeout=30)
        assert not thread.is_alive()
        assert errors == []
        [jobs] = result
        assert _ids(jobs) == ({sent[loser_gets]} if loser_gets else set())
        assert loser.in_transaction()
        extra = assert_usable(loser_boss, "single")
        loser.commit()

    assert committed_count(engine, installed_schema, "job", "id = :id", id=extra) == 1
    active = 1 if loser_gets else 0
    assert committed_count(engine, installed_schema, "job", "state = 'active'") == active + int(winner_commits)
