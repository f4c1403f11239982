"""The workers' rules, shared by :class:`~sqla_boss.Worker`, :class:`~sqla_boss.AsyncWorker` and the testing
kit: how a handler's outcome becomes a job's, how long a handler may run, how failures back off, and the
supervisor's timetable. No I/O here. (Their settings are validated in :mod:`sqla_boss.options.workers`.)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqla_boss import cron
from sqla_boss.errors import HandlerTimeoutError, SqlaBossError
from sqla_boss.models import Job
from sqla_boss.operations import CronTick
from sqla_boss.options.payloads import json_text, output_value
from sqla_boss.options.workers import Registration, WorkerSettings

logger = logging.getLogger("sqla_boss.worker")

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])
"""A handler's own type, kept by ``work()``'s decorator form."""

SHUTDOWN_OUTPUT = {"value": "pg-boss shut down while active"}
"""The output pg-boss stores on jobs a worker still held when it stopped (§7.3)."""

BACKOFF_START = 0.25
BACKOFF_CAP = 5.0


def send_it_registration(settings: WorkerSettings, handler: Callable[..., Any]) -> Registration:
    """The internal worker on ``__pgboss__send-it``, as pg-boss's timekeeper starts it (§9.2)."""
    return Registration(
        cron.SEND_IT_QUEUE,
        handler,
        batch_size=cron.SEND_IT_BATCH_SIZE,
        polling_interval_seconds=float(settings.cron_worker_interval_seconds),
        internal=True,
    )


@dataclass
class Held:
    """Jobs a worker loop has fetched and not yet completed or failed; ``pid`` is the backend of a
    transactional batch's open transaction, which holds them."""

    name: str
    ids: list[uuid.UUID]
    pid: int | None = None
    jobs: Sequence[Job] = ()
    """The fetched jobs themselves: on version 46 they are settled fenced on their attempt (§6.1)."""


@dataclass(frozen=True)
class Completion:
    """Jobs a handler finished, and the output to store, waiting for the loop's next transaction; with
    ``failed``, a failure that could not be recorded at once (the database refused), to record then."""

    ids: list[uuid.UUID]
    output: Any
    failed: bool = False
    jobs: Sequence[Job] = ()
    """The jobs themselves, when known: on version 46 they are settled fenced on their attempt (§6.1)."""

    @classmethod
    def of(cls, ids: list[uuid.UUID], output: Any, jobs: Sequence[Job] = ()) -> Completion:
        """Check the output now (a value that is no JSON raises here, not in the later transaction)."""
        stored = output_value(output)
        if stored is not None:
            json_text(stored, what="output")
        return cls(ids, output, jobs=jobs)


def handler_timeout(jobs: Sequence[Job]) -> float:
    """How long a handler may run on ``jobs``: the longest expiry among them (``expire_in``; on version 46
    ``expire_seconds``), at least 1 s (PGBOSS10.md §7.2, PGBOSS12.md §7.2)."""
    return max(1.0, max((_expiry_seconds(job) for job in jobs), default=0.0))


def _expiry_seconds(job: Job) -> float:
    seconds = getattr(job, "expire_seconds", None)  # a version-46 job
    if seconds is not None:
        return float(seconds)
    return 0.0 if job.expire_in is None else job.expire_in.total_seconds()


def timeout_error(seconds: float, version: int = 24) -> HandlerTimeoutError:
    """The error jobs fail with when their handler outlives :func:`handler_timeout`, worded as the pg-boss of
    the schema's ``version`` words it: milliseconds on 24, seconds on 46."""
    if version == 46:
        return HandlerTimeoutError(f"handler execution exceeded {seconds:g}s")
    return HandlerTimeoutError(f"handler execution exceeded {round(seconds * 1000)}ms")


def heartbeat_interval(jobs: Sequence[Job], refresh_seconds: float | None) -> float | None:
    """How often a worker touches ``jobs`` while their handler runs (PGBOSS12.md §7.2 step 3): every
    ``refresh_seconds``, or half the smallest ``heartbeat_seconds`` of the batch; ``None`` when no job of the
    batch has a heartbeat (and on version 24, which has none)."""
    beats = [beat for job in jobs if (beat := getattr(job, "heartbeat_seconds", None)) is not None]
    if not beats:
        return None
    return refresh_seconds if refresh_seconds is not None else min(beats) / 2


def completion_output(jobs: Sequence[Job], result: Any) -> Any:
    """pg-boss stores the handler's return value as output only when the batch holds one job."""
    return result if len(jobs) == 1 else None


def settle(jobs: Sequence[Job], result: Any = None, error: BaseException | None = None) -> Completion:
    """How a handler's call ends ``jobs``, by the workers' rules: failed with ``error`` when it raised;
    else completed, with its ``result`` as output when the batch holds one job (:func:`completion_output`),
    or failed with the :class:`~sqla_boss.errors.PayloadError` when that output cannot be stored as JSON.

    Every way of running handlers (:class:`~sqla_boss.Worker`, :class:`~sqla_boss.AsyncWorker` and
    :mod:`sqla_boss.testing`) records what this returns. No I/O.
    """
    ids = [job.id for job in jobs]
    if error is not None:
        return Completion(ids, error, failed=True, jobs=jobs)
    try:
        return Completion.of(ids, completion_output(jobs, result), jobs)
    except SqlaBossError as refused:  # e.g. an output that is not JSON: the jobs fail with the reason
        return Completion(ids, refused, failed=True, jobs=jobs)


def log_failure(name: str, ids: Sequence[uuid.UUID], error: Any) -> None:
    """Log jobs failed by their handler (or its timeout) once, at WARNING, with the queue, the job ids and the
    handler's traceback."""
    exc_info = (type(error), error, error.__traceback__) if isinstance(error, BaseException) else None
    logger.warning(
        "job(s) %s of queue %s failed: %s",
        ", ".join(map(str, ids)),
        name,
        one_line(error),
        exc_info=exc_info,
        extra=describe(name, ids),
    )


def one_line(error: Any) -> str:
    """An error in one line: its type and the first line of its message (a driver's error, not SQLAlchemy's
    wrapping of it, which adds the statement and its parameters)."""
    if not isinstance(error, BaseException):
        return repr(error)
    shown = getattr(error, "orig", None) or error
    text = str(shown).strip().splitlines()
    return f"{type(shown).__name__}: {text[0]}" if text else type(shown).__name__


def log_retry(what: str, error: BaseException, delay: float, name: str = "", *, again: str = "retrying") -> None:
    """Log a failed step that is tried again in ``delay`` seconds: ``what (the error); retrying in N s``, one line
    at WARNING, and the traceback at DEBUG, so that an outage is a line per attempt and not a flood."""
    logger.warning("%s (%s); %s in %.2f s", what, one_line(error), again, delay, extra=describe(name))
    logger.debug("%s", what, exc_info=error, extra=describe(name))


def log_cron_tick(tick: CronTick) -> None:
    """Log what a cron evaluation did; a schedule that cannot be evaluated is a warning, not a stop (trap 14)."""
    for unreadable in tick.unreadable:
        logger.warning(
            "schedule %s cannot be evaluated: %s", unreadable.name, unreadable.error, extra=describe(unreadable.name)
        )
    if tick.due:
        logger.info("cron: due %s", ", ".join(tick.due), extra=describe(cron.SEND_IT_QUEUE))


def backoff(failures: int, polling_interval_seconds: float) -> float:
    """The wait after ``failures`` failed loop iterations in a row: doubling, capped."""
    return float(min(BACKOFF_START * 2 ** min(failures - 1, 30), max(polling_interval_seconds, BACKOFF_CAP)))


@dataclass
class LoopState:
    """What one worker loop last did, for its health: when its last fetch succeeded, whether a handler is
    running and since when, and how many iterations in a row failed (monotonic seconds)."""

    queue: str
    stale_after: float
    started: float = 0.0
    last_fetch: float | None = None
    handling_since: float | None = None
    failures: int = 0

    def stale(self, now: float) -> bool:
        """No fetch succeeded for :attr:`stale_after` seconds (since the loop started, if none ever did) while
        no handler ran: stuck, or cut off."""
        if self.handling_since is not None:
            return False
        return now - (self.started if self.last_fetch is None else self.last_fetch) > self.stale_after


STALE_AFTER_MIN_SECONDS = 60.0
"""A loop is stale after this long without a successful fetch (or four polling intervals, if longer)."""


def stale_after(polling_interval_seconds: float) -> float:
    """How long a loop may go without a successful fetch, and no handler running, before it is unhealthy."""
    return max(STALE_AFTER_MIN_SECONDS, 4 * polling_interval_seconds)


@dataclass(frozen=True)
class Health:
    """A worker's health, as :meth:`Worker.health <sqla_boss.Worker.health>` reports it and ``/healthz`` serves it."""

    healthy: bool
    status: str
    """``ok``, ``stale`` (a loop made no progress), ``refused`` (the schema), ``stopping`` or ``not started``."""
    reason: str | None
    loops: list[dict[str, Any]]

    @classmethod
    def of(cls, status: str, reason: str | None, loops: Sequence[LoopState], now: float) -> Health:
        """The health of a worker in ``status`` (``ok`` turns ``stale`` when a loop is)."""
        stale = [loop for loop in loops if loop.stale(now)]
        if status == "ok" and stale:
            status = "stale"
            reason = "; ".join(
                f"queue {loop.queue}: no fetch succeeded for "
                + f"{now - (loop.started if loop.last_fetch is None else loop.last_fetch):.0f} s"
                for loop in stale
            )
        shown = [
            {
                "queue": loop.queue,
                "last_fetch_seconds_ago": None if loop.last_fetch is None else round(now - loop.last_fetch, 3),
                "handling_for_seconds": None if loop.handling_since is None else round(now - loop.handling_since, 3),
                "failures": loop.failures,
                "stale": loop.stale(now),
            }
            for loop in loops
        ]
        return cls(status == "ok", status, reason, shown)

    def as_dict(self) -> dict[str, Any]:
        """The health as JSON-ready data."""
        return {"healthy": self.healthy, "status": self.status, "reason": self.reason, "loops": self.loops}


def describe(name: str, ids: Sequence[uuid.UUID] | None = None) -> dict[str, Any]:
    """The ``extra`` of a log record: the queue and the job ids (comma-separated) it is about."""
    return {"queue": name, "job_id": None if ids is None else ", ".join(str(job_id) for job_id in ids)}


@dataclass
class Timetable:
    """When the supervisor's next maintenance, monitoring and cron ticks are due (monotonic seconds).

    As pg-boss: the first maintenance tick comes one interval after start, the first cron tick at once.
    """

    settings: WorkerSettings
    started: float
    maintenance_at: float | None = None
    monitor_at: float | None = None
    cron_at: float | None = None

    def __post_init__(self) -> None:
        settings = self.settings
        if settings.supervise:
            self.maintenance_at = self.started + settings.maintenance.maintenance_interval_seconds
        if settings.monitor_state_interval_seconds is not None:
            self.monitor_at = self.started + settings.monitor_state_interval_seconds
        if settings.cron_enabled:
            self.cron_at = self.started

    def due(self, now: float) -> list[str]:
        """The ticks due at ``now``, each moved on to its next time."""
        ticks = []
        if self.maintenance_at is not None and now >= self.maintenance_at:
            ticks.append("maintenance")
            self.maintenance_at = now + self.settings.maintenance.maintenance_interval_seconds
        if self.monitor_at is not None and now >= self.monitor_at:
            assert self.settings.monitor_state_interval_seconds is not None
            ticks.append("monitor")
            self.monitor_at = now + self.settings.monitor_state_interval_seconds
        if self.cron_at is not None and now >= self.cron_at:
            ticks.append("cron")
            self.cron_at = now + self.settings.cron_monitor_interval_seconds
        return ticks

    def next_at(self) -> float | None:
        times = [at for at in (self.maintenance_at, self.monitor_at, self.cron_at) if at is not None]
        return min(times) if times else None


__all__ = [
    "SHUTDOWN_OUTPUT",
    "Completion",
    "Health",
    "Held",
    "LoopState",
    "Timetable",
    "backoff",
    "completion_output",
    "describe",
    "handler_timeout",
    "heartbeat_interval",
    "log_cron_tick",
    "log_failure",
    "log_retry",
    "one_line",
    "send_it_registration",
    "settle",
    "stale_after",
    "timeout_error",
]
