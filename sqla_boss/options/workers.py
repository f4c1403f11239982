"""Worker settings: a worker's constructor options and each ``work()`` registration, in snake_case
(PGBOSS10.md §7-9, §11)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqla_boss.errors import InvalidOptionError
from sqla_boss.identifiers import validate_schema_name
from sqla_boss.options.jobs import Defaults
from sqla_boss.options.maintenance import MAINTENANCE_OPTIONS, MaintenanceSettings
from sqla_boss.options.names import queue_name
from sqla_boss.options.values import flag, integer, seconds

MIN_POLLING_INTERVAL = 0.5
"""pg-boss's smallest ``pollingIntervalSeconds``."""

CRON_MINIMUM_ARCHIVE_SECONDS = 60
"""pg-boss turns cron off when an archive delay is shorter than this (warning pg-boss-w03)."""


def polling_interval(option: str, value: object) -> float:
    """A polling interval: at least :data:`MIN_POLLING_INTERVAL` seconds, as pg-boss asks."""
    return seconds(option, value, minimum=MIN_POLLING_INTERVAL)


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
            batch_size=integer("batch_size", batch_size, minimum=1),
            concurrency=integer("concurrency", concurrency, minimum=1),
            polling_interval_seconds=polling_interval("polling_interval_seconds", polling_interval_seconds),
            include_metadata=flag("include_metadata", include_metadata),
            transactional=flag("transactional", transactional),
        )

    def with_handler(self, handler: object) -> Registration:
        """This registration with ``handler``, which must be callable."""
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
        changes["concurrency"] = integer("concurrency", concurrency, minimum=1)
    if transactional is not None:
        changes["transactional"] = flag("transactional", transactional)
    return [dataclasses.replace(r, **changes) for r in registrations]


def _no_handler(*args: Any) -> None:
    raise AssertionError("a registration without its handler ran")  # pragma: no cover


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
        constructor takes them together.

        Raises:
            InvalidOptionError, InvalidSchemaNameError: with the first bad value.
        """
        maintenance = MaintenanceSettings.from_options({k: v for k, v in options.items() if k in MAINTENANCE_OPTIONS})
        defaults = {k: v for k, v in options.items() if k not in MAINTENANCE_OPTIONS}
        Defaults.from_options(defaults)
        monitor = monitor_state_interval_seconds
        return cls(
            schema=validate_schema_name(schema),
            polling_interval_seconds=polling_interval("polling_interval_seconds", polling_interval_seconds),
            supervise=flag("supervise", supervise),
            schedule=flag("schedule", schedule),
            listen=flag("listen", listen),
            monitor_state_interval_seconds=None
            if monitor is None
            else integer("monitor_state_interval_seconds", monitor, minimum=1, maximum=86399),
            cron_monitor_interval_seconds=integer(
                "cron_monitor_interval_seconds", cron_monitor_interval_seconds, minimum=1, maximum=45
            ),
            cron_worker_interval_seconds=integer(
                "cron_worker_interval_seconds", cron_worker_interval_seconds, minimum=1, maximum=45
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


__all__ = [
    "CRON_MINIMUM_ARCHIVE_SECONDS",
    "MIN_POLLING_INTERVAL",
    "Registration",
    "WorkerSettings",
    "adjust",
    "polling_interval",
]
