"""Exactly once under churn: 10,000 jobs, eight workers of four kinds, planned failures, timeouts, a dead letter.

Eight workers run at the same time on two queues of one schema:

* four threaded :class:`~sqla_boss.Worker`\\ s, two in pg-boss's completion mode and two ``transactional``;
* three :class:`~sqla_boss.AsyncWorker`\\ s on an event loop of their own (in a background thread): one with a
  coroutine handler and one with a plain function (which the worker runs in a thread), both in the completion
  mode, and one transactional;
* one Node pg-boss 10.4.2 ``work()`` (tests/pgboss_node/driver.mjs, ``workSql``), on the dead-lettered queue.

One threaded and one async worker supervise, with a 1 s maintenance interval, so expired jobs are also failed by
maintenance, taking turns through pg-boss's claim.

**The plan.** Every job carries its fate in its data: ``steps[k]`` says what attempt ``k`` (the job's
``retry_count`` when it is handed out) does: ``ok``, ``fail`` (the handler raises) or ``slow`` (the handler
sleeps well past the job's short ``expire_in``, so the attempt fails by timeout: the worker's handler timeout
or maintenance's expiry, whichever comes first). The steps come from a hash of the job's number, so the
expected end is known before the run: ``completed`` with ``retry_count`` = the first ``ok`` attempt, else
``failed`` with ``retry_count = retry_limit`` (0-3) and, on the dead-lettered queue, exactly one copy of its data
in the dead-letter queue.

**The record.** Every handler records its run as a row of ``executions(job_id, attempt, worker)``, UNIQUE per
(job, attempt). In the completion mode it records through a connection of its own, committed before the work,
so even a run the worker has given up on is recorded; in the transactional mode an ``ok`` attempt records in
the handler's own session (so the row commits with the completion or not at all), while a failing attempt
records apart (its rollback would take an in-session row with it). Node records through a procedure that
commits the row before failing or sleeping. A second run of the same attempt hits the constraint and is kept in
``duplicates`` instead, which must stay empty: the executions of every job are exactly attempts
``0..retry_count``.

**Why slow jobs have a retry delay.** pg-boss's ``fail`` takes ``created``, ``retry`` and ``active`` jobs, and
job ids carry no attempt. Maintenance may expire a slow attempt a few milliseconds before the worker's own
timeout fails it; the worker's late ``fail`` then lands on the job in ``retry``, which is harmless (it stays in
``retry``, and a ``failed`` job is left alone), unless another worker had already fetched the next attempt,
which the late ``fail`` would then fail. A retry delay of 1 s on the jobs that can time out keeps the next
attempt out of reach for longer than that window, so the expected end stays exact.

**A bug this test found** (sqla_boss at 612416d, fixed since): when a transactional
:class:`~sqla_boss.AsyncWorker` handler outlived its timeout, the worker terminated the handler's backend and
then closed the session, which checked the dead connection back into the pool; its next user failed with
``AdminShutdown``, so a job whose handler succeeded could be failed. The worker now invalidates that connection.
The engines here have no ``pool_pre_ping``, so the bug would fail this test again.

The schema has the opt-in fetch index (without it each fetch sorts its queue's backlog of 5,000 jobs). The run
takes ~60 s on two cores (hence ``slow``), bound by the CPU of the seven Python workers, which share one
interpreter, and of PostgreSQL; waits poll with a deadline, and the only sleeps are the slow steps' own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from support import LoopThread, drop_schema, query, unique_name

from sqla_boss import AsyncWorker, Boss, Job, Worker, migrations
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map

pytestmark = [pytest.mark.faults, pytest.mark.pgboss, pytest.mark.slow]  # ~60 s on two cores

T = TypeVar("T")

JOBS = 10_000
DEAD_LETTERED = "churn_dl"
"""Half the jobs; its failed jobs are copied to DEAD_LETTER. The Node worker works this queue."""
PLAIN = "churn_plain"
"""The other half, without a dead letter."""
DEAD_LETTER = "churn_dlq"
"""Nobody works it: it must end up holding one job per failed job of DEAD_LETTERED."""
QUEUES = (DEAD_LETTERED, PLAIN)

OK, FAIL, SLOW = "ok", "fail", "slow"
FAIL_PERCENT = 20
"""The share of attempts that raise."""
SHORT_SHARE = 2
"""Out of 256: the share of jobs (~0.8%, ~80) with a short expire_in and one slow attempt."""
SHORT_EXPIRE_SECONDS = 2
SLOW_SECONDS = 3.5
"""How long a slow attempt sleeps: well past SHORT_EXPIRE_SECONDS, so it fails by timeout, never completes."""
SLOW_RETRY_DELAY = 1
"""The retry delay of the jobs that can time out (see the module documentation)."""

CONCURRENCY = 1
"""Loops (threads or tasks) per queue of each Python worker."""
POLLING_SECONDS = 0.5
SETTLE_TIMEOUT = 80.0
"""Seconds the jobs may take to reach their final states once every worker runs."""

NODE_LABEL = "node"
STOP = call("stop")

EXPECTED_REASONS = {
    FAIL: ("planned failure",),
    SLOW: ("handler execution exceeded", "job failed by timeout in active state"),
}
"""What the output of a job that failed at a step of this kind says (worker timeout, or maintenance expiry)."""


# ------------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """The fate of job number ``n``: its queue, retry limit and what each attempt does."""

    n: int
    queue: str
    retry_limit: int
    steps: tuple[str, ...]
    short: bool

    @classmethod
    def of(cls, n: int) -> Plan:
        digest = hashlib.sha256(f"churn:{n}".encode()).digest()
        retry_limit = digest[0] % 4
        short = digest[1] < SHORT_SHARE
        slow_at = digest[2] % (retry_limit + 1) if short else -1
        steps = tuple(
            SLOW if attempt == slow_at else FAIL if digest[3 + attempt] * 100 < FAIL_PERCENT * 256 else OK
            for attempt in range(retry_limit + 1)
        )
        return cls(n, DEAD_LETTERED if n % 2 == 0 else PLAIN, retry_limit, steps, short)

    @property
    def data(self) -> dict[str, Any]:
        return {"n": self.n, "steps": list(self.steps)}

    def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        """The job, as :meth:`Boss.insert` takes it."""
        job: dict[str, Any] = {"id": job_id, "name": self.queue, "data": self.data, "retry_limit": self.retry_limit}
        if self.short:
            job.update(expire_in_seconds=SHORT_EXPIRE_SECONDS, retry_delay=SLOW_RETRY_DELAY)
        return job

    def expected(self) -> tuple[str, int]:
        """The state and retry count the job must end with."""
        for attempt, step in enumerate(self.steps):
            if step == OK:
                return "completed", attempt
        return "failed", self.retry_limit


class PlannedFailure(Exception):
    """What a handler raises on a ``fail`` step (and on an attempt its plan does not have)."""


def step_of(job: Job) -> str:
    steps = job.data["steps"]
    return str(steps[job.retry_count]) if job.retry_count < len(steps) else "unplanned"


def planned_failure(job: Job, step: str) -> PlannedFailure:
    return PlannedFailure(f"planned failure of attempt {job.retry_count} ({step})")


# ------------------------------------------------------------------------------------------------ recording


class Recorder:
    """Records runs in ``executions``; a (job, attempt) recorded before goes to ``duplicates`` instead."""

    def __init__(self, engine: Engine, schema: str) -> None:
        quoted = quote_identifier(schema)
        self.engine = engine
        self.insert = text(f"INSERT INTO {quoted}.executions (job_id, attempt, worker) VALUES (:id, :attempt, :worker)")
        self.duplicate = text(
            f"INSERT INTO {quoted}.duplicates (job_id, attempt, worker) VALUES (:id, :attempt, :worker)"
        )

    @staticmethod
    def params(job: Job, worker: str) -> dict[str, Any]:
        return {"id": job.id, "attempt": job.retry_count, "worker": worker}

    def apart(self, job: Job, worker: str) -> None:
        """Record through a connection of our own, committed at once."""
        params = self.params(job, worker)
        try:
            with self.engine.begin() as connection:
                connection.execute(self.insert, params)
        except IntegrityError:
            self._duplicate(params)

    def within(self, session: Session, job: Job, worker: str) -> None:
        """Record in the handler's transaction (in a savepoint, so a duplicate leaves it usable)."""
        params = self.params(job, worker)
        try:
            with session.begin_nested():
                session.execute(self.insert, params)
        except IntegrityError:
            self._duplicate(params)

    def _duplicate(self, params: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.duplicate, params)


class AsyncRecorder:
    """:class:`Recorder` on an ``AsyncEngine``."""

    def __init__(self, engine: AsyncEngine, recorder: Recorder) -> None:
        self.engine = engine
        self.insert = recorder.insert
        self.duplicate = recorder.duplicate

    async def apart(self, job: Job, worker: str) -> None:
        params = Recorder.params(job, worker)
        try:
            async with self.engine.begin() as connection:
                await connection.execute(self.insert, params)
        except IntegrityError:
            await self._duplicate(params)

    async def within(self, session: AsyncSession, job: Job, worker: str) -> None:
        params = Recorder.params(job, worker)
        try:
            async with session.begin_nested():
                await session.execute(self.insert, params)
        except IntegrityError:
            await self._duplicate(params)

    async def _duplicate(self, params: dict[str, Any]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(self.duplicate, params)


# ------------------------------------------------------------------------------------------------- handlers


def completion_handler(recorder: Recorder, label: str) -> Callable[[list[Job]], None]:
    def handler(jobs: list[Job]) -> None:
        [job] = jobs
        recorder.apart(job, label)
        step = step_of(job)
        if step == SLOW:
            time.sleep(SLOW_SECONDS)
        elif step != OK:
            raise planned_failure(job, step)

    return handler


def transactional_handler(recorder: Recorder, label: str) -> Callable[[list[Job], Session], None]:
    def handler(jobs: list[Job], session: Session) -> None:
        [job] = jobs
        step = step_of(job)
        if step == OK:
            recorder.within(session, job, label)
            return
        recorder.apart(job, label)
        if step == SLOW:
            time.sleep(SLOW_SECONDS)
            return
        raise planned_failure(job, step)

    return handler


def async_completion_handler(recorder: AsyncRecorder, label: str) -> Callable[[list[Job]], Any]:
    async def handler(jobs: list[Job]) -> None:
        [job] = jobs
        await recorder.apart(job, label)
        step = step_of(job)
        if step == SLOW:
            await asyncio.sleep(SLOW_SECONDS)
        elif step != OK:
            raise planned_failure(job, step)

    return handler


def async_transactional_handler(recorder: AsyncRecorder, label: str) -> Callable[[list[Job], AsyncSession], Any]:
    async def handler(jobs: list[Job], session: AsyncSession) -> None:
        [job] = jobs
        step = step_of(job)
        if step == OK:
            await recorder.within(session, job, label)
            return
        await recorder.apart(job, label)
        if step == SLOW:
            await asyncio.sleep(SLOW_SECONDS)
            return
        raise planned_failure(job, step)

    return handler


def node_procedure(schema: str) -> str:
    """The procedure the Node worker CALLs per job: record (and COMMIT), then do what the plan says.

    A procedure, because only a procedure can commit the record before the same statement fails.
    """
    quoted = quote_identifier(schema)
    return f"""
        CREATE PROCEDURE {quoted}.node_handle(handled uuid) LANGUAGE plpgsql AS $$
        DECLARE
            this_attempt int;
            planned jsonb;
            this_step text;
            recorded int;
        BEGIN
            SELECT j.retry_count, j.data -> 'steps' INTO this_attempt, planned
            FROM {quoted}.job j WHERE j.name = '{DEAD_LETTERED}' AND j.id = handled;
            INSERT INTO {quoted}.executions (job_id, attempt, worker)
            VALUES (handled, this_attempt, '{NODE_LABEL}')
            ON CONFLICT (job_id, attempt) DO NOTHING;
            GET DIAGNOSTICS recorded = ROW_COUNT;
            IF recorded = 0 THEN
                INSERT INTO {quoted}.duplicates (job_id, attempt, worker)
                VALUES (handled, this_attempt, '{NODE_LABEL}');
            END IF;
            COMMIT;
            this_step := planned ->> this_attempt;
            IF this_step = '{OK}' THEN
                RETURN;
            ELSIF this_step = '{SLOW}' THEN
                PERFORM pg_sleep({SLOW_SECONDS});
                RETURN;
            END IF;
            RAISE EXCEPTION 'planned failure of attempt % (%)', this_attempt, coalesce(this_step, 'unplanned');
        END $$
    """


# -------------------------------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class Spec:
    """One Python worker of the eight."""

    label: str
    asynchronous: bool = False
    transactional: bool = False
    plain: bool = False
    """An AsyncWorker with a plain function as handler (run in a thread by the worker)."""
    supervise: bool = False

    def options(self) -> dict[str, Any]:
        return {
            "polling_interval_seconds": POLLING_SECONDS,
            "supervise": self.supervise,
            "schedule": False,
            "listen": False,
            "maintenance_interval_seconds": 1,
        }


SPECS = (
    Spec("thread-1", supervise=True),
    Spec("thread-2"),
    Spec("thread-tx-1", transactional=True),
    Spec("thread-tx-2", transactional=True),
    Spec("async-1", asynchronous=True, supervise=True),
    Spec("async-plain", asynchronous=True, plain=True),
    Spec("async-tx", asynchronous=True, transactional=True),
)
LABELS = {spec.label for spec in SPECS} | {NODE_LABEL}


def connect_args(label: str) -> dict[str, str]:
    """Names the connections after their worker; commits do not wait for the WAL flush (the test survives no
    server crash, and the run gets faster)."""
    return {"application_name": f"churn-{label}", "options": "-c synchronous_commit=off"}


class ThreadedWorkers:
    """The threaded workers, each on an engine of its own (its application_name names it)."""

    def __init__(self, database_url: URL, schema: str, recorder: Recorder) -> None:
        self.engines: list[Engine] = []
        self.workers: list[Worker] = []
        for spec in (spec for spec in SPECS if not spec.asynchronous):
            engine = create_engine(database_url, connect_args=connect_args(spec.label))
            worker = Worker(engine, schema, **spec.options())
            handler: Callable[..., Any] = (
                transactional_handler(recorder, spec.label)
                if spec.transactional
                else completion_handler(recorder, spec.label)
            )
            for queue in QUEUES:
                worker.work(queue, handler, concurrency=CONCURRENCY, transactional=spec.transactional)
            self.engines.append(engine)
            self.workers.append(worker)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        stoppers = [threading.Thread(target=worker.stop, kwargs={"graceful": True}) for worker in self.workers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(60)
        for engine in self.engines:
            engine.dispose()


class AsyncWorkers(LoopThread):
    """The AsyncWorkers, on an event loop of their own in a background thread, started and stopped from the test."""

    def __init__(self, database_url: URL, schema: str, recorder: Recorder) -> None:
        super().__init__("churn-async-workers")
        self.database_url = database_url
        self.schema = schema
        self.recorder = recorder

    async def run(self, stop: asyncio.Event) -> None:
        records = create_async_engine(
            self.database_url, connect_args=connect_args("records"), isolation_level="AUTOCOMMIT"
        )
        recorder = AsyncRecorder(records, self.recorder)
        engines: list[AsyncEngine] = []
        workers: list[AsyncWorker] = []
        try:
            for spec in (spec for spec in SPECS if spec.asynchronous):
                engine = create_async_engine(self.database_url, connect_args=connect_args(spec.label))
                engines.append(engine)
                worker = AsyncWorker(engine, self.schema, **spec.options())
                workers.append(worker)
                handler: Callable[..., Any]
                if spec.transactional:
                    handler = async_transactional_handler(recorder, spec.label)
                elif spec.plain:
                    handler = completion_handler(self.recorder, spec.label)
                else:
                    handler = async_completion_handler(recorder, spec.label)
                for queue in QUEUES:
                    worker.work(queue, handler, concurrency=CONCURRENCY, transactional=spec.transactional)
            for worker in workers:
                await worker.start()
            self.started.set()
            await stop.wait()
        finally:
            for worker in workers:
                await worker.stop(graceful=True)
            for engine in engines:
                await engine.dispose()
            await records.dispose()


# -------------------------------------------------------------------------------------------------- helpers


def poll(condition: Callable[[], T | None], *, timeout: float, what: Callable[[], str]) -> T:
    """Call ``condition`` until it returns something other than ``None``/``False``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what()}")
        time.sleep(0.1)


def unsettled(engine: Engine, schema: str) -> dict[str, int]:
    """Jobs of the worked queues not yet completed or failed, by state."""
    found = query(
        engine,
        f"SELECT state::text, count(*) FROM {quote_identifier(schema)}.job "
        "WHERE name = ANY(:names) AND state < 'completed' GROUP BY 1",
        names=list(QUEUES),
    )
    return {state: count for state, count in found}


def handler_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """The worker's handler threads started during the test and still running (abandoned slow handlers)."""
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before and thread.name.startswith("sqla_boss-handler-") and thread.is_alive()
    ]


def reason_ok(output: Any, step: str) -> bool:
    return any(reason in json.dumps(output) for reason in EXPECTED_REASONS.get(step, ("?",)))


@pytest.fixture
def churn_schema(engine: Engine) -> Iterator[str]:
    """A pg-boss schema of its own, with the opt-in fetch index, installed by our migrations and dropped afterwards."""
    schema = unique_name("zz_churn")
    try:
        migrations.upgrade(engine, schema=schema)
        migrations.upgrade(engine, schema=schema, fetch_index=True)  # else every fetch sorts a queue's backlog
        yield schema
    finally:
        drop_schema(engine, schema)


def set_up(engine: Engine, schema: str, plans: list[Plan], ids: dict[int, uuid.UUID]) -> None:
    """Queues, the side tables, Node's procedure, and the jobs, committed."""
    quoted = quote_identifier(schema)
    translated = engine.execution_options(schema_translate_map=schema_translate_map(schema))
    with Session(translated) as session, session.begin():
        boss = Boss(session, schema=schema)
        boss.create_queue(DEAD_LETTER)
        boss.create_queue(DEAD_LETTERED, dead_letter=DEAD_LETTER)
        boss.create_queue(PLAIN)
        session.execute(
            text(
                f"CREATE TABLE {quoted}.executions (job_id uuid NOT NULL, attempt int NOT NULL, worker text NOT NULL, "
                "at timestamptz NOT NULL DEFAULT clock_timestamp(), UNIQUE (job_id, attempt))"
            )
        )
        session.execute(
            text(
                f"CREATE TABLE {quoted}.duplicates (job_id uuid, attempt int, worker text, "
                "at timestamptz DEFAULT clock_timestamp())"
            )
        )
        session.execute(text(node_procedure(schema)))
        inserted = boss.insert([plan.job(ids[plan.n]) for plan in plans])
    assert sorted(inserted) == sorted(ids.values())
    [(dead_lettered, plain)] = query(
        engine,
        f"SELECT count(*) FILTER (WHERE name = :dl AND dead_letter = :dlq), count(*) FILTER (WHERE name = :plain "
        f"AND dead_letter IS NULL) FROM {quoted}.job",
        dl=DEAD_LETTERED,
        dlq=DEAD_LETTER,
        plain=PLAIN,
    )
    assert (dead_lettered, plain) == (JOBS // 2, JOBS // 2)


# ----------------------------------------------------------------------------------------------------- test


def test_every_job_ends_as_its_plan_says_each_attempt_run_once(
    pgboss: PgBoss, engine: Engine, database_url: URL, churn_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = churn_schema
    quoted = quote_identifier(schema)
    caplog.set_level(logging.WARNING, logger="sqla_boss")
    plans = [Plan.of(n) for n in range(JOBS)]
    ids = {plan.n: uuid.uuid4() for plan in plans}
    expected = {ids[plan.n]: plan.expected() for plan in plans}
    # The plan exercises every path: failures on both queues, slow steps, every retry limit.
    assert {plan.retry_limit for plan in plans} == {0, 1, 2, 3}
    assert sum(plan.short for plan in plans) > 40
    assert {plan.queue for plan in plans if plan.expected()[0] == "failed"} == set(QUEUES)
    assert any(plan.expected() == ("failed", plan.retry_limit) and plan.steps[-1] == SLOW for plan in plans)
    set_up(engine, schema, plans, ids)

    records = create_engine(
        database_url, connect_args=connect_args("records"), isolation_level="AUTOCOMMIT", pool_size=10
    )
    recorder = Recorder(records, schema)
    threaded = ThreadedWorkers(database_url, schema, recorder)
    asynchronous = AsyncWorkers(database_url, schema, recorder)
    settled_sql = (
        f"SELECT NOT EXISTS (SELECT FROM {quoted}.job WHERE name IN ('{DEAD_LETTERED}', '{PLAIN}') "
        "AND state < 'completed')"
    )
    node_actions = [
        start(supervise=False, schedule=False),
        call(
            "workSql",
            DEAD_LETTERED,
            {"batchSize": 1, "pollingIntervalSeconds": POLLING_SECONDS},
            f"CALL {quoted}.node_handle($1)",
        ),
        call("waitSql", settled_sql, int((SETTLE_TIMEOUT + 30) * 1000)),
        STOP,
    ]
    threads_before = set(threading.enumerate())

    def settled() -> bool:
        assert node is not None
        if node.done() and unsettled(engine, schema):
            node.result()  # raises with the driver's output: pg-boss stopped early
        return not unsettled(engine, schema)

    began = time.monotonic()
    node: SpawnedPgBoss | None = None
    try:
        node = pgboss.spawn(schema, node_actions)
        # Node takes a moment to start; once it has run a job, the Python workers join it (they would otherwise
        # take a good share of its queue before its first poll).
        poll(
            lambda: (
                query(engine, f"SELECT EXISTS (SELECT FROM {quoted}.executions WHERE worker = '{NODE_LABEL}')")[0][0]
                or (node is not None and node.done() and node.result())
            ),
            timeout=30,
            what=lambda: "pg-boss's first job",
        )
        asynchronous.start()
        threaded.start()
        poll(settled, timeout=SETTLE_TIMEOUT, what=lambda: f"every job to settle; left: {unsettled(engine, schema)}")
        elapsed = time.monotonic() - began
        output = node.result(timeout=60)
    finally:
        if node is not None:
            node.kill()
        threaded.stop()
        asynchronous.stop()
        # Slow handlers the threaded workers gave up on sleep on; let them end before anything is read or dropped.
        poll(
            lambda: not handler_threads(threads_before),
            timeout=SLOW_SECONDS + 10,
            what=lambda: f"abandoned handlers to end: {handler_threads(threads_before)}",
        )
        records.dispose()

    # --- what happened
    union = " UNION ALL ".join(
        f"SELECT id, name, state::text, retry_count, data, output FROM {quoted}.{table} WHERE name = ANY(:names)"
        for table in ("job", "archive")
    )
    jobs = query(engine, union, names=list(QUEUES))
    final = {job_id: (state, retry_count) for job_id, _, state, retry_count, _, _ in jobs}
    outputs = {job_id: output for job_id, *_, output in jobs}
    ran: dict[uuid.UUID, list[int]] = {}
    runs: dict[uuid.UUID, list[str]] = {}
    per_worker: Counter[str] = Counter()
    for job_id, attempt, worker in query(
        engine, f"SELECT job_id, attempt, worker FROM {quoted}.executions ORDER BY at"
    ):
        ran.setdefault(job_id, []).append(attempt)
        runs.setdefault(job_id, []).append(f"{attempt}:{worker}")
        per_worker[worker] += 1
    duplicates = query(engine, f"SELECT job_id, attempt, worker FROM {quoted}.duplicates ORDER BY at")
    dead = query(
        engine,
        f"SELECT data FROM {quoted}.job WHERE name = :n UNION ALL SELECT data FROM {quoted}.archive WHERE name = :n",
        n=DEAD_LETTER,
    )
    states = Counter(state for state, _ in final.values())
    [(span, half, most)] = query(
        engine,
        "SELECT extract(epoch FROM max(at) - min(at)), extract(epoch FROM percentile_disc(0.5) WITHIN GROUP "
        "(ORDER BY at) - min(at)), extract(epoch FROM percentile_disc(0.99) WITHIN GROUP (ORDER BY at) - min(at)) "
        f"FROM {quoted}.executions",
    )
    print(
        f"\n{JOBS} jobs settled in {elapsed:.1f} s: {dict(states)}, {sum(per_worker.values())} runs over "
        f"{span:.1f} s (half by {half:.1f} s, 99% by {most:.1f} s), {len(dead)} dead-lettered; "
        f"runs per worker: {dict(sorted(per_worker.items()))}"
    )

    # --- nothing lost, nothing doubled, nothing left behind
    assert duplicates == [], f"{len(duplicates)} attempts ran twice, e.g. {duplicates[:10]}"
    assert len(jobs) == JOBS, f"{len(jobs)} rows for {JOBS} jobs"
    assert set(final) == set(expected), "jobs lost or unknown jobs"
    assert set(states) <= {"completed", "failed"}, states

    # --- every job ended as its plan says, each attempt 0..retry_count ran exactly once
    by_id = {ids[plan.n]: plan for plan in plans}

    def story(job_id: uuid.UUID) -> str:
        message = (outputs[job_id] or {}).get("message", outputs[job_id])
        return (
            f"job {by_id[job_id].data} of {by_id[job_id].queue} ended {final[job_id]}, planned "
            f"{expected[job_id]}; runs (attempt:worker) {runs.get(job_id, [])}; output {str(message)[:160]!r}"
        )

    wrong_end = [story(i) for i in expected if final[i] != expected[i]]
    wrong_runs = [story(i) for i in expected if sorted(ran.get(i, [])) != list(range(final[i][1] + 1))]
    assert wrong_end == [], f"{len(wrong_end)} jobs ended otherwise than planned: {wrong_end[:10]}"
    assert wrong_runs == [], f"{len(wrong_runs)} jobs whose runs are not attempts 0..retry_count: {wrong_runs[:10]}"
    assert set(ran) <= set(expected)
    wrong_reason = [
        story(i)
        for i, (state, retry_count) in final.items()
        if state == "failed" and not reason_ok(outputs[i], by_id[i].steps[retry_count])
    ]
    assert wrong_reason == [], f"{len(wrong_reason)} jobs failed for another reason than planned: {wrong_reason[:5]}"

    # --- one dead-letter copy per failed job of the dead-lettered queue, with its data
    failed_dead_lettered = Counter(
        plan.n for plan in plans if plan.queue == DEAD_LETTERED and expected[ids[plan.n]][0] == "failed"
    )
    assert Counter(data["n"] for (data,) in dead) == failed_dead_lettered
    assert all(data == by_id[ids[data["n"]]].data for (data,) in dead)

    # --- every worker took part, Node included
    assert set(per_worker) == LABELS, per_worker
    assert output["events"] == [], output["events"]
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors
