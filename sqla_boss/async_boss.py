"""``AsyncBoss``: pg-boss's job and queue API on the caller's own ``AsyncSession``, inside the caller's transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from sqla_boss.async_driver import AsyncDriver
from sqla_boss.binding import bind_session
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.models import Archive, Job, JobState, Queue, QueuePolicy, Schedule
from sqla_boss.operations import Operation, operations_for
from sqla_boss.options.jobs import fixed_options
from sqla_boss.options.queues import queue_settings

T = TypeVar("T")

JobIds = uuid.UUID | str | Sequence[uuid.UUID | str]
"""One job id or several, as ``UUID`` objects or strings."""


class AsyncBoss:
    """pg-boss 10's repository API on a SQLAlchemy ``AsyncSession`` (or ``AsyncConnection``) you own.

    Every method runs in your transaction and **never commits**: the jobs you send exist exactly when
    your transaction commits, together with your own rows (the transactional outbox). After every
    expected outcome, including the errors sqla_boss raises and the conflicts pg-boss answers with
    ``None``, the transaction is still usable; only an error SQLAlchemy raises means you must roll back.

    Args:
        session: your ``AsyncSession``, or an ``AsyncConnection`` (ORM objects then come from a session on it).
        schema: the pg-boss schema (default ``pgboss``).
        **defaults: pg-boss's constructor defaults for jobs: ``retry_limit``, ``retry_delay``,
            ``retry_backoff``, ``expire_in_seconds`` / ``_minutes`` / ``_hours`` and ``retention_seconds`` /
            ``_minutes`` / ``_hours`` / ``_days``. Precedence: job, then queue, then these, then pg-boss's.
    """

    def __init__(self, session: AsyncSession | AsyncConnection, schema: str = DEFAULT_SCHEMA, **defaults: Any) -> None:
        self._operations = operations_for(schema, defaults)
        self._driver = AsyncDriver(self._operations.schema)
        self.session = session if isinstance(session, AsyncSession) else AsyncSession(bind=session)
        """The session the statements run on."""
        self._connection = session if isinstance(session, AsyncConnection) else None
        bind_session(self.session, self._operations.schema, orm=False)

    @property
    def schema(self) -> str:
        """The pg-boss schema this repository works on."""
        return self._operations.schema

    async def _run(self, operation: Operation[T]) -> T:
        return await self._driver.run(self.session, operation, connection=self._connection)

    # ------------------------------------------------------------------------------------------ queues

    async def create_queue(
        self,
        name: str,
        *,
        policy: QueuePolicy | str = QueuePolicy.standard,
        retry_limit: int | None = None,
        retry_delay: int | dt.timedelta | None = None,
        retry_backoff: bool | None = None,
        expire_in_seconds: int | dt.timedelta | None = None,
        retention_minutes: int | None = None,
        dead_letter: str | None = None,
    ) -> None:
        """Create a queue and its partition, through the schema's ``create_queue`` function.

        Does nothing if the queue exists already (its settings stay as they were, as in pg-boss). Runs in
        your transaction and does not commit; takes the locks of ``CREATE TABLE`` and ``ATTACH PARTITION``
        on the ``job`` table until your transaction ends.

        Args:
            name: the queue's name: at least one of ``[A-Za-z0-9_-]``, at most 1,024 bytes of UTF-8.
            policy: ``standard`` (default), ``short`` (at most one queued job), ``singleton`` (at most one active
                job), or ``stately`` (at most one queued and one active job); per ``singleton_key`` when jobs
                have one.
            retry_limit: how often a failed job of the queue is retried (pg-boss's default: 2).
            retry_delay: seconds (or a ``timedelta``) before a retry (default 0).
            retry_backoff: double the delay at each retry, with jitter (default ``False``).
            expire_in_seconds: how long a job may stay active before expiry fails it (default 15 minutes).
            retention_minutes: how long a queued job is kept before it is archived unrun (default 14 days).
            dead_letter: the queue a job is copied to when it fails for good.

        Raises:
            InvalidQueueNameError, InvalidOptionError: before anything is written.
            DeadLetterQueueNotFoundError: ``dead_letter`` names no queue.
        """
        return await self._run(self._operations.create_queue(name, queue_settings(locals())))

    async def update_queue(
        self,
        name: str,
        *,
        policy: QueuePolicy | str | None = None,
        retry_limit: int | None = None,
        retry_delay: int | dt.timedelta | None = None,
        retry_backoff: bool | None = None,
        expire_in_seconds: int | dt.timedelta | None = None,
        retention_minutes: int | None = None,
        dead_letter: str | None = None,
    ) -> None:
        """Change a queue's settings; ``None`` keeps a setting (pg-boss would reset the policy to standard).

        Jobs already sent keep the settings they were given. Runs in your transaction and does not commit;
        locks the queue's row. The settings are :meth:`create_queue`'s.

        Raises:
            QueueNotFoundError: the queue does not exist (pg-boss silently does nothing).
            DeadLetterQueueNotFoundError: ``dead_letter`` names no queue.
        """
        return await self._run(self._operations.update_queue(name, queue_settings(locals())))

    async def delete_queue(self, name: str) -> bool:
        """Delete an empty queue, its partition, schedule and subscriptions; ``False`` if there was none.

        Runs in your transaction and does not commit. Dropping the partition takes an ACCESS EXCLUSIVE lock
        on ``job`` and ``queue`` until your transaction ends, which blocks every send, fetch and read of
        jobs meanwhile, Node pg-boss's included: commit soon.

        Raises:
            QueueNotEmptyError: the queue still holds jobs (pg-boss's SQL would fail the transaction).
            QueueInUseError: another queue or a job uses it as a dead letter queue.
        """
        return await self._run(self._operations.delete_queue(name))

    async def purge_queue(self, name: str) -> int:
        """Delete the queue's created and retry jobs; returns how many. Does not commit; locks those rows."""
        return await self._run(self._operations.purge_queue(name))

    async def get_queue(self, name: str) -> Queue | None:
        """The queue as an ORM object, or ``None``. Does not commit; takes no locks."""
        return await self._run(self._operations.get_queue(name))

    async def get_queues(self) -> list[Queue]:
        """Every queue, by name, ``__pgboss__send-it`` included. Does not commit; takes no locks."""
        return await self._run(self._operations.get_queues())

    async def get_queue_size(self, name: str, before: JobState | str = JobState.active) -> int:
        """How many of the queue's jobs are in a state before ``before`` (default: queued ones).

        An unknown queue has size 0. Does not commit; takes no locks.
        """
        return await self._run(self._operations.get_queue_size(name, before))

    # ----------------------------------------------------------------------------------------- sending

    async def send(self, name: str, data: Any = None, **options: Any) -> uuid.UUID | None:
        """Send a job; returns its id, or ``None`` when a policy, throttling slot or the id was taken.

        ``options`` are pg-boss 10's send options in snake_case: ``id, priority, start_after,
        singleton_key, singleton_seconds, singleton_minutes, singleton_hours, singleton_next_slot,
        retry_limit, retry_delay, retry_backoff, expire_in_seconds, expire_in_minutes, expire_in_hours,
        retention_seconds, retention_minutes, retention_hours, retention_days, dead_letter``.
        ``start_after`` also takes an aware ``datetime`` or a ``timedelta``; durations take ``timedelta``.

        Runs in your transaction and does not commit: the job exists when your transaction commits.
        Takes no locks beyond the new row's.

        Raises:
            QueueNotFoundError: the queue does not exist (pg-boss returns ``null``). Nothing is written.
            DeadLetterQueueNotFoundError: ``dead_letter`` names no queue.
            InvalidOptionError, PayloadError: bad options, or data that is not JSON.
        """
        return await self._run(self._operations.send(name, data, options))

    async def send_after(
        self, name: str, data: Any = None, *, after: dt.datetime | dt.timedelta | float | str, **options: Any
    ) -> uuid.UUID | None:
        """:meth:`send` with ``start_after=after``: the job waits until then (an aware ``datetime``, a
        ``timedelta`` or seconds from now, or :meth:`send`'s text forms). ``options`` are :meth:`send`'s.

        Does not commit; locks nothing but the new row.

        Raises:
            InvalidOptionError: also for a ``start_after`` in ``options`` beside ``after``.
        """
        return await self._run(
            self._operations.send(name, data, fixed_options(options, "send_after", start_after=after))
        )

    async def send_throttled(
        self, name: str, data: Any = None, *, seconds: int, key: str | None = None, **options: Any
    ) -> uuid.UUID | None:
        """:meth:`send` at most once per ``seconds``-long slot (per ``key``); ``None`` if the slot is taken.

        ``options`` are :meth:`send`'s but the ``singleton_*`` ones, which these arguments set. Does not commit;
        locks nothing but the new row.
        """
        fixed = {"singleton_seconds": seconds, "singleton_next_slot": False, "singleton_key": key}
        return await self._run(self._operations.send(name, data, fixed_options(options, "send_throttled", **fixed)))

    async def send_debounced(
        self, name: str, data: Any = None, *, seconds: int, key: str | None = None, **options: Any
    ) -> uuid.UUID | None:
        """Like :meth:`send_throttled`, but a send in a taken slot goes to the next slot, starting then.

        ``None`` when the next slot is taken too. Does not commit; locks nothing but the new row.
        """
        fixed = {"singleton_seconds": seconds, "singleton_next_slot": True, "singleton_key": key}
        return await self._run(self._operations.send(name, data, fixed_options(options, "send_debounced", **fixed)))

    async def insert(self, jobs: Iterable[Mapping[str, Any]]) -> list[uuid.UUID]:
        """Insert many jobs in one statement; returns the ids inserted, in no particular order.

        Jobs that conflict with a policy, a throttling slot or an existing id are left out, as in pg-boss.

        Each job is a mapping with ``name`` and the fields pg-boss's ``insert`` honours: ``data, id,
        priority, start_after, singleton_key, singleton_seconds, expire_in_seconds, keep_until,
        retry_limit, retry_delay, retry_backoff, dead_letter``. pg-boss silently ignores other keys;
        sqla_boss refuses them. Does not commit; locks nothing but the new rows.

        Raises:
            QueueNotFoundError, DeadLetterQueueNotFoundError: nothing is inserted (pg-boss drops rows).
        """
        return await self._run(self._operations.insert(jobs))

    # ---------------------------------------------------------------------------------------- fetching

    async def fetch(
        self,
        name: str,
        *,
        batch_size: int = 1,
        priority: bool = True,
        include_metadata: bool = False,
        ignore_start_after: bool = False,
    ) -> list[Job]:
        """Activate and return up to ``batch_size`` queued jobs, as ORM ``Job`` objects.

        Jobs are picked by priority (unless ``priority=False``), then age; the returned list is in no
        particular order. On singleton and stately queues, keys that already have an active job are
        passed over, and a batch holds one job per key. ``include_metadata`` is accepted for pg-boss
        parity: the ORM objects always carry every column.

        Runs in your transaction and does not commit: the jobs are active for everyone once you commit.
        Locks the chosen rows (``FOR UPDATE SKIP LOCKED``, so concurrent fetchers get other jobs); runs in
        a savepoint so that a collision with a concurrent activation never aborts your transaction.
        """
        return await self._run(self._operations.fetch(name, batch_size, priority, include_metadata, ignore_start_after))

    # ----------------------------------------------------------------------------------- state changes

    async def complete(self, name: str, ids: JobIds, output: Any = None) -> int:
        """Complete the given active jobs, storing ``output``; returns how many changed.

        ``output`` is stored as pg-boss stores it: a mapping as is, an exception as ``{name, message,
        stack, ...}``, anything else as ``{"value": ...}``. Does not commit; locks the changed rows.
        """
        return await self._run(self._operations.complete(name, ids, output))

    async def fail(self, name: str, ids: JobIds, output: Any = None) -> int:
        """Fail the given created, retry or active jobs; returns how many changed.

        Each goes to ``retry`` (with its delay and backoff) while it has retries left, else to
        ``failed``, with a copy sent to its dead letter queue. An exception is stored as ``{name,
        message, stack, ...}``. Does not commit; locks the changed rows.
        """
        return await self._run(self._operations.fail(name, ids, output))

    async def cancel(self, name: str, ids: JobIds) -> int:
        """Cancel the given created, retry or active jobs; returns how many. Does not commit; locks them."""
        return await self._run(self._operations.cancel(name, ids))

    async def resume(self, name: str, ids: JobIds) -> int:
        """Return the given cancelled jobs to ``created``; returns how many. Does not commit; locks them.

        Raises:
            JobConflictError: a job's policy or throttling slot was taken meanwhile; nothing changed.
        """
        return await self._run(self._operations.resume(name, ids))

    async def retry(self, name: str, ids: JobIds) -> int:
        """Give the given failed jobs one more try (state ``retry``); returns how many.

        Does not commit; locks the changed rows.
        """
        return await self._run(self._operations.retry(name, ids))

    async def delete_job(self, name: str, ids: JobIds) -> int:
        """Delete the given jobs in any state, without archiving; returns how many.

        Does not commit; locks the deleted rows until your transaction ends.
        """
        return await self._run(self._operations.delete_job(name, ids))

    async def get_job_by_id(
        self, name: str, id: uuid.UUID | str, include_archive: bool = False
    ) -> Job | Archive | None:
        """The job as an ORM object (an ``Archive`` if found only there), or ``None``.

        Does not commit; takes no locks.
        """
        return await self._run(self._operations.get_job_by_id(name, id, include_archive))

    # ----------------------------------------------------------------------------------------- pub/sub

    async def publish(self, event: str, data: Any = None, **options: Any) -> list[uuid.UUID]:
        """Send a job to every queue subscribed to ``event``; returns the ids sent.

        Options are :meth:`send`'s, validated once before anything is sent. Does not commit; locks
        nothing but the new rows.
        """
        return await self._run(self._operations.publish(event, data, options))

    async def subscribe(self, event: str, name: str) -> None:
        """Subscribe queue ``name`` to ``event`` (again: refreshes ``updated_on``).

        Does not commit; locks the subscription row.

        Raises:
            QueueNotFoundError: the queue does not exist.
        """
        return await self._run(self._operations.subscribe(event, name))

    async def unsubscribe(self, event: str, name: str) -> bool:
        """Remove the subscription; ``False`` if there was none. Does not commit; locks that row."""
        return await self._run(self._operations.unsubscribe(event, name))

    # --------------------------------------------------------------------------------------- schedules

    async def schedule(self, name: str, cron: str, data: Any = None, *, tz: str | None = None, **options: Any) -> None:
        """Store (or replace) the queue's cron schedule; workers fire it.

        Does not commit; locks the schedule row.

        The cron expression and the time zone (default UTC) are checked now; pg-boss only finds a bad
        time zone when its cron pass fails. ``options`` are :meth:`send`'s, stored in pg-boss's camelCase.

        Raises:
            InvalidCronError, InvalidTimezoneError, QueueNotFoundError.
        """
        return await self._run(self._operations.schedule(name, cron, data, tz, options))

    async def unschedule(self, name: str) -> bool:
        """Delete the queue's schedule; ``False`` if there was none. Does not commit; locks that row."""
        return await self._run(self._operations.unschedule(name))

    async def get_schedules(self) -> list[Schedule]:
        """Every schedule as an ORM object. Does not commit; takes no locks."""
        return await self._run(self._operations.get_schedules())
