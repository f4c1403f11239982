"""The threaded ``Worker`` on a real PostgreSQL: committing sessions on a schema of the test's own."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from support import schema_sessions, wait_until

from sqla_boss import Boss, Job, Worker
from sqla_boss.errors import DatabaseUnavailableError, InvalidOptionError, InvalidQueueNameError
from sqla_boss.worker import SHUTDOWN_OUTPUT

QUEUE = "jobs"


@pytest.fixture
def sessions(engine: Engine, installed_schema: str) -> sessionmaker[Session]:
    factory = schema_sessions(engine, installed_schema)
    with factory.begin() as session:
        Boss(session, installed_schema).create_queue(QUEUE)
    return factory


def make_worker(workers: list[Worker], sessions: sessionmaker[Session], schema: str, **options: Any) -> Worker:
    worker = Worker(sessions, schema, **options)
    workers.append(worker)
    return worker


def send(sessions: sessionmaker[Session], schema: str, count: int = 1, **options: Any) -> list[uuid.UUID]:
    with sessions.begin() as session:
        boss = Boss(session, schema)
        ids = [boss.send(QUEUE, {"n": n}, **options) for n in range(count)]
    assert all(ids)
    return [job_id for job_id in ids if job_id is not None]


def states(sessions: sessionmaker[Session], schema: str) -> dict[uuid.UUID, tuple[str, Any]]:
    with sessions() as session:
        rows = session.execute(text(f"SELECT id, state::text, output FROM {schema}.job WHERE name = :q"), {"q": QUEUE})
        return {row[0]: (row[1], row[2]) for row in rows}


def all_in(sessions: sessionmaker[Session], schema: str, state: str) -> Callable[[], bool]:
    return lambda: all(found == state for found, _ in states(sessions, schema).values())


def test_handler_return_value_is_the_output_of_a_single_job(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    (job_id,) = send(sessions, installed_schema)
    seen: list[list[Job]] = []

    def handler(jobs: list[Job]) -> Any:
        seen.append(jobs)
        return {"doubled": jobs[0].data["n"] * 2, "id": str(jobs[0].id)}

    worker = make_worker(workers, sessions, installed_schema)
    assert worker.work(QUEUE, handler) is handler
    worker.start()
    wait_until(all_in(sessions, installed_schema, "completed"))
    worker.stop()
    assert states(sessions, installed_schema)[job_id] == ("completed", {"doubled": 0, "id": str(job_id)})
    assert len(seen) == 1
    assert [job.id for job in seen[0]] == [job_id]


def test_decorator_form(sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]) -> None:
    (job_id,) = send(sessions, installed_schema)
    worker = make_worker(workers, sessions, installed_schema)

    @worker.work(QUEUE, polling_interval_seconds=0.5)
    def handle(jobs: list[Job]) -> str:
        return "done"

    assert callable(handle)
    assert handle([]) == "done"
    worker.start()
    wait_until(all_in(sessions, installed_schema, "completed"))
    worker.stop()
    assert states(sessions, installed_schema)[job_id] == ("completed", {"value": "done"})


def test_raising_handler_fails_the_job_by_its_retry_rules(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    (job_id,) = send(sessions, installed_schema, retry_limit=1, retry_delay=0)
    calls: list[str] = []

    def handler(jobs: list[Job]) -> None:
        calls.append(threading.current_thread().name)
        raise ValueError("boom")

    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=0.5)
    worker.work(QUEUE, handler)
    worker.start()
    wait_until(all_in(sessions, installed_schema, "failed"))
    worker.stop()
    assert len(calls) == 2  # the first try, then the one retry
    state, output = states(sessions, installed_schema)[job_id]
    assert state == "failed"
    assert output["name"] == "ValueError"
    assert output["message"] == "boom"
    assert "boom" in output["stack"]


def test_a_handler_raising_system_exit_fails_its_job_and_the_loop_goes_on(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    first, second = send(sessions, installed_schema, 2, retry_limit=0)

    def handler(jobs: list[Job]) -> str:
        if jobs[0].id == first:
            raise SystemExit(3)
        return "fine"

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, handler)
    worker.start()
    wait_until(lambda: {state for state, _ in states(sessions, installed_schema).values()} == {"failed", "completed"})
    worker.stop()
    result = states(sessions, installed_schema)
    assert result[first][0] == "failed"
    assert result[first][1]["name"] == "SystemExit"
    assert result[second] == ("completed", {"value": "fine"})


def test_concurrency_runs_each_job_exactly_once(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker], engine: Engine
) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {installed_schema}.executions (job_id uuid NOT NULL UNIQUE)"))
    ids = send(sessions, installed_schema, 200)
    threads: set[str] = set()

    def handler(jobs: list[Job]) -> None:
        threads.add(threading.current_thread().name)
        with engine.begin() as connection:
            for job in jobs:
                connection.execute(text(f"INSERT INTO {installed_schema}.executions VALUES (:id)"), {"id": job.id})

    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=5)
    worker.work(QUEUE, handler, concurrency=4)
    worker.start()
    wait_until(all_in(sessions, installed_schema, "completed"), timeout=15)
    worker.stop()
    with engine.connect() as connection:
        executed = connection.execute(text(f"SELECT job_id FROM {installed_schema}.executions")).scalars().all()
    assert sorted(executed) == sorted(ids)  # the UNIQUE constraint would have failed a job run twice
    assert len(threads) <= 4


def test_concurrency_runs_handlers_side_by_side(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    send(sessions, installed_schema, 4)
    barrier = threading.Barrier(4, timeout=10)  # breaks (and fails the jobs) unless 4 handlers run at once

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, lambda jobs: barrier.wait(), concurrency=4)
    worker.start()
    wait_until(all_in(sessions, installed_schema, "completed"), timeout=15)
    worker.stop()


def test_batches_get_lists_and_no_output(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    ids = send(sessions, installed_schema, 25)
    sizes: list[int] = []

    def handler(jobs: list[Job]) -> str:
        sizes.append(len(jobs))
        return "ignored for batches"

    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=5)
    worker.work(QUEUE, handler, batch_size=10)
    worker.start()
    wait_until(all_in(sessions, installed_schema, "completed"))
    worker.stop()
    assert sorted(sizes) == [5, 10, 10]
    assert {output for _, output in (states(sessions, installed_schema)[job_id] for job_id in ids)} == {None}


def test_fetches_again_at_once_while_there_is_work(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    send(sessions, installed_schema, 50)
    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=5)
    worker.work(QUEUE, lambda jobs: None)
    worker.start()
    # pg-boss would need 50 polling intervals (250 s); this worker only waits after an empty fetch.
    wait_until(all_in(sessions, installed_schema, "completed"), timeout=4)
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 2  # the 5 s wait after the empty fetch ends on stop


def test_graceful_stop_lets_the_handler_in_flight_finish_and_starts_no_new_job(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    send(sessions, installed_schema, 2)
    entered, release = threading.Event(), threading.Event()
    handled: list[uuid.UUID] = []

    def handler(jobs: list[Job]) -> str:
        entered.set()
        assert release.wait(10)
        handled.extend(job.id for job in jobs)
        return "finished"

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, handler)
    worker.start()
    assert entered.wait(10)
    stopper = threading.Thread(target=worker.stop, kwargs={"graceful": True, "timeout": 10})
    stopper.start()
    wait_until(worker._stopping.is_set)
    release.set()
    stopper.join(15)
    assert not stopper.is_alive()
    found = states(sessions, installed_schema)
    assert len(handled) == 1
    assert found[handled[0]] == ("completed", {"value": "finished"})
    assert [state for job_id, (state, _) in found.items() if job_id != handled[0]] == ["created"]


@pytest.mark.parametrize("graceful", [False, True], ids=["not_graceful", "timeout"])
def test_stop_fails_a_stuck_job_with_the_shutdown_output(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker], graceful: bool
) -> None:
    (job_id,) = send(sessions, installed_schema)
    entered, release = threading.Event(), threading.Event()

    def handler(jobs: list[Job]) -> str:
        entered.set()
        release.wait(10)
        return "too late"

    worker = make_worker(workers, sessions, installed_schema)
    worker.work(QUEUE, handler)
    worker.start()
    assert entered.wait(10)
    worker.stop(graceful=graceful, timeout=0)  # pg-boss's minimum timeout of 1 s applies
    assert states(sessions, installed_schema)[job_id] == ("retry", SHUTDOWN_OUTPUT)
    release.set()
    for thread in worker._threads:
        thread.join(10)
    assert states(sessions, installed_schema)[job_id] == ("retry", SHUTDOWN_OUTPUT)  # the late result is ignored


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"batch_size": 0}, InvalidOptionError),
        ({"batch_size": True}, InvalidOptionError),
        ({"batch_size": 1.5}, InvalidOptionError),
        ({"concurrency": 0}, InvalidOptionError),
        ({"concurrency": "2"}, InvalidOptionError),
        ({"polling_interval_seconds": 0.4}, InvalidOptionError),
        ({"include_metadata": 1}, InvalidOptionError),
        ({"name": ""}, InvalidQueueNameError),
        ({"handler": 42}, InvalidOptionError),
    ],
)
def test_bad_work_options_raise_before_any_thread_starts(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker], options: dict[str, Any], error: type
) -> None:
    worker = make_worker(workers, sessions, installed_schema, supervise=False, schedule=False, listen=False)
    arguments: dict[str, Any] = {"name": QUEUE, "handler": lambda jobs: None, **options}
    before = threading.active_count()
    with pytest.raises(error):
        worker.work(**arguments)
    worker.start()
    assert worker.queues == []
    assert threading.active_count() == before
    assert list(worker._threads) == []


def test_bad_worker_options_raise(sessions: sessionmaker[Session], installed_schema: str) -> None:
    with pytest.raises(InvalidOptionError):
        Worker(sessions, installed_schema, polling_interval_seconds=0.1)
    with pytest.raises(InvalidOptionError):
        Worker(sessions, installed_schema, retry_limit=-1)


def _run_until(worker: Worker, trigger: Callable[[], None]) -> None:
    """Run the worker on this (main) thread; ``trigger`` runs on another thread once a job was handled."""
    handled = threading.Event()
    worker.work(QUEUE, lambda jobs: handled.set())

    def later() -> None:
        if handled.wait(10):
            trigger()

    helper = threading.Thread(target=later)
    helper.start()
    worker.run()
    helper.join(10)


def test_run_returns_after_stop_from_another_thread(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    send(sessions, installed_schema)
    worker = make_worker(workers, sessions, installed_schema)
    previous = signal.getsignal(signal.SIGTERM)
    _run_until(worker, worker.stop)
    assert all_in(sessions, installed_schema, "completed")()
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_run_stops_on_sigterm_and_restores_the_handler(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    send(sessions, installed_schema)
    worker = make_worker(workers, sessions, installed_schema)
    previous = signal.getsignal(signal.SIGTERM)
    _run_until(worker, lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert all_in(sessions, installed_schema, "completed")()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_an_unreachable_database_fails_start_at_once_and_starts_nothing(
    database_url: URL, workers: list[Worker]
) -> None:
    unreachable = create_engine(database_url.set(host="127.0.0.1", port=1), poolclass=NullPool)
    worker = Worker(unreachable, "pgboss")
    workers.append(worker)
    worker.work(QUEUE, lambda jobs: None)
    before = threading.active_count()
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=r"cannot work on schema 'pgboss': the database refused"):
        worker.start()
    assert time.monotonic() - started < 5
    assert threading.active_count() == before
    assert list(worker._threads) == []
    assert worker.health().status == "not started"
    unreachable.dispose()


def test_an_outage_after_start_is_one_warning_line_per_retry_with_the_traceback_at_debug(
    engine: Engine,
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=0.5)
    worker.work(QUEUE, lambda jobs: None)
    worker.start()
    with caplog.at_level(logging.DEBUG, logger="sqla_boss.worker"), engine.connect() as holder:
        # The job table dropped from under the loops: every fetch fails until it is back.
        holder.execute(text(f"ALTER TABLE {installed_schema}.job RENAME TO job_gone"))
        holder.commit()
        try:
            wait_until(lambda: len(loop_failures(caplog)) >= 3, timeout=10, what="three failed fetches")
        finally:
            holder.execute(text(f"ALTER TABLE {installed_schema}.job_gone RENAME TO job"))
            holder.commit()
    failures = loop_failures(caplog)
    for record in failures:
        assert record.levelno == logging.WARNING
        assert record.exc_info is None
        assert "\n" not in record.getMessage()
        assert re.search(
            r"failed \(UndefinedTable: relation .* does not exist\); retrying in [0-9.]+ s$", record.getMessage()
        )
    tracebacks = [
        r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info and "worker loop" in r.getMessage()
    ]
    assert len(tracebacks) >= len(failures) - 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def loop_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.getMessage().startswith(f"worker loop of queue {QUEUE} failed")
    ]
