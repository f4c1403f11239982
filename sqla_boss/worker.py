"""``Worker``: pg-boss's ``work()`` polling loop on threads of its own (PGBOSS10.md §7).

Unlike :class:`~sqla_boss.Boss`, the worker owns its transactions. Each loop iteration opens a session
from the worker's sessionmaker and:

1. fetches up to ``batch_size`` jobs and **commits** (the jobs are now ``active`` for everyone);
2. calls ``handler(jobs)`` with the list, outside any transaction;
3. in a **new transaction, committed at once**, completes the jobs (storing the handler's return value
   as output when the batch holds one job, as pg-boss does) or, if the handler raised, fails them with
   the exception (pg-boss's retry and dead-letter rules apply).

Unlike pg-boss (trap 21), a loop fetches again straight away while the queue hands out jobs, and waits
the polling interval only after an empty fetch; ``stop()`` cuts that wait short.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from sqla_boss.boss import Boss
from sqla_boss.errors import InvalidOptionError, SqlaBossError
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.models import Job
from sqla_boss.operations import Operations
from sqla_boss.options import queue_name
from sqla_boss.schema import schema_translate_map

logger = logging.getLogger("sqla_boss.worker")

SHUTDOWN_OUTPUT = {"value": "pg-boss shut down while active"}
"""The output pg-boss stores on jobs a worker still held when it stopped (§7.3)."""

MIN_POLLING_INTERVAL = 0.5
"""pg-boss's smallest ``pollingIntervalSeconds``."""

_BACKOFF_START = 0.25
_BACKOFF_CAP = 5.0

Handler = Callable[[list[Job]], Any]
"""A handler: called with the list of fetched jobs (even when ``batch_size`` is 1)."""


@dataclass(frozen=True)
class _Registration:
    name: str
    handler: Handler
    batch_size: int
    concurrency: int
    polling_interval_seconds: float
    include_metadata: bool


@dataclass(frozen=True)
class _Held:
    name: str
    ids: list[uuid.UUID]


def _whole_number(option: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{option} must be a whole number of at least 1, not {value!r}")
    return value


def _interval(option: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= MIN_POLLING_INTERVAL:
        raise InvalidOptionError(f"{option} must be a number of at least {MIN_POLLING_INTERVAL}, not {value!r}")
    return float(value)


def _describe(name: str, ids: list[uuid.UUID]) -> dict[str, str]:
    return {"job_id": ", ".join(str(job_id) for job_id in ids), "queue": name}


class Worker:
    """Runs handlers for queued jobs on threads of its own, ``concurrency`` threads per queue.

    Args:
        bind: an ``Engine`` (the worker builds a sessionmaker on it, pointed at ``schema``) or your own
            ``sessionmaker`` (it must reach ``schema``; give it ``expire_on_commit=False`` or not, the jobs
            handed to handlers are detached and fully loaded either way).
        schema: the pg-boss schema (default ``pgboss``).
        polling_interval_seconds: the default wait after an empty fetch (at least 0.5, default 2).
        **defaults: :class:`~sqla_boss.Boss`'s constructor defaults for jobs (retry and expiry).

    Raises:
        InvalidOptionError, InvalidSchemaNameError: bad options; nothing is started.
    """

    def __init__(
        self,
        bind: Engine | sessionmaker[Session],
        schema: str = DEFAULT_SCHEMA,
        *,
        polling_interval_seconds: float = 2.0,
        **defaults: Any,
    ) -> None:
        Operations(schema, defaults)  # validates the schema name and the defaults now
        self.schema = schema
        """The pg-boss schema the worker serves."""
        self._defaults = defaults
        self._interval = _interval("polling_interval_seconds", polling_interval_seconds)
        if isinstance(bind, Engine):
            engine = bind.execution_options(schema_translate_map=schema_translate_map(schema))
            self._sessions: sessionmaker[Session] = sessionmaker(bind=engine, expire_on_commit=False)
        else:
            self._sessions = bind
        self._registrations: list[_Registration] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._held: dict[object, _Held] = {}
        self._swept = False
        self._started = False
        self._stopping = threading.Event()
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    # ----------------------------------------------------------------------------------- registering

    def work(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        batch_size: int = 1,
        concurrency: int = 1,
        polling_interval_seconds: float | None = None,
        include_metadata: bool = False,
    ) -> Any:
        """Register ``handler`` for queue ``name``; returns the handler, or a decorator without one.

        Options are checked now. Registering on a started worker starts the new threads at once.
        Touches no database.

        Raises:
            InvalidOptionError, InvalidQueueNameError: bad options; nothing is registered.
            SqlaBossError: the worker has been stopped.
        """
        if not isinstance(include_metadata, bool):
            raise InvalidOptionError(f"include_metadata must be a bool, not {include_metadata!r}")
        queue = queue_name(name)
        size = _whole_number("batch_size", batch_size)
        threads = _whole_number("concurrency", concurrency)
        interval = (
            self._interval
            if polling_interval_seconds is None
            else _interval("polling_interval_seconds", polling_interval_seconds)
        )

        def register(function: Handler) -> Handler:
            if not callable(function):
                raise InvalidOptionError(f"the handler must be callable, not {function!r}")
            with self._lock:
                if self._stopping.is_set():
                    raise SqlaBossError("workers are disabled: this worker has been stopped")
                complete = _Registration(queue, function, size, threads, interval, include_metadata)
                self._registrations.append(complete)
                if self._started:
                    self._launch(complete)
            return function

        if handler is None:
            return register
        return register(handler)

    # ------------------------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start one thread per unit of concurrency per registered queue, and return at once.

        The threads commit their own transactions (see the module documentation).

        Raises:
            SqlaBossError: the worker was started or stopped already.
        """
        with self._lock:
            if self._started or self._stopping.is_set():
                raise SqlaBossError("a worker can be started only once")
            self._started = True
            for registration in self._registrations:
                self._launch(registration)

    def stop(self, *, graceful: bool = True, timeout: float = 30.0) -> None:
        """Stop fetching, wait for handlers in flight, then fail the jobs still held.

        Graceful: waits up to ``timeout`` seconds (at least 1, as pg-boss) for the handlers in flight to
        finish and their jobs to be completed or failed. Not graceful: waits for nothing. Then every job
        still held is failed with ``{"value": "pg-boss shut down while active"}`` (retry rules apply) in a
        transaction of its own, committed at once; a handler still running later is ignored. Calling
        ``stop()`` again, or from several threads, waits for the first call to finish.
        """
        self._stop_requested.set()
        if not self._stop_lock.acquire(blocking=False):
            self._stopped.wait()
            return
        try:
            if self._stopped.is_set():
                return
            self._stopping.set()
            deadline = time.monotonic() + max(1.0, timeout)
            if graceful:
                for thread in list(self._threads):
                    thread.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                self._swept = True
                held = list(self._held.values())
                self._held.clear()
            for job in held:
                self._fail_held(job)
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

    def _launch(self, registration: _Registration) -> None:
        for index in range(registration.concurrency):
            thread = threading.Thread(
                target=self._loop,
                args=(registration,),
                name=f"sqla_boss-worker-{registration.name}-{index}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _boss(self, session: Session) -> Boss:
        return Boss(session, self.schema, **self._defaults)

    def _loop(self, registration: _Registration) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                found = self._iterate(registration)
            except Exception:
                failures += 1
                delay = min(
                    _BACKOFF_START * 2 ** (failures - 1), max(registration.polling_interval_seconds, _BACKOFF_CAP)
                )
                logger.exception(
                    "worker loop of queue %s failed; retrying in %.2f s",
                    registration.name,
                    delay,
                    extra={"job_id": None, "queue": registration.name},
                )
                self._stopping.wait(delay)
                continue
            failures = 0
            if not found:
                self._stopping.wait(registration.polling_interval_seconds)

    def _iterate(self, registration: _Registration) -> bool:
        """One fetch, handler call and completion; ``False`` when the fetch found nothing."""
        name = registration.name
        with self._sessions() as session:
            jobs = self._boss(session).fetch(
                name, batch_size=registration.batch_size, include_metadata=registration.include_metadata
            )
            if not jobs:
                session.rollback()
                return False
            if self._stopping.is_set():
                session.rollback()  # the jobs go back to the queue untouched
                return True
            session.expunge_all()  # the handler gets detached, loaded jobs: no lazy loads on a closed session
            session.commit()
        ids = [job.id for job in jobs]
        key = object()
        with self._lock:
            swept = self._swept
            if not swept:
                self._held[key] = _Held(name, ids)
        if swept:  # stop() has already failed what it found; fail these too rather than run them
            self._fail_held(_Held(name, ids))
            return True
        try:
            result = registration.handler(jobs)
        except Exception as error:
            if self._release(key):
                logger.info(
                    "handler of queue %s raised for job(s) %s: %r",
                    name,
                    ", ".join(map(str, ids)),
                    error,
                    extra=_describe(name, ids),
                )
                self._change(name, ids, "fail", error)
            return True
        if self._release(key):
            output = result if len(jobs) == 1 else None
            try:
                self._change(name, ids, "complete", output)
            except SqlaBossError as error:  # e.g. an output that is not JSON: fail the job with the reason
                logger.warning(
                    "could not complete job(s) %s of queue %s: %s",
                    ", ".join(map(str, ids)),
                    name,
                    error,
                    extra=_describe(name, ids),
                )
                self._change(name, ids, "fail", error)
        return True

    def _release(self, key: object) -> bool:
        """Drop the held jobs; ``False`` when stop() failed them already and the outcome must be ignored."""
        with self._lock:
            return self._held.pop(key, None) is not None

    def _change(self, name: str, ids: list[uuid.UUID], action: str, output: Any) -> None:
        """Complete or fail the jobs in a transaction of their own, committed at once."""
        with self._sessions() as session, session.begin():
            boss = self._boss(session)
            if action == "complete":
                boss.complete(name, ids, output)
            else:
                boss.fail(name, ids, output)

    def _fail_held(self, held: _Held) -> None:
        extra = _describe(held.name, held.ids)
        try:
            self._change(held.name, held.ids, "fail", SHUTDOWN_OUTPUT)
        except Exception:
            logger.exception(
                "could not fail job(s) %s of queue %s at shut down", extra["job_id"], held.name, extra=extra
            )
        else:
            logger.warning(
                "failed job(s) %s of queue %s: the worker shut down while they were active",
                extra["job_id"],
                held.name,
                extra=extra,
            )
