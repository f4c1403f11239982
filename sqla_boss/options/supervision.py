"""Supervisor settings of schema version 46: pg-boss 12's supervise, monitor, maintenance, flow, BAM, instance
and warning options, in snake_case (PGBOSS12.md §8, §12). The cron intervals are the worker's
(:class:`~sqla_boss.options.workers.WorkerSettings`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqla_boss.options.values import flag, integer, known, text

DAY = 86400

SUPERVISION_OPTIONS = frozenset(
    {
        "supervise_interval_seconds",
        "monitor_interval_seconds",
        "maintenance_interval_seconds",
        "flow_interval_seconds",
        "bam_interval_seconds",
        "register_instance",
        "instance_name",
        "instance_heartbeat_seconds",
        "warning_queue_size",
        "persist_warnings",
        "warning_retention_days",
        "persist_queue_stats",
        "queue_stat_retention_days",
        "migrate",
    }
)
"""Every supervisor option of version 46, as a worker's constructor takes them."""


@dataclass(frozen=True)
class SupervisionSettings:
    """pg-boss 12's supervision options and defaults (§8.1, §12)."""

    supervise_interval_seconds: int = 60
    """How often the supervise pass (monitor, then maintain, of the queues this instance claims) runs."""
    monitor_interval_seconds: int = 60
    """The per-queue monitor claim (``queue.monitor_claim_on``): counts and expiry, once per interval."""
    maintenance_interval_seconds: int = DAY
    """The per-queue maintenance claim (``queue.maintain_on``): deletion, once per interval."""
    flow_interval_seconds: int = 5
    """The flow resolver's claim (``version.flow_on``)."""
    bam_interval_seconds: int = 60
    """The deferred index builds' claim (``version.bam_on``); only with :attr:`migrate`."""
    register_instance: bool = True
    """Keep a row in ``instance`` for this supervisor, with a heartbeat."""
    instance_name: str | None = None
    instance_heartbeat_seconds: int = 30
    warning_queue_size: int = 10000
    """A queue with more queued jobs than this (or its own ``warning_queued``) is a ``queue_backlog`` warning."""
    persist_warnings: bool = False
    """Write warnings to the ``warning`` table too (they are always logged)."""
    warning_retention_days: int = 365
    persist_queue_stats: bool = False
    """Record throughput (``created_delta``, ``completed_delta``, ``failed_delta``, latency histograms) on the
    queue rows at each count, and a snapshot of each counted queue in the daily partitions of ``queue_stats``."""
    queue_stat_retention_days: int = 7
    """Drop the ``queue_stats`` partitions of days older than this (only with :attr:`persist_queue_stats`)."""
    migrate: bool = True
    """Whether this instance runs the deferred index builds (BAM), as pg-boss's ``migrate``."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SupervisionSettings:
        """Validate pg-boss 12's options in snake_case (:data:`SUPERVISION_OPTIONS`); absent or ``None`` means
        the default. The supervise, monitor and maintenance intervals are whole seconds from 1 to 24 h, the
        flow interval at least 1, the BAM interval at least 10, the instance heartbeat 1-3600, the warning size
        and retention at least 1, the ``queue_stats`` retention 1-365 days.

        Raises:
            InvalidOptionError: an unknown option or a bad value.
        """
        known(options, SUPERVISION_OPTIONS, "supervision")
        defaults = cls()

        def number(key: str, minimum: int, maximum: int | None = None) -> int:
            value = options.get(key)
            return getattr(defaults, key) if value is None else integer(key, value, minimum=minimum, maximum=maximum)

        def boolean(key: str) -> bool:
            value = options.get(key)
            return getattr(defaults, key) if value is None else flag(key, value)

        name = options.get("instance_name")
        return cls(
            supervise_interval_seconds=number("supervise_interval_seconds", 1, DAY),
            monitor_interval_seconds=number("monitor_interval_seconds", 1, DAY),
            maintenance_interval_seconds=number("maintenance_interval_seconds", 1, DAY),
            flow_interval_seconds=number("flow_interval_seconds", 1),
            bam_interval_seconds=number("bam_interval_seconds", 10),
            register_instance=boolean("register_instance"),
            instance_name=None if name is None else text("instance_name", name),
            instance_heartbeat_seconds=number("instance_heartbeat_seconds", 1, 3600),
            warning_queue_size=number("warning_queue_size", 1),
            persist_warnings=boolean("persist_warnings"),
            warning_retention_days=number("warning_retention_days", 1),
            persist_queue_stats=boolean("persist_queue_stats"),
            queue_stat_retention_days=number("queue_stat_retention_days", 1, 365),
            migrate=boolean("migrate"),
        )

    def config(self) -> dict[str, Any]:
        """The settings in pg-boss's camelCase, as an ``instance`` row's ``config`` shows an instance's options."""
        return {
            "superviseIntervalSeconds": self.supervise_interval_seconds,
            "monitorIntervalSeconds": self.monitor_interval_seconds,
            "maintenanceIntervalSeconds": self.maintenance_interval_seconds,
            "flowIntervalSeconds": self.flow_interval_seconds,
            "bamIntervalSeconds": self.bam_interval_seconds,
            "instanceHeartbeatSeconds": self.instance_heartbeat_seconds,
            "warningQueueSize": self.warning_queue_size,
            "persistWarnings": self.persist_warnings,
            "warningRetentionDays": self.warning_retention_days,
            "persistQueueStats": self.persist_queue_stats,
            "queueStatRetentionDays": self.queue_stat_retention_days,
            "migrate": self.migrate,
        }


__all__ = ["SUPERVISION_OPTIONS", "SupervisionSettings"]
