"""``Worker`` and ``AsyncWorker`` running beside the real Node pg-boss 10.4.2 on one schema (PGBOSS10.md §7, §8.4, §9).

pg-boss runs in the background through tests/pgboss_node/driver.mjs (``PgBoss.spawn``): its ``workSql`` action
registers a worker whose handler runs SQL per job, and ``waitSql`` keeps the process running until the test
says so (a condition in SQL), then it stops.

1. **Exactly once, mixed.** 2,000 jobs, worked at the same time by two threaded ``Worker``s, two ``AsyncWorker``s
   and a Node worker. Every handler records its job in a table keyed by job id with a plain INSERT, so a second
   run of any job would fail it. Each job runs once, every job completes, and every worker takes part.
2. **Cron stored by Node, fired by Python.** A schedule pg-boss stored is evaluated by a Python worker, whose
   send-it worker queues the job and whose handler receives it.
3. **Cron by Python and Node together.** Both evaluate the same schedule over and over within one minute (the
   test keeps moving ``version.cron_on`` back so every tick wins its claim): the send-it singleton slot lets
   exactly one send-it job, and so one job, through.
4. **Maintenance turns.** Two Python workers and a supervising pg-boss, all on a 1 s interval: maintenance runs
   about once per interval across the three, never twice within one.

Who claimed what is read from triggers on ``version`` (test instrumentation only): each claim of ``cron_on`` or
``maintained_on`` is logged with the claiming session's ``application_name``, which every worker here sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from pgboss import (  # noqa: F401  (the fixtures pgboss and pgboss_install)
    PgBoss,
    SpawnedPgBoss,
    call,
    pgboss_fixture,
    pgboss_install_fixture,
    start,
)
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session
from support import LoopThread

from sqla_boss import AsyncWorker, Boss, Job, Worker
from sqla_boss.cron import SEND_IT_QUEUE
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map

pytestmark = pytest.mark.pgboss

T = TypeVar("T")

QUIET = {"supervise": False, "schedule": False}
STOP = call("stop", {"graceful": False})
NODE_APP = "pgboss"
"""The ``application_name`` pg-boss gives its connections."""


# ------------------------------------------------------------------------------------------------ helpers


def poll(condition: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.05) -> T:
    """Call ``condition`` until it returns something other than ``None``/``False``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), params)


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar()


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(text(sql), params))


@contextlib.contextmanager
def boss_on(engine: Engine, schema: str) -> Iterator[Boss]:
    """A ``Boss`` on a session of its own, committed at the end of the block."""
    translated = engine.execution_options(schema_translate_map=schema_translate_map(schema))
    with Session(translated) as session, session.begin():
        yield Boss(session, schema=schema)


def app_engine(database_url: URL, name: str) -> Engine:
    """An engine whose connections carry ``application_name`` ``name``, so the claim log names them."""
    return create_engine(database_url, connect_args={"application_name": name})


def minute_room(engine: Engine, seconds: float) -> dt.datetime:
    """Make sure ``seconds`` remain in the database's current minute, waiting for the next one if they do not;
    return the start of the minute the test then runs in."""
    now = scalar(engine, "SELECT now()")
    into = now.second + now.microsecond / 1e6
    if into > 60 - seconds:
        time.sleep(60 - into + 0.2)  # a wait for the clock itself: nothing to poll
        now = scalar(engine, "SELECT now()")
    minute = now.replace(second=0, microsecond=0)
    assert isinstance(minute, dt.datetime)
    return minute


def slot(minute: dt.datetime) -> dt.datetime:
    """``minute`` as a ``singleton_on`` reads: a UTC timestamp without time zone."""
    return minute.astimezone(dt.timezone.utc).replace(tzinfo=None)


def troubles(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What sqla_boss logged at WARNING or above, or about failed jobs."""
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("sqla_boss") and (r.levelno >= logging.WARNING or "failed" in r.getMessage())
    ]


def log_claims(engine: Engine, schema: str, column: str) -> str:
    """A trigger logging every change of ``version.<column>`` (a won claim) with its session's application_name;
    returns the log table's qualified name."""
    quoted = quote_identifier(schema)
    table = f"{quoted}.{column}_claims"
    execute(
        engine,
        f"CREATE TABLE {table} (value timestamptz, app text, logged_at timestamptz DEFAULT clock_timestamp())",
    )
    execute(
        engine,
        f"CREATE FUNCTION {quoted}.log_{column}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO {table} (value, app) VALUES (NEW.{column}, current_setting('application_name')); "
        "RETURN NEW; END $$",
    )
    execute(
        engine,
        f"CREATE TRIGGER log_{column} AFTER UPDATE OF {column} ON {quoted}.version FOR EACH ROW "
        f"WHEN (NEW.{column} IS DISTINCT FROM OLD.{column}) EXECUTE FUNCTION {quoted}.log_{column}()",
    )
    return table


def claims_by_app(engine: Engine, table: str, apps: set[str]) -> list[tuple[dt.datetime, str]]:
    """The claims the named applications made, in order."""
    found = rows(engine, f"SELECT value, app FROM {table} ORDER BY value")
    return [(value, app) for value, app in found if app in apps]


class Halt:
    """A flag table a spawned pg-boss waits on (``waitSql``): it stops once the test raises the flag. Its polls
    also leave a row behind, so the test knows when pg-boss has started (:meth:`waiting`)."""

    def __init__(self, engine: Engine, schema: str) -> None:
        self.engine = engine
        self.table = f"{quote_identifier(schema)}.halt"
        self.polls = f"{quote_identifier(schema)}.halt_polls"
        execute(engine, f"CREATE TABLE {self.table} (at timestamptz DEFAULT now())")
        execute(engine, f"CREATE TABLE {self.polls} (at timestamptz DEFAULT now())")

    def wait_action(self, timeout_ms: int) -> dict[str, Any]:
        polled = f"INSERT INTO {self.polls} SELECT WHERE NOT EXISTS (SELECT FROM {self.polls}) RETURNING 1"
        return call("waitSql", f"WITH polled AS ({polled}) SELECT EXISTS (SELECT FROM {self.table})", timeout_ms)

    def waiting(self) -> bool:
        """pg-boss's start() has returned (its timers run) and it waits for the flag."""
        return bool(scalar(self.engine, f"SELECT EXISTS (SELECT FROM {self.polls})"))

    def raise_flag(self) -> None:
        execute(self.engine, f"INSERT INTO {self.table} DEFAULT VALUES")


class AsyncWorkers(LoopThread):
    """``AsyncWorker``s on an event loop of their own, in a background thread, started and stopped from the test."""

    def __init__(
        self,
        database_url: URL,
        schema: str,
        setups: list[tuple[dict[str, Any], Callable[[AsyncWorker, AsyncEngine], None]]],
        *,
        application_name: str = "sqla_boss_async",
    ) -> None:
        super().__init__("async-workers")
        self.database_url = database_url
        self.schema = schema
        self.setups = setups
        self.application_name = application_name

    async def run(self, stop: asyncio.Event) -> None:
        engine = create_async_engine(self.database_url, connect_args={"application_name": self.application_name})
        workers: list[AsyncWorker] = []
        try:
            for options, setup in self.setups:
                worker = AsyncWorker(engine, self.schema, **options)
                workers.append(worker)
                setup(worker, engine)
                await worker.start()
            self.started.set()
            await stop.wait()
        finally:
            for worker in workers:
                await worker.stop(graceful=True)
            await engine.dispose()


# ================================================================================ 1. exactly once, mixed

JOBS = 2000
MIXED = "mixed"
THREAD_LABELS = ("thread-a", "thread-b")
ASYNC_LABELS = ("async-a", "async-b")
NODE_LABEL = "node"
HANDLER_PAUSE = 0.002
"""Each Python batch pauses this long, so the run lasts long enough for every worker to take part."""


def job_states(engine: Engine, schema: str, name: str) -> dict[str, int]:
    found = rows(
        engine, f"SELECT state::text, count(*) FROM {quote_identifier(schema)}.job WHERE name = :n GROUP BY 1", n=name
    )
    return {state: count for state, count in found}


def test_each_job_runs_exactly_once_across_threads_asyncio_and_node(
    pgboss: PgBoss, engine: Engine, database_url: URL, installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = installed_schema
    quoted = quote_identifier(schema)
    caplog.set_level(logging.INFO, logger="sqla_boss")
    execute(engine, f"CREATE TABLE {quoted}.executions (job_id uuid PRIMARY KEY, worker text NOT NULL)")
    with boss_on(engine, schema) as boss:
        boss.create_queue(MIXED)
        ids = boss.insert([{"name": MIXED, "data": {"n": n}} for n in range(JOBS)])
    assert len(set(ids)) == JOBS

    insert = text(f"INSERT INTO {quoted}.executions (job_id, worker) VALUES (:id, :worker)")

    def thread_handler(label: str) -> Callable[[list[Job]], None]:
        def handler(jobs: list[Job]) -> None:
            with engine.begin() as connection:
                connection.execute(insert, [{"id": job.id, "worker": label} for job in jobs])
            time.sleep(HANDLER_PAUSE)

        return handler

    def async_setup(label: str, batch_size: int) -> Callable[[AsyncWorker, AsyncEngine], None]:
        def setup(worker: AsyncWorker, async_engine: AsyncEngine) -> None:
            async def handler(jobs: list[Job]) -> None:
                async with async_engine.begin() as connection:
                    await connection.execute(insert, [{"id": job.id, "worker": label} for job in jobs])
                await asyncio.sleep(HANDLER_PAUSE)

            worker.work(MIXED, handler, concurrency=2, batch_size=batch_size)

        return setup

    worker_options: dict[str, Any] = {"supervise": False, "schedule": False, "polling_interval_seconds": 0.5}
    threaded = [Worker(engine, schema, **worker_options) for _ in THREAD_LABELS]
    threaded[0].work(MIXED, thread_handler(THREAD_LABELS[0]), concurrency=2)
    threaded[1].work(MIXED, thread_handler(THREAD_LABELS[1]), concurrency=2, batch_size=10)
    asynchronous = AsyncWorkers(
        database_url,
        schema,
        [(worker_options, async_setup(ASYNC_LABELS[0], 1)), (worker_options, async_setup(ASYNC_LABELS[1], 3))],
    )
    all_done = f"SELECT count(*) = {JOBS} FROM {quoted}.job WHERE name = '{MIXED}' AND state = 'completed'"
    node_actions = [
        start(**QUIET),
        call(
            "workSql",
            MIXED,
            {"batchSize": 5, "pollingIntervalSeconds": 0.5},
            f"INSERT INTO {quoted}.executions (job_id, worker) VALUES ($1, '{NODE_LABEL}')",
        ),
        call("waitSql", all_done, 60_000),
        call("stop"),
    ]

    def finished() -> bool | None:
        states = job_states(engine, schema, MIXED)
        if states.get("failed") or states.get("retry"):
            pytest.fail(f"jobs failed (a second run of a job fails its INSERT): {states}")
        return states.get("completed") == JOBS or None

    started = time.monotonic()
    node: SpawnedPgBoss | None = None
    try:
        node = pgboss.spawn(schema, node_actions)
        # Node takes a moment to start; once it has run a batch, the Python workers join it. (Python fetches
        # straight away while jobs remain, so it would otherwise be through before Node's first poll.)
        poll(
            lambda: (
                scalar(engine, f"SELECT EXISTS (SELECT FROM {quoted}.executions WHERE worker = 'node')")
                or (node is not None and node.done() and node.result())
            ),
            timeout=30,
            what="pg-boss's first batch",
        )
        asynchronous.start()
        for worker in threaded:
            worker.start()
        poll(finished, timeout=60, what=f"all {JOBS} jobs to complete")
        elapsed = time.monotonic() - started
        output = node.result(timeout=30)
    finally:
        if node is not None:
            node.kill()
        for worker in threaded:
            worker.stop(graceful=True)
        asynchronous.stop()

    assert output["events"] == []
    executions = rows(engine, f"SELECT job_id, worker FROM {quoted}.executions")
    assert len(executions) == JOBS
    assert {job_id for job_id, _ in executions} == set(ids)
    assert job_states(engine, schema, MIXED) == {"completed": JOBS}
    assert scalar(engine, f"SELECT count(*) FROM {quoted}.archive") == 0
    per_worker: dict[str, int] = {}
    for _, label in executions:
        per_worker[label] = per_worker.get(label, 0) + 1
    print(f"\njobs per worker: {dict(sorted(per_worker.items()))} in {elapsed:.1f} s")
    assert set(per_worker) == {*THREAD_LABELS, *ASYNC_LABELS, NODE_LABEL}, per_worker
    assert troubles(caplog) == []


# ================================================================================= 2. cron stored by Node

CRON_QUEUE = "cq"
EVERY_MINUTE = "* * * * *"


def send_it_jobs(engine: Engine, schema: str) -> list[Any]:
    """The send-it jobs, in ``job`` or ``archive``: singleton_key, singleton_on, state, data."""
    quoted = quote_identifier(schema)
    return rows(
        engine,
        " UNION ALL ".join(
            f"SELECT singleton_key, singleton_on, state::text, data FROM {quoted}.{table} WHERE name = :n"
            for table in ("job", "archive")
        ),
        n=SEND_IT_QUEUE,
    )


def target_jobs(engine: Engine, schema: str) -> list[Any]:
    quoted = quote_identifier(schema)
    return rows(
        engine,
        " UNION ALL ".join(f"SELECT id, data FROM {quoted}.{table} WHERE name = :n" for table in ("job", "archive")),
        n=CRON_QUEUE,
    )


def test_python_fires_a_schedule_pgboss_stored(
    pgboss: PgBoss, engine: Engine, installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = installed_schema
    caplog.set_level(logging.INFO, logger="sqla_boss")
    pgboss.run(
        schema,
        [
            start(**QUIET),
            call("createQueue", CRON_QUEUE),
            call("schedule", CRON_QUEUE, EVERY_MINUTE, {"from": "node"}),
            STOP,
        ],
    )
    # '* * * * *' is always due; keep the whole run inside one minute, so it fires once.
    minute = minute_room(engine, 15)
    received: list[Any] = []
    worker = Worker(
        engine,
        schema,
        supervise=False,
        cron_monitor_interval_seconds=1,
        cron_worker_interval_seconds=1,
        polling_interval_seconds=0.5,
    )
    worker.work(CRON_QUEUE, lambda jobs: received.extend(job.data for job in jobs))
    started = time.monotonic()
    try:
        worker.start()
        poll(lambda: received or None, timeout=10, what="the scheduled job")
        waited = time.monotonic() - started
    finally:
        worker.stop(graceful=True)
    print(f"\nthe scheduled job arrived {waited:.2f} s after start")

    assert received == [{"from": "node"}]
    [send_it] = send_it_jobs(engine, schema)
    assert tuple(send_it) == (CRON_QUEUE, slot(minute), "completed", {"name": CRON_QUEUE, "data": {"from": "node"}})
    assert [data for _, data in target_jobs(engine, schema)] == [{"from": "node"}]
    assert any(r.getMessage() == f"cron: due {CRON_QUEUE}" for r in caplog.records)
    assert troubles(caplog) == []


# ======================================================================== 3. cron by Python and Node together

RESET_EVERY = 0.3
CONTEST_SECONDS = 6.0
CONTEST_LIMIT = 9.0
"""Once pg-boss has started, the resets go on for at least CONTEST_SECONDS, and past them (up to CONTEST_LIMIT)
until pg-boss has won a claim too. A loaded machine can take seconds to start Node: CI once spent the whole
contest before pg-boss ran, when it was counted from the spawn."""
NODE_START_LIMIT = 20.0
PY_APPS = ("sqla_boss_a", "sqla_boss_b")


def test_python_and_pgboss_evaluating_one_minute_queue_one_job(
    pgboss: PgBoss, engine: Engine, database_url: URL, installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = installed_schema
    quoted = quote_identifier(schema)
    caplog.set_level(logging.INFO, logger="sqla_boss")
    with boss_on(engine, schema) as boss:
        boss.create_queue(CRON_QUEUE)
        boss.schedule(CRON_QUEUE, EVERY_MINUTE, {"from": "python"})
    claims = log_claims(engine, schema, "cron_on")
    halt = Halt(engine, schema)
    apps = {*PY_APPS, NODE_APP}
    minute = minute_room(engine, 30)

    engines = [app_engine(database_url, app) for app in PY_APPS]
    workers = [
        Worker(
            bound,
            schema,
            supervise=False,
            listen=False,
            cron_monitor_interval_seconds=1,
            cron_worker_interval_seconds=1,
        )
        for bound in engines
    ]
    node_start = start(supervise=False, schedule=True, cronMonitorIntervalSeconds=1, cronWorkerIntervalSeconds=1)
    node: SpawnedPgBoss | None = None
    resets = 0
    try:
        for worker in workers:
            worker.start()
        node = pgboss.spawn(schema, [node_start, halt.wait_action(30_000), STOP])
        spawned, began = time.monotonic(), None
        # Every claim is a full evaluation: with cron_on moved back a minute, the next tick of any instance wins.
        while True:
            if began is None and halt.waiting():
                began = time.monotonic()
            elapsed = 0.0 if began is None else time.monotonic() - began
            node_claimed = any(app == NODE_APP for _, app in claims_by_app(engine, claims, apps))
            if elapsed >= CONTEST_LIMIT or (elapsed >= CONTEST_SECONDS and node_claimed):
                break
            assert not node.done(), node.result()
            assert began is not None or time.monotonic() - spawned < NODE_START_LIMIT, "pg-boss did not start"
            execute(engine, f"UPDATE {quoted}.version SET cron_on = now() - interval '1 minute'")
            resets += 1
            time.sleep(RESET_EVERY)
        # The send-it job queued at the first evaluation has long been worked by now; wait for the job anyway.
        poll(lambda: target_jobs(engine, schema) or None, timeout=10, what="the scheduled job")
        halt.raise_flag()
        output = node.result(timeout=30)
    finally:
        if node is not None:
            node.kill()
        for worker in workers:
            worker.stop(graceful=True)
        for bound in engines:
            bound.dispose()

    won = claims_by_app(engine, claims, apps)
    by_app = {app: sum(1 for _, who in won if who == app) for app in sorted(apps)}
    python_due = [r for r in caplog.records if r.getMessage() == f"cron: due {CRON_QUEUE}"]
    print(f"\n{resets} resets; claims won (each an evaluation): {by_app}; Python logged 'cron: due' {len(python_due)}x")

    assert output["events"] == []
    assert troubles(caplog) == []
    # Every evaluation happened within the minute the test started in (else a second job would be right).
    assert won, "no claims"
    assert all(minute <= at < minute + dt.timedelta(minutes=1) for at, _ in won), won
    # Duplicates were possible: Python evaluated (and found the schedule due) several times, and so did Node.
    assert len(python_due) >= 2
    assert by_app[NODE_APP] >= 1
    assert sum(by_app.values()) >= 4
    # ... and the slot prevented them.
    [send_it] = send_it_jobs(engine, schema)
    assert tuple(send_it) == (CRON_QUEUE, slot(minute), "completed", {"name": CRON_QUEUE, "data": {"from": "python"}})
    assert [data for _, data in target_jobs(engine, schema)] == [{"from": "python"}]


# =========================================================================================== 4. maintenance

MAINTENANCE_RUNS = 6
"""The test runs the three instances until this many maintenance runs were claimed (about as many seconds)."""


def iso_seconds(text_value: str) -> float:
    return dt.datetime.fromisoformat(text_value.replace("Z", "+00:00")).timestamp()


def test_python_and_pgboss_take_turns_maintaining(
    pgboss: PgBoss, engine: Engine, database_url: URL, installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = installed_schema
    caplog.set_level(logging.INFO, logger="sqla_boss.worker")
    claims = log_claims(engine, schema, "maintained_on")
    halt = Halt(engine, schema)
    apps = {*PY_APPS, NODE_APP}
    engines = [app_engine(database_url, app) for app in PY_APPS]
    workers = [
        Worker(bound, schema, supervise=True, schedule=False, listen=False, maintenance_interval_seconds=1)
        for bound in engines
    ]
    node_start = start(supervise=True, schedule=False, maintenanceIntervalSeconds=1)
    node: SpawnedPgBoss | None = None
    began = time.time()
    try:
        for worker in workers:
            worker.start()
        node = pgboss.spawn(schema, [node_start, halt.wait_action(30_000), STOP])
        poll(
            lambda: len(claims_by_app(engine, claims, apps)) >= MAINTENANCE_RUNS or node.done(),
            timeout=MAINTENANCE_RUNS * 2 + 10,
            what=f"{MAINTENANCE_RUNS} maintenance runs",
        )
        halt.raise_flag()
        output = node.result(timeout=30)
    finally:
        if node is not None:
            node.kill()  # finished already, unless the test failed
        for worker in workers:
            worker.stop(graceful=True)
        ended = time.time()
        for bound in engines:
            bound.dispose()

    elapsed = ended - began
    python_runs = [r.created for r in caplog.records if r.getMessage().startswith("maintenance:")]
    node_runs = [iso_seconds(event["at"]) for event in output["events"] if event["event"] == "maintenance"]
    runs = sorted([(at, "python") for at in python_runs] + [(at, "node") for at in node_runs])
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(runs)]
    won = claims_by_app(engine, claims, apps)
    by_app = {app: sum(1 for _, who in won if who == app) for app in sorted(apps)}
    print(
        f"\n{len(runs)} maintenance runs in {elapsed:.1f} s, claims by app {by_app}; runs (s after start): "
        + ", ".join(f"{at - began:.2f} {who}" for at, who in runs)
    )

    assert [event for event in output["events"] if event["event"] != "maintenance"] == []
    assert troubles(caplog) == []
    assert len(runs) >= 2
    assert len(runs) <= elapsed / 1 + 1
    assert min(gaps) >= 0.8, runs
    # The claims (the database's clock) are strictly more than the interval apart, and each was one run.
    claimed_at = [at for at, _ in won]
    assert all((later - earlier).total_seconds() > 1 for earlier, later in itertools.pairwise(claimed_at)), won
    assert by_app[PY_APPS[0]] + by_app[PY_APPS[1]] == len(python_runs)
    assert by_app[NODE_APP] == len(node_runs)
