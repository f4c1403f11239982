"""Worker settings: a worker's constructor options and each ``work()`` registration, in snake_case
(PGBOSS10.md §7-9, §11)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqla_boss.errors import InvalidOptionError, UnsupportedOperationError
from sqla_boss.identifiers import validate_schema_name
from sqla_boss.options.jobs import Defaults
from sqla_boss.options.maintenance import MAINTENANCE_OPTIONS, MaintenanceSettings
from sqla_boss.options.names import queue_name
from sqla_boss.options.supervision import SUPERVISION_OPTIONS, SupervisionSettings
from sqla_boss.options.v46 import FetchOptions
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
    group_concurrency: int | Mapping[str, Any] | None = None
    """pg-boss 12's ``groupConcurrency``: at most this many active jobs per group, cluster-wide (version 46)."""
    min_priority: int | None = None
    max_priority: int | None = None
    heartbeat_refresh_seconds: float | None = None
    """How often a batch with heartbeat jobs is touched; ``None``: half the smallest ``heartbeat_seconds``."""

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
        group_concurrency: object = None,
        min_priority: object = None,
        max_priority: object = None,
        heartbeat_refresh_seconds: object = None,
    ) -> Registration:
        """Validate ``work()``'s options; the handler comes with :meth:`with_handler`. ``group_concurrency``,
        ``min_priority``, ``max_priority`` and ``heartbeat_refresh_seconds`` are pg-boss 12's (version 46), checked
        here as its ``fetch`` checks them."""
        fetch = FetchOptions.of(batch_size, include_metadata, False, min_priority, max_priority, group_concurrency)
        return cls(
            name=queue_name(name),
            handler=_no_handler,
            batch_size=fetch.batch_size,
            concurrency=integer("concurrency", concurrency, minimum=1),
            polling_interval_seconds=polling_interval("polling_interval_seconds", polling_interval_seconds),
            include_metadata=fetch.include_metadata,
            transactional=flag("transactional", transactional),
            group_concurrency=group_concurrency,  # type: ignore[arg-type]  # checked by FetchOptions
            min_priority=fetch.min_priority,
            max_priority=fetch.max_priority,
            heartbeat_refresh_seconds=None
            if heartbeat_refresh_seconds is None
            else seconds("heartbeat_refresh_seconds", heartbeat_refresh_seconds, minimum=0.001),
        )

    def version_46_options(self) -> list[str]:
        """The options given that only pg-boss 12 (schema version 46) has."""
        return [
            option
            for option in ("group_concurrency", "min_priority", "max_priority", "heartbeat_refresh_seconds")
            if getattr(self, option) is not None
        ]

    def check_version(self, version: int) -> None:
        """Refuse, on a version-24 schema, the options only version 46 has.

        Raises:
            UnsupportedOperationError: naming them.
        """
        extra = self.version_46_options()
        if version != 46 and extra:
            raise UnsupportedOperationError(
                f"work({self.name!r}): {', '.join(extra)} {'is' if len(extra) == 1 else 'are'} pg-boss 12's "
                f"(schema version 46); this schema is at version {version}"
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
    """The supervisor's settings on version 24 (pg-boss 10's maintenance options)."""
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    """The supervisor's settings on version 46 (pg-boss 12's supervise, monitor, maintenance... options)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    version_24_options: frozenset[str] = frozenset()
    """The options given that only pg-boss 10 (schema version 24) has: its maintenance options and the
    constructor's job defaults."""
    version_46_options: frozenset[str] = frozenset()
    """The options given that only pg-boss 12 (schema version 46) has: its supervisor's."""
    version_24_refusal: str | None = None
    """Why an option both versions take (``maintenance_interval_seconds``) is out of version 24's range."""

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
        supervisor_options = MAINTENANCE_OPTIONS | SUPERVISION_OPTIONS
        supervision = SupervisionSettings.from_options({k: v for k, v in options.items() if k in SUPERVISION_OPTIONS})
        v24 = {k: v for k, v in options.items() if k in MAINTENANCE_OPTIONS}
        refusal = None
        try:
            maintenance = MaintenanceSettings.from_options(v24)
        except InvalidOptionError as error:  # maybe a shared option in version 46's range only: say so at start
            shared = {k for k in v24 if k in SUPERVISION_OPTIONS}
            if not shared:
                raise
            maintenance = MaintenanceSettings.from_options({k: v for k, v in v24.items() if k not in shared})
            refusal = str(error)
        defaults = {k: v for k, v in options.items() if k not in supervisor_options}
        Defaults.from_options(defaults)
        given = {k for k, v in options.items() if v is not None}
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
            supervision=supervision,
            defaults=defaults,
            version_24_options=frozenset(given - SUPERVISION_OPTIONS),
            version_46_options=frozenset(given & (SUPERVISION_OPTIONS - MAINTENANCE_OPTIONS)),
            version_24_refusal=refusal,
        )

    def check_version(self, version: int) -> None:
        """Refuse the options of the other version than ``version``, the schema's.

        Raises:
            UnsupportedOperationError: naming them.
            InvalidOptionError: an option both take, in version 46's range but not 24's.
        """
        if version == 24 and self.version_46_options:
            given = ", ".join(sorted(self.version_46_options))
            raise UnsupportedOperationError(
                f"{given}: pg-boss 12's worker options (schema version 46); this schema is at version 24"
            )
        if version == 24 and self.version_24_refusal is not None:
            raise InvalidOptionError(self.version_24_refusal)
        if version == 46 and self.version_24_options:
            given = ", ".join(sorted(self.version_24_options))
            raise UnsupportedOperationError(
                f"{given}: pg-boss 10's worker options (schema version 24); pg-boss 12 (version 46) keeps job "
                "settings on the queue (create_queue, update_queue) and deletes finished jobs by the queue's "
                "delete_after_seconds"
            )

    def cron_on(self, version: int) -> bool:
        """Whether the worker evaluates cron on a schema at ``version``: with ``schedule``, and on version 24
        only with both archive delays at 60 s or more, as pg-boss 10."""
        return self.schedule if version == 46 else self.cron_enabled

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
