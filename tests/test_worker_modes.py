"""The threaded ``Worker`` beyond the basic loop: NOTIFY wake-ups, handler timeouts, the transactional mode,
cron, the supervisor, pub/sub, the listener's reconnection and the log records' attributes (PGBOSS10.md §6-10).

Every test runs on a pg-boss schema of its own on a real PostgreSQL; waits poll the database or the worker
with a deadline, and the few fixed waits only ever check that something does *not* happen.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, literal, select, text
from sqlalchemy.orm import Session, sessionmaker
from support import schema_sessions, wait_until

from sqla_boss import Boss, Job, Worker, cron
from sqla_boss.driver import Driver
from sqla_boss.errors import InvalidCronError, InvalidTimezoneError
from sqla_boss.models import Schedule
from sqla_boss.notify import MAX_CHANNEL_BYTES, PREFIX, channel, channel_expression
from sqla_boss.operations import CronTick, operations_for
from sqla_boss.worker import SHUTDOWN_OUTPUT

QUEUE = "jobs"
TIMEOUT_MESSAGE = "handler execution exceeded 1000ms"
EXPIRED_OUTPUT = {"value": {"message": "job failed by timeout in active state"}}
QUIET = {"supervise": False, "schedule": False}
"""Worker options for tests that need neither maintenance nor cron."""

# ------------------------------------------------------------------------------------------------ fixtures


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


def create_queues(sessions: sessionmaker[Session], schema: str, *names: str) -> None:
    with sessions.begin() as session:
        boss = Boss(session, schema)
        for name in names:
            boss.create_queue(name)


def send(
    sessions: sessionmaker[Session], schema: str, queue: str = QUEUE, data: Any = None, **options: Any
) -> uuid.UUID:
    """Send one job in a committed transaction of its own."""
    with sessions.begin() as session:
        job_id = Boss(session, schema).send(queue, data, **options)
    assert job_id is not None
    return job_id


def job_row(sessions: sessionmaker[Session], schema: str, job_id: uuid.UUID, queue: str = QUEUE) -> dict[str, Any]:
    with sessions() as session:
        row = (
            session.execute(
                text(
                    f"SELECT state::text AS state, output, retry_count, started_on FROM {schema}.job "
                    "WHERE name = :queue AND id = :id"
                ),
                {"queue": queue, "id": job_id},
            )
            .mappings()
            .one()
        )
        return dict(row)


def state_of(sessions: sessionmaker[Session], schema: str, job_id: uuid.UUID, queue: str = QUEUE) -> str:
    return str(job_row(sessions, schema, job_id, queue)["state"])


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar()


def stays_false(condition: Callable[[], bool], seconds: float) -> bool:
    """``True`` when ``condition`` never held during ``seconds``: for things that must *not* happen."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return False
        time.sleep(0.02)
    return not condition()


def listener_pids(engine: Engine, channel_name: str) -> list[int]:
    """Backends of this database whose last statement was a finished ``LISTEN`` on ``channel_name``, or the
    listener's check of ``pg_listening_channels()`` naming it (what a listener runs after its LISTENs)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle' "
                "AND ((query LIKE 'LISTEN%' AND strpos(query, :quoted) > 0) "
                "OR (query LIKE '%pg_listening_channels()%' AND strpos(query, :literal) > 0)) "
                "AND pid <> pg_backend_pid()"
            ),
            {"quoted": f'"{channel_name}"', "literal": f"'{channel_name}'"},
        )
        return list(rows.scalars())


def wait_listening(engine: Engine, schema: str, queue: str, *, other_than: int | None = None) -> int:
    """Wait until a worker's listener has LISTENed on ``queue``'s channel; it LISTENs to its queues in
    registration order, so pass the last one registered. Returns the listener's backend pid."""
    found: list[int] = []

    def listening() -> bool:
        found[:] = [pid for pid in listener_pids(engine, channel(schema, queue)) if pid != other_than]
        return len(found) == 1

    wait_until(listening, timeout=10)
    return found[0]


@dataclass
class Fetches:
    """The loop iterations of a worker: ``started`` (queue names) as each one began, ``ended`` (queue name,
    whether it found jobs) as each one returned."""

    started: list[str] = field(default_factory=list)
    ended: list[tuple[str, bool]] = field(default_factory=list)

    def idle(self, queue: str) -> bool:
        """The last iteration of ``queue`` ended empty: its loop is (about to be) waiting."""
        mine = [found for name, found in self.ended if name == queue]
        return bool(mine) and not mine[-1]


def record_fetches(worker: Worker) -> Fetches:
    """Record every loop iteration of ``worker`` (call before ``start``)."""
    fetches = Fetches()
    iterate = worker._iterate

    def recording(registration: Any, *rest: Any) -> bool:
        fetches.started.append(registration.name)
        found = iterate(registration, *rest)
        fetches.ended.append((registration.name, found))
        return found

    worker._iterate = recording  # type: ignore[method-assign]
    return fetches


def create_side_table(engine: Engine, schema: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {schema}.side (job_id uuid PRIMARY KEY)"))


def side_rows(engine: Engine, schema: str) -> list[uuid.UUID]:
    with engine.connect() as connection:
        return list(connection.execute(text(f"SELECT job_id FROM {schema}.side")).scalars())


def seconds_into_minute(engine: Engine) -> float:
    return float(scalar(engine, "SELECT extract(epoch FROM now() - date_trunc('minute', now()))"))


def clear_of_minute_end(engine: Engine, margin: float) -> None:
    """Wait, by the database's clock, until at least ``margin`` seconds remain in the current minute."""
    if seconds_into_minute(engine) > 60 - margin:
        wait_until(lambda: seconds_into_minute(engine) < 60 - margin, timeout=margin + 5)


def worker_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "sqla_boss.worker"]


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in worker_records(caplog)]


# ------------------------------------------------------------------------------------------ 1. NOTIFY wake-up


@pytest.mark.parametrize("queue", [QUEUE, "long_" + "q" * 65], ids=["plain_channel", "hashed_channel"])
def test_a_committed_send_wakes_the_waiting_loop_at_once(
    engine: Engine, sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker], queue: str
) -> None:
    create_queues(sessions, installed_schema, queue)
    handled: list[uuid.UUID] = []
    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=30, **QUIET)
    fetches = record_fetches(worker)
    worker.work(queue, lambda jobs: handled.extend(job.id for job in jobs))
    worker.start()
    wait_listening(engine, installed_schema, queue)
    first = send(sessions, installed_schema, queue)
    wait_until(lambda: handled == [first] and fetches.idle(queue), timeout=5)

    second = send(sessions, installed_schema, queue)  # the loop now waits out its 30 s
    started = time.monotonic()
    wait_until(lambda: second in handled, timeout=5)
    assert time.monotonic() - started < 5
    assert handled == [first, second]
    # The completion commits with the loop's next fetch, just after the handler returns.
    wait_until(lambda: state_of(sessions, installed_schema, second, queue) == "completed", timeout=5)


def test_a_rolled_back_send_wakes_nothing(
    engine: Engine, sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    create_queues(sessions, installed_schema, "marker")
    handled: list[uuid.UUID] = []
    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=30, **QUIET)
    fetches = record_fetches(worker)
    worker.work(QUEUE, lambda jobs: handled.extend(job.id for job in jobs))
    worker.work("marker", lambda jobs: handled.extend(job.id for job in jobs))
    worker.start()
    wait_listening(engine, installed_schema, "marker")
    wait_until(lambda: fetches.idle(QUEUE) and fetches.idle("marker"), timeout=5)
    iterations = fetches.started.count(QUEUE)

    with sessions() as session:
        Boss(session, installed_schema).send(QUEUE, {"never": "committed"})
        session.rollback()
    # Notifications arrive in commit order, so the marker's comes after any the rolled-back send made.
    marker = send(sessions, installed_schema, "marker")
    wait_until(lambda: marker in handled, timeout=5)
    assert stays_false(lambda: fetches.started.count(QUEUE) > iterations, 0.3)
    assert handled == [marker]
    assert scalar(engine, f"SELECT count(*) FROM {installed_schema}.job WHERE name = :q", q=QUEUE) == 0

    committed = send(sessions, installed_schema)  # the same loop does wake for a committed send
    wait_until(lambda: committed in handled, timeout=5)


def test_without_listen_a_send_waits_for_the_polling_interval(
    engine: Engine, sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    first = send(sessions, installed_schema)  # before start: the first fetch finds it
    handled: list[uuid.UUID] = []
    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=30, listen=False, **QUIET)
    fetches = record_fetches(worker)
    worker.work(QUEUE, lambda jobs: handled.extend(job.id for job in jobs))
    worker.start()
    wait_until(lambda: handled == [first] and fetches.idle(QUEUE), timeout=5)
    assert listener_pids(engine, channel(installed_schema, QUEUE)) == []

    second = send(sessions, installed_schema)
    assert stays_false(lambda: second in handled, 1.5)
    assert state_of(sessions, installed_schema, second) == "created"
    worker._wake[QUEUE].set()  # what a notification would have done
    wait_until(lambda: second in handled, timeout=5)


@pytest.mark.parametrize(
    "queue", ["jobs", "q" * 70, "é" * 30, "a" * (MAX_CHANNEL_BYTES - len(PREFIX) - len("t_0123456789ab."))]
)
def test_channel_names_agree_between_python_and_sql(engine: Engine, queue: str) -> None:
    schema = "t_0123456789ab"
    with engine.connect() as connection:
        in_sql = connection.execute(select(channel_expression(literal(schema), literal(queue)))).scalar_one()
    assert channel(schema, queue) == in_sql
    assert len(in_sql.encode()) <= MAX_CHANNEL_BYTES
    assert in_sql.startswith(PREFIX)
    plain = f"{PREFIX}{schema}.{queue}"
    assert (in_sql == plain) is (len(plain.encode()) <= MAX_CHANNEL_BYTES)


# ----------------------------------------------------------------------------------------- 2. handler timeout


@pytest.mark.parametrize(
    ("options", "final"),
    [({"retry_limit": 0}, "failed"), ({"retry_delay": 60}, "retry")],
    ids=["failed", "retry"],
)
def test_a_handler_past_expire_in_fails_its_job_and_its_late_result_is_ignored(
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    options: dict[str, Any],
    final: str,
) -> None:
    entered, release = threading.Event(), threading.Event()
    runners: list[threading.Thread] = []

    def handler(jobs: list[Job]) -> str:
        if jobs[0].data["block"]:
            runners.append(threading.current_thread())
            entered.set()
            release.wait(10)
            return "too late"
        return "quick"

    slow = send(sessions, installed_schema, data={"block": True}, expire_in_seconds=1, **options)
    worker = make_worker(workers, sessions, installed_schema, **QUIET)
    worker.work(QUEUE, handler)
    worker.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        wait_until(lambda: state_of(sessions, installed_schema, slow) == final, timeout=5)
        assert time.monotonic() - started > 0.8
    finally:
        release.set()
    row = job_row(sessions, installed_schema, slow)
    assert row["output"]["message"] == TIMEOUT_MESSAGE
    assert row["output"]["name"] == "HandlerTimeoutError"
    assert row["retry_count"] == 0

    runners[0].join(5)  # the abandoned handler has returned "too late" by now
    assert not runners[0].is_alive()
    assert job_row(sessions, installed_schema, slow) == row

    quick = send(sessions, installed_schema, data={"block": False})
    wait_until(lambda: state_of(sessions, installed_schema, quick) == "completed", timeout=5)
    assert job_row(sessions, installed_schema, quick)["output"] == {"value": "quick"}
    assert job_row(sessions, installed_schema, slow) == row
    assert len(runners) == 1


# ------------------------------------------------------------------------------------- 3. transactional mode


@pytest.mark.parametrize(("count", "batch_size"), [(1, 1), (3, 3)], ids=["single", "batch"])
def test_transactional_handler_commits_its_writes_with_the_completion(
    engine: Engine,
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    count: int,
    batch_size: int,
) -> None:
    create_side_table(engine, installed_schema)
    ids = [send(sessions, installed_schema, data={"n": n}) for n in range(count)]
    seen: list[tuple[list[uuid.UUID], Any, Any, Any]] = []

    def handler(jobs: list[Job], session: Session) -> dict[str, int]:
        for job in jobs:
            session.execute(text(f"INSERT INTO {installed_schema}.side VALUES (:id)"), {"id": job.id})
        inside = session.execute(
            text(f"SELECT count(*) FROM {installed_schema}.side WHERE job_id = :id"), {"id": jobs[0].id}
        ).scalar()
        # From outside, the fetch has committed (the job is active) but the handler's insert is not seen yet:
        # it commits with the completion.
        outside_state = state_of(sessions, installed_schema, jobs[0].id)
        seen.append(([job.id for job in jobs], inside, outside_state, side_rows(engine, installed_schema)))
        return {"stored": len(jobs)}

    worker = make_worker(workers, sessions, installed_schema, **QUIET)
    worker.work(QUEUE, handler, transactional=True, batch_size=batch_size)
    worker.start()
    wait_until(lambda: all(state_of(sessions, installed_schema, i) == "completed" for i in ids), timeout=5)
    assert len(seen) == 1
    handled, inside, outside_state, outside_rows = seen[0]
    assert sorted(handled) == sorted(ids)
    assert (inside, outside_state, outside_rows) == (1, "active", [])
    assert sorted(side_rows(engine, installed_schema)) == sorted(ids)
    expected = {"stored": 1} if count == 1 else None
    assert [job_row(sessions, installed_schema, i)["output"] for i in ids] == [expected] * count


@pytest.mark.parametrize(
    ("options", "final", "calls", "retry_count"),
    [
        ({"retry_limit": 1, "retry_delay": 60}, "retry", 1, 0),
        ({"retry_limit": 1, "retry_delay": 0}, "failed", 2, 1),
        ({"retry_limit": 0}, "failed", 1, 0),
    ],
    ids=["first_failure_retries", "retry_used_up", "no_retry"],
)
def test_transactional_handler_that_raises_rolls_back_and_uses_up_a_retry(
    engine: Engine,
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    options: dict[str, Any],
    final: str,
    calls: int,
    retry_count: int,
) -> None:
    create_side_table(engine, installed_schema)
    job_id = send(sessions, installed_schema, **options)
    called: list[uuid.UUID] = []

    def handler(jobs: list[Job], session: Session) -> None:
        called.append(jobs[0].id)
        session.execute(text(f"INSERT INTO {installed_schema}.side VALUES (:id)"), {"id": jobs[0].id})
        raise ValueError("boom")

    worker = make_worker(workers, sessions, installed_schema, **QUIET)
    worker.work(QUEUE, handler, transactional=True)
    worker.start()
    wait_until(lambda: state_of(sessions, installed_schema, job_id) == final, timeout=5)
    row = job_row(sessions, installed_schema, job_id)
    assert row["output"]["name"] == "ValueError"
    assert row["output"]["message"] == "boom"
    assert row["retry_count"] == retry_count
    assert row["started_on"] is not None  # the failure counts as a run, though the fetch was rolled back
    assert side_rows(engine, installed_schema) == []
    assert called == [job_id] * calls


def test_transactional_handler_whose_output_is_no_json_is_rolled_back_and_failed(
    engine: Engine, sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    """The output is checked inside the handler's savepoint: a job failed for its output keeps none of the
    handler's writes (it will run again, by its retry rules)."""
    create_side_table(engine, installed_schema)
    job_id = send(sessions, installed_schema, retry_limit=0)

    def handler(jobs: list[Job], session: Session) -> object:
        session.execute(text(f"INSERT INTO {installed_schema}.side VALUES (:id)"), {"id": jobs[0].id})
        return {1: "a key that is not a string"}

    worker = make_worker(workers, sessions, installed_schema, **QUIET)
    worker.work(QUEUE, handler, transactional=True)
    worker.start()
    wait_until(lambda: state_of(sessions, installed_schema, job_id) == "failed", timeout=5)
    assert job_row(sessions, installed_schema, job_id)["output"]["name"] == "PayloadError"
    assert side_rows(engine, installed_schema) == []


def test_transactional_handler_past_expire_in_is_rolled_back_and_failed(
    engine: Engine, sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    create_side_table(engine, installed_schema)
    entered, release = threading.Event(), threading.Event()
    runners: list[threading.Thread] = []

    def handler(jobs: list[Job], session: Session) -> str:
        session.execute(text(f"INSERT INTO {installed_schema}.side VALUES (:id)"), {"id": jobs[0].id})
        if jobs[0].data["block"]:
            runners.append(threading.current_thread())
            entered.set()
            release.wait(10)
        return "done"

    slow = send(sessions, installed_schema, data={"block": True}, expire_in_seconds=1, retry_limit=0)
    worker = make_worker(workers, sessions, installed_schema, **QUIET)
    worker.work(QUEUE, handler, transactional=True)
    worker.start()
    try:
        assert entered.wait(10)
        wait_until(lambda: state_of(sessions, installed_schema, slow) == "failed", timeout=5)
    finally:
        release.set()
    row = job_row(sessions, installed_schema, slow)
    assert row["output"]["message"] == TIMEOUT_MESSAGE
    runners[0].join(5)  # returns, then cannot commit: its connection was terminated
    assert not runners[0].is_alive()
    assert job_row(sessions, installed_schema, slow) == row
    assert side_rows(engine, installed_schema) == []

    quick = send(sessions, installed_schema, data={"block": False})
    wait_until(lambda: state_of(sessions, installed_schema, quick) == "completed", timeout=5)
    assert job_row(sessions, installed_schema, quick)["output"] == {"value": "done"}
    assert side_rows(engine, installed_schema) == [quick]


# ------------------------------------------------------------------------------------------------------ 4. cron


MINUTE = "SELECT date_trunc('minute', now() AT TIME ZONE 'UTC')"
"""The current minute as pg-boss's ``singleton_on`` holds it: a UTC timestamp without time zone."""


def send_it_jobs(engine: Engine, schema: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                f"SELECT state::text AS state, data, singleton_key, singleton_on, "
                f"date_trunc('minute', created_on AT TIME ZONE 'UTC') AS minute "
                f"FROM {schema}.job WHERE name = :q ORDER BY created_on"
            ),
            {"q": cron.SEND_IT_QUEUE},
        )
        return [dict(row) for row in rows.mappings()]


def cron_on(engine: Engine, schema: str) -> dt.datetime | None:
    value = scalar(engine, f"SELECT cron_on FROM {schema}.version")
    return value if isinstance(value, dt.datetime) else None


def set_cron_on_back(engine: Engine, schema: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {schema}.version SET cron_on = now() - interval '1 minute'"))


def test_worker_cron_sends_one_job_per_schedule_and_minute(
    engine: Engine,
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with sessions.begin() as session:
        boss = Boss(session, installed_schema)
        boss.create_queue("cronq")
        boss.schedule("cronq", "* * * * *", {"tick": True})
    clear_of_minute_end(engine, 10)  # the whole test must run within one minute
    minute = scalar(engine, MINUTE)
    received: list[Job] = []
    worker = make_worker(
        workers,
        sessions,
        installed_schema,
        supervise=False,
        cron_monitor_interval_seconds=1,
        cron_worker_interval_seconds=1,
    )
    worker.work("cronq", lambda jobs: received.extend(jobs))
    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        worker.start()
        wait_until(lambda: len(received) == 1, timeout=8)
        for _ in range(2):  # two more evaluations find the schedule due again in the same minute
            evaluated = cron_on(engine, installed_schema)
            wait_until(lambda: cron_on(engine, installed_schema) != evaluated, timeout=5)  # noqa: B023
        wait_until(lambda: all(job["state"] == "completed" for job in send_it_jobs(engine, installed_schema)))
        assert messages(caplog).count("cron: due cronq") >= 3

        set_cron_on_back(engine, installed_schema)
        due_before = messages(caplog).count("cron: due cronq")
        worker._evaluate_cron()  # wins the turn, finds the schedule due, and queues nothing new
        # (or the supervisor won this turn just before, and logs it in a moment)
        wait_until(lambda: messages(caplog).count("cron: due cronq") > due_before, timeout=3)
    assert [r.getMessage() for r in worker_records(caplog) if r.levelno >= logging.WARNING] == []

    [send_it] = send_it_jobs(engine, installed_schema)
    assert send_it["state"] == "completed"
    assert send_it["singleton_key"] == "cronq"
    assert send_it["singleton_on"] == send_it["minute"] == minute
    assert send_it["data"] == {"name": "cronq", "data": {"tick": True}}
    assert [job.data for job in received] == [{"tick": True}]
    assert scalar(engine, f"SELECT count(*) FROM {installed_schema}.job WHERE name = 'cronq'") == 1
    assert scalar(engine, MINUTE) == minute  # else the test overran its minute


def test_the_first_cron_tick_at_start_finds_the_send_it_queue(
    engine: Engine,
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The send-it queue is created before the supervisor's first tick, which comes at once; otherwise that
    tick fails and, with the default 30 s interval, the schedule waits for the next one."""
    with sessions.begin() as session:
        boss = Boss(session, installed_schema)
        boss.create_queue("cronq")
        boss.schedule("cronq", "* * * * *")
        assert boss.get_queue(cron.SEND_IT_QUEUE) is None
    received = threading.Event()
    # The default 30 s between cron evaluations; the send-it loop polls every second.
    worker = make_worker(workers, sessions, installed_schema, supervise=False, cron_worker_interval_seconds=1)
    worker.work("cronq", lambda jobs: received.set())
    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        worker.start()
        assert received.wait(5)
    assert [r.getMessage() for r in worker_records(caplog) if r.levelno >= logging.WARNING] == []


def test_cron_tick_claims_the_turn_and_reports_unreadable_schedules(
    engine: Engine, sessions: sessionmaker[Session], installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    with sessions.begin() as session:
        boss = Boss(session, installed_schema)
        boss.create_queue(cron.SEND_IT_QUEUE)  # as a worker's start does
        boss.create_queue("goodq")
        boss.create_queue("badq")
        boss.schedule("goodq", "* * * * *", {"v": 1})
        session.execute(
            text(f"INSERT INTO {installed_schema}.schedule (name, cron, timezone) VALUES ('badq', '* * * * *', :tz)"),
            {"tz": "Mars/Base"},
        )
    clear_of_minute_end(engine, 3)  # both wins below must fall in the same minute

    def cron_tick() -> CronTick:
        """The cron evaluation a worker's supervisor runs: the named operation, on the driver."""
        with sessions.begin() as session:
            return Driver(installed_schema).run(session, operations_for(installed_schema, {}).cron_tick(30))

    first = cron_tick()
    assert first.won
    assert first.due == ["goodq"]
    [unreadable] = first.unreadable
    assert unreadable.name == "badq"
    assert isinstance(unreadable.error, InvalidTimezoneError)
    assert "Mars/Base" in str(unreadable.error)

    assert cron_tick() == CronTick(won=False)

    set_cron_on_back(engine, installed_schema)
    again = cron_tick()
    assert (again.won, again.due, [u.name for u in again.unreadable]) == (True, ["goodq"], ["badq"])
    [send_it] = send_it_jobs(engine, installed_schema)  # the second win queued no second job this minute
    assert (send_it["singleton_key"], send_it["singleton_on"]) == ("goodq", send_it["minute"])
    assert send_it["data"] == {"name": "goodq", "data": {"v": 1}}

    set_cron_on_back(engine, installed_schema)
    worker = Worker(sessions, installed_schema)  # never started: only its cron evaluation runs
    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        worker._evaluate_cron()
    [warning] = [record for record in worker_records(caplog) if record.levelno == logging.WARNING]
    assert warning.queue == "badq"  # type: ignore[attr-defined]
    assert "Mars/Base" in warning.getMessage()
    assert "cron: due goodq" in messages(caplog)
    assert len(send_it_jobs(engine, installed_schema)) == 1


def schedule_of(expression: str, timezone: str | None = "UTC", name: str = "q") -> Schedule:
    return Schedule(name=name, cron=expression, timezone=timezone)


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.timezone.utc)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "is_due"),
    [
        (utc(2025, 1, 15, 14, 0, 30), True),  # 09:00:30 EST (UTC-5)
        (utc(2025, 1, 15, 14, 1, 10), False),  # 70 s late: no catch-up
        (utc(2025, 1, 15, 13, 0, 30), False),  # 08:00:30 EST
        (utc(2025, 7, 15, 13, 0, 30), True),  # 09:00:30 EDT (UTC-4)
        (utc(2025, 7, 15, 14, 0, 30), False),  # 10:00:30 EDT
    ],
)
def test_due_evaluates_in_the_schedule_time_zone(now: dt.datetime, is_due: bool) -> None:
    schedule = schedule_of("0 9 * * *", "America/New_York")
    found, unreadable = cron.due([schedule], now)
    assert (found == [schedule], unreadable) == (is_due, [])


def test_previous_match_is_strictly_before_now_and_in_the_time_zone() -> None:
    previous = cron.previous_match("0 9 * * *", "America/New_York", utc(2025, 1, 15, 14, 0, 30))
    assert previous == utc(2025, 1, 15, 14, 0)
    assert previous.utcoffset() == dt.timedelta(hours=-5)
    assert cron.previous_match("0 9 * * *", "UTC", utc(2025, 1, 15, 9, 0)) == utc(2025, 1, 14, 9, 0)


def test_six_field_expressions_have_seconds_first() -> None:
    assert cron.croniter_expression("30 0 9 * * *") == "0 9 * * * 30"
    assert cron.croniter_expression("0 9 * * *") == "0 9 * * *"
    assert cron.previous_match("30 0 9 * * *", "UTC", utc(2025, 1, 15, 9, 0, 45)) == utc(2025, 1, 15, 9, 0, 30)
    assert cron.previous_match("*/10 * * * * *", "UTC", utc(2025, 1, 15, 12, 0, 25)) == utc(2025, 1, 15, 12, 0, 20)
    schedule = schedule_of("30 0 9 * * *")
    assert cron.due([schedule], utc(2025, 1, 15, 9, 1, 29))[0] == [schedule]
    assert cron.due([schedule], utc(2025, 1, 15, 9, 1, 31))[0] == []
    with pytest.raises(InvalidCronError):
        cron.croniter_expression("* * * *")


def test_due_reports_unreadable_schedules_and_still_finds_the_others() -> None:
    good = schedule_of("* * * * *", None, name="good")  # no time zone: UTC
    bad_zone = schedule_of("* * * * *", "Mars/Base", name="zone")
    bad_cron = schedule_of("61 * * * *", name="expression")
    found, unreadable = cron.due([bad_zone, good, bad_cron], utc(2025, 1, 15, 12, 0, 30))
    assert found == [good]
    assert [(u.name, type(u.error)) for u in unreadable] == [
        ("zone", InvalidTimezoneError),
        ("expression", InvalidCronError),
    ]


def test_target_job_keeps_what_insert_honours_in_its_terms() -> None:
    payload = {
        "name": "q",
        "data": {"a": 1},
        "id": "00000000-0000-4000-8000-000000000001",
        "priority": 3,
        "startAfter": "2030-01-01T00:00:00Z",
        "singletonKey": "k",
        "singletonSeconds": 60,
        "expireInSeconds": 77,
        "keepUntil": "2031-01-01T00:00:00Z",
        "retryLimit": 4,
        "retryDelay": 5,
        "retryBackoff": True,
        "deadLetter": "dlq",
        "expireInMinutes": 3,
        "retentionDays": 9,
        "singletonMinutes": 2,
        "tz": "Europe/Paris",
    }
    assert cron.target_job(payload) == {
        "name": "q",
        "data": {"a": 1},
        "id": "00000000-0000-4000-8000-000000000001",
        "priority": 3,
        "start_after": "2030-01-01T00:00:00Z",
        "singleton_key": "k",
        "singleton_seconds": 60,
        "expire_in_seconds": 77,
        "keep_until": "2031-01-01T00:00:00Z",
        "retry_limit": 4,
        "retry_delay": 5,
        "retry_backoff": True,
        "dead_letter": "dlq",
    }
    assert cron.target_job({"name": "q", "data": None, "priority": None}) == {"name": "q"}
    with pytest.raises(InvalidCronError):
        cron.target_job(["q"])


def test_send_it_job_lets_the_stored_options_override_name_and_data() -> None:
    schedule = Schedule(name="q", cron="* * * * *", timezone="UTC", data={"a": 1}, options={"priority": 2})
    assert cron.send_it_job(schedule) == {
        "name": cron.SEND_IT_QUEUE,
        "data": {"name": "q", "data": {"a": 1}, "priority": 2},
        "singleton_key": "q",
        "singleton_seconds": 60,
    }
    schedule.options = {"data": {"b": 2}}
    assert cron.send_it_job(schedule)["data"] == {"name": "q", "data": {"b": 2}}


# ------------------------------------------------------------------------------------------------ 5. supervisor


def test_the_supervisor_expires_active_jobs_past_their_expire_in(
    engine: Engine,
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_id = send(sessions, installed_schema, expire_in_seconds=1)
    with sessions.begin() as session:
        assert [job.id for job in Boss(session, installed_schema).fetch(QUEUE)] == [job_id]
    maintained_before = scalar(engine, f"SELECT maintained_on FROM {installed_schema}.version")
    wait_until(
        lambda: bool(
            scalar(
                engine,
                f"SELECT started_on + expire_in < now() FROM {installed_schema}.job WHERE id = :id",
                id=job_id,
            )
        ),
        timeout=5,
    )
    assert state_of(sessions, installed_schema, job_id) == "active"  # nothing expires it but the supervisor

    worker = make_worker(
        workers, sessions, installed_schema, maintenance_interval_seconds=1, schedule=False, listen=False
    )
    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        worker.start()
        wait_until(lambda: state_of(sessions, installed_schema, job_id) != "active", timeout=6)
        # logged once archive and drop, which follow the expiry, are done too
        wait_until(lambda: any(m.startswith("maintenance: 1 expired") for m in messages(caplog)), timeout=5)
    row = job_row(sessions, installed_schema, job_id)
    assert (row["state"], row["output"]) == ("retry", EXPIRED_OUTPUT)  # retry_limit 2: one retry used
    maintained_after = scalar(engine, f"SELECT maintained_on FROM {installed_schema}.version")
    assert maintained_after is not None
    assert maintained_after != maintained_before


def test_monitor_states_are_logged_with_the_counts(
    engine: Engine,
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    send(sessions, installed_schema)
    send(sessions, installed_schema)
    worker = make_worker(workers, sessions, installed_schema, monitor_state_interval_seconds=1, listen=False, **QUIET)
    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        worker.start()
        wait_until(lambda: any(m.startswith("monitor-states") for m in messages(caplog)), timeout=5)
    record = next(r for r in worker_records(caplog) if r.getMessage().startswith("monitor-states"))
    states: dict[str, Any] = record.states  # type: ignore[attr-defined]
    assert (states["created"], states["all"]) == (2, 2)
    assert states["queues"][QUEUE]["created"] == 2
    assert record.queue == ""  # type: ignore[attr-defined]
    assert scalar(engine, f"SELECT monitored_on FROM {installed_schema}.version") is not None


# ------------------------------------------------------------------------------------------------- 6. pub/sub


def test_publish_reaches_the_handlers_of_every_subscribed_queue(
    engine: Engine, sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    with sessions.begin() as session:
        boss = Boss(session, installed_schema)
        for name in ("q1", "q2", "q3"):
            boss.create_queue(name)
        boss.subscribe("evt", "q1")
        boss.subscribe("evt", "q2")
        boss.subscribe("other", "q3")
    received: dict[str, list[tuple[uuid.UUID, Any]]] = {"q1": [], "q2": [], "q3": []}
    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=30, **QUIET)
    for name in received:
        worker.work(name, lambda jobs, name=name: received[name].extend((job.id, job.data) for job in jobs))
    worker.start()
    wait_listening(engine, installed_schema, "q3")

    with sessions.begin() as session:
        ids = Boss(session, installed_schema).publish("evt", {"hello": "world"})
    assert len(ids) == 2
    wait_until(lambda: bool(received["q1"] and received["q2"]), timeout=5)
    assert sorted([*received["q1"], *received["q2"]]) == sorted((i, {"hello": "world"}) for i in ids)
    assert received["q3"] == []


# ------------------------------------------------------------------------------------- 7. listener reconnect


def test_the_listener_reconnects_after_losing_its_connection(
    engine: Engine,
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[uuid.UUID] = []
    worker = make_worker(workers, sessions, installed_schema, polling_interval_seconds=30, **QUIET)
    fetches = record_fetches(worker)
    worker.work(QUEUE, lambda jobs: handled.extend(job.id for job in jobs))
    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        worker.start()
        listener = wait_listening(engine, installed_schema, QUEUE)
        assert scalar(engine, "SELECT pg_terminate_backend(:pid)", pid=listener) is True
        reconnected = wait_listening(engine, installed_schema, QUEUE, other_than=listener)
        assert reconnected != listener
        wait_until(lambda: fetches.idle(QUEUE), timeout=5)

        job_id = send(sessions, installed_schema)
        wait_until(lambda: job_id in handled, timeout=5)  # polling alone would take 30 s
        wait_until(lambda: "listener reconnected" in messages(caplog), timeout=5)
    lost = [r for r in worker_records(caplog) if r.getMessage().startswith("listener connection lost")]
    assert len(lost) == 1
    assert lost[0].levelno == logging.WARNING
    assert "; reconnecting in" in lost[0].getMessage()
    assert lost[0].exc_info is None  # one line: the traceback is logged at DEBUG


# ------------------------------------------------------------------------------------------------- 8. logging


def test_every_worker_log_record_carries_queue_and_job_id(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker], caplog: pytest.LogCaptureFixture
) -> None:
    entered, release = threading.Event(), threading.Event()

    def handler(jobs: list[Job]) -> str:
        kind = jobs[0].data["kind"]
        if kind == "raise":
            raise ValueError("boom")
        if kind in ("slow", "hold"):
            entered.set()
            release.wait(10)
        return kind

    worker = make_worker(workers, sessions, installed_schema, **QUIET)
    worker.work(QUEUE, handler)
    with caplog.at_level(logging.DEBUG, logger="sqla_boss.worker"):
        ok = send(sessions, installed_schema, data={"kind": "ok"})
        raising = send(sessions, installed_schema, data={"kind": "raise"}, retry_limit=0)
        slow = send(sessions, installed_schema, data={"kind": "slow"}, retry_limit=0, expire_in_seconds=1)
        worker.start()
        try:
            wait_until(lambda: state_of(sessions, installed_schema, slow) == "failed", timeout=8)
            entered.clear()
            held = send(sessions, installed_schema, data={"kind": "hold"})
            assert entered.wait(10)
            worker.stop(graceful=False)
        finally:
            release.set()
    assert state_of(sessions, installed_schema, ok) == "completed"
    assert state_of(sessions, installed_schema, raising) == "failed"
    assert job_row(sessions, installed_schema, held)["output"] == SHUTDOWN_OUTPUT

    records = worker_records(caplog)
    assert records
    for record in records:
        assert hasattr(record, "queue"), record.getMessage()
        assert hasattr(record, "job_id"), record.getMessage()
    for job_id in (ok, raising, slow, held):
        about = [record for record in records if str(job_id) in record.getMessage()]
        assert about, f"no record about job {job_id}"
        for record in about:
            assert record.queue == QUEUE  # type: ignore[attr-defined]
            assert str(job_id) in record.job_id  # type: ignore[attr-defined]
    levels = {record.levelno for record in records if str(held) in record.getMessage()}
    assert logging.WARNING in levels  # the shutdown failure
