"""Maintenance settings: pg-boss's archive, delete and interval options, in snake_case (PGBOSS10.md §8, §11)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqla_boss.errors import InvalidOptionError
from sqla_boss.options.values import integer, known

DAY = 86400
_DELETE_UNITS = (("delete_after_days", DAY), ("delete_after_hours", 3600), ("delete_after_minutes", 60))
MAINTENANCE_OPTIONS = frozenset(
    {
        "archive_completed_after_seconds",
        "archive_failed_after_seconds",
        "delete_after_seconds",
        "maintenance_interval_seconds",
        "maintenance_interval_minutes",
        *(key for key, _ in _DELETE_UNITS),
    }
)
"""Every maintenance option, as a worker's constructor and :class:`~sqla_boss.Maintenance` take them."""


@dataclass(frozen=True)
class MaintenanceSettings:
    """pg-boss's maintenance options and defaults (§8.2-8.4, §11)."""

    archive_completed_after_seconds: int = 43200
    archive_failed_after_seconds: int = 43200
    delete_after_seconds: int = 7 * DAY
    maintenance_interval_seconds: int = 120

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MaintenanceSettings:
        """Validate pg-boss's options in snake_case: ``archive_completed_after_seconds``,
        ``archive_failed_after_seconds`` (defaults to the completed value), ``delete_after_days`` / ``_hours`` /
        ``_minutes`` / ``_seconds`` (that precedence; default 7 days), ``maintenance_interval_minutes`` /
        ``_seconds`` (minutes win; default 120 s; under 24 h). Each is a whole number of at least 1.

        Raises:
            InvalidOptionError: an unknown option or a bad value.
        """
        known(options, MAINTENANCE_OPTIONS, "maintenance")
        completed = _positive(options, "archive_completed_after_seconds", 43200)
        failed = _positive(options, "archive_failed_after_seconds", completed)
        delete_after = next(
            (_positive(options, key, 0) * factor for key, factor in _DELETE_UNITS if options.get(key) is not None),
            _positive(options, "delete_after_seconds", 7 * DAY),
        )
        if options.get("maintenance_interval_minutes") is not None:
            interval = _positive(options, "maintenance_interval_minutes", 0) * 60
        else:
            interval = _positive(options, "maintenance_interval_seconds", 120)
        if interval >= DAY:
            raise InvalidOptionError("the maintenance interval must be less than 24 hours")
        return cls(
            archive_completed_after_seconds=completed,
            archive_failed_after_seconds=failed,
            delete_after_seconds=delete_after,
            maintenance_interval_seconds=interval,
        )


def _positive(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key)
    return default if value is None else integer(key, value, minimum=1)


__all__ = ["MAINTENANCE_OPTIONS", "MaintenanceSettings"]
