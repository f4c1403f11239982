"""pg-boss's maintenance on an ``AsyncEngine``: expire, archive and drop, and the cluster-wide claims that keep
instances from running them twice (PGBOSS10.md §8).

Unlike :class:`~sqla_boss.AsyncBoss`, maintenance owns its transactions: each command runs in a transaction of
its own that holds pg-boss's advisory lock on the schema, exactly as pg-boss runs them, so Python and Node
instances on the same schema take turns instead of fighting.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_boss.async_driver import AsyncDriver
from sqla_boss.errors import InvalidOptionError
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.operations import MaintenanceResult, Operation, QueueSnapshot, count_states, operations_for
from sqla_boss.options.maintenance import MAINTENANCE_OPTIONS, MaintenanceSettings
from sqla_boss.schema import MAINTENANCE_VERSIONS

T = TypeVar("T")


class AsyncMaintenance:
    """Expire, archive and drop on one pg-boss schema, as pg-boss's supervisor does.

    Each command **commits a transaction of its own**, holding pg-boss's advisory lock on the schema while it
    runs (with pg-boss's 30 s ``lock_timeout``), so it never overlaps an install, a migration or another
    instance's maintenance.

    Args:
        engine: where to connect: an ``AsyncEngine``.
        schema: the pg-boss schema.
        settings: validated settings, instead of ``options``.
        **options: see :meth:`MaintenanceSettings.from_options`.

    Raises:
        InvalidOptionError, InvalidSchemaNameError: bad options; nothing is run.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str = DEFAULT_SCHEMA,
        *,
        settings: MaintenanceSettings | None = None,
        **options: Any,
    ) -> None:
        self._driver = AsyncDriver(schema, MAINTENANCE_VERSIONS)
        self.schema = self._driver.schema
        """The pg-boss schema maintained."""
        if settings is not None and options:
            raise InvalidOptionError("give maintenance settings or options, not both")
        self.settings = settings or MaintenanceSettings.from_options(options)
        """The validated settings."""
        self._engine = engine
        self._operations = operations_for(self.schema, {})

    async def _in_transaction(self, operation: Operation[T]) -> T:
        async with self._engine.begin() as connection:
            return await self._driver.run(connection, operation)

    async def expire(self) -> int:
        """Fail every active job that ran past its ``expire_in``, by its retry rules; returns how many.

        Commits its own transaction; locks the expired rows and pg-boss's schema lock.
        """
        return await self._in_transaction(self._operations.expire())

    async def archive(self) -> int:
        """Move finished jobs past their archive delay, and queued jobs past ``keep_until``, to ``archive``.

        Returns how many rows the archive took. Commits its own transaction; holds the schema lock.
        """
        settings = self.settings
        operation = self._operations.archive(
            settings.archive_completed_after_seconds, settings.archive_failed_after_seconds
        )
        return await self._in_transaction(operation)

    async def drop(self) -> int:
        """Delete archived jobs older than the delete delay; returns how many. Commits; holds the schema lock."""
        return await self._in_transaction(self._operations.drop(self.settings.delete_after_seconds))

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
        return await self._in_transaction(self._operations.claim("maintenance", interval))

    async def maintain_if_due(self) -> MaintenanceResult | None:
        """:meth:`claim`, then :meth:`maintain` if this instance won; what a supervisor runs on each tick."""
        return await self.maintain() if await self.claim() else None

    async def claim_monitoring(self, interval_seconds: int) -> bool:
        """Claim this interval's state monitoring (``version.monitored_on``), as :meth:`claim` does. Commits."""
        return await self._in_transaction(self._operations.claim("monitoring", interval_seconds))

    async def count_states(self) -> dict[str, Any]:
        """Jobs per state, overall and per queue, in pg-boss's ``countStates()`` shape (§8.5). Reads only."""
        return await self._in_transaction(self._operations.count_states())

    async def queue_snapshots(self) -> list[QueueSnapshot]:
        """Every queue with its jobs by state and the age of its oldest queued job. Reads only."""
        return await self._in_transaction(self._operations.queue_snapshots())


__all__ = [
    "MAINTENANCE_OPTIONS",
    "AsyncMaintenance",
    "MaintenanceResult",
    "MaintenanceSettings",
    "QueueSnapshot",
    "count_states",
]
