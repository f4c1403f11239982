"""Every SQL statement of schema version 24 the repository, the workers and maintenance run, built once as
SQLAlchemy Core, without I/O.

The statements name the tables of the models, so they follow the ``schema_translate_map`` they are
executed with. Only the calls of the schema's plpgsql functions are per schema (:func:`queue_functions`).
Each statement is written from pg-boss 10.4's behaviour as PGBOSS10.md describes it; the section is
named beside it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Integer,
    Numeric,
    Select,
    Text,
    TextClause,
    and_,
    any_,
    bindparam,
    case,
    cast,
    column,
    delete,
    exists,
    extract,
    false,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL, JSONB, TIMESTAMP, UUID, insert
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.selectable import CompoundSelect, ExecutableReturnsRows
from sqlalchemy.types import TypeEngine

from sqla_boss.identifiers import DEFAULT_SCHEMA, quote_identifier, validate_schema_name
from sqla_boss.models import Archive, Job, JobState, Queue, QueuePolicy, Schedule, metadata
from sqla_boss.notify import channel_expression
from sqla_boss.options.values import MAX_DURATION_SECONDS

job = metadata.tables[f"{DEFAULT_SCHEMA}.job"]
queue = metadata.tables[f"{DEFAULT_SCHEMA}.queue"]
schedule_table = metadata.tables[f"{DEFAULT_SCHEMA}.schedule"]
subscription = metadata.tables[f"{DEFAULT_SCHEMA}.subscription"]

ONE_SECOND = cast(literal("1 second"), INTERVAL)
_GATED_POLICIES = (QueuePolicy.singleton.value, QueuePolicy.stately.value)


def _ids() -> ColumnElement[bool]:
    return job.c.id == any_(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))


def _typed(name: str, type_: TypeEngine[Any]) -> ColumnElement[Any]:
    """A parameter with an explicit cast, so PostgreSQL knows its type even when it is NULL."""
    return cast(bindparam(name, type_=type_), type_)


def _json_param(name: str) -> ColumnElement[object]:
    """A JSON value sent as text we serialised (and checked) ourselves."""
    return cast(bindparam(name, type_=Text), JSONB)


# ------------------------------------------------------------------------------------ send and insert
# pg-boss's insertJob (send) and insertJobs (insert) in one statement (PGBOSS10.md §4.2-4.6): the jobs
# arrive as one JSON array, are joined to their queue for its defaults, and are inserted with ON CONFLICT
# DO NOTHING. Unlike pg-boss, the statement also reports queues and dead-letter queues that do not exist,
# and then inserts nothing, so the caller gets a clear error and a transaction that is still usable.

_RECORD_COLUMNS = (
    column("name", Text),
    column("data", JSONB),
    column("id", UUID(as_uuid=True)),
    column("priority", Integer),
    column("start_after", Text),
    column("singleton_key", Text),
    column("singleton_seconds", Integer),
    column("singleton_offset", Integer),
    column("expire_in_seconds", Numeric),
    column("keep_until", TIMESTAMP(timezone=True)),
    column("retention", Text),
    column("retry_limit", Integer),
    column("retry_delay", Integer),
    column("retry_backoff", Boolean),
    column("dead_letter", Text),
)


def _const(sql: str, type_: TypeEngine[Any] | None = None) -> ColumnElement[Any]:
    """A constant written into the SQL: no parameter, and a shorter statement (psycopg caches the conversion
    of statements up to 4 KB only, and the planner sees constants)."""
    return literal_column(sql, type_)


def _insert_jobs() -> CompoundSelect[Any]:
    records = (
        func.json_to_recordset(cast(bindparam("jobs", type_=Text), JSON))
        .table_valued(*_RECORD_COLUMNS)
        .render_derived(name="r", with_types=True)
    )
    start_at = case(
        (
            func.right(records.c.start_after, _const("1")) == _const("'Z'"),
            cast(records.c.start_after, TIMESTAMP(timezone=True)),
        ),
        else_=func.now() + cast(func.coalesce(records.c.start_after, _const("'0'")), INTERVAL),
    )
    i = select(records, start_at.label("start_at")).cte("i").c  # the incoming jobs
    q = queue.alias("q")
    dead_letter_queue = queue.alias("d")

    problems = (
        select(_const("'queue'").label("kind"), i.name.label("value"))
        .where(~exists().where(q.c.name == i.name))
        .union_all(
            select(_const("'dead_letter'"), i.dead_letter).where(
                i.dead_letter.is_not(None), ~exists().where(dead_letter_queue.c.name == i.dead_letter)
            )
        )
        .cte("problems")
    )

    second = _const("interval '1 second'", INTERVAL())
    default_retry_delay = _typed("default_retry_delay", Integer())
    backoff = func.coalesce(i.retry_backoff, q.c.retry_backoff, _typed("default_retry_backoff", Boolean()), false())
    delay = func.coalesce(i.retry_delay, q.c.retry_delay, default_retry_delay)
    default_expire = _typed("default_expire_in_seconds", Numeric())
    slot = i.singleton_seconds
    values = {
        "id": func.coalesce(i.id, func.gen_random_uuid()),
        "name": i.name,
        "priority": func.coalesce(i.priority, _const("0")),
        "data": i.data,
        "start_after": i.start_at,
        "singleton_key": i.singleton_key,
        # NULL without a slot: every term is NULL then.
        "singleton_on": _const("'epoch'::timestamp")
        + slot * func.floor((extract("epoch", func.now()) + i.singleton_offset) / slot) * second,
        # The job's, else the queue's, else the constructor's seconds, else 15 minutes.
        "expire_in": func.coalesce(
            func.coalesce(i.expire_in_seconds, q.c.expire_seconds, default_expire) * second,
            _const("interval '15 minutes'", INTERVAL()),
        ),
        "keep_until": func.coalesce(
            i.keep_until,
            i.start_at
            + func.coalesce(
                cast(i.retention, INTERVAL),
                q.c.retention_minutes * _const("interval '1 minute'", INTERVAL()),
                cast(_typed("default_retention", Text()), INTERVAL),
                _const("interval '14 days'", INTERVAL()),
            ),
        ),
        "retry_limit": func.coalesce(
            i.retry_limit, q.c.retry_limit, _typed("default_retry_limit", Integer()), _const("2")
        ),
        "retry_delay": case((backoff, func.greatest(delay, _const("1"))), else_=func.coalesce(delay, _const("0"))),
        "retry_backoff": backoff,
        "dead_letter": func.coalesce(i.dead_letter, q.c.dead_letter),
        "policy": q.c.policy,
    }
    rows = (
        select(*values.values()).join_from(i.name.table, q, q.c.name == i.name).where(~exists(select(problems.c.kind)))
    )
    inserted = (
        insert(job)
        .from_select(list(values), rows)
        .on_conflict_do_nothing()
        .returning(job.c.id, job.c.name)
        .cte("inserted")
    )
    # One pg_notify per queue that received a job, delivered at commit (sqla_boss.notify). PostgreSQL runs
    # a plain CTE only as far as the query reads it, so the final SELECT counts its rows.
    queues = select(inserted.c.name).distinct().subquery("notified_queues")
    notified = select(
        func.pg_notify(channel_expression(_typed("notify_schema", Text()), queues.c.name), _const("''")).label("sent")
    ).cte("notified")
    no_id = cast(null(), UUID(as_uuid=True))
    return union_all(  # the ids in a uuid column of their own: psycopg reads them faster than from text
        select(_const("'id'").label("kind"), cast(null(), Text).label("value"), inserted.c.id.label("id")),
        select(problems.c.kind, problems.c.value, no_id),
        select(_const("'now'"), cast(extract("epoch", func.now()), Text), no_id),
        select(_const("'notified'"), cast(func.count(), Text), no_id).select_from(notified),
    )


INSERT_JOBS = _insert_jobs()
"""Insert the jobs in ``:jobs`` (a JSON array of :meth:`JobInput.record`); rows of (kind, value, id).

``kind`` is ``id`` for each job inserted (its id in ``id``), ``queue`` / ``dead_letter`` for each name that
does not exist (then nothing was inserted), ``now`` once, with the database clock as epoch seconds, and
``notified`` once. Parameters: ``jobs``, ``notify_schema`` (the schema's name, for :mod:`sqla_boss.notify`) and
the constructor defaults ``default_retry_limit``, ``default_retry_delay``, ``default_retry_backoff``,
``default_expire_in_seconds`` and ``default_retention``.
"""

# -------------------------------------------------------------------------------------------- fetch
# pg-boss's fetchNextJob (§5.2-5.3). Unlike pg-boss, candidates whose singleton key already has an active
# job of a singleton or stately queue are passed over instead of failing the whole fetch, so one busy
# key no longer blocks the queue (trap 4); the unique indexes still decide, so a fetch racing another
# one for the same key can still collide, which the repository handles in a savepoint.


_ACTIVATION: dict[str, Any] = {
    "state": JobState.active,
    "started_on": func.now(),
    "retry_count": case((job.c.started_on.is_not(None), job.c.retry_count + 1), else_=job.c.retry_count),
}
"""What a fetch sets on the jobs it activates: a job that was started before uses up a retry."""


def _fetch(by_priority: bool) -> ExecutableReturnsRows:
    busy = job.alias("busy")
    gated = job.c.policy.in_([_const(f"'{policy}'") for policy in _GATED_POLICIES])
    key = func.coalesce(job.c.singleton_key, _const("''"))
    order = [job.c.priority.desc(), job.c.created_on, job.c.id] if by_priority else [job.c.created_on, job.c.id]
    candidates = (
        # Only what the ranking below needs: the whole eligible backlog is sorted when no index serves the
        # order, so every extra or computed column here costs on each of its rows.
        select(job.c.id, job.c.priority, job.c.created_on, job.c.policy, job.c.singleton_key)
        .where(
            job.c.name == bindparam("queue_name", type_=Text),
            # A constant, not a parameter: so the planner can match the opt-in partial fetch index
            # (schema.FETCH_INDEX, WHERE state < 'active') even in a prepared statement's generic plan.
            job.c.state < literal_column("'active'", job.c.state.type),
            # statement_timestamp(), not now(): in the caller's long transaction now() stands still, and
            # a job sent earlier in the same transaction would never become due.
            or_(_typed("ignore_start_after", Boolean()), job.c.start_after < func.statement_timestamp()),
            or_(
                ~gated,
                job.c.policy.is_(None),
                # Not a correlated EXISTS: the planner costs that as a scan per candidate, which on a large
                # backlog crosses jit_above_cost and JIT-compiles every fetch (~300 ms). This subquery is
                # uncorrelated, so it runs once, into a hash.
                tuple_(job.c.policy, key).not_in(
                    select(busy.c.policy, func.coalesce(busy.c.singleton_key, _const("''"))).where(
                        busy.c.name == bindparam("queue_name", type_=Text),
                        busy.c.state == literal_column("'active'", job.c.state.type),
                        busy.c.policy.in_([_const(f"'{policy}'") for policy in _GATED_POLICIES]),
                    )
                ),
            ),
        )
        .order_by(*order)
        .limit(bindparam("batch_size", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("candidates")
    )
    c = candidates.c
    candidate_order = [c.priority.desc(), c.created_on, c.id] if by_priority else [c.created_on, c.id]
    candidate_gated = c.policy.in_(_GATED_POLICIES)
    candidate_key = func.coalesce(c.singleton_key, "")
    rank = func.row_number().over(partition_by=[candidate_gated, candidate_key], order_by=candidate_order)
    ranked = select(c.id, candidate_gated.label("gated"), rank.label("rank")).cte("ranked")
    chosen = select(ranked.c.id).where(or_(ranked.c.gated.is_not(True), ranked.c.rank == 1)).cte("chosen")
    activate = (
        update(job)
        .where(job.c.name == bindparam("queue_name", type_=Text), job.c.id == chosen.c.id)
        .values(**_ACTIVATION)
        .returning(*job.c)
    )
    return select(Job).from_statement(activate)


FETCH_BY_PRIORITY = _fetch(by_priority=True)
"""Activate up to ``:batch_size`` jobs of queue ``:name``, highest priority first; returns their rows."""
FETCH_BY_AGE = _fetch(by_priority=False)
"""The same, oldest first, ignoring priority."""

# ------------------------------------------------------------------------------------ state changes (§6)

COMPLETE = (
    update(job)
    .where(job.c.name == bindparam("queue_name", type_=Text), _ids(), job.c.state == JobState.active)
    .values(completed_on=func.now(), state=JobState.completed, output=_json_param("job_output"))
)
"""Complete the active jobs among ``:ids`` of queue ``:name``, storing ``:output``."""

CANCEL = (
    update(job)
    .where(job.c.name == bindparam("queue_name", type_=Text), _ids(), job.c.state < JobState.completed)
    .values(completed_on=func.now(), state=JobState.cancelled)
)
"""Cancel the created, retry and active jobs among ``:ids``."""

RESUME = (
    update(job)
    .where(job.c.name == bindparam("queue_name", type_=Text), _ids(), job.c.state == JobState.cancelled)
    .values(completed_on=None, state=JobState.created)
)
"""Return the cancelled jobs among ``:ids`` to ``created``; keeps ``started_on`` and ``retry_count``."""

RETRY = (
    update(job)
    .where(job.c.name == bindparam("queue_name", type_=Text), _ids(), job.c.state == JobState.failed)
    .values(state=JobState.retry, retry_limit=job.c.retry_limit + 1)
)
"""Give the failed jobs among ``:ids`` one more try; ``completed_on`` stays set, as in pg-boss (trap 12)."""

DELETE_JOBS = delete(job).where(job.c.name == bindparam("queue_name", type_=Text), _ids())
"""Delete the jobs among ``:ids``, whatever their state; nothing is archived."""


def _fail(which: ColumnElement[bool], output: ColumnElement[Any]) -> Select[Any]:
    # pg-boss's failJobs (§6.2-6.3): delete, re-insert as retry or failed, then copy to the dead letter.
    # Used for fail() (jobs by id) and for expiry (active jobs past their expire_in, §8.1).
    deleted = delete(job).where(which).returning(*job.c).cte("deleted")
    d = deleted.c
    will_retry = d.retry_count < d.retry_limit
    columns = [c.name for c in job.c]

    def reinsert_values(
        state: ColumnElement[Any], start_after: ColumnElement[Any], completed_on: ColumnElement[Any]
    ) -> list[ColumnElement[Any]]:
        chosen = {"state": state, "start_after": start_after, "completed_on": completed_on, "output": output}
        return [chosen.get(name, d[name]) for name in columns]

    # Capped at MAX_DURATION_SECONDS (1000 years), where pg-boss has no cap: a huge retry_delay doubled 16
    # times would pass year 9999, which no Python datetime (so no read of the job) can hold.
    backoff_seconds = func.least(
        d.retry_delay * func.power(2, func.least(16, d.retry_count + 1)) / 2 * (1 + func.random()),
        _const(str(int(MAX_DURATION_SECONDS))),
    )
    retried = (
        insert(job)
        .from_select(
            columns,
            select(
                *reinsert_values(
                    case((will_retry, literal(JobState.retry.value)), else_=literal(JobState.failed.value)).cast(
                        job.c.state.type
                    ),
                    case(
                        (d.retry_count == d.retry_limit, d.start_after),
                        (d.retry_backoff.is_not(True), func.now() + d.retry_delay * ONE_SECOND),
                        else_=func.now() + backoff_seconds * ONE_SECOND,
                    ),
                    case((will_retry, null()), else_=func.now()),
                )
            ),
        )
        .on_conflict_do_nothing()
        .returning(*job.c)
        .cte("retried")
    )
    forced = (
        insert(job)
        .from_select(
            columns,
            select(
                *reinsert_values(literal(JobState.failed.value).cast(job.c.state.type), d.start_after, func.now())
            ).where(d.id.not_in(select(retried.c.id))),
        )
        .on_conflict_do_nothing()
        .returning(*job.c)
        .cte("forced")
    )
    results = select(retried).union_all(select(forced)).cte("results")
    r = results.c
    dead_lettered = (
        insert(job)
        .from_select(
            ["name", "data", "output", "retry_limit", "keep_until"],
            select(r.dead_letter, r.data, r.output, r.retry_limit, r.keep_until + (r.keep_until - r.start_after)).where(
                r.state == JobState.failed, r.dead_letter.is_not(None), r.name != r.dead_letter
            ),
        )
        .returning(job.c.id)
        .cte("dead_lettered")
    )
    return select(
        select(func.count()).select_from(results).scalar_subquery(),
        select(func.count()).select_from(dead_lettered).scalar_subquery(),
    )


FAIL = _fail(
    and_(job.c.name == bindparam("queue_name", type_=Text), _ids(), job.c.state < JobState.completed),
    _json_param("job_output"),
)
"""Fail the created, retry and active jobs among ``:ids`` with ``:job_output``; returns (affected, dead-lettered)."""

EXPIRED_OUTPUT = {"value": {"message": "job failed by timeout in active state"}}
"""What pg-boss stores as the output of a job its maintenance failed for running too long."""

EXPIRE = _fail(
    and_(job.c.state == JobState.active, job.c.started_on + job.c.expire_in < func.now()),
    cast(literal(json.dumps(EXPIRED_OUTPUT)), JSONB),
)
"""Fail every active job, of every queue, that ran past its ``expire_in`` (§8.1); returns (affected, dead-lettered)."""

GET_JOB = select(Job).where(Job.name == bindparam("queue_name", type_=Text), Job.id == bindparam("job_id"))
FIND_JOB = select(Job).where(Job.id == bindparam("job_id")).order_by(Job.name).limit(1)
"""A job by its id alone, in whichever queue (ids are UUIDs: one queue holds it)."""
FIND_ARCHIVED_JOB = (
    select(Archive).where(Archive.id == bindparam("job_id")).order_by(Archive.archived_on.desc()).limit(1)
)
"""An archived job by its id alone, the latest archived copy."""
QUEUES_OF_JOBS = select(job.c.name, job.c.id).where(_ids())
"""The queue of each of the jobs ``:ids`` that exist."""
JOB_IDS_IN_STATE = select(job.c.id).where(
    job.c.name == bindparam("queue_name", type_=Text), job.c.state == bindparam("state")
)
"""The ids of the queue's jobs in one state."""
NEWEST_JOBS = (
    select(Job)
    .where(Job.name == bindparam("queue_name", type_=Text))
    .order_by(Job.created_on.desc(), Job.id)
    .limit(bindparam("limit", type_=Integer))
)
"""The queue's newest jobs, at most ``:limit``."""
NEWEST_JOBS_IN_STATE = NEWEST_JOBS.where(Job.state == bindparam("state"))
"""The queue's newest jobs in one state, at most ``:limit``."""
JOB_STATES = select(job.c.id, job.c.state).where(job.c.name == bindparam("queue_name", type_=Text), _ids())
"""The state of each of the queue's jobs ``:ids`` (the testing kit's runs read which failures were retried)."""
GET_ARCHIVED_JOB = select(Archive).where(
    Archive.name == bindparam("queue_name", type_=Text), Archive.id == bindparam("job_id")
)

# ------------------------------------------------------------------------------------------- queues (§3)

QUEUE_EXISTS = select(exists().where(queue.c.name == bindparam("queue_name", type_=Text)))
EXISTING_QUEUES = select(queue.c.name).where(queue.c.name == any_(bindparam("queue_names", type_=ARRAY(Text))))
"""The queues among ``:queue_names`` that exist."""
ANY_QUEUE = select(exists().where(queue.c.name.is_not(None)))
GET_QUEUE = select(Queue).where(Queue.name == bindparam("queue_name", type_=Text))
GET_QUEUES = select(Queue).order_by(Queue.name)

UPDATE_QUEUE = (
    update(queue)
    .where(queue.c.name == bindparam("queue_name", type_=Text))
    .values(
        policy=func.coalesce(cast(bindparam("new_policy", type_=Text), Text), queue.c.policy),
        retry_limit=func.coalesce(bindparam("new_retry_limit", type_=Integer), queue.c.retry_limit),
        retry_delay=func.coalesce(bindparam("new_retry_delay", type_=Integer), queue.c.retry_delay),
        retry_backoff=func.coalesce(bindparam("new_retry_backoff", type_=Boolean), queue.c.retry_backoff),
        expire_seconds=func.coalesce(bindparam("new_expire_seconds", type_=Integer), queue.c.expire_seconds),
        retention_minutes=func.coalesce(bindparam("new_retention_minutes", type_=Integer), queue.c.retention_minutes),
        dead_letter=func.coalesce(bindparam("new_dead_letter", type_=Text), queue.c.dead_letter),
        updated_on=func.now(),
    )
    .returning(queue.c.name)
)
"""pg-boss's updateQueue (§3.3): each given setting replaces the stored one; none can be cleared."""

_name = bindparam("queue_name", type_=Text)
QUEUE_BLOCKERS = select(
    exists().where(job.c.name == _name).label("has_jobs"),
    exists().where(queue.c.dead_letter == _name, queue.c.name != _name).label("is_dead_letter_of_queue"),
    exists().where(job.c.dead_letter == _name, job.c.name != _name).label("is_dead_letter_of_job"),
)
"""Why ``delete_queue`` would fail for ``:name`` (§1.10): jobs left, or referenced as a dead letter."""

PURGE_QUEUE = (
    delete(job)
    .where(job.c.name == bindparam("queue_name", type_=Text), job.c.state < JobState.active)
    .returning(job.c.id)
)
"""Delete the created and retry jobs of ``:queue_name``; returns their ids."""

QUEUE_SIZE = (
    select(func.count())
    .select_from(job)
    .where(job.c.name == bindparam("queue_name", type_=Text), job.c.state < bindparam("before", type_=job.c.state.type))
)


@dataclass(frozen=True)
class QueueFunctions:
    """Calls of the schema's ``create_queue`` and ``delete_queue``, which are not subject to translation."""

    create: TextClause
    delete: TextClause
    check_job_constraints_now: TextClause
    """Run the pending deferred foreign-key checks of every partition now (``SET CONSTRAINTS ... IMMEDIATE``)."""
    defer_job_constraints: TextClause
    """Put those checks back to their declared ``INITIALLY DEFERRED``."""


@functools.lru_cache(maxsize=64)
def queue_functions(schema: str) -> QueueFunctions:
    quoted = quote_identifier(validate_schema_name(schema))
    return QueueFunctions(
        create=text(f"SELECT {quoted}.create_queue(:queue_name, CAST(:queue_options AS json))"),
        delete=text(f"SELECT {quoted}.delete_queue(:queue_name)"),
        check_job_constraints_now=text(f"SET CONSTRAINTS {quoted}.q_fkey, {quoted}.dlq_fkey IMMEDIATE"),
        defer_job_constraints=text(f"SET CONSTRAINTS {quoted}.q_fkey, {quoted}.dlq_fkey DEFERRED"),
    )


# ------------------------------------------------------------------------------------ pub/sub (§10)

SUBSCRIBE = (
    insert(subscription)
    .from_select(
        ["event", "name"],
        select(bindparam("event_name", type_=Text), _name).where(exists().where(queue.c.name == _name)),
    )
    .on_conflict_do_update(index_elements=["event", "name"], set_={"updated_on": func.now()})
    .returning(subscription.c.name)
)
"""Subscribe queue ``:name`` to ``:event``; returns no row when the queue does not exist."""

UNSUBSCRIBE = delete(subscription).where(
    subscription.c.event == bindparam("event_name", type_=Text), subscription.c.name == _name
)
SUBSCRIBERS = (
    select(subscription.c.name)
    .where(subscription.c.event == bindparam("event_name", type_=Text))
    .order_by(subscription.c.name)
)

# ---------------------------------------------------------------------------------- schedules (§9.1)

_schedule_insert = insert(schedule_table).from_select(
    ["name", "cron", "timezone", "data", "options"],
    select(
        _name,
        bindparam("cron_expression", type_=Text),
        bindparam("time_zone", type_=Text),
        _json_param("schedule_data"),
        _json_param("schedule_options"),
    ).where(exists().where(queue.c.name == _name)),
)
SCHEDULE = _schedule_insert.on_conflict_do_update(
    index_elements=["name"],
    set_={
        "cron": _schedule_insert.excluded.cron,
        "timezone": _schedule_insert.excluded.timezone,
        "data": _schedule_insert.excluded.data,
        "options": _schedule_insert.excluded.options,
        "updated_on": func.now(),
    },
).returning(schedule_table.c.name)
"""Create or replace the schedule of queue ``:name``; returns no row when the queue does not exist."""

UNSCHEDULE = delete(schedule_table).where(schedule_table.c.name == _name)
GET_SCHEDULES = select(Schedule).order_by(Schedule.name)


# --------------------------------------------------------------------------------- maintenance (§8)

_archive_columns = [c.name for c in job.c]
_archived = (
    delete(job)
    .where(
        or_(
            and_(
                job.c.state != JobState.failed,
                job.c.completed_on < func.now() - _typed("completed_after_seconds", Integer()) * ONE_SECOND,
            ),
            and_(
                job.c.state == JobState.failed,
                job.c.completed_on < func.now() - _typed("failed_after_seconds", Integer()) * ONE_SECOND,
            ),
            and_(job.c.state < JobState.active, job.c.keep_until < func.now()),
        )
    )
    .returning(*job.c)
    .cte("archived")
)
_archive_table = metadata.tables[f"{DEFAULT_SCHEMA}.archive"]
ARCHIVE = select(
    select(func.count())
    .select_from(
        insert(_archive_table)
        .from_select(
            [*_archive_columns, "archived_on"], select(*[_archived.c[name] for name in _archive_columns], func.now())
        )
        .on_conflict_do_nothing()
        .returning(_archive_table.c.id)
        .cte("stored")
    )
    .scalar_subquery()
)
"""Move finished jobs older than ``:completed_after_seconds`` / ``:failed_after_seconds``, and queued jobs past
``keep_until``, from ``job`` to ``archive`` (§8.2). A job already archived under its (name, id) is lost, as in
pg-boss. Returns how many rows the archive took."""

DROP_ARCHIVED = delete(_archive_table).where(
    _archive_table.c.archived_on < func.now() - _typed("delete_after_seconds", Integer()) * ONE_SECOND
)
"""Delete archived jobs older than ``:delete_after_seconds`` (§8.3)."""


version = metadata.tables[f"{DEFAULT_SCHEMA}.version"]


def _claim(clock: str) -> Update:
    column = version.c[clock]
    since = extract("epoch", func.now() - func.coalesce(column, func.now() - cast(literal("1 week"), INTERVAL)))
    return (
        update(version)
        .where(since > _typed("interval_seconds", Numeric()))
        .values({clock: func.now()})
        .returning(func.now())
    )


CLAIM_MAINTENANCE = _claim("maintained_on")
"""Claim this turn of maintenance for the whole cluster (§8.4): a row back (the database's clock) means this
instance won."""
CLAIM_MONITORING = _claim("monitored_on")
"""Claim this turn of state monitoring (§8.5)."""
CLAIM_CRON = _claim("cron_on")
"""Claim this turn of cron evaluation (§9.3)."""

CLAIMS = {"maintenance": CLAIM_MAINTENANCE, "monitoring": CLAIM_MONITORING, "cron": CLAIM_CRON}
"""The claim of each cluster-wide turn, by the name :class:`~sqla_boss.operations.Clock` gives it."""

COUNT_STATES = select(job.c.name, job.c.state, func.count()).group_by(func.rollup(job.c.name), func.rollup(job.c.state))
"""pg-boss's countStates query (§8.5): counts per queue and state, with the ROLLUP subtotals."""

QUEUE_SNAPSHOTS = (
    select(
        queue.c.name,
        func.count(job.c.id).filter(job.c.state == JobState.created).label("created"),
        func.count(job.c.id).filter(job.c.state == JobState.retry).label("retry"),
        func.count(job.c.id).filter(job.c.state == JobState.active).label("active"),
        func.count(job.c.id).filter(job.c.state == JobState.completed).label("completed"),
        func.count(job.c.id).filter(job.c.state == JobState.cancelled).label("cancelled"),
        func.count(job.c.id).filter(job.c.state == JobState.failed).label("failed"),
        extract("epoch", func.now() - func.min(job.c.created_on).filter(job.c.state < JobState.active)).label(
            "oldest_queued_seconds"
        ),
    )
    .select_from(queue.outerjoin(job, job.c.name == queue.c.name))
    .group_by(queue.c.name)
    .order_by(queue.c.name)
)
"""Per queue: jobs by state and the age in seconds of its oldest queued (created or retry) job."""
