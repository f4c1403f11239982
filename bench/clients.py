"""The workloads, written once per client: sqla_boss sync, sqla_boss async, raw psycopg, and pg-boss (Node);
the Python peers (procrastinate, pgqueuer) are in :mod:`bench.peers`.

Each function runs one workload on a prepared queue and returns ``(seconds, jobs)``; the harness truncates
before and verifies the database after. Consumers complete what they fetch: ours in one transaction per
fetch (fetch and complete together, the natural use of a repository inside the caller's transaction),
pg-boss in its two autocommitted calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import URL, Column, Engine, MetaData, Table, Uuid, create_engine, event, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from sqla_boss import AsyncBoss, AsyncWorker, Boss, Job, Worker
from sqla_boss.schema import schema_translate_map

ROOT = Path(__file__).resolve().parent.parent
NODE_SCRIPT = Path(__file__).resolve().parent / "pgboss_bench.mjs"


@dataclass(frozen=True)
class Target:
    url: URL
    schema: str
    queue: str


@dataclass
class Timing:
    seconds: float
    jobs: int
    latencies_ms: list[float] | None = None
    extra: dict[str, float] = field(default_factory=dict)
    """Other measures of the run by name, e.g. ``rss_end_mib``: the harness keeps them in its row."""


def effects_table(schema: str) -> Table:
    """The table a transactional handler writes one row per job into, in the job's own transaction."""
    return Table("bench_effects", MetaData(schema=schema), Column("job_id", Uuid, primary_key=True))


def rss_worker(target: Target, flavour: str, count: int, batch: int, concurrency: int, seconds: float) -> Timing:
    """A sqla_boss worker in a process of its own (:mod:`bench.rss`) draining ``count`` jobs; its RSS in MiB at
    the start (after imports and ``start()``) and the end, and its peak, in ``Timing.extra``."""
    command = {
        "url": target.url.render_as_string(hide_password=False),
        "schema": target.schema,
        "queue": target.queue,
        "flavour": flavour,
        "count": count,
        "batch": batch,
        "concurrency": concurrency,
        "seconds": seconds,
    }
    completed = subprocess.run(
        [sys.executable, "-m", "bench.rss"],
        input=json.dumps(command),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=seconds + 120,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bench.rss ({flavour}) failed:\n{completed.stderr}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    extra = {key: float(value) for key, value in result.items() if key.startswith("rss_")}
    return Timing(float(result["seconds"]), int(result["jobs"]), extra=extra)


# ------------------------------------------------------------------------------------ sqla_boss, sync


class SyncClient:
    name = "sqla_boss sync"

    def __init__(self, target: Target) -> None:
        self.target = target
        self.engine: Engine = create_engine(target.url, pool_size=8)
        translated = self.engine.execution_options(schema_translate_map=schema_translate_map(target.schema))
        self.sessions = sessionmaker(bind=translated, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def reconnect(self) -> None:
        self.engine.dispose()

    def send(self, count: int) -> Timing:
        schema, queue = self.target.schema, self.target.queue
        started = time.perf_counter()
        for n in range(count):
            with self.sessions.begin() as session:
                Boss(session, schema).send(queue, {"n": n})
        return Timing(time.perf_counter() - started, count)

    def send_autocommit(self, count: int) -> Timing:
        """Each send its own statement and transaction, as pg-boss sends: an autocommit connection."""
        schema, queue = self.target.schema, self.target.queue
        engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        started = time.perf_counter()
        for n in range(count):
            with engine.connect() as connection:
                Boss(connection, schema).send(queue, {"n": n})
        return Timing(time.perf_counter() - started, count)

    def insert(self, count: int, batch: int) -> Timing:
        schema, queue = self.target.schema, self.target.queue
        started = time.perf_counter()
        for first in range(0, count, batch):
            with self.sessions.begin() as session:
                jobs = [{"name": queue, "data": {"n": n}} for n in range(first, min(count, first + batch))]
                Boss(session, schema).insert(jobs)
        return Timing(time.perf_counter() - started, count)

    def drain(self, count: int, batch: int, consumers: int, *, autocommit: bool = False) -> Timing:
        """Consumers fetching and completing; each fetch and its complete in one transaction, or with
        ``autocommit`` each its own statement on an autocommit connection, as pg-boss's two calls are."""
        schema, queue = self.target.schema, self.target.queue
        done = 0
        lock = threading.Lock()
        engine = self.engine.execution_options(
            isolation_level="AUTOCOMMIT", schema_translate_map=schema_translate_map(schema)
        )

        def consume() -> None:
            nonlocal done
            while True:
                with lock:
                    if done >= count:
                        return
                with contextlib.ExitStack() as stack:
                    if autocommit:
                        bind: Any = stack.enter_context(engine.connect())
                    else:
                        bind = stack.enter_context(self.sessions.begin())
                    boss = Boss(bind, schema)
                    jobs = boss.fetch(queue, batch_size=batch)
                    if not jobs:
                        return
                    boss.complete(queue, [job.id for job in jobs])
                with lock:
                    done += len(jobs)

        started = time.perf_counter()
        threads = [threading.Thread(target=consume) for _ in range(consumers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return Timing(time.perf_counter() - started, done)

    def work(self, count: int, batch: int, concurrency: int, seconds: float, *, transactional: bool = False) -> Timing:
        """A worker draining the queue; ``transactional``: its handler writes a row per job into
        :func:`effects_table` in the transaction that completes the jobs."""
        worker = Worker(self.engine, self.target.schema, supervise=False, schedule=False)
        effects = effects_table(self.target.schema)
        done = 0
        lock = threading.Lock()
        finished = threading.Event()

        def count_done(jobs: list[Job]) -> None:
            nonlocal done
            with lock:
                done += len(jobs)
                if done >= count:
                    finished.set()

        def handle(jobs: list[Job]) -> None:
            count_done(jobs)

        def handle_in_transaction(jobs: list[Job], session: Session) -> None:
            session.execute(insert(effects), [{"job_id": job.id} for job in jobs])
            count_done(jobs)

        worker.work(
            self.target.queue,
            handle_in_transaction if transactional else handle,
            batch_size=batch,
            concurrency=concurrency,
            transactional=transactional,
        )
        started = time.perf_counter()
        worker.start()
        finished.wait(seconds)
        elapsed = time.perf_counter() - started
        worker.stop()
        return Timing(elapsed, done)

    def latency(self, count: int, gap: float) -> Timing:
        worker = Worker(self.engine, self.target.schema, supervise=False, schedule=False)
        started: dict[int, float] = {}
        worker.work(self.target.queue, lambda jobs: started.setdefault(jobs[0].data["n"], time.perf_counter()))
        worker.start()
        try:
            time.sleep(0.5)  # the listener is listening and the loop waits its 2 s polling interval
            latencies = _send_and_wait(self.sessions, self.target, count, gap, started)
        finally:
            worker.stop()
        return Timing(0.0, len(latencies), latencies)


def _send_and_wait(
    sessions: sessionmaker[Session], target: Target, count: int, gap: float, started: dict[int, float]
) -> list[float]:
    latencies = []
    for n in range(count):
        time.sleep(gap)
        with sessions.begin() as session:
            Boss(session, target.schema).send(target.queue, {"n": n})
        committed = time.perf_counter()
        deadline = committed + 10
        while n not in started and time.perf_counter() < deadline:
            time.sleep(0.0005)
        if n in started:
            latencies.append((started[n] - committed) * 1000)
    return latencies


# ----------------------------------------------------------------------------------- sqla_boss, async


class AsyncClient:
    name = "sqla_boss async"

    def __init__(self, target: Target) -> None:
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.engine: AsyncEngine = create_async_engine(target.url, pool_size=8)
        translated = self.engine.execution_options(schema_translate_map=schema_translate_map(target.schema))
        self.sessions = async_sessionmaker(bind=translated, expire_on_commit=False)

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.dispose())
        self.loop.close()

    def reconnect(self) -> None:
        self.loop.run_until_complete(self.engine.dispose())

    def _run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def send(self, count: int) -> Timing:
        async def run() -> Timing:
            schema, queue = self.target.schema, self.target.queue
            started = time.perf_counter()
            for n in range(count):
                async with self.sessions.begin() as session:
                    await AsyncBoss(session, schema).send(queue, {"n": n})
            return Timing(time.perf_counter() - started, count)

        return self._run(run())  # type: ignore[no-any-return]

    def send_autocommit(self, count: int) -> Timing:
        async def run() -> Timing:
            schema, queue = self.target.schema, self.target.queue
            engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            started = time.perf_counter()
            for n in range(count):
                async with engine.connect() as connection:
                    await AsyncBoss(connection, schema).send(queue, {"n": n})
            return Timing(time.perf_counter() - started, count)

        return self._run(run())  # type: ignore[no-any-return]

    def insert(self, count: int, batch: int) -> Timing:
        async def run() -> Timing:
            schema, queue = self.target.schema, self.target.queue
            started = time.perf_counter()
            for first in range(0, count, batch):
                async with self.sessions.begin() as session:
                    jobs = [{"name": queue, "data": {"n": n}} for n in range(first, min(count, first + batch))]
                    await AsyncBoss(session, schema).insert(jobs)
            return Timing(time.perf_counter() - started, count)

        return self._run(run())  # type: ignore[no-any-return]

    def drain(self, count: int, batch: int, consumers: int, *, autocommit: bool = False) -> Timing:
        """As :meth:`SyncClient.drain`, on asyncio."""

        async def run() -> Timing:
            schema, queue = self.target.schema, self.target.queue
            done = 0
            engine = self.engine.execution_options(
                isolation_level="AUTOCOMMIT", schema_translate_map=schema_translate_map(schema)
            )

            async def consume() -> None:
                nonlocal done
                while done < count:
                    async with contextlib.AsyncExitStack() as stack:
                        if autocommit:
                            bind: Any = await stack.enter_async_context(engine.connect())
                        else:
                            bind = await stack.enter_async_context(self.sessions.begin())
                        boss = AsyncBoss(bind, schema)
                        jobs = await boss.fetch(queue, batch_size=batch)
                        if not jobs:
                            return
                        await boss.complete(queue, [job.id for job in jobs])
                    done += len(jobs)

            started = time.perf_counter()
            await asyncio.gather(*(consume() for _ in range(consumers)))
            return Timing(time.perf_counter() - started, done)

        return self._run(run())  # type: ignore[no-any-return]

    def work(self, count: int, batch: int, concurrency: int, seconds: float, *, transactional: bool = False) -> Timing:
        async def run() -> Timing:
            worker = AsyncWorker(self.engine, self.target.schema, supervise=False, schedule=False)
            effects = effects_table(self.target.schema)
            done = 0
            finished = asyncio.Event()

            def count_done(jobs: list[Job]) -> None:
                nonlocal done
                done += len(jobs)
                if done >= count:
                    finished.set()

            async def handle(jobs: list[Job]) -> None:
                count_done(jobs)

            async def handle_in_transaction(jobs: list[Job], session: AsyncSession) -> None:
                await session.execute(insert(effects), [{"job_id": job.id} for job in jobs])
                count_done(jobs)

            worker.work(
                self.target.queue,
                handle_in_transaction if transactional else handle,
                batch_size=batch,
                concurrency=concurrency,
                transactional=transactional,
            )
            started = time.perf_counter()
            await worker.start()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(finished.wait(), seconds)
            elapsed = time.perf_counter() - started
            await worker.stop()
            return Timing(elapsed, done)

        return self._run(run())  # type: ignore[no-any-return]

    def latency(self, count: int, gap: float) -> Timing:
        started: dict[int, float] = {}
        ready = threading.Event()
        done = threading.Event()

        async def run_worker() -> None:
            worker = AsyncWorker(self.engine, self.target.schema, supervise=False, schedule=False)

            async def handle(jobs: list[Job]) -> None:
                started.setdefault(jobs[0].data["n"], time.perf_counter())

            worker.work(self.target.queue, handle)
            await worker.start()
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.02)
            await worker.stop()

        thread = threading.Thread(target=self.loop.run_until_complete, args=(run_worker(),))
        thread.start()
        ready.wait(30)
        time.sleep(0.5)
        sync_engine = create_engine(self.target.url)
        try:
            translated = sync_engine.execution_options(schema_translate_map=schema_translate_map(self.target.schema))
            latencies = _send_and_wait(sessionmaker(bind=translated), self.target, count, gap, started)
        finally:
            done.set()
            thread.join(30)
            sync_engine.dispose()
        return Timing(0.0, len(latencies), latencies)


# ------------------------------------------------------------------------------------------ raw psycopg


class RawClient:
    """The statement sqla_boss's ``send`` runs, captured once and replayed by psycopg with a prepared statement:
    the ceiling of what our layers could reach on this connection."""

    name = "raw psycopg"

    def __init__(self, target: Target) -> None:
        self.target = target
        self.statement, self.parameters = _captured_send(target)

    def close(self) -> None:
        pass

    def reconnect(self) -> None:
        pass  # a connection per run already

    def send(self, count: int, *, autocommit: bool = False) -> Timing:
        url = self.target.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=autocommit) as connection:
            started = time.perf_counter()
            for n in range(count):
                parameters = {**self.parameters, "jobs": json.dumps([{"name": self.target.queue, "data": {"n": n}}])}
                connection.execute(self.statement, parameters, prepare=True).fetchall()
                if not autocommit:
                    connection.commit()
            return Timing(time.perf_counter() - started, count)


def _captured_send(target: Target) -> tuple[str, dict[str, Any]]:
    engine = create_engine(target.url)
    captured: list[tuple[str, dict[str, Any]]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "json_to_recordset" in statement:
            captured.append((statement, dict(parameters)))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with Session(engine) as session, session.begin():
            Boss(session, target.schema).send(target.queue, {"n": -1})
            session.rollback()
    finally:
        engine.dispose()
    return captured[0]


# ------------------------------------------------------------------------------------------- pg-boss


class PgBossClient:
    """pg-boss 10.4.2 (``major`` 10) or 12.38.0 (12), run by ``pgboss_bench.mjs`` in a Node process per run."""

    def __init__(self, target: Target, major: int = 10) -> None:
        self.target = target
        sys.path.insert(0, str(ROOT / "tests"))
        import pgboss  # tests/pgboss.py: installs pg-boss from the lock file, as the interop tests do

        self.package = pgboss.PGBOSS12_PACKAGE if major == 12 else pgboss.PGBOSS_PACKAGE
        self.name = f"pg-boss {pgboss.PACKAGE_VERSIONS[self.package]}"
        self.node, npm = pgboss.find_node()
        self.script = pgboss.install(npm, script=NODE_SCRIPT)
        self.connection_string = pgboss.node_connection_string(target.url)

    def close(self) -> None:
        pass

    def reconnect(self) -> None:
        pass  # a connection per run already

    def _run(self, workload: str, **params: Any) -> Timing:
        command = {
            "connectionString": self.connection_string,
            "schema": self.target.schema,
            "queue": self.target.queue,
            "workload": workload,
            "params": params,
        }
        completed = subprocess.run(
            [self.node, str(self.script)],
            input=json.dumps(command),
            capture_output=True,
            text=True,
            cwd=self.script.parent,
            timeout=3600,
            env={**os.environ, "PGBOSS_PACKAGE": self.package},
        )
        if completed.returncode != 0:
            raise RuntimeError(f"pg-boss {workload} failed:\n{completed.stderr}")
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        extra = {key: float(value) for key, value in result.items() if key.startswith("rss_")}
        return Timing(float(result.get("seconds", 0.0)), int(result["jobs"]), result.get("latencies_ms"), extra)

    def send(self, count: int) -> Timing:
        return self._run("send", count=count)

    def insert(self, count: int, batch: int) -> Timing:
        return self._run("insert", count=count, batch=batch)

    def drain(self, count: int, batch: int, consumers: int) -> Timing:
        return self._run("drain", count=count, batch=batch, consumers=consumers)

    def work(self, count: int, batch: int, concurrency: int, seconds: float) -> Timing:
        """``work()`` with its defaults: one registration, one job per fetch, a 2 s polling interval."""
        return self._run("work", count=count, seconds=seconds)

    def work_tuned(
        self, count: int, batch: int, registrations: int, polling_interval: float, seconds: float, *, rss: bool = False
    ) -> Timing:
        """``registrations`` calls of ``work()`` on the queue, each with ``batchSize`` and
        ``pollingIntervalSeconds``; ``rss``: report the Node process's RSS too (W8)."""
        return self._run(
            "work",
            count=count,
            seconds=seconds,
            batchSize=batch,
            pollingIntervalSeconds=polling_interval,
            registrations=registrations,
            rss=rss,
        )

    def latency(self, count: int, gap: float) -> Timing:
        return self._run("latency", count=count, gapMs=round(gap * 1000))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


Client = SyncClient | AsyncClient | RawClient | PgBossClient
ClientFactory = Callable[[Target], Client]
__all__ = [
    "AsyncClient",
    "PgBossClient",
    "RawClient",
    "SyncClient",
    "Target",
    "Timing",
    "effects_table",
    "percentile",
    "rss_worker",
    "statistics",
]
