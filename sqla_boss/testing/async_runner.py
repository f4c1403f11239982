"""Running queued jobs inside a test's own transaction, on an ``AsyncSession``: :func:`async_run_jobs` and
:func:`async_drain`.

They do what a worker does, by the same rules, but one batch after another in the session you give them:
fetch (in a savepoint, ``FOR UPDATE SKIP LOCKED``), call the handler, then complete the jobs with pg-boss's
output rule or fail them with the handler's exception (retry and dead-letter rules apply), through the same
functions the workers use (:func:`sqla_boss.handling.settle`,
:func:`sqla_boss.async_worker.handle_in_transaction`). Nothing is committed: the test's rollback takes it all
back.

What differs from a worker, on purpose:

* the handler runs in the caller's thread, while the test's transaction is open (on asyncio: a coroutine
  handler is awaited, and a plain one is called in the event loop's thread, not in a worker thread); a
  handler that opens connections of its own and touches rows the test's transaction holds (the fetched
  jobs, say) waits for it forever: give such handlers the test's session (``transactional=True``);
* handler timeouts (``expire_in``) are not enforced: a handler runs as long as it runs;
* an exception that is no ``Exception`` (``KeyboardInterrupt``, ``pytest.fail``'s) is not recorded on the
  jobs: it propagates, and the jobs stay ``active`` in the test's transaction;
* the handler gets the session's own ``Job`` objects, not detached copies, and a job object the test holds
  shows its new state after the run.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sqla_boss.async_driver import AsyncDriver
from sqla_boss.async_worker import AsyncWorker, handle_in_transaction
from sqla_boss.binding import bind_session, schema_of
from sqla_boss.errors import QueueNotFoundError
from sqla_boss.flavours import ASYNC
from sqla_boss.handling import Completion, settle
from sqla_boss.models import Job
from sqla_boss.operations import Operations, operations_for
from sqla_boss.options.workers import Registration
from sqla_boss.schema import REPOSITORY_VERSIONS
from sqla_boss.testing.runs import (
    Handler,
    RunResult,
    checked_limit,
    not_found,
    of_mapping,
    of_worker,
    registration,
    selected,
)


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
    """Run the jobs of ``queue`` with ``handler`` until none can be fetched (or ``limit`` jobs ran), as a
    :class:`~sqla_boss.AsyncWorker` registered with these options would, inside ``session``'s transaction.

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
        SchemaMismatchError: the session serves another schema.
        the error SQLAlchemy raises, when a statement fails (roll back then).
    """
    run = registration(queue, handler, batch_size, transactional, include_metadata)
    name = schema if schema is not None else await _schema_of(session)
    runner = _AsyncRunner(session, name, {})
    operations = await runner.prepare()
    if await runner.driver.run(session, operations.get_queue(run.name)) is None:
        raise not_found(run.name, name)
    return await runner.run([run], ignore_start_after, checked_limit(limit))


async def async_drain(
    session: AsyncSession,
    worker: AsyncWorker | Mapping[str, Handler],
    *,
    queues: Sequence[str] | None = None,
    schema: str | None = None,
    ignore_start_after: bool = False,
    limit: int | None = None,
) -> RunResult:
    """Run the jobs of every queue ``worker`` has handlers for until none of them has a job left to fetch (or
    ``limit`` jobs ran), inside ``session``'s transaction: :func:`async_run_jobs` for several queues at once.

    ``worker`` is an :class:`~sqla_boss.AsyncWorker`, whose registrations are used as they are (handler, batch
    size, ``include_metadata``, transactional mode, job defaults and schema; it need not be started, and is
    not), or a mapping ``{queue: handler}`` (one job per batch, pg-boss's completion mode). Each round
    runs one batch per registration, so jobs that handlers send to other queues run too. ``queues`` keeps
    only those queues' handlers; queues that do not exist are passed over, as a worker's loop polls them in
    vain. ``ignore_start_after`` and ``limit`` as in :func:`async_run_jobs`; ``schema`` (mappings only; a
    worker has its own) defaults to the one the session serves.

    Runs in your transaction and does not commit; locks what :func:`async_run_jobs` locks.

    Raises:
        InvalidOptionError: a queue in ``queues`` without a handler, no handler at all, a ``schema`` other
            than the worker's, or bad options; nothing ran.
        SchemaMismatchError: the session serves another schema than the worker.
    """
    if isinstance(worker, AsyncWorker):
        registrations, name, defaults = of_worker(worker.schema, worker._registrations, schema, worker.settings)
    else:
        registrations, defaults = of_mapping(worker, "async_drain"), {}
        name = schema if schema is not None else await _schema_of(session)
    runner = _AsyncRunner(session, name, defaults)
    await runner.prepare()
    return await runner.run(selected(registrations, queues), ignore_start_after, checked_limit(limit))


class _AsyncRunner:
    """One run's loop: a batch per registration per round, until a round finds nothing."""

    def __init__(self, session: AsyncSession, schema: str, defaults: Mapping[str, Any]) -> None:
        self.session = session
        self.schema = schema
        self.defaults = defaults
        self.operations: Operations = operations_for(schema, defaults)
        self.driver = AsyncDriver(schema, runs=REPOSITORY_VERSIONS)
        self.result = RunResult()
        bind_session(session, schema, orm=False)  # refuses a session that serves another schema

    async def prepare(self) -> Operations:
        """The operations of the schema's version (24 or 46), read once per connection pool."""
        version = await self.driver.version(self.session)
        self.operations = operations_for(self.schema, self.defaults, version)
        return self.operations

    async def run(
        self, registrations: Sequence[Registration], ignore_start_after: bool, limit: int | None
    ) -> RunResult:
        while True:  # rounds: one batch per registration, until a round finds nothing
            found = False
            for run in registrations:
                size = self.result.batch_size(run, limit)
                if size == 0:
                    return self.result
                fetch = self.operations.fetch(run.name, size, True, run.include_metadata, ignore_start_after)
                try:
                    jobs = await self.driver.run(self.session, fetch)
                except QueueNotFoundError:  # version 46 says so; a worker's loop polls such a queue in vain
                    jobs = []
                if jobs:
                    found = True
                    await self._handle(run, jobs)
            if not found:
                return self.result

    async def _handle(self, run: Registration, jobs: list[Job]) -> None:
        name, ids = run.name, [job.id for job in jobs]
        if run.transactional:
            error = await handle_in_transaction(
                self.driver, self.session, self.operations, name, jobs, run.handler, _call
            )
            completion = Completion(ids, None) if error is None else Completion(ids, error, failed=True)
        else:
            try:
                completion = settle(jobs, await _call(run.handler, jobs))
            except Exception as error:
                completion = settle(jobs, error=error)
            if completion.failed:
                await self.driver.run(self.session, self.operations.fail(name, ids, completion.output))
            else:
                await self.driver.run(self.session, self.operations.complete(name, ids, completion.output))
        states = (
            {} if not completion.failed else await self.driver.run(self.session, self.operations.job_states(name, ids))
        )
        self.result.record(name, completion, states)


async def _call(handler: Handler, *args: Any) -> Any:
    """Call ``handler`` in the caller's thread (on asyncio, awaiting what it returns if that is awaitable)."""
    result = handler(*args)
    if ASYNC:
        return await result if inspect.isawaitable(result) else result
    return result


async def _schema_of(session: AsyncSession) -> str:
    if ASYNC:
        return await session.run_sync(schema_of)
    else:
        return schema_of(session)


__all__ = ["Handler", "RunResult", "async_drain", "async_run_jobs"]
