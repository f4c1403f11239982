"""``sqla-boss work`` as a real process: SIGTERM stops it gracefully, SIGKILL loses no job, on versions 24 and 46.

The worker module is written to a temporary directory and run by the command line, as a user would run it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Engine, text
from sqlalchemy.orm import Session

from sqla_boss import Boss

QUEUE = "jobs"

WORKER_MODULE = """
    from __future__ import annotations

    import time

    from sqlalchemy import create_engine, text

    from sqla_boss import Worker


    def make(url, schema):
        engine = create_engine(url)
        worker = Worker(engine, schema, polling_interval_seconds=0.5, maintenance_interval_seconds=1, schedule=False)
        return with_handlers(worker, engine, schema)


    def make46(url, schema):
        # On version 46 expiry is the supervise pass's monitor step: both every second.
        engine = create_engine(url)
        worker = Worker(
            engine,
            schema,
            polling_interval_seconds=0.5,
            supervise_interval_seconds=1,
            monitor_interval_seconds=1,
            schedule=False,
        )
        return with_handlers(worker, engine, schema)


    def supervised(url, schema):
        # Cron evaluated every second: the supervisor re-reads the schema's version at each tick.
        engine = create_engine(url)
        worker = Worker(engine, schema, polling_interval_seconds=0.5, cron_monitor_interval_seconds=1)
        return with_handlers(worker, engine, schema)


    def ghost(url, schema):
        worker = Worker(create_engine(url), schema)
        worker.work("ghost", lambda jobs: None)
        return worker


    def with_handlers(worker, engine, schema):

        def record(table, job):
            with engine.begin() as connection:
                connection.execute(
                    text(f"INSERT INTO {schema}.{table} (job_id, attempt) VALUES (:id, :attempt)"),
                    {"id": job.id, "attempt": job.retry_count},
                )

        @worker.work("jobs")
        def handle(jobs):
            (job,) = jobs
            record("started", job)
            if job.data.get("raise"):
                raise ValueError(f"cannot handle {job.data['raise']}")
            if job.data.get("hang_first") and job.retry_count == 0:
                time.sleep(3600)
            time.sleep(job.data.get("seconds", 0))
            record("finished", job)
            return {"attempt": job.retry_count}

        @worker.work("bookings", transactional=True)
        def book(jobs, session):
            insert = text(f"INSERT INTO {schema}.finished (job_id, attempt) VALUES (:id, 0)")
            session.execute(insert, {"id": jobs[0].id})

        return worker
"""


@pytest.fixture
def schema(engine: Engine, installed_schema: str) -> str:
    with Session(engine) as session, session.begin():
        boss = Boss(session, installed_schema)
        boss.create_queue(QUEUE)
        boss.create_queue("bookings")
        for table in ("started", "finished"):
            session.execute(text(f"CREATE TABLE {installed_schema}.{table} (job_id uuid, attempt int)"))
    return installed_schema


@pytest.fixture
def start_worker(tmp_path: Path, database_url: URL, schema: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    module = tmp_path / "worker_app.py"
    module.write_text(textwrap.dedent(WORKER_MODULE))
    started: list[subprocess.Popen[str]] = []

    def start(*options: str, factory: str = "make") -> subprocess.Popen[str]:
        environment = {**os.environ, "DATABASE_URL": database_url.render_as_string(hide_password=False)}
        command = [sys.executable, "-c", "from sqla_boss.cli import main; raise SystemExit(main())"]
        process = subprocess.Popen(
            [*command, "work", f"worker_app:{factory}", "--schema", schema, *options],
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


def send(engine: Engine, schema: str, data: dict[str, Any], *, queue: str = QUEUE, **options: Any) -> uuid.UUID:
    with Session(engine) as session, session.begin():
        job_id = Boss(session, schema).send(queue, data, **options)
    assert job_id is not None
    return job_id


def rows(engine: Engine, schema: str, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(text(sql.format(schema=schema)), params))


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def factory_for(version: int) -> str:
    """The worker module's factory for a schema at ``version``."""
    return "make46" if version == 46 else "make"


@pytest.mark.parametrize("schema_version", [24, 46], indirect=True)
def test_sigterm_lets_the_job_in_flight_finish_and_starts_no_new_one(
    engine: Engine, schema: str, schema_version: int, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    first = send(engine, schema, {"seconds": 1.5})
    process = start_worker("--queues", QUEUE, factory=factory_for(schema_version))
    wait_until(lambda: rows(engine, schema, "SELECT 1 FROM {schema}.started"))
    second = send(engine, schema, {"seconds": 0})
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    assert "stopped" in stderr
    states = dict(rows(engine, schema, "SELECT id, state::text FROM {schema}.job WHERE name = :q", q=QUEUE))
    assert states == {first: "completed", second: "created"}
    assert [row[0] for row in rows(engine, schema, "SELECT job_id FROM {schema}.finished")] == [first]


@pytest.mark.parametrize("schema_version", [24, 46], indirect=True)
def test_a_job_of_a_killed_worker_is_expired_by_maintenance_and_completed_by_another(
    engine: Engine, schema: str, schema_version: int, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    job_id = send(engine, schema, {"hang_first": True}, expire_in_seconds=2, retry_limit=1)
    doomed = start_worker("--queues", QUEUE, factory=factory_for(schema_version))
    wait_until(lambda: rows(engine, schema, "SELECT 1 FROM {schema}.started"))
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=10)
    assert rows(engine, schema, "SELECT state::text FROM {schema}.job WHERE id = :id", id=job_id) == [("active",)]

    # Its maintenance (its supervisor on 46) expires the job, its loop runs it again.
    survivor = start_worker("--queues", QUEUE, factory=factory_for(schema_version))
    wait_until(
        lambda: rows(engine, schema, "SELECT 1 FROM {schema}.job WHERE id = :id AND state = 'completed'", id=job_id)
    )
    survivor.send_signal(signal.SIGTERM)
    survivor.communicate(timeout=30)

    ((state, retry_count, output),) = rows(
        engine, schema, "SELECT state::text, retry_count, output FROM {schema}.job WHERE id = :id", id=job_id
    )
    assert (state, retry_count, output) == ("completed", 1, {"attempt": 1})
    assert sorted(rows(engine, schema, "SELECT job_id, attempt FROM {schema}.started")) == [(job_id, 0), (job_id, 1)]
    assert rows(engine, schema, "SELECT job_id, attempt FROM {schema}.finished") == [(job_id, 1)]


def test_work_runs_only_the_queues_asked_for_with_the_mode_asked_for(
    engine: Engine, schema: str, start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    booking = send(engine, schema, {}, queue="bookings")
    job = send(engine, schema, {})
    process = start_worker("--queues", "bookings", "--concurrency", "2")
    wait_until(lambda: rows(engine, schema, "SELECT 1 FROM {schema}.job WHERE state = 'completed'"))
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    assert "2 loop(s) on queue(s) bookings" in stderr
    states = dict(rows(engine, schema, "SELECT id, state::text FROM {schema}.job"))
    assert states == {booking: "completed", job: "created"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["worker_app:make", "--queues", "nowhere"], "no handler is registered for queue(s) nowhere"),
        (["worker_app:missing"], "has no attribute 'missing'"),
        (["no_such_module:make"], "cannot import 'no_such_module'"),
        (["worker_app"], "expected MODULE:ATTR"),
        (["worker_app:make", "--concurrency", "0"], "concurrency must be a whole number of at least 1"),
    ],
)
def test_work_refuses_what_it_cannot_run(
    tmp_path: Path, database_url: URL, schema: str, arguments: list[str], message: str
) -> None:
    (tmp_path / "worker_app.py").write_text(textwrap.dedent(WORKER_MODULE))
    environment = {**os.environ, "DATABASE_URL": database_url.render_as_string(hide_password=False)}
    command = [sys.executable, "-c", "from sqla_boss.cli import main; raise SystemExit(main())"]
    result = subprocess.run(
        [*command, "work", *arguments, "--schema", schema],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr


# ------------------------------------------------------------------------- failing fast, signals, health


@pytest.fixture
def start_logged(tmp_path: Path, database_url: URL, schema: str) -> Iterator[Callable[..., tuple[Any, Path]]]:
    """``sqla-boss work worker_app:TARGET``, its standard error written to a file the test can read as it runs."""
    (tmp_path / "worker_app.py").write_text(textwrap.dedent(WORKER_MODULE))
    started: list[subprocess.Popen[str]] = []

    def start(target: str, *options: str, schema_name: str = schema, url: str | None = None) -> tuple[Any, Path]:
        log = tmp_path / f"stderr-{len(started)}.log"
        environment = {**os.environ, "DATABASE_URL": url or database_url.render_as_string(hide_password=False)}
        command = [sys.executable, "-c", "from sqla_boss.cli import main; raise SystemExit(main())"]
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [*command, "work", f"worker_app:{target}", "--schema", schema_name, *options],
                cwd=tmp_path,
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )
        started.append(process)
        return process, log

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def ended(process: Any, seconds: float) -> int:
    """The process's exit status, once it has exited within ``seconds``."""
    return int(process.wait(timeout=seconds))


@pytest.mark.parametrize(
    ("target", "options", "status", "line"),
    [
        ("make", ["--schema", "nosuch"], 2, "sqla-boss: schema 'nosuch' holds no pg-boss tables; run sqla-boss"),
        ("ghost", [], 2, "sqla-boss: no queue 'ghost' in schema"),
        ("make", ["--url", "postgresql://postgres@127.0.0.1:1/test"], 1, "sqla-boss: cannot work on schema"),
    ],
    ids=["no schema", "no queue", "no database"],
)
def test_work_fails_fast_with_one_line_and_its_status(
    start_logged: Callable[..., tuple[Any, Path]], target: str, options: list[str], status: int, line: str
) -> None:
    started = time.monotonic()
    process, log = start_logged(target, *options)
    assert ended(process, 20) == status
    assert time.monotonic() - started < 20
    stderr = log.read_text()
    assert line in stderr, stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr


def test_a_second_signal_stops_at_once_and_fails_the_job_in_flight(
    start_logged: Callable[..., tuple[Any, Path]], engine: Engine, schema: str
) -> None:
    process, log = start_logged("make")
    job_id = send(engine, schema, {"seconds": 120})
    wait_until(lambda: rows(engine, schema, "SELECT 1 FROM {schema}.started"))
    process.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping on SIGTERM" in log.read_text(), timeout=10)
    assert "waiting up to 30 s for 1 job(s) in flight (signal again to stop now)" in log.read_text()
    assert process.poll() is None  # the graceful stop waits for the job
    process.send_signal(signal.SIGINT)
    assert ended(process, 15) == 128 + signal.SIGINT
    [(state, output)] = rows(engine, schema, "SELECT state::text, output FROM {schema}.job WHERE id = :id", id=job_id)
    assert (state, output) == ("retry", {"value": "pg-boss shut down while active"})
    assert "stopping now on a second signal (SIGINT)" in log.read_text()


def test_a_failed_handler_is_one_warning_with_its_traceback(
    start_logged: Callable[..., tuple[Any, Path]], engine: Engine, schema: str
) -> None:
    process, log = start_logged("make")
    job_id = send(engine, schema, {"raise": "this one"}, retry_limit=0)
    failed = "SELECT 1 FROM {schema}.job WHERE id = :id AND state = 'failed'"
    wait_until(lambda: rows(engine, schema, failed, id=job_id))
    process.send_signal(signal.SIGTERM)
    assert ended(process, 20) == 0
    lines = log.read_text().splitlines()
    [failure] = [line for line in lines if "failed: ValueError: cannot handle this one" in line]
    assert " WARNING " in failure
    assert failure.count(str(job_id)) == 1
    after = lines[lines.index(failure) + 1 :]
    assert after[0] == "Traceback (most recent call last):"


def test_healthz_and_a_schema_changed_under_a_running_worker(
    start_logged: Callable[..., tuple[Any, Path]], engine: Engine, schema: str
) -> None:
    import json
    import re
    import urllib.error
    import urllib.request

    process, log = start_logged("supervised", "--health-port", "0", "--stop-timeout", "10")
    wait_until(lambda: "serving /healthz on 0.0.0.0 port" in log.read_text(), timeout=10)
    port = int(re.search(r"serving /healthz on 0.0.0.0 port (\d+)", log.read_text()).group(1))  # type: ignore[union-attr]

    def health() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    wait_until(lambda: health()[0] == 200 and len(health()[1]["loops"]) == 3, timeout=10)  # send-it's comes last
    _, body = health()
    assert body["status"] == "ok"
    assert {loop["queue"] for loop in body["loops"]} == {"jobs", "bookings", "__pgboss__send-it"}
    assert all(loop["last_fetch_seconds_ago"] is not None for loop in body["loops"])

    send(engine, schema, {"seconds": 120})  # keeps the graceful stop waiting, so the refusal can be seen
    wait_until(lambda: rows(engine, schema, "SELECT 1 FROM {schema}.started"))
    with engine.begin() as connection:  # as if the schema went to pg-boss 12's: a worker started on 24 must stop
        connection.execute(text(f"UPDATE {schema}.version SET version = 46"))
    wait_until(lambda: health()[0] == 503, timeout=10)
    assert health()[1]["status"] == "refused"
    assert ended(process, 30) == 2
    stderr = log.read_text()
    assert "holds pg-boss schema version 46; this sqla_boss runs version 24" in stderr
    assert "the worker stops fetching" in stderr
