"""The Python peers of ``python -m bench``: procrastinate (on psycopg 3) and pgqueuer (on asyncpg).

Both are optional (``pip install -e '.[bench]'``): :func:`peer_clients` makes a client for each one that
imports, and says which it skipped. Each keeps its tables in a PostgreSQL schema of its own in the bench's
database, installed by its own means (procrastinate's schema manager on a ``search_path`` set to that schema,
as its documentation says for a custom schema; pgqueuer's ``install`` with ``db_schema``), and dropped at
``close()``. Each client empties its own tables before a run (``reset``) and reports the states of its jobs
afterwards (``states``) for the harness to verify.

What their calls mean, for reading the numbers side by side with ours:

- procrastinate's ``defer_async`` runs ``procrastinate_defer_jobs_v1`` on a connection of its pool in a
  transaction of its own (psycopg's BEGIN, the call, COMMIT), never the caller's: the "own transaction" row.
  Its worker fetches one job per query (no batches) and finishes each in a query of its own; ``concurrency``
  jobs run at once. Finished jobs stay in ``procrastinate_jobs`` as ``succeeded``.
- pgqueuer's ``enqueue`` is one statement on an asyncpg connection, in autocommit (asyncpg's default): the
  "autocommit" row; a list enqueues a batch in one statement. Its ``QueueManager`` dequeues ``batch_size``
  jobs per query, runs them all at once as tasks, and moves finished jobs to its log table in buffered
  batches (``pgqueuer_log``, status ``successful``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from bench.clients import Target, Timing

PROCRASTINATE_SCHEMA = "bench_procrastinate"
PGQUEUER_SCHEMA = "bench_pgqueuer"
CHUNK = 5000


def _conninfo(target: Target) -> str:
    """The database URL as libpq (psycopg, asyncpg) spells it, without SQLAlchemy's driver name."""
    return target.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _execute(conninfo: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements in autocommit; the rows of the last one that returns any."""
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(conninfo, autocommit=True) as connection:
        for statement in statements:
            cursor = connection.execute(statement)
            if cursor.description is not None:
                rows = cursor.fetchall()
    return rows


# ------------------------------------------------------------------------------------------ procrastinate


class ProcrastinateClient:
    send_mode = "own transaction"
    send_note = "defer_async: BEGIN, procrastinate_defer_jobs_v1, COMMIT on a pooled connection, never the caller's"
    insert_note = "batch_defer_async of 1,000 jobs: one call of procrastinate_defer_jobs_v1"
    queued_state = "todo"
    work_batch = 1
    work_concurrency = 4
    work_note = "run_worker_async(concurrency=4, wait=False): one job per fetch; drains the whole backlog"

    def __init__(self, target: Target) -> None:
        import procrastinate

        self.target = target
        self.version = importlib.metadata.version("procrastinate")
        self.name = f"procrastinate {self.version}"
        self.conninfo = _conninfo(target)
        self.loop = asyncio.new_event_loop()
        self.handled = 0
        _execute(
            self.conninfo,
            f"DROP SCHEMA IF EXISTS {PROCRASTINATE_SCHEMA} CASCADE",
            f"CREATE SCHEMA {PROCRASTINATE_SCHEMA}",
        )
        self.connector = procrastinate.PsycopgConnector(
            conninfo=self.conninfo,
            kwargs={"options": f"-c search_path={PROCRASTINATE_SCHEMA}"},
            min_size=1,
            max_size=10,
        )
        self.app = procrastinate.App(connector=self.connector)

        async def bench_task(n: int) -> None:
            self.handled += 1

        self.task = self.app.task(name="bench", queue=target.queue)(bench_task)
        self._run(self._open())

    async def _open(self) -> None:
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()

    def _run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        try:
            self._run(self.app.close_async())
            self.loop.close()
        finally:
            _execute(self.conninfo, f"DROP SCHEMA IF EXISTS {PROCRASTINATE_SCHEMA} CASCADE")

    def reconnect(self) -> None:
        pass  # the fetch index is on sqla_boss's table: nothing of procrastinate's changes

    def reset(self, backlog: int = 0) -> None:
        _execute(
            self.conninfo,
            f"TRUNCATE {PROCRASTINATE_SCHEMA}.procrastinate_jobs, {PROCRASTINATE_SCHEMA}.procrastinate_events,"
            f" {PROCRASTINATE_SCHEMA}.procrastinate_periodic_defers, {PROCRASTINATE_SCHEMA}.procrastinate_workers"
            " RESTART IDENTITY CASCADE",
        )
        if backlog:
            self._run(self._defer_batches(backlog, CHUNK))
            _execute(self.conninfo, f"ANALYZE {PROCRASTINATE_SCHEMA}.procrastinate_jobs")

    async def _defer_batches(self, count: int, batch: int) -> None:
        for first in range(0, count, batch):
            jobs: list[dict[str, Any]] = [{"n": n} for n in range(first, min(count, first + batch))]
            await self.task.batch_defer_async(*jobs)

    def states(self) -> dict[str, int]:
        rows = _execute(
            self.conninfo,
            f"SELECT status::text, count(*) FROM {PROCRASTINATE_SCHEMA}.procrastinate_jobs"
            f" WHERE queue_name = '{self.target.queue}' GROUP BY 1",
        )
        return {state: count for state, count in rows}

    def finished(self) -> int:
        return self.states().get("succeeded", 0)

    def waiting(self) -> int:
        return sum(count for state, count in self.states().items() if state != "succeeded")

    def send(self, count: int) -> Timing:
        async def run() -> Timing:
            started = time.perf_counter()
            for n in range(count):
                await self.task.defer_async(n=n)
            return Timing(time.perf_counter() - started, count)

        return self._run(run())  # type: ignore[no-any-return]

    def insert(self, count: int, batch: int) -> Timing:
        async def run() -> Timing:
            started = time.perf_counter()
            await self._defer_batches(count, batch)
            return Timing(time.perf_counter() - started, count)

        return self._run(run())  # type: ignore[no-any-return]

    def work(self, count: int, seconds: float) -> Timing:
        """A worker on the queue until it has caught up (``wait=False``): it drains the whole backlog."""

        async def run() -> Timing:
            self.handled = 0
            started = time.perf_counter()
            await asyncio.wait_for(
                self.app.run_worker_async(
                    queues=[self.target.queue],
                    concurrency=self.work_concurrency,
                    wait=False,
                    install_signal_handlers=False,
                ),
                seconds,
            )
            return Timing(time.perf_counter() - started, self.handled)

        return self._run(run())  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------- pgqueuer


class PgQueuerClient:
    send_mode = "autocommit"
    send_note = "Queries.enqueue on an asyncpg connection: one statement in autocommit"
    insert_note = "Queries.enqueue with lists of 1,000: one statement"
    queued_state = "queued"
    work_batch = 100
    work_note = (
        "QueueManager.run(batch_size=100, mode=drain): every job of a batch runs at once (no concurrency cap);"
        " drains the whole backlog"
    )

    def __init__(self, target: Target) -> None:
        from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment, QueryQueueBuilder, QuerySchedulerBuilder
        from pgqueuer.domain.settings import DBSettings

        self.target = target
        self.version = importlib.metadata.version("pgqueuer")
        self.name = f"pgqueuer {self.version}"
        self.conninfo = _conninfo(target)
        self.loop = asyncio.new_event_loop()
        self.settings = DBSettings(db_schema=PGQUEUER_SCHEMA)
        self.qbe = QueryBuilderEnvironment(settings=self.settings)
        self.qbq = QueryQueueBuilder(settings=self.settings)
        self.qbs = QuerySchedulerBuilder(settings=self.settings)
        _execute(self.conninfo, f"DROP SCHEMA IF EXISTS {PGQUEUER_SCHEMA} CASCADE")
        self._run(self._with_queries(lambda queries: queries.install()))

    def _run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def _queries(self, connection: Any) -> Any:
        from pgqueuer import AsyncpgDriver, Queries

        return Queries(AsyncpgDriver(connection), qbe=self.qbe, qbq=self.qbq, qbs=self.qbs)

    async def _with_queries(self, use: Callable[[Any], Any]) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        connection = await asyncpg.connect(self.conninfo)
        try:
            return await use(self._queries(connection))
        finally:
            await connection.close()

    def close(self) -> None:
        try:
            self.loop.close()
        finally:
            _execute(self.conninfo, f"DROP SCHEMA IF EXISTS {PGQUEUER_SCHEMA} CASCADE")

    def reconnect(self) -> None:
        pass  # a connection per run already

    def reset(self, backlog: int = 0) -> None:
        names = self.settings.qualified
        _execute(
            self.conninfo,
            f"TRUNCATE {names.queue_table}, {names.queue_table_log}, {names.statistics_table} RESTART IDENTITY",
        )
        if backlog:
            self._run(self._with_queries(lambda queries: self._enqueue_batches(queries, backlog, CHUNK)))
            _execute(self.conninfo, f"ANALYZE {names.queue_table}")

    async def _enqueue_batches(self, queries: Any, count: int, batch: int) -> None:
        for first in range(0, count, batch):
            size = min(count, first + batch) - first
            payloads = [json.dumps({"n": n}).encode() for n in range(first, first + size)]
            await queries.enqueue([self.target.queue] * size, payloads, [0] * size)

    def states(self) -> dict[str, int]:
        """The jobs in the queue table by status, and the finished ones in the log as ``logged <status>``."""
        names = self.settings.qualified
        queued = _execute(
            self.conninfo,
            f"SELECT status::text, count(*) FROM {names.queue_table} WHERE entrypoint = '{self.target.queue}'"
            " GROUP BY 1",
        )
        logged = _execute(
            self.conninfo,
            f"SELECT 'logged ' || status::text, count(*) FROM {names.queue_table_log}"
            f" WHERE entrypoint = '{self.target.queue}' AND status <> 'queued' GROUP BY 1",
        )
        return {state: count for state, count in [*queued, *logged]}

    def finished(self) -> int:
        return self.states().get("logged successful", 0)

    def waiting(self) -> int:
        """The jobs still in the queue table, whatever their status."""
        return sum(count for state, count in self.states().items() if not state.startswith("logged "))

    def send(self, count: int) -> Timing:
        async def run(queries: Any) -> Timing:
            started = time.perf_counter()
            for n in range(count):
                await queries.enqueue(self.target.queue, json.dumps({"n": n}).encode())
            return Timing(time.perf_counter() - started, count)

        return self._run(self._with_queries(run))  # type: ignore[no-any-return]

    def insert(self, count: int, batch: int) -> Timing:
        async def run(queries: Any) -> Timing:
            started = time.perf_counter()
            await self._enqueue_batches(queries, count, batch)
            return Timing(time.perf_counter() - started, count)

        return self._run(self._with_queries(run))  # type: ignore[no-any-return]

    def work(self, count: int, seconds: float) -> Timing:
        """A ``QueueManager`` in drain mode (it stops once the queue is empty), ``work_batch`` jobs per dequeue."""
        from pgqueuer import Job, QueueManager
        from pgqueuer.domain.types import Channel, QueueExecutionMode

        handled = 0

        async def run(queries: Any) -> Timing:
            manager = QueueManager(queries, channel=Channel(self.settings.channel))

            @manager.entrypoint(self.target.queue)
            async def handle(job: Job) -> None:
                nonlocal handled
                handled += 1

            started = time.perf_counter()
            await asyncio.wait_for(
                manager.run(
                    batch_size=self.work_batch, mode=QueueExecutionMode.drain, log_aggregation_interval=timedelta(0)
                ),
                seconds,
            )
            return Timing(time.perf_counter() - started, handled)

        return self._run(self._with_queries(run))  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------ making

PEERS: dict[str, Callable[[Target], Any]] = {"procrastinate": ProcrastinateClient, "pgqueuer": PgQueuerClient}


def peer_clients(target: Target, say: Callable[[str], None] = print) -> dict[str, Any]:
    """A client for each peer that imports, by its name with its version (e.g. ``procrastinate 3.10.0``)."""
    clients: dict[str, Any] = {}
    for package, make in PEERS.items():
        try:
            importlib.import_module(package)
        except ImportError as error:
            say(f"{package} does not import ({error}; pip install -e '.[bench]'): its rows are skipped")
            continue
        client = make(target)
        clients[client.name] = client
    return clients


def peer_versions() -> dict[str, str]:
    """The installed versions of the peers and of the drivers they run on, for the results file."""
    versions = {}
    for package in ("procrastinate", "pgqueuer", "psycopg", "psycopg-pool", "asyncpg"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions
