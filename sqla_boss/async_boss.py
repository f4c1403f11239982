"""``AsyncBoss``: pg-boss's job and queue API on the caller's own ``AsyncSession``, inside the caller's transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from sqla_boss.async_driver import AsyncDriver
from sqla_boss.binding import bind_session
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.models import Archive, Job, JobState, Queue, QueuePolicy
from sqla_boss.operations import Operation, Operations, operations_for
from sqla_boss.options.jobs import fixed_options
from sqla_boss.options.queues import KEEP, Keep, queue_settings
from sqla_boss.schema import REPOSITORY_VERSIONS
from sqla_boss.v46.operations import JobRef, RedrivePreview, UpdateResult

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
        self._defaults = defaults
        self._driver = AsyncDriver(self._operations.schema, runs=REPOSITORY_VERSIONS)
        self.session = session if isinstance(session, AsyncSession) else AsyncSession(bind=session)
        """The session the statements run on."""
        self._connection = session if isinstance(session, AsyncConnection) else None
        bind_session(self.session, self._operations.schema, orm=False)

    @property
    def schema(self) -> str:
        """The pg-boss schema this repository works on."""
        return self._operations.schema

    async def version(self) -> int:
        """The schema's pg-boss version, 24 (pg-boss 10) or 46 (pg-boss 12), which decides the statements every
        method runs. Read once per connection pool and schema, in your transaction; does not commit, takes no
        locks.

        Raises:
            SchemaNotInstalledError, SchemaVersionError: the schema holds no pg-boss, or another version.
        """
        return await self._driver.version(self.session, connection=self._connection)

    async def _run(self, operation: Callable[[Operations], Operation[T]]) -> T:
        version = await self._driver.version(self.session, connection=self._connection)
        operations = self._operations if version == 24 else operations_for(self.schema, self._defaults, version)
        return await self._driver.run(self.session, operation(operations), connection=self._connection)

    # ------------------------------------------------------------------------------------------ queues

    async def create_queue(
        self,
        name: str,
        *,
        policy: QueuePolicy | str = QueuePolicy.standard,
        retry_limit: int | None = None,
        retry_delay: int | dt.timedelta | None = None,
        retry_backoff: bool | None = None,
        retry_delay_max: int | dt.timedelta | None = None,
        expire_in_seconds: int | dt.timedelta | None = None,
        retention_minutes: int | None = None,
        retention_seconds: int | dt.timedelta | None = None,
        delete_after_seconds: int | dt.timedelta | None = None,
        dead_letter: str | None = None,
        partition: bool | None = None,
        heartbeat_seconds: int | dt.timedelta | None = None,
        notify: bool | None = None,
        warning_queue_size: int | None = None,
    ) -> None:
        """Create a queue (and, on version 24 or with ``partition=True``, its own job table) through the schema's
        ``create_queue`` function.

        Does nothing if the queue exists already (its settings stay as they were, as in pg-boss). Runs in
        your transaction and does not commit; takes the locks of ``CREATE TABLE`` and ``ATTACH PARTITION``
        on the ``job`` table until your transaction ends when it makes a table, and on version 46 pg-boss 12's
        ``create-queue`` advisory lock. On version 46 a ``partition=True`` queue's ``ATTACH PARTITION`` also
        locks the shared ``job_common`` table (ACCESS EXCLUSIVE) until you commit, which holds up every send
        and fetch of the shared queues meanwhile, Node pg-boss's included: commit soon.

        Args:
            name: the queue's name. Version 24: at least one of ``[A-Za-z0-9_-]``; version 46: only letters,
                digits, ``_``, ``-``, ``.`` and ``/``. At most 1,024 bytes of UTF-8.
            policy: ``standard`` (default), ``short`` (at most one queued job), ``singleton`` (at most one active
                job), ``stately`` (at most one queued and one active job); on version 46 also ``exclusive``
                (one queued or active job) and ``key_strict_fifo`` (jobs of a key one at a time, in order; every
                job needs a ``singleton_key``). Per ``singleton_key`` when jobs have one.
            retry_limit: how often a failed job of the queue is retried (pg-boss's default: 2).
            retry_delay: seconds (or a ``timedelta``) before a retry (default 0).
            retry_backoff: double the delay at each retry, with jitter (default ``False``).
            retry_delay_max: version 46: the longest backoff delay, in seconds (only with ``retry_backoff``).
            expire_in_seconds: how long a job may stay active before expiry fails it (default 15 minutes).
            retention_minutes: version 24: how long a queued job is kept before it is archived unrun (default
                14 days).
            retention_seconds: version 46: how long a queued job is kept before it is deleted unrun (default 14
                days).
            delete_after_seconds: version 46: how long a finished job is kept (default 7 days; 0: for ever).
            dead_letter: the queue a job is copied to when it fails for good.
            partition: version 46: give the queue a job table of its own (default: the shared ``job_common``).
            heartbeat_seconds: version 46: a job whose heartbeat (:meth:`touch`) is older fails (at least 10).
            notify: version 46: announce due jobs on pg-boss 12's NOTIFY channel.
            warning_queue_size: version 46: the queued count above which pg-boss 12 warns.

        Raises:
            InvalidQueueNameError, InvalidOptionError: before anything is written.
            UnsupportedOperationError: a setting of the other schema version.
            DeadLetterQueueNotFoundError: ``dead_letter`` names no queue.
        """
        settings = queue_settings(locals())
        return await self._run(lambda o: o.create_queue(name, settings))

    async def update_queue(
        self,
        name: str,
        *,
        policy: QueuePolicy | str | Keep | None = KEEP,
        retry_limit: int | Keep | None = KEEP,
        retry_delay: int | dt.timedelta | Keep | None = KEEP,
        retry_backoff: bool | Keep | None = KEEP,
        retry_delay_max: int | dt.timedelta | Keep | None = KEEP,
        expire_in_seconds: int | dt.timedelta | Keep | None = KEEP,
        retention_minutes: int | Keep | None = KEEP,
        retention_seconds: int | dt.timedelta | Keep | None = KEEP,
        delete_after_seconds: int | dt.timedelta | Keep | None = KEEP,
        dead_letter: str | Keep | None = KEEP,
        heartbeat_seconds: int | dt.timedelta | Keep | None = KEEP,
        notify: bool | Keep | None = KEEP,
        warning_queue_size: int | Keep | None = KEEP,
    ) -> None:
        """Change a queue's settings; a setting not given keeps its value.

        ``None`` keeps a setting too, except on version 46 for ``retry_delay_max``, ``heartbeat_seconds`` and
        ``dead_letter``, which it clears, as in pg-boss 12. On version 24 pg-boss would reset the policy to
        standard; sqla_boss keeps it. On version 46 the policy cannot be changed. Jobs already sent keep the
        settings they were given. Runs in your transaction and does not commit; locks the queue's row. The
        settings are :meth:`create_queue`'s.

        Raises:
            QueueNotFoundError: the queue does not exist (pg-boss silently does nothing).
            DeadLetterQueueNotFoundError: ``dead_letter`` names no queue.
            InvalidOptionError: on version 46, ``policy``, or no setting at all.
        """
        settings = queue_settings(locals())
        return await self._run(lambda o: o.update_queue(name, settings))

    async def delete_queue(self, name: str) -> bool:
        """Delete a queue, its schedules and subscriptions (and its partition, if it has one); ``False`` if there
        was none. On version 24 the queue must be empty; on version 46 its jobs go with it, as in pg-boss 12.

        Runs in your transaction and does not commit. Dropping a partition takes an ACCESS EXCLUSIVE lock on
        ``job`` and ``queue`` until your transaction ends, which blocks every send, fetch and read of jobs
        meanwhile, Node pg-boss's included: commit soon. On version 46 it also takes pg-boss 12's
        ``delete-queue`` advisory lock.

        Raises:
            QueueNotEmptyError: version 24: the queue still holds jobs (pg-boss's SQL would fail the transaction).
            QueueInUseError: another queue or a job uses it as a dead letter queue.
        """
        return await self._run(lambda o: o.delete_queue(name))

    async def purge_queue(self, name: str) -> int:
        """Delete the queue's created and retry jobs; returns how many. Does not commit; locks those rows."""
        return await self._run(lambda o: o.purge_queue(name))

    async def get_queue(self, name: str) -> Queue | None:
        """The queue as an ORM object, or ``None``. Does not commit; takes no locks."""
        return await self._run(lambda o: o.get_queue(name))

    async def get_queues(
        self, names: Sequence[str] | None = None, *, limit: int | None = None, after: str | None = None
    ) -> list[Any]:
        """Every queue, by name, ``__pgboss__send-it`` included. Does not commit; takes no locks.

        On version 46, as pg-boss 12's ``getQueues``: only the queues ``names`` (when given), after the name
        ``after``, at most ``limit`` (1-100,000; all when ``None``).

        Raises:
            UnsupportedOperationError: ``names``, ``limit`` or ``after`` on version 24.
        """
        return await self._run(lambda o: o.get_queues(names, limit, after))

    async def get_blocked_keys(self, name: str, *, limit: int = 1000, after: str | None = None) -> list[str]:
        """Version 46: the keys of a key_strict_fifo queue that a failed job blocks until it is retried or
        deleted, in order, after ``after``, at most ``limit``. Does not commit; takes no locks.

        Raises:
            QueueNotFoundError: the queue does not exist.
            InvalidOptionError: the queue is not key_strict_fifo.
            UnsupportedOperationError: on version 24.
        """
        return await self._run(lambda o: o.get_blocked_keys(name, limit, after))

    async def get_queue_size(self, name: str, before: JobState | str = JobState.active) -> int:
        """How many of the queue's jobs are in a state before ``before`` (default: queued ones).

        An unknown queue has size 0. Does not commit; takes no locks.
        """
        return await self._run(lambda o: o.get_queue_size(name, before))

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
        return await self._run(lambda o: o.send(name, data, options))

    async def send_after(
        self, name: str, data: Any = None, *, after: dt.datetime | dt.timedelta | float | str, **options: Any
    ) -> uuid.UUID | None:
        """:meth:`send` with ``start_after=after``: the job waits until then (an aware ``datetime``, a
        ``timedelta`` or seconds from now, or :meth:`send`'s text forms). ``options`` are :meth:`send`'s.

        Does not commit; locks nothing but the new row.

        Raises:
            InvalidOptionError: also for a ``start_after`` in ``options`` beside ``after``.
        """
        return await self._run(lambda o: o.send(name, data, fixed_options(options, "send_after", start_after=after)))

    async def send_throttled(
        self, name: str, data: Any = None, *, seconds: int, key: str | None = None, **options: Any
    ) -> uuid.UUID | None:
        """:meth:`send` at most once per ``seconds``-long slot (per ``key``); ``None`` if the slot is taken.

        ``options`` are :meth:`send`'s but the ``singleton_*`` ones, which these arguments set. Does not commit;
        locks nothing but the new row.
        """
        fixed = {"singleton_seconds": seconds, "singleton_next_slot": False, "singleton_key": key}
        return await self._run(lambda o: o.send(name, data, fixed_options(options, "send_throttled", **fixed)))

    async def send_debounced(
        self, name: str, data: Any = None, *, seconds: int, key: str | None = None, **options: Any
    ) -> uuid.UUID | None:
        """Like :meth:`send_throttled`, but a send in a taken slot goes to the next slot, starting then.

        ``None`` when the next slot is taken too. Does not commit; locks nothing but the new row.
        """
        fixed = {"singleton_seconds": seconds, "singleton_next_slot": True, "singleton_key": key}
        return await self._run(lambda o: o.send(name, data, fixed_options(options, "send_debounced", **fixed)))

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
        return await self._run(lambda o: o.insert(jobs))

    # ---------------------------------------------------------------------------------------- fetching

    async def fetch(
        self,
        name: str,
        *,
        batch_size: int = 1,
        priority: bool = True,
        include_metadata: bool = False,
        ignore_start_after: bool = False,
        min_priority: int | None = None,
        max_priority: int | None = None,
        group_concurrency: int | Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Activate and return up to ``batch_size`` queued jobs, as ORM ``Job`` objects.

        Jobs are picked by priority (unless ``priority=False``), then age; the returned list is in no
        particular order. On singleton and stately queues, keys that already have an active job are
        passed over, and a batch holds one job per key. ``include_metadata`` is accepted for pg-boss
        parity: the ORM objects always carry every column.

        Runs in your transaction and does not commit: the jobs are active for everyone once you commit.
        Locks the chosen rows (``FOR UPDATE SKIP LOCKED``, so concurrent fetchers get other jobs); runs in
        a savepoint so that a collision with a concurrent activation never aborts your transaction.

        On version 46 (pg-boss 12) the jobs are version 46's ``Job`` objects, picked by priority then age
        (``priority`` is accepted and ignored, as in pg-boss 12); blocked jobs (waiting for their flow) are never
        fetched; a key_strict_fifo queue hands out each key's oldest job alone; and these options apply:
        ``min_priority`` / ``max_priority``, and ``group_concurrency``, a limit on the active jobs of each
        ``group`` (a whole number, or ``{"default": n, "tiers": {tier: n}}``). A queue that does not exist is
        a ``QueueNotFoundError`` there, as in pg-boss 12.
        """
        return await self._run(
            lambda o: o.fetch(
                name,
                batch_size,
                priority,
                include_metadata,
                ignore_start_after,
                min_priority=min_priority,
                max_priority=max_priority,
                group_concurrency=group_concurrency,
            )
        )

    # ----------------------------------------------------------------------------------- state changes

    async def complete(self, name: str, ids: JobIds | Any, output: Any = None, *, include_queued: bool = False) -> int:
        """Complete the given active jobs, storing ``output``; returns how many changed.

        ``output`` is stored as pg-boss stores it: a mapping as is, an exception as ``{name, message,
        stack, ...}``, anything else as ``{"value": ...}``. Does not commit; locks the changed rows.

        On version 46, ``ids`` may be the fetched ``Job`` objects instead: then only the attempts fetched are
        completed (a job expired and fetched again since is left alone), as pg-boss 12's workers do; and
        ``include_queued=True`` completes queued and blocked jobs too.
        """
        return await self._run(lambda o: o.complete(name, ids, output, include_queued))

    async def fail(self, name: str, ids: JobIds, output: Any = None) -> int:
        """Fail the given created, retry or active jobs; returns how many changed.

        Each goes to ``retry`` (with its delay and backoff) while it has retries left, else to
        ``failed``, with a copy sent to its dead letter queue. An exception is stored as ``{name,
        message, stack, ...}``. Does not commit; locks the changed rows.
        """
        return await self._run(lambda o: o.fail(name, ids, output))

    async def cancel(self, name: str, ids: JobIds) -> int:
        """Cancel the given created, retry or active jobs; returns how many. Does not commit; locks them."""
        return await self._run(lambda o: o.cancel(name, ids))

    async def resume(self, name: str, ids: JobIds) -> int:
        """Return the given cancelled jobs to ``created``; returns how many. Does not commit; locks them.

        Raises:
            JobConflictError: a job's policy or throttling slot was taken meanwhile; nothing changed.
        """
        return await self._run(lambda o: o.resume(name, ids))

    async def retry(self, name: str, ids: JobIds) -> int:
        """Give the given failed jobs one more try (state ``retry``); returns how many.

        Does not commit; locks the changed rows.
        """
        return await self._run(lambda o: o.retry(name, ids))

    async def delete_job(self, name: str, ids: JobIds) -> int:
        """Delete the given jobs in any state, without archiving; returns how many.

        Does not commit; locks the deleted rows until your transaction ends.
        """
        return await self._run(lambda o: o.delete_job(name, ids))

    async def get_job_by_id(
        self, name: str, id: uuid.UUID | str, include_archive: bool = False
    ) -> Job | Archive | None:
        """The job as an ORM object (an ``Archive`` if found only there), or ``None``.

        Does not commit; takes no locks.
        """
        return await self._run(lambda o: o.get_job_by_id(name, id, include_archive))

    # ----------------------------------------------------------------------------------------- pub/sub

    async def publish(self, event: str, data: Any = None, **options: Any) -> list[uuid.UUID]:
        """Send a job to every queue subscribed to ``event``; returns the ids sent.

        Options are :meth:`send`'s, validated once before anything is sent. Does not commit; locks
        nothing but the new rows.
        """
        return await self._run(lambda o: o.publish(event, data, options))

    async def subscribe(self, event: str, name: str) -> None:
        """Subscribe queue ``name`` to ``event`` (again: refreshes ``updated_on``).

        Does not commit; locks the subscription row.

        Raises:
            QueueNotFoundError: the queue does not exist.
        """
        return await self._run(lambda o: o.subscribe(event, name))

    async def unsubscribe(self, event: str, name: str) -> bool:
        """Remove the subscription; ``False`` if there was none. Does not commit; locks that row."""
        return await self._run(lambda o: o.unsubscribe(event, name))

    # --------------------------------------------------------------------------------------- schedules

    async def schedule(self, name: str, cron: str, data: Any = None, *, tz: str | None = None, **options: Any) -> None:
        """Store (or replace) the queue's cron schedule; workers fire it.

        Does not commit; locks the schedule row.

        The cron expression and the time zone (default UTC) are checked now; pg-boss only finds a bad
        time zone when its cron pass fails. ``options`` are :meth:`send`'s, stored in pg-boss's camelCase.

        Raises:
            InvalidCronError, InvalidTimezoneError, QueueNotFoundError.
        """
        return await self._run(lambda o: o.schedule(name, cron, data, tz, options))

    async def unschedule(self, name: str, key: str | None = None) -> bool:
        """Delete the queue's schedule (on version 46 the one of ``key``, default ``''``); ``False`` if there was
        none. Does not commit; locks that row."""
        return await self._run(
            lambda o: o.unschedule(name) if key is None and o.version == 24 else o.unschedule(name, key or "")
        )

    async def get_schedules(self, name: str | None = None, key: str | None = None) -> list[Any]:
        """Every schedule as an ORM object (version 46: of queue ``name`` and ``key`` when given, by name and
        key). Does not commit; takes no locks."""
        return await self._run(lambda o: o.get_schedules(name, key))

    async def get_schedule(self, name: str, key: str = "") -> Any:
        """Version 46: the schedule of ``name`` and ``key``, or ``None``. Does not commit; takes no locks."""
        return await self._run(lambda o: o.get_schedule(name, key))

    # ---------------------------------------------------------------------- pg-boss 12 (version 46) alone

    async def touch(self, name: str, ids: JobIds | Any) -> int:
        """Refresh the heartbeat (``heartbeat_on``) of the given active jobs; returns how many. ``ids`` may be
        the fetched ``Job`` objects (only those attempts). Does not commit; locks the changed rows.

        Raises:
            UnsupportedOperationError: on version 24.
        """
        return await self._run(lambda o: o.touch(name, ids))

    async def delete_queued_jobs(self, name: str) -> int:
        """Delete the queue's created and retry jobs; returns how many. Does not commit; locks those rows.

        Raises:
            UnsupportedOperationError: on version 24 (there: :meth:`purge_queue`).
        """
        return await self._run(lambda o: o.delete_queued_jobs(name))

    async def delete_stored_jobs(self, name: str) -> int:
        """Delete the queue's completed, cancelled and failed jobs; returns how many. Does not commit; locks
        those rows.

        Raises:
            UnsupportedOperationError: on version 24.
        """
        return await self._run(lambda o: o.delete_stored_jobs(name))

    async def delete_all_jobs(self, name: str | None = None) -> int:
        """Delete every job of the queue, or of every queue when ``name`` is ``None`` (which also zeroes every
        queue's cached counts, as pg-boss 12 does); returns how many. pg-boss truncates tables where sqla_boss
        deletes rows, so your transaction keeps its own writes. Does not commit; locks the deleted rows.

        Raises:
            UnsupportedOperationError: on version 24.
        """
        return await self._run(lambda o: o.delete_all_jobs(name))

    async def get_queue_stats(self, name: str) -> Any:
        """The queue's jobs right now by state, as pg-boss 12's monitor counts them: a ``QueueStats`` with
        ``deferred``, ``blocked``, ``queued``, ``ready``, ``active``, ``completed``, ``cancelled``,
        ``failed``, ``total`` and ``ready_oldest_seconds``. Counted live (pg-boss returns its cached counts).
        Does not commit; takes no locks.

        Raises:
            QueueNotFoundError: the queue does not exist.
            UnsupportedOperationError: on version 24 (there: :meth:`get_queue_size`).
        """
        return await self._run(lambda o: o.get_queue_stats(name))

    async def find_jobs(
        self,
        name: str,
        *,
        id: uuid.UUID | str | None = None,
        key: str | None = None,
        data: Any = None,
        queued: bool = False,
        limit: int = 1000,
        after: uuid.UUID | str | None = None,
    ) -> list[Any]:
        """The queue's jobs as ORM objects, oldest first (by ``created_on``, then id), at most ``limit``
        (1-100,000): with this ``id``, this ``singleton_key``, data containing ``data`` (JSON containment),
        only queued ones, or after the job ``after``. Does not commit; takes no locks.

        Raises:
            InvalidOptionError: ``after`` names no job of the queue.
            UnsupportedOperationError: on version 24.
        """
        return await self._run(
            lambda o: o.find_jobs(name, id=id, key=key, data=data, queued=queued, limit=limit, after=after)
        )

    # ------------------------------------- pg-boss 12 (version 46): update, upsert, flows and redrive

    async def update(self, name: str, data: Any = KEEP, **options: Any) -> UpdateResult:
        """Change queued jobs (``created`` or ``retry``) in place, as pg-boss 12's ``update()``; returns an
        ``UpdateResult`` with their ids and how many changed (``inserted`` is 0).

        Target exactly one of ``id=`` (that job) or ``singleton_key=`` (with ``match=``: ``"newest"``, the
        default, ``"oldest"`` or ``"all"`` of the key's queued jobs, by ``created_on``). Only what you pass
        changes: ``data`` (not passing it keeps the job's; ``None`` stores JSON ``null``, as pg-boss does),
        ``priority``, ``start_after`` (here 0 or a negative number means now, or that long ago), ``retention_seconds``
        (``keep_until`` becomes the new start plus it; a new ``start_after`` alone slides ``keep_until`` with
        it), ``expire_in_seconds``, ``delete_after_seconds``, ``retry_limit``, ``retry_delay``, ``retry_backoff``,
        ``retry_delay_max``, ``dead_letter``, ``heartbeat_seconds``, ``group`` (``{"id", "tier"}``: each given
        part). ``None`` keeps a setting, except ``retry_delay_max``, ``heartbeat_seconds`` and ``dead_letter``,
        which it clears. A job's id, state, key, throttling slot and policy never change.

        Runs in your transaction and does not commit; takes no advisory lock, locks the rows it changes.

        Raises:
            InvalidOptionError: a bad or unknown option, both or neither of ``id`` and ``singleton_key``.
            QueueNotFoundError, DeadLetterQueueNotFoundError: nothing was changed.
            UnsupportedOperationError: on version 24.
        """
        return await self._run(lambda o: o.update(name, data, options))

    async def upsert(self, name: str, data: Any = KEEP, **options: Any) -> UpdateResult:
        """:meth:`update`, or, when no queued job matches, insert one (pg-boss 12's ``upsert()``); returns an
        ``UpdateResult`` where exactly one of ``updated`` and ``inserted`` is 1 or more, unless the target exists
        but is no longer queued (then both are 0).

        Options are :meth:`update`'s, plus ``trace_context`` for a job it inserts. A job inserted for a
        ``singleton_key`` is marked ``upsert_by_key``, so concurrent upserts of one key end with one job: the
        later one waits for the earlier to commit, then updates its job. On a key_strict_fifo queue a
        ``singleton_key`` is required even to target an ``id``. Runs in your transaction and does not commit;
        takes no advisory lock, locks the rows it changes or inserts.

        Raises:
            as :meth:`update`.
        """
        return await self._run(lambda o: o.upsert(name, data, options))

    async def flow(self, jobs: Sequence[Mapping[str, Any]]) -> dict[str, uuid.UUID]:
        """Send jobs that wait for each other (pg-boss 12's ``flow()``); returns each job's id by its ``ref``.

        Each job is a mapping: ``ref`` (unique in the flow), ``name`` (its queue), ``data``, ``options``
        (:meth:`send`'s, but ``singleton_next_slot``; ``options["id"]`` sets its id) and ``depends_on`` (the
        refs it waits for). At least two jobs, at least one dependency, no cycle. A job with dependencies is
        ``blocked`` (never fetched) until every one of them has completed and a flow resolver has run
        (:meth:`resolve_flow`, or a supervising Node pg-boss 12); a parent that fails or is deleted never
        releases it. All or nothing: one conflict (an id, a policy, a throttling slot) and no job is sent.

        Runs in your transaction and does not commit; takes no advisory lock.

        Raises:
            InvalidOptionError: a bad flow (the reason, such as ``flow contains a dependency cycle: a -> b -> a``).
            QueueNotFoundError, DeadLetterQueueNotFoundError: nothing was sent.
            JobConflictError: a job conflicted; nothing was sent and your transaction is still usable.
            UnsupportedOperationError: on version 24.
        """
        return await self._run(lambda o: o.flow(jobs))

    async def get_dependencies(
        self, name: str, id: uuid.UUID | str, *, limit: int = 1000, after: JobRef | Any = None
    ) -> list[JobRef]:
        """The jobs the job waits for in its flow, as ``JobRef(name, id)``, ordered by (name, id), at most ``limit``
        (1-100,000), after ``after`` (a ``JobRef``, a ``(name, id)`` pair or ``{"name", "id"}``: the last of the
        previous page). Does not commit; takes no locks.

        Raises:
            UnsupportedOperationError: on version 24.
        """
        return await self._run(lambda o: o.get_dependencies(name, id, limit, after))

    async def get_dependents(
        self, name: str, id: uuid.UUID | str, *, limit: int = 1000, after: JobRef | Any = None
    ) -> list[JobRef]:
        """The jobs that wait for the job in its flow, as :meth:`get_dependencies` lists them. Does not commit;
        takes no locks.

        Raises:
            UnsupportedOperationError: on version 24.
        """
        return await self._run(lambda o: o.get_dependents(name, id, limit, after))

    async def resolve_flow(self) -> int:
        """Release flow jobs whose parents have completed: one pass of pg-boss 12's flow resolver (its
        ``resolveFlow()``), over every queue; returns how many completed parents it resolved.

        Each resolved parent's children have its count taken off ``pending_dependencies``; a child at 0 is
        unblocked, its ``start_after`` moved up to now if it was earlier. Flows sent by Node or by sqla_boss
        alike. A Node pg-boss 12 with ``supervise: true`` does this every ``flowIntervalSeconds``; without one,
        call this (say, after completing parents). pg-boss takes no advisory lock for it, and neither does
        this: the parents are locked ``FOR UPDATE SKIP LOCKED`` (a concurrent resolver takes the others), the
        children ``FOR UPDATE``. Runs in your transaction and does not commit.

        Raises:
            UnsupportedOperationError: on version 24.
        """
        return await self._run(lambda o: o.resolve_flow())

    async def redrive(
        self,
        name: str,
        *,
        source_name: str | None = None,
        data: Mapping[str, Any] | None = None,
        created_before: dt.datetime | None = None,
        ids: Sequence[uuid.UUID | str] | None = None,
        destination: str | None = None,
        limit: int = 1000,
    ) -> int:
        """Move queued jobs out of the dead letter queue ``name`` back to work (pg-boss 12's ``redrive()``);
        returns how many moved.

        Takes up to ``limit`` of its created and retry jobs, oldest first, that came from ``source_name``,
        whose data contains ``data``, that were created before ``created_before`` (an aware ``datetime``) and
        are among ``ids`` (each filter when given), and makes each a new job (a new id, ``created``, no retries
        used) in ``destination``, or else the queue it came from, with that queue's settings as they are now;
        ``data``, priority, key, group and trace context are kept, ``source_root_id`` names the first job of the
        chain. The dead letter row is deleted. A job whose destination refuses it (its policy) is failed where
        it is, with an output ``{"reason": "redrive_conflict", "message", "destination", "policy",
        "singletonKey"}``; a job with no destination (or whose queue is gone) is left alone.

        Runs in your transaction and does not commit; takes no advisory lock: it locks the jobs it takes
        ``FOR UPDATE SKIP LOCKED``, so concurrent redrives share the work.

        Raises:
            InvalidOptionError: a bad filter or limit.
            UnsupportedOperationError: on version 24.
        """
        filters = {"source_name": source_name, "data": data, "created_before": created_before, "ids": ids}
        return await self._run(lambda o: o.redrive(name, **filters, destination=destination, limit=limit))

    async def preview_redrive(
        self,
        name: str,
        *,
        source_name: str | None = None,
        data: Mapping[str, Any] | None = None,
        created_before: dt.datetime | None = None,
        ids: Sequence[uuid.UUID | str] | None = None,
        destination: str | None = None,
        limit: int = 1000,
    ) -> RedrivePreview:
        """What :meth:`redrive` with these filters would do, without doing it (pg-boss 12's
        ``previewRedrive()``): a ``RedrivePreview`` with ``total`` (the matching jobs read), ``destinations``
        (queue name to count, most first) and ``unroutable`` (those it would leave). Reads at most ``limit``
        (1-100,000) jobs of each kind. Does not commit; takes no locks.

        Raises:
            InvalidOptionError: a bad filter or limit.
            UnsupportedOperationError: on version 24.
        """
        filters = {"source_name": source_name, "data": data, "created_before": created_before, "ids": ids}
        return await self._run(lambda o: o.preview_redrive(name, **filters, destination=destination, limit=limit))
