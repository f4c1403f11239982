"""The worker's listener: LISTEN/NOTIFY wake-ups, so a loop fetches when a job is sent, not a polling interval later.

On a version-46 schema the listener LISTENs on pg-boss 12's channel of the schema (PGBOSS12.md §10:
``pgboss_`` and 24 hex digits of the sha224 of the configured schema spelling, trap 23), where pg-boss 12 and
sqla_boss announce the name of a queue with ``notify`` that got a job due now; the loops of that queue wake. On
version 24 it LISTENs on sqla_boss's own channels, one per queue (:mod:`sqla_boss.notify`).

Once subscribed, the listener proves it twice: ``pg_listening_channels()`` names its channels, and a NOTIFY sent
from another connection of the engine on a channel of its own arrives within :data:`PROBE_SECONDS`. Then it
wakes every loop (what was sent meanwhile is found by fetching) and keeps checking ``pg_listening_channels()``
every :data:`CHECK_SECONDS`. A cut connection is reopened with backoff.

Where notifications cannot arrive, the loops poll, and the listener says so in one warning line starting with
``listen_notify_unavailable`` (pg-boss's warning): a connection that is not psycopg 3's (asyncpg), a server that
refuses LISTEN, or a transaction-pooling PgBouncer, where LISTEN "succeeds" on a server connection that is
handed to other clients after the statement, so the probe never comes back.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sqla_boss.flavours import AEvent
from sqla_boss.handling import backoff, describe, log_retry, one_line
from sqla_boss.notify import channel as channel_24
from sqla_boss.v46.operations import notify_channel

logger = logging.getLogger("sqla_boss.worker")

LISTEN_POLL_SECONDS = 0.5
"""How often the listener looks up from its notifications to see whether it must stop or listen to more."""

PROBE_SECONDS = 5.0
"""How long the listener waits for its probe NOTIFY before it decides that notifications cannot reach it."""

CHECK_SECONDS = 10.0
"""How often the listener asks ``pg_listening_channels()`` whether it still listens (pg-boss: 10 s)."""

UNAVAILABLE = "listen_notify_unavailable"
"""The word that starts the one warning the listener logs when it gives up and the loops poll."""

__all__ = ["CHECK_SECONDS", "LISTEN_POLL_SECONDS", "PROBE_SECONDS", "UNAVAILABLE", "AsyncListener"]


class ListenUnavailableError(Exception):
    """Notifications cannot reach this connection: the loops poll."""


class ListenLostError(Exception):
    """The connection no longer listens to what it should: subscribe again."""


class AsyncListener:
    """Wakes the loops of a queue when a notification for it arrives, on a connection of its own.

    Args:
        engine: the worker's engine; the listener takes one connection out of its pool for as long as it lives,
            and borrows a pooled one for its probe.
        schema: the schema, spelled as configured (the version-46 channel hashes that spelling).
        version: the schema's version, 24 or 46.
        wakes: the worker's events by queue name, read live (queues registered later are listened to as well).
        stopping: set when the worker stops; the listener then returns.
        retry_seconds: the polling interval, which caps the reconnection backoff.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        version: int,
        wakes: Mapping[str, AEvent],
        stopping: AEvent,
        retry_seconds: float,
    ) -> None:
        self._engine = engine
        self.schema = schema
        self.version = version
        self._wakes = wakes
        self._stopping = stopping
        self._retry_seconds = retry_seconds
        self.subscribed = AEvent()
        """Set while the subscription is proven (after the probe came back); cleared when the connection is lost."""
        self.subscribed_at: float | None = None
        """When (monotonic seconds) the listener last proved its subscription and woke every loop."""
        self.unavailable: str | None = None
        """Why notifications cannot arrive, once the listener gave up and the loops poll; else ``None``."""
        self._probe = f"sqla_boss_probe_{uuid.uuid4().hex}"

    # --------------------------------------------------------------------------------------- channels

    def channels(self) -> dict[str, str | None]:
        """The channels to listen to, each with the queue it wakes, or ``None`` on version 46, where the payload
        names the queue and one channel serves them all."""
        if self.version == 46:
            return {notify_channel(self.schema): None}
        return {channel_24(self.schema, name): name for name in list(self._wakes)}

    def _wake(self, channel: str, payload: str, listening: Mapping[str, str | None]) -> None:
        if channel not in listening:
            return
        queue = listening[channel]
        wake = self._wakes.get(payload if queue is None else queue)
        if wake is not None:
            wake.set()

    def _wake_all(self) -> None:
        for wake in list(self._wakes.values()):
            wake.set()

    # ------------------------------------------------------------------------------------------- run

    async def run(self) -> None:
        """Listen until the worker stops; reconnect with backoff when cut; return at once where notifications
        cannot arrive (after one ``listen_notify_unavailable`` warning)."""
        failures = 0
        while not self._stopping.is_set():
            try:
                raw = await self._engine.raw_connection()
            except Exception as error:
                failures += 1
                delay = backoff(failures, self._retry_seconds)
                log_retry("listener cannot connect", error, delay)
                await self._stopping.wait(delay)
                continue
            connection: Any = raw.driver_connection
            raw.detach()  # a connection of its own, out of the pool, for as long as it lives
            try:
                if not _is_psycopg(connection):
                    self._give_up(f"{type(connection).__module__} connections do not take LISTEN here (psycopg 3 does)")
                    return
                await connection.rollback()
                await connection.set_autocommit(True)
                failures = await self._serve(connection, failures)
            except ListenUnavailableError as error:
                self._give_up(str(error))
                return
            except Exception as error:
                self.subscribed.clear()
                failures += 1
                delay = backoff(failures, self._retry_seconds)
                log_retry("listener connection lost", error, delay, again="reconnecting")
                self._wake_all()  # notifications may have been missed meanwhile: fetch now
                await self._stopping.wait(delay)
            finally:
                with contextlib.suppress(Exception):
                    await connection.close()

    def _give_up(self, reason: str) -> None:
        self.unavailable = reason
        logger.warning("%s: %s; waking by polling only", UNAVAILABLE, reason, extra=describe(""))

    async def _serve(self, connection: Any, failures: int) -> int:
        listening: dict[str, str | None] = {}
        checked = 0.0
        while not self._stopping.is_set():
            if not self.subscribed.is_set():
                await self._prove(connection)
            wanted = self.channels()
            if any(name not in listening for name in wanted):
                for name in wanted:
                    if name not in listening:
                        await self._execute(connection, "LISTEN {}", name)
                listening.update(wanted)
                checked = await self._check(connection, listening)
            elif time.monotonic() - checked >= CHECK_SECONDS:
                checked = await self._check(connection, listening)
            if not self.subscribed.is_set():
                self.subscribed_at = time.monotonic()
                self.subscribed.set()
                if failures:
                    logger.info("listener reconnected", extra=describe(""))
                    failures = 0
                self._wake_all()  # subscribed (again): what was sent before is found by fetching now
            async for notification in connection.notifies(timeout=LISTEN_POLL_SECONDS):
                self._wake(notification.channel, notification.payload, listening)
        return failures

    async def _execute(self, connection: Any, statement: str, name: str) -> None:
        """``statement`` with ``{}`` replaced by the quoted channel ``name``; a refusal that leaves the connection
        usable (the server or a pooler does not take LISTEN) means notifications are unavailable."""
        import psycopg
        from psycopg import sql as pgsql

        try:
            await connection.execute(pgsql.SQL(statement).format(pgsql.Identifier(name)))
        except psycopg.Error as error:
            if connection.broken or connection.closed:
                raise
            raise ListenUnavailableError(f"the server refused LISTEN ({one_line(error)})") from error

    async def _check(self, connection: Any, listening: Mapping[str, str | None]) -> float:
        """Ask ``pg_listening_channels()`` whether every channel is listened to; the channels are in the
        statement's text, so ``pg_stat_activity`` still shows which connection listens to what."""
        from psycopg import sql as pgsql

        if not listening:
            return time.monotonic()
        names = pgsql.SQL(", ").join(pgsql.Literal(name) for name in listening)
        statement = pgsql.SQL("SELECT c FROM pg_listening_channels() AS c WHERE c IN ({})").format(names)
        cursor = await connection.execute(statement)
        found = {row[0] for row in await cursor.fetchall()}
        missing = sorted(set(listening) - found)
        if missing:
            raise ListenLostError(f"pg_listening_channels() lacks {', '.join(missing)}")
        return time.monotonic()

    async def _prove(self, connection: Any) -> None:
        """LISTEN on a channel of the listener's own, NOTIFY it from another connection, and wait for it: behind a
        transaction-pooling PgBouncer it never comes back."""
        await self._execute(connection, "LISTEN {}", self._probe)
        token = uuid.uuid4().hex
        async with self._engine.connect() as other:
            await other.execute(select(func.pg_notify(self._probe, token)))
            await other.commit()
        deadline = time.monotonic() + PROBE_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            async for notification in connection.notifies(timeout=left):
                if notification.channel == self._probe and notification.payload == token:
                    return
        raise ListenUnavailableError(
            f"a NOTIFY sent from another connection did not arrive within {PROBE_SECONDS:g} s "
            "(a transaction-pooling PgBouncer?)"
        )


def _is_psycopg(connection: Any) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(connection, psycopg.AsyncConnection)
