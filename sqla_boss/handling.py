"""What :class:`~sqla_boss.Worker` and :class:`~sqla_boss.AsyncWorker` share: their options, how a handler's
outcome becomes a job's, and the supervisor's timetable. No I/O here; each worker runs these rules with its
own threads or tasks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqla_boss import cron
from sqla_boss.errors import HandlerTimeoutError, InvalidOptionError, SqlaBossError
from sqla_boss.maintenance import MAINTENANCE_OPTIONS, MaintenanceSettings
from sqla_boss.models import Job
from sqla_boss.operations import CronTick, Operations
from sqla_boss.options import json_text, output_value, queue_name

logger = logging.getLogger("sqla_boss.worker")

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])
"""A handler's own type, kept by ``work()``'s decorator form."""

SHUTDOWN_OUTPUT = {"value": "pg-boss shut down while active"}
"""The output pg-boss stores on jobs a worker still held when it stopped (§7.3)."""

MIN_POLLING_INTERVAL = 0.5
"""pg-boss's smallest ``pollingIntervalSeconds``."""

CRON_MINIMUM_ARCHIVE_SECONDS = 60
"""pg-boss turns cron off when an archive delay is shorter than this (warning pg-boss-w03)."""

BACKOFF_START = 0.25
BACKOFF_CAP = 5.0


def whole_number(option: str, value: object, *, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOptionError(f"{option} must be a whole number of at least {minimum}, not {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidOptionError(f"{option} must be at most {maximum}, not {value!r}")
    return value


def interval(option: str, value: object, *, minimum: float = MIN_POLLING_INTERVAL) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum or math.isinf(value):
        raise InvalidOptionError(f"{option} must be a finite number of at least {minimum}, not {value!r}")
    return float(value)


def flag(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{option} must be a bool, not {value!r}")
    return value


@dataclass(frozen=True)
class Registration:
    """One ``work()`` call: a queue, its handler and how to run it."""

    name: str
    handler: Callable[..., Any]
    batch_size: int = 1
    concurrency: int = 1
    polling_interval_seconds: float = 2.0
    include_metadata: bool = False
    transactional: bool = False
    internal: bool = False

    @classmethod
    def of(
        cls,
        name: object,
        *,
        batch_size: object,
        concurrency: object,
        polling_interval_seconds: object,
        include_metadata: object,
        transactional: object,
    ) -> Registration:
        """Validate ``work()``'s options; the handler comes with :meth:`with_handler`."""
        return cls(
            name=queue_name(name),
            handler=_no_handler,
            batch_size=whole_number("batch_size", batch_size),
            concurrency=whole_number("concurrency", concurrency),
            polling_interval_seconds=interval("polling_interval_seconds", polling_interval_seconds),
            include_metadata=flag("include_metadata", include_metadata),
            transactional=flag("transactional", transactional),
        )

    def with_handler(self, handler: object) -> Registration:
        if not callable(handler):
            raise InvalidOptionError(f"the handler must be callable, not {handler!r}")
        return dataclasses.replace(self, handler=handler)


def adjust(
    registrations: Sequence[Registration],
    *,
    queues: Sequence[str] | None,
    concurrency: int | None,
    transactional: bool | None,
) -> list[Registration]:
    """The registrations of ``queues`` only (all when ``None``), with their concurrency and completion mode
    replaced where given; what ``sqla-boss work --queues --concurrency --transactional`` asks for."""
    if queues is not None:
        names = [queue_name(name) for name in queues]
        unknown = sorted(set(names) - {r.name for r in registrations if not r.internal})
        if unknown:
            raise InvalidOptionError(f"no handler is registered for queue(s) {', '.join(unknown)}")
        registrations = [r for r in registrations if r.name in names]
    changes: dict[str, Any] = {}
    if concurrency is not None:
        changes["concurrency"] = whole_number("concurrency", concurrency)
    if transactional is not None:
        changes["transactional"] = flag("transactional", transactional)
    return [dataclasses.replace(r, **changes) for r in registrations]


def _no_handler(*args: Any) -> None:
    raise AssertionError("a registration without its handler ran")  # pragma: no cover


def send_it_registration(settings: WorkerSettings, handler: Callable[..., Any]) -> Registration:
    """The internal worker on ``__pgboss__send-it``, as pg-boss's timekeeper starts it (§9.2)."""
    return Registration(
        cron.SEND_IT_QUEUE,
        handler,
        batch_size=cron.SEND_IT_BATCH_SIZE,
        polling_interval_seconds=float(settings.cron_worker_interval_seconds),
        internal=True,
    )


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's constructor options: pg-boss's, in snake_case (PGBOSS10.md §8-9, §11)."""

    schema: str
    polling_interval_seconds: float = 2.0
    supervise: bool = True
    schedule: bool = True
    listen: bool = True
    monitor_state_interval_seconds: int | None = None
    cron_monitor_interval_seconds: int = 30
    cron_worker_interval_seconds: int = 5
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        schema: str,
        *,
        polling_interval_seconds: object,
        supervise: object,
        schedule: object,
        listen: object,
        monitor_state_interval_seconds: object,
        cron_monitor_interval_seconds: object,
        cron_worker_interval_seconds: object,
        options: Mapping[str, Any],
    ) -> WorkerSettings:
        """Validate everything; the ``options`` are maintenance options and job defaults, as pg-boss's
        constructor takes them together."""
        maintenance = MaintenanceSettings.from_options({k: v for k, v in options.items() if k in MAINTENANCE_OPTIONS})
        defaults = {k: v for k, v in options.items() if k not in MAINTENANCE_OPTIONS}
        operations = Operations(schema, defaults)  # validates the schema name and the job defaults
        monitor = monitor_state_interval_seconds
        return cls(
            schema=operations.schema,
            polling_interval_seconds=interval("polling_interval_seconds", polling_interval_seconds),
            supervise=flag("supervise", supervise),
            schedule=flag("schedule", schedule),
            listen=flag("listen", listen),
            monitor_state_interval_seconds=None
            if monitor is None
            else whole_number("monitor_state_interval_seconds", monitor, maximum=86399),
            cron_monitor_interval_seconds=whole_number(
                "cron_monitor_interval_seconds", cron_monitor_interval_seconds, maximum=45
            ),
            cron_worker_interval_seconds=whole_number(
                "cron_worker_interval_seconds", cron_worker_interval_seconds, maximum=45
            ),
            maintenance=maintenance,
            defaults=defaults,
        )

    @property
    def cron_enabled(self) -> bool:
        """pg-boss evaluates cron only with both archive delays at 60 s or more."""
        settings = self.maintenance
        return self.schedule and min(
            settings.archive_completed_after_seconds, settings.archive_failed_after_seconds
        ) >= (CRON_MINIMUM_ARCHIVE_SECONDS)


@dataclass
class Held:
    """Jobs a worker loop has fetched and not yet completed or failed; ``pid`` is the backend of a
    transactional batch's open transaction, which holds them."""

    name: str
    ids: list[uuid.UUID]
    pid: int | None = None


@dataclass(frozen=True)
class Completion:
    """Jobs a handler finished, and the output to store, waiting for the loop's next transaction; with
    ``failed``, a failure that could not be recorded at once (the database refused), to record then."""

    ids: list[uuid.UUID]
    output: Any
    failed: bool = False

    @classmethod
    def of(cls, ids: list[uuid.UUID], output: Any) -> Completion:
        """Check the output now (a value that is no JSON raises here, not in the later transaction)."""
        stored = output_value(output)
        if stored is not None:
            json_text(stored, what="output")
        return cls(ids, output)


def handler_timeout(jobs: Sequence[Job]) -> float:
    """How long a handler may run on ``jobs``: the longest ``expire_in`` among them, at least 1 s (§7.2)."""
    longest = max((job.expire_in.total_seconds() for job in jobs if job.expire_in is not None), default=0.0)
    return max(1.0, longest)


def timeout_error(seconds: float) -> HandlerTimeoutError:
    """The error jobs fail with when their handler outlives :func:`handler_timeout`, worded as pg-boss's."""
    return HandlerTimeoutError(f"handler execution exceeded {round(seconds * 1000)}ms")


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
        return Completion(ids, error, failed=True)
    try:
        return Completion.of(ids, completion_output(jobs, result))
    except SqlaBossError as refused:  # e.g. an output that is not JSON: the jobs fail with the reason
        return Completion(ids, refused, failed=True)


def log_failure(name: str, ids: Sequence[uuid.UUID], error: Any) -> None:
    """Log jobs failed by their handler (or its timeout), with the queue and the job ids."""
    logger.info("job(s) %s of queue %s failed: %r", ", ".join(map(str, ids)), name, error, extra=describe(name, ids))


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
    "Held",
    "Registration",
    "Timetable",
    "WorkerSettings",
    "adjust",
    "backoff",
    "completion_output",
    "describe",
    "handler_timeout",
    "log_cron_tick",
    "log_failure",
    "send_it_registration",
    "settle",
    "timeout_error",
]
