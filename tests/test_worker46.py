"""``Worker`` and ``AsyncWorker`` on schema version 46 (PGBOSS12.md §7): pg-boss 12's ``work()`` semantics, with
committing sessions on a schema of the test's own: batches and their outputs, failures and the handler
timeout's wording, heartbeats, group concurrency, priority bounds, the fence on the attempt held, the
transactional mode, stopping, the options of one version refused on the other, and the worker's own supervisor
releasing flows and expiring lapsed heartbeats."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from support import schema_sessions, wait_until

from sqla_boss import AsyncWorker, Boss, Worker
from sqla_boss.errors import InvalidOptionError, UnsupportedOperationError
from sqla_boss.v46.models import Job
from sqla_boss.worker import SHUTDOWN_OUTPUT

QUEUE = "jobs"
JOB = Job.__table__


@pytest.fixture
def schema_version() -> int:
    return 46


@pytest.fixture
def sessions(engine: Engine, installed_schema: str) -> sessionmaker[Session]:
    factory = schema_sessions(engine, installed_schema)
    with factory.begin() as session:
        Boss(session, installed_schema).create_queue(QUEUE)
    return factory


def make_worker(workers: list[Worker], sessions: sessionmaker[Session], schema: str, **options: Any) -> Worker:
    worker = Worker(sessions, schema, supervise=False, schedule=False, **options)
    workers.append(worker)
    return worker


def send(sessions: sessionmaker[Session], schema: str, count: int = 1, **options: Any) -> list[uuid.UUID]:
    with sessions.begin() as session:
        boss = Boss(session, schema)
        ids = [boss.send(QUEUE, {"n": n}, **options) for n in range(count)]
    return [job_id for job_id in ids if job_id is not None]


def rows(sessions: sessionmaker[Session]) -> dict[uuid.UUID, dict[str, Any]]:
    with sessions() as session:
        found = session.execute(select(JOB).where(JOB.c.name == QUEUE))
        return {row.id: row._asdict() for row in found}


def all_in(sessions: sessionmaker[Session], state: str, count: int | None = None) -> Callable[[], bool]:
    def check() -> bool:
        found = rows(sessions)
        return (count is None or len(found) == count) and all(row["state"] == state for row in found.values())

    return check


def test_a_single_job_stores_the_handler_result_and_a_batch_does_not(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    (single,) = send(sessions, installed_schema)
    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, lambda jobs: {"seen": [job.data["n"] for job in jobs]}, polling_interval_seconds=0.5)
    worker.start()
    wait_until(all_in(sessions, "completed", 1), what="the single job completed")
    assert rows(sessions)[single]["output"] == {"seen": [0]}
    worker.stop()

    batch = send(sessions, installed_schema, 2)
    seen: list[int] = []

    def handler(jobs: list[Job]) -> str:
        seen.append(len(jobs))
        assert all(isinstance(job, Job) for job in jobs)
        return "ignored"

    batched = make_worker(workers, sessions, installed_schema)
    batched.work(QUEUE, handler, batch_size=2, polling_interval_seconds=0.5)
    batched.start()
    wait_until(all_in(sessions, "completed", 3), what="the batch completed")
    assert seen == [2]
    assert [rows(sessions)[job_id]["output"] for job_id in batch] == [None, None]


def test_a_failing_handler_retries_then_fails_with_the_error(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    (job_id,) = send(sessions, installed_schema, retry_limit=1)
    attempts: list[int] = []

    def handler(jobs: list[Job]) -> None:
        attempts.append(jobs[0].retry_count)
        raise ValueError(f"attempt {jobs[0].retry_count}")

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, handler, polling_interval_seconds=0.5)
    worker.start()
    wait_until(all_in(sessions, "failed", 1), what="the job failed")
    row = rows(sessions)[job_id]
    assert attempts == [0, 1]
    assert row["retry_count"] == 1
    assert row["output"]["message"] == "attempt 1"
    assert row["output"]["name"] == "ValueError"


def test_a_handler_past_its_expiry_fails_with_pg_boss_12s_words(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    (job_id,) = send(sessions, installed_schema, expire_in_seconds=1, retry_limit=0)
    release = threading.Event()
    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, lambda jobs: release.wait(10), polling_interval_seconds=0.5)
    worker.start()
    try:
        wait_until(all_in(sessions, "failed", 1), what="the job failed by the handler timeout")
    finally:
        release.set()
    assert rows(sessions)[job_id]["output"]["message"] == "handler execution exceeded 1s"


def test_a_long_handler_touches_its_heartbeat_jobs(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    (beating,) = send(sessions, installed_schema, heartbeat_seconds=10, expire_in_seconds=30)
    release = threading.Event()
    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, lambda jobs: release.wait(20), polling_interval_seconds=0.5, heartbeat_refresh_seconds=0.2)
    worker.start()
    try:
        wait_until(lambda: rows(sessions)[beating]["state"] == "active", what="the job active")
        first = rows(sessions)[beating]["heartbeat_on"]
        wait_until(lambda: rows(sessions)[beating]["heartbeat_on"] > first, what="a touch")
        touched = rows(sessions)[beating]["heartbeat_on"]
        wait_until(lambda: rows(sessions)[beating]["heartbeat_on"] > touched, what="another touch")
    finally:
        release.set()
    wait_until(all_in(sessions, "completed", 1), what="the job completed")


def test_without_a_heartbeat_a_job_is_not_touched(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    """The heartbeat timer runs only for batches with heartbeat jobs: the heartbeat stays what fetch set."""
    (job_id,) = send(sessions, installed_schema)
    release = threading.Event()
    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, lambda jobs: release.wait(5), polling_interval_seconds=0.5, heartbeat_refresh_seconds=0.05)
    worker.start()
    try:
        wait_until(lambda: rows(sessions)[job_id]["state"] == "active", what="the job active")
        first = rows(sessions)[job_id]["heartbeat_on"]
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert rows(sessions)[job_id]["heartbeat_on"] == first
    finally:
        release.set()


def test_the_workers_supervisor_releases_a_child_when_its_parent_completes(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    """Unblocking is the flow resolver's (§4.8, §8.8): a worker that supervises runs it, so a flow runs in order."""
    with sessions.begin() as session:
        ids = Boss(session, installed_schema).flow(
            [
                {"ref": "parent", "name": QUEUE, "data": {"n": 0}},
                {"ref": "child", "name": QUEUE, "depends_on": ["parent"]},
            ]
        )
    ran: list[uuid.UUID] = []
    worker = Worker(sessions, installed_schema, schedule=False, flow_interval_seconds=1, supervise_interval_seconds=1)
    workers.append(worker)
    worker.work(QUEUE, lambda jobs: ran.extend(job.id for job in jobs), polling_interval_seconds=0.5)
    worker.start()
    wait_until(all_in(sessions, "completed", 2), what="the parent, then the child, completed")
    assert ran == [ids["parent"], ids["child"]]
    found = rows(sessions)
    assert found[ids["child"]]["started_on"] >= found[ids["parent"]]["completed_on"]
    assert (found[ids["child"]]["blocked"], found[ids["parent"]]["blocking"]) == (False, False)


def test_the_workers_supervisor_fails_a_job_whose_heartbeat_lapsed_and_its_retry_runs(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    """A job held by someone who stopped touching it (here a bare fetch) is failed by heartbeat expiry (§8.5) and
    retried; the worker runs the retry."""
    (job_id,) = send(sessions, installed_schema, heartbeat_seconds=10, retry_limit=1, retry_delay=0)
    with sessions.begin() as session:
        [held] = Boss(session, installed_schema).fetch(QUEUE)
        assert held.id == job_id
    with sessions.begin() as session:  # ten seconds without a touch, without waiting them out
        session.execute(
            text(f"UPDATE \"{installed_schema}\".job SET heartbeat_on = now() - interval '11 seconds' WHERE id = :id"),
            {"id": job_id},
        )
    ran: list[int] = []
    worker = Worker(
        sessions, installed_schema, schedule=False, supervise_interval_seconds=1, monitor_interval_seconds=1
    )
    workers.append(worker)
    worker.work(QUEUE, lambda jobs: ran.extend(job.retry_count for job in jobs), polling_interval_seconds=0.5)
    worker.start()
    wait_until(all_in(sessions, "completed", 1), what="the retry completed")
    assert ran == [1]
    assert rows(sessions)[job_id]["retry_count"] == 1


def test_group_concurrency_caps_each_group_across_loops(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    with sessions.begin() as session:
        boss = Boss(session, installed_schema)
        for n in range(12):
            boss.send(QUEUE, {"n": n}, group={"id": f"g{n % 2}"})
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(jobs: list[Job]) -> None:
        group = jobs[0].group_id
        assert group is not None
        with lock:
            running[group] += 1
            most[group] = max(most[group], running[group])
        time.sleep(0.05)  # the work: long enough for four loops to overlap
        with lock:
            running[group] -= 1

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, handler, concurrency=4, group_concurrency=1, polling_interval_seconds=0.5)
    worker.start()
    wait_until(all_in(sessions, "completed", 12), what="every job completed")
    assert most == {"g0": 1, "g1": 1}


def test_priority_bounds_choose_the_jobs_fetched(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    low = send(sessions, installed_schema, 2, priority=1)
    high = send(sessions, installed_schema, 2, priority=9)
    done: list[uuid.UUID] = []
    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, lambda jobs: done.extend(job.id for job in jobs), min_priority=5, polling_interval_seconds=0.5)
    worker.start()
    wait_until(lambda: len(done) == 2, what="the high-priority jobs")
    assert set(done) == set(high)
    assert all(rows(sessions)[job_id]["state"] == "created" for job_id in low)


def test_a_late_failure_does_not_touch_the_next_attempt(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    """The worker settles by the attempt it holds (trap 18): while its handler ran, the job was expired and
    fetched again elsewhere; the handler's failure then leaves that new attempt alone."""
    (job_id,) = send(sessions, installed_schema, retry_limit=3)

    def handler(jobs: list[Job]) -> None:
        with sessions.begin() as session:  # someone expires the job and another consumer takes it again
            session.execute(text(f"UPDATE {installed_schema}.job SET state = 'retry' WHERE id = :id"), {"id": job_id})
        with sessions.begin() as session:
            (again,) = Boss(session, installed_schema).fetch(QUEUE)
            assert again.retry_count == 1
        raise RuntimeError("late")

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, handler, polling_interval_seconds=30)
    worker.start()
    wait_until(lambda: rows(sessions)[job_id]["retry_count"] == 1, what="the second attempt")
    worker.stop()  # graceful: waits for the handler, and for its failure to be recorded
    row = rows(sessions)[job_id]
    assert (row["state"], row["retry_count"], row["output"]) == ("active", 1, None)


def test_the_transactional_mode_commits_the_handlers_writes_with_the_completion(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    with sessions.begin() as session:
        session.execute(text(f"CREATE TABLE {installed_schema}.done (n int PRIMARY KEY)"))
    send(sessions, installed_schema, 3)

    def handler(jobs: list[Job], session: Session) -> None:
        for job in jobs:
            session.execute(text(f"INSERT INTO {installed_schema}.done VALUES (:n)"), {"n": job.data["n"]})
        if any(job.data["n"] == 2 for job in jobs):
            raise RuntimeError("rolled back")

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, handler, transactional=True, polling_interval_seconds=0.5)
    worker.start()
    wait_until(lambda: Counter(row["state"] for row in rows(sessions).values()) == {"completed": 2, "failed": 1})
    with sessions() as session:
        assert sorted(session.execute(text(f"SELECT n FROM {installed_schema}.done")).scalars()) == [0, 1]


def test_a_transactional_handler_whose_job_was_lost_meanwhile_commits_nothing(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker], caplog: pytest.LogCaptureFixture
) -> None:
    """While the handler runs, its attempt is failed elsewhere (as the supervisor fails a job whose heartbeat
    lapsed): the worker's fenced completion changes nothing, so the handler's writes roll back, and the retry's
    writes are the only ones."""
    with sessions.begin() as session:
        session.execute(text(f'CREATE TABLE "{installed_schema}".done (attempt int)'))
    (job_id,) = send(sessions, installed_schema, retry_limit=1, retry_delay=0)

    def handler(jobs: list[Job], session: Session) -> None:
        (job,) = jobs
        session.execute(text(f'INSERT INTO "{installed_schema}".done VALUES (:n)'), {"n": job.retry_count})
        if job.retry_count == 0:
            with sessions.begin() as elsewhere:  # another transaction takes the attempt away
                assert Boss(elsewhere, installed_schema).fail(QUEUE, [job], {"value": "lapsed"}) == 1

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, handler, transactional=True, polling_interval_seconds=0.5)
    worker.start()
    wait_until(all_in(sessions, "completed", 1), what="the retry completed")
    with sessions() as session:
        assert list(session.execute(text(f'SELECT attempt FROM "{installed_schema}".done')).scalars()) == [1]
    assert rows(sessions)[job_id]["retry_count"] == 1
    assert "ClaimLostError: 1 of 1 job(s) were no longer this worker's" in caplog.text


def test_stop_fails_the_jobs_still_held_with_the_shutdown_output(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    (job_id,) = send(sessions, installed_schema, retry_limit=1)
    started = threading.Event()
    release = threading.Event()

    def handler(jobs: list[Job]) -> None:
        started.set()
        release.wait(10)

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, handler, polling_interval_seconds=0.5)
    worker.start()
    assert started.wait(10)
    try:
        worker.stop(graceful=False)
    finally:
        release.set()
    row = rows(sessions)[job_id]
    assert (row["state"], row["output"]) == ("retry", SHUTDOWN_OUTPUT)


def test_pg_boss_10s_worker_options_are_refused_at_start(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    worker = make_worker(workers, sessions, installed_schema, retry_limit=3, archive_completed_after_seconds=3600)
    worker.work(QUEUE, lambda jobs: None)
    with pytest.raises(UnsupportedOperationError, match="archive_completed_after_seconds, retry_limit"):
        worker.start()


@pytest.mark.parametrize("schema_version", [24])
def test_pg_boss_12s_work_options_are_refused_on_version_24(
    engine: Engine, installed_schema: str, workers: list[Worker]
) -> None:
    factory = schema_sessions(engine, installed_schema)
    with factory.begin() as session:
        Boss(session, installed_schema).create_queue(QUEUE)
    worker = make_worker(workers, factory, installed_schema)
    worker.work(QUEUE, lambda jobs: None, group_concurrency=2)
    with pytest.raises(UnsupportedOperationError, match="group_concurrency is pg-boss 12's"):
        worker.start()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"group_concurrency": 0}, "group_concurrency"),
        ({"min_priority": 5, "max_priority": 1}, "must not exceed"),
        ({"heartbeat_refresh_seconds": 0}, "heartbeat_refresh_seconds"),
    ],
)
def test_bad_work_options_are_refused_when_registering(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker], options: dict[str, Any], message: str
) -> None:
    worker = make_worker(workers, sessions, installed_schema)
    with pytest.raises(InvalidOptionError, match=message):
        worker.work(QUEUE, lambda jobs: None, **options)


def test_the_async_worker_runs_coroutines_and_touches_heartbeats(
    database_url: Any, sessions: sessionmaker[Session], installed_schema: str
) -> None:
    (job_id,) = send(sessions, installed_schema, heartbeat_seconds=10)
    (plain,) = send(sessions, installed_schema)

    async def main() -> None:
        engine = create_async_engine(database_url)
        worker = AsyncWorker(engine, installed_schema, supervise=False, schedule=False)
        touched = asyncio.Event()

        async def handler(jobs: list[Job]) -> str:
            if jobs[0].heartbeat_seconds is not None:
                first = jobs[0].heartbeat_on
                for _ in range(200):
                    await asyncio.sleep(0.02)
                    if rows(sessions)[jobs[0].id]["heartbeat_on"] != first:
                        touched.set()
                        break
            return "done"

        worker.work(QUEUE, handler, polling_interval_seconds=0.5, heartbeat_refresh_seconds=0.1)
        await worker.start()
        try:
            for _ in range(500):
                if all_in(sessions, "completed", 2)():
                    break
                await asyncio.sleep(0.02)
        finally:
            await worker.stop()
            await engine.dispose()
        assert touched.is_set()

    asyncio.run(main())
    found = rows(sessions)
    assert found[job_id]["output"] == {"value": "done"}
    assert found[plain]["state"] == "completed"
