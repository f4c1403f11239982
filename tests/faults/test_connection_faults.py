"""Connection faults under running workers: cut connections, lock and statement timeouts, killed processes.

Every test proves that nothing is lost and nothing runs twice: handlers record each run as a row of
``<schema>.executions(job_id, attempt)`` (``attempt`` is the job's ``retry_count`` when it was handed out, and
the pair is UNIQUE), in pg-boss's completion mode through a connection of their own, in the transactional mode
in the handler's own transaction. A pair recorded twice is kept aside as a duplicate. At the end every job is
``completed`` (or ``failed`` where its retry rules say so), and the attempts agree with the job's retry count.

Each worker engine carries an ``application_name`` of its own, so the test finds the worker's backends in
``pg_stat_activity`` and terminates them; the listener is the backend whose last statement was its ``LISTEN`` or
its check of ``pg_listening_channels()``, naming the channel.
Waits poll with a deadline; the only fixed wait is the hold of the lock in the timeout test, over which the
failure records are counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Connection, Engine, create_engine, event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from support import query, wait_until

from sqla_boss import AsyncWorker, Boss, Job, Worker
from sqla_boss.notify import channel

pytestmark = pytest.mark.faults

QUEUE = "jobs"
QUIET = {"supervise": False, "schedule": False}
LOOP_FAILED = "worker loop of queue"
EXPIRED_OUTPUT = {"value": {"message": "job failed by timeout in active state"}}

# --------------------------------------------------------------------------------------------------- helpers


def unique_app() -> str:
    return f"faults_{uuid.uuid4().hex[:12]}"


def create_tables(engine: Engine, schema: str, *queues: str) -> None:
    """The queues, ``executions`` (UNIQUE per attempt), ``duplicates`` and ``killed`` (where a process died)."""
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        for name in queues:
            boss.create_queue(name)
        session.execute(
            text(
                f"CREATE TABLE {schema}.executions "
                "(job_id uuid NOT NULL, attempt int NOT NULL, UNIQUE (job_id, attempt))"
            )
        )
        session.execute(text(f"CREATE TABLE {schema}.duplicates (job_id uuid, attempt int)"))
        session.execute(text(f"CREATE TABLE {schema}.killed (job_id uuid, attempt int, point text)"))


def record_sql(schema: str) -> str:
    return (
        f"INSERT INTO {schema}.executions (job_id, attempt) VALUES (:id, :attempt) "
        "ON CONFLICT (job_id, attempt) DO NOTHING RETURNING job_id"
    )


def send(engine: Engine, schema: str, count: int, queue: str = QUEUE, **options: Any) -> list[uuid.UUID]:
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        ids = [boss.send(queue, {"n": n}, **options) for n in range(count)]
    assert all(ids)
    return [job_id for job_id in ids if job_id is not None]


def jobs_of(engine: Engine, schema: str, queue: str = QUEUE) -> dict[uuid.UUID, tuple[str, int, Any]]:
    rows = query(engine, f"SELECT id, state::text, retry_count, output FROM {schema}.job WHERE name = :q", q=queue)
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def count_state(engine: Engine, schema: str, state: str, queue: str = QUEUE) -> int:
    rows = query(engine, f"SELECT count(*) FROM {schema}.job WHERE name = :q AND state::text = :s", q=queue, s=state)
    return int(rows[0][0])


def executions(engine: Engine, schema: str) -> dict[uuid.UUID, list[int]]:
    found: dict[uuid.UUID, list[int]] = {}
    for job_id, attempt in query(engine, f"SELECT job_id, attempt FROM {schema}.executions ORDER BY attempt"):
        found.setdefault(job_id, []).append(attempt)
    return found


async def until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.02)


def backends(engine: Engine, app: str) -> list[tuple[int, str, str]]:
    """(pid, state, last query) of the backends of ``app``."""
    rows = query(
        engine,
        "SELECT pid, coalesce(state, ''), query FROM pg_stat_activity "
        "WHERE application_name = :app AND pid <> pg_backend_pid()",
        app=app,
    )
    return [(row[0], row[1], row[2]) for row in rows]


def is_listening(sql: str) -> bool:
    """Whether a backend's last statement is a listener's: its LISTEN, or its check of pg_listening_channels()."""
    return sql.startswith("LISTEN") or "pg_listening_channels()" in sql


def listener_pids(engine: Engine, app: str, schema: str) -> list[int]:
    wanted = channel(schema, QUEUE)
    return [pid for pid, state, sql in backends(engine, app) if state == "idle" and is_listening(sql) and wanted in sql]


def wait_listening(engine: Engine, app: str, schema: str, *, other_than: int | None = None) -> int:
    """Wait until exactly one backend of ``app`` (other than ``other_than``) LISTENs to the queue; its pid."""
    found: list[int] = []

    def listening() -> bool:
        found[:] = [pid for pid in listener_pids(engine, app, schema) if pid != other_than]
        return len(found) == 1

    wait_until(listening, 10, "a listener")
    return found[0]


async def async_listening(engine: Engine, app: str, schema: str, *, other_than: int | None = None) -> int:
    found: list[int] = []

    def listening() -> bool:
        found[:] = [pid for pid in listener_pids(engine, app, schema) if pid != other_than]
        return len(found) == 1

    await until(listening, 10, "a listener")
    return found[0]


def terminate(engine: Engine, pids: list[int]) -> int:
    if not pids:
        return 0
    rows = query(
        engine, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM unnest(CAST(:p AS int[])) pid", p=pids
    )
    return int(rows[0][0])


def kill_pool(engine: Engine, app: str) -> int:
    """Terminate the worker's pooled connections (everything of ``app`` but its listener)."""
    return terminate(engine, [pid for pid, _, sql in backends(engine, app) if not is_listening(sql)])


def worker_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "sqla_boss.worker"]


def loop_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in worker_records(caplog) if record.getMessage().startswith(LOOP_FAILED)]


def job_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Jobs failed by their handler's outcome: in the transactional mode, a cut connection fails its batch."""
    return [record for record in worker_records(caplog) if re.match(r"job\(s\) .* failed: ", record.getMessage())]


def stop(worker: Worker) -> None:
    """Stop, and let the loops end before the schema is dropped (the listener holds no lock)."""
    worker.stop(graceful=False)
    for thread in worker._threads:
        if thread.name != "sqla_boss-listener":
            thread.join(10)


def reason(record: logging.LogRecord) -> str:
    """The error a one-line failure record names: ``... failed (Error: message); retrying in N s``."""
    found = re.search(r"\((.*)\); (?:retrying|reconnecting) in", record.getMessage())
    assert found, record.getMessage()
    return found.group(1)


def delay_of(record: logging.LogRecord) -> float:
    found = re.search(r"retrying in ([0-9.]+) s", record.getMessage())
    assert found, record.getMessage()
    return float(found.group(1))


@dataclass
class Loops:
    """What each loop of the test queue did last: ``None`` while an iteration runs, else whether it found jobs."""

    last: dict[object, bool | None] = field(default_factory=dict)
    ended: int = 0

    def idle(self, concurrency: int) -> bool:
        return len(self.last) == concurrency and all(found is False for found in self.last.values())


def track_loops(worker: Worker) -> Loops:
    loops = Loops()
    iterate = worker._iterate

    def tracking(registration: Any, *rest: Any) -> bool:
        if registration.name != QUEUE:
            return iterate(registration, *rest)
        key = threading.current_thread().name
        loops.last[key] = None
        found = iterate(registration, *rest)
        loops.last[key] = found
        loops.ended += 1
        return found

    worker._iterate = tracking  # type: ignore[method-assign]
    return loops


def track_async_loops(worker: AsyncWorker) -> Loops:
    loops = Loops()
    iterate = worker._iterate

    async def tracking(registration: Any, *rest: Any) -> bool:
        if registration.name != QUEUE:
            return await iterate(registration, *rest)
        key = id(asyncio.current_task())
        loops.last[key] = None
        found = await iterate(registration, *rest)
        loops.last[key] = found
        loops.ended += 1
        return found

    worker._iterate = tracking  # type: ignore[method-assign]
    return loops


def assert_exactly_once(engine: Engine, schema: str, ids: list[uuid.UUID], *, transactional: bool) -> dict[str, int]:
    """Every job completed; each (job, attempt) ran at most once and the last attempt is the job's retry count.
    In the transactional mode only the committed attempt left a row. Returns the jobs by retry count."""
    jobs = jobs_of(engine, schema)
    assert sorted(jobs) == sorted(ids)
    assert {state for state, _, _ in jobs.values()} == {"completed"}
    ran = executions(engine, schema)
    assert sorted(ran) == sorted(ids), "a job completed without its execution recorded"
    for job_id, (_, retry_count, _) in jobs.items():
        attempts = ran[job_id]
        assert len(attempts) == len(set(attempts))
        assert attempts[-1] == retry_count, (job_id, attempts, retry_count)
        if transactional:
            assert attempts == [retry_count], (job_id, attempts)
    by_retries: dict[str, int] = {}
    for _, retry_count, _ in jobs.values():
        by_retries[str(retry_count)] = by_retries.get(str(retry_count), 0) + 1
    return by_retries


# ------------------------------------------------------------------------- 1. the threaded worker, cut links

JOBS = 300
KILL_ROUNDS = 5
LISTENER_ROUND = 2


@pytest.fixture
def worker_engine(database_url: URL) -> Iterator[tuple[Engine, str]]:
    app = unique_app()
    engine = create_engine(database_url, connect_args={"application_name": app})
    yield engine, app
    engine.dispose()


@pytest.mark.parametrize("transactional", [False, True], ids=["pgboss_mode", "transactional"])
def test_worker_carries_on_when_its_connections_are_cut(
    engine: Engine,
    installed_schema: str,
    worker_engine: tuple[Engine, str],
    caplog: pytest.LogCaptureFixture,
    transactional: bool,
) -> None:
    schema = installed_schema
    bind, app = worker_engine
    create_tables(engine, schema, QUEUE)
    ids = send(engine, schema, JOBS, retry_limit=5, expire_in_seconds=10)
    duplicates: list[tuple[uuid.UUID, int]] = []
    insert = text(record_sql(schema))

    def record(connection: Connection | Session, job: Job) -> None:
        if connection.execute(insert, {"id": job.id, "attempt": job.retry_count}).first() is None:
            duplicates.append((job.id, job.retry_count))

    def handler(jobs: list[Job]) -> None:
        with engine.begin() as connection:
            record(connection, jobs[0])
        time.sleep(0.005)

    def transactional_handler(jobs: list[Job], session: Session) -> None:
        record(session, jobs[0])
        time.sleep(0.005)

    worker = Worker(bind, schema, polling_interval_seconds=30, maintenance_interval_seconds=1, schedule=False)
    loops = track_loops(worker)
    worker.work(QUEUE, transactional_handler if transactional else handler, concurrency=2, transactional=transactional)
    killed: list[int] = []
    recoveries: list[float] = []
    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        try:
            worker.start()
            listener = wait_listening(engine, app, schema)
            for round_ in range(KILL_ROUNDS):
                threshold = (round_ + 1) * JOBS // (KILL_ROUNDS + 2)
                wait_until(lambda t=threshold: count_state(engine, schema, "completed") >= t, 30, "progress")
                done = count_state(engine, schema, "completed")
                if round_ == LISTENER_ROUND:
                    assert terminate(engine, [listener]) == 1
                killed.append(kill_pool(engine, app))
                cut = time.monotonic()
                wait_until(lambda d=done: count_state(engine, schema, "completed") > d, 15, "recovery")
                recoveries.append(time.monotonic() - cut)
            wait_until(lambda: count_state(engine, schema, "completed") == JOBS, 30, "all jobs completed")

            # The listener came back: with a 30 s polling interval only a notification wakes the idle loops.
            wait_listening(engine, app, schema, other_than=listener)
            wait_until(lambda: loops.idle(2), 10, "idle loops")
            (late,) = send(engine, schema, 1)
            sent = time.monotonic()
            wait_until(lambda: jobs_of(engine, schema)[late][0] == "completed", 5, "the late job handled")
            late_latency = time.monotonic() - sent
        finally:
            stop(worker)
    assert duplicates == []
    retries = assert_exactly_once(engine, schema, [*ids, late], transactional=transactional)
    assert sum(killed) >= KILL_ROUNDS, killed
    failures = loop_failures(caplog)
    failed_jobs = job_failures(caplog)
    assert failures or failed_jobs, "no cut connection was noticed"
    for record in failures:
        assert record.levelno == logging.WARNING  # one line; the traceback is at DEBUG
        assert delay_of(record) <= 1.0  # backed off, never escalated: each cut is followed by success
    assert len(failures) + len(failed_jobs) <= 5 * KILL_ROUNDS, "more failures than cut connections"
    messages = [r.getMessage() for r in worker_records(caplog)]
    assert any(m.startswith("listener connection lost") for m in messages)
    assert "listener reconnected" in messages
    print(
        f"\n[{'transactional' if transactional else 'pgboss'}] killed per round {killed}, loop failures "
        f"{len(failures)}, failed jobs {len(failed_jobs)}, jobs by retry_count {retries}, recoveries "
        f"{[round(r, 3) for r in recoveries]} s, late job after listener kill {late_latency:.3f} s"
    )


def test_a_job_sent_while_the_listener_reconnects_is_not_left_for_the_polling_interval(
    engine: Engine, installed_schema: str, worker_engine: tuple[Engine, str]
) -> None:
    schema = installed_schema
    bind, app = worker_engine
    create_tables(engine, schema, QUEUE)
    hold, holding, reconnecting = threading.Event(), threading.Event(), threading.Event()

    @event.listens_for(bind, "checkout")
    def slow_reconnect(*args: Any) -> None:
        """A slow reconnection (a database restarting, a network partition): the listener's new connection
        comes only once the test lets it."""
        if threading.current_thread().name == "sqla_boss-listener" and holding.is_set():
            reconnecting.set()
            hold.wait(10)

    worker = Worker(bind, schema, polling_interval_seconds=30, **QUIET)
    loops = track_loops(worker)
    worker.work(QUEUE, lambda jobs: None, concurrency=2)
    try:
        worker.start()
        listener = wait_listening(engine, app, schema)
        wait_until(lambda: loops.idle(2), 10, "idle loops")
        holding.set()
        ended = loops.ended
        assert terminate(engine, [listener]) == 1
        assert reconnecting.wait(10)
        wait_until(lambda: loops.ended >= ended + 2 and loops.idle(2), 10, "the loops' wake-up fetch")
        (job_id,) = send(engine, schema, 1)  # committed while nobody listens
        hold.set()
        wait_listening(engine, app, schema, other_than=listener)
        wait_until(lambda: jobs_of(engine, schema)[job_id][0] == "completed", 3, "the job sent meanwhile handled")
    finally:
        hold.set()
        stop(worker)


# -------------------------------------------------------------------------------- 2. AsyncWorker, cut links


@pytest.mark.parametrize("transactional", [False, True], ids=["pgboss_mode", "transactional"])
def test_async_worker_carries_on_when_its_connections_are_cut(
    engine: Engine,
    database_url: URL,
    installed_schema: str,
    caplog: pytest.LogCaptureFixture,
    transactional: bool,
) -> None:
    schema = installed_schema
    app = unique_app()
    create_tables(engine, schema, QUEUE)
    ids = send(engine, schema, JOBS, retry_limit=5, expire_in_seconds=10)
    duplicates: list[tuple[uuid.UUID, int]] = []
    insert = text(record_sql(schema))
    outcome: dict[str, Any] = {}

    async def record(connection: AsyncConnection | AsyncSession, job: Job) -> None:
        if (await connection.execute(insert, {"id": job.id, "attempt": job.retry_count})).first() is None:
            duplicates.append((job.id, job.retry_count))

    async def main() -> None:
        bind: AsyncEngine = create_async_engine(database_url, connect_args={"application_name": app})
        recorder: AsyncEngine = create_async_engine(database_url)

        async def handler(jobs: list[Job]) -> None:
            async with recorder.begin() as connection:
                await record(connection, jobs[0])
            await asyncio.sleep(0.005)

        async def transactional_handler(jobs: list[Job], session: AsyncSession) -> None:
            await record(session, jobs[0])
            await asyncio.sleep(0.005)

        worker = AsyncWorker(bind, schema, polling_interval_seconds=30, maintenance_interval_seconds=1, schedule=False)
        loops = track_async_loops(worker)
        worker.work(
            QUEUE, transactional_handler if transactional else handler, concurrency=2, transactional=transactional
        )
        killed: list[int] = []
        recoveries: list[float] = []
        try:
            await worker.start()
            listener = await async_listening(engine, app, schema)
            for round_ in range(KILL_ROUNDS):
                threshold = (round_ + 1) * JOBS // (KILL_ROUNDS + 2)
                await until(lambda t=threshold: count_state(engine, schema, "completed") >= t, 30, "progress")
                done = count_state(engine, schema, "completed")
                if round_ == LISTENER_ROUND:
                    assert terminate(engine, [listener]) == 1
                killed.append(kill_pool(engine, app))
                cut = time.monotonic()
                await until(lambda d=done: count_state(engine, schema, "completed") > d, 15, "recovery")
                recoveries.append(time.monotonic() - cut)
            await until(lambda: count_state(engine, schema, "completed") == JOBS, 30, "all jobs completed")

            await async_listening(engine, app, schema, other_than=listener)
            await until(lambda: loops.idle(2), 10, "idle loops")
            (late,) = send(engine, schema, 1)
            sent = time.monotonic()
            await until(lambda: jobs_of(engine, schema)[late][0] == "completed", 5, "the late job handled")
            outcome.update(late=late, latency=time.monotonic() - sent, killed=killed, recoveries=recoveries)
        finally:
            await worker.stop(graceful=False)
            await bind.dispose()
            await recorder.dispose()

    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        asyncio.run(main())
    assert duplicates == []
    retries = assert_exactly_once(engine, schema, [*ids, outcome["late"]], transactional=transactional)
    assert sum(outcome["killed"]) >= KILL_ROUNDS, outcome["killed"]
    failures = loop_failures(caplog)
    failed_jobs = job_failures(caplog)
    assert failures or failed_jobs, "no cut connection was noticed"
    for record in failures:
        assert record.levelno == logging.WARNING  # one line; the traceback is at DEBUG
        assert delay_of(record) <= 1.0
    assert len(failures) + len(failed_jobs) <= 5 * KILL_ROUNDS, "more failures than cut connections"
    messages = [r.getMessage() for r in worker_records(caplog)]
    assert any(m.startswith("listener connection lost") for m in messages)
    assert "listener reconnected" in messages
    print(
        f"\n[async {'transactional' if transactional else 'pgboss'}] killed per round {outcome['killed']}, loop "
        f"failures {len(failures)}, failed jobs {len(failed_jobs)}, jobs by retry_count {retries}, recoveries "
        f"{[round(r, 3) for r in outcome['recoveries']]} s, late job after listener kill {outcome['latency']:.3f} s"
    )


# ----------------------------------------------------------------------------- 3. lock and statement timeouts

HOLD_SECONDS = 3.0
LOCKED_JOBS = 40


@pytest.mark.parametrize(
    ("transactional", "options", "why"),
    [
        (False, "-c lock_timeout=200 -c statement_timeout=500", "lock timeout"),
        (False, "-c statement_timeout=300", "statement timeout"),
        (True, "-c lock_timeout=200 -c statement_timeout=500", "lock timeout"),
    ],
    ids=["pgboss_lock_timeout", "pgboss_statement_timeout", "transactional_lock_timeout"],
)
def test_a_locked_job_table_degrades_the_worker_and_it_recovers(
    engine: Engine,
    database_url: URL,
    installed_schema: str,
    caplog: pytest.LogCaptureFixture,
    transactional: bool,
    options: str,
    why: str,
) -> None:
    schema = installed_schema
    app = unique_app()
    bind = create_engine(database_url, connect_args={"application_name": app, "options": options})
    create_tables(engine, schema, QUEUE)
    ids = send(engine, schema, LOCKED_JOBS)
    duplicates: list[tuple[uuid.UUID, int]] = []
    insert = text(record_sql(schema))
    release, unlock, locked = threading.Event(), threading.Event(), threading.Event()
    entered: list[uuid.UUID] = []

    def record(connection: Connection | Session, job: Job) -> None:
        if connection.execute(insert, {"id": job.id, "attempt": job.retry_count}).first() is None:
            duplicates.append((job.id, job.retry_count))
        if not release.is_set():  # the first call of each loop waits for the lock to be asked for
            entered.append(job.id)
            release.wait(10)

    def handler(jobs: list[Job]) -> None:
        with engine.begin() as connection:
            record(connection, jobs[0])

    def transactional_handler(jobs: list[Job], session: Session) -> None:
        record(session, jobs[0])

    def blocker() -> None:
        """ACCESS EXCLUSIVE on the job table (its partitions too): even FOR UPDATE SKIP LOCKED waits for it."""
        with engine.connect() as connection:
            connection.execute(text(f"LOCK TABLE {schema}.job IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            unlock.wait(30)
            connection.commit()

    lock_requests = (
        "SELECT count(*) FROM pg_locks WHERE relation = CAST(:table AS regclass) AND mode = 'AccessExclusiveLock'"
    )
    worker = Worker(bind, schema, polling_interval_seconds=0.5, **QUIET)
    worker.work(QUEUE, transactional_handler if transactional else handler, concurrency=2, transactional=transactional)
    holder = threading.Thread(target=blocker)
    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        try:
            worker.start()
            wait_until(lambda: len(entered) == 2, 10, "both loops in a handler")
            holder.start()  # in the transactional mode it waits for the handlers' transactions
            wait_until(lambda: query(engine, lock_requests, table=f"{schema}.job")[0][0] == 1, 10, "the lock asked")
            release.set()
            assert locked.wait(10)
            held_from = time.monotonic()
            before = len(loop_failures(caplog))
            time.sleep(HOLD_SECONDS)  # the measurement window: how often the worker tries while blocked
            during = loop_failures(caplog)[before:]
            unlock.set()
            holder.join(10)
            unlocked = time.monotonic()
            window = unlocked - held_from
            wait_until(lambda: count_state(engine, schema, "completed") == LOCKED_JOBS, 20, "all jobs completed")
            recovery = time.monotonic() - unlocked
        finally:
            release.set()
            unlock.set()
            stop(worker)
            if holder.is_alive():
                holder.join(10)
            bind.dispose()
    assert not holder.is_alive()
    assert duplicates == []
    assert_exactly_once(engine, schema, ids, transactional=transactional)
    retried = {job_id for job_id, (_, retry_count, _) in jobs_of(engine, schema).items() if retry_count}
    if transactional:
        # The two handlers in flight when the lock came could not commit their completion: their writes rolled
        # back, each failure was recorded (a retry used, once the lock went) and the job ran again.
        assert retried <= set(entered), (retried, entered)
    else:
        assert not retried  # the completions waited for the lock and committed with a later fetch
    assert 2 <= len(during) < 15, [r.getMessage() for r in during]
    for record in during:
        assert record.levelno == logging.WARNING  # one line; the traceback is at DEBUG
        assert why in reason(record), reason(record)
    by_loop: dict[str, list[float]] = {}
    for record in during:
        by_loop.setdefault(record.threadName, []).append(delay_of(record))
    for delays in by_loop.values():
        assert delays == sorted(delays)  # backing off: each wait at least as long as the one before
    assert max(max(delays) for delays in by_loop.values()) >= 1.0
    print(
        f"\n[{'transactional' if transactional else 'pgboss'} {why}] {len(during)} failure records in "
        f"{window:.1f} s, delays by loop {by_loop}, all done {recovery:.2f} s after the unlock"
    )


# ----------------------------------------------------------------------------- 4. killed worker processes

WORKER_MODULE = """
    from __future__ import annotations

    import os
    import signal
    import time

    from sqlalchemy import create_engine, event, text

    from sqla_boss import Worker

    FAULT = os.environ.get("FAULT", "")
    KILL_QUEUES = ["k_handler", "k_handler_last", "k_fetch", "k_before_complete", "k_after_complete"]


    def make(url, schema):
        engine = create_engine(url, connect_args={"application_name": os.environ.get("APP", "faults")})
        side = create_engine(url)  # the recording connections, outside the worker's transactions
        worker = Worker(
            engine,
            schema,
            polling_interval_seconds=0.5,
            maintenance_interval_seconds=1,
            schedule=False,
            supervise=os.environ.get("SUPERVISE") == "1",  # only survivors expire what the dead left behind
        )

        def killed(job_id, attempt, point):
            with side.begin() as connection:
                connection.execute(
                    text(f"INSERT INTO {schema}.killed VALUES (:id, :attempt, :point)"),
                    {"id": job_id, "attempt": attempt, "point": point},
                )
            os.kill(os.getpid(), signal.SIGKILL)

        def record(connection, job):
            inserted = connection.execute(
                text(
                    f"INSERT INTO {schema}.executions (job_id, attempt) VALUES (:id, :attempt) "
                    "ON CONFLICT (job_id, attempt) DO NOTHING RETURNING job_id"
                ),
                {"id": job.id, "attempt": job.retry_count},
            ).first()
            if inserted is None:
                with side.begin() as other:
                    other.execute(
                        text(f"INSERT INTO {schema}.duplicates VALUES (:id, :attempt)"),
                        {"id": job.id, "attempt": job.retry_count},
                    )
                raise RuntimeError(f"attempt {job.retry_count} of {job.id} ran twice")

        def is_complete(statement):
            return statement.startswith("UPDATE") and "completed_on=now(), output=" in statement

        if FAULT == "after_fetch":  # the fetch ran, its transaction is not committed yet

            @event.listens_for(engine, "after_cursor_execute")
            def after_fetch(connection, cursor, statement, parameters, context, executemany):
                if statement.startswith("WITH candidates") and cursor.rowcount > 0:
                    killed(None, None, FAULT)

        if FAULT in ("before_complete", "after_complete"):  # the handler returned; its completion is cut

            def around_complete(connection, cursor, statement, parameters, context, executemany):
                if is_complete(statement) and (FAULT == "before_complete" or cursor.rowcount > 0):
                    killed(parameters["ids"][0], None, FAULT)

            hook = "before_cursor_execute" if FAULT == "before_complete" else "after_cursor_execute"
            event.listen(engine, hook, around_complete)

        def handle(jobs):
            (job,) = jobs
            with side.begin() as connection:
                record(connection, job)
            if job.data.get("die") == "handler" and job.retry_count == 0:
                killed(job.id, job.retry_count, "handler")
            time.sleep(job.data.get("seconds", 0.02))
            return {"attempt": job.retry_count}

        worker.work("busy", handle, concurrency=2)
        for name in KILL_QUEUES:
            worker.work(name, handle)

        @worker.work("k_tx", transactional=True)
        def book(jobs, session):
            (job,) = jobs
            record(session, job)
            if FAULT == "tx" or job.data.get("poison"):
                session.flush()
                killed(job.id, job.retry_count, "tx")
            return {"attempt": job.retry_count}

        return worker
"""

PROCESS_QUEUES = ["busy", "k_handler", "k_handler_last", "k_fetch", "k_before_complete", "k_after_complete", "k_tx"]


@pytest.fixture
def process_schema(engine: Engine, installed_schema: str) -> str:
    create_tables(engine, installed_schema, *PROCESS_QUEUES)
    return installed_schema


@pytest.fixture
def start_worker(
    tmp_path: Path, database_url: URL, process_schema: str
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    module = tmp_path / "fault_app.py"
    module.write_text(textwrap.dedent(WORKER_MODULE))
    started: list[subprocess.Popen[str]] = []

    def start(*options: str, fault: str = "", supervise: bool = False) -> subprocess.Popen[str]:
        environment = {
            **os.environ,
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "FAULT": fault,
            "SUPERVISE": "1" if supervise else "0",
            "APP": unique_app(),
        }
        command = [sys.executable, "-c", "from sqla_boss.cli import main; raise SystemExit(main())"]
        process = subprocess.Popen(
            [*command, "work", "fault_app:make", "--schema", process_schema, *options],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def died(process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """Wait for a process that must SIGKILL itself; its stderr."""
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == -signal.SIGKILL, stderr
    return stderr


def killed_at(engine: Engine, schema: str, point: str) -> list[tuple[uuid.UUID | None, int | None]]:
    return [
        (row[0], row[1])
        for row in query(engine, f"SELECT job_id, attempt FROM {schema}.killed WHERE point = :p", p=point)
    ]


def test_workers_killed_at_any_point_lose_no_job_and_run_no_attempt_twice(
    engine: Engine, process_schema: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    schema = process_schema
    options = {"expire_in_seconds": 2, "retry_limit": 3, "retry_delay": 0}
    busy = send(engine, schema, 40, "busy", **options)
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        in_handler = boss.send("k_handler", {"die": "handler"}, **options)
        in_handler_last = boss.send("k_handler_last", {"die": "handler"}, **{**options, "retry_limit": 0})
    assert in_handler is not None
    assert in_handler_last is not None
    others = {
        name: send(engine, schema, 2, name, **options)
        for name in ("k_fetch", "k_before_complete", "k_after_complete", "k_tx")
    }

    doomed = {
        "handler": start_worker("--queues", "k_handler"),
        "handler_last": start_worker("--queues", "k_handler_last"),
        "after_fetch": start_worker("--queues", "k_fetch", fault="after_fetch"),
        "before_complete": start_worker("--queues", "k_before_complete", fault="before_complete"),
        "after_complete": start_worker("--queues", "k_after_complete", fault="after_complete"),
        "tx": start_worker("--queues", "k_tx", fault="tx"),
    }
    random_victim = start_worker("--queues", "busy")
    wait_until(lambda: count_state(engine, schema, "completed", "busy") >= 5, 20, "the busy worker at work")
    random_victim.send_signal(signal.SIGKILL)  # wherever it is: in a handler, a fetch or a completion
    random_victim.communicate(timeout=10)
    for process in doomed.values():
        died(process)

    # What each death left behind, before any survivor runs.
    busy_active = [job_id for job_id, (state, _, _) in jobs_of(engine, schema, "busy").items() if state == "active"]
    assert jobs_of(engine, schema, "k_handler")[in_handler][:2] == ("active", 0)
    assert jobs_of(engine, schema, "k_handler_last")[in_handler_last][:2] == ("active", 0)
    assert killed_at(engine, schema, "after_fetch") == [(None, None)]
    assert {state for state, _, _ in jobs_of(engine, schema, "k_fetch").values()} == {"created"}  # rolled back
    cut: dict[str, uuid.UUID] = {}
    for point, queue in (("before_complete", "k_before_complete"), ("after_complete", "k_after_complete")):
        [(job_id, _)] = killed_at(engine, schema, point)
        assert job_id is not None
        assert jobs_of(engine, schema, queue)[job_id][:2] == ("active", 0)  # handled, its completion lost
        cut[point] = job_id
    [(tx_job, _)] = killed_at(engine, schema, "tx")
    assert tx_job is not None
    # The fetch committed (the job is active, as in pg-boss's mode); the handler's transaction rolled back.
    assert jobs_of(engine, schema, "k_tx")[tx_job][:2] == ("active", 0)
    before_survivor = executions(engine, schema)
    assert tx_job not in before_survivor
    assert not set(before_survivor) & set(others["k_fetch"])

    survivor = start_worker(supervise=True)  # every queue: its maintenance expires the orphans, its loops rerun them
    started = time.monotonic()

    def settled() -> bool:
        states = [state for name in PROCESS_QUEUES for state, _, _ in jobs_of(engine, schema, name).values()]
        return all(state in ("completed", "failed") for state in states)

    try:
        wait_until(settled, 30, "every job completed or failed")
        settle = time.monotonic() - started
    finally:
        survivor.send_signal(signal.SIGTERM)
        _, stderr = survivor.communicate(timeout=30)
    assert survivor.returncode == 0, stderr

    assert query(engine, f"SELECT * FROM {schema}.duplicates") == []
    ran = executions(engine, schema)
    final = {job_id: row for name in PROCESS_QUEUES for job_id, row in jobs_of(engine, schema, name).items()}
    assert set(busy) <= set(final)
    for name in PROCESS_QUEUES:
        for job_id, (state, retry_count, output) in jobs_of(engine, schema, name).items():
            attempts = ran.get(job_id, [])
            assert len(attempts) == len(set(attempts))
            if job_id == in_handler_last:  # retry_limit 0: expired once, so failed by its rules
                assert (state, retry_count, output, attempts) == ("failed", 0, EXPIRED_OUTPUT, [0])
                continue
            assert state == "completed", (name, job_id, state)
            assert output == {"attempt": retry_count}
            assert attempts[-1] == retry_count, (name, job_id, attempts, retry_count)
    for job_id in [in_handler, *cut.values(), *busy_active, tx_job]:
        assert final[job_id][1] >= 1, "an orphaned job completed without using up a retry"
    for job_id in cut.values():
        assert ran[job_id] == [0, 1]  # the handler ran twice, once per attempt: at least once, never twice at once
    assert all(ran[job_id] == [0] for job_id in others["k_fetch"])  # the rolled-back fetch did not count
    assert ran[tx_job] == [1]  # the killed transaction left nothing; expiry used a retry and attempt 1 ran
    print(
        f"\n[processes] busy jobs active at the random kill: {len(busy_active)}; survivor settled everything "
        f"in {settle:.2f} s"
    )


def test_a_transactional_job_that_kills_its_worker_ends_by_its_retry_rules(
    engine: Engine, process_schema: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    schema = process_schema
    with Session(engine) as session, session.begin():
        poison = Boss(session, schema).send("k_tx", {"poison": True}, retry_limit=0, expire_in_seconds=2)
    assert poison is not None
    died(start_worker("--queues", "k_tx"))
    assert killed_at(engine, schema, "tx") == [(poison, 0)]
    # By its retry rules (retry_limit 0) the job is done after one run: it should fail, not run again.
    second = start_worker("--queues", "k_tx", supervise=True)
    try:
        wait_until(lambda: jobs_of(engine, schema, "k_tx")[poison][0] == "failed", 6, "the poison job failed")
    except AssertionError as error:
        second.poll()
        state, retry_count, _ = jobs_of(engine, schema, "k_tx")[poison]
        deaths = killed_at(engine, schema, "tx")
        raise AssertionError(
            f"the poison job is {state!r} with retry_count {retry_count} after killing {len(deaths)} workers "
            f"(the second exited with {second.returncode})"
        ) from error
    finally:
        second.kill()
        second.communicate(timeout=10)
