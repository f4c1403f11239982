"""``AsyncSupervisor``: pg-boss 12's supervisor on a schema at version 46 (PGBOSS12.md §8), on an ``AsyncEngine``.

It runs what pg-boss 12 does once per cluster, taking turns with every other supervisor of the schema, Python or
Node, through pg-boss's own claims and advisory locks (:mod:`sqla_boss.v46.supervision`): the supervise pass
(per queue: expiry and the cached counts, then the retention sweep), the flow resolver, the deferred index
builds (BAM), cron, and this instance's row in ``instance``. Each step commits a transaction of its own.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncEngine

import sqla_boss
from sqla_boss.async_driver import AsyncDriver
from sqla_boss.flavours import AEvent
from sqla_boss.handling import one_line
from sqla_boss.operations import Operation, operations_for
from sqla_boss.options.supervision import SupervisionSettings
from sqla_boss.v46 import VERSION
from sqla_boss.v46.cron import CronPass, InvalidSchedule
from sqla_boss.v46.operations import Operations46
from sqla_boss.v46.supervision import (
    DELETION_BATCH,
    DELTA_RESET_SECONDS,
    EXPIRY_BATCH,
    Backlog,
    BamRun,
    InstanceRecord,
    SupervisePass,
    Supervision46,
    index_name,
)

T = TypeVar("T")

logger = logging.getLogger("sqla_boss.supervisor")


class AsyncSupervisor:
    """pg-boss 12's supervisor for one schema at version 46, on an ``AsyncEngine``.

    Args:
        engine: where to connect.
        schema: the pg-boss schema.
        settings: :class:`~sqla_boss.options.supervision.SupervisionSettings`.
        cron_interval_seconds: run the cron pass this often (pg-boss's ``cronMonitorIntervalSeconds``), or not at
            all with ``None``.
        supervise: run the supervise pass and the flow resolver (pg-boss's ``supervise``); BAM runs with the
            settings' ``migrate``, the instance row with their ``register_instance``.
        workers: what the ``instance`` row's ``workers`` shows, read at each heartbeat.

    Raises:
        InvalidSchemaNameError: ``schema`` is not a name pg-boss can use.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        settings: SupervisionSettings,
        *,
        cron_interval_seconds: int | None,
        supervise: bool = True,
        workers: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        self._driver = AsyncDriver(schema, (VERSION,))
        self.schema = self._driver.schema
        self.settings = settings
        self.cron_interval_seconds = cron_interval_seconds
        self.supervises = supervise
        """Whether :meth:`run` runs the supervise pass and the flow resolver (pg-boss's ``supervise``)."""
        self._engine = engine
        self._workers = workers
        self._supervision = Supervision46(self.schema)
        self._operations = cast(Operations46, operations_for(self.schema, {}, VERSION))
        self._invalid_seen: set[tuple[str, str, str, str]] = set()
        """The schedules (name, key, expression, zone) warned about as invalid already: once each."""
        self.instance = InstanceRecord(
            id=uuid.uuid4(),
            name=settings.instance_name,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=f"sqla_boss {sqla_boss.__version__}",  # read at run time: the package imports this module
            runtime=f"python {platform.python_version()}",
            heartbeat_seconds=settings.instance_heartbeat_seconds,
            supervise=supervise,
            schedule=cron_interval_seconds is not None,
            migrate=settings.migrate,
            persist_warnings=settings.persist_warnings,
            persist_queue_stats=settings.persist_queue_stats,
            config={**settings.config(), "cronMonitorIntervalSeconds": cron_interval_seconds},
        )
        """This instance's row in ``instance`` (its ``id`` is new for each supervisor)."""

    async def _in_transaction(self, operation: Operation[T]) -> T:
        async with self._engine.begin() as connection:
            return await self._driver.run(connection, operation)

    # --------------------------------------------------------------------------------- the timetable

    async def run(self, stopping: AEvent) -> None:
        """Run the timetable until ``stopping`` is set: register, then each task at its interval (the first at
        once), each tick's failure logged in one line; at the end, mark the ``instance`` row stopped.

        Commits each step in a transaction of its own.
        """
        settings = self.settings
        tasks: dict[str, tuple[float, Callable[[], Any]]] = {}
        if self.supervises:
            tasks["supervise"] = (settings.supervise_interval_seconds, self.supervise)
            tasks["flow"] = (settings.flow_interval_seconds, self.resolve_flows_if_due)
        if settings.migrate:
            tasks["bam"] = (settings.bam_interval_seconds, self.build_indexes_if_due)
        if settings.register_instance:
            tasks["heartbeat"] = (settings.instance_heartbeat_seconds, self.heartbeat)
            await self._tick("register", self.register)
        if self.cron_interval_seconds is not None:
            await self._tick("send-it queue", self.create_send_it_queue)  # before the first pass, at once
            tasks["cron"] = (self.cron_interval_seconds, self.cron)
        due = dict.fromkeys(tasks, time.monotonic())
        if "heartbeat" in due:
            due["heartbeat"] += settings.instance_heartbeat_seconds
        try:
            while not stopping.is_set():
                now = time.monotonic()
                for name, (interval, task) in tasks.items():
                    if due[name] <= now and not stopping.is_set():
                        await self._tick(name, task)
                        due[name] = max(due[name] + interval, time.monotonic())
                await stopping.wait(max(0.0, min(due.values()) - time.monotonic()) if due else None)
        finally:
            if settings.register_instance:
                await self._tick("unregister", self.unregister)

    async def _tick(self, name: str, task: Callable[[], Any]) -> None:
        try:
            await task()
        except Exception as error:
            logger.warning("the supervisor's %s tick failed: %s", name, one_line(error))
            logger.debug("the supervisor's %s tick failed", name, exc_info=True)

    # ------------------------------------------------------------------------------ the supervise pass

    async def supervise(self) -> SupervisePass:
        """One supervise pass (§8.2): for each chunk of queues, those whose monitoring this instance claims are
        expired (timeout, heartbeat) and counted, then those whose maintenance it claims are swept; then the
        instance rows and old warnings are pruned. With ``persist_queue_stats``, today's and tomorrow's
        ``queue_stats`` partitions are made first, each count writes the throughput too and a snapshot of each
        queue it wrote, and the partitions past ``queue_stat_retention_days`` are dropped at the end. Commits
        each batch."""
        settings = self.settings
        result = SupervisePass([], [], [], backlogs=[])
        if settings.persist_queue_stats:
            await self._in_transaction(self._supervision.ensure_stats_partitions())
        for chunk in await self._in_transaction(self._supervision.queue_chunks()):
            claimed = await self._in_transaction(
                self._supervision.claim_monitor(chunk.names, settings.monitor_interval_seconds)
            )
            if claimed:
                result.monitored += claimed
                await self._monitor(chunk.table, claimed, result)
            claimed = await self._in_transaction(
                self._supervision.claim_maintain(chunk.names, settings.maintenance_interval_seconds)
            )
            if claimed:
                await self._maintain(chunk.table, claimed, result)
        if settings.persist_queue_stats:
            await self._in_transaction(self._supervision.drop_old_stats_partitions(settings.queue_stat_retention_days))
        if settings.register_instance:
            await self._in_transaction(self._supervision.prune_instances())
        if settings.persist_warnings:
            await self._in_transaction(self._supervision.delete_old_warnings(settings.warning_retention_days))
        return result

    async def _monitor(self, table: str, names: list[str], result: SupervisePass) -> None:
        # The counts first, then expiry, as pg-boss 12 (its counts of a pass do not see that pass's expiry).
        settings = self.settings
        reset: int | None = None
        if settings.persist_queue_stats:
            # A window starts afresh after 2 h, or two passes when they are further apart (§8.4).
            pass_seconds = max(settings.monitor_interval_seconds, settings.supervise_interval_seconds)
            reset = max(DELTA_RESET_SECONDS, 2 * pass_seconds)
        counted = await self._in_transaction(self._supervision.monitor(names, reset))
        for by in ("timeout", "heartbeat"):
            while True:
                affected, dead_lettered = await self._in_transaction(self._supervision.expire(table, names, by))
                result.expired += affected
                result.dead_lettered += dead_lettered
                if affected < EXPIRY_BATCH:
                    break
        if counted is None:
            return
        result.counted += [name for name, _, _ in counted]
        if settings.persist_queue_stats and counted:
            await self._in_transaction(self._supervision.insert_queue_stats([name for name, _, _ in counted]))
        for name, queued, own in counted:
            threshold = own or self.settings.warning_queue_size
            if queued > threshold:
                backlog = Backlog(name, queued, threshold)
                assert result.backlogs is not None
                result.backlogs.append(backlog)
                await self.warn("queue_backlog", backlog.message, backlog.data())

    async def warn(self, warning_type: str, message: str, data: Any) -> None:
        """Log a warning, and with ``persist_warnings`` write it to ``warning`` (§8.7). Commits."""
        logger.warning("%s: %s", warning_type, message, extra={"warning": warning_type, "data": data})
        if self.settings.persist_warnings:
            await self._in_transaction(self._supervision.write_warning(warning_type, message, data))

    async def _maintain(self, table: str, names: list[str], result: SupervisePass) -> None:
        unfinished = list(names)
        try:
            for name in names:
                cutoff = await self._in_transaction(self._supervision.retained_cutoff())
                after, retained = None, 0
                while True:
                    batch = await self._in_transaction(self._supervision.sweep(table, name, after, cutoff))
                    result.deleted += batch.deleted
                    retained += batch.retained
                    if batch.walked == 0 or batch.last_id is None:
                        break
                    after = batch.last_id
                await self._in_transaction(self._supervision.set_retained(name, retained, cutoff))
            for side in ("child", "parent"):
                cleaned = DELETION_BATCH
                while cleaned >= DELETION_BATCH:
                    cleaned = await self._in_transaction(self._supervision.cleanup_dependencies(table, names, side))
            unfinished = []
            result.maintained += names
        finally:
            if unfinished:  # a pass cut short hands its claims back (§8.6)
                await self._in_transaction(self._supervision.hand_back_maintain(unfinished))

    # ---------------------------------------------------------------------------- flows, BAM, cron

    async def resolve_flows(self) -> int:
        """One pass of the flow resolver (§8.8), whatever the claim; returns the parents resolved. Commits."""
        return await self._in_transaction(self._operations.resolve_flow())

    async def resolve_flows_if_due(self) -> int | None:
        """Claim ``version.flow_on``, and if won, :meth:`resolve_flows`."""
        if not await self._in_transaction(self._supervision.claim("flow_on", self.settings.flow_interval_seconds)):
            return None
        return await self.resolve_flows()

    async def build_indexes(self) -> list[BamRun]:
        """Run the deferred index builds (§8.9), each claimed alone under the ``bamClaim`` lock, run outside a
        transaction (tagged ``/* pgboss bam <id> */``), then marked completed or failed; each at most once in
        this call. Returns what ran."""
        runs: list[BamRun] = []
        attempted: list[uuid.UUID] = []
        while True:
            command = await self._in_transaction(self._supervision.claim_bam_command(attempted))
            if command is None:
                return runs
            attempted.append(command.id)
            error: str | None = None
            try:
                async with self._engine.connect() as connection:
                    autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    await autocommit.exec_driver_sql(command.sql)
            except Exception as failure:
                shown = getattr(failure, "orig", None) or failure
                error = f"error: {str(shown).strip().splitlines()[0] if str(shown).strip() else type(shown).__name__}"
            index = index_name(command.command)
            if error is None and index is not None:
                valid = await self._in_transaction(self._supervision.index_valid(index))
                if valid is False:
                    error = f"error: index {index} is invalid after the build"
            await self._in_transaction(self._supervision.bam_finished(command, error))
            if error is None:
                logger.info("bam: %s on %s completed", command.name, command.table_name)
            else:
                logger.warning("bam: %s on %s failed: %s", command.name, command.table_name, error)
            runs.append(BamRun(command.id, command.name, command.table_name, error))

    async def build_indexes_if_due(self) -> list[BamRun] | None:
        """Claim ``version.bam_on``, and if won, :meth:`build_indexes`."""
        if not await self._in_transaction(self._supervision.claim("bam_on", self.settings.bam_interval_seconds)):
            return None
        return await self.build_indexes()

    async def cron(self) -> CronPass:
        """One cron pass (§9.3): :meth:`~sqla_boss.v46.operations.Operations46.cron_tick`, which claims
        ``version.cron_on`` itself, in a transaction; then an ``invalid_schedule`` warning (:meth:`warn`) for
        each schedule it could not evaluate, once per schedule and expression. Commits."""
        interval = self.cron_interval_seconds if self.cron_interval_seconds is not None else 30
        tick = await self._in_transaction(self._operations.cron_tick(interval))
        if tick.due:
            logger.info("cron: due %s (%d filed)", ", ".join(tick.due), tick.filed)
        for name, key, kind in tick.relabelled:
            logger.info("cron: schedule %s (key %r) relabelled %s", name, key, kind)
        for invalid in tick.unreadable:
            assert isinstance(invalid, InvalidSchedule)
            seen = (invalid.name, invalid.key, invalid.expression, invalid.timezone)
            if seen not in self._invalid_seen:
                self._invalid_seen.add(seen)
                await self.warn("invalid_schedule", invalid.message, invalid.data())
        return tick

    async def create_send_it_queue(self) -> bool:
        """Create ``__pgboss__send-it`` unless it exists, as pg-boss's timekeeper does at start (§9.2); whether
        it was created. Commits."""
        return await self._in_transaction(self._operations.create_send_it_queue())

    # ---------------------------------------------------------------------------------- the instance

    async def register(self) -> None:
        """Write this instance's row in ``instance`` (§8.11). Commits."""
        await self._in_transaction(self._supervision.register(self.instance, self._workers()))

    async def heartbeat(self) -> None:
        """Refresh this instance's heartbeat and workers (or write its row again). Commits."""
        await self._in_transaction(self._supervision.heartbeat(self.instance, self._workers()))

    async def unregister(self) -> None:
        """Mark this instance's row stopped. Commits."""
        await self._in_transaction(self._supervision.stop(self.instance))


__all__ = ["AsyncSupervisor"]
