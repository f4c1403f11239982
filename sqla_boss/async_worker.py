"""``AsyncWorker``: :class:`~sqla_boss.Worker` on asyncio tasks, built on :class:`~sqla_boss.AsyncBoss`.

The same loop, completion modes, wake-ups, maintenance and cron as the threaded worker (see
:mod:`sqla_boss.worker`); the options and rules come from :mod:`sqla_boss.handling`, so both behave alike.
Handlers may be coroutine functions (awaited on the event loop) or plain functions (run in a thread by
``asyncio.to_thread``, so they cannot block the loop). A coroutine handler that outlives its timeout is
cancelled; a plain one is left to finish, as pg-boss leaves its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, overload

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sqla_boss import cron
from sqla_boss.async_boss import AsyncBoss
from sqla_boss.errors import InvalidOptionError, SqlaBossError
from sqla_boss.handling import (
    SHUTDOWN_OUTPUT,
    Completion,
    HandlerT,
    Held,
    Registration,
    Timetable,
    WorkerSettings,
    adjust,
    backoff,
    describe,
    handler_timeout,
    log_cron_tick,
    log_failure,
    send_it_registration,
    settle,
    timeout_error,
)
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.maintenance import AsyncMaintenance
from sqla_boss.models import Job
from sqla_boss.notify import channel
from sqla_boss.schema import schema_translate_map

logger = logging.getLogger("sqla_boss.worker")

AsyncHandler = Callable[..., Any]
"""A handler: ``handler(jobs)``, or ``handler(jobs, session)`` with an ``AsyncSession`` in the transactional
mode; a coroutine function or a plain one."""

LISTEN_POLL_SECONDS = 0.5

__all__ = ["AsyncHandler", "AsyncWorker", "handle_in_transaction"]


def _session_factory(
    bind: AsyncEngine | async_sessionmaker[AsyncSession], schema: str
) -> tuple[async_sessionmaker[AsyncSession], AsyncEngine]:
    if isinstance(bind, AsyncEngine):
        engine = bind.execution_options(schema_translate_map=schema_translate_map(schema))
        return async_sessionmaker(bind=engine, expire_on_commit=False), engine
    if isinstance(bind, async_sessionmaker):
        bound = bind.kw.get("bind")
        if not isinstance(bound, AsyncEngine):
            raise InvalidOptionError("the worker's async_sessionmaker must be bound to an AsyncEngine")
        return bind, bound
    raise InvalidOptionError(f"an AsyncWorker takes an AsyncEngine or an async_sessionmaker, not {type(bind).__name__}")


async def _call(handler: Callable[..., Any], *args: Any) -> Any:
    if inspect.iscoroutinefunction(handler):
        return await handler(*args)
    result = await asyncio.to_thread(handler, *args)
    if inspect.isawaitable(result):
        return await result
    return result


class AsyncWorker:
    """Runs handlers for queued jobs on asyncio tasks, ``concurrency`` tasks per queue, plus pg-boss's
    maintenance and cron: :class:`~sqla_boss.Worker` for asyncio.

    Args:
        bind: an ``AsyncEngine`` (the worker builds an ``async_sessionmaker`` on it, pointed at ``schema``) or
            your own ``async_sessionmaker`` bound to an engine (it must reach ``schema``).
        schema: the pg-boss schema (default ``pgboss``).
        polling_interval_seconds: the default wait after an empty fetch (at least 0.5, default 2).
        supervise: run maintenance when this instance wins the cluster's turn, as pg-boss's ``supervise``.
        schedule: evaluate cron and run the send-it queue, as pg-boss's ``schedule``.
        listen: LISTEN for sqla_boss's send notifications (psycopg engines) and fetch as soon as one comes.
        monitor_state_interval_seconds: log the counts of jobs by state this often, cluster-wide (off).
        **options: pg-boss's maintenance options and :class:`~sqla_boss.AsyncBoss`'s job defaults.

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
        self._registrations: list[Registration] = []
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._held: dict[object, Held] = {}
        self._swept = False
        self._started = False
        self._stopping = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_lock = asyncio.Lock()

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
    ) -> Any:
        """Register ``handler`` for queue ``name``; returns the handler, or a decorator without one.

        ``transactional``: call ``handler(jobs, session)`` in the transaction that completes the jobs (see
        :mod:`sqla_boss.worker`). Options are checked now. Registering on a started worker starts its loops
        at once (call it from the worker's event loop then). Touches no database.

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
        )

        def register(function: AsyncHandler) -> AsyncHandler:
            self._register(template.with_handler(function))
            return function

        if handler is None:
            return register
        return register(handler)

    def _register(self, registration: Registration) -> None:
        if self._stopping.is_set():
            raise SqlaBossError("workers are disabled: this worker has been stopped")
        self._registrations.append(registration)
        self._wake.setdefault(registration.name, asyncio.Event())
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
        """Start the loops (``concurrency`` tasks per registration), the listener and the supervisor; return.

        The tasks commit their own transactions. With ``schedule`` on, the ``__pgboss__send-it`` queue is
        created first if it is missing (as pg-boss's start does).

        Raises:
            SqlaBossError: the worker was started or stopped already.
        """
        if self._started or self._stopping.is_set():
            raise SqlaBossError("a worker can be started only once")
        self._started = True
        for registration in self._registrations:
            self._launch(registration)
        if self.settings.cron_enabled and not self._stopping.is_set():
            # Before the supervisor, whose first cron tick comes at once and inserts into this queue (§9.2),
            # and before the listener, so that its first LISTEN covers the queue.
            await self._create_send_it_queue()
            with contextlib.suppress(SqlaBossError):  # stopped meanwhile
                self._register(send_it_registration(self.settings, self._send_it))
        if self._stopping.is_set():
            return
        if self.settings.listen:
            self._spawn(self._listen())
        if Timetable(self.settings, 0.0).next_at() is not None:
            self._spawn(self._supervise())

    async def stop(self, *, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop fetching, wait for handlers in flight, then fail the jobs still held.

        Graceful: waits up to ``timeout`` seconds (at least 1, as pg-boss) for the handlers in flight to
        finish and their jobs to be completed or failed. Not graceful: waits for nothing. Then every job
        still held is failed with ``{"value": "pg-boss shut down while active"}`` (retry rules apply) in a
        transaction of its own, committed at once (a transactional batch's open transaction is ended first,
        by terminating its backend), and the remaining tasks are cancelled. Calling ``stop()`` again waits
        for the first call to finish.
        """
        self._stop_requested.set()
        if self._stop_lock.locked():
            await self._stopped.wait()
            return
        async with self._stop_lock:
            if self._stopped.is_set():
                return
            try:
                self._stopping.set()
                for wake in self._wake.values():
                    wake.set()
                if graceful and self._tasks:
                    await asyncio.wait(self._tasks, timeout=max(1.0, timeout))
                self._swept = True
                held = list(self._held.values())
                self._held.clear()
                for job in held:
                    await self._fail_held(job, SHUTDOWN_OUTPUT)
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
            finally:
                self._stopped.set()

    async def run(self) -> None:
        """:meth:`start`, wait until :meth:`stop` is called or SIGTERM / SIGINT arrive, then stop gracefully.

        Signal handlers are installed on the running loop when it is the main thread's, and removed before
        stopping.
        """
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self._stop_requested.set)
            except (RuntimeError, NotImplementedError, ValueError):  # not the main thread, or no signals here
                continue
            installed.append(signum)
        try:
            await self.start()
            await self._stop_requested.wait()
        finally:
            for number in installed:
                loop.remove_signal_handler(number)
        await self.stop(graceful=True)

    # ------------------------------------------------------------------------------------------ tasks

    def _spawn(self, coroutine: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coroutine))

    def _launch(self, registration: Registration) -> None:
        for _ in range(registration.concurrency):
            self._spawn(self._loop(registration))

    def _boss(self, session: AsyncSession) -> AsyncBoss:
        return AsyncBoss(session, self.schema, **self.settings.defaults)

    async def _loop(self, registration: Registration) -> None:
        wake = self._wake[registration.name]
        completions: list[Completion] = []
        try:
            await self._run_loop(registration, wake, completions)
        finally:
            if completions:
                await self._complete_at_exit(registration.name, completions)

    async def _complete_at_exit(self, name: str, completions: list[Completion]) -> None:
        try:
            async with self._sessions.begin() as session:
                await self._complete(session, name, completions)
        except Exception:
            logger.exception("could not complete jobs at stop", extra=describe(name))

    async def _complete(self, session: AsyncSession, name: str, completions: list[Completion]) -> None:
        """Complete what earlier handlers returned, in ``session``'s transaction; the caller clears the list
        once that transaction has committed."""
        boss = self._boss(session)
        for completion in completions:
            if completion.failed:
                await boss.fail(name, completion.ids, completion.output)
            else:
                await boss.complete(name, completion.ids, completion.output)

    async def _run_loop(self, registration: Registration, wake: asyncio.Event, completions: list[Completion]) -> None:
        failures = 0
        while not self._stopping.is_set():
            wake.clear()  # a notification from here on wakes the wait below
            try:
                found = await self._iterate(registration, completions)
            except Exception:
                failures += 1
                delay = backoff(failures, registration.polling_interval_seconds)
                logger.exception(
                    "worker loop of queue %s failed; retrying in %.2f s",
                    registration.name,
                    delay,
                    extra=describe(registration.name),
                )
                await self._sleep(self._stopping, delay)
                continue
            failures = 0
            if not found and not self._stopping.is_set():
                await self._sleep(wake, registration.polling_interval_seconds)

    @staticmethod
    async def _sleep(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    def _hold(self, held: Held) -> object | None:
        if self._swept:
            return None
        key = object()
        self._held[key] = held
        return key

    def _release(self, key: object) -> bool:
        return self._held.pop(key, None) is not None

    async def _fetch(self, session: AsyncSession, registration: Registration) -> list[Job] | None:
        """Fetch without a savepoint (the worker owns the transaction); ``None`` after a collision with a
        concurrent activation of the same singleton key, rolled back, to be fetched again at once."""
        boss = self._boss(session)
        operation = boss._operations.fetch(
            registration.name, registration.batch_size, True, registration.include_metadata, False, savepoint=False
        )
        try:
            return await boss._run(operation)
        except IntegrityError:
            await session.rollback()
            return None

    async def _iterate(self, registration: Registration, completions: list[Completion]) -> bool:
        """One fetch, handler call and completion; ``False`` when the fetch found nothing.

        The completions of the previous handler calls commit in the transaction of this fetch (see
        :meth:`Worker._iterate <sqla_boss.Worker>`).
        """
        if registration.transactional:
            return await self._iterate_in_transaction(registration, completions)
        name = registration.name
        async with self._sessions() as session:
            await self._complete(session, name, completions)
            if self._stopping.is_set():
                await session.commit()
                completions.clear()
                return True
            jobs = await self._fetch(session, registration)
            if jobs is None:  # rolled back, completions included: they go with the next fetch
                return True
            if not jobs:
                await session.commit()  # not a rollback: psycopg forgets its prepared statements on every ROLLBACK
                completions.clear()
                return False
            if self._stopping.is_set():
                await session.rollback()  # the jobs go back to the queue untouched; completions commit at exit
                return True
            session.expunge_all()
            await session.commit()
            completions.clear()
        ids = [job.id for job in jobs]
        key = self._hold(Held(name, ids))
        if key is None:
            await self._fail_held(Held(name, ids), SHUTDOWN_OUTPUT)
            return True
        logger.debug("running job(s) %s of queue %s", ", ".join(map(str, ids)), name, extra=describe(name, ids))
        seconds = handler_timeout(jobs)
        try:
            result = await asyncio.wait_for(_call(registration.handler, jobs), seconds)
        except asyncio.TimeoutError:
            if self._release(key):
                await self._record_failure(name, ids, timeout_error(seconds), completions)
            return True
        except Exception as error:
            if self._release(key):
                await self._record_failure(name, ids, error, completions)
            return True
        if self._release(key):
            completion = settle(jobs, result)
            if completion.failed:
                await self._record_failure(name, ids, completion.output, completions)
            else:
                completions.append(completion)
        return True

    async def _iterate_in_transaction(self, registration: Registration, completions: list[Completion]) -> bool:
        """Fetch and commit (the jobs are ``active``: a crash from here on uses up a retry, through expiry),
        then run the handler and the completion in one new transaction. Failures that could not be recorded
        earlier commit with the fetch."""
        name = registration.name
        session = self._sessions()
        try:
            await self._complete(session, name, completions)
            if self._stopping.is_set():
                await session.commit()
                completions.clear()
                await session.close()
                return True
            jobs = await self._fetch(session, registration)
            if jobs is None:  # rolled back, pending failures included: they go with the next fetch
                await session.close()
                return True
            if not jobs:
                await session.commit()  # not a rollback: psycopg forgets its prepared statements on every ROLLBACK
                completions.clear()
                await session.close()
                return False
            if self._stopping.is_set():
                await session.rollback()  # the jobs go back untouched; pending failures are recorded at exit
                await session.close()
                return True
            session.expunge_all()  # the handler gets detached, loaded jobs, as in pg-boss's completion mode
            await session.commit()
            completions.clear()
        except BaseException:
            await session.close()
            raise
        ids = [job.id for job in jobs]
        try:
            pid = await _backend_pid(session)  # begins the handler's transaction
        except Exception as error:  # the jobs are active now: fail them rather than leave them to expiry
            await session.invalidate()
            await self._record_failure(name, ids, error, completions)
            raise
        key = self._hold(Held(name, ids, pid))
        if key is None:  # stop() has already failed what it found; fail these too rather than run them
            await session.close()
            await self._fail_held(Held(name, ids), SHUTDOWN_OUTPUT)
            return True
        boss = self._boss(session)

        async def in_transaction() -> BaseException | None:
            """Run the handler in a savepoint; complete, or roll the handler back and fail; commit."""
            error = await handle_in_transaction(session, boss, name, jobs, registration.handler, _call)
            if error is None:
                await session.commit()
                return None
            try:
                await session.commit()
            except Exception:
                raise error from None  # the transaction itself is lost: failed afresh, with this reason
            return error

        seconds = handler_timeout(jobs)
        failure: Any = None
        handled: BaseException | None = None
        try:
            handled = await asyncio.wait_for(in_transaction(), seconds)
        except asyncio.TimeoutError:
            failure = timeout_error(seconds)
            await self._terminate(pid)  # the cancelled handler may have left the connection mid-statement
        except Exception as error:
            failure = error
        try:
            if failure is not None:  # timed out (its backend terminated) or the transaction itself failed (maybe
                await session.invalidate()  # its backend, terminated at stop): never pool that connection again
            else:
                await session.close()  # after a commit, closes; after a handled error, rolls its writes back
        except Exception:  # a dead connection: the server has rolled back already
            logger.debug("closing the session of a failed batch of queue %s", name, exc_info=True)
        if not self._release(key):
            return True
        if failure is not None:  # timed out, or the transaction itself failed; the jobs are still active
            await self._record_failure(name, ids, failure, completions)
        elif handled is not None:
            log_failure(name, ids, handled)
        return True

    async def _record_failure(self, name: str, ids: list[uuid.UUID], error: Any, pending: list[Completion]) -> None:
        """Fail the jobs now, in a transaction of their own; if the database refuses (a lock or statement
        timeout, a lost connection), keep the failure in ``pending`` for the loop's next transaction."""
        log_failure(name, ids, error)
        try:
            await self._fail(name, ids, error)
        except Exception:
            logger.warning(
                "could not record the failure of job(s) %s of queue %s; trying again with the next fetch",
                ", ".join(map(str, ids)),
                name,
                exc_info=True,
                extra=describe(name, ids),
            )
            pending.append(Completion(ids, error, failed=True))

    async def _fail(self, name: str, ids: list[uuid.UUID], output: Any) -> None:
        """Fail the jobs in a transaction of their own, committed at once; once more if the pool handed out a
        connection whose backend is gone (see :meth:`Worker._fail <sqla_boss.Worker>`)."""
        for attempt in (1, 2):
            try:
                async with self._sessions() as session, session.begin():
                    await self._boss(session).fail(name, ids, output)
                return
            except DBAPIError as error:
                if attempt == 2 or not error.connection_invalidated:
                    raise

    async def _fail_held(self, held: Held, output: Any) -> None:
        extra = describe(held.name, held.ids)
        try:
            if held.pid is not None:
                await self._terminate(held.pid)
            await self._fail(held.name, held.ids, output)
        except Exception:
            logger.exception("could not fail job(s) %s of queue %s", extra["job_id"], held.name, extra=extra)
        else:
            logger.warning("failed job(s) %s of queue %s: %r", extra["job_id"], held.name, output, extra=extra)

    async def _terminate(self, pid: int) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(select(func.pg_terminate_backend(pid)))

    # ------------------------------------------------------------------------------- supervisor, cron

    async def _create_send_it_queue(self) -> None:
        try:
            async with self._sessions.begin() as session:
                boss = self._boss(session)
                if await boss.get_queue(cron.SEND_IT_QUEUE) is None:
                    await boss.create_queue(cron.SEND_IT_QUEUE)
        except Exception:
            logger.warning(
                "could not create queue %s", cron.SEND_IT_QUEUE, exc_info=True, extra=describe(cron.SEND_IT_QUEUE)
            )

    async def _send_it(self, jobs: list[Job]) -> None:
        async with self._sessions.begin() as session:
            await self._boss(session).insert([cron.target_job(job.data) for job in jobs])

    async def _supervise(self) -> None:
        timetable = Timetable(self.settings, time.monotonic())
        while not self._stopping.is_set():
            for tick in timetable.due(time.monotonic()):
                try:
                    await self._tick(tick)
                except Exception:
                    logger.exception("the %s tick failed", tick, extra=describe(""))
            next_at = timetable.next_at()
            if next_at is None:
                return
            await self._sleep(self._stopping, max(0.0, next_at - time.monotonic()))

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
            boss = self._boss(session)
            tick = await boss._run(boss._operations.cron_tick(self.settings.cron_monitor_interval_seconds))
        log_cron_tick(tick)

    # --------------------------------------------------------------------------------------- listener

    async def _listen(self) -> None:
        """Wake a queue's loops when a notification for it arrives; reconnect with backoff when cut."""
        failures = 0
        while not self._stopping.is_set():
            try:
                connection = await self._engine.connect()
                raw = await connection.get_raw_connection()
            except Exception:
                failures += 1
                delay = backoff(failures, self.settings.polling_interval_seconds)
                logger.warning("listener cannot connect; retrying in %.2f s", delay, exc_info=True, extra=describe(""))
                await self._sleep(self._stopping, delay)
                continue
            try:
                driver: Any = raw.driver_connection
                raw.detach()  # a connection of its own, out of the pool, for as long as it lives
                if not _is_async_psycopg(driver):
                    logger.info("not a psycopg connection: waking by polling only", extra=describe(""))
                    return
                await driver.rollback()
                await driver.set_autocommit(True)
                failures = await self._serve_notifications(driver, failures)
            except Exception:
                failures += 1
                delay = backoff(failures, self.settings.polling_interval_seconds)
                logger.warning(
                    "listener connection lost; reconnecting in %.2f s", delay, exc_info=True, extra=describe("")
                )
                for wake in self._wake.values():
                    wake.set()
                await self._sleep(self._stopping, delay)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close()

    async def _serve_notifications(self, driver: Any, failures: int) -> int:
        from psycopg import sql as pgsql

        listening: dict[str, str] = {}
        while not self._stopping.is_set():
            for name in list(self._wake):
                wanted = channel(self.schema, name)
                if wanted not in listening:
                    await driver.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(wanted)))
                    listening[wanted] = name
            if failures:  # listening again: what was sent while nobody listened is found by fetching now
                logger.info("listener reconnected", extra=describe(""))
                failures = 0
                for wake in self._wake.values():
                    wake.set()
            async for notification in driver.notifies(timeout=LISTEN_POLL_SECONDS):
                queue = listening.get(notification.channel)
                if queue is not None:
                    self._wake[queue].set()
        return failures


async def handle_in_transaction(
    session: AsyncSession,
    boss: AsyncBoss,
    name: str,
    jobs: Sequence[Job],
    handler: AsyncHandler,
    call: Callable[..., Awaitable[Any]],
) -> BaseException | None:
    """:func:`sqla_boss.worker.handle_in_transaction` on an ``AsyncSession``: ``await call(handler, jobs,
    session)`` runs in a savepoint, settled there, then the jobs are completed; if the handler raises, or its
    output cannot be stored, the savepoint rolls back and the jobs are failed with that error, returned.

    Does not commit. Locks what the handler locks, and the jobs' rows.

    Raises:
        the handler's error, when failing the jobs failed too (the transaction is lost).
    """
    ids = [job.id for job in jobs]
    try:
        async with session.begin_nested():
            completion = settle(jobs, await call(handler, jobs, session))
            if completion.failed:  # the output cannot be stored: roll the handler's writes back too
                raise completion.output
        await boss.complete(name, ids, completion.output)
    except Exception as error:  # the savepoint is rolled back: the handler's writes are gone
        try:
            await boss.fail(name, ids, error)
        except Exception:
            raise error from None
        return error
    return None


def _is_async_psycopg(connection: Any) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(connection, psycopg.AsyncConnection)


async def _backend_pid(session: AsyncSession) -> int:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    pid = getattr(getattr(raw.driver_connection, "info", None), "backend_pid", None)
    if isinstance(pid, int):
        return pid
    return int((await session.execute(select(func.pg_backend_pid()))).scalar_one())
