"""What the exactly-once churn tests share: tests/faults/test_churn.py (schema 24, pg-boss 10) and
tests/faults/test_churn46.py (schema 46, pg-boss 12).

* **The plan** (:class:`Plan`): every job carries its fate in its data, ``steps[k]`` saying what attempt ``k``
  (the job's ``retry_count`` when it is handed out) does, so the end each job must reach is known before the run.
* **The record** (:class:`Recorder`, :class:`AsyncRecorder`, the ``executions`` and ``duplicates`` tables of
  :func:`create_side_tables`): every handler records its run as a row of ``executions``, UNIQUE per (job,
  attempt); a second run of an attempt goes to ``duplicates``, which must stay empty. A run of a *timed* queue
  (:class:`Behaviour`) also records when it ended, so that overlapping runs can be counted in SQL.
* **The handlers** of each kind of worker (threaded or asyncio, pg-boss's completion mode or transactional), the
  procedure Node's ``workSql`` calls, and the worker groups (:class:`ThreadedWorkers`, :class:`AsyncWorkers`) a
  :class:`Cluster` describes.
* **Waiting and reading**: :func:`settle` (fails on a stall as well as on an overall deadline),
  :func:`read_outcome` and :meth:`Outcome.check_exactly_once`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from pgboss import SpawnedPgBoss
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from support import LoopThread, query

from sqla_boss import AsyncWorker, Job, Worker
from sqla_boss.identifiers import quote_identifier

T = TypeVar("T")

OK, FAIL, SLOW, LONG, CRASH = "ok", "fail", "slow", "long", "crash"
"""What an attempt does: succeed; raise; sleep past the job's expiry (so it fails by timeout); sleep long but
succeed (a heartbeat queue's handler that outlives ``heartbeat_seconds`` and must be kept alive by its worker's
touches); be fetched by a consumer that then vanishes (neither completes nor heartbeats: heartbeat expiry)."""
RETURNING = frozenset({OK, SLOW, LONG})
"""The steps whose handler returns rather than raises (a slow one returns after its attempt has timed out)."""
SUCCEEDING = frozenset({OK, LONG})
"""The steps whose attempt completes the job."""
FAIL_PERCENT = 20
"""The share of attempts that raise."""

NODE_LABEL = "node"


# ------------------------------------------------------------------------------------------------- the plan


def digest(salt: str, n: int) -> bytes:
    """The 32 bytes a plan draws from: the same for the same job number on every run."""
    return hashlib.sha256(f"{salt}:{n}".encode()).digest()


def drawn_steps(drawn: bytes, retry_limit: int, slow_at: int = -1) -> list[str]:
    """Attempts ``0..retry_limit``: ``slow`` at ``slow_at``, else ``fail`` for FAIL_PERCENT of them, else ``ok``."""
    return [
        SLOW if attempt == slow_at else FAIL if drawn[3 + attempt] * 100 < FAIL_PERCENT * 256 else OK
        for attempt in range(retry_limit + 1)
    ]


@dataclass(frozen=True)
class Plan:
    """The fate of job number ``n``: its queue, retry limit, what each attempt does, and the job's other fields."""

    n: int
    queue: str
    retry_limit: int
    steps: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    """More fields of the job, as :meth:`Boss.insert` takes them (``expire_in_seconds``, ``group``...)."""

    @property
    def short(self) -> bool:
        """Whether an attempt is planned to time out."""
        return SLOW in self.steps

    @property
    def data(self) -> dict[str, Any]:
        return {"n": self.n, "steps": list(self.steps)}

    def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        """The job, as :meth:`Boss.insert` takes it."""
        return {"id": job_id, "name": self.queue, "data": self.data, "retry_limit": self.retry_limit, **self.options}

    def expected(self) -> tuple[str, int]:
        """The state and retry count the job must end with."""
        for attempt, step in enumerate(self.steps):
            if step in SUCCEEDING:
                return "completed", attempt
        return "failed", self.retry_limit


class PlannedFailure(Exception):
    """What a handler raises on a ``fail`` step (and on an attempt its plan does not have)."""


def step_of(job: Job) -> str:
    steps = job.data["steps"]
    return str(steps[job.retry_count]) if job.retry_count < len(steps) else "unplanned"


def planned_failure(job: Job, step: str) -> PlannedFailure:
    return PlannedFailure(f"planned failure of attempt {job.retry_count} ({step})")


@dataclass(frozen=True)
class Behaviour:
    """How long handlers sleep: a ``slow`` step ``slow_seconds``, a ``long`` one ``long_seconds``, and every run
    of a ``timed`` queue ``work_seconds`` more (its runs also record when they ended)."""

    slow_seconds: float
    long_seconds: float = 0.0
    timed: frozenset[str] = frozenset()
    work_seconds: float = 0.0

    def pause(self, job: Job, step: str) -> float:
        own = self.slow_seconds if step == SLOW else self.long_seconds if step == LONG else 0.0
        return own + (self.work_seconds if job.name in self.timed else 0.0)

    def timed_run(self, job: Job) -> bool:
        return job.name in self.timed


# ------------------------------------------------------------------------------------------------ recording


def create_side_tables(session: Session, schema: str) -> None:
    """``executions`` (one row per run: UNIQUE per job and attempt; ``ended`` set by the runs of timed queues)
    and ``duplicates`` (the runs that found their attempt recorded already), in ``session``'s transaction."""
    quoted = quote_identifier(schema)
    session.execute(
        text(
            f"CREATE TABLE {quoted}.executions (job_id uuid NOT NULL, attempt int NOT NULL, worker text NOT NULL, "
            "at timestamptz NOT NULL DEFAULT clock_timestamp(), ended timestamptz, UNIQUE (job_id, attempt))"
        )
    )
    session.execute(
        text(
            f"CREATE TABLE {quoted}.duplicates (job_id uuid, attempt int, worker text, "
            "at timestamptz DEFAULT clock_timestamp())"
        )
    )


class Recorder:
    """Records runs in ``executions``; a (job, attempt) recorded before goes to ``duplicates`` instead."""

    def __init__(self, engine: Engine, schema: str) -> None:
        quoted = quote_identifier(schema)
        self.engine = engine
        self.insert = text(f"INSERT INTO {quoted}.executions (job_id, attempt, worker) VALUES (:id, :attempt, :worker)")
        self.duplicate = text(
            f"INSERT INTO {quoted}.duplicates (job_id, attempt, worker) VALUES (:id, :attempt, :worker)"
        )
        self.end = text(
            f"UPDATE {quoted}.executions SET ended = clock_timestamp() "
            "WHERE job_id = :id AND attempt = :attempt AND worker = :worker AND ended IS NULL"
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

    def ended_apart(self, job: Job, worker: str) -> None:
        """Record the end of the run, committed at once."""
        with self.engine.begin() as connection:
            connection.execute(self.end, self.params(job, worker))

    def ended_within(self, session: Session, job: Job, worker: str) -> None:
        """Record the end of the run in the handler's transaction."""
        session.execute(self.end, self.params(job, worker))

    def _duplicate(self, params: dict[str, Any]) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.duplicate, params)


class AsyncRecorder:
    """:class:`Recorder` on an ``AsyncEngine``."""

    def __init__(self, engine: AsyncEngine, recorder: Recorder) -> None:
        self.engine = engine
        self.insert = recorder.insert
        self.duplicate = recorder.duplicate
        self.end = recorder.end

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

    async def ended_apart(self, job: Job, worker: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(self.end, Recorder.params(job, worker))

    async def ended_within(self, session: AsyncSession, job: Job, worker: str) -> None:
        await session.execute(self.end, Recorder.params(job, worker))

    async def _duplicate(self, params: dict[str, Any]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(self.duplicate, params)


# ------------------------------------------------------------------------------------------------- handlers
#
# In the completion mode a handler records through a connection of its own, committed before the work, so even
# a run the worker has given up on is recorded. In the transactional mode a succeeding attempt records in the
# handler's own session (the row commits with the completion or not at all), a failing one apart (its rollback
# would take an in-session row with it).


def completion_handler(recorder: Recorder, label: str, behaviour: Behaviour) -> Callable[[list[Job]], None]:
    def handler(jobs: list[Job]) -> None:
        [job] = jobs
        recorder.apart(job, label)
        step = step_of(job)
        pause = behaviour.pause(job, step)
        if pause:
            time.sleep(pause)
        if behaviour.timed_run(job):
            recorder.ended_apart(job, label)
        if step not in RETURNING:
            raise planned_failure(job, step)

    return handler


def transactional_handler(recorder: Recorder, label: str, behaviour: Behaviour) -> Callable[[list[Job], Session], None]:
    def handler(jobs: list[Job], session: Session) -> None:
        [job] = jobs
        step = step_of(job)
        pause = behaviour.pause(job, step)
        if step in SUCCEEDING:
            recorder.within(session, job, label)
            if pause:
                time.sleep(pause)
            if behaviour.timed_run(job):
                recorder.ended_within(session, job, label)
            return
        recorder.apart(job, label)
        if pause:
            time.sleep(pause)
        if behaviour.timed_run(job):
            recorder.ended_apart(job, label)
        if step not in RETURNING:
            raise planned_failure(job, step)

    return handler


def async_completion_handler(recorder: AsyncRecorder, label: str, behaviour: Behaviour) -> Callable[[list[Job]], Any]:
    async def handler(jobs: list[Job]) -> None:
        [job] = jobs
        await recorder.apart(job, label)
        step = step_of(job)
        pause = behaviour.pause(job, step)
        if pause:
            await asyncio.sleep(pause)
        if behaviour.timed_run(job):
            await recorder.ended_apart(job, label)
        if step not in RETURNING:
            raise planned_failure(job, step)

    return handler


def async_transactional_handler(
    recorder: AsyncRecorder, label: str, behaviour: Behaviour
) -> Callable[[list[Job], AsyncSession], Any]:
    async def handler(jobs: list[Job], session: AsyncSession) -> None:
        [job] = jobs
        step = step_of(job)
        pause = behaviour.pause(job, step)
        if step in SUCCEEDING:
            await recorder.within(session, job, label)
            if pause:
                await asyncio.sleep(pause)
            if behaviour.timed_run(job):
                await recorder.ended_within(session, job, label)
            return
        await recorder.apart(job, label)
        if pause:
            await asyncio.sleep(pause)
        if behaviour.timed_run(job):
            await recorder.ended_apart(job, label)
        if step not in RETURNING:
            raise planned_failure(job, step)

    return handler


def node_procedure(schema: str, queues: Sequence[str], behaviour: Behaviour, *, attempt_given: bool) -> str:
    """The procedure the Node worker CALLs per job: record (and COMMIT), then do what the plan says.

    A procedure, because only a procedure can commit the record before the same statement fails. With
    ``attempt_given`` it is ``node_handle(id, attempt)``, recording the attempt pg-boss handed out (pg-boss 12's
    job has ``retryCount``); else ``node_handle(id)``, reading the job's ``retry_count`` as it is now.
    """
    quoted = quote_identifier(schema)
    names = ", ".join(f"'{name}'" for name in queues)
    return f"""
        CREATE PROCEDURE {quoted}.node_handle(handled uuid{", given int" if attempt_given else ""})
        LANGUAGE plpgsql AS $$
        DECLARE
            this_attempt int;
            planned jsonb;
            this_step text;
            recorded int;
        BEGIN
            SELECT j.retry_count, j.data -> 'steps' INTO this_attempt, planned
            FROM {quoted}.job j WHERE j.name IN ({names}) AND j.id = handled;
            {"this_attempt := given;" if attempt_given else ""}
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
                PERFORM pg_sleep({behaviour.slow_seconds});
                RETURN;
            ELSIF this_step = '{LONG}' THEN
                PERFORM pg_sleep({behaviour.long_seconds});
                RETURN;
            END IF;
            RAISE EXCEPTION 'planned failure of attempt % (%)', this_attempt, coalesce(this_step, 'unplanned');
        END $$
    """


# -------------------------------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class Spec:
    """One Python worker of a cluster."""

    label: str
    asynchronous: bool = False
    transactional: bool = False
    plain: bool = False
    """An AsyncWorker with a plain function as handler (run in a thread by the worker)."""
    supervise: bool = False


@dataclass(frozen=True)
class Cluster:
    """The Python workers of a churn run: who they are, what each registers, how they are built and behave."""

    specs: tuple[Spec, ...]
    registrations: tuple[tuple[str, Mapping[str, Any]], ...]
    """(queue, ``work()`` options but the handler and ``transactional``) for each queue every worker works."""
    worker_options: Callable[[Spec], dict[str, Any]]
    """The worker's constructor options."""
    behaviour: Behaviour

    @property
    def labels(self) -> set[str]:
        return {spec.label for spec in self.specs}


def connect_args(label: str) -> dict[str, str]:
    """Names the connections after their worker; commits do not wait for the WAL flush (the test survives no
    server crash, and the run gets faster)."""
    return {"application_name": f"churn-{label}", "options": "-c synchronous_commit=off"}


class ThreadedWorkers:
    """The threaded workers, each on an engine of its own (its application_name names it)."""

    def __init__(self, database_url: URL, schema: str, recorder: Recorder, cluster: Cluster) -> None:
        self.engines: list[Engine] = []
        self.workers: list[Worker] = []
        behaviour = cluster.behaviour
        for spec in (spec for spec in cluster.specs if not spec.asynchronous):
            engine = create_engine(database_url, connect_args=connect_args(spec.label))
            worker = Worker(engine, schema, **cluster.worker_options(spec))
            handler: Callable[..., Any] = (
                transactional_handler(recorder, spec.label, behaviour)
                if spec.transactional
                else completion_handler(recorder, spec.label, behaviour)
            )
            for queue, options in cluster.registrations:
                worker.work(queue, handler, transactional=spec.transactional, **options)
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

    def __init__(self, database_url: URL, schema: str, recorder: Recorder, cluster: Cluster) -> None:
        super().__init__("churn-async-workers")
        self.database_url = database_url
        self.schema = schema
        self.recorder = recorder
        self.cluster = cluster

    async def run(self, stop: asyncio.Event) -> None:
        records = create_async_engine(
            self.database_url, connect_args=connect_args("records"), isolation_level="AUTOCOMMIT"
        )
        recorder = AsyncRecorder(records, self.recorder)
        behaviour = self.cluster.behaviour
        engines: list[AsyncEngine] = []
        workers: list[AsyncWorker] = []
        try:
            for spec in (spec for spec in self.cluster.specs if spec.asynchronous):
                engine = create_async_engine(self.database_url, connect_args=connect_args(spec.label))
                engines.append(engine)
                worker = AsyncWorker(engine, self.schema, **self.cluster.worker_options(spec))
                workers.append(worker)
                handler: Callable[..., Any]
                if spec.transactional:
                    handler = async_transactional_handler(recorder, spec.label, behaviour)
                elif spec.plain:
                    handler = completion_handler(self.recorder, spec.label, behaviour)
                else:
                    handler = async_completion_handler(recorder, spec.label, behaviour)
                for queue, options in self.cluster.registrations:
                    worker.work(queue, handler, transactional=spec.transactional, **options)
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


# -------------------------------------------------------------------------------------------------- waiting


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


def unsettled(engine: Engine, schema: str, queues: Sequence[str]) -> dict[str, int]:
    """Jobs of the worked queues not yet completed or failed, by state."""
    found = query(
        engine,
        f"SELECT state::text, count(*) FROM {quote_identifier(schema)}.job "
        "WHERE name = ANY(:names) AND state < 'completed' GROUP BY 1",
        names=list(queues),
    )
    return {state: count for state, count in found}


def settle(
    left: Callable[[], dict[str, int]],
    *,
    timeout: float,
    stall: float,
    check: Callable[[], None] = lambda: None,
) -> None:
    """Wait until ``left()`` is empty. Fail when it has not changed for ``stall`` seconds (a hang: something is
    stuck, however loaded the machine) or after ``timeout`` seconds in all (a machine too slow for the test).
    ``check`` is called at each poll and may fail the wait early (a worker process that died)."""
    began = time.monotonic()
    last, changed = left(), began
    while last:
        check()
        now = time.monotonic()
        if now - changed > stall:
            pytest.fail(f"no job settled for {stall} s (stuck?); left: {last}")
        if now - began > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for every job to settle; left: {last}")
        time.sleep(0.1)
        current = left()
        if current != last:
            last, changed = current, time.monotonic()


def handler_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """The worker's handler threads started during the test and still running (abandoned slow handlers)."""
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before and thread.name.startswith("sqla_boss-handler-") and thread.is_alive()
    ]


# -------------------------------------------------------------------------------------------------- reading


@dataclass
class Outcome:
    """What a churn run left: every job's end, every run, the duplicates."""

    plans: list[Plan]
    ids: dict[int, uuid.UUID]
    final: dict[uuid.UUID, tuple[str, int]]
    outputs: dict[uuid.UUID, Any]
    ran: dict[uuid.UUID, list[int]]
    runs: dict[uuid.UUID, list[str]]
    per_worker: Counter[str]
    duplicates: list[Any]
    rows: int
    span: tuple[float, float, float]
    """Seconds from the first run to the last, to the median, to the 99th percentile."""

    @property
    def states(self) -> Counter[str]:
        return Counter(state for state, _ in self.final.values())

    @property
    def by_id(self) -> dict[uuid.UUID, Plan]:
        return {self.ids[plan.n]: plan for plan in self.plans}

    def runs_line(self) -> str:
        span, half, most = self.span
        return (
            f"{dict(self.states)}, {sum(self.per_worker.values())} runs over {span:.1f} s (half by {half:.1f} s, "
            f"99% by {most:.1f} s)"
        )

    def story(self, job_id: uuid.UUID) -> str:
        plan = self.by_id[job_id]
        message = (self.outputs[job_id] or {}).get("message", self.outputs[job_id])
        return (
            f"job {plan.data} of {plan.queue} ended {self.final[job_id]}, planned {plan.expected()}; runs "
            f"(attempt:worker) {self.runs.get(job_id, [])}; output {str(message)[:160]!r}"
        )

    def check_exactly_once(self, reasons: Mapping[str, Sequence[str]]) -> None:
        """Nothing lost, nothing doubled, nothing left behind; every job ended as its plan says, each attempt
        0..retry_count ran exactly once; a failed job failed for the reason its last step gives (``reasons``: what
        the output of a job failed at a step of that kind says)."""
        expected = {self.ids[plan.n]: plan.expected() for plan in self.plans}
        final = self.final
        assert self.duplicates == [], f"{len(self.duplicates)} attempts ran twice, e.g. {self.duplicates[:10]}"
        assert self.rows == len(self.plans), f"{self.rows} rows for {len(self.plans)} jobs"
        assert set(final) == set(expected), "jobs lost or unknown jobs"
        assert set(self.states) <= {"completed", "failed"}, self.states

        wrong_end = [self.story(i) for i in expected if final[i] != expected[i]]
        wrong_runs = [self.story(i) for i in expected if sorted(self.ran.get(i, [])) != list(range(final[i][1] + 1))]
        assert wrong_end == [], f"{len(wrong_end)} jobs ended otherwise than planned: {wrong_end[:10]}"
        assert wrong_runs == [], f"{len(wrong_runs)} jobs whose runs are not attempts 0..retry_count: {wrong_runs[:10]}"
        assert set(self.ran) <= set(expected)
        by_id = self.by_id

        def reason_ok(output: Any, step: str) -> bool:
            return any(reason in json.dumps(output) for reason in reasons.get(step, ("?",)))

        wrong_reason = [
            self.story(i)
            for i, (state, retry_count) in final.items()
            if state == "failed" and not reason_ok(self.outputs[i], by_id[i].steps[retry_count])
        ]
        assert wrong_reason == [], (
            f"{len(wrong_reason)} jobs failed for another reason than planned: {wrong_reason[:5]}"
        )


def read_outcome(
    engine: Engine,
    schema: str,
    plans: list[Plan],
    ids: dict[int, uuid.UUID],
    queues: Sequence[str],
    tables: Sequence[str],
) -> Outcome:
    """Read the jobs of ``queues`` from ``tables`` (``job``, and ``archive`` on version 24), the runs and the
    duplicates."""
    quoted = quote_identifier(schema)
    union = " UNION ALL ".join(
        f"SELECT id, name, state::text, retry_count, data, output FROM {quoted}.{table} WHERE name = ANY(:names)"
        for table in tables
    )
    jobs = query(engine, union, names=list(queues))
    ran: dict[uuid.UUID, list[int]] = {}
    runs: dict[uuid.UUID, list[str]] = {}
    per_worker: Counter[str] = Counter()
    for job_id, attempt, worker in query(
        engine, f"SELECT job_id, attempt, worker FROM {quoted}.executions ORDER BY at"
    ):
        ran.setdefault(job_id, []).append(attempt)
        runs.setdefault(job_id, []).append(f"{attempt}:{worker}")
        per_worker[worker] += 1
    [(span, half, most)] = query(
        engine,
        "SELECT extract(epoch FROM max(at) - min(at)), extract(epoch FROM percentile_disc(0.5) WITHIN GROUP "
        "(ORDER BY at) - min(at)), extract(epoch FROM percentile_disc(0.99) WITHIN GROUP (ORDER BY at) - min(at)) "
        f"FROM {quoted}.executions",
    )
    return Outcome(
        plans=plans,
        ids=ids,
        final={job_id: (state, retry_count) for job_id, _, state, retry_count, _, _ in jobs},
        outputs={job_id: output for job_id, *_, output in jobs},
        ran=ran,
        runs=runs,
        per_worker=per_worker,
        duplicates=query(engine, f"SELECT job_id, attempt, worker FROM {quoted}.duplicates ORDER BY at"),
        rows=len(jobs),
        span=(float(span), float(half), float(most)),
    )


def run_beside_node(
    spawn: Callable[[], SpawnedPgBoss],
    engine: Engine,
    schema: str,
    queues: Sequence[str],
    pythons: Sequence[ThreadedWorkers | AsyncWorkers],
    records: Engine,
    *,
    timeout: float,
    stall: float,
    slow_seconds: float,
) -> tuple[float, Any]:
    """Start pg-boss (``spawn``), and the Python workers once it has run a job (they would otherwise take a good
    share of its queue before its first poll); wait until every job of ``queues`` settles (:func:`settle`);
    then stop everyone and let the slow handlers the threaded workers gave up on end before anything is read or
    dropped. Returns the seconds it took to settle and pg-boss's output."""
    quoted = quote_identifier(schema)
    threads_before = set(threading.enumerate())
    node: SpawnedPgBoss | None = None

    def node_alive() -> None:
        assert node is not None
        if node.done() and unsettled(engine, schema, queues):
            node.result()  # raises with the driver's output: pg-boss stopped early

    began = time.monotonic()
    try:
        node = spawn()
        poll(
            lambda: (
                query(engine, f"SELECT EXISTS (SELECT FROM {quoted}.executions WHERE worker = '{NODE_LABEL}')")[0][0]
                or (node is not None and node.done() and node.result())
            ),
            timeout=30,
            what=lambda: "pg-boss's first job",
        )
        for workers in pythons:
            workers.start()
        settle(lambda: unsettled(engine, schema, queues), timeout=timeout, stall=stall, check=node_alive)
        elapsed = time.monotonic() - began
        output = node.result(timeout=60)
    finally:
        if node is not None:
            node.kill()
        for workers in reversed(pythons):
            workers.stop()
        poll(
            lambda: not handler_threads(threads_before),
            timeout=slow_seconds + 10,
            what=lambda: f"abandoned handlers to end: {handler_threads(threads_before)}",
        )
        records.dispose()
    return elapsed, output
