"""Running queued jobs inside a test's own transaction: :func:`run_jobs`, :func:`drain` and their async twins.

They do what a worker does, by the same rules, but synchronously and in the session you give them: fetch
through ``Boss.fetch`` (a savepoint, ``FOR UPDATE SKIP LOCKED``), call the handler, then complete the jobs
with pg-boss's output rule or fail them with the handler's exception (retry and dead-letter rules apply),
through the same functions the workers use (:func:`sqla_boss.handling.settle`,
:func:`sqla_boss.worker.handle_in_transaction`). Nothing is committed: the test's rollback takes it all back.

What differs from a worker, on purpose:

* the handler runs in the caller's thread (or event loop), while the test's transaction is open; a handler
  that opens connections of its own and touches rows the test's transaction holds (the fetched jobs, say)
  waits for it forever: give such handlers the test's session (``transactional=True``);
* handler timeouts (``expire_in``) are not enforced: a handler runs as long as it runs;
* an exception that is no ``Exception`` (``KeyboardInterrupt``, ``pytest.fail``'s) is not recorded on the
  jobs: it propagates, and the jobs stay ``active`` in the test's transaction;
* the handler gets the session's own ``Job`` objects, not detached copies, and a job object the test holds
  shows its new state after the run.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from sqla_boss.async_boss import AsyncBoss
from sqla_boss.async_worker import AsyncWorker
from sqla_boss.async_worker import handle_in_transaction as async_handle_in_transaction
from sqla_boss.binding import schema_of
from sqla_boss.boss import Boss
from sqla_boss.errors import InvalidOptionError, QueueNotFoundError
from sqla_boss.handling import Completion, Registration, WorkerSettings, adjust, log_failure, settle, whole_number
from sqla_boss.models import Job, JobState
from sqla_boss.schema import schema_translate_map
from sqla_boss.worker import Worker, handle_in_transaction

Handler = Callable[..., Any]
"""``handler(jobs)``, or ``handler(jobs, session)`` with ``transactional=True``; ``jobs`` is a list."""


@dataclass
class RunResult:
    """What a run did, by job id. A job that failed and was retried within the run appears in ``retried``
    once per retry, then in ``completed`` or ``failed``.

    ``assert result.counts == {"completed": 2, "failed": 0, "retried": 0}`` checks it all at once.
    """

    completed: list[uuid.UUID] = field(default_factory=list)
    """Jobs completed."""
    failed: list[uuid.UUID] = field(default_factory=list)
    """Jobs failed for good (state ``failed``; a copy went to their dead letter queue, if they have one)."""
    retried: list[uuid.UUID] = field(default_factory=list)
    """Failures that left the job in state ``retry``, to run again by its retry rules."""
    errors: dict[uuid.UUID, Any] = field(default_factory=dict)
    """The last error each failed or retried job was failed with (the handler's exception, or the
    ``PayloadError`` of an output that cannot be stored)."""

    @property
    def counts(self) -> dict[str, int]:
        """``{"completed": ..., "failed": ..., "retried": ...}``."""
        return {"completed": len(self.completed), "failed": len(self.failed), "retried": len(self.retried)}


def run_jobs(
    session: Session,
    queue: str,
    handler: Handler,
    *,
    schema: str | None = None,
    batch_size: int = 1,
    transactional: bool = False,
    include_metadata: bool = False,
    ignore_start_after: bool = False,
    limit: int | None = None,
) -> RunResult:
    """Run the jobs of ``queue`` with ``handler`` until none can be fetched (or ``limit`` jobs ran), as a
    :class:`~sqla_boss.Worker` registered with these options would, inside ``session``'s transaction.

    Each batch of up to ``batch_size`` jobs is fetched (by priority, then age), handed to ``handler(jobs)``,
    then completed, with the handler's return value as output when the batch holds one job, or failed with
    the exception it raised. ``transactional=True`` calls ``handler(jobs, session)`` in a savepoint that rolls
    back if it raises, as the worker's transactional mode does. A failed job whose retry is due at once
    (``retry_delay`` 0, pg-boss's default) runs again in the same call, until its retries are used up.

    ``ignore_start_after=False`` (default) runs only jobs that are due, as a worker fetching now would:
    jobs sent with a later ``start_after``, and retries waiting out a ``retry_delay``, stay queued (the
    retries are counted in :attr:`RunResult.retried`). ``True`` runs them too, as if their time had come.
    ``limit``: at most this many job runs (a retry runs a job again, and counts again). ``schema``: the
    pg-boss schema; by default the one the session serves. Handler timeouts are not enforced (see the
    module documentation).

    Runs in your transaction and does not commit; locks the jobs it fetches (``FOR UPDATE SKIP LOCKED``) and
    what the handler locks, until your transaction ends.

    Raises:
        InvalidOptionError, InvalidQueueNameError: bad options; nothing ran.
        QueueNotFoundError: there is no such queue (a typo would otherwise run nothing, silently).
        the error SQLAlchemy raises, when a statement fails (roll back then).
    """
    registration = _registration(queue, handler, batch_size, transactional, include_metadata)
    name = schema_of(session) if schema is None else schema
    boss = Boss(session, name)
    if boss.get_queue(registration.name) is None:
        raise _not_found(registration.name, name)
    return _Runner(session, boss, name).run([registration], ignore_start_after, _limit(limit))


def drain(
    session: Session,
    worker: Worker | Mapping[str, Handler],
    *,
    queues: Sequence[str] | None = None,
    schema: str | None = None,
    ignore_start_after: bool = False,
    limit: int | None = None,
) -> RunResult:
    """Run the jobs of every queue ``worker`` has handlers for until none of them has a job left to fetch (or
    ``limit`` jobs ran), inside ``session``'s transaction: :func:`run_jobs` for several queues at once.

    ``worker`` is a :class:`~sqla_boss.Worker`, whose registrations are used as they are (handler, batch
    size, ``include_metadata``, transactional mode, job defaults and schema; it need not be started, and is
    not), or a mapping ``{queue: handler}`` (one job per batch, pg-boss's completion mode). Each round
    runs one batch per registration, so jobs that handlers send to other queues run too. ``queues`` keeps
    only those queues' handlers; queues that do not exist are passed over, as a worker's loop polls them in
    vain. ``ignore_start_after`` and ``limit`` as in :func:`run_jobs`; ``schema`` (mappings only; a worker
    has its own) defaults to the one the session serves.

    Runs in your transaction and does not commit; locks what :func:`run_jobs` locks.

    Raises:
        InvalidOptionError: a queue in ``queues`` without a handler, no handler at all, a ``schema`` other
            than the worker's, or bad options; nothing ran.
        SchemaMismatchError: the session serves another schema than the worker.
    """
    if isinstance(worker, Worker):
        registrations, name, defaults = _of_worker(worker.schema, worker._registrations, schema, worker.settings)
    else:
        registrations, defaults = _of_mapping(worker, "a Worker (async_drain takes an AsyncWorker)"), {}
        name = schema if schema is not None else schema_of(session)
    registrations = _selected(registrations, queues)
    runner = _Runner(session, Boss(session, name, **defaults), name)
    return runner.run(registrations, ignore_start_after, _limit(limit))


async def async_run_jobs(
    session: AsyncSession,
    queue: str,
    handler: Handler,
    *,
    schema: str | None = None,
    batch_size: int = 1,
    transactional: bool = False,
    include_metadata: bool = False,
    ignore_start_after: bool = False,
    limit: int | None = None,
) -> RunResult:
    """:func:`run_jobs` on an ``AsyncSession``, through :class:`~sqla_boss.AsyncBoss`. A coroutine handler is
    awaited; a plain one is called, in the event loop's thread (an awaitable it returns is awaited);
    ``transactional=True`` passes the ``AsyncSession``.

    Runs in your transaction and does not commit; locks what :func:`run_jobs` locks.
    """
    registration = _registration(queue, handler, batch_size, transactional, include_metadata)
    name = await session.run_sync(schema_of) if schema is None else schema
    boss = AsyncBoss(session, name)
    if await boss.get_queue(registration.name) is None:
        raise _not_found(registration.name, name)
    return await _AsyncRunner(session, boss, name).run([registration], ignore_start_after, _limit(limit))


async def async_drain(
    session: AsyncSession,
    worker: AsyncWorker | Mapping[str, Handler],
    *,
    queues: Sequence[str] | None = None,
    schema: str | None = None,
    ignore_start_after: bool = False,
    limit: int | None = None,
) -> RunResult:
    """:func:`drain` on an ``AsyncSession``, with an :class:`~sqla_boss.AsyncWorker`'s registrations or a
    mapping ``{queue: handler}``; handlers are called as :func:`async_run_jobs` calls them.

    Runs in your transaction and does not commit; locks what :func:`run_jobs` locks.
    """
    if isinstance(worker, AsyncWorker):
        registrations, name, defaults = _of_worker(worker.schema, worker._registrations, schema, worker.settings)
    else:
        registrations, defaults = _of_mapping(worker, "an AsyncWorker (drain takes a Worker)"), {}
        name = schema if schema is not None else await session.run_sync(schema_of)
    registrations = _selected(registrations, queues)
    runner = _AsyncRunner(session, AsyncBoss(session, name, **defaults), name)
    return await runner.run(registrations, ignore_start_after, _limit(limit))


# --------------------------------------------------------------------------------------------- the runs


@dataclass
class _Runner:
    session: Session
    boss: Boss
    schema: str
    result: RunResult = field(default_factory=RunResult)

    def run(self, registrations: Sequence[Registration], ignore_start_after: bool, limit: int | None) -> RunResult:
        while True:  # rounds: one batch per registration, until a round finds nothing
            found = False
            for registration in registrations:
                size = _batch_size(registration, self.result, limit)
                if size == 0:
                    return self.result
                jobs = self.boss.fetch(
                    registration.name,
                    batch_size=size,
                    include_metadata=registration.include_metadata,
                    ignore_start_after=ignore_start_after,
                )
                if jobs:
                    found = True
                    self._handle(registration, jobs)
            if not found:
                return self.result

    def _handle(self, registration: Registration, jobs: list[Job]) -> None:
        name, ids = registration.name, [job.id for job in jobs]
        if registration.transactional:
            error = handle_in_transaction(self.session, self.boss, name, jobs, registration.handler)
            completion = Completion(ids, None) if error is None else Completion(ids, error, failed=True)
        else:
            try:
                completion = settle(jobs, registration.handler(jobs))
            except Exception as error:
                completion = settle(jobs, error=error)
            if completion.failed:
                self.boss.fail(name, ids, completion.output)
            else:
                self.boss.complete(name, ids, completion.output)
        states = {} if not completion.failed else self._states(name, ids)
        _record(self.result, name, completion, states)

    def _states(self, name: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, JobState]:
        rows = self.session.execute(_states_query(name, ids), execution_options=_translated(self.schema))
        return {job_id: state for job_id, state in rows}


@dataclass
class _AsyncRunner:
    session: AsyncSession
    boss: AsyncBoss
    schema: str
    result: RunResult = field(default_factory=RunResult)

    async def run(
        self, registrations: Sequence[Registration], ignore_start_after: bool, limit: int | None
    ) -> RunResult:
        while True:
            found = False
            for registration in registrations:
                size = _batch_size(registration, self.result, limit)
                if size == 0:
                    return self.result
                jobs = await self.boss.fetch(
                    registration.name,
                    batch_size=size,
                    include_metadata=registration.include_metadata,
                    ignore_start_after=ignore_start_after,
                )
                if jobs:
                    found = True
                    await self._handle(registration, jobs)
            if not found:
                return self.result

    async def _handle(self, registration: Registration, jobs: list[Job]) -> None:
        name, ids = registration.name, [job.id for job in jobs]
        if registration.transactional:
            error = await async_handle_in_transaction(self.session, self.boss, name, jobs, registration.handler, _call)
            completion = Completion(ids, None) if error is None else Completion(ids, error, failed=True)
        else:
            try:
                completion = settle(jobs, await _call(registration.handler, jobs))
            except Exception as error:
                completion = settle(jobs, error=error)
            if completion.failed:
                await self.boss.fail(name, ids, completion.output)
            else:
                await self.boss.complete(name, ids, completion.output)
        states = {} if not completion.failed else await self._states(name, ids)
        _record(self.result, name, completion, states)

    async def _states(self, name: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, JobState]:
        rows = await self.session.execute(_states_query(name, ids), execution_options=_translated(self.schema))
        return {job_id: state for job_id, state in rows}


async def _call(handler: Handler, *args: Any) -> Any:
    """Await a coroutine handler; call a plain one here, in the event loop's thread (awaiting what it returns
    if that is awaitable)."""
    result = handler(*args)
    if inspect.isawaitable(result):
        return await result
    return result


# -------------------------------------------------------------------------------------------- helpers


def _registration(
    queue: str, handler: Handler, batch_size: int, transactional: bool, include_metadata: bool
) -> Registration:
    return Registration.of(
        queue,
        batch_size=batch_size,
        concurrency=1,
        polling_interval_seconds=2.0,
        include_metadata=include_metadata,
        transactional=transactional,
    ).with_handler(handler)


def _of_mapping(handlers: Mapping[str, Handler], worker: str) -> list[Registration]:
    if not isinstance(handlers, Mapping):
        raise InvalidOptionError(f"this drain takes {worker} or a mapping {{queue: handler}}, not {handlers!r}")
    return [_registration(queue, handler, 1, False, False) for queue, handler in handlers.items()]


def _of_worker(
    worker_schema: str, registrations: Iterable[Registration], schema: str | None, settings: WorkerSettings
) -> tuple[list[Registration], str, dict[str, Any]]:
    if schema is not None and schema != worker_schema:
        raise InvalidOptionError(f"the worker serves schema {worker_schema!r}, not {schema!r}")
    return [r for r in registrations if not r.internal], worker_schema, dict(settings.defaults)


def _selected(registrations: list[Registration], queues: Sequence[str] | None) -> list[Registration]:
    if not registrations:
        raise InvalidOptionError("nothing to drain: no handler is registered")
    return adjust(registrations, queues=queues, concurrency=None, transactional=None)


def _not_found(queue: str, schema: str) -> QueueNotFoundError:
    return QueueNotFoundError(f"there is no queue {queue!r} in schema {schema!r} to run jobs of", (queue,))


def _limit(limit: int | None) -> int | None:
    return None if limit is None else whole_number("limit", limit)


def _batch_size(registration: Registration, result: RunResult, limit: int | None) -> int:
    """The next batch's size: the registration's, within what is left of ``limit``."""
    if limit is None:
        return registration.batch_size
    ran = len(result.completed) + len(result.failed) + len(result.retried)
    return max(0, min(registration.batch_size, limit - ran))


def _translated(schema: str) -> dict[str, Any]:
    return {"schema_translate_map": schema_translate_map(schema)}


def _states_query(name: str, ids: list[uuid.UUID]) -> Any:
    return select(Job.id, Job.state).where(Job.name == name, Job.id.in_(ids))


def _record(result: RunResult, name: str, completion: Completion, states: Mapping[uuid.UUID, JobState]) -> None:
    if not completion.failed:
        result.completed.extend(completion.ids)
        return
    log_failure(name, completion.ids, completion.output)
    for job_id in completion.ids:
        result.errors[job_id] = completion.output
        if states.get(job_id) == JobState.retry:
            result.retried.append(job_id)
        else:
            result.failed.append(job_id)


__all__ = ["Handler", "RunResult", "async_drain", "async_run_jobs", "drain", "run_jobs"]
