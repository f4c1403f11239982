"""The repository's operations as sans-IO generators, shared by the sync and async APIs.

Each operation validates its arguments, then yields :class:`Step` objects (a statement to run and how
to read its result) and receives the results back, and finally returns the method's value. It never
touches a connection itself: :class:`sqla_boss.Boss` runs the steps on a ``Session``, and the async API
runs the very same generators on an ``AsyncSession``. So every rule is written once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
import uuid
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn, TypeVar

from sqlalchemy import Executable, Integer, bindparam, func, select
from sqlalchemy.exc import IntegrityError

from sqla_boss import cron as cron_rules
from sqla_boss import models as v24_models
from sqla_boss.errors import (
    DeadLetterQueueNotFoundError,
    InvalidOptionError,
    JobConflictError,
    QueueInUseError,
    QueueNotEmptyError,
    QueueNotFoundError,
    UnsupportedOperationError,
)
from sqla_boss.identifiers import DEFAULT_SCHEMA, validate_schema_name
from sqla_boss.models import Archive, Job, JobState, Queue, QueuePolicy, Schedule
from sqla_boss.options import jobs as job_options
from sqla_boss.options import names, payloads, queues, schedules
from sqla_boss.options.values import integer
from sqla_boss.schema import (
    READ_VERSION,
    SUPPORTED_VERSIONS,
    lock_statements,
    supported_version,
    version_table_exists,
)
from sqla_boss.v24 import statements as v24_statements

if TYPE_CHECKING:  # the room of 46 builds on this module
    from sqla_boss.v46.operations import JobRef, RedrivePreview, UpdateResult

T = TypeVar("T")

ResultKind = Literal["rows", "rowcount", "scalar", "entities"]


@dataclass(frozen=True)
class Step:
    """One statement for the driver to run in the caller's transaction.

    ``result`` says what to send back: ``rows`` (a list of row tuples), ``rowcount``, ``scalar`` (the
    first column of the first row, or ``None``) or ``entities`` (ORM objects, refreshed from the rows).
    With ``savepoint``, the driver runs the statement inside a SAVEPOINT and, on an ``IntegrityError``,
    rolls back to it and throws the error into the operation, so the caller's transaction survives.
    """

    statement: Executable
    params: Mapping[str, Any] = field(default_factory=dict)
    result: ResultKind = "rows"
    savepoint: bool = False


@dataclass(frozen=True)
class Expire:
    """Tell the driver which ORM objects a statement made stale: (model, primary key) pairs.

    The driver expires those present in the session, so they reload on next access; it sends back ``None``.
    """

    keys: tuple[tuple[type[Any], tuple[Any, ...]], ...]
    keep: frozenset[str] = frozenset()
    """Attributes left as they are. Version 46 keeps a job's ``id``, ``name`` and ``retry_count``: the attempt a
    worker holds, which fences its later calls, must not be re-read from a newer attempt (nor, on an
    ``AsyncSession``, need I/O to read)."""

    @classmethod
    def jobs(cls, queue_name: str, ids: Iterable[uuid.UUID]) -> Expire:
        return cls(tuple((Job, (queue_name, job_id)) for job_id in ids))


Operation = Generator[Step | Expire, Any, T]
"""An operation: yields steps, receives their results, returns the method's value."""


def verify_schema(schema: str, runs: tuple[int, ...] = SUPPORTED_VERSIONS) -> Operation[int]:
    """Read the schema's pg-boss version and refuse one not in ``runs`` (:func:`~sqla_boss.schema.
    supported_version`). Its statements cannot fail, so a refusal leaves the caller's transaction usable."""
    exists = yield Step(version_table_exists(schema), {}, "scalar")
    version = None if exists is None else (yield Step(READ_VERSION, {}, "scalar"))
    return supported_version(schema, version, runs)


TERMINATE_BACKEND = select(func.pg_terminate_backend(bindparam("pid", type_=Integer)))


def terminate_backend(pid: int) -> Operation[None]:
    """End another session's backend (a transactional batch's, at its timeout or at a forced stop): its open
    transaction rolls back. Needs the same role as that session, or pg_signal_backend."""
    yield Step(TERMINATE_BACKEND, {"pid": pid}, "scalar")


FETCH_ATTEMPTS = 3
"""How often a fetch that collided with a concurrent activation of the same singleton key is retried."""


def operations_for(schema: str, defaults: Mapping[str, Any], version: int = 24) -> Operations:
    """The :class:`Operations` of ``schema`` at ``version`` (24, or 46: :class:`sqla_boss.v46.operations.
    Operations46`) and ``defaults``, shared: they hold no state, and building them (validating the schema and
    the defaults) on every ``Boss(...)`` showed in the profile of single sends."""
    try:  # types in the key: True == 1 == 1.0 for a dict, not for the validation
        key = (schema, tuple(sorted((name, type(value), value) for name, value in defaults.items())))
        hash(key)
    except TypeError:  # an unhashable default: it will be refused or used once, no need to share
        return _operations_class(version)(schema, defaults)
    return _shared_operations(key, version)


def _operations_class(version: int) -> type[Operations]:
    if version == 46:
        from sqla_boss.v46.operations import Operations46  # the room of 46 builds on this module

        return Operations46
    return Operations


@functools.lru_cache(maxsize=256)
def _shared_operations(key: tuple[str, tuple[tuple[str, type, Any], ...]], version: int) -> Operations:
    schema, defaults = key
    return _operations_class(version)(schema, {name: value for name, _, value in defaults})


class Operations:
    """The operations for one schema and one set of constructor defaults.

    Written for schema version 24: :attr:`sql` is that version's statements. A later version subclasses this
    class with its own statements module (the same names for what runs the same) and overrides the
    operations whose rules differ.
    """

    sql: ClassVar[ModuleType] = v24_statements
    """The statements of the schema version these operations run."""
    models: ClassVar[ModuleType] = v24_models
    """The models of that version (``Job``, ``Queue``, ``Schedule``, ``Subscription``): what ORM results are."""
    version: ClassVar[int] = 24
    """The schema version."""

    def __init__(self, schema: str = DEFAULT_SCHEMA, defaults: Mapping[str, Any] | None = None) -> None:
        self.schema = validate_schema_name(schema)
        self.defaults = job_options.Defaults.from_options(defaults or {})
        self._functions = self.sql.queue_functions(schema)
        self._default_params = {
            "default_retry_limit": self.defaults.retry_limit,
            "default_retry_delay": self.defaults.retry_delay,
            "default_retry_backoff": self.defaults.retry_backoff,
            "default_expire_in_seconds": self.defaults.expire_in_seconds,
            "default_retention": self.defaults.retention,
            "notify_schema": self.schema,
        }

    # ------------------------------------------------------------------------------------------ queues

    def create_queue(self, name: object, options: Mapping[str, Any]) -> Operation[None]:
        queue_name = names.queue_name(name)
        values = queues.queue_options(options, policy_default=QueuePolicy.standard)
        dead_letter = values.get("deadLetter")
        if dead_letter is not None and dead_letter != queue_name:
            found = yield Step(self.sql.QUEUE_EXISTS, {"queue_name": dead_letter}, "scalar")
            if not found:
                raise DeadLetterQueueNotFoundError(
                    f"dead letter queue {dead_letter!r} of queue {queue_name!r} does not exist", (dead_letter,)
                )
        yield Step(self._functions.create, {"queue_name": queue_name, "queue_options": json.dumps(values)}, "rowcount")

    def update_queue(self, name: object, options: Mapping[str, Any]) -> Operation[None]:
        queue_name = names.queue_name(name)
        values = queues.queue_options(options, policy_default=None)
        dead_letter = values.get("deadLetter")
        if dead_letter is not None and dead_letter != queue_name:
            found = yield Step(self.sql.QUEUE_EXISTS, {"queue_name": dead_letter}, "scalar")
            if not found:
                raise DeadLetterQueueNotFoundError(f"dead letter queue {dead_letter!r} does not exist", (dead_letter,))
        params = {
            "queue_name": queue_name,
            "new_policy": values.get("policy"),
            "new_retry_limit": values.get("retryLimit"),
            "new_retry_delay": values.get("retryDelay"),
            "new_retry_backoff": values.get("retryBackoff"),
            "new_expire_seconds": values.get("expireInSeconds"),
            "new_retention_minutes": values.get("retentionMinutes"),
            "new_dead_letter": dead_letter,
        }
        updated = yield Step(self.sql.UPDATE_QUEUE, params, "rows")
        if not updated:
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))
        yield Expire(((self.models.Queue, (queue_name,)),))

    def delete_queue(self, name: object) -> Operation[bool]:
        queue_name = names.queue_name(name)
        found = yield Step(self.sql.QUEUE_EXISTS, {"queue_name": queue_name}, "scalar")
        if not found:
            return False
        rows = yield Step(self.sql.QUEUE_BLOCKERS, {"queue_name": queue_name}, "rows")
        has_jobs, dead_letter_of_queue, dead_letter_of_job = rows[0]
        if has_jobs:
            raise QueueNotEmptyError(
                f"queue {queue_name!r} still holds jobs; purge_queue() or delete_job() them first "
                "(pg-boss's delete_queue cannot drop a partition with jobs in it)"
            )
        if dead_letter_of_queue or dead_letter_of_job:
            whom = "another queue" if dead_letter_of_queue else "jobs of another queue"
            raise QueueInUseError(f"queue {queue_name!r} is the dead letter queue of {whom}")
        # Jobs written and deleted earlier in this transaction leave deferred foreign-key checks pending
        # on the partition, and PostgreSQL refuses to drop a table with pending trigger events: run them now.
        yield Step(self._functions.check_job_constraints_now, {}, "rowcount")
        yield Step(self._functions.delete, {"queue_name": queue_name}, "rowcount")
        if (yield Step(self.sql.ANY_QUEUE, {}, "scalar")):  # with no partition left there is nothing to defer
            yield Step(self._functions.defer_job_constraints, {}, "rowcount")
        yield Expire(((Queue, (queue_name,)), (Schedule, (queue_name,))))
        return True

    def purge_queue(self, name: object) -> Operation[int]:
        queue_name = names.queue_name(name)
        rows = yield Step(self.sql.PURGE_QUEUE, {"queue_name": queue_name}, "rows")
        yield self._expire_jobs(queue_name, (job_id for (job_id,) in rows))
        return len(rows)

    def get_queue(self, name: object) -> Operation[Queue | None]:
        queues: list[Queue] = yield Step(self.sql.GET_QUEUE, {"queue_name": names.queue_name(name)}, "entities")
        return queues[0] if queues else None

    def get_queues(
        self, queue_names: Iterable[object] | None = None, limit: object = None, after: object = None
    ) -> Operation[list[Queue]]:
        if (queue_names, limit, after) != (None, None, None):
            _version_46_only("get_queues by names, limit or after")
        queues: list[Queue] = yield Step(self.sql.GET_QUEUES, {}, "entities")
        return queues

    def get_blocked_keys(self, name: object, limit: object = 1000, after: object = None) -> Operation[list[str]]:
        _version_46_only("get_blocked_keys")
        yield  # pragma: no cover

    def get_queue_size(self, name: object, before: object) -> Operation[int]:
        state = queues.job_state(before, what="state for before")
        count = yield Step(self.sql.QUEUE_SIZE, {"queue_name": names.queue_name(name), "before": state}, "scalar")
        return int(count or 0)

    def missing_queues(self, queue_names: Iterable[object]) -> Operation[list[str]]:
        """Which of ``queue_names`` are no queue of the schema, in their order."""
        wanted = [names.queue_name(name) for name in queue_names]
        if not wanted:
            return []
        rows = yield Step(self.sql.EXISTING_QUEUES, {"queue_names": wanted}, "rows")
        found = {name for (name,) in rows}
        return [name for name in wanted if name not in found]

    # ----------------------------------------------------------------------------------------- sending

    def send(self, name: object, data: Any, options: Mapping[str, Any]) -> Operation[uuid.UUID | None]:
        job, next_slot = self._send_input(name, data, options)
        ids, now = yield from self._insert([job])
        if ids or not next_slot or job.singleton_seconds is None:
            return ids[0] if ids else None
        # Debounce (§4.4): the slot is taken, so try the next one, starting when it starts.
        seconds = job.singleton_seconds
        elapsed = math.floor(now - math.floor(now / seconds) * seconds)
        delay = (seconds - elapsed) or 1
        if seconds > 1:
            delay += 1
        retry = dataclasses.replace(job, start_after=str(delay), singleton_offset=seconds)
        ids, _ = yield from self._insert([retry])
        return ids[0] if ids else None

    def insert(self, jobs: Iterable[Mapping[str, Any]]) -> Operation[list[uuid.UUID]]:
        if isinstance(jobs, (str, bytes, Mapping)) or not isinstance(jobs, Iterable):
            raise InvalidOptionError(f"insert() takes a list of jobs (mappings), not {type(jobs).__name__}")
        records = [self._insert_record(job) for job in jobs]
        if not records:
            return []
        ids, _ = yield from self._insert_records(records)
        return ids

    def _send_input(self, name: object, data: Any, options: Mapping[str, Any]) -> tuple[Any, bool]:
        """A send's validated job (the version's ``JobInput``) and whether it debounces."""
        return job_options.send_input(name, data, options)

    def _insert_record(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return job_options.insert_record(job)

    def _insert_params(self) -> Mapping[str, Any]:
        return self._default_params

    def _expire_jobs(self, queue_name: str, ids: Iterable[uuid.UUID], *, deleted: bool = False) -> Expire:
        """Expire the jobs' objects in the session (whole: a deleted job's too, so ``session.get`` finds it gone)."""
        return Expire(tuple((self.models.Job, (queue_name, job_id)) for job_id in ids))

    def _insert(self, jobs: list[Any]) -> Generator[Step, Any, tuple[list[uuid.UUID], float]]:
        return (yield from self._insert_records([job.record() for job in jobs]))

    def _insert_records(self, records: list[dict[str, Any]]) -> Generator[Step, Any, tuple[list[uuid.UUID], float]]:
        # Each job's data passed check_structure (send_input, insert_record); the list and records are ours.
        payload = payloads.json_text(records, what="job data", structure_checked=True)
        rows = yield Step(self.sql.INSERT_JOBS, {"jobs": payload, **self._insert_params()}, "rows")
        ids: list[uuid.UUID] = []
        missing: dict[str, list[str]] = {"queue": [], "dead_letter": [], "key_required": []}
        now = 0.0
        for kind, value, job_id in rows:
            if kind == "id":
                ids.append(job_id)
            elif kind == "now":
                now = float(value)
            elif kind != "notified":
                missing[kind].append(value)
        if missing["queue"]:
            names = tuple(sorted(set(missing["queue"])))
            raise QueueNotFoundError(f"queue {', '.join(map(repr, names))} does not exist; nothing was sent", names)
        if missing["dead_letter"]:
            names = tuple(sorted(set(missing["dead_letter"])))
            raise DeadLetterQueueNotFoundError(
                f"dead letter queue {', '.join(map(repr, names))} does not exist; nothing was sent", names
            )
        if missing["key_required"]:
            names = tuple(sorted(set(missing["key_required"])))
            raise InvalidOptionError(
                f"queue {', '.join(map(repr, names))} is key_strict_fifo: each job needs a singleton_key; "
                "nothing was sent"
            )
        return ids, now

    # ---------------------------------------------------------------------------------------- fetching

    def fetch(
        self,
        name: object,
        batch_size: object,
        priority: object,
        include_metadata: object,
        ignore_start_after: object,
        *,
        savepoint: bool = True,
        min_priority: object = None,
        max_priority: object = None,
        group_concurrency: object = None,
    ) -> Operation[list[Job]]:
        """``savepoint=False`` (workers, which own their transaction): two round trips fewer, and a collision
        with a concurrent activation raises ``IntegrityError`` for the caller to roll back. ``min_priority``,
        ``max_priority`` and ``group_concurrency`` are pg-boss 12's (version 46)."""
        for option, value in (
            ("min_priority", min_priority),
            ("max_priority", max_priority),
            ("group_concurrency", group_concurrency),
        ):
            if value is not None:
                _version_46_only(f"fetch's {option}")
        queue_name = names.queue_name(name)
        options = queues.FetchOptions.of(batch_size, priority, include_metadata, ignore_start_after)
        statement = self.sql.FETCH_BY_PRIORITY if options.priority else self.sql.FETCH_BY_AGE
        params = {
            "queue_name": queue_name,
            "batch_size": options.batch_size,
            "ignore_start_after": options.ignore_start_after,
        }
        if not savepoint:
            found: list[Job] = yield Step(statement, params, "entities")
            return found
        for _ in range(FETCH_ATTEMPTS):
            try:
                jobs: list[Job] = yield Step(statement, params, "entities", savepoint=True)
            except IntegrityError:
                # Another transaction activated a job with the same singleton key meanwhile; it has
                # committed by now (the unique index waited for it), so the next attempt passes it over.
                continue
            return jobs
        return []

    # ----------------------------------------------------------------------------------- state changes

    def complete(self, name: object, ids: object, output: Any, include_queued: object = False) -> Operation[int]:
        if include_queued is not False:
            _version_46_only("complete's include_queued")
        return (yield from self._change(self.sql.COMPLETE, "complete", name, ids, {"job_output": _output_text(output)}))

    def cancel(self, name: object, ids: object) -> Operation[int]:
        return self._change(self.sql.CANCEL, "cancel", name, ids, {})

    def retry(self, name: object, ids: object) -> Operation[int]:
        return self._change(self.sql.RETRY, "retry", name, ids, {})

    def delete_job(self, name: object, ids: object) -> Operation[int]:
        return self._change(self.sql.DELETE_JOBS, "delete_job", name, ids, {})

    def resume(self, name: object, ids: object) -> Operation[int]:
        try:
            return (yield from self._change(self.sql.RESUME, "resume", name, ids, {}, savepoint=True))
        except IntegrityError as exc:
            raise JobConflictError(
                "resuming would break the queue's policy or a throttling slot taken since the job was cancelled; "
                f"nothing was resumed ({exc.orig})"
            ) from exc

    def fail(self, name: object, ids: object, output: Any) -> Operation[int]:
        queue_name = names.queue_name(name)
        job_ids = tuple(names.job_ids(ids, operation="fail"))
        params = {"queue_name": queue_name, "ids": list(job_ids), "job_output": _output_text(output)}
        rows = yield Step(self.sql.FAIL, params, "rows")
        yield self._expire_jobs(queue_name, job_ids)
        return int(rows[0][0])

    def _change(
        self,
        statement: Executable,
        operation: str,
        name: object,
        ids: object,
        extra: Mapping[str, Any],
        *,
        savepoint: bool = False,
    ) -> Operation[int]:
        queue_name = names.queue_name(name)
        job_ids = tuple(names.job_ids(ids, operation=operation))
        params = {"queue_name": queue_name, "ids": list(job_ids), **extra}
        count: int = yield Step(statement, params, "rowcount", savepoint=savepoint)
        yield self._expire_jobs(queue_name, job_ids)
        return count

    def get_job_by_id(self, name: object, job_id: object, include_archive: object) -> Operation[Job | Archive | None]:
        params = {"queue_name": names.queue_name(name), "job_id": names.job_id(job_id, operation="get_job_by_id")}
        if not isinstance(include_archive, bool):
            raise InvalidOptionError(f"include_archive must be True or False, not {include_archive!r}")
        jobs: list[Job] = yield Step(self.sql.GET_JOB, params, "entities")
        if jobs:
            return jobs[0]
        if not include_archive:
            return None
        archived: list[Archive] = yield Step(self.sql.GET_ARCHIVED_JOB, params, "entities")
        return archived[0] if archived else None

    def job_states(self, name: object, ids: object) -> Operation[dict[uuid.UUID, JobState]]:
        """The state of each of the given jobs of the queue that still exists there."""
        params = {"queue_name": names.queue_name(name), "ids": names.job_ids(ids, operation="job_states")}
        rows = yield Step(self.sql.JOB_STATES, params, "rows")
        return {job_id: state for job_id, state in rows}

    def newest_jobs(self, name: object, state: object, limit: object) -> Operation[list[Job]]:
        """The queue's newest jobs (in ``state``, unless it is ``None``), at most ``limit``, as ORM objects."""
        params = {"queue_name": names.queue_name(name), "limit": integer("limit", limit, minimum=1)}
        if state is None:
            jobs: list[Job] = yield Step(self.sql.NEWEST_JOBS, params, "entities")
        else:
            jobs = yield Step(self.sql.NEWEST_JOBS_IN_STATE, {**params, "state": queues.job_state(state)}, "entities")
        return jobs

    def find_job(self, job_id: object) -> Operation[Job | Archive | None]:
        """A job by its id alone, in whichever queue; else its latest archived copy; else ``None``."""
        params = {"job_id": names.job_id(job_id, operation="find_job")}
        jobs: list[Job] = yield Step(self.sql.FIND_JOB, params, "entities")
        if jobs:
            return jobs[0]
        archived: list[Archive] = yield Step(self.sql.FIND_ARCHIVED_JOB, params, "entities")
        return archived[0] if archived else None

    def locate_jobs(self, ids: object) -> Operation[tuple[dict[str, list[uuid.UUID]], list[uuid.UUID]]]:
        """The given jobs by queue, and the ids no queue holds (in the order given)."""
        wanted = names.job_ids(ids, operation="locate_jobs")
        rows = yield Step(self.sql.QUEUES_OF_JOBS, {"ids": wanted}, "rows")
        by_queue: dict[str, list[uuid.UUID]] = {}
        for queue_name, job_id in rows:
            by_queue.setdefault(queue_name, []).append(job_id)
        found = {job_id for ids_of_queue in by_queue.values() for job_id in ids_of_queue}
        return by_queue, [job_id for job_id in wanted if job_id not in found]

    def job_ids_in_state(self, name: object, state: object) -> Operation[list[uuid.UUID]]:
        """The ids of the queue's jobs in ``state``."""
        params = {"queue_name": names.queue_name(name), "state": queues.job_state(state)}
        rows = yield Step(self.sql.JOB_IDS_IN_STATE, params, "rows")
        return [job_id for (job_id,) in rows]

    # ------------------------------------------------------------------ operations of pg-boss 12 alone

    def touch(self, name: object, ids: object) -> Operation[int]:
        _version_46_only("touch")
        yield  # pragma: no cover

    def delete_queued_jobs(self, name: object) -> Operation[int]:
        _version_46_only("delete_queued_jobs", "purge_queue")
        yield  # pragma: no cover

    def delete_stored_jobs(self, name: object) -> Operation[int]:
        _version_46_only("delete_stored_jobs")
        yield  # pragma: no cover

    def delete_all_jobs(self, name: object | None) -> Operation[int]:
        _version_46_only("delete_all_jobs")
        yield  # pragma: no cover

    def get_queue_stats(self, name: object) -> Operation[Any]:
        _version_46_only("get_queue_stats", "get_queue_size")
        yield  # pragma: no cover

    def find_jobs(self, name: object, **filters: Any) -> Operation[list[Any]]:
        _version_46_only("find_jobs")
        yield  # pragma: no cover

    def get_schedule(self, name: object, key: object = "") -> Operation[Any]:
        _version_46_only("get_schedule", "get_schedules")
        yield  # pragma: no cover

    # update, upsert, flows and redrive: pg-boss 12 alone (sqla_boss.v46.operations)

    def update(self, name: object, data: Any, options: Mapping[str, Any]) -> Operation[UpdateResult]:
        _version_46_only("update")
        yield  # pragma: no cover

    def upsert(self, name: object, data: Any, options: Mapping[str, Any]) -> Operation[UpdateResult]:
        _version_46_only("upsert")
        yield  # pragma: no cover

    def flow(self, jobs: object) -> Operation[dict[str, uuid.UUID]]:
        _version_46_only("flow")
        yield  # pragma: no cover

    def get_dependencies(
        self, name: object, job_id: object, limit: object = 1000, after: object = None
    ) -> Operation[list[JobRef]]:
        _version_46_only("get_dependencies")
        yield  # pragma: no cover

    def get_dependents(
        self, name: object, job_id: object, limit: object = 1000, after: object = None
    ) -> Operation[list[JobRef]]:
        _version_46_only("get_dependents")
        yield  # pragma: no cover

    def resolve_flow(self) -> Operation[int]:
        _version_46_only("resolve_flow")
        yield  # pragma: no cover

    def redrive(self, name: object, **filters: Any) -> Operation[int]:
        _version_46_only("redrive")
        yield  # pragma: no cover

    def preview_redrive(self, name: object, **filters: Any) -> Operation[RedrivePreview]:
        _version_46_only("preview_redrive")
        yield  # pragma: no cover

    # ----------------------------------------------------------------------------------------- pub/sub

    def subscribe(self, event: object, name: object) -> Operation[None]:
        queue_name = names.queue_name(name)
        event_name = names.event_name(event)
        rows = yield Step(self.sql.SUBSCRIBE, {"event_name": event_name, "queue_name": queue_name}, "rows")
        if not rows:
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))
        yield Expire(((self.models.Subscription, (event_name, queue_name)), (self.models.Queue, (queue_name,))))

    def unsubscribe(self, event: object, name: object) -> Operation[bool]:
        event_name, queue_name = names.event_name(event), names.queue_name(name)
        count = yield Step(self.sql.UNSUBSCRIBE, {"event_name": event_name, "queue_name": queue_name}, "rowcount")
        yield Expire(((self.models.Subscription, (event_name, queue_name)), (self.models.Queue, (queue_name,))))
        return bool(count)

    def publish(self, event: object, data: Any, options: Mapping[str, Any]) -> Operation[list[uuid.UUID]]:
        event_name = names.event_name(event)
        self._send_input("publish", data, options)  # validate once, before anything is written
        subscribers = yield Step(self.sql.SUBSCRIBERS, {"event_name": event_name}, "rows")
        ids: list[uuid.UUID] = []
        for (queue_name,) in subscribers:
            job_id = yield from self.send(queue_name, data, options)
            if job_id is not None:
                ids.append(job_id)
        return ids

    # --------------------------------------------------------------------------------------- schedules

    def schedule(
        self, name: object, cron: object, data: Any, tz: object, options: Mapping[str, Any]
    ) -> Operation[None]:
        queue_name = names.queue_name(name)
        cron_text, timezone = schedules.cron_rule(cron, tz)
        job_options.send_input(queue_name, data, options)
        params = {
            "queue_name": queue_name,
            "cron_expression": cron_text,
            "time_zone": timezone,
            # pg-boss stores a missing payload as SQL NULL, not as the JSON null.
            "schedule_data": None if data is None else payloads.json_text(data),
            "schedule_options": schedules.stored_options(options, None if tz is None else timezone),
        }
        rows = yield Step(self.sql.SCHEDULE, params, "rows")
        if not rows:
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))
        yield Expire(((Schedule, (queue_name,)), (Queue, (queue_name,))))

    def unschedule(self, name: object, key: object = None) -> Operation[bool]:
        if key is not None:
            _version_46_only("a schedule key")
        queue_name = names.queue_name(name)
        count = yield Step(self.sql.UNSCHEDULE, {"queue_name": queue_name}, "rowcount")
        yield Expire(((Schedule, (queue_name,)), (Queue, (queue_name,))))
        return bool(count)

    def get_schedules(self, name: object = None, key: object = None) -> Operation[list[Schedule]]:
        if name is not None or key is not None:
            _version_46_only("get_schedules by name or key")
        schedules: list[Schedule] = yield Step(self.sql.GET_SCHEDULES, {}, "entities")
        return schedules

    def cron_tick(self, interval_seconds: int) -> Operation[CronTick]:
        """Claim this turn of cron evaluation and, if won, queue a send-it job per due schedule (§9.3)."""
        claimed = yield Step(self.sql.CLAIMS["cron"], {"interval_seconds": interval_seconds}, "rows")
        if not claimed:
            return CronTick(won=False)
        now: dt.datetime = claimed[0][0]
        schedules = yield from self.get_schedules()
        found, unreadable = cron_rules.due(schedules, now)
        if found:
            yield from self.insert([cron_rules.send_it_job(schedule) for schedule in found])
        return CronTick(won=True, due=[schedule.name for schedule in found], unreadable=unreadable)

    def send_it(self, payloads: Iterable[Any]) -> Operation[list[uuid.UUID]]:
        """What the send-it worker does with its jobs: insert each one's payload (a due schedule's job) into
        its queue, with the semantics of pg-boss's ``insert`` (§9.2)."""
        return (yield from self.insert([cron_rules.target_job(payload) for payload in payloads]))

    # ------------------------------------------------------------------------------ maintenance (§8)

    def _lock_schema(self) -> Generator[Step, Any, None]:
        for statement in lock_statements(self.schema):
            yield Step(statement, {}, "rowcount")

    def expire(self) -> Operation[int]:
        """Fail the active jobs past their ``expire_in``, by their retry rules, under the schema lock."""
        yield from self._lock_schema()
        return int((yield Step(self.sql.EXPIRE, {}, "scalar")))

    def archive(self, completed_after_seconds: int, failed_after_seconds: int) -> Operation[int]:
        """Move finished jobs past their archive delay, and queued ones past ``keep_until``, to ``archive``."""
        yield from self._lock_schema()
        params = {"completed_after_seconds": completed_after_seconds, "failed_after_seconds": failed_after_seconds}
        return int((yield Step(self.sql.ARCHIVE, params, "scalar")))

    def drop(self, delete_after_seconds: int) -> Operation[int]:
        """Delete archived jobs older than ``delete_after_seconds``, under the schema lock."""
        yield from self._lock_schema()
        return int((yield Step(self.sql.DROP_ARCHIVED, {"delete_after_seconds": delete_after_seconds}, "rowcount")))

    def claim(self, clock: Clock, interval_seconds: int) -> Operation[bool]:
        """Claim this interval's turn of ``clock`` for the cluster; ``True`` if this instance won it."""
        rows = yield Step(self.sql.CLAIMS[clock], {"interval_seconds": interval_seconds}, "rows")
        return bool(rows)

    def count_states(self) -> Operation[dict[str, Any]]:
        """Jobs per state, overall and per queue, in pg-boss's ``countStates()`` shape (§8.5)."""
        return count_states((yield Step(self.sql.COUNT_STATES, {}, "rows")))

    def queue_snapshots(self) -> Operation[list[QueueSnapshot]]:
        """Every queue with its jobs by state and the age of its oldest queued job."""
        rows = yield Step(self.sql.QUEUE_SNAPSHOTS, {}, "rows")
        return [
            QueueSnapshot(
                name, created, retry, active, completed, cancelled, failed, None if oldest is None else float(oldest)
            )
            for name, created, retry, active, completed, cancelled, failed, oldest in rows
        ]


def _version_46_only(operation: str, instead: str | None = None) -> NoReturn:
    hint = f"; on version 24 use {instead}" if instead else ""
    raise UnsupportedOperationError(
        f"{operation} is pg-boss 12's (schema version 46), and this schema is at version 24{hint}"
    )


Clock = Literal["maintenance", "monitoring", "cron"]
"""The cluster-wide turns claimed on ``version``: maintenance (``maintained_on``), state monitoring
(``monitored_on``) and cron evaluation (``cron_on``)."""


@dataclass(frozen=True)
class MaintenanceResult:
    """What one maintenance pass did: jobs expired, archived and dropped, and how long it took."""

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


def count_states(rows: Iterable[Any]) -> dict[str, Any]:
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


@dataclass(frozen=True)
class CronTick:
    """What one cron evaluation did: whether this instance won the turn, which schedules were due (one
    send-it job each, unless another instance queued it already this minute), and which could not be read."""

    won: bool
    due: list[str] = field(default_factory=list)
    unreadable: list[cron_rules.Unreadable] = field(default_factory=list)


def _output_text(value: Any) -> str | None:
    stored = payloads.output_value(value)
    return None if stored is None else payloads.json_text(stored, what="output")


__all__ = [
    "FETCH_ATTEMPTS",
    "Clock",
    "CronTick",
    "Expire",
    "MaintenanceResult",
    "Operation",
    "Operations",
    "QueueSnapshot",
    "Step",
    "count_states",
    "verify_schema",
]
