"""Every SQL statement of schema version 46 the repository runs, built once as SQLAlchemy Core, without I/O.

The same names as :mod:`sqla_boss.v24.statements` for what runs the same. The statements name the version-46
models' tables, so they follow the ``schema_translate_map`` they run with; they run on the partitioned ``job``
table, and PostgreSQL routes each row to the queue's own table (``job_common`` or the queue's partition), as
pg-boss does by naming that table. Every clock reading is the schema's ``job_now()`` (:data:`JOB_NOW`), as in
pg-boss 12, so a Node ``TestClock`` drives both. Each statement is written from PGBOSS12.md; the section is
named beside it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Integer,
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
    table,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL, JSONB, TIMESTAMP, UUID, insert
from sqlalchemy.sql.selectable import Alias, CompoundSelect, ExecutableReturnsRows
from sqlalchemy.types import TypeEngine

from sqla_boss.identifiers import DEFAULT_SCHEMA, quote_identifier, validate_schema_name
from sqla_boss.models.enums import JobState
from sqla_boss.options.values import MAX_DURATION_SECONDS
from sqla_boss.schema import advisory_lock_key
from sqla_boss.v46.models import Base, Job, Queue, QueuePolicy, Schedule

_tables = Base.metadata.tables
job = _tables[f"{DEFAULT_SCHEMA}.job"]
queue = _tables[f"{DEFAULT_SCHEMA}.queue"]
schedule_table = _tables[f"{DEFAULT_SCHEMA}.schedule"]
subscription = _tables[f"{DEFAULT_SCHEMA}.subscription"]
job_dependency = _tables[f"{DEFAULT_SCHEMA}.job_dependency"]

JOB_NOW = literal_column(f"__[SCHEMA_{DEFAULT_SCHEMA}].job_now()", TIMESTAMP(timezone=True))
"""``<schema>.job_now()``, the clock of every pg-boss 12 statement. A function is not a table, so the schema
translation does not reach it by itself: this is SQLAlchemy's own placeholder for the translated schema, which
it replaces (quoted) in the SQL of every statement run with a ``schema_translate_map``, as the driver runs them."""

ONE_SECOND = literal_column("interval '1 second'", INTERVAL())
PLAIN_POLICIES = (QueuePolicy.standard, QueuePolicy.short, QueuePolicy.exclusive)
"""The policies whose fetch is plain (:data:`FETCH_PLAIN`): their rules are all in the unique indexes at send."""

_GATED: list[ColumnElement[Any]] = [
    literal_column(f"'{policy.value}'") for policy in (QueuePolicy.singleton, QueuePolicy.stately)
]
"""The policies whose fetch passes over busy keys, as constants (a list of values would be an expanding
parameter, which :mod:`sqla_boss.direct` leaves to SQLAlchemy)."""
_FIFO = QueuePolicy.key_strict_fifo.value


def const(sql: str, type_: TypeEngine[Any] | None = None) -> ColumnElement[Any]:
    return literal_column(sql, type_)


def _typed(name: str, type_: TypeEngine[Any]) -> ColumnElement[Any]:
    """A parameter with an explicit cast, so PostgreSQL knows its type even when it is NULL."""
    return cast(bindparam(name, type_=type_), type_)


def _json_param(name: str) -> ColumnElement[object]:
    """A JSON value sent as text we serialised (and checked) ourselves."""
    return cast(bindparam(name, type_=Text), JSONB)


def state_constant(state: JobState) -> ColumnElement[Any]:
    """A state as a constant of the enum type (the planner matches it against the partial indexes)."""
    return literal_column(f"'{state.value}'", job.c.state.type)


_queue_name = bindparam("queue_name", type_=Text)


def _ids() -> ColumnElement[bool]:
    return job.c.id == any_(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))


def _attempts() -> ColumnElement[bool]:
    """The fence of §6.1: with ``:attempts`` (``id:retry_count`` texts, from the job objects given) only the
    active attempts named; with NULL (plain ids), any row of ``:ids``."""
    attempts = _typed("attempts", ARRAY(Text))
    attempt = cast(job.c.id, Text).concat(const("':'")).concat(cast(job.c.retry_count, Text))
    return or_(attempts.is_(None), and_(job.c.state == state_constant(JobState.active), attempt == any_(attempts)))


# ------------------------------------------------------------------------------------ send and insert (§4)

_RECORD_COLUMNS = (
    column("name", Text),
    column("data", JSONB),
    column("id", UUID(as_uuid=True)),
    column("priority", Integer),
    column("start_after", Text),
    column("singleton_key", Text),
    column("singleton_seconds", Integer),
    column("singleton_offset", Integer),
    column("group_id", Text),
    column("group_tier", Text),
    column("expire_in_seconds", Integer),
    column("delete_after_seconds", Integer),
    column("retention_seconds", Integer),
    column("retry_limit", Integer),
    column("retry_delay", Integer),
    column("retry_backoff", Boolean),
    column("retry_delay_max", Integer),
    column("heartbeat_seconds", Integer),
    column("dead_letter", Text),
    column("trace_context", JSONB),
)


def incoming_rows(name: str, extra: tuple[tuple[str, TypeEngine[Any]], ...] = ()) -> tuple[Any, Any]:
    """The jobs of the JSON parameter ``:jobs`` (:meth:`~sqla_boss.options.v46.JobInput.record`'s objects, and
    the ``extra`` columns), with ``start_at``, their start: a CTE named ``name`` for the statement's
    ``add_cte()``, and the table its columns are read through. §4.3: a timestamp (ours always end in Z) is
    cast; anything else is an interval from now.

    The CTE selects ``r.*``, not each column "AS" itself: the statement stays under the 4 KB up to which
    psycopg caches its conversion (a per-call cost otherwise)."""
    columns = [*_RECORD_COLUMNS, *(column(key, type_) for key, type_ in extra)]
    records = (
        func.json_to_recordset(cast(bindparam("jobs", type_=Text), JSON))
        .table_valued(*columns)
        .render_derived(name="r", with_types=True)
    )
    start_at = case(
        (func.right(records.c.start_after, const("1")) == const("'Z'"), cast(records.c.start_after, TIMESTAMP(True))),
        else_=JOB_NOW + cast(func.coalesce(records.c.start_after, const("'0'")), INTERVAL),
    )
    cte = select(literal_column("r.*"), start_at.label("start_at")).select_from(records).cte(name)
    view = table(name, *(column(c.name, c.type) for c in columns), column("start_at", TIMESTAMP(True)))
    return cte, view


def job_values(i: Any, q: Any) -> dict[str, ColumnElement[Any]]:
    """The columns of a new job from its incoming record ``i`` (:func:`incoming_rows`) and its queue ``q``, by pg-boss
    12's precedence (§4.2): the job's setting, else the queue's, else pg-boss's default (which applies only when
    the queue row is missing, and ``q_fkey`` then fails at commit)."""
    slot = i.singleton_seconds
    return {
        "id": func.coalesce(i.id, func.gen_random_uuid()),
        "name": i.name,
        "data": i.data,
        "priority": func.coalesce(i.priority, const("0")),
        "start_after": i.start_at,
        "singleton_key": i.singleton_key,
        # §4.4: NULL without a slot, as every term is NULL then.
        "singleton_on": const("'epoch'::timestamp")
        + slot
        * func.floor((extract("epoch", JOB_NOW) + func.coalesce(i.singleton_offset, const("0"))) / slot)
        * ONE_SECOND,
        "group_id": i.group_id,
        "group_tier": i.group_tier,
        "expire_seconds": func.coalesce(i.expire_in_seconds, q.c.expire_seconds, const("900")),
        "deletion_seconds": func.coalesce(i.delete_after_seconds, q.c.deletion_seconds, const("604800")),
        "keep_until": i.start_at
        + func.coalesce(i.retention_seconds, q.c.retention_seconds, const("1209600")) * ONE_SECOND,
        "retry_limit": func.coalesce(i.retry_limit, q.c.retry_limit, const("2")),
        "retry_delay": func.coalesce(i.retry_delay, q.c.retry_delay, const("0")),
        "retry_backoff": func.coalesce(i.retry_backoff, q.c.retry_backoff, false()),
        "retry_delay_max": func.coalesce(i.retry_delay_max, q.c.retry_delay_max),
        "heartbeat_seconds": func.coalesce(i.heartbeat_seconds, q.c.heartbeat_seconds),
        "dead_letter": func.coalesce(i.dead_letter, q.c.dead_letter),
        "policy": q.c.policy,
        "created_on": JOB_NOW,
        "trace_context": i.trace_context,
    }


def notify_if_due(rows: Any, names: ColumnElement[Any]) -> Any:
    """§10: one ``pg_notify`` on ``:notify_channel`` per notify-enabled queue among ``names`` (a column of
    ``rows``) when one of ``rows`` is due now; delivered at commit."""
    due = (
        select(names.label("name"))
        .select_from(rows)
        .join(queue, queue.c.name == names)
        .where(queue.c.notify, rows.c.start_after <= JOB_NOW)
        .distinct()
        .subquery("due")
    )
    return select(func.pg_notify(bindparam("notify_channel", type_=Text), due.c.name).label("sent")).cte("notified")


def _insert_jobs() -> CompoundSelect[Any]:
    incoming, view = incoming_rows("i")
    i = view.c
    q = queue.alias("q")
    dead_letter_queue = queue.alias("d")
    problems = (
        select(const("'queue'").label("kind"), i.name.label("value"))
        .where(~exists().where(q.c.name == i.name))
        .union_all(
            select(const("'dead_letter'"), i.dead_letter).where(
                i.dead_letter.is_not(None), ~exists().where(dead_letter_queue.c.name == i.dead_letter)
            ),
            select(const("'key_required'"), i.name).where(
                i.singleton_key.is_(None), exists().where(q.c.name == i.name, q.c.policy == const(f"'{_FIFO}'"))
            ),
        )
        .cte("problems")
    )
    values = job_values(i, q)
    rows = (
        select(*values.values()).join_from(i.name.table, q, q.c.name == i.name).where(~exists(select(problems.c.kind)))
    )
    inserted = (
        insert(job)
        .from_select(list(values), rows)
        .on_conflict_do_nothing()
        .returning(job.c.id, job.c.name, job.c.start_after)
        .cte("inserted")
    )
    notified = notify_if_due(inserted, inserted.c.name)
    no_id = cast(null(), UUID(as_uuid=True))
    return union_all(
        select(const("'id'").label("kind"), cast(null(), Text).label("value"), inserted.c.id.label("id")),
        select(problems.c.kind, problems.c.value, no_id),
        select(const("'now'"), cast(extract("epoch", JOB_NOW), Text), no_id),
        select(const("'notified'"), cast(func.count(), Text), no_id).select_from(notified),
    ).add_cte(incoming)


INSERT_JOBS = _insert_jobs()
"""Insert the jobs of ``:jobs`` (a JSON array of :meth:`~sqla_boss.options.v46.JobInput.record`); rows of
(kind, value, id) as in version 24, plus ``key_required`` for a job without a key sent to a key_strict_fifo
queue (then nothing was inserted). ``:notify_channel`` is pg-boss 12's channel of the schema (§10)."""

# --------------------------------------------------------------------------------------------- fetch (§5)


def _as_alias(alias: Any) -> Alias:
    """An alias of a table, as ``update()`` takes it (SQLAlchemy types ``Table.alias()`` more loosely)."""
    assert isinstance(alias, Alias)
    return alias


def _fetch() -> ExecutableReturnsRows:
    # The queue's policy, read once (a CTE), and named short: psycopg caches the conversion of statements up
    # to 4 KB only. For the same reason the parameters carry their type once, and constants are constants.
    queue_policy = select(queue.c.policy).where(queue.c.name == _queue_name).cte("qp")
    policy = select(queue_policy.c.policy).scalar_subquery()
    fifo = const(f"'{_FIFO}'")
    j = job.alias("j")
    ignore_start_after = _typed("ignore_start_after", Boolean())
    due = or_(ignore_start_after, j.c.start_after <= JOB_NOW)
    key = func.coalesce(j.c.singleton_key, const("''"))
    busy = job.alias("busy")
    head = job.alias("head")
    other = job.alias("other")
    active = job.alias("active")
    # The head of each key: its first queued row by (state DESC, created_on, id), a retry before created ones.
    head_rank = func.row_number().over(
        partition_by=head.c.singleton_key, order_by=[head.c.state.desc(), head.c.created_on, head.c.id]
    )
    ranked_heads = (
        select(head.c.id, head_rank.label("head_rank"))
        .where(
            head.c.name == _queue_name,
            head.c.state < state_constant(JobState.active),
            ~head.c.blocked,
            head.c.policy == fifo,
            or_(ignore_start_after, head.c.start_after <= JOB_NOW),
        )
        .subquery("heads")
    )
    fifo_heads = select(ranked_heads.c.id).where(ranked_heads.c.head_rank == const("1"))
    group_default = bindparam("group_default", type_=Integer)
    group_limit = func.coalesce(cast(_json_param("group_tiers").op("->>")(j.c.group_tier), Integer), group_default)
    group_active = (
        select(func.count())
        .where(
            active.c.name == _queue_name,
            active.c.state == state_constant(JobState.active),
            active.c.group_id == j.c.group_id,
        )
        .scalar_subquery()
    )
    min_priority, max_priority = bindparam("min_priority", type_=Integer), bindparam("max_priority", type_=Integer)
    candidates = (
        select(j.c.id, j.c.singleton_key, j.c.group_id, j.c.group_tier, group_limit.label("group_limit"))
        .where(
            j.c.name == _queue_name,
            j.c.state < state_constant(JobState.active),
            ~j.c.blocked,
            due,
            or_(
                policy.is_distinct_from(fifo),
                and_(
                    j.c.id.in_(fifo_heads),
                    ~exists().where(
                        other.c.name == _queue_name,
                        other.c.singleton_key == j.c.singleton_key,
                        other.c.id != j.c.id,
                        other.c.state.in_(
                            [
                                state_constant(JobState.active),
                                state_constant(JobState.retry),
                                state_constant(JobState.failed),
                            ]
                        ),
                    ),
                ),
            ),
            or_(
                policy.not_in(_GATED),
                policy.is_(None),
                key.not_in(
                    select(func.coalesce(busy.c.singleton_key, const("''"))).where(
                        busy.c.name == _queue_name,
                        busy.c.state == state_constant(JobState.active),
                        busy.c.policy == policy,
                    )
                ),
            ),
            or_(min_priority.is_(None), j.c.priority >= min_priority),
            or_(max_priority.is_(None), j.c.priority <= max_priority),
            or_(group_default.is_(None), j.c.group_id.is_(None), group_active < group_limit),
        )
        .order_by(j.c.priority.desc(), j.c.created_on)
        .limit(bindparam("batch_size", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("candidates")
    )
    c = candidates.c
    ranked_active = (
        select(func.count())
        .where(
            active.c.name == _queue_name,
            active.c.state == state_constant(JobState.active),
            active.c.group_id == c.group_id,
        )
        .scalar_subquery()
    )
    ranked = select(
        c.id,
        c.group_id,
        c.group_limit,
        func.row_number().over(partition_by=c.singleton_key).label("key_rank"),
        func.row_number().over(partition_by=c.group_id, order_by=c.id).label("group_rank"),
        ranked_active.label("group_active"),
    ).cte("ranked")
    r = ranked.c
    chosen = (
        select(r.id)
        .where(
            or_(policy.not_in(_GATED), policy.is_(None), r.key_rank == const("1")),
            or_(group_default.is_(None), r.group_id.is_(None), r.group_active + r.group_rank <= r.group_limit),
        )
        .cte("chosen")
    )
    u = _as_alias(job.alias("u"))  # "u.x" 37 times in RETURNING, not "<schema>.job.x"
    activate = (
        update(u)
        # = ANY(ARRAY(...)), not a join: the planner would hash-join a small batch against a scan of the whole
        # table; this is an index lookup per id, whatever the table's size.
        .where(u.c.name == _queue_name, u.c.id == any_(func.array(select(chosen.c.id).scalar_subquery())))
        .values(
            state=state_constant(JobState.active),
            started_on=JOB_NOW,
            heartbeat_on=JOB_NOW,
            retry_count=case((u.c.started_on.is_not(None), u.c.retry_count + const("1")), else_=u.c.retry_count),
        )
        .returning(*u.c)
    )
    return select(Job).from_statement(activate)


def _fetch_plain() -> ExecutableReturnsRows:
    queue_policy = select(queue.c.policy).where(queue.c.name == _queue_name).cte("qp")
    j = job.alias("j")
    candidates = (
        select(j.c.id)
        .where(
            j.c.name == _queue_name,
            j.c.state < state_constant(JobState.active),
            ~j.c.blocked,
            or_(_typed("ignore_start_after", Boolean()), j.c.start_after <= JOB_NOW),
            select(queue_policy.c.policy).scalar_subquery().in_(_PLAIN),
        )
        .order_by(j.c.priority.desc(), j.c.created_on)
        .limit(bindparam("batch_size", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("candidates")
    )
    u = _as_alias(job.alias("u"))
    activate = (
        update(u)
        .where(u.c.name == _queue_name, u.c.id == any_(func.array(select(candidates.c.id).scalar_subquery())))
        .values(
            state=state_constant(JobState.active),
            started_on=JOB_NOW,
            heartbeat_on=JOB_NOW,
            retry_count=case((u.c.started_on.is_not(None), u.c.retry_count + const("1")), else_=u.c.retry_count),
        )
        .returning(*u.c)
    )
    return select(Job).from_statement(activate)


_PLAIN: list[ColumnElement[Any]] = [literal_column(f"'{policy.value}'") for policy in PLAIN_POLICIES]

FETCH_PLAIN = _fetch_plain()

GROUP_FETCH_LOCK = select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("lock_text", type_=Text), 0)))
"""sqla_boss's own lock, not pg-boss's: taken before a fetch with ``group_concurrency`` (the key names the schema
and queue, ``:lock_text``), so that concurrent sqla_boss fetches of one queue count each other's activations.
pg-boss 12's fetch counts a group's active jobs in the statement's snapshot, without a lock, so two
concurrent fetches can both take a group's last slot (see docs/differences.md)."""
""":data:`FETCH` without what only some queues and options need, for a queue whose policy fetch need not look at
(:data:`PLAIN_POLICIES`) and no ``group_concurrency``, ``min_priority`` or ``max_priority``: a quarter of
its time in the database. It checks the queue's policy itself and fetches nothing from another queue, so a
caller that guessed wrong (a queue deleted and made again with another policy) loses nothing."""

FETCH = _fetch()
"""Activate up to ``:batch_size`` jobs of ``:queue_name`` by pg-boss 12's rules (§5.2); returns their rows.
Parameters: ``ignore_start_after``, ``min_priority``, ``max_priority``, ``group_default``, ``group_tiers``."""

# ---------------------------------------------------------------------------------- state changes (§6)


def _change(where: ColumnElement[bool], **values: Any) -> Any:
    return update(job).where(job.c.name == _queue_name, _ids(), _attempts(), where).values(**values)


COMPLETE = _change(
    or_(
        job.c.state == state_constant(JobState.active),
        and_(_typed("include_queued", Boolean()), job.c.state < state_constant(JobState.completed)),
    ),
    completed_on=JOB_NOW,
    state=JobState.completed,
    output=_json_param("job_output"),
    blocked=case((_typed("include_queued", Boolean()), false()), else_=job.c.blocked),
    pending_dependencies=case((_typed("include_queued", Boolean()), 0), else_=job.c.pending_dependencies),
)
"""Complete the active jobs among ``:ids`` (all unfinished ones with ``:include_queued``), fenced by
``:attempts``, storing ``:job_output``."""

CANCEL = _change(job.c.state < state_constant(JobState.completed), completed_on=JOB_NOW, state=JobState.cancelled)
"""Cancel the created, retry and active jobs among ``:ids`` (fenced by ``:attempts``)."""

TOUCH = _change(job.c.state == state_constant(JobState.active), heartbeat_on=JOB_NOW)
"""Refresh the heartbeat of the active jobs among ``:ids`` (fenced by ``:attempts``)."""

RESUME = (
    update(job)
    .where(job.c.name == _queue_name, _ids(), job.c.state == state_constant(JobState.cancelled))
    .values(
        state=JobState.created,
        completed_on=None,
        upsert_by_key=None,
        start_after=func.greatest(job.c.start_after, JOB_NOW),
    )
)
"""Return the cancelled jobs among ``:ids`` to ``created`` (§6.1)."""

RETRY = (
    update(job)
    .where(job.c.name == _queue_name, _ids(), job.c.state == state_constant(JobState.failed))
    .values(
        state=JobState.retry,
        retry_limit=job.c.retry_limit + 1,
        completed_on=None,
        start_after=func.greatest(job.c.start_after, JOB_NOW),
    )
)
"""Give the failed jobs among ``:ids`` one more try; unlike version 24 ``completed_on`` is cleared (§6.1)."""

DELETE_JOBS = delete(job).where(job.c.name == _queue_name, _ids(), _attempts())
"""Delete the jobs among ``:ids`` (fenced by ``:attempts``), whatever their state."""


def fail_statement(which: ColumnElement[bool], output: ColumnElement[Any]) -> Select[Any]:
    # §6.3-6.4: delete, re-insert as retry or failed (the same id), then a copy into the dead letter queue.
    deleted = delete(job).where(which).returning(*job.c).cte("deleted")
    d = deleted.c
    will_retry = d.retry_count < d.retry_limit
    columns = [c.name for c in job.c]

    def reinsert(
        state: ColumnElement[Any], start_after: ColumnElement[Any], completed_on: ColumnElement[Any]
    ) -> list[ColumnElement[Any]]:
        chosen = {
            "state": state,
            "start_after": start_after,
            "completed_on": completed_on,
            "output": output,
            "heartbeat_on": null(),
        }
        return [chosen.get(name, d[name]) for name in columns]

    growth = func.power(2, func.least(16, d.retry_count + 1)) / 2
    # Capped at MAX_DURATION_SECONDS, where pg-boss has no cap: no Python datetime holds a later one.
    backoff_seconds = func.least(
        d.retry_delay_max,
        func.greatest(d.retry_delay, 1) * (growth + growth * func.random()),
        const(str(int(MAX_DURATION_SECONDS))),
    )
    retried = (
        insert(job)
        .from_select(
            columns,
            select(
                *reinsert(
                    case((will_retry, literal(JobState.retry.value)), else_=literal(JobState.failed.value)).cast(
                        job.c.state.type
                    ),
                    case(
                        (d.retry_count == d.retry_limit, d.start_after),
                        (d.retry_backoff.is_not(True), JOB_NOW + d.retry_delay * ONE_SECOND),
                        else_=JOB_NOW + backoff_seconds * ONE_SECOND,
                    ),
                    case((will_retry, null()), else_=JOB_NOW),
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
            select(*reinsert(literal(JobState.failed.value).cast(job.c.state.type), d.start_after, JOB_NOW)).where(
                d.id.not_in(select(retried.c.id))
            ),
        )
        .on_conflict_do_nothing()
        .returning(*job.c)
        .cte("forced")
    )
    results = select(retried).union_all(select(forced)).cte("results")
    r = results.c
    dlq = queue.alias("dlq")
    copies = {
        "name": r.dead_letter,
        "priority": r.priority,
        "data": r.data,
        "singleton_key": r.singleton_key,
        "group_id": r.group_id,
        "group_tier": r.group_tier,
        "trace_context": r.trace_context,
        "retry_limit": dlq.c.retry_limit,
        "retry_backoff": dlq.c.retry_backoff,
        "retry_delay": dlq.c.retry_delay,
        "expire_seconds": dlq.c.expire_seconds,
        "deletion_seconds": dlq.c.deletion_seconds,
        "heartbeat_seconds": dlq.c.heartbeat_seconds,
        "keep_until": JOB_NOW + dlq.c.retention_seconds * ONE_SECOND,
        "start_after": JOB_NOW,
        "created_on": JOB_NOW,
        "source_name": r.name,
        "source_id": r.id,
        "source_created_on": r.created_on,
        "source_retry_count": r.retry_count,
        "source_output": r.output,
        "source_root_id": func.coalesce(r.source_root_id, r.id),
    }
    dead_lettered = (
        insert(job)
        .from_select(
            list(copies),
            select(*copies.values())
            .join_from(results, dlq, dlq.c.name == r.dead_letter)
            .where(r.state == state_constant(JobState.failed)),
        )
        .returning(job.c.id)
        .cte("dead_lettered")
    )
    return select(
        select(func.count()).select_from(results).scalar_subquery(),
        select(func.count()).select_from(dead_lettered).scalar_subquery(),
    )


FAIL = fail_statement(
    and_(job.c.name == _queue_name, _ids(), _attempts(), job.c.state < state_constant(JobState.completed)),
    _json_param("job_output"),
)
"""Fail the created, retry and active jobs among ``:ids`` (fenced by ``:attempts``) with ``:job_output``; returns
(affected, dead-lettered)."""

# ------------------------------------------------------------------------------------- reading jobs (§6.6)

GET_JOB = select(Job).where(Job.name == _queue_name, Job.id == bindparam("job_id"))
FIND_JOB = select(Job).where(Job.id == bindparam("job_id")).order_by(Job.name).limit(1)
"""A job by its id alone, in whichever queue."""
QUEUES_OF_JOBS = select(job.c.name, job.c.id).where(_ids())
JOB_IDS_IN_STATE = select(job.c.id).where(job.c.name == _queue_name, job.c.state == bindparam("state"))
JOB_STATES = select(job.c.id, job.c.state).where(job.c.name == _queue_name, _ids())
NEWEST_JOBS = (
    select(Job)
    .where(Job.name == _queue_name)
    .order_by(Job.created_on.desc(), Job.id)
    .limit(bindparam("limit", type_=Integer))
)
NEWEST_JOBS_IN_STATE = NEWEST_JOBS.where(Job.state == bindparam("state"))


def _find_jobs() -> Select[Any]:
    after = job.alias("after")
    after_id = _typed("after_id", UUID(as_uuid=True))
    after_created = select(after.c.created_on).where(after.c.name == _queue_name, after.c.id == after_id)
    return (
        select(Job)
        .where(
            Job.name == _queue_name,
            or_(_typed("job_id", UUID(as_uuid=True)).is_(None), Job.id == _typed("job_id", UUID(as_uuid=True))),
            or_(_typed("key", Text()).is_(None), Job.singleton_key == _typed("key", Text())),
            or_(_json_param("data").is_(None), Job.data.op("@>")(_json_param("data"))),
            or_(~_typed("queued", Boolean()), Job.state < state_constant(JobState.active)),
            or_(
                after_id.is_(None),
                func.row(Job.created_on, Job.id) > func.row(after_created.scalar_subquery(), after_id),
            ),
        )
        .order_by(Job.created_on, Job.id)
        .limit(bindparam("limit", type_=Integer))
    )


FIND_JOBS = _find_jobs()
"""pg-boss 12's findJobs (§6.6): the queue's jobs by ``:job_id``, ``:key``, ``:data`` (containment) and
``:queued``, after the job ``:after_id``, ``ORDER BY created_on, id``, at most ``:limit``."""

JOB_EXISTS = select(exists().where(job.c.name == _queue_name, job.c.id == bindparam("job_id")))

# ------------------------------------------------------------------------------------------ queues (§3)

QUEUE_EXISTS = select(exists().where(queue.c.name == _queue_name))
QUEUE_POLICY = select(queue.c.policy).where(queue.c.name == _queue_name)
EXISTING_QUEUES = select(queue.c.name).where(queue.c.name == any_(bindparam("queue_names", type_=ARRAY(Text))))
GET_QUEUE = select(Queue).where(Queue.name == _queue_name)
GET_QUEUES = select(Queue).order_by(Queue.name)
GET_QUEUE_PAGE = (
    select(Queue)
    .where(
        or_(
            _typed("queue_names", ARRAY(Text)).is_(None),
            Queue.name == any_(_typed("queue_names", ARRAY(Text))),
        ),
        or_(_typed("after", Text()).is_(None), Queue.name > _typed("after", Text())),
    )
    .order_by(Queue.name)
    .limit(bindparam("limit", type_=Integer))
)
"""pg-boss 12's getQueues (§3.4): the queues among ``:queue_names`` (all when NULL), by name, after ``:after``,
at most ``:limit`` (all when NULL)."""

GET_BLOCKED_KEYS = (
    select(job.c.singleton_key)
    .where(
        job.c.name == _queue_name,
        job.c.state == state_constant(JobState.failed),
        job.c.policy == _FIFO,
        or_(_typed("after", Text()).is_(None), job.c.singleton_key > _typed("after", Text())),
    )
    .distinct()
    .order_by(job.c.singleton_key)
    .limit(bindparam("limit", type_=Integer))
)
"""pg-boss 12's getBlockedKeys (§3.4): the keys a failed job of the key_strict_fifo queue ``:queue_name`` blocks,
in order, after ``:after``, at most ``:limit``."""


def _update_queue() -> Any:
    changes = _json_param("changes")

    def given(key: str, type_: TypeEngine[Any], current: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.coalesce(cast(changes.op("->>")(key), type_), current)

    def replaced(key: str, type_: TypeEngine[Any], current: ColumnElement[Any]) -> ColumnElement[Any]:
        return case((changes.op("?")(key), cast(changes.op("->>")(key), type_)), else_=current)

    return (
        update(queue)
        .where(queue.c.name == _queue_name)
        .values(
            retry_limit=given("retryLimit", Integer(), queue.c.retry_limit),
            retry_delay=given("retryDelay", Integer(), queue.c.retry_delay),
            retry_backoff=given("retryBackoff", Boolean(), queue.c.retry_backoff),
            expire_seconds=given("expireInSeconds", Integer(), queue.c.expire_seconds),
            retention_seconds=given("retentionSeconds", Integer(), queue.c.retention_seconds),
            deletion_seconds=given("deleteAfterSeconds", Integer(), queue.c.deletion_seconds),
            warning_queued=given("warningQueueSize", Integer(), queue.c.warning_queued),
            notify=given("notify", Boolean(), queue.c.notify),
            retry_delay_max=replaced("retryDelayMax", Integer(), queue.c.retry_delay_max),
            heartbeat_seconds=replaced("heartbeatSeconds", Integer(), queue.c.heartbeat_seconds),
            dead_letter=replaced("deadLetter", Text(), queue.c.dead_letter),
            updated_on=JOB_NOW,
        )
        .returning(queue.c.name)
    )


UPDATE_QUEUE = _update_queue()
"""pg-boss 12's updateQueue (§3.3): ``:changes`` (camelCase JSON) COALESCEd into most settings; ``retryDelayMax``,
``heartbeatSeconds`` and ``deadLetter`` replaced whenever their key is present, so ``null`` clears them."""

QUEUE_BLOCKERS = select(
    exists().where(queue.c.dead_letter == _queue_name, queue.c.name != _queue_name).label("of_queue"),
    exists().where(job.c.dead_letter == _queue_name, job.c.name != _queue_name).label("of_job"),
    select(queue.c.table_name).where(queue.c.name == _queue_name).scalar_subquery().label("table_name"),
    select(queue.c.partition).where(queue.c.name == _queue_name).scalar_subquery().label("partition"),
)
"""Why ``delete_queue`` would fail for ``:queue_name`` (another queue or job names it as dead letter), and its
job table."""

FORGET_BAM = delete(_tables[f"{DEFAULT_SCHEMA}.bam"]).where(
    _tables[f"{DEFAULT_SCHEMA}.bam"].c.table_name == bindparam("table_name", type_=Text),
    _tables[f"{DEFAULT_SCHEMA}.bam"].c.status != literal_column("'completed'"),
)
"""Delete the unfinished deferred index builds of a dropped partition (§3.4)."""

DELETE_QUEUED_JOBS = delete(job).where(job.c.name == _queue_name, job.c.state < state_constant(JobState.active))
DELETE_STORED_JOBS = delete(job).where(job.c.name == _queue_name, job.c.state > state_constant(JobState.active))
DELETE_QUEUE_JOBS = delete(job).where(job.c.name == _queue_name)
DELETE_EVERY_JOB = delete(job)
ZERO_COUNTS = update(queue).values(
    deferred_count=0, blocked_count=0, queued_count=0, ready_count=0, active_count=0, failed_count=0, total_count=0
)
"""What pg-boss 12's deleteAllJobs() does to the cached counts of every queue (§3.4)."""


def _queue_stats() -> Select[Any]:
    queued = job.c.state < state_constant(JobState.active)
    return (
        select(
            queue.c.name,
            func.count(job.c.id).filter(queued, ~job.c.blocked, job.c.start_after > JOB_NOW).label("deferred"),
            func.count(job.c.id).filter(queued, job.c.blocked).label("blocked"),
            func.count(job.c.id).filter(queued).label("queued"),
            func.count(job.c.id).filter(queued, ~job.c.blocked, job.c.start_after <= JOB_NOW).label("ready"),
            func.count(job.c.id).filter(job.c.state == state_constant(JobState.active)).label("active"),
            func.count(job.c.id).filter(job.c.state == state_constant(JobState.completed)).label("completed"),
            func.count(job.c.id).filter(job.c.state == state_constant(JobState.cancelled)).label("cancelled"),
            func.count(job.c.id).filter(job.c.state == state_constant(JobState.failed)).label("failed"),
            func.count(job.c.id).label("total"),
            func.count(job.c.id).filter(job.c.state == state_constant(JobState.created)).label("created"),
            func.count(job.c.id).filter(job.c.state == state_constant(JobState.retry)).label("retry"),
            extract(
                "epoch",
                JOB_NOW
                - func.min(func.greatest(job.c.created_on, job.c.start_after)).filter(
                    queued, ~job.c.blocked, job.c.start_after <= JOB_NOW
                ),
            ).label("ready_oldest_seconds"),
        )
        .select_from(queue.outerjoin(job, job.c.name == queue.c.name))
        .where(queue.c.name == _queue_name)
        .group_by(queue.c.name)
    )


QUEUE_STATS = _queue_stats()
"""The live counts of ``:queue_name``'s jobs as pg-boss 12's monitor defines them (§8.4); no row for no queue."""


@dataclass(frozen=True)
class QueueFunctions:
    """Calls of the schema's ``create_queue`` and ``delete_queue``, under pg-boss 12's advisory locks."""

    create: TextClause
    delete: TextClause
    lock_create: Select[Any]
    lock_delete: Select[Any]
    check_job_constraints_now: TextClause
    defer_job_constraints: TextClause


@functools.lru_cache(maxsize=64)
def queue_functions(schema: str) -> QueueFunctions:
    quoted = quote_identifier(validate_schema_name(schema))
    return QueueFunctions(
        create=text(f"SELECT {quoted}.create_queue(:queue_name, CAST(:queue_options AS jsonb))"),
        delete=text(f"SELECT {quoted}.delete_queue(:queue_name)"),
        lock_create=select(func.pg_advisory_xact_lock(advisory_lock_key(schema, "create-queue"))),
        lock_delete=select(func.pg_advisory_xact_lock(advisory_lock_key(schema, "delete-queue"))),
        check_job_constraints_now=text(f"SET CONSTRAINTS {quoted}.q_fkey, {quoted}.dlq_fkey IMMEDIATE"),
        defer_job_constraints=text(f"SET CONSTRAINTS {quoted}.q_fkey, {quoted}.dlq_fkey DEFERRED"),
    )


# --------------------------------------------------------------------------------------- pub/sub (§4.9)

SUBSCRIBE = (
    insert(subscription)
    .from_select(
        ["event", "name", "created_on", "updated_on"],
        select(bindparam("event_name", type_=Text), _queue_name, JOB_NOW, JOB_NOW).where(
            exists().where(queue.c.name == _queue_name)
        ),
    )
    .on_conflict_do_update(index_elements=["event", "name"], set_={"updated_on": JOB_NOW})
    .returning(subscription.c.name)
)
"""Subscribe ``:queue_name`` to ``:event_name``; no row back when the queue does not exist."""

UNSUBSCRIBE = delete(subscription).where(
    subscription.c.event == bindparam("event_name", type_=Text), subscription.c.name == _queue_name
)
SUBSCRIBERS = (
    select(subscription.c.name)
    .where(subscription.c.event == bindparam("event_name", type_=Text))
    .order_by(subscription.c.name)
)
KEY_STRICT_FIFO_SUBSCRIBERS = (
    select(subscription.c.name)
    .join(queue, queue.c.name == subscription.c.name)
    .where(subscription.c.event == bindparam("event_name", type_=Text), queue.c.policy == _FIFO)
    .order_by(subscription.c.name)
)
"""The key_strict_fifo queues subscribed to ``:event_name``, which refuse a job without a singleton_key."""

# ------------------------------------------------------------------------------------- schedules (§9.1)

_schedule_insert = insert(schedule_table).from_select(
    ["name", "key", "kind", "cron", "timezone", "data", "options", "created_on", "updated_on"],
    select(
        _queue_name,
        bindparam("schedule_key", type_=Text),
        bindparam("kind", type_=Text),
        bindparam("cron_expression", type_=Text),
        bindparam("time_zone", type_=Text),
        _json_param("schedule_data"),
        _json_param("schedule_options"),
        JOB_NOW,
        JOB_NOW,
    ).where(exists().where(queue.c.name == _queue_name)),
)
SCHEDULE = _schedule_insert.on_conflict_do_update(
    index_elements=["name", "key"],
    set_={
        "kind": _schedule_insert.excluded.kind,
        "cron": _schedule_insert.excluded.cron,
        "timezone": _schedule_insert.excluded.timezone,
        "data": _schedule_insert.excluded.data,
        "options": _schedule_insert.excluded.options,
        "updated_on": JOB_NOW,
    },
).returning(schedule_table.c.name)
"""Create or replace the schedule (``:queue_name``, ``:schedule_key``); no row back when the queue does not exist."""

UNSCHEDULE = delete(schedule_table).where(
    schedule_table.c.name == _queue_name, schedule_table.c.key == bindparam("schedule_key", type_=Text)
)
UNSCHEDULE_ALL_KEYS = delete(schedule_table).where(schedule_table.c.name == _queue_name)
GET_SCHEDULES = select(Schedule).order_by(Schedule.name, Schedule.key)
GET_QUEUE_SCHEDULES = GET_SCHEDULES.where(Schedule.name == _queue_name)
GET_SCHEDULE = select(Schedule).where(Schedule.name == _queue_name, Schedule.key == bindparam("schedule_key"))

__all__ = [name for name in dir() if name.isupper()] + ["QueueFunctions", "queue_functions"]

# ------------------------------------------------------------------------- update and upsert (§4.7)


def _given(changes: ColumnElement[Any], key: str) -> ColumnElement[bool]:
    return changes.op("?", return_type=Boolean())(literal(key, Text))


def _changed(changes: ColumnElement[Any], key: str, type_: TypeEngine[Any], current: ColumnElement[Any]) -> Any:
    """The column's new value when ``key`` is in the changes (a JSON ``null`` gives SQL NULL), else its own."""
    return case((_given(changes, key), cast(changes.op("->>")(literal(key, Text)), type_)), else_=current)


def _update_job(by: str) -> Select[Any]:
    changes = _json_param("changes")
    target = select(job.c.id).where(job.c.name == _queue_name, job.c.state < state_constant(JobState.active))
    if by == "id":
        target = target.where(job.c.id == bindparam("job_id", type_=UUID(as_uuid=True)))
    else:
        target = target.where(job.c.singleton_key == bindparam("key", type_=Text))
        if by == "newest":
            target = target.order_by(job.c.created_on.desc(), job.c.id).limit(1)
        elif by == "oldest":
            target = target.order_by(job.c.created_on, job.c.id).limit(1)
    targets = target.cte("target")
    # §4.7: the start_after text as §4.3 reads it (ours: a timestamp ending in Z, or an interval from now).
    start_text = changes.op("->>")(literal("startAfter", Text))
    resolved = case(
        (func.right(start_text, const("1")) == const("'Z'"), cast(start_text, TIMESTAMP(True))),
        else_=JOB_NOW + cast(start_text, INTERVAL),
    )
    start_after = case((_given(changes, "startAfter"), resolved), else_=job.c.start_after)
    updated = (
        update(job)
        .where(
            job.c.name == _queue_name, job.c.id.in_(select(targets.c.id)), job.c.state < state_constant(JobState.active)
        )
        .values(
            data=case(
                (_given(changes, "data"), changes.op("->", return_type=JSONB())(literal("data", Text))),
                else_=job.c.data,
            ),
            priority=_changed(changes, "priority", Integer(), job.c.priority),
            start_after=start_after,
            keep_until=case(
                (
                    _given(changes, "retentionSeconds"),
                    start_after + cast(changes.op("->>")(literal("retentionSeconds", Text)), Integer) * ONE_SECOND,
                ),
                (_given(changes, "startAfter"), start_after + (job.c.keep_until - job.c.start_after)),
                else_=job.c.keep_until,
            ),
            expire_seconds=_changed(changes, "expireInSeconds", Integer(), job.c.expire_seconds),
            deletion_seconds=_changed(changes, "deleteAfterSeconds", Integer(), job.c.deletion_seconds),
            retry_limit=_changed(changes, "retryLimit", Integer(), job.c.retry_limit),
            retry_delay=_changed(changes, "retryDelay", Integer(), job.c.retry_delay),
            retry_backoff=_changed(changes, "retryBackoff", Boolean(), job.c.retry_backoff),
            retry_delay_max=_changed(changes, "retryDelayMax", Integer(), job.c.retry_delay_max),
            dead_letter=_changed(changes, "deadLetter", Text(), job.c.dead_letter),
            heartbeat_seconds=_changed(changes, "heartbeatSeconds", Integer(), job.c.heartbeat_seconds),
            group_id=_changed(changes, "groupId", Text(), job.c.group_id),
            group_tier=_changed(changes, "groupTier", Text(), job.c.group_tier),
        )
        .returning(job.c.id, job.c.name, job.c.start_after)
        .cte("updated")
    )
    notified = notify_if_due(updated, updated.c.name)
    return select(updated.c.id).where(select(func.count()).select_from(notified).scalar_subquery() >= 0)


UPDATE_JOB = {by: _update_job(by) for by in ("id", "newest", "oldest", "all")}
"""pg-boss 12's update (§4.7), by ``"id"`` (``:job_id``) or by ``:key``, changing the ``"newest"``, ``"oldest"``
or ``"all"`` of its queued jobs: each column whose camelCase key is in ``:changes`` (JSON) changes, the others
stay; ``keep_until`` follows a new retention, else slides with a new ``start_after``. Only queued jobs (created,
retry) of ``:queue_name``; returns their ids. Notifies as a send does."""

_FLAG_COLUMNS = (
    ("blocked", Boolean()),
    ("blocking", Boolean()),
    ("pending_dependencies", Integer()),
    ("upsert_by_key", Boolean()),
)


def _insert_flagged(*, skip_conflicts: bool) -> Any:
    """An insert of the jobs of ``:jobs`` (JSON records as :data:`INSERT_JOBS` reads them, with the flow and
    upsert columns of :data:`_FLAG_COLUMNS`), by :data:`INSERT_JOBS`'s precedence (§4.2): the job's setting,
    else its queue's. The queue is LEFT JOINed, as pg-boss does, so a queue deleted since the caller checked it
    fails ``q_fkey`` at commit. ``skip_conflicts``: ``ON CONFLICT DO NOTHING``; else a conflict is an error."""
    incoming, rows = incoming_rows("flagged", _FLAG_COLUMNS)
    i = rows.c
    q = queue.alias("q")
    values = {
        **job_values(i, q),
        "blocked": func.coalesce(i.blocked, false()),
        "blocking": func.coalesce(i.blocking, false()),
        "pending_dependencies": func.coalesce(i.pending_dependencies, const("0")),
        "upsert_by_key": i.upsert_by_key,
    }
    statement = insert(job).from_select(
        list(values), select(*values.values()).select_from(rows.outerjoin(q, q.c.name == i.name))
    )
    if skip_conflicts:
        statement = statement.on_conflict_do_nothing()
    return incoming, rows, statement.returning(job.c.id, job.c.name, job.c.start_after).cte("inserted")


def _upsert_insert() -> Select[Any]:
    incoming, _, inserted = _insert_flagged(skip_conflicts=True)
    notified = notify_if_due(inserted, inserted.c.name)
    statement = select(inserted.c.id).where(select(func.count()).select_from(notified).scalar_subquery() >= 0)
    return statement.add_cte(incoming)


UPSERT_INSERT = _upsert_insert()
"""The insert of an upsert that matched nothing (§4.7): the job of ``:jobs`` (with ``upsert_by_key`` when it
targets a key, so ``i13`` makes concurrent upserts of one key meet), ``ON CONFLICT DO NOTHING``; returns its id,
or nothing on a conflict. Notifies as a send does."""

# ------------------------------------------------------------------------------ flows (§4.8, §8.8)


def _insert_flow() -> Select[Any]:
    incoming, rows, inserted = _insert_flagged(skip_conflicts=False)
    edges = (
        func.json_to_recordset(cast(bindparam("dependencies", type_=Text), JSON))
        .table_valued(
            column("child_name", Text),
            column("child_id", UUID(as_uuid=True)),
            column("parent_name", Text),
            column("parent_id", UUID(as_uuid=True)),
        )
        .render_derived(name="d", with_types=True)
    )
    dependencies = (
        insert(job_dependency)
        .from_select(
            ["child_name", "child_id", "parent_name", "parent_id"],
            select(edges.c.child_name, edges.c.child_id, edges.c.parent_name, edges.c.parent_id),
        )
        .on_conflict_do_nothing()
        .returning(job_dependency.c.child_id)
        .cte("dependencies")
    )
    # pg-boss wakes every notify-enabled queue of the flow, due jobs or not.
    notified = (
        select(func.pg_notify(bindparam("notify_channel", type_=Text), queue.c.name).label("sent"))
        .where(queue.c.notify, queue.c.name.in_(select(rows.c.name)))
        .cte("notified")
    )
    return select(
        select(func.count()).select_from(inserted).scalar_subquery(),
        select(func.count()).select_from(dependencies).scalar_subquery(),
        select(func.count()).select_from(notified).scalar_subquery(),
    ).add_cte(incoming)


INSERT_FLOW = _insert_flow()
"""Insert a flow (§4.8): every job of ``:jobs`` (records with ``blocked``, ``blocking``, ``pending_dependencies``)
in one statement with no ``ON CONFLICT``, so any conflict fails it whole; the edges of ``:dependencies``
(``child_name, child_id, parent_name, parent_id``); a notification per notify-enabled queue. Returns (jobs,
edges, notifications)."""

QUEUE_POLICIES = select(queue.c.name, queue.c.policy).where(
    queue.c.name == any_(bindparam("queue_names", type_=ARRAY(Text)))
)
"""The policy of each of ``:queue_names`` that is a queue."""


def _dependencies(side: str, after: bool) -> Select[Any]:
    """The other side's (name, id) of the edges whose ``side`` (``child``: its parents; ``parent``: its
    children) is (``:queue_name``, ``:job_id``), by (name, id), after (``:after_name``, ``:after_id``)."""
    other = "parent" if side == "child" else "child"
    d = job_dependency.c
    name, job_id = d[f"{other}_name"], d[f"{other}_id"]
    statement = select(name, job_id).where(
        d[f"{side}_name"] == _queue_name, d[f"{side}_id"] == bindparam("job_id", type_=UUID(as_uuid=True))
    )
    if after:
        statement = statement.where(
            func.row(name, job_id)
            > func.row(bindparam("after_name", type_=Text), bindparam("after_id", type_=UUID(as_uuid=True)))
        )
    return statement.order_by(name, job_id).limit(bindparam("limit", type_=Integer))


GET_DEPENDENCIES = {after: _dependencies("child", after) for after in (False, True)}
"""The parents (name, id) of the job (``:queue_name``, ``:job_id``), at most ``:limit``; with ``True``, after
(``:after_name``, ``:after_id``)."""
GET_DEPENDENTS = {after: _dependencies("parent", after) for after in (False, True)}
"""The children (name, id) of the job, as :data:`GET_DEPENDENCIES`."""

FLOW_BATCH_SIZE = 1000
"""The most completed parents one resolver statement takes, as pg-boss 12's."""


def _resolve_flow() -> CompoundSelect[Any]:
    p = job.alias("p")
    parents = (
        select(p.c.name, p.c.id)
        .where(p.c.blocking, p.c.state == state_constant(JobState.completed))
        .order_by(p.c.name, p.c.id)
        .limit(FLOW_BATCH_SIZE)
        .with_for_update(of=p, skip_locked=True)
        .cte("locked_parents")
    )
    d = job_dependency
    decremented = (
        select(d.c.child_name, d.c.child_id, func.count().label("n"))
        .join_from(d, parents, and_(d.c.parent_name == parents.c.name, d.c.parent_id == parents.c.id))
        .group_by(d.c.child_name, d.c.child_id)
        .cte("decremented")
    )
    c = job.alias("c")
    children = (
        select(c.c.name, c.c.id, decremented.c.n)
        .join_from(c, decremented, and_(decremented.c.child_name == c.c.name, decremented.c.child_id == c.c.id))
        .where(c.c.blocked)
        .order_by(c.c.name, c.c.id)
        .with_for_update(of=c)
        .cte("locked_children")
    )
    remaining = func.greatest(job.c.pending_dependencies - children.c.n, 0)
    released = (
        update(job)
        .where(job.c.name == children.c.name, job.c.id == children.c.id)
        .values(
            pending_dependencies=remaining,
            blocked=remaining > 0,
            start_after=case((remaining == 0, func.greatest(job.c.start_after, JOB_NOW)), else_=job.c.start_after),
        )
        .returning(job.c.name, job.c.id)
        .cte("released")
    )
    cleared = (
        update(job)
        .where(job.c.name == parents.c.name, job.c.id == parents.c.id)
        .values(blocking=False)
        .returning(job.c.name, job.c.id)
        .cte("cleared")
    )
    return union_all(
        select(literal("parent", Text).label("kind"), cleared.c.name, cleared.c.id),
        select(literal("child", Text), released.c.name, released.c.id),
    )


RESOLVE_FLOW = _resolve_flow()
"""One batch of pg-boss 12's flow resolver (§8.8): lock up to :data:`FLOW_BATCH_SIZE` completed parents still
``blocking`` (``SKIP LOCKED``), take each of their blocked children's count of them off its
``pending_dependencies`` (floor 0), unblock those at 0 (``start_after`` moved up to now), clear the parents'
``blocking``. Returns (kind, name, id): each parent resolved (``parent``) and child changed (``child``)."""

# ------------------------------------------------------------------------------------ redrive (§6.5)


def _redrive_filter(j: Any) -> list[ColumnElement[bool]]:
    """The dead-letter queue ``:queue_name``'s queued jobs that ``:source_name``, ``:data``, ``:created_before``
    and ``:ids`` (each ignored when NULL) select, but for key_strict_fifo jobs whose key is held (§6.5)."""
    k = job.alias("k")
    source_name = _typed("source_name", Text())
    data = _json_param("data")
    created_before = _typed("created_before", TIMESTAMP(timezone=True))
    ids = _typed("ids", ARRAY(UUID(as_uuid=True)))
    held = (
        exists()
        .where(
            j.c.policy == _FIFO,
            k.c.name == j.c.name,
            k.c.singleton_key == j.c.singleton_key,
            k.c.policy == _FIFO,
            k.c.state.in_(
                [state_constant(JobState.active), state_constant(JobState.retry), state_constant(JobState.failed)]
            ),
        )
        .correlate(j)
    )
    return [
        j.c.name == _queue_name,
        j.c.state < state_constant(JobState.active),
        ~held,
        or_(source_name.is_(None), j.c.source_name == source_name),
        or_(data.is_(None), j.c.data.op("@>")(data)),
        or_(created_before.is_(None), j.c.created_on < created_before),
        or_(ids.is_(None), j.c.id == any_(ids)),
    ]


_destination = _typed("destination", Text())


def _redrive() -> CompoundSelect[Any]:
    j = job.alias("j")
    target = queue.alias("target")
    candidates = (
        select(j.c.id, func.gen_random_uuid().label("new_id"))
        .join_from(j, target, target.c.name == func.coalesce(_destination, j.c.source_name))
        .where(*_redrive_filter(j))
        .order_by(j.c.created_on)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(of=j, skip_locked=True)
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )
    m = job.alias("m")
    q = queue.alias("q")
    values = {
        "id": candidates.c.new_id,
        "name": func.coalesce(_destination, m.c.source_name),
        "data": m.c.data,
        "priority": m.c.priority,
        "retry_limit": q.c.retry_limit,
        "retry_backoff": q.c.retry_backoff,
        "retry_delay": q.c.retry_delay,
        "retry_delay_max": q.c.retry_delay_max,
        "expire_seconds": q.c.expire_seconds,
        "start_after": JOB_NOW,
        "created_on": JOB_NOW,
        "keep_until": JOB_NOW + q.c.retention_seconds * ONE_SECOND,
        "deletion_seconds": q.c.deletion_seconds,
        "policy": q.c.policy,
        "singleton_key": m.c.singleton_key,
        "group_id": m.c.group_id,
        "group_tier": m.c.group_tier,
        "heartbeat_seconds": q.c.heartbeat_seconds,
        "dead_letter": q.c.dead_letter,
        "source_root_id": func.coalesce(m.c.source_root_id, m.c.source_id),
        "trace_context": m.c.trace_context,
    }
    inserted = (
        insert(job)
        .from_select(
            list(values),
            select(*values.values())
            .select_from(candidates)
            .join(m, and_(m.c.name == _queue_name, m.c.id == candidates.c.id))
            .join(q, q.c.name == func.coalesce(_destination, m.c.source_name))
            .order_by(m.c.created_on),
        )
        .on_conflict_do_nothing()
        .returning(job.c.id, job.c.name)
        .cte("inserted")
    )
    settled = (
        select(candidates.c.id, inserted.c.id.is_not(None).label("moved"))
        .select_from(candidates.outerjoin(inserted, inserted.c.id == candidates.c.new_id))
        .cte("settled")
    )
    removed = (
        delete(job)
        .where(job.c.name == _queue_name, job.c.id.in_(select(settled.c.id).where(settled.c.moved)))
        .returning(job.c.id)
        .cte("removed")
    )
    # A conflict fails the dead-letter row in place, with the reason as its output; of several key_strict_fifo
    # rows of one key only the oldest (job_i8 allows one failed job per key), the rest wait behind it.
    first = job.alias("first")
    ranked = (
        select(
            first.c.id,
            func.row_number()
            .over(partition_by=first.c.singleton_key, order_by=(first.c.created_on, first.c.id))
            .label("rank"),
        )
        .where(
            first.c.name == _queue_name,
            first.c.id.in_(select(settled.c.id).where(~settled.c.moved)),
            first.c.policy == _FIFO,
        )
        .subquery("ranked")
    )
    oldest_of_key = select(ranked.c.id).where(ranked.c.rank == 1)
    destination = queue.alias("destination")
    policy_text = cast(destination.c.policy, Text)
    message = (
        literal("Not redriven: queue ", Text)
        .concat(destination.c.name)
        .concat(
            case(
                (job.c.singleton_key.is_(None), literal(" already has a job this one conflicts with", Text)),
                else_=literal(" already has a job with singletonKey ", Text).concat(job.c.singleton_key),
            )
        )
        .concat(literal(" under its ", Text))
        .concat(func.coalesce(policy_text, literal("standard", Text)))
        .concat(literal(" policy", Text))
    )
    conflicted = (
        update(job)
        .where(
            job.c.name == _queue_name,
            job.c.id == settled.c.id,
            ~settled.c.moved,
            destination.c.name == func.coalesce(_destination, job.c.source_name),
            or_(job.c.policy.is_distinct_from(_FIFO), job.c.singleton_key.is_(None), job.c.id.in_(oldest_of_key)),
        )
        .values(
            state=JobState.failed,
            completed_on=JOB_NOW,
            source_output=func.coalesce(job.c.source_output, job.c.output),
            output=func.jsonb_build_object(
                literal("message", Text),
                message,
                literal("reason", Text),
                literal("redrive_conflict", Text),
                literal("destination", Text),
                destination.c.name,
                literal("policy", Text),
                policy_text,
                literal("singletonKey", Text),
                job.c.singleton_key,
            ),
        )
        .returning(job.c.id)
        .cte("conflicted")
    )
    return union_all(
        select(literal("moved", Text).label("kind"), inserted.c.name, inserted.c.id),
        select(literal("removed", Text), _queue_name, removed.c.id),
        select(literal("failed", Text), _queue_name, conflicted.c.id),
    )


REDRIVE = _redrive()
"""pg-boss 12's redrive (§6.5): up to ``:limit`` of the jobs :func:`_redrive_filter` selects in the dead-letter
queue ``:queue_name``, oldest first (``SKIP LOCKED``), whose destination (``:destination``, else the job's
``source_name``) is a queue, become new jobs there with that queue's settings now; each moved row is deleted,
each that conflicts is failed in place with a ``redrive_conflict`` output. Returns (kind, name, id): each new job
(``moved``), dead-letter row deleted (``removed``) and failed (``failed``)."""


def _preview_redrive() -> CompoundSelect[Any]:
    j = job.alias("j")
    target = queue.alias("target")
    limit = bindparam("limit", type_=Integer)
    base = (
        select(target.c.name.label("destination"))
        .select_from(j.outerjoin(target, target.c.name == func.coalesce(_destination, j.c.source_name)))
        .where(*_redrive_filter(j))
    )
    unroutable = base.with_only_columns(cast(null(), Text).label("destination"))
    return union_all(
        base.where(target.c.name.is_not(None)).limit(limit), unroutable.where(target.c.name.is_(None)).limit(limit)
    )


PREVIEW_REDRIVE = _preview_redrive()
"""What :data:`REDRIVE` with the same filter would do (§6.5): the destination of at most ``:limit`` jobs it would
move, and NULL for at most ``:limit`` it would leave in place (no destination queue)."""

__all__ += [
    "FLOW_BATCH_SIZE",
    "GET_DEPENDENCIES",
    "GET_DEPENDENTS",
    "INSERT_FLOW",
    "PREVIEW_REDRIVE",
    "QUEUE_POLICIES",
    "REDRIVE",
    "RESOLVE_FLOW",
    "UPDATE_JOB",
    "UPSERT_INSERT",
]
