"""``AsyncWorker``: pg-boss's ``work()``, maintenance and cron, on loops of its own (PGBOSS10.md §7-9).

Unlike :class:`~sqla_boss.AsyncBoss`, the worker owns its transactions. Each loop iteration opens a session
from the worker's sessionmaker and, in **pg-boss's completion mode** (the default):

1. fetches up to ``batch_size`` jobs and **commits** (the jobs are now ``active`` for everyone);
2. calls ``handler(jobs)`` with the list, outside any transaction, for at most the jobs' ``expire_in``
   (at least 1 s; after that the jobs fail with pg-boss's ``handler execution exceeded <ms>ms``);
3. completes the jobs (storing the handler's return value as output when the batch holds one job, as
   pg-boss does) in the transaction of the loop's **next fetch**, committed before the next handler runs
   (or at stop); or, if the handler raised, fails them with the exception (pg-boss's retry and dead-letter
   rules apply) in a **transaction of their own, committed at once** (kept for the next fetch if the
   database refuses it).

In the **transactional mode** (``work(..., transactional=True)``) the fetch commits as in pg-boss's mode
(the jobs are ``active``), then ``handler(jobs, session)`` runs in a new transaction, inside a savepoint,
and the jobs are completed in that same transaction: the handler's writes and the completion commit
together or not at all. If the handler raises, the savepoint rolls back (its writes are gone) and the jobs
are failed in that transaction. If it outlives the timeout, or the worker stops, its backend is terminated
(the transaction rolls back) and the jobs are failed in a fresh one. Either way a retry is used up, and a
worker that dies mid-handler leaves its jobs ``active`` for expiry to fail: a job that kills every worker
taking it still ends by its retry rules.

A handler that raises anything, ``SystemExit``, ``KeyboardInterrupt`` and other ``BaseException`` included,
fails its jobs with it, and the loop goes on: stopping the worker is :meth:`AsyncWorker.stop`'s, or the
signals :meth:`AsyncWorker.run` handles.

Unlike pg-boss (trap 21), a loop fetches again straight away while the queue hands out jobs, and waits
the polling interval only after an empty fetch. A notification wakes the waiting loops of its queue at once
(:mod:`sqla_boss.async_listener`): on version 46, pg-boss 12's (sent by sqla_boss and Node alike to queues
with ``notify``); on version 24, sqla_boss's own (:mod:`sqla_boss.notify`; jobs from Node pg-boss 10 are found
by polling).

With ``supervise`` (default), the worker also runs pg-boss's maintenance every interval; with ``schedule``
(default), it evaluates cron and runs the ``__pgboss__send-it`` queue. Both coordinate with every other
Python or Node instance through pg-boss's own claims on ``version``, so the cluster does each once.

The threaded and the asyncio worker differ only in how loops and handlers run (:mod:`sqla_boss.flavours`).
On threads, each loop is a daemon thread, and a handler that outlives its timeout is left to finish on its
own. On asyncio, each loop is a task; a coroutine handler that outlives its timeout is cancelled, and a plain
function handler runs in a worker thread (``asyncio.to_thread``), so that it cannot block the event loop, and
is left to finish.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, overload

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sqla_boss import cron
from sqla_boss.async_driver import AsyncDriver
from sqla_boss.async_listener import LISTEN_POLL_SECONDS, AsyncListener
from sqla_boss.async_maintenance import AsyncMaintenance
from sqla_boss.async_supervisor import AsyncSupervisor
from sqla_boss.binding import driver_backend_pid
from sqla_boss.errors import (
    ClaimLostError,
    DatabaseUnavailableError,
    InvalidOptionError,
    QueueNotFoundError,
    SchemaNotInstalledError,
    SchemaVersionError,
    SqlaBossError,
)
from sqla_boss.flavours import ACaller, AEvent, Tasks, call_handler_async, signals_handled_async
from sqla_boss.handling import (
    SHUTDOWN_OUTPUT,
    Completion,
    HandlerT,
    Health,
    Held,
    LoopState,
    Timetable,
    backoff,
    describe,
    handler_timeout,
    heartbeat_interval,
    log_cron_tick,
    log_failure,
    log_retry,
    one_line,
    send_it_registration,
    settle,
    stale_after,
    timeout_error,
)
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.models import Job
from sqla_boss.operations import Operation, Operations, operations_for, terminate_backend, verify_schema
from sqla_boss.options.workers import Registration, WorkerSettings, adjust
from sqla_boss.schema import REPOSITORY_VERSIONS, schema_translate_map

logger = logging.getLogger("sqla_boss.worker")

AsyncHandler = Callable[..., Any]
"""A handler: ``handler(jobs)``, or ``handler(jobs, session)`` in the transactional mode; ``jobs`` is a list
even when ``batch_size`` is 1."""

__all__ = ["LISTEN_POLL_SECONDS", "SHUTDOWN_OUTPUT", "AsyncHandler", "AsyncWorker", "handle_in_transaction"]


def _session_factory(
    bind: AsyncEngine | async_sessionmaker[AsyncSession], schema: str
) -> tuple[async_sessionmaker[AsyncSession], AsyncEngine]:
    if isinstance(bind, AsyncEngine):
        # Added to the engine's own translation: the application's models may be translated too.
        translation = {
            **(bind.get_execution_options().get("schema_translate_map") or {}),
            **schema_translate_map(schema),
        }
        engine = bind.execution_options(schema_translate_map=translation)
        return async_sessionmaker(bind=engine, expire_on_commit=False), engine
    if isinstance(bind, async_sessionmaker):
        bound = bind.kw.get("bind")
        if not isinstance(bound, AsyncEngine):
            raise InvalidOptionError("the worker's async_sessionmaker must be bound to an AsyncEngine")
        return bind, bound
    raise InvalidOptionError(f"AsyncWorker takes an AsyncEngine or an async_sessionmaker, not {type(bind).__name__}")


class AsyncWorker:
    """Runs handlers for queued jobs, ``concurrency`` loops per queue, plus pg-boss's maintenance and cron.

    Args:
        bind: an ``AsyncEngine`` (the worker builds an ``async_sessionmaker`` on it, pointed at ``schema``) or
            your own ``async_sessionmaker`` bound to an engine (it must reach ``schema``). Jobs handed to
            pg-boss-mode handlers are detached and fully loaded.
        schema: the pg-boss schema (default ``pgboss``).
        polling_interval_seconds: the default wait after an empty fetch (at least 0.5, default 2).
        supervise: run maintenance (expire, archive, drop) when this instance wins the cluster's turn, every
            ``maintenance_interval_seconds`` (default 120), as pg-boss's ``supervise``; on version 46, pg-boss 12's
            supervisor (:class:`~sqla_boss.AsyncSupervisor`: counts, expiry, retention, flows, BAM).
        schedule: evaluate cron every ``cron_monitor_interval_seconds`` (1-45, default 30) when this instance
            wins the turn, and run the send-it queue every ``cron_worker_interval_seconds`` (1-45, default 5),
            as pg-boss's ``schedule``. Off, as in pg-boss, when an archive delay is under 60 s.
        listen: LISTEN for send notifications (psycopg engines) and fetch as soon as one comes: on version 46,
            pg-boss 12's channel (queues with ``notify``); on 24, sqla_boss's own. Where notifications cannot
            arrive (asyncpg, a transaction-pooling PgBouncer) the loops poll, after one
            ``listen_notify_unavailable`` warning.
        monitor_state_interval_seconds: log :meth:`AsyncMaintenance.count_states` this often, cluster-wide (off).
        **options: on a version-24 schema, pg-boss 10's maintenance options (``archive_completed_after_seconds``,
            ``delete_after_days``, ``maintenance_interval_seconds``, ... see
            :class:`~sqla_boss.maintenance.MaintenanceSettings`) and :class:`~sqla_boss.AsyncBoss`'s job defaults
            (``retry_limit``, ``expire_in_seconds``, ...); on version 46, pg-boss 12's supervisor options
            (``supervise_interval_seconds``, ``monitor_interval_seconds``, ``maintenance_interval_seconds``,
            ``register_instance``, ... see :class:`~sqla_boss.options.supervision.SupervisionSettings`). Those
            of the other version are refused by :meth:`start`.

    Raises:
        InvalidOptionError, InvalidSchemaNameError: bad options; nothing is started.
    """

    def __init__(
        self,
        bind: AsyncEngine | async_sessionmaker[AsyncSession],
        schema: str = DEFAULT_SCHEMA,
        *,
        polling_interval_seconds: float = 2.0,
        supervise: bool = True,
        schedule: bool = True,
        listen: bool = True,
        monitor_state_interval_seconds: int | None = None,
        cron_monitor_interval_seconds: int = 30,
        cron_worker_interval_seconds: int = 5,
        **options: Any,
    ) -> None:
        self.settings = WorkerSettings.of(
            schema,
            polling_interval_seconds=polling_interval_seconds,
            supervise=supervise,
            schedule=schedule,
            listen=listen,
            monitor_state_interval_seconds=monitor_state_interval_seconds,
            cron_monitor_interval_seconds=cron_monitor_interval_seconds,
            cron_worker_interval_seconds=cron_worker_interval_seconds,
            options=options,
        )
        """The worker's validated options."""
        self.schema = self.settings.schema
        """The pg-boss schema the worker serves."""
        self._sessions, self._engine = _session_factory(bind, self.schema)
        self.maintenance = AsyncMaintenance(self._engine, self.schema, settings=self.settings.maintenance)
        """The maintenance commands this worker's supervisor runs."""
        self._operations = operations_for(self.schema, self.settings.defaults)
        """The operations of the schema's version, chosen again by :meth:`start` once it has read it."""
        self._version = 24
        self._driver = AsyncDriver(self.schema, REPOSITORY_VERSIONS)
        self._registrations: list[Registration] = []
        self._wake: dict[str, AEvent] = {}
        self._tasks = Tasks()
        self._lock = threading.Lock()
        self._held: dict[object, Held] = {}
        self._swept = False
        self._started = False
        self._stop_claimed = False
        self._stopping = AEvent()
        self._stop_requested = AEvent()
        self._stopped = AEvent()
        self._force = AEvent()
        self._signals: list[int] = []
        self._stop_timeout = 30.0
        self._refused: SqlaBossError | None = None
        self._loop_states: list[LoopState] = []
        self._supervisor: AsyncSupervisor | None = None
        self._listener: AsyncListener | None = None

    # ----------------------------------------------------------------------------------- registering

    @overload
    def work(
        self,
        name: str,
        handler: None = None,
        *,
        batch_size: int = 1,
        concurrency: int = 1,
        polling_interval_seconds: float | None = None,
        include_metadata: bool = False,
        transactional: bool = False,
        group_concurrency: int | dict[str, Any] | None = None,
        min_priority: int | None = None,
        max_priority: int | None = None,
        heartbeat_refresh_seconds: float | None = None,
    ) -> Callable[[HandlerT], HandlerT]: ...

    @overload
    def work(
        self,
        name: str,
        handler: HandlerT,
        *,
        batch_size: int = 1,
        concurrency: int = 1,
        polling_interval_seconds: float | None = None,
        include_metadata: bool = False,
        transactional: bool = False,
        group_concurrency: int | dict[str, Any] | None = None,
        min_priority: int | None = None,
        max_priority: int | None = None,
        heartbeat_refresh_seconds: float | None = None,
    ) -> HandlerT: ...

    def work(
        self,
        name: str,
        handler: AsyncHandler | None = None,
        *,
        batch_size: int = 1,
        concurrency: int = 1,
        polling_interval_seconds: float | None = None,
        include_metadata: bool = False,
        transactional: bool = False,
        group_concurrency: int | dict[str, Any] | None = None,
        min_priority: int | None = None,
        max_priority: int | None = None,
        heartbeat_refresh_seconds: float | None = None,
    ) -> Any:
        """Register ``handler`` for queue ``name``; returns the handler, or a decorator without one.

        ``transactional``: call ``handler(jobs, session)`` in the transaction that completes the jobs (see
        the module documentation). On a version-46 schema (pg-boss 12), ``group_concurrency`` (a number, or
        ``{"default": n, "tiers": {tier: n}}``) caps the active jobs of each group across the cluster,
        ``min_priority`` / ``max_priority`` bound the priorities fetched, and a batch holding jobs with
        ``heartbeat_seconds`` is touched every ``heartbeat_refresh_seconds`` (default: half the smallest
        ``heartbeat_seconds``) while its handler runs; :meth:`start` refuses them on version 24. Options are
        checked now. Registering on a started worker starts its
        loops at once (on asyncio, call it from the worker's event loop then). Touches no database.

        Raises:
            InvalidOptionError, InvalidQueueNameError: bad options; nothing is registered.
            SqlaBossError: the worker has been stopped.
        """
        interval = (
            self.settings.polling_interval_seconds if polling_interval_seconds is None else polling_interval_seconds
        )
        template = Registration.of(
            name,
            batch_size=batch_size,
            concurrency=concurrency,
            polling_interval_seconds=interval,
            include_metadata=include_metadata,
            transactional=transactional,
            group_concurrency=group_concurrency,
            min_priority=min_priority,
            max_priority=max_priority,
            heartbeat_refresh_seconds=heartbeat_refresh_seconds,
        )

        def register(function: AsyncHandler) -> AsyncHandler:
            self._register(template.with_handler(function))
            return function

        if handler is None:
            return register
        return register(handler)

    def _register(self, registration: Registration) -> None:
        with self._lock:
            if self._stopping.is_set():
                raise SqlaBossError("workers are disabled: this worker has been stopped")
            self._registrations.append(registration)
            self._wake.setdefault(registration.name, AEvent())
            if self._started:
                self._launch(registration)

    def adjust(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        transactional: bool | None = None,
    ) -> None:
        """Before :meth:`start`: keep only the handlers of ``queues``, and give them all ``concurrency`` or the
        ``transactional`` completion mode; ``None`` keeps what was registered. ``sqla-boss work`` uses this.

        Raises:
            InvalidOptionError: a queue without a handler, or a bad value; nothing changed.
            SqlaBossError: the worker has been started already.
        """
        with self._lock:
            if self._started:
                raise SqlaBossError("adjust() must come before start()")
            self._registrations = adjust(
                self._registrations, queues=queues, concurrency=concurrency, transactional=transactional
            )

    @property
    def queues(self) -> list[str]:
        """The queues with handlers registered, in registration order (the send-it queue excluded)."""
        return list(dict.fromkeys(r.name for r in self._registrations if not r.internal))

    # ------------------------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Check that the worker can work, then start the loops (``concurrency`` per registration), the
        listener and the supervisor; return.

        First, within seconds: the database answers, the schema holds a pg-boss version this release runs,
        and every queue with a handler exists (reads only). Then the loops commit their own transactions (see
        the module documentation). With ``schedule`` on, the ``__pgboss__send-it`` queue is created first if
        it is missing (as pg-boss's start does).

        Raises:
            DatabaseUnavailableError: the database cannot be reached, or refused the checks.
            SchemaNotInstalledError, SchemaVersionError: the schema is not one to work on.
            QueueNotFoundError: a queue with a handler does not exist.
            SqlaBossError: the worker was started or stopped already.
            Nothing has started when it raises.
        """
        with self._lock:
            if self._started or self._stopping.is_set():
                raise SqlaBossError("a worker can be started only once")
        await self._check_ready()
        with self._lock:
            if self._started or self._stopping.is_set():
                raise SqlaBossError("a worker can be started only once")
            self._started = True
            for registration in self._registrations:
                self._launch(registration)
        if self.settings.cron_on(self._version) and not self._stopping.is_set():
            # Before the supervisor, whose first cron tick comes at once and inserts into this queue (§9.2),
            # and before the listener, so that its first LISTEN covers the queue.
            await self._create_send_it_queue()
            with contextlib.suppress(SqlaBossError):  # stopped meanwhile
                self._register(send_it_registration(self.settings, self._send_it))
        with self._lock:
            if self._stopping.is_set():
                return
            if self.settings.listen:
                self._listener = AsyncListener(
                    self._engine,
                    self.schema,
                    self._version,
                    self._wake,
                    self._stopping,
                    self.settings.polling_interval_seconds,
                )
                self._tasks.spawn(self._listener.run, "sqla_boss-listener")
            if self._version == 24 and Timetable(self.settings, 0.0).next_at() is not None:
                self._tasks.spawn(self._supervise, "sqla_boss-supervisor")
            elif self._version == 46:
                self._supervisor = self._supervisor_46()
                self._tasks.spawn(self._supervisor.run, "sqla_boss-supervisor", self._stopping)
        loops = sum(registration.concurrency for registration in self._registrations if not registration.internal)
        logger.info(
            "started on schema %r: %d loop(s) on queue(s) %s",
            self.schema,
            loops,
            ", ".join(self.queues),
            extra=describe(""),
        )

    async def stop(self, *, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop fetching, wait for handlers in flight, then fail the jobs still held.

        Graceful: waits up to ``timeout`` seconds (at least 1, as pg-boss) for the handlers in flight to
        finish and their jobs to be completed or failed. Not graceful: waits for nothing. Then every job
        still held is failed with ``{"value": "pg-boss shut down while active"}`` (retry rules apply) in a
        transaction of its own, committed at once (a transactional batch's open transaction is ended first,
        by terminating its backend); a handler still running is then cancelled if it is a coroutine, else
        ignored. Calling ``stop()`` again waits for the first call to finish; under :meth:`run`, a second
        signal ends the graceful wait at once.
        """
        self._stop_requested.set()
        with self._lock:
            first, self._stop_claimed = not self._stop_claimed, True
        if not first:
            await self._stopped.wait()
            return
        try:
            self._stopping.set()
            for wake in self._wake.values():
                wake.set()
            if graceful:
                await self._tasks.wait(max(1.0, timeout), self._force)
            with self._lock:
                self._swept = True
                held = list(self._held.values())
                self._held.clear()
            for job in held:
                await self._fail_held(job, SHUTDOWN_OUTPUT)
            await self._tasks.cancel()
        finally:
            self._stopped.set()

    async def run(self, *, timeout: float = 30.0) -> int | None:
        """:meth:`start`, wait until :meth:`stop` is called or SIGTERM / SIGINT arrive, then stop.

        The first signal stops gracefully, waiting up to ``timeout`` seconds for the jobs in flight (it says so
        in the log); a second one, either kind, stops at once: the jobs still held are failed with pg-boss's
        shutdown output. The signal handlers are installed only where signals arrive (the main thread, or its
        event loop), and the previous ones are restored on the way out.

        Returns:
            the signal that forced the stop (the second one), or ``None`` after a graceful stop.

        Raises:
            what :meth:`start` raises; and, after stopping, the ``SchemaVersionError`` or
            ``SchemaNotInstalledError`` of a schema the supervisor found changed under the worker.
        """
        self._stop_timeout = max(1.0, timeout)
        with signals_handled_async(self._on_signal):
            await self.start()
            while not await self._stop_requested.wait(0.5):  # a bounded wait, so signals are seen
                pass
            await self.stop(graceful=True, timeout=timeout)
        if self._refused is not None:
            raise self._refused
        return self._signals[-1] if len(self._signals) > 1 else None

    @property
    def listening(self) -> bool:
        """Whether notifications wake the loops now: the listener has proven its subscription (a probe NOTIFY
        came back) and its connection is up. ``False`` before that, while it reconnects, with ``listen=False``,
        and where notifications cannot arrive (asyncpg, a transaction-pooling PgBouncer: the loops poll, and
        the worker logged one ``listen_notify_unavailable`` warning). No I/O, from any thread."""
        listener = self._listener
        return listener is not None and listener.subscribed.is_set() and not self._stopping.is_set()

    def health(self) -> Health:
        """Whether the worker is doing its work, for a liveness probe (``sqla-boss work --health-port``).

        Healthy while started, not stopping, the schema still one it runs, and every loop either running a
        handler or having fetched successfully within the last minute (or four of its polling intervals, if
        longer). Reads the worker's own state: no I/O, from any thread.
        """
        if self._refused is not None:
            status, reason = "refused", str(self._refused)
        elif self._stopping.is_set():
            status, reason = "stopping", None
        elif not self._started:
            status, reason = "not started", None
        else:
            status, reason = "ok", None
        return Health.of(status, reason, list(self._loop_states), time.monotonic())

    def _on_signal(self, signum: int) -> None:
        """SIGTERM or SIGINT under :meth:`run`: the first stops gracefully, a second stops at once."""
        self._signals.append(signum)
        name = signal.Signals(signum).name
        jobs = sum(len(held.ids) for held in list(self._held.values()))
        if len(self._signals) == 1:
            logger.warning(
                "stopping on %s: waiting up to %g s for %d job(s) in flight (signal again to stop now)",
                name,
                self._stop_timeout,
                jobs,
                extra=describe(""),
            )
        else:
            logger.warning(
                "stopping now on a second signal (%s): failing the %d job(s) in flight", name, jobs, extra=describe("")
            )
            self._force.set()
        self._stop_requested.set()

    async def _check_ready(self) -> None:
        """The checks of :meth:`start`, in one read-only transaction."""
        try:
            async with self._sessions() as session:
                version = await self._driver.run(session, verify_schema(self.schema, REPOSITORY_VERSIONS))
                self._use_version(version)
                missing = await self._driver.run(session, self._operations.missing_queues(self.queues))
        except DBAPIError as error:
            raise DatabaseUnavailableError(
                f"cannot work on schema {self.schema!r}: the database refused ({one_line(error)})"
            ) from error
        if missing:
            names = ", ".join(map(repr, missing))
            raise QueueNotFoundError(
                f"no queue {names} in schema {self.schema!r} to work on: create it first (sqla-boss create-queue)",
                tuple(missing),
            )

    def _use_version(self, version: int) -> None:
        """Run the operations of the schema's ``version``, once the options given are ones it has.

        Raises:
            UnsupportedOperationError: an option of the other version.
        """
        self.settings.check_version(version)
        for registration in self._registrations:
            registration.check_version(version)
        self._operations = operations_for(self.schema, self.settings.defaults, version)
        self._version = version

    def _settling(self, ids: list[uuid.UUID], jobs: Sequence[Job]) -> list[Any]:
        """What to settle jobs by: on version 46 the fetched jobs themselves, so that the statement touches only
        the attempt this worker holds (PGBOSS12.md §6.1, trap 18); their ids on 24, which has no fence."""
        return list(jobs) if self._version == 46 and jobs else ids

    def _refuse(self, error: SqlaBossError) -> None:
        """The schema changed under the worker: log it once, and stop fetching."""
        if self._refused is not None:
            return
        self._refused = error
        logger.error("%s; the worker stops fetching", error, extra=describe(""))
        self._stopping.set()
        for wake in self._wake.values():
            wake.set()
        self._stop_requested.set()

    # ------------------------------------------------------------------------------------------ loops

    def _launch(self, registration: Registration) -> None:
        for index in range(registration.concurrency):
            self._tasks.spawn(self._loop, f"sqla_boss-{registration.name}-{index}", registration)

    async def _loop(self, registration: Registration) -> None:
        state = LoopState(registration.name, stale_after(registration.polling_interval_seconds), time.monotonic())
        self._loop_states.append(state)
        caller = ACaller(f"sqla_boss-handler-{registration.name}")
        wake = self._wake[registration.name]
        completions: list[Completion] = []
        try:
            while not self._stopping.is_set():
                wake.clear()  # a notification from here on wakes the wait below
                try:
                    found = await self._iterate(registration, caller, completions, state)
                except Exception as error:
                    state.failures += 1
                    delay = backoff(state.failures, registration.polling_interval_seconds)
                    log_retry(f"worker loop of queue {registration.name} failed", error, delay, registration.name)
                    await self._stopping.wait(delay)
                    continue
                state.failures = 0
                if not found and not self._stopping.is_set():  # stop() sets _stopping before it sets the wakes
                    await wake.wait(registration.polling_interval_seconds)
        finally:
            caller.close()
            if completions:
                try:
                    async with self._sessions.begin() as session:
                        await self._complete(session, registration.name, completions)
                except Exception as error:
                    logger.error(
                        "could not complete jobs of queue %s at stop: %s",
                        registration.name,
                        one_line(error),
                        extra=describe(registration.name),
                    )

    async def _complete(self, session: AsyncSession, name: str, completions: list[Completion]) -> None:
        """Complete what earlier handlers returned, in ``session``'s transaction; the caller clears the list
        once that transaction has committed."""
        for completion in completions:
            targets = self._settling(completion.ids, completion.jobs)
            if completion.failed:
                await self._driver.run(session, self._operations.fail(name, targets, completion.output))
            else:
                await self._driver.run(session, self._operations.complete(name, targets, completion.output))

    def _hold(self, held: Held) -> object | None:
        """Record fetched jobs as held; ``None`` when stop() has swept already and they must not run."""
        key = object()
        with self._lock:
            if self._swept:
                return None
            self._held[key] = held
        return key

    def _release(self, key: object) -> bool:
        """Drop the held jobs; ``False`` when stop() failed them already and the outcome must be ignored."""
        with self._lock:
            return self._held.pop(key, None) is not None

    def _beat(self, registration: Registration, jobs: Sequence[Job]) -> AEvent | None:
        """Start touching ``jobs`` while their handler runs, if any has a heartbeat (version 46): returns the
        event that stops it, or ``None``."""
        seconds = heartbeat_interval(jobs, registration.heartbeat_refresh_seconds)
        if seconds is None:
            return None
        done = AEvent()
        self._tasks.spawn(
            self._heartbeat, f"sqla_boss-heartbeat-{registration.name}", registration.name, jobs, seconds, done
        )
        return done

    async def _heartbeat(self, name: str, jobs: Sequence[Job], seconds: float, done: AEvent) -> None:
        """Touch the jobs every ``seconds`` until ``done`` (pg-boss 12's heartbeat timer, §7.2), each time in a
        transaction of its own, fenced on the attempts held; a touch that misses a job (expired, or settled by
        someone else meanwhile) is logged once."""
        ids = [job.id for job in jobs]
        warned = False
        while not await done.wait(seconds):
            try:
                async with self._sessions.begin() as session:
                    touched = await self._driver.run(session, self._operations.touch(name, list(jobs)))
            except Exception as error:
                logger.warning(
                    "could not touch job(s) of queue %s: %s", name, one_line(error), extra=describe(name, ids)
                )
                continue
            if touched < len(jobs) and not warned and not done.is_set():
                warned = True
                logger.warning(
                    "%d of %d job(s) of queue %s are no longer this worker's to touch (expired or settled)",
                    len(jobs) - touched,
                    len(jobs),
                    name,
                    extra=describe(name, ids),
                )

    async def _fetch(self, session: AsyncSession, registration: Registration) -> list[Job] | None:
        """Fetch without a savepoint (the worker owns the transaction); ``None`` after a collision with a
        concurrent activation of the same singleton key, rolled back, to be fetched again at once."""
        operation = self._operations.fetch(
            registration.name,
            registration.batch_size,
            True,
            registration.include_metadata,
            False,
            savepoint=False,
            min_priority=registration.min_priority,
            max_priority=registration.max_priority,
            group_concurrency=registration.group_concurrency,
        )
        try:
            return await self._driver.run(session, operation)
        except IntegrityError:
            await session.rollback()
            return None

    async def _fetch_and_commit(
        self, session: AsyncSession, registration: Registration, completions: list[Completion]
    ) -> list[Job] | None:
        """Commit the earlier completions with a fetch, and return the jobs fetched (detached, loaded), ``[]``
        when there were none, or ``None`` when there is nothing to run now (stopping, or a collision)."""
        await self._complete(session, registration.name, completions)
        if self._stopping.is_set():
            await session.commit()
            completions.clear()
            return None
        jobs = await self._fetch(session, registration)
        if jobs is None:  # rolled back, completions included: they go with the next fetch
            return None
        if jobs and self._stopping.is_set():
            await session.rollback()  # the jobs go back to the queue untouched; the completions commit at exit
            return None
        session.expunge_all()  # the handler gets detached, loaded jobs: no lazy loads on a closed session
        await session.commit()  # even when empty: psycopg forgets its prepared statements on every ROLLBACK
        completions.clear()
        return jobs

    async def _iterate(
        self, registration: Registration, caller: ACaller, completions: list[Completion], state: LoopState
    ) -> bool:
        """One fetch, handler call and completion; ``False`` when the fetch found nothing.

        The completions of the previous handler calls commit in the transaction of this fetch: one
        transaction per job instead of two, and still committed before this iteration's handler runs.
        """
        if registration.transactional:
            return await self._iterate_in_transaction(registration, caller, completions, state)
        name = registration.name
        async with self._sessions() as session:
            jobs = await self._fetch_and_commit(session, registration, completions)
        state.last_fetch = time.monotonic()
        if not jobs:
            return jobs is None
        ids = [job.id for job in jobs]
        key = self._hold(Held(name, ids, jobs=jobs))
        if key is None:  # stop() has already failed what it found; fail these too rather than run them
            await self._fail_held(Held(name, ids, jobs=jobs), SHUTDOWN_OUTPUT)
            return True
        logger.debug("running job(s) %s of queue %s", ", ".join(map(str, ids)), name, extra=describe(name, ids))
        seconds = handler_timeout(jobs)
        beating = self._beat(registration, jobs)
        state.handling_since = time.monotonic()
        try:
            outcome = await caller.call(seconds, registration.handler, jobs)
        finally:
            state.handling_since = None
            if beating is not None:
                beating.set()
        if not self._release(key):
            return True
        if not outcome.finished:
            await self._record_failure(name, jobs, timeout_error(seconds, self._version), completions)
            return True
        completion = settle(jobs, outcome.value, outcome.error)
        if completion.failed:
            await self._record_failure(name, jobs, completion.output, completions)
        else:
            completions.append(completion)
        return True

    async def _iterate_in_transaction(
        self, registration: Registration, caller: ACaller, completions: list[Completion], state: LoopState
    ) -> bool:
        """Fetch and commit (the jobs are ``active``: a crash from here on uses up a retry, through expiry),
        then run the handler and the completion in one new transaction. Failures that could not be recorded
        earlier commit with the fetch."""
        name = registration.name
        session = self._sessions()
        try:
            jobs = await self._fetch_and_commit(session, registration, completions)
        except BaseException:
            await session.close()
            raise
        state.last_fetch = time.monotonic()
        if not jobs:
            await session.close()
            return jobs is None
        ids = [job.id for job in jobs]
        try:
            pid = await _backend_pid(session)  # begins the handler's transaction
        except Exception as error:  # the jobs are active now: fail them rather than leave them to expiry
            await session.invalidate()
            await self._record_failure(name, jobs, error, completions)
            raise
        key = self._hold(Held(name, ids, pid, jobs))
        if key is None:  # stop() has already failed what it found; fail these too rather than run them
            await session.close()
            await self._fail_held(Held(name, ids, jobs=jobs), SHUTDOWN_OUTPUT)
            return True

        async def in_transaction() -> BaseException | None:
            """Run the handler in a savepoint; complete, or roll the handler back and fail; commit."""
            error = await handle_in_transaction(
                self._driver,
                session,
                self._operations,
                name,
                jobs,
                registration.handler,
                targets=self._settling(ids, jobs),
            )
            try:
                await session.commit()
            except Exception:
                if error is None:
                    raise
                raise error from None  # the transaction itself is lost: failed afresh, with this reason
            return error

        seconds = handler_timeout(jobs)
        # A call that outlives its timeout keeps the session (a thread runs on with it, a cancelled coroutine
        # may have left it mid-statement): its connection must never go back to the pool.
        beating = self._beat(registration, jobs)
        state.handling_since = time.monotonic()
        try:
            outcome = await caller.call(seconds, in_transaction, if_abandoned=session.invalidate)
        except BaseException:  # cancelled from outside (a forced stop ends a handler that outlived the sweep)
            with contextlib.suppress(Exception):  # its transaction dies with the connection, never pooled
                await session.invalidate()
            raise
        finally:
            state.handling_since = None
            if beating is not None:
                beating.set()
        held = self._release(key)
        if not outcome.finished:  # end its transaction from outside: its writes roll back
            await self._terminate(pid)
            if held:
                await self._record_failure(name, jobs, timeout_error(seconds, self._version), completions)
            return True
        try:
            if outcome.error is not None:  # the transaction itself failed: maybe its backend, terminated at stop
                await session.invalidate()
            else:
                await session.close()
        except Exception:  # a dead connection: the server has rolled back already
            logger.debug("closing the session of a failed batch of queue %s", name, exc_info=True)
        if not held:
            return True
        if outcome.error is not None:  # the transaction itself failed; the jobs are still active
            await self._record_failure(name, jobs, outcome.error, completions)
        elif outcome.value is not None:
            log_failure(name, ids, outcome.value)
        return True

    async def _record_failure(self, name: str, jobs: Sequence[Job], error: Any, pending: list[Completion]) -> None:
        """Fail the jobs now, in a transaction of their own; if the database refuses (a lock or statement
        timeout, a lost connection), keep the failure in ``pending`` for the loop's next transaction."""
        ids = [job.id for job in jobs]
        log_failure(name, ids, error)
        try:
            await self._fail(name, self._settling(ids, jobs), error)
        except Exception as refused:
            logger.warning(
                "could not record the failure of job(s) %s of queue %s (%s); trying again with the next fetch",
                ", ".join(map(str, ids)),
                name,
                one_line(refused),
                extra=describe(name, ids),
            )
            logger.debug("recording the failure failed", exc_info=True, extra=describe(name, ids))
            pending.append(Completion(ids, error, failed=True, jobs=jobs))

    async def _fail(self, name: str, targets: list[Any], output: Any) -> None:
        """Fail the jobs (ids, or on version 46 the fetched jobs: :meth:`_settling`) in a transaction of their
        own, committed at once."""
        await self._in_own_transaction(self._operations.fail(name, targets, output))

    async def _in_own_transaction(self, operation: Operation[Any]) -> None:
        """Run one operation in a transaction of its own, committed at once; up to twice more if the pool
        handed out a connection whose backend is gone. At a forced stop that happens: a transactional batch
        that ended just before its backend was terminated has put that dead connection back in the pool."""
        for attempt in (1, 2, 3):
            try:
                async with self._sessions() as session, session.begin():
                    await self._driver.run(session, operation)
                return
            except DBAPIError as error:
                if attempt == 3 or not error.connection_invalidated:
                    raise

    async def _fail_held(self, held: Held, output: Any) -> None:
        """At stop: end a held batch's transaction, if it has one, and fail its jobs; a failure the database
        refuses now is logged, as no loop is left to try it again (expiry fails the jobs later)."""
        extra = describe(held.name, held.ids)
        try:
            if held.pid is not None:
                await self._terminate(held.pid)
            await self._fail(held.name, self._settling(held.ids, held.jobs), output)
        except Exception as error:
            logger.error(
                "could not fail job(s) %s of queue %s: %s", extra["job_id"], held.name, one_line(error), extra=extra
            )
            logger.debug("failing held jobs failed", exc_info=True, extra=extra)
        else:
            logger.warning("failed job(s) %s of queue %s: %r", extra["job_id"], held.name, output, extra=extra)

    async def _terminate(self, pid: int) -> None:
        """End a transactional batch's open transaction (its writes roll back) by terminating its backend."""
        await self._in_own_transaction(terminate_backend(pid))

    # ------------------------------------------------------------------------------- supervisor, cron

    async def _create_send_it_queue(self) -> None:
        try:
            async with self._sessions.begin() as session:
                if await self._driver.run(session, self._operations.get_queue(cron.SEND_IT_QUEUE)) is None:
                    await self._driver.run(session, self._operations.create_queue(cron.SEND_IT_QUEUE, {}))
        except Exception as error:
            logger.warning(
                "could not create queue %s: %s", cron.SEND_IT_QUEUE, one_line(error), extra=describe(cron.SEND_IT_QUEUE)
            )

    async def _send_it(self, jobs: list[Job]) -> None:
        """The send-it worker's handler: each due schedule's job into its queue, as pg-boss's insert (version 24) or
        send with the schedule's options (version 46)."""
        async with self._sessions.begin() as session:
            await self._driver.run(session, self._operations.send_it(job.data for job in jobs))

    async def _supervise(self) -> None:
        timetable = Timetable(self.settings, time.monotonic())
        while not self._stopping.is_set():
            ticks = timetable.due(time.monotonic())
            if ticks and not await self._schema_still_runs():
                return
            for tick in ticks:
                try:
                    await self._tick(tick)
                except Exception as error:
                    logger.warning("the %s tick failed: %s", tick, one_line(error), extra=describe(""))
                    logger.debug("the %s tick failed", tick, exc_info=True, extra=describe(""))
            next_at = timetable.next_at()
            if next_at is None:
                return
            await self._stopping.wait(max(0.0, next_at - time.monotonic()))

    async def _schema_still_runs(self) -> bool:
        """Before each supervisor tick: whether the schema still holds a version this release runs (a Node
        pg-boss upgrade of a shared schema changes it under a running worker); if not, :meth:`_refuse`."""
        try:
            async with self._sessions() as session:
                await self._driver.run(session, verify_schema(self.schema, (self._version,)))
        except (SchemaVersionError, SchemaNotInstalledError) as error:
            self._refuse(error)
            return False
        except Exception as error:  # an outage: the tick's own statements will say more
            logger.debug("checking the schema version failed: %s", one_line(error), extra=describe(""))
        return True

    async def _tick(self, tick: str) -> None:
        if tick == "maintenance":
            await self._maintain()
        elif tick == "monitor":
            await self._monitor()
        else:
            await self._evaluate_cron()

    async def _maintain(self) -> None:
        result = await self.maintenance.maintain_if_due()
        if result is not None:
            logger.info(
                "maintenance: %d expired, %d archived, %d dropped in %d ms",
                result.expired,
                result.archived,
                result.dropped,
                result.ms,
                extra=describe(""),
            )

    async def _monitor(self) -> None:
        interval = self.settings.monitor_state_interval_seconds
        if interval is not None and await self.maintenance.claim_monitoring(interval):
            states = await self.maintenance.count_states()
            logger.info("monitor-states: %s", states, extra={**describe(""), "states": states})

    async def _evaluate_cron(self) -> None:
        async with self._sessions.begin() as session:
            interval = self.settings.cron_monitor_interval_seconds
            tick = await self._driver.run(session, self._operations.cron_tick(interval))
        log_cron_tick(tick)

    def _supervisor_46(self) -> AsyncSupervisor:
        """Version 46's supervisor, as pg-boss 12's instance runs it: the supervise pass and flow resolver with
        ``supervise``, cron with ``schedule``, BAM with ``migrate``, the ``instance`` row with
        ``register_instance`` (PGBOSS12.md §8.1)."""
        settings = self.settings
        return AsyncSupervisor(
            self._engine,
            self.schema,
            settings.supervision,
            cron_interval_seconds=settings.cron_monitor_interval_seconds if settings.cron_on(46) else None,
            supervise=settings.supervise,
            workers=self._describe_workers,
        )

    def _describe_workers(self) -> list[dict[str, Any]]:
        """The ``workers`` of this instance's ``instance`` row: one entry per registration, in pg-boss's words."""
        return [
            {
                "queue": registration.name,
                "localConcurrency": registration.concurrency,
                "batchSize": registration.batch_size,
                "pollingIntervalSeconds": registration.polling_interval_seconds,
                "transactional": registration.transactional,
            }
            for registration in self._registrations
            if not registration.internal
        ]


async def handle_in_transaction(
    driver: AsyncDriver,
    session: AsyncSession,
    operations: Operations,
    name: str,
    jobs: Sequence[Job],
    handler: AsyncHandler,
    call: Callable[..., Any] = call_handler_async,
    *,
    targets: Sequence[Any] | None = None,
) -> BaseException | None:
    """The transactional mode's rules for one batch, in ``session``'s transaction: ``handler(jobs, session)``
    runs in a savepoint (through ``call``, as the worker calls handlers) and its outcome is settled there
    (:func:`~sqla_boss.handling.settle`), then the jobs are completed through ``driver`` and ``operations``.
    If the handler raises an ``Exception``, or returns an output that cannot be stored, the savepoint rolls
    back (the handler's writes are gone) and the jobs are failed with that error (retry and dead-letter
    rules apply); the error is returned. The completion runs in the savepoint too: when it changes fewer jobs
    than the batch holds (one expired, failed by a lapsed heartbeat or deleted meanwhile), that is a
    :class:`~sqla_boss.errors.ClaimLostError`, handled as the handler's error, so the writes never commit beside
    another holder's attempt. ``targets`` are what the jobs are settled by (default their ids; the worker gives
    the jobs themselves on version 46, fenced on their attempt).

    Does not commit. Locks what the handler locks, and the jobs' rows.

    Raises:
        the handler's error, when failing the jobs failed too: the transaction is lost, and the caller
        fails the jobs afresh; a ``BaseException`` that is no ``Exception`` (``KeyboardInterrupt``, ...).
    """
    ids = list(targets) if targets is not None else [job.id for job in jobs]
    try:
        async with session.begin_nested():
            completion = settle(jobs, await call(handler, jobs, session))
            if completion.failed:  # the output cannot be stored: roll the handler's writes back too
                raise completion.output
            completed = await driver.run(session, operations.complete(name, ids, completion.output))
            if completed < len(ids):  # some job is no longer ours: its next holder must not find our writes
                raise ClaimLostError(
                    f"{len(ids) - completed} of {len(ids)} job(s) were no longer this worker's when the handler "
                    "finished (expired, failed or deleted meanwhile); the handler's writes are rolled back"
                )
    except Exception as error:  # the savepoint is rolled back: the handler's writes are gone
        try:
            await driver.run(session, operations.fail(name, ids, error))
        except Exception:
            raise error from None
        return error
    return None


async def _backend_pid(session: AsyncSession) -> int:
    """The backend of the session's connection (beginning its transaction), as the driver knows it; asked of
    the server only where the driver does not say."""
    pid = driver_backend_pid(await session.connection())
    if pid is None:
        pid = (await session.execute(select(func.pg_backend_pid()))).scalar_one()
    return int(pid)
