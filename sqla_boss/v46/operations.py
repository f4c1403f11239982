"""The repository's operations on schema version 46 (pg-boss 12.38): :class:`Operations46`.

It is :class:`~sqla_boss.operations.Operations` with version 46's statements (:mod:`sqla_boss.v46.statements`),
models and options (:mod:`sqla_boss.options.v46`), overriding only the operations whose rules differ. An
operation of version 24 alone raises :class:`~sqla_boss.errors.UnsupportedOperationError` here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, NoReturn

from sqlalchemy.exc import IntegrityError

from sqla_boss.errors import (
    DeadLetterQueueNotFoundError,
    InvalidCronError,
    InvalidOptionError,
    JobConflictError,
    QueueInUseError,
    QueueNotFoundError,
    SqlaBossError,
    UnsupportedOperationError,
)
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.operations import FETCH_ATTEMPTS, Expire, Operation, Operations, Step, _output_text
from sqla_boss.options import names, payloads, schedules
from sqla_boss.options import v46 as options46
from sqla_boss.options.queues import KEEP
from sqla_boss.options.values import integer, text
from sqla_boss.v46 import cron as cron46
from sqla_boss.v46 import models as v46_models
from sqla_boss.v46 import statements as v46_statements
from sqla_boss.v46.cron import CronPass
from sqla_boss.v46.models import Job, Queue, QueuePolicy, Schedule

logger = logging.getLogger("sqla_boss.cron")

_RRULE = re.compile(r"^[ \t]*[a-z][a-z0-9-]*[;:]|(?:^|[\s;])FREQ=", re.IGNORECASE | re.MULTILINE)
"""pg-boss 12's test of whether a schedule's expression is an RFC 5545 rule rather than cron (§9.1)."""


_ATTEMPT = frozenset({"id", "name", "retry_count"})
"""What identifies the attempt a fetched ``Job`` object holds."""


def notify_channel(schema: str) -> str:
    """pg-boss 12's LISTEN/NOTIFY channel of ``schema`` (§10): ``pgboss_`` and 24 hex digits of its sha224."""
    return "pgboss_" + hashlib.sha224(schema.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class QueueStats:
    """A queue's jobs by state right now, as pg-boss 12's monitor counts them (§8.4): queued = blocked +
    deferred + ready."""

    name: str
    deferred: int
    blocked: int
    queued: int
    ready: int
    active: int
    completed: int
    cancelled: int
    failed: int
    total: int
    ready_oldest_seconds: float | None
    created: int
    """Queued jobs that are not retries (``created`` + ``retry`` = ``queued``)."""
    retry: int
    """Queued jobs waiting for another try."""


@dataclass(frozen=True)
class UpdateResult:
    """What :meth:`~Operations46.update` or :meth:`~Operations46.upsert` did: the ids of the jobs it changed or
    inserted, and how many it ``updated`` and ``inserted`` (an upsert does one or the other, or neither)."""

    jobs: list[uuid.UUID]
    updated: int
    inserted: int = 0


@dataclass(frozen=True)
class JobRef:
    """A job by its queue ``name`` and ``id``: one end of a flow's dependency."""

    name: str
    id: uuid.UUID

    @classmethod
    def of(cls, value: object, operation: str) -> JobRef:
        """A ``JobRef``, a ``(name, id)`` pair or a mapping with ``name`` and ``id``, as a checked ``JobRef``."""
        if isinstance(value, JobRef):
            name, job_id = value.name, value.id
        elif isinstance(value, Mapping) and set(value) == {"name", "id"}:
            name, job_id = value["name"], value["id"]
        elif isinstance(value, tuple) and len(value) == 2:
            name, job_id = value
        else:
            raise InvalidOptionError(
                f"{operation}: after must be a JobRef, a (name, id) pair or a mapping with name and id"
            )
        return cls(name=options46.queue_name(name), id=names.job_id(job_id, operation=operation))


@dataclass(frozen=True)
class RedrivePreview:
    """What a redrive would do (:meth:`~Operations46.preview_redrive`): how many matching jobs were read
    (``total``), how many of them would go to each queue (``destinations``, most first) and how many would stay
    (``unroutable``: no source queue recorded and no destination given, or that queue is gone)."""

    total: int
    destinations: dict[str, int]
    unroutable: int


def _version_24_only(operation: str, instead: str | None = None) -> NoReturn:
    hint = f"; use {instead}" if instead else ""
    raise UnsupportedOperationError(f"{operation} is an operation of pg-boss 10 (schema version 24){hint}")


class Operations46(Operations):
    """The operations for one schema at version 46. pg-boss 12 has no constructor job defaults: settings live
    on the queue (:meth:`create_queue`) and the job."""

    sql: ClassVar[ModuleType] = v46_statements
    models: ClassVar[ModuleType] = v46_models
    version: ClassVar[int] = 46

    def __init__(self, schema: str = DEFAULT_SCHEMA, defaults: Mapping[str, Any] | None = None) -> None:
        if defaults:
            raise UnsupportedOperationError(
                f"pg-boss 12 (schema version 46) has no constructor job defaults ({', '.join(sorted(defaults))}); "
                "set them on the queue (create_queue, update_queue) or on each job"
            )
        super().__init__(schema, None)
        self._notify_params = {"notify_channel": notify_channel(self.schema)}
        self._gated_queues: set[str] = set()
        """Queues seen with a policy whose fetch must look at other jobs (singleton, stately, key_strict_fifo):
        their fetches skip the plain statement. A hint only: the plain fetch checks the policy itself."""

    # ------------------------------------------------------------------------------------------ queues

    def _check_dead_letter(self, queue_name: str, values: Mapping[str, Any]) -> Operation[None]:
        dead_letter = values.get("deadLetter")
        if dead_letter is None:
            return
        if dead_letter == queue_name:
            raise InvalidOptionError(f"queue {queue_name!r} cannot be its own dead letter queue")
        if not (yield Step(self.sql.QUEUE_EXISTS, {"queue_name": dead_letter}, "scalar")):
            raise DeadLetterQueueNotFoundError(
                f"dead letter queue {dead_letter!r} of queue {queue_name!r} does not exist", (dead_letter,)
            )

    def create_queue(self, name: object, options: Mapping[str, Any]) -> Operation[None]:
        queue_name = options46.queue_name(name)
        values = options46.queue_options(options, creating=True)
        yield from self._check_dead_letter(queue_name, values)
        yield Step(self._functions.lock_create, {}, "rowcount")
        yield Step(self._functions.create, {"queue_name": queue_name, "queue_options": json.dumps(values)}, "rowcount")

    def update_queue(self, name: object, options: Mapping[str, Any]) -> Operation[None]:
        queue_name = options46.queue_name(name)
        values = options46.queue_options(options, creating=False)
        yield from self._check_dead_letter(queue_name, values)
        updated = yield Step(self.sql.UPDATE_QUEUE, {"queue_name": queue_name, "changes": json.dumps(values)}, "rows")
        if not updated:
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))
        yield Expire(((Queue, (queue_name,)),))

    def delete_queue(self, name: object) -> Operation[bool]:
        queue_name = options46.queue_name(name)
        found = yield Step(self.sql.QUEUE_EXISTS, {"queue_name": queue_name}, "scalar")
        if not found:
            return False
        rows = yield Step(self.sql.QUEUE_BLOCKERS, {"queue_name": queue_name}, "rows")
        of_queue, of_job, table_name, partition = rows[0]
        if of_queue or of_job:
            whom = "another queue" if of_queue else "jobs of another queue"
            raise QueueInUseError(f"queue {queue_name!r} is the dead letter queue of {whom}; it was not deleted")
        yield Step(self._functions.lock_delete, {}, "rowcount")
        # A partition cannot be dropped while deferred foreign-key checks of this transaction are pending on it.
        yield Step(self._functions.check_job_constraints_now, {}, "rowcount")
        yield Step(self._functions.delete, {"queue_name": queue_name}, "rowcount")
        if partition:
            yield Step(self.sql.FORGET_BAM, {"table_name": table_name}, "rowcount")
        yield Step(self._functions.defer_job_constraints, {}, "rowcount")
        yield Expire(((Queue, (queue_name,)),))
        return True

    def purge_queue(self, name: object) -> Operation[int]:
        return (yield from self.delete_queued_jobs(name))

    def delete_queued_jobs(self, name: object) -> Operation[int]:
        """Delete the queue's created and retry jobs (pg-boss 12's ``deleteQueuedJobs``); returns how many."""
        return (yield from self._delete_where(self.sql.DELETE_QUEUED_JOBS, name))

    def delete_stored_jobs(self, name: object) -> Operation[int]:
        """Delete the queue's completed, cancelled and failed jobs; returns how many."""
        return (yield from self._delete_where(self.sql.DELETE_STORED_JOBS, name))

    def delete_all_jobs(self, name: object | None) -> Operation[int]:
        """Delete every job of the queue, or of every queue (``None``, zeroing each queue's cached counts)."""
        if name is None:
            count: int = yield Step(self.sql.DELETE_EVERY_JOB, {}, "rowcount")
            yield Step(self.sql.ZERO_COUNTS, {}, "rowcount")
            return count
        return (yield from self._delete_where(self.sql.DELETE_QUEUE_JOBS, name))

    def _delete_where(self, statement: Any, name: object) -> Operation[int]:
        queue_name = options46.queue_name(name)
        rows = yield Step(statement.returning(self.sql.job.c.id), {"queue_name": queue_name}, "rows")
        yield self._expire_jobs(queue_name, (job_id for (job_id,) in rows), deleted=True)
        return len(rows)

    def get_queue(self, name: object) -> Operation[Queue | None]:  # type: ignore[override]
        found: list[Queue] = yield Step(self.sql.GET_QUEUE, {"queue_name": options46.queue_name(name)}, "entities")
        return found[0] if found else None

    def get_queues(  # type: ignore[override]
        self, queue_names: Iterable[object] | None = None, limit: object = None, after: object = None
    ) -> Operation[list[Queue]]:
        """pg-boss 12's ``getQueues`` (§3.4): by name, ``queue_names`` only (when given), after the name
        ``after``, at most ``limit`` (1-100,000; all when ``None``)."""
        if isinstance(queue_names, (str, bytes)):
            raise InvalidOptionError("get_queues() takes a list of queue names, not one name")
        params = {
            "queue_names": None if queue_names is None else [options46.queue_name(name) for name in queue_names],
            "limit": None if limit is None else integer("limit", limit, minimum=1, maximum=100_000),
            "after": None if after is None else options46.queue_name(after, what="after"),
        }
        found: list[Queue] = yield Step(self.sql.GET_QUEUE_PAGE, params, "entities")
        return found

    def get_blocked_keys(self, name: object, limit: object = 1000, after: object = None) -> Operation[list[str]]:
        """pg-boss 12's ``getBlockedKeys`` (§3.4): the keys of a key_strict_fifo queue that a failed job blocks
        (until it is retried or deleted), in order, after ``after``, at most ``limit``."""
        queue_name = options46.queue_name(name)
        params = {
            "queue_name": queue_name,
            "limit": integer("limit", limit, minimum=1, maximum=100_000),
            "after": None if after is None else text("after", after),
        }
        policy = yield Step(self.sql.QUEUE_POLICY, {"queue_name": queue_name}, "scalar")
        if policy is None:
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))
        if policy != "key_strict_fifo":
            raise InvalidOptionError(
                f"get_blocked_keys is only for key_strict_fifo queues; queue {queue_name!r} is {policy}"
            )
        rows = yield Step(self.sql.GET_BLOCKED_KEYS, params, "rows")
        return [key for (key,) in rows]

    def get_queue_size(self, name: object, before: object) -> Operation[int]:
        _version_24_only("get_queue_size", "get_queue_stats")
        yield  # pragma: no cover

    def get_queue_stats(self, name: object) -> Operation[QueueStats]:
        queue_name = options46.queue_name(name)
        rows = yield Step(self.sql.QUEUE_STATS, {"queue_name": queue_name}, "rows")
        if not rows:
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))
        queue, deferred, blocked, queued, ready, active, completed, cancelled, failed, total, created, retry, oldest = (
            rows[0]
        )
        return QueueStats(
            name=queue,
            deferred=deferred,
            blocked=blocked,
            queued=queued,
            ready=ready,
            active=active,
            completed=completed,
            cancelled=cancelled,
            failed=failed,
            total=total,
            ready_oldest_seconds=None if oldest is None else float(oldest),
            created=created,
            retry=retry,
        )

    # ----------------------------------------------------------------------------------------- sending

    def _send_input(self, name: object, data: Any, options: Mapping[str, Any]) -> tuple[Any, bool]:
        return options46.send_input(name, data, options)

    def _insert_record(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return options46.insert_record(job)

    def _insert_params(self) -> Mapping[str, Any]:
        return self._notify_params

    def _insert_records(self, records: list[dict[str, Any]]) -> Generator[Step, Any, tuple[list[uuid.UUID], float]]:
        # pg-boss 12 refuses a batch naming one job twice (§4.6); the statement would drop the second silently.
        named: set[tuple[str, str]] = set()
        for record in records:
            if "id" in record:
                key = (record["name"], record["id"])
                if key in named:
                    raise InvalidOptionError(f"duplicate job id in insert batch: {key[1]} (queue {key[0]!r})")
                named.add(key)
        return (yield from super()._insert_records(records))

    def publish(self, event: object, data: Any, options: Mapping[str, Any]) -> Operation[list[uuid.UUID]]:
        # A key_strict_fifo subscriber refuses a job without a key: refuse before sending to any subscriber, so
        # that nothing is written (pg-boss 12 sends to the others, then throws an AggregateError).
        event_name = names.event_name(event)
        job, _ = self._send_input("publish", data, options)
        if job.singleton_key is None:
            rows = yield Step(self.sql.KEY_STRICT_FIFO_SUBSCRIBERS, {"event_name": event_name}, "rows")
            if rows:
                fifo = ", ".join(repr(name) for (name,) in rows)
                raise InvalidOptionError(
                    f"queue {fifo} subscribed to {event_name!r} is key_strict_fifo: publish needs a singleton_key; "
                    "nothing was sent"
                )
        return (yield from super().publish(event, data, options))

    # ---------------------------------------------------------------------------------------- fetching

    def fetch(  # type: ignore[override]
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
        """pg-boss 12's fetch (§5): always by priority, then age (``priority`` is accepted and ignored, as in
        pg-boss since 12.30). A queue that does not exist is an error, as in pg-boss 12. With
        ``group_concurrency`` it first takes a transaction-level advisory lock of sqla_boss's own on the queue,
        so that concurrent sqla_boss fetches never exceed the limit (pg-boss's own can race)."""
        queue_name = options46.queue_name(name)
        if not isinstance(priority, bool):
            raise InvalidOptionError(f"priority must be True or False, not {priority!r}")
        options = options46.FetchOptions.of(
            batch_size, include_metadata, ignore_start_after, min_priority, max_priority, group_concurrency
        )
        params = {
            "queue_name": queue_name,
            "batch_size": options.batch_size,
            "ignore_start_after": options.ignore_start_after,
            "min_priority": options.min_priority,
            "max_priority": options.max_priority,
            "group_default": options.group_default,
            "group_tiers": json.dumps(options.group_tiers),
        }
        plain = (
            options.group_default is None
            and options.min_priority is None
            and options.max_priority is None
            and queue_name not in self._gated_queues
        )
        if options.group_default is not None:
            lock_text = f"sqla_boss.group-fetch.{self.schema}.{queue_name}"
            yield Step(self.sql.GROUP_FETCH_LOCK, {"lock_text": lock_text}, "scalar")
        jobs = yield from self._fetch(self.sql.FETCH_PLAIN if plain else self.sql.FETCH, params, savepoint)
        if jobs:
            return jobs
        policy = yield Step(self.sql.QUEUE_POLICY, {"queue_name": queue_name}, "scalar")
        if policy is None:
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))
        if plain and policy not in self.sql.PLAIN_POLICIES:
            # The plain fetch takes nothing from such a queue: fetch by its rules, and remember them (a hint only).
            if len(self._gated_queues) < 10_000:
                self._gated_queues.add(queue_name)
            return (yield from self._fetch(self.sql.FETCH, params, savepoint))
        return jobs

    def _fetch(self, statement: Any, params: Mapping[str, Any], savepoint: bool) -> Operation[list[Job]]:
        if not savepoint:
            found: list[Job] = yield Step(statement, params, "entities")
            return found
        for _ in range(FETCH_ATTEMPTS):
            try:
                jobs: list[Job] = yield Step(statement, params, "entities", savepoint=True)
            except IntegrityError:
                continue  # a concurrent activation of the same key: pg-boss answers [] (§5.4)
            return jobs
        return []

    # ----------------------------------------------------------------------------------- state changes

    def _targets(self, ids: object, operation: str) -> tuple[list[uuid.UUID], list[str] | None]:
        """The ids, and the attempts to fence on when job objects were given (§6.1): ``id:retry_count``."""
        items: Sequence[object] = list(ids) if isinstance(ids, (list, tuple, set, frozenset)) else [ids]
        jobs = [item for item in items if isinstance(item, Job)]
        if not jobs:
            return names.job_ids(items, operation=operation), None
        if len(jobs) != len(items):
            raise InvalidOptionError(f"{operation}() takes job ids or job objects, not a mix of both")
        return [job.id for job in jobs], [f"{job.id}:{job.retry_count}" for job in jobs]

    def _expire_jobs(self, queue_name: str, ids: Iterable[uuid.UUID], *, deleted: bool = False) -> Expire:
        """Expire the jobs' objects but for the attempt they hold (``id``, ``name``, ``retry_count``): a ``Job``
        given to a later call is fenced on the attempt its caller fetched (§6.1), even after a :meth:`touch`.
        Deleted jobs are expired whole, so that ``session.get`` finds them gone."""
        return Expire(tuple((Job, (queue_name, job_id)) for job_id in ids), keep=frozenset() if deleted else _ATTEMPT)

    def _settle(
        self,
        statement: Any,
        operation: str,
        name: object,
        ids: object,
        extra: Mapping[str, Any],
        result: str,
        *,
        deleted: bool = False,
    ) -> Operation[Any]:
        queue_name = options46.queue_name(name)
        job_ids, attempts = self._targets(ids, operation)
        params = {"queue_name": queue_name, "ids": job_ids, "attempts": attempts, **extra}
        outcome = yield Step(statement, params, result)  # type: ignore[arg-type]
        yield self._expire_jobs(queue_name, job_ids, deleted=deleted)
        return outcome

    def complete(self, name: object, ids: object, output: Any, include_queued: object = False) -> Operation[int]:
        if not isinstance(include_queued, bool):
            raise InvalidOptionError(f"include_queued must be True or False, not {include_queued!r}")
        extra = {"job_output": _output_text(output), "include_queued": include_queued}
        return int((yield from self._settle(self.sql.COMPLETE, "complete", name, ids, extra, "rowcount")))

    def cancel(self, name: object, ids: object) -> Operation[int]:
        return int((yield from self._settle(self.sql.CANCEL, "cancel", name, ids, {}, "rowcount")))

    def delete_job(self, name: object, ids: object) -> Operation[int]:
        statement = self.sql.DELETE_JOBS
        return int((yield from self._settle(statement, "delete_job", name, ids, {}, "rowcount", deleted=True)))

    def touch(self, name: object, ids: object) -> Operation[int]:
        """Refresh the heartbeat of the given active jobs (pg-boss 12's ``touch``); returns how many."""
        return int((yield from self._settle(self.sql.TOUCH, "touch", name, ids, {}, "rowcount")))

    def fail(self, name: object, ids: object, output: Any) -> Operation[int]:
        rows = yield from self._settle(self.sql.FAIL, "fail", name, ids, {"job_output": _output_text(output)}, "rows")
        return int(rows[0][0])

    def retry(self, name: object, ids: object) -> Operation[int]:
        queue_name = options46.queue_name(name)
        return (yield from self._change(self.sql.RETRY, "retry", queue_name, ids, {}))

    def resume(self, name: object, ids: object) -> Operation[int]:
        queue_name = options46.queue_name(name)
        try:
            return (yield from self._change(self.sql.RESUME, "resume", queue_name, ids, {}, savepoint=True))
        except IntegrityError as exc:
            raise JobConflictError(
                "resuming would break the queue's policy or a throttling slot taken since the job was cancelled; "
                f"nothing was resumed ({exc.orig})"
            ) from exc

    # ------------------------------------------------------------------------------------ reading jobs

    def get_job_by_id(self, name: object, job_id: object, include_archive: object) -> Operation[Job | None]:  # type: ignore[override]
        if include_archive is not False:
            if include_archive is True:
                raise UnsupportedOperationError("pg-boss 12 (schema version 46) has no archive; its jobs stay in job")
            raise InvalidOptionError(f"include_archive must be True or False, not {include_archive!r}")
        params = {"queue_name": options46.queue_name(name), "job_id": names.job_id(job_id, operation="get_job_by_id")}
        jobs: list[Job] = yield Step(self.sql.GET_JOB, params, "entities")
        return jobs[0] if jobs else None

    def find_job(self, job_id: object) -> Operation[Job | None]:  # type: ignore[override]
        jobs: list[Job] = yield Step(
            self.sql.FIND_JOB, {"job_id": names.job_id(job_id, operation="find_job")}, "entities"
        )
        return jobs[0] if jobs else None

    def find_jobs(  # type: ignore[override]
        self,
        name: object,
        *,
        id: object = None,
        key: object = None,
        data: Any = None,
        queued: object = False,
        limit: object = 1000,
        after: object = None,
    ) -> Operation[list[Job]]:
        """pg-boss 12's ``findJobs`` (§6.6)."""
        queue_name = options46.queue_name(name)
        if not isinstance(queued, bool):
            raise InvalidOptionError(f"queued must be True or False, not {queued!r}")
        after_id = None if after is None else names.job_id(after, operation="find_jobs")
        params = {
            "queue_name": queue_name,
            "job_id": None if id is None else names.job_id(id, operation="find_jobs"),
            "key": None if key is None else text("key", key),
            "data": None if data is None else payloads.json_text(data),
            "queued": queued,
            "limit": integer("limit", limit, minimum=1, maximum=100_000),
            "after_id": after_id,
        }
        if after_id is not None and not (
            yield Step(self.sql.JOB_EXISTS, {"queue_name": queue_name, "job_id": after_id}, "scalar")
        ):
            raise InvalidOptionError(f"find_jobs: after names job {after_id} that no longer exists")
        jobs: list[Job] = yield Step(self.sql.FIND_JOBS, params, "entities")
        return jobs

    # --------------------------------------------------------------------------------------- schedules

    def schedule(
        self, name: object, cron: object, data: Any, tz: object, options: Mapping[str, Any]
    ) -> Operation[None]:
        """pg-boss 12's ``schedule`` (§9.1): keyed by (name, ``key``), cron or RFC 5545 rule, ``missed``."""
        queue_name = options46.queue_name(name)
        send_options = dict(options)
        key = options46.key_name(send_options.pop("key", ""))
        missed = send_options.pop("missed", None)
        if missed not in (None, "skip", "once"):
            raise InvalidOptionError(f"missed must be one of: skip, once; not {missed!r}")
        if not isinstance(cron, str) or not cron.strip():
            raise InvalidCronError(f"cron expression must be a non-empty string, not {cron!r}")
        if _RRULE.search(cron):
            kind, timezone = "rrule", schedules.time_zone(tz)
            _check_rrule(cron)
        else:
            kind = "cron"
            cron, timezone = schedules.cron_rule(cron, tz)
        options46.send_input(queue_name, data, send_options)
        stored = json.loads(schedules.stored_options(send_options, None if tz is None else timezone))
        stored = {**stored, **({"key": key} if "key" in options else {}), **({"missed": missed} if missed else {})}
        params = {
            "queue_name": queue_name,
            "schedule_key": key,
            "kind": kind,
            "cron_expression": cron,
            "time_zone": timezone,
            "schedule_data": None if data is None else payloads.json_text(data),
            "schedule_options": payloads.json_text(stored),
        }
        rows = yield Step(self.sql.SCHEDULE, params, "rows")
        if not rows:
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))
        yield Expire(((Schedule, (queue_name, key)), (Queue, (queue_name,))))

    def unschedule(self, name: object, key: object = "") -> Operation[bool]:
        queue_name = options46.queue_name(name)
        schedule_key = options46.key_name(key)
        params = {"queue_name": queue_name, "schedule_key": schedule_key}
        count = yield Step(self.sql.UNSCHEDULE, params, "rowcount")
        yield Expire(((Schedule, (queue_name, schedule_key)), (Queue, (queue_name,))))
        return bool(count)

    def get_schedules(self, name: object = None, key: object = None) -> Operation[list[Schedule]]:  # type: ignore[override]
        if name is None:
            found: list[Schedule] = yield Step(self.sql.GET_SCHEDULES, {}, "entities")
        else:
            found = yield Step(self.sql.GET_QUEUE_SCHEDULES, {"queue_name": options46.queue_name(name)}, "entities")
        if key is not None:
            wanted = options46.key_name(key)
            found = [schedule for schedule in found if schedule.key == wanted]
        return found

    def get_schedule(self, name: object, key: object = "") -> Operation[Schedule | None]:
        params = {"queue_name": options46.queue_name(name), "schedule_key": options46.key_name(key)}
        found: list[Schedule] = yield Step(self.sql.GET_SCHEDULE, params, "entities")
        return found[0] if found else None

    # ------------------------------------------ update, upsert, flows and redrive (§4.7, §4.8, §6.5, §8.8)

    def update(self, name: object, data: Any, options: Mapping[str, Any]) -> Operation[UpdateResult]:
        """pg-boss 12's ``update`` (§4.7): change the given settings of the queued job ``options["id"]``, or of
        the newest, oldest or all queued jobs of ``options["singleton_key"]``. ``data`` is :data:`KEEP` when not
        given. Takes no advisory lock; locks the rows it changes."""
        return (yield from self._update(name, data, options, upsert=False))

    def upsert(self, name: object, data: Any, options: Mapping[str, Any]) -> Operation[UpdateResult]:
        """pg-boss 12's ``upsert`` (§4.7): :meth:`update`; if nothing matched, insert the job (``upsert_by_key``
        when it targets a key); if that insert met a conflict (a job of the key committed meanwhile), update
        again."""
        return (yield from self._update(name, data, options, upsert=True))

    def _update(self, name: object, data: Any, options: Mapping[str, Any], *, upsert: bool) -> Operation[UpdateResult]:
        queue_name = options46.queue_name(name)
        keep_data = data is KEEP
        plan = options46.job_update(
            queue_name, None if keep_data else data, options, keep_data=keep_data, upsert=upsert
        )
        policy = yield Step(self.sql.QUEUE_POLICY, {"queue_name": queue_name}, "scalar")
        if policy is None:
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))
        if upsert and plan.key is None and policy == QueuePolicy.key_strict_fifo:
            raise InvalidOptionError(
                f"queue {queue_name!r} is key_strict_fifo: upsert() needs a singleton_key, even to target an id"
            )
        dead_letter = plan.changes.get("deadLetter")
        if dead_letter is not None and not (yield Step(self.sql.QUEUE_EXISTS, {"queue_name": dead_letter}, "scalar")):
            raise DeadLetterQueueNotFoundError(f"dead letter queue {dead_letter!r} does not exist", (dead_letter,))
        statement = self.sql.UPDATE_JOB["id" if plan.job_id is not None else plan.match]
        params = {
            "queue_name": queue_name,
            "changes": payloads.json_text(plan.changes, structure_checked=True),
            **({"job_id": plan.job_id} if plan.job_id is not None else {"key": plan.key}),
            **self._notify_params,
        }
        rows = yield Step(statement, params, "rows")
        if rows or not upsert:
            return (yield from self._updated(queue_name, [job_id for (job_id,) in rows], 0))
        record = plan.insert.record()
        if plan.key is not None:
            record["upsert_by_key"] = True
        jobs = payloads.json_text([record], structure_checked=True)
        inserted = yield Step(self.sql.UPSERT_INSERT, {"jobs": jobs, **self._notify_params}, "rows")
        if inserted:
            return UpdateResult(jobs=[job_id for (job_id,) in inserted], updated=0, inserted=len(inserted))
        rows = yield Step(statement, params, "rows")  # a job of the key committed since the first update: edit it
        return (yield from self._updated(queue_name, [job_id for (job_id,) in rows], 0))

    def _updated(self, queue_name: str, ids: list[uuid.UUID], inserted: int) -> Operation[UpdateResult]:
        yield self._expire_jobs(queue_name, ids)
        return UpdateResult(jobs=ids, updated=len(ids), inserted=inserted)

    def flow(self, jobs: object) -> Operation[dict[str, uuid.UUID]]:
        """pg-boss 12's ``flow`` (§4.8): insert every job at once, each waiting (``blocked``) for the jobs it
        depends on, and their edges; all or nothing. Returns each ref's job id. Takes no advisory lock."""
        flow = options46.flow_jobs(jobs)
        queue_names = sorted({job.job.name for job in flow})
        dead_letters = sorted({job.job.dead_letter for job in flow if job.job.dead_letter is not None})
        rows = yield Step(self.sql.QUEUE_POLICIES, {"queue_names": [*queue_names, *dead_letters]}, "rows")
        policies = dict(rows)
        missing = tuple(name for name in queue_names if name not in policies)
        if missing:
            raise QueueNotFoundError(f"queue {', '.join(map(repr, missing))} does not exist; nothing was sent", missing)
        missing = tuple(name for name in dead_letters if name not in policies)
        if missing:
            raise DeadLetterQueueNotFoundError(
                f"dead letter queue {', '.join(map(repr, missing))} does not exist; nothing was sent", missing
            )
        keyless = sorted(
            {job.job.name for job in flow if job.job.singleton_key is None}
            & {name for name, policy in policies.items() if policy == QueuePolicy.key_strict_fifo}
        )
        if keyless:
            raise InvalidOptionError(
                f"queue {', '.join(map(repr, keyless))} is key_strict_fifo: each job needs a singleton_key; "
                "nothing was sent"
            )
        by_ref = {job.ref: job for job in flow}
        edges = [
            {"child_name": job.name, "child_id": str(job.id), "parent_name": parent.name, "parent_id": str(parent.id)}
            for job in flow
            for parent in (by_ref[ref] for ref in job.parents)
        ]
        params = {
            "jobs": payloads.json_text([job.record() for job in flow], structure_checked=True),
            "dependencies": json.dumps(edges),
            **self._notify_params,
        }
        try:
            yield Step(self.sql.INSERT_FLOW, params, "rows", savepoint=True)
        except IntegrityError as exc:
            raise JobConflictError(
                "a job of the flow conflicts with a job already there (its id, its queue's policy or a throttling "
                f"slot); nothing was sent ({exc.orig})"
            ) from exc
        return {job.ref: job.id for job in flow}

    def get_dependencies(
        self, name: object, job_id: object, limit: object = 1000, after: object = None
    ) -> Operation[list[JobRef]]:
        """The jobs (name, id) the job waits for, by (name, id), at most ``limit``, after ``after``."""
        return (yield from self._edges(self.sql.GET_DEPENDENCIES, "get_dependencies", name, job_id, limit, after))

    def get_dependents(
        self, name: object, job_id: object, limit: object = 1000, after: object = None
    ) -> Operation[list[JobRef]]:
        """The jobs (name, id) that wait for the job, by (name, id), at most ``limit``, after ``after``."""
        return (yield from self._edges(self.sql.GET_DEPENDENTS, "get_dependents", name, job_id, limit, after))

    def _edges(
        self, statements: Mapping[bool, Any], operation: str, name: object, job_id: object, limit: object, after: object
    ) -> Operation[list[JobRef]]:
        params: dict[str, Any] = {
            "queue_name": options46.queue_name(name),
            "job_id": names.job_id(job_id, operation=operation),
            "limit": options46.list_limit(operation, limit),
        }
        if after is not None:
            after_ref = JobRef.of(after, operation)
            params.update(after_name=after_ref.name, after_id=after_ref.id)
        rows = yield Step(statements[after is not None], params, "rows")
        return [JobRef(name=edge_name, id=edge_id) for edge_name, edge_id in rows]

    def resolve_flow(self) -> Operation[int]:
        """pg-boss 12's flow resolver, one pass (§8.8, its ``resolveFlow()``): release the children of completed
        parents, in batches of :data:`~sqla_boss.v46.statements.FLOW_BATCH_SIZE` parents, until a batch comes
        back short (at most 100 batches, as pg-boss). Returns how many parents it resolved. pg-boss takes no
        advisory lock for it: rows are locked ``SKIP LOCKED``, so concurrent resolvers share the work."""
        resolved = 0
        for _ in range(100):
            rows = yield Step(self.sql.RESOLVE_FLOW, {}, "rows")
            yield Expire(tuple((Job, (name, job_id)) for _, name, job_id in rows))
            batch = sum(1 for kind, _, _ in rows if kind == "parent")
            resolved += batch
            if batch < self.sql.FLOW_BATCH_SIZE:
                break
        return resolved

    def redrive(  # type: ignore[override]
        self,
        name: object,
        *,
        source_name: object = None,
        data: Any = None,
        created_before: object = None,
        ids: object = None,
        destination: object = None,
        limit: object = 1000,
    ) -> Operation[int]:
        """pg-boss 12's ``redrive`` (§6.5): move up to ``limit`` queued jobs of the dead letter queue ``name``
        (oldest first, ``SKIP LOCKED``) back to ``destination`` or where each came from, as new jobs with that
        queue's settings; returns how many moved. A job the destination's policy refuses is failed in place,
        with a ``redrive_conflict`` output. Takes no advisory lock."""
        params = self._redrive_params(name, source_name, data, created_before, ids, destination)
        params["limit"] = integer("limit", limit, minimum=1)
        rows = yield Step(self.sql.REDRIVE, params, "rows")
        yield Expire(tuple((Job, (name, job_id)) for kind, name, job_id in rows if kind != "moved"))
        moved = sum(1 for kind, _, _ in rows if kind == "moved")
        if not moved:
            yield from self._check_queue(params["queue_name"])
        return moved

    def preview_redrive(  # type: ignore[override]
        self,
        name: object,
        *,
        source_name: object = None,
        data: Any = None,
        created_before: object = None,
        ids: object = None,
        destination: object = None,
        limit: object = 1000,
    ) -> Operation[RedrivePreview]:
        """What :meth:`redrive` with the same filter would do (pg-boss 12's ``previewRedrive``), reading at most
        ``limit`` (1-100,000) jobs it would move and ``limit`` it would leave in place. Locks nothing."""
        params = self._redrive_params(name, source_name, data, created_before, ids, destination)
        params["limit"] = options46.list_limit("preview_redrive", limit)
        rows = yield Step(self.sql.PREVIEW_REDRIVE, params, "rows")
        if not rows:
            yield from self._check_queue(params["queue_name"])
        counts: dict[str, int] = {}
        for (queue_name,) in rows:
            if queue_name is not None:
                counts[queue_name] = counts.get(queue_name, 0) + 1
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return RedrivePreview(total=len(rows), destinations=dict(ordered), unroutable=len(rows) - sum(counts.values()))

    def _check_queue(self, queue_name: str) -> Operation[None]:
        if not (yield Step(self.sql.QUEUE_EXISTS, {"queue_name": queue_name}, "scalar")):
            raise QueueNotFoundError(f"queue {queue_name!r} does not exist", (queue_name,))

    def _redrive_params(
        self, name: object, source_name: object, data: Any, created_before: object, ids: object, destination: object
    ) -> dict[str, Any]:
        if data is not None and not isinstance(data, Mapping):
            raise InvalidOptionError(f"data must be a mapping (matched by JSON containment), not {data!r}")
        if created_before is not None and (
            not isinstance(created_before, dt.datetime) or created_before.utcoffset() is None
        ):
            raise InvalidOptionError(f"created_before must be an aware datetime, not {created_before!r}")
        if isinstance(ids, (str, uuid.UUID)):
            raise InvalidOptionError("ids must be a non-empty list of job ids, not one id")
        return {
            "queue_name": options46.queue_name(name),
            "source_name": None if source_name is None else options46.queue_name(source_name, what="source_name"),
            "data": None if data is None else payloads.json_text(data),
            "created_before": created_before,
            "ids": None if ids is None else names.job_ids(ids, operation="redrive"),
            "destination": None if destination is None else options46.queue_name(destination, what="destination"),
        }

    # ------------------------------------------------------------------ cron and send-it (§9.2-9.4)

    def cron_tick(self, interval_seconds: int) -> Operation[CronPass]:
        """One cron pass (§9.3): claim ``version.cron_on`` for ``interval_seconds`` as pg-boss 12 does and, if
        won, file one ``__pgboss__send-it`` job per due (schedule, slot) that no instance filed yet, and relabel
        the schedules whose stored kind could not be read but the other could. A schedule that cannot be
        evaluated is skipped and reported in the result. Locks the ``version`` row until the transaction ends.

        Raises:
            QueueNotFoundError: a slot is due and the send-it queue does not exist (nothing was filed).
        """
        claimed = yield Step(cron46.CLAIM_CRON, {"interval_seconds": interval_seconds}, "rows")
        if not claimed:
            return CronPass(won=False)
        prior, now = claimed[0]
        rows = yield Step(cron46.SCHEDULES, {}, "rows")
        evaluation = cron46.evaluate(rows, now, prior)
        filed = 0
        if evaluation.due:
            params = {"jobs": cron46.send_it_records(evaluation.due), **self._notify_params}
            result = yield Step(cron46.INSERT_SEND_IT, params, "rows")
            filed = sum(1 for kind, _ in result if kind == "id")
            if not filed and not (yield Step(self.sql.QUEUE_EXISTS, {"queue_name": cron46.SEND_IT_QUEUE}, "scalar")):
                raise QueueNotFoundError(
                    f"queue {cron46.SEND_IT_QUEUE!r} does not exist; a Worker with schedule on creates it",
                    (cron46.SEND_IT_QUEUE,),
                )
        for name, key, kind in evaluation.relabel:
            yield Step(cron46.RELABEL, {"queue_name": name, "schedule_key": key, "kind": kind}, "rowcount")
        if evaluation.relabel:
            yield Expire(tuple((Schedule, (name, key)) for name, key, _ in evaluation.relabel))
        return CronPass(
            won=True,
            due=[str(item) for item in evaluation.due],
            unreadable=list(evaluation.invalid),
            slots=evaluation.due,
            filed=filed,
            relabelled=evaluation.relabel,
            now=now,
            prior_cron_on=prior,
        )

    def send_it(self, payloads: Iterable[Any]) -> Operation[list[uuid.UUID]]:
        """The send-it worker's work on its jobs' data (§9.4): send each ``{name, data, options}`` through
        :meth:`send`, so every stored send option is validated and honoured, then set each schedule's
        ``last_job_id`` to the job sent for its latest slot. A send refused (a bad option, a queue gone) is
        logged and skipped: the others go on. Returns the new jobs' ids.
        """
        sent: list[tuple[cron46.SendRequest, uuid.UUID | None]] = []
        for payload in payloads:
            try:
                request = cron46.SendRequest.of(payload)
                job_id = yield from self.send(request.name, request.data, request.options)
            except SqlaBossError as error:
                logger.warning("send-it: could not send %r: %s", payload, error, extra={"queue": cron46.SEND_IT_QUEUE})
                continue
            sent.append((request, job_id))
        latest = cron46.last_jobs(sent)
        if latest is not None:
            yield Step(cron46.SET_LAST_JOBS, {"last_jobs": latest}, "rowcount")
        return [job_id for _, job_id in sent if job_id is not None]

    def create_send_it_queue(self) -> Operation[bool]:
        """Create ``__pgboss__send-it`` with the default settings unless it exists, as pg-boss's timekeeper does
        at start (§9.2); whether it was created. Takes pg-boss's queue-creation lock when it creates it."""
        if (yield Step(self.sql.QUEUE_EXISTS, {"queue_name": cron46.SEND_IT_QUEUE}, "scalar")):
            return False
        yield from self.create_queue(cron46.SEND_IT_QUEUE, {})
        return True

    # ------------------------------------------------ pg-boss 10's maintenance: version 46 has its supervisor

    def _not_yet(self, operation: str) -> NoReturn:
        raise UnsupportedOperationError(
            f"{operation} is pg-boss 10's maintenance (schema version 24); on version 46 the supervisor does it "
            "(Supervisor / AsyncSupervisor, which a Worker runs)"
        )

    def expire(self) -> Operation[int]:
        self._not_yet("expiry")
        yield  # pragma: no cover

    def archive(self, completed_after_seconds: int, failed_after_seconds: int) -> Operation[int]:
        _version_24_only("archive")
        yield  # pragma: no cover

    def drop(self, delete_after_seconds: int) -> Operation[int]:
        _version_24_only("drop (of archived jobs)")
        yield  # pragma: no cover

    def claim(self, clock: Any, interval_seconds: int) -> Operation[bool]:
        self._not_yet("maintenance")
        yield  # pragma: no cover

    def count_states(self) -> Operation[dict[str, Any]]:
        self._not_yet("count_states")
        yield  # pragma: no cover

    def queue_snapshots(self) -> Operation[Any]:
        self._not_yet("queue monitoring")
        yield  # pragma: no cover


def _check_rrule(expression: str) -> None:
    """Refuse a rule ``dateutil`` cannot read (pg-boss reads rules with rrule-temporal)."""
    from dateutil import rrule

    try:
        rrule.rrulestr(expression, forceset=True)
    except (ValueError, TypeError) as exc:
        raise InvalidCronError(f"schedule rule {expression!r} is not an RFC 5545 rule: {exc}") from None


__all__ = ["JobRef", "Operations46", "QueueStats", "RedrivePreview", "UpdateResult", "notify_channel"]
