"""``Worker``: pg-boss's ``work()``, maintenance and cron on threads of its own (PGBOSS10.md §7-9).

Unlike :class:`~sqla_boss.Boss`, the worker owns its transactions. Each loop iteration opens a session
from the worker's sessionmaker and, in **pg-boss's completion mode** (the default):

1. fetches up to ``batch_size`` jobs and **commits** (the jobs are now ``active`` for everyone);
2. calls ``handler(jobs)`` with the list, outside any transaction, for at most the jobs' ``expire_in``
   (at least 1 s; after that the jobs fail with pg-boss's ``handler execution exceeded <ms>ms`` and the
   handler is left to finish on its own);
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

Unlike pg-boss (trap 21), a loop fetches again straight away while the queue hands out jobs, and waits
the polling interval only after an empty fetch. A ``send`` from sqla_boss wakes the waiting loops of its
queue at once (``pg_notify``, see :mod:`sqla_boss.notify`); jobs from Node pg-boss are found by polling.

With ``supervise`` (default), the worker also runs pg-boss's maintenance every interval; with ``schedule``
(default), it evaluates cron and runs the ``__pgboss__send-it`` queue. Both coordinate with every other
Python or Node instance through pg-boss's own claims on ``version``, so the cluster does each once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, overload

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from sqla_boss import cron
from sqla_boss.boss import Boss
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
from sqla_boss.maintenance import Maintenance
from sqla_boss.models import Job
from sqla_boss.notify import channel
from sqla_boss.schema import schema_translate_map

logger = logging.getLogger("sqla_boss.worker")

Handler = Callable[..., Any]
"""A handler: ``handler(jobs)``, or ``handler(jobs, session)`` in the transactional mode; ``jobs`` is a list
even when ``batch_size`` is 1."""

LISTEN_POLL_SECONDS = 0.5
"""How often the listener looks up from its notifications to see whether it must stop or listen to more."""

__all__ = ["SHUTDOWN_OUTPUT", "Handler", "Worker", "handle_in_transaction"]


@dataclass
class _Outcome:
    finished: bool
    value: Any = None
    error: BaseException | None = None
    future: Future[Any] | None = None

    @classmethod
    def of(cls, future: Future[Any], timeout: float | None) -> _Outcome:
        """The call's result, or ``finished=False`` if it has not come within ``timeout`` seconds."""
        try:
            return cls(True, value=future.result(timeout))
        except FutureTimeout:
            return cls(False, future=future)
        except BaseException as error:  # even SystemExit from a handler: the loop records it on its jobs
            return cls(True, error=error)


@dataclass
class _Runner:
    """A daemon thread running one call at a time for a loop, so the loop can stop waiting for a handler
    that outlives its timeout. A runner that timed out is abandoned: it ends after its call returns."""

    name: str
    calls: list[tuple[Callable[[], Any], Future[Any]]] = field(default_factory=list)
    ready: threading.Condition = field(default_factory=threading.Condition)
    abandoned: bool = False

    def __post_init__(self) -> None:
        threading.Thread(target=self._serve, name=self.name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            with self.ready:
                while not self.calls and not self.abandoned:
                    self.ready.wait()
                if not self.calls:
                    return
                call, future = self.calls.pop(0)
            try:
                future.set_result(call())
            except BaseException as error:  # handed to the loop, which records it on the jobs
                future.set_exception(error)

    def call(self, function: Callable[[], Any], timeout: float) -> _Outcome:
        future: Future[Any] = Future()
        with self.ready:
            self.calls.append((function, future))
            self.ready.notify()
        outcome = _Outcome.of(future, timeout)
        if not outcome.finished:
            self.close()
        return outcome

    def close(self) -> None:
        with self.ready:
            self.abandoned = True
            self.ready.notify()


def _session_factory(bind: Engine | sessionmaker[Session], schema: str) -> tuple[sessionmaker[Session], Engine]:
    if isinstance(bind, Engine):
        engine = bind.execution_options(schema_translate_map=schema_translate_map(schema))
        return sessionmaker(bind=engine, expire_on_commit=False), engine
    if isinstance(bind, sessionmaker):
        bound = bind.kw.get("bind")
        if not isinstance(bound, Engine):
            raise InvalidOptionError("the worker's sessionmaker must be bound to an Engine")
        return bind, bound
    raise InvalidOptionError(f"a Worker takes an Engine or a sessionmaker, not {type(bind).__name__}")


class Worker:
    """Runs handlers for queued jobs on threads of its own, ``concurrency`` threads per queue, plus pg-boss's
    maintenance and cron.

    Args:
        bind: an ``Engine`` (the worker builds a sessionmaker on it, pointed at ``schema``) or your own
            ``sessionmaker`` bound to an engine (it must reach ``schema``). Jobs handed to pg-boss-mode
            handlers are detached and fully loaded.
        schema: the pg-boss schema (default ``pgboss``).
        polling_interval_seconds: the default wait after an empty fetch (at least 0.5, default 2).
        supervise: run maintenance (expire, archive, drop) when this instance wins the cluster's turn, every
            ``maintenance_interval_seconds`` (default 120), as pg-boss's ``supervise``.
        schedule: evaluate cron every ``cron_monitor_interval_seconds`` (1-45, default 30) when this instance
            wins the turn, and run the send-it queue every ``cron_worker_interval_seconds`` (1-45, default 5),
            as pg-boss's ``schedule``. Off, as in pg-boss, when an archive delay is under 60 s.
        listen: LISTEN for sqla_boss's send notifications (psycopg engines) and fetch as soon as one comes.
        monitor_state_interval_seconds: log :meth:`Maintenance.count_states` this often, cluster-wide (off).
        **options: pg-boss's maintenance options (``archive_completed_after_seconds``, ``delete_after_days``,
            ``maintenance_interval_seconds``, ... see :class:`~sqla_boss.maintenance.MaintenanceSettings`) and
            :class:`~sqla_boss.Boss`'s job defaults (``retry_limit``, ``expire_in_seconds``, ...).

    Raises:
        InvalidOptionError, InvalidSchemaNameError: bad options; nothing is started.
    """

    def __init__(
        self,
        bind: Engine | sessionmaker[Session],
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
        self.maintenance = Maintenance(self._engine, self.schema, settings=self.settings.maintenance)
        """The maintenance commands this worker's supervisor runs."""
        self._registrations: list[Registration] = []
        self._wake: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._held: dict[object, Held] = {}
        self._swept = False
        self._started = False
        self._stopping = threading.Event()
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

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
        handler: Handler | None = None,
        *,
        batch_size: int = 1,
        concurrency: int = 1,
        polling_interval_seconds: float | None = None,
        include_metadata: bool = False,
        transactional: bool = False,
    ) -> Any:
        """Register ``handler`` for queue ``name``; returns the handler, or a decorator without one.

        ``transactional``: call ``handler(jobs, session)`` in the transaction that completes the jobs (see
        the module documentation). Options are checked now. Registering on a started worker starts its
        loops at once. Touches no database.

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

        def register(function: Handler) -> Handler:
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
            self._wake.setdefault(registration.name, threading.Event())
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

    def start(self) -> None:
        """Start the loops (``concurrency`` threads per registration), the listener and the supervisor; return.

        The threads commit their own transactions (see the module documentation). With ``schedule`` on, the
        ``__pgboss__send-it`` queue is created first if it is missing (as pg-boss's start does).

        Raises:
            SqlaBossError: the worker was started or stopped already.
        """
        with self._lock:
            if self._started or self._stopping.is_set():
                raise SqlaBossError("a worker can be started only once")
            self._started = True
            for registration in self._registrations:
                self._launch(registration)
        if self.settings.cron_enabled and not self._stopping.is_set():
            # Before the supervisor, whose first cron tick comes at once and inserts into this queue (§9.2),
            # and before the listener, so that its first LISTEN covers the queue.
            self._create_send_it_queue()
            with contextlib.suppress(SqlaBossError):  # stopped meanwhile
                self._register(send_it_registration(self.settings, self._send_it))
        with self._lock:
            if self._stopping.is_set():
                return
            if self.settings.listen:
                self._spawn(self._listen, "sqla_boss-listener")
            if Timetable(self.settings, 0.0).next_at() is not None:
                self._spawn(self._supervise, "sqla_boss-supervisor")

    def stop(self, *, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop fetching, wait for handlers in flight, then fail the jobs still held.

        Graceful: waits up to ``timeout`` seconds (at least 1, as pg-boss) for the handlers in flight to
        finish and their jobs to be completed or failed. Not graceful: waits for nothing. Then every job
        still held is failed with ``{"value": "pg-boss shut down while active"}`` (retry rules apply) in a
        transaction of its own, committed at once (a transactional batch's open transaction is ended first,
        by terminating its backend); a handler still running later is ignored. Calling ``stop()`` again, or
        from several threads, waits for the first call to finish.
        """
        self._stop_requested.set()
        if not self._stop_lock.acquire(blocking=False):
            self._stopped.wait()
            return
        try:
            if self._stopped.is_set():
                return
            self._stopping.set()
            for wake in self._wake.values():
                wake.set()
            deadline = time.monotonic() + max(1.0, timeout)
            if graceful:
                for thread in list(self._threads):
                    thread.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                self._swept = True
                held = list(self._held.values())
                self._held.clear()
            for job in held:
                self._fail_held(job, SHUTDOWN_OUTPUT)
        finally:
            self._stopped.set()
            self._stop_lock.release()

    def run(self) -> None:
        """:meth:`start`, block until :meth:`stop` is called or SIGTERM / SIGINT arrive, then stop gracefully.

        Signal handlers are installed only when called from the main thread, and the previous ones are
        restored before stopping.
        """
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():

            def request_stop(signum: int, frame: FrameType | None) -> None:
                self._stop_requested.set()

            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, request_stop)
        try:
            self.start()
            while not self._stop_requested.wait(0.5):
                pass
        finally:
            for number, previous_handler in previous.items():
                signal.signal(number, previous_handler)
        self.stop(graceful=True)

    # ---------------------------------------------------------------------------------------- threads

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _launch(self, registration: Registration) -> None:
        for index in range(registration.concurrency):
            self._spawn(self._loop, f"sqla_boss-{registration.name}-{index}", registration)

    def _boss(self, session: Session) -> Boss:
        return Boss(session, self.schema, **self.settings.defaults)

    def _loop(self, registration: Registration) -> None:
        failures = 0
        runner: _Runner | None = None
        wake = self._wake[registration.name]
        completions: list[Completion] = []
        while not self._stopping.is_set():
            if runner is None or runner.abandoned:
                runner = _Runner(f"sqla_boss-handler-{registration.name}")
            wake.clear()  # a notification from here on wakes the wait below
            try:
                found = self._iterate(registration, runner, completions)
            except Exception:
                failures += 1
                delay = backoff(failures, registration.polling_interval_seconds)
                logger.exception(
                    "worker loop of queue %s failed; retrying in %.2f s",
                    registration.name,
                    delay,
                    extra=describe(registration.name),
                )
                self._stopping.wait(delay)
                continue
            failures = 0
            if not found and not self._stopping.is_set():  # stop() sets _stopping before it sets the wakes
                wake.wait(registration.polling_interval_seconds)
        if runner is not None:
            runner.close()
        if completions:
            try:
                with self._sessions.begin() as session:
                    self._complete(session, registration.name, completions)
            except Exception:
                logger.exception("could not complete jobs at stop", extra=describe(registration.name))

    def _complete(self, session: Session, name: str, completions: list[Completion]) -> None:
        """Complete what earlier handlers returned, in ``session``'s transaction; the caller clears the list
        once that transaction has committed."""
        boss = self._boss(session)
        for completion in completions:
            if completion.failed:
                boss.fail(name, completion.ids, completion.output)
            else:
                boss.complete(name, completion.ids, completion.output)

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

    def _fetch(self, session: Session, registration: Registration) -> list[Job] | None:
        """Fetch without a savepoint (the worker owns the transaction); ``None`` after a collision with a
        concurrent activation of the same singleton key, rolled back, to be fetched again at once."""
        boss = self._boss(session)
        operation = boss._operations.fetch(
            registration.name, registration.batch_size, True, registration.include_metadata, False, savepoint=False
        )
        try:
            return boss._run(operation)
        except IntegrityError:
            session.rollback()
            return None

    def _iterate(self, registration: Registration, runner: _Runner, completions: list[Completion]) -> bool:
        """One fetch, handler call and completion; ``False`` when the fetch found nothing.

        The completions of the previous handler calls commit in the transaction of this fetch: one
        transaction per job instead of two, and still committed before this iteration's handler runs.
        """
        if registration.transactional:
            return self._iterate_in_transaction(registration, runner, completions)
        name = registration.name
        with self._sessions() as session:
            self._complete(session, name, completions)
            if self._stopping.is_set():
                session.commit()
                completions.clear()
                return True
            jobs = self._fetch(session, registration)
            if jobs is None:  # rolled back, completions included: they go with the next fetch
                return True
            if not jobs:
                session.commit()  # not a rollback: psycopg forgets its prepared statements on every ROLLBACK
                completions.clear()
                return False
            if self._stopping.is_set():
                session.rollback()  # the jobs go back to the queue untouched; the completions commit at exit
                return True
            session.expunge_all()  # the handler gets detached, loaded jobs: no lazy loads on a closed session
            session.commit()
            completions.clear()
        ids = [job.id for job in jobs]
        key = self._hold(Held(name, ids))
        if key is None:  # stop() has already failed what it found; fail these too rather than run them
            self._fail_held(Held(name, ids), SHUTDOWN_OUTPUT)
            return True
        logger.debug("running job(s) %s of queue %s", ", ".join(map(str, ids)), name, extra=describe(name, ids))
        seconds = handler_timeout(jobs)
        outcome = runner.call(lambda: registration.handler(jobs), seconds)
        if not self._release(key):
            return True
        if not outcome.finished:
            self._record_failure(name, ids, timeout_error(seconds), completions)
            return True
        completion = settle(jobs, outcome.value, outcome.error)
        if completion.failed:
            self._record_failure(name, ids, completion.output, completions)
        else:
            completions.append(completion)
        return True

    def _iterate_in_transaction(
        self, registration: Registration, runner: _Runner, completions: list[Completion]
    ) -> bool:
        """Fetch and commit (the jobs are ``active``: a crash from here on uses up a retry, through expiry),
        then run the handler and the completion in one new transaction. Failures that could not be recorded
        earlier commit with the fetch."""
        name = registration.name
        session = self._sessions()
        try:
            self._complete(session, name, completions)
            if self._stopping.is_set():
                session.commit()
                completions.clear()
                session.close()
                return True
            jobs = self._fetch(session, registration)
            if jobs is None:  # rolled back, pending failures included: they go with the next fetch
                session.close()
                return True
            if not jobs:
                session.commit()  # not a rollback: psycopg forgets its prepared statements on every ROLLBACK
                completions.clear()
                session.close()
                return False
            if self._stopping.is_set():
                session.rollback()  # the jobs go back untouched; pending failures are recorded at exit
                session.close()
                return True
            session.expunge_all()  # the handler gets detached, loaded jobs, as in pg-boss's completion mode
            session.commit()
            completions.clear()
        except BaseException:
            session.close()
            raise
        ids = [job.id for job in jobs]
        try:
            pid = _backend_pid(session)  # begins the handler's transaction
        except Exception as error:  # the jobs are active now: fail them rather than leave them to expiry
            session.invalidate()
            self._record_failure(name, ids, error, completions)
            raise
        key = self._hold(Held(name, ids, pid))
        if key is None:  # stop() has already failed what it found; fail these too rather than run them
            session.close()
            self._fail_held(Held(name, ids), SHUTDOWN_OUTPUT)
            return True
        ended = threading.Lock()
        state = {"finished": False, "abandoned": False}
        boss = self._boss(session)

        def in_transaction() -> BaseException | None:
            """Run the handler in a savepoint; complete, or roll the handler back and fail; commit."""
            try:
                error = handle_in_transaction(session, boss, name, jobs, registration.handler)
                if error is None:
                    session.commit()
                    return None
                try:
                    session.commit()
                except Exception:
                    raise error from None  # the transaction itself is lost: failed afresh, with this reason
                return error
            finally:
                with ended:
                    state["finished"] = True
                    abandoned = state["abandoned"]
                if abandoned:  # its backend has been terminated: never hand the connection back to the pool
                    session.invalidate()

        seconds = handler_timeout(jobs)
        outcome = runner.call(in_transaction, seconds)
        if not outcome.finished:
            with ended:
                state["abandoned"] = True
                finished = state["finished"]
            if finished and outcome.future is not None:  # it ended just now: its result is being set
                outcome = _Outcome.of(outcome.future, None)
        held = self._release(key)
        if not outcome.finished:  # the handler still holds the session: end its transaction from outside
            if held:
                self._fail_held(Held(name, ids, pid), timeout_error(seconds))
            return True
        try:
            if outcome.error is not None:  # the transaction itself failed: maybe its backend, terminated at stop
                session.invalidate()
            else:
                session.close()
        except Exception:  # a dead connection: the server has rolled back already
            logger.debug("closing the session of a failed batch of queue %s", name, exc_info=True)
        if not held:
            return True
        if outcome.error is not None:  # the transaction itself failed; the jobs are still active
            self._record_failure(name, ids, outcome.error, completions)
        elif outcome.value is not None:
            log_failure(name, ids, outcome.value)
        return True

    def _record_failure(self, name: str, ids: list[uuid.UUID], error: Any, pending: list[Completion]) -> None:
        """Fail the jobs now, in a transaction of their own; if the database refuses (a lock or statement
        timeout, a lost connection), keep the failure in ``pending`` for the loop's next transaction."""
        log_failure(name, ids, error)
        try:
            self._fail(name, ids, error)
        except Exception:
            logger.warning(
                "could not record the failure of job(s) %s of queue %s; trying again with the next fetch",
                ", ".join(map(str, ids)),
                name,
                exc_info=True,
                extra=describe(name, ids),
            )
            pending.append(Completion(ids, error, failed=True))

    def _fail(self, name: str, ids: list[uuid.UUID], output: Any) -> None:
        """Fail the jobs in a transaction of their own, committed at once; once more if the pool handed out a
        connection whose backend is gone (a terminated transactional batch's: the pool is renewed by then)."""
        for attempt in (1, 2):
            try:
                with self._sessions() as session, session.begin():
                    self._boss(session).fail(name, ids, output)
                return
            except DBAPIError as error:
                if attempt == 2 or not error.connection_invalidated:
                    raise

    def _fail_held(self, held: Held, output: Any) -> None:
        extra = describe(held.name, held.ids)
        try:
            if held.pid is not None:
                self._terminate(held.pid)
            self._fail(held.name, held.ids, output)
        except Exception:
            logger.exception("could not fail job(s) %s of queue %s", extra["job_id"], held.name, extra=extra)
        else:
            logger.warning("failed job(s) %s of queue %s: %r", extra["job_id"], held.name, output, extra=extra)

    def _terminate(self, pid: int) -> None:
        """End a transactional batch's open transaction (its writes roll back) by terminating its backend."""
        with self._engine.connect() as connection:
            connection.execute(select(func.pg_terminate_backend(pid)))

    # ------------------------------------------------------------------------------- supervisor, cron

    def _create_send_it_queue(self) -> None:
        try:
            with self._sessions.begin() as session:
                boss = self._boss(session)
                if boss.get_queue(cron.SEND_IT_QUEUE) is None:
                    boss.create_queue(cron.SEND_IT_QUEUE)
        except Exception:
            logger.warning(
                "could not create queue %s", cron.SEND_IT_QUEUE, exc_info=True, extra=describe(cron.SEND_IT_QUEUE)
            )

    def _send_it(self, jobs: list[Job]) -> None:
        """The send-it worker's handler: insert each due schedule's job into its queue, as pg-boss's insert."""
        with self._sessions.begin() as session:
            self._boss(session).insert([cron.target_job(job.data) for job in jobs])

    def _supervise(self) -> None:
        timetable = Timetable(self.settings, time.monotonic())
        while not self._stopping.is_set():
            for tick in timetable.due(time.monotonic()):
                try:
                    self._tick(tick)
                except Exception:
                    logger.exception("the %s tick failed", tick, extra=describe(""))
            next_at = timetable.next_at()
            if next_at is None:
                return
            self._stopping.wait(max(0.0, next_at - time.monotonic()))

    def _tick(self, tick: str) -> None:
        if tick == "maintenance":
            self._maintain()
        elif tick == "monitor":
            self._monitor()
        else:
            self._evaluate_cron()

    def _maintain(self) -> None:
        result = self.maintenance.maintain_if_due()
        if result is not None:
            logger.info(
                "maintenance: %d expired, %d archived, %d dropped in %d ms",
                result.expired,
                result.archived,
                result.dropped,
                result.ms,
                extra=describe(""),
            )

    def _monitor(self) -> None:
        interval = self.settings.monitor_state_interval_seconds
        if interval is not None and self.maintenance.claim_monitoring(interval):
            states = self.maintenance.count_states()
            logger.info("monitor-states: %s", states, extra={**describe(""), "states": states})

    def _evaluate_cron(self) -> None:
        with self._sessions.begin() as session:
            boss = self._boss(session)
            tick = boss._run(boss._operations.cron_tick(self.settings.cron_monitor_interval_seconds))
        log_cron_tick(tick)

    # --------------------------------------------------------------------------------------- listener

    def _listen(self) -> None:
        """Wake a queue's loops when a notification for it arrives; reconnect with backoff when cut."""
        failures = 0
        while not self._stopping.is_set():
            try:
                raw = self._engine.raw_connection()
            except Exception:
                failures += 1
                delay = backoff(failures, self.settings.polling_interval_seconds)
                logger.warning("listener cannot connect; retrying in %.2f s", delay, exc_info=True, extra=describe(""))
                self._stopping.wait(delay)
                continue
            try:
                connection: Any = raw.driver_connection
                raw.detach()  # a connection of its own, out of the pool, for as long as it lives
                if not _is_psycopg(connection):
                    logger.info("not a psycopg connection: waking by polling only", extra=describe(""))
                    return
                connection.rollback()
                connection.autocommit = True
                failures = self._serve_notifications(connection, failures)
            except Exception:
                failures += 1
                delay = backoff(failures, self.settings.polling_interval_seconds)
                logger.warning(
                    "listener connection lost; reconnecting in %.2f s", delay, exc_info=True, extra=describe("")
                )
                for wake in self._wake.values():
                    wake.set()  # notifications may have been missed meanwhile: fetch now
                self._stopping.wait(delay)
            finally:
                raw.close()

    def _serve_notifications(self, connection: Any, failures: int) -> int:
        from psycopg import sql as pgsql

        listening: dict[str, str] = {}
        while not self._stopping.is_set():
            for name in list(self._wake):
                wanted = channel(self.schema, name)
                if wanted not in listening:
                    connection.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(wanted)))
                    listening[wanted] = name
            if failures:  # listening again: what was sent while nobody listened is found by fetching now
                logger.info("listener reconnected", extra=describe(""))
                failures = 0
                for wake in self._wake.values():
                    wake.set()
            for notification in connection.notifies(timeout=LISTEN_POLL_SECONDS):
                queue = listening.get(notification.channel)
                if queue is not None:
                    self._wake[queue].set()
        return failures


def handle_in_transaction(
    session: Session, boss: Boss, name: str, jobs: Sequence[Job], handler: Handler
) -> BaseException | None:
    """The transactional mode's rules for one batch, in ``session``'s transaction: ``handler(jobs, session)``
    runs in a savepoint and its outcome is settled there (:func:`~sqla_boss.handling.settle`), then the jobs
    are completed. If the handler raises, or returns an output that cannot be stored, the savepoint rolls
    back (the handler's writes are gone) and the jobs are failed with that error (retry and dead-letter
    rules apply); the error is returned.

    Does not commit. Locks what the handler locks, and the jobs' rows.

    Raises:
        the handler's error, when failing the jobs failed too: the transaction is lost, and the caller
        fails the jobs afresh; a ``BaseException`` that is no ``Exception`` (``KeyboardInterrupt``, ...).
    """
    ids = [job.id for job in jobs]
    try:
        with session.begin_nested():
            completion = settle(jobs, handler(jobs, session))
            if completion.failed:  # the output cannot be stored: roll the handler's writes back too
                raise completion.output
        boss.complete(name, ids, completion.output)
    except Exception as error:  # the savepoint is rolled back: the handler's writes are gone
        try:
            boss.fail(name, ids, error)
        except Exception:
            raise error from None
        return error
    return None


def _is_psycopg(connection: Any) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(connection, (psycopg.Connection, psycopg.AsyncConnection))


def _backend_pid(session: Session) -> int:
    connection = session.connection().connection.driver_connection
    info = getattr(connection, "info", None)
    pid = getattr(info, "backend_pid", None)
    if isinstance(pid, int):
        return pid
    return int(session.execute(select(func.pg_backend_pid())).scalar_one())
