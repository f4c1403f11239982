"""pg-boss's maintenance: expire, archive and drop, and the cluster-wide claims that keep instances from
running them twice (PGBOSS10.md §8).

Unlike :class:`~sqla_boss.Boss`, maintenance owns its transactions: each command runs in a transaction of
its own that holds pg-boss's advisory lock on the schema, exactly as pg-boss runs them, so Python and Node
instances on the same schema take turns instead of fighting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Executable
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_boss import statements as sql
from sqla_boss.errors import InvalidOptionError
from sqla_boss.identifiers import DEFAULT_SCHEMA, validate_schema_name
from sqla_boss.models import JobState
from sqla_boss.schema import lock_schema, schema_translate_map

T = TypeVar("T")

DAY = 86400
_DELETE_UNITS = (("delete_after_days", DAY), ("delete_after_hours", 3600), ("delete_after_minutes", 60))
MAINTENANCE_OPTIONS = {
    "archive_completed_after_seconds",
    "archive_failed_after_seconds",
    "delete_after_seconds",
    "maintenance_interval_seconds",
    "maintenance_interval_minutes",
    *(key for key, _ in _DELETE_UNITS),
}


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


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
        ``_seconds`` (minutes win; default 120 s; under 24 h)."""
        unknown = sorted(set(options) - MAINTENANCE_OPTIONS)
        if unknown:
            raise InvalidOptionError(f"unknown maintenance option(s): {', '.join(unknown)}")
        completed = _positive("archive_completed_after_seconds", options.get("archive_completed_after_seconds", 43200))
        failed = options.get("archive_failed_after_seconds")
        delete_after = 7 * DAY
        for key, factor in _DELETE_UNITS:
            if options.get(key) is not None:
                delete_after = _positive(key, options[key]) * factor
                break
        else:
            if options.get("delete_after_seconds") is not None:
                delete_after = _positive("delete_after_seconds", options["delete_after_seconds"])
        if options.get("maintenance_interval_minutes") is not None:
            interval = _positive("maintenance_interval_minutes", options["maintenance_interval_minutes"]) * 60
        else:
            interval = _positive("maintenance_interval_seconds", options.get("maintenance_interval_seconds", 120))
        if interval >= DAY:
            raise InvalidOptionError("the maintenance interval must be less than 24 hours")
        return cls(
            archive_completed_after_seconds=completed,
            archive_failed_after_seconds=completed
            if failed is None
            else _positive("archive_failed_after_seconds", failed),
            delete_after_seconds=delete_after,
            maintenance_interval_seconds=interval,
        )


@dataclass(frozen=True)
class MaintenanceResult:
    """What one :meth:`Maintenance.maintain` did."""

    expired: int
    archived: int
    dropped: int
    ms: int


@dataclass(frozen=True)
class QueueSnapshot:
    """One queue's jobs by state, and how long its oldest queued job has waited (``None`` when none waits)."""

    name: str
    created: int
    retry: int
    active: int
    completed: int
    cancelled: int
    failed: int
    oldest_queued_seconds: float | None


def _expire(connection: Connection, schema: str) -> int:
    lock_schema(connection, schema)
    return int(connection.execute(sql.EXPIRE).scalar_one())


def _archive(connection: Connection, schema: str, settings: MaintenanceSettings) -> int:
    lock_schema(connection, schema)
    params = {
        "completed_after_seconds": settings.archive_completed_after_seconds,
        "failed_after_seconds": settings.archive_failed_after_seconds,
    }
    return int(connection.execute(sql.ARCHIVE, params).scalar_one())


def _drop(connection: Connection, schema: str, settings: MaintenanceSettings) -> int:
    lock_schema(connection, schema)
    result = connection.execute(sql.DROP_ARCHIVED, {"delete_after_seconds": settings.delete_after_seconds})
    return int(result.rowcount)


def _claim(connection: Connection, statement: Executable, interval_seconds: int) -> bool:
    return connection.execute(statement, {"interval_seconds": interval_seconds}).first() is not None


def _read(connection: Connection, statement: Executable) -> list[Any]:
    return list(connection.execute(statement))


def _snapshots(rows: list[Any]) -> list[QueueSnapshot]:
    return [
        QueueSnapshot(
            name=row[0],
            created=row[1],
            retry=row[2],
            active=row[3],
            completed=row[4],
            cancelled=row[5],
            failed=row[6],
            oldest_queued_seconds=None if row[7] is None else float(row[7]),
        )
        for row in rows
    ]


class Maintenance:
    """Expire, archive and drop on one pg-boss schema, as pg-boss's supervisor does.

    Each command **commits a transaction of its own**, holding pg-boss's advisory lock on the schema while it
    runs (with pg-boss's 30 s ``lock_timeout``), so it never overlaps an install, a migration or another
    instance's maintenance. :class:`AsyncMaintenance` is the same on an ``AsyncEngine``.

    Args:
        engine: where to connect; a sync ``Engine``.
        schema: the pg-boss schema.
        settings: validated settings, instead of ``options``.
        **options: see :meth:`MaintenanceSettings.from_options`.
    """

    def __init__(
        self,
        engine: Engine,
        schema: str = DEFAULT_SCHEMA,
        *,
        settings: MaintenanceSettings | None = None,
        **options: Any,
    ) -> None:
        self.schema = validate_schema_name(schema)
        if settings is not None and options:
            raise InvalidOptionError("give maintenance settings or options, not both")
        self.settings = settings or MaintenanceSettings.from_options(options)
        self._engine = engine.execution_options(schema_translate_map=schema_translate_map(schema))

    def _in_transaction(self, command: Callable[..., T], *args: Any) -> T:
        with self._engine.begin() as connection:
            return command(connection, *args)

    def expire(self) -> int:
        """Fail every active job that ran past its ``expire_in``, by its retry rules; returns how many.

        Commits its own transaction; locks the expired rows and pg-boss's schema lock.
        """
        return self._in_transaction(_expire, self.schema)

    def archive(self) -> int:
        """Move finished jobs past their archive delay, and queued jobs past ``keep_until``, to ``archive``.

        Returns how many rows the archive took. Commits its own transaction; holds the schema lock.
        """
        return self._in_transaction(_archive, self.schema, self.settings)

    def drop(self) -> int:
        """Delete archived jobs older than the delete delay; returns how many. Commits; holds the schema lock."""
        return self._in_transaction(_drop, self.schema, self.settings)

    def maintain(self) -> MaintenanceResult:
        """Expire, then archive, then drop, each in its own transaction, as pg-boss's ``maintain()`` does.

        Does not touch ``version.maintained_on``: see :meth:`maintain_if_due` for the cluster's turn.
        """
        started = time.monotonic()
        expired, archived, dropped = self.expire(), self.archive(), self.drop()
        return MaintenanceResult(expired, archived, dropped, round((time.monotonic() - started) * 1000))

    def claim(self) -> bool:
        """Claim this interval's maintenance for the cluster: ``True`` if this instance won it.

        The claim is pg-boss's: ``version.maintained_on`` moves to now only if more than the interval has
        passed since it last moved, so any mix of Python and Node instances maintains about once per interval.
        Commits.
        """
        interval = self.settings.maintenance_interval_seconds
        return self._in_transaction(_claim, sql.CLAIM_MAINTENANCE, interval)

    def maintain_if_due(self) -> MaintenanceResult | None:
        """:meth:`claim`, then :meth:`maintain` if this instance won; what a supervisor runs on each tick."""
        return self.maintain() if self.claim() else None

    def claim_monitoring(self, interval_seconds: int) -> bool:
        """Claim this interval's state monitoring (``version.monitored_on``), as :meth:`claim` does. Commits."""
        return self._in_transaction(_claim, sql.CLAIM_MONITORING, interval_seconds)

    def count_states(self) -> dict[str, Any]:
        """Jobs per state, overall and per queue, in pg-boss's ``countStates()`` shape (§8.5). Reads only."""
        return count_states(self._in_transaction(_read, sql.COUNT_STATES))

    def queue_snapshots(self) -> list[QueueSnapshot]:
        """Every queue with its jobs by state and the age of its oldest queued job. Reads only."""
        return _snapshots(self._in_transaction(_read, sql.QUEUE_SNAPSHOTS))


class AsyncMaintenance:
    """:class:`Maintenance` on an ``AsyncEngine``: the same commands, as coroutines.

    Each command **commits a transaction of its own** under pg-boss's schema lock, as in :class:`Maintenance`.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str = DEFAULT_SCHEMA,
        *,
        settings: MaintenanceSettings | None = None,
        **options: Any,
    ) -> None:
        self.schema = validate_schema_name(schema)
        if settings is not None and options:
            raise InvalidOptionError("give maintenance settings or options, not both")
        self.settings = settings or MaintenanceSettings.from_options(options)
        self._engine = engine.execution_options(schema_translate_map=schema_translate_map(schema))

    async def _in_transaction(self, command: Callable[..., T], *args: Any) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(command, *args)

    async def expire(self) -> int:
        """Fail every active job that ran past its ``expire_in``, by its retry rules; returns how many.

        Commits its own transaction; locks the expired rows and pg-boss's schema lock.
        """
        return await self._in_transaction(_expire, self.schema)

    async def archive(self) -> int:
        """Move finished jobs past their archive delay, and queued jobs past ``keep_until``, to ``archive``.

        Returns how many rows the archive took. Commits its own transaction; holds the schema lock.
        """
        return await self._in_transaction(_archive, self.schema, self.settings)

    async def drop(self) -> int:
        """Delete archived jobs older than the delete delay; returns how many. Commits; holds the schema lock."""
        return await self._in_transaction(_drop, self.schema, self.settings)

    async def maintain(self) -> MaintenanceResult:
        """Expire, then archive, then drop, each in its own transaction, as pg-boss's ``maintain()`` does.

        Does not touch ``version.maintained_on``: see :meth:`maintain_if_due` for the cluster's turn.
        """
        started = time.monotonic()
        expired = await self.expire()
        archived = await self.archive()
        dropped = await self.drop()
        return MaintenanceResult(expired, archived, dropped, round((time.monotonic() - started) * 1000))

    async def claim(self) -> bool:
        """Claim this interval's maintenance for the cluster: ``True`` if this instance won it.

        The claim is pg-boss's: ``version.maintained_on`` moves to now only if more than the interval has
        passed since it last moved, so any mix of Python and Node instances maintains about once per interval.
        Commits.
        """
        interval = self.settings.maintenance_interval_seconds
        return await self._in_transaction(_claim, sql.CLAIM_MAINTENANCE, interval)

    async def maintain_if_due(self) -> MaintenanceResult | None:
        """:meth:`claim`, then :meth:`maintain` if this instance won; what a supervisor runs on each tick."""
        return await self.maintain() if await self.claim() else None

    async def claim_monitoring(self, interval_seconds: int) -> bool:
        """Claim this interval's state monitoring (``version.monitored_on``), as :meth:`claim` does. Commits."""
        return await self._in_transaction(_claim, sql.CLAIM_MONITORING, interval_seconds)

    async def count_states(self) -> dict[str, Any]:
        """Jobs per state, overall and per queue, in pg-boss's ``countStates()`` shape (§8.5). Reads only."""
        return count_states(await self._in_transaction(_read, sql.COUNT_STATES))

    async def queue_snapshots(self) -> list[QueueSnapshot]:
        """Every queue with its jobs by state and the age of its oldest queued job. Reads only."""
        return _snapshots(await self._in_transaction(_read, sql.QUEUE_SNAPSHOTS))


def count_states(rows: list[Any]) -> dict[str, Any]:
    """Shape ``COUNT_STATES`` rows (name, state, count, with ROLLUP subtotals) the way pg-boss does."""
    states = [state.value for state in JobState]
    result: dict[str, Any] = dict.fromkeys(states, 0)
    result["all"] = 0
    queues: dict[str, dict[str, int]] = {}
    for name, state, count in rows:
        if name is None:
            result["all" if state is None else str(state)] = int(count)
            continue
        counts = queues.setdefault(name, {**dict.fromkeys(states, 0), "all": 0})
        counts["all" if state is None else str(state)] = int(count)
    result["queues"] = queues
    return result


__all__ = [
    "MAINTENANCE_OPTIONS",
    "AsyncMaintenance",
    "Maintenance",
    "MaintenanceResult",
    "MaintenanceSettings",
    "QueueSnapshot",
    "count_states",
]
