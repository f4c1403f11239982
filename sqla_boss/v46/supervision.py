"""pg-boss 12's supervisor on schema version 46 (PGBOSS12.md §8): its statements, built once as SQLAlchemy Core,
and its operations, generators of :class:`~sqla_boss.operations.Step` without I/O, which
:class:`~sqla_boss.AsyncSupervisor` runs each in a transaction of its own.

Python and Node supervisors on one schema share the work through pg-boss 12's own claims and locks, so whatever
pg-boss does once per cluster a mixed cluster does once:

* per queue, ``queue.monitor_claim_on`` (counts and expiry) and ``queue.maintain_on`` (deletion), and on the
  ``version`` row ``flow_on`` (the flow resolver) and ``bam_on`` (deferred index builds): a conditional UPDATE
  that moves the claim to ``job_now()`` only when at least the interval has passed (§8.1), after locking the
  candidate rows ``FOR NO KEY UPDATE SKIP LOCKED``;
* the advisory locks of §2.2, keyed on the schema and a suffix: ``<table>failJobsByTimeout``,
  ``<table>failJobsByHeartbeat``, ``<table>deletion``, ``<table>cleanupDependencies``, ``queue-stats-insert`` and
  ``bamClaim`` (waited for), ``queue-stats`` (tried: the loser skips the aggregate and hands its claims back).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Date,
    Float,
    Integer,
    Select,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    extract,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID, aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert

from sqla_boss.identifiers import DEFAULT_SCHEMA, quote_identifier, validate_schema_name
from sqla_boss.models.enums import JobState
from sqla_boss.operations import Operation, Step
from sqla_boss.schema import advisory_lock_key_of
from sqla_boss.v46.models import Base
from sqla_boss.v46.statements import (
    JOB_NOW,
    ONE_SECOND,
    const,
    fail_statement,
    job,
    job_dependency,
    queue,
    state_constant,
)

_tables = Base.metadata.tables
version_table = _tables[f"{DEFAULT_SCHEMA}.version"]
bam = _tables[f"{DEFAULT_SCHEMA}.bam"]
instance = _tables[f"{DEFAULT_SCHEMA}.instance"]
warning = _tables[f"{DEFAULT_SCHEMA}.warning"]
queue_stats = _tables[f"{DEFAULT_SCHEMA}.queue_stats"]

QUEUE_CHUNK = 100
"""The most queues one claim, monitor or maintenance statement takes, as pg-boss walks them (§8.2)."""
EXPIRY_BATCH = 1000
"""The most jobs one expiry statement fails (§8.5)."""
DELETION_BATCH = 10_000
"""The most job ids one deletion statement walks, and dependency rows one cleanup deletes (§8.6)."""
READY_HISTORY = 60
"""How many ready counts ``queue.ready_history`` keeps, newest first (§8.4)."""
RETAINED_LAG_SECONDS = 10
"""Finished jobs are counted as retained once they finished this long ago (§8.4, §8.6)."""
BAM_STALE_SECONDS = 3600
"""An ``in_progress`` build younger than this, or one a backend still runs, is someone's: nobody else claims
anything meanwhile. Older and run by no backend, its instance died, and it may be claimed again (observed of
pg-boss 12.38: a fresh ``in_progress`` row holds every other build back; one two hours old, run by no backend,
is claimed again once nothing is pending)."""
INSTANCE_QUIET_BEATS = 3
"""An instance not heard from for this many heartbeats is quiet (dead unless stopped), as pg-boss counts."""
INSTANCE_RETENTION_DAYS = 7
INSTANCE_DEAD_KEPT_PER_NAME = 20
INSTANCE_DEAD_KEPT = 1000

TIMEOUT_OUTPUT = {"value": {"message": "job timed out"}}
"""The output of a job failed by its ``expire_seconds`` (§8.5)."""
HEARTBEAT_OUTPUT = {"value": {"message": "job heartbeat timeout"}}
"""The output of a job failed by a lapsed heartbeat (§8.5)."""

_names = bindparam("queue_names", type_=ARRAY(Text))
_interval = bindparam("interval_seconds", type_=Integer)


def claim_due(column: ColumnElement[Any]) -> ColumnElement[bool]:
    """§8.1's rule: at least ``:interval_seconds`` since ``column`` (a week ago when NULL), by ``job_now()``."""
    last = func.coalesce(column, JOB_NOW - const("interval '1 week'"))
    return extract("epoch", JOB_NOW - last) >= _interval


# -------------------------------------------------------------------------------------------- locks (§2.2)

LOCK_TIMEOUTS = (
    text("SET LOCAL lock_timeout = 30000"),
    text("SET LOCAL idle_in_transaction_session_timeout = 30000"),
)
"""pg-boss's bounds on a locked transaction (§2.2)."""
LOCK = select(func.pg_advisory_xact_lock(advisory_lock_key_of(bindparam("lock_name", type_=Text))))
"""Wait for pg-boss's advisory lock on ``:lock_name`` (the schema and its suffix), until the transaction ends."""
TRY_LOCK = select(func.pg_try_advisory_xact_lock(advisory_lock_key_of(bindparam("lock_name", type_=Text))))
"""Take the lock of ``:lock_name`` if nobody holds it; whether it was taken."""

# ------------------------------------------------------------------------------------------- claims (§8.1)

QUEUE_TABLES = select(queue.c.table_name, queue.c.name).order_by(queue.c.table_name, queue.c.name)
"""Every queue and its job table, by table then name: what the supervise pass walks (§8.2)."""


def _claim_queues(column: str, fallback: str | None = None) -> Any:
    stamp = queue.c[column] if fallback is None else func.coalesce(queue.c[column], queue.c[fallback])
    q = queue.alias("c")
    q_stamp = q.c[column] if fallback is None else func.coalesce(q.c[column], q.c[fallback])
    candidates = (
        select(q.c.name)
        .where(q.c.name == any_(_names), claim_due(q_stamp))
        .order_by(q.c.name)
        .with_for_update(key_share=True, skip_locked=True)  # FOR NO KEY UPDATE SKIP LOCKED
        .cte("candidates")
    )
    # The rule again on the row updated: a claim committed after this statement's snapshot fails it.
    return (
        update(queue)
        .where(queue.c.name == candidates.c.name, claim_due(stamp))
        .values({column: JOB_NOW})
        .returning(queue.c.name)
    )


CLAIM_MONITOR = _claim_queues("monitor_claim_on", "monitor_on")
"""Claim the monitoring of those of ``:queue_names`` not monitored for ``:interval_seconds`` (by
``monitor_claim_on``, else ``monitor_on``); returns the names claimed."""
CLAIM_MAINTAIN = _claim_queues("maintain_on")
"""Claim the maintenance of those of ``:queue_names`` not maintained for ``:interval_seconds``; returns the
names claimed."""

HAND_BACK_MONITOR = update(queue).where(queue.c.name == any_(_names)).values(monitor_claim_on=None)
"""Give up the monitor claims of ``:queue_names`` (the ``queue-stats`` lock was taken): the next claim falls back
to ``monitor_on``."""
HAND_BACK_MAINTAIN = update(queue).where(queue.c.name == any_(_names)).values(maintain_on=None)
"""Give up the maintenance claims of ``:queue_names`` (a pass cut short, §8.6)."""


def _claim_version(column: str) -> Any:
    return (
        update(version_table)
        .where(claim_due(version_table.c[column]))
        .values({column: JOB_NOW})
        .returning(version_table.c[column])
    )


CLAIM_VERSION = {column: _claim_version(column) for column in ("flow_on", "bam_on")}
"""Claim the flow resolver (``flow_on``) or the deferred index builds (``bam_on``) for ``:interval_seconds``;
returns a row when this instance won. (``cron_on`` is the cron pass's: :mod:`sqla_boss.v46.cron`.)"""

MONITOR_BACKOFF = select(func.coalesce(version_table.c.monitor_backoff_on > JOB_NOW, False))
"""Whether ``version.monitor_backoff_on`` holds every aggregate back for now (§8.4)."""

# ------------------------------------------------------------------------------------------ expiry (§8.5)


def _expire(condition: Callable[[Any], ColumnElement[bool]], output: dict[str, Any]) -> Select[Any]:
    j = job.alias("x")
    batch = (
        select(j.c.name, j.c.id)
        .where(j.c.name == any_(_names), j.c.state == state_constant(JobState.active), condition(j))
        .limit(EXPIRY_BATCH)
        .with_for_update(skip_locked=True)
    )
    which = and_(job.c.name == any_(_names), tuple_(job.c.name, job.c.id).in_(batch))
    return fail_statement(which, const(f"'{json.dumps(output)}'::jsonb", JSONB()))


EXPIRE = {
    "timeout": _expire(lambda j: j.c.started_on + j.c.expire_seconds * ONE_SECOND < JOB_NOW, TIMEOUT_OUTPUT),
    "heartbeat": _expire(
        lambda j: and_(
            j.c.heartbeat_seconds.is_not(None), j.c.heartbeat_on + j.c.heartbeat_seconds * ONE_SECOND < JOB_NOW
        ),
        HEARTBEAT_OUTPUT,
    ),
}
"""Fail up to :data:`EXPIRY_BATCH` active jobs of ``:queue_names`` that ran past ``expire_seconds``
(``timeout``) or whose heartbeat lapsed (``heartbeat``), by the fail path of §6.3 with its dead-letter copies
(:data:`~sqla_boss.v46.statements.FAIL`'s statement); returns (affected, dead-lettered)."""

# ----------------------------------------------------------------------------------------- monitor (§8.4)


def _aggregate() -> Any:
    queued = job.c.state < state_constant(JobState.active)
    finished = job.c.state.in_([state_constant(JobState.completed), state_constant(JobState.cancelled)])
    rq = queue.alias("rq")
    retained_on = select(rq.c.retained_on).where(rq.c.name == job.c.name).scalar_subquery()
    counts = (
        select(
            job.c.name,
            func.count().filter(queued).label("queued"),
            func.count().filter(queued, job.c.blocked).label("blocked"),
            func.count().filter(queued, ~job.c.blocked, job.c.start_after > JOB_NOW).label("deferred"),
            func.count().filter(queued, ~job.c.blocked, job.c.start_after <= JOB_NOW).label("ready"),
            func.count().filter(job.c.state == state_constant(JobState.active)).label("active"),
            func.count().filter(job.c.state == state_constant(JobState.failed)).label("failed"),
            func.count().filter(finished, or_(retained_on.is_(None), job.c.completed_on >= retained_on)).label("since"),
            func.count().label("stored"),
            func.array_agg(func.distinct(job.c.singleton_key))
            .filter(
                job.c.state == state_constant(JobState.active),
                job.c.policy.in_([const("'singleton'"), const("'stately'")]),
                job.c.singleton_key.is_not(None),
            )
            .label("singletons"),
        )
        .where(job.c.name == any_(_names))
        .group_by(job.c.name)
        .subquery("counts")
    )
    q = select(queue.c.name).where(queue.c.name == any_(_names)).subquery("q")
    c = counts.c

    def n(column: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.coalesce(column, 0)

    stats = (
        select(
            q.c.name,
            n(c.queued).label("queued"),
            n(c.blocked).label("blocked"),
            n(c.deferred).label("deferred"),
            n(c.ready).label("ready"),
            n(c.active).label("active"),
            n(c.failed).label("failed"),
            n(c.since).label("since"),
            n(c.stored).label("stored"),
            c.singletons,
        )
        .select_from(q.outerjoin(counts, counts.c.name == q.c.name))
        .cte("stats")
    )
    s = stats.c
    live = s.queued + s.active + s.failed
    return (
        update(queue)
        .where(queue.c.name == s.name)
        .values(
            queued_count=s.queued,
            blocked_count=s.blocked,
            deferred_count=s.deferred,
            ready_count=s.ready,
            active_count=s.active,
            failed_count=s.failed,
            singletons_active=s.singletons,
            total_count=case(
                # Not counted yet: the live jobs, as pg-boss 12 (observed: its queue_stats snapshot of a
                # queue with 11 stored jobs, 4 of them live, holds total_count 4 until maintenance counts).
                (queue.c.retained_count.is_(None), func.greatest(queue.c.total_count, live)),
                else_=queue.c.retained_count + live + s.since,
            ),
            ready_history=func.array_prepend(s.ready, queue.c.ready_history, type_=ARRAY(Integer))[1:READY_HISTORY],
            monitor_on=JOB_NOW,
        )
        .returning(queue.c.name, queue.c.queued_count, queue.c.warning_queued)
    )


AGGREGATE = _aggregate()
"""Write the cached counts of ``:queue_names`` on their rows (§8.4): queued (= blocked + deferred + ready),
active, failed, the active singleton keys, the ready history, ``total_count``, ``monitor_on``. Run only under
the ``queue-stats`` lock. Returns (name, queued_count, warning_queued)."""

DELTA_LAG_SECONDS = 10
"""A throughput window ends this long before the pass, so that a job stamped by a transaction still open at
the pass (its ``created_on``/``completed_on`` are its transaction's ``job_now()``) lands in a later window."""
DELTA_RESET_SECONDS = 2 * 3600
"""A window that would start more than this before its end (or twice the pass interval, when longer) starts
afresh instead, counting nothing (§8.4): hours of work do not land on one snapshot."""
LATENCY_SLOTS = 48
"""The slots of ``wait_bins`` and ``run_bins``: slot 0 under 10 ms, slot k in [10 ms·√2^(k-1), 10 ms·√2^k),
the last one everything longer."""
_LATENCY_LOW = math.log(0.01)
_LATENCY_WIDTH = math.log(2) / 2


def latency_slot(seconds: ColumnElement[Any]) -> ColumnElement[Any]:
    """The histogram slot of a duration of ``seconds`` (float8), clamped to 0 and the last slot; a duration of
    zero or less (two clocks) is slot 0. The same float8 arithmetic as pg-boss 12, so a duration on a slot's
    edge lands where pg-boss puts it (observed: 20 ms, the edge of slots 2 and 3, lands in slot 2)."""
    ratio = (
        func.ln(func.greatest(cast(seconds, Float), const("0.001::float8")))
        - const(f"({_LATENCY_LOW!r})::float8", Float())
    ) / const(f"({_LATENCY_WIDTH!r})::float8", Float())
    return func.least(func.greatest(cast(func.floor(ratio), Integer) + 1, 0), LATENCY_SLOTS - 1)


def _throughput() -> Any:
    end = JOB_NOW - const(f"interval '{DELTA_LAG_SECONDS} seconds'")
    reset = bindparam("reset_seconds", type_=Integer) * ONE_SECOND
    window = (
        select(
            queue.c.name,
            case((queue.c.delta_on > end - reset, queue.c.delta_on)).label("w_start"),
            end.label("w_end"),
        )
        .where(queue.c.name == any_(_names))
        .cte("win")
    )
    w = window.c
    created = and_(job.c.created_on >= w.w_start, job.c.created_on < w.w_end)
    done = and_(job.c.completed_on >= w.w_start, job.c.completed_on < w.w_end)
    timed = and_(
        done,
        job.c.state.in_([state_constant(JobState.completed), state_constant(JobState.failed)]),
        job.c.started_on.is_not(None),
    )
    wait = func.date_part("epoch", job.c.started_on - func.greatest(job.c.created_on, job.c.start_after))
    run = func.date_part("epoch", job.c.completed_on - job.c.started_on)
    rows = (
        select(
            w.name,
            w.w_start,
            w.w_end,
            created.label("created"),
            and_(done, job.c.state == state_constant(JobState.completed)).label("completed"),
            and_(done, job.c.state == state_constant(JobState.failed)).label("failed"),
            case((timed, latency_slot(wait))).label("wait_slot"),
            case((timed, latency_slot(run))).label("run_slot"),
        )
        .select_from(window.outerjoin(job, and_(job.c.name == w.name, or_(created, done))))
        .cte("finished")
    )
    r = rows.c
    per_queue = (
        select(
            r.name,
            r.w_start,
            r.w_end,
            func.count().filter(r.created).label("created"),
            func.count().filter(r.completed).label("completed"),
            func.count().filter(r.failed).label("failed"),
        )
        .group_by(r.name, r.w_start, r.w_end)
        .cte("throughput")
    )
    t = per_queue.c

    def histogram(slot: ColumnElement[Any], label: str) -> Any:
        # Counted by slot once, then laid out over every slot: NULL where none landed.
        counts = (
            select(r.name, slot.label("slot"), cast(func.count(), Integer).label("n"))
            .where(slot.is_not(None))
            .group_by(r.name, slot)
            .cte(label)
        )
        slots = func.generate_series(0, LATENCY_SLOTS - 1).table_valued("slot").render_derived(name="s")
        return (
            select(func.array_agg(aggregate_order_by(counts.c.n, slots.c.slot)))
            .select_from(slots.outerjoin(counts, and_(counts.c.slot == slots.c.slot, counts.c.name == queue.c.name)))
            .correlate(queue)
            .scalar_subquery()
        )

    ready = and_(
        job.c.name == queue.c.name,
        job.c.state < state_constant(JobState.active),
        ~job.c.blocked,
        job.c.start_after <= JOB_NOW,
    )
    oldest = (
        select(
            cast(
                func.round(extract("epoch", JOB_NOW - func.min(func.greatest(job.c.created_on, job.c.start_after)))),
                Integer,
            )
        )
        .where(ready)
        .scalar_subquery()
    )
    seconds = cast(func.round(extract("epoch", t.w_end - t.w_start)), Integer)
    return (
        update(queue)
        .where(queue.c.name == t.name)
        .values(
            created_delta=t.created,
            completed_delta=t.completed,
            failed_delta=t.failed,
            delta_seconds=case((seconds < 0, 0), else_=seconds),
            delta_on=func.greatest(queue.c.delta_on, t.w_end),
            wait_bins=histogram(r.wait_slot, "wait_counts"),
            run_bins=histogram(r.run_slot, "run_counts"),
            ready_oldest_seconds=func.coalesce(oldest, 0),
        )
        .returning(queue.c.name)
    )


THROUGHPUT = _throughput()
"""With ``persist_queue_stats``, after :data:`AGGREGATE` in its transaction (under the same ``queue-stats``
lock), write the throughput of ``:queue_names`` over the window [``delta_on``, ``job_now()`` - 10 s) (§8.4):
jobs created in it, completed and failed in it (by ``completed_on``; cancelled ones count in neither), the
48-slot histograms of the wait (``started_on`` - the later of ``created_on`` and ``start_after``) and run
(``completed_on`` - ``started_on``) of the completed and failed jobs that started, NULL in empty slots; the
window's length in whole seconds, and its end as the next ``delta_on``. A window with no start (never
counted, or ``delta_on`` older than ``:reset_seconds`` before its end) counts nothing and has NULL seconds.
``ready_oldest_seconds``: how long the oldest ready job has been ready (0 without one). Not done: pg-boss's
"true-up" of the last hour's snapshots when late commits recount higher."""

INSERT_QUEUE_STATS = insert(queue_stats).from_select(
    [
        "name",
        "deferred_count",
        "queued_count",
        "ready_count",
        "active_count",
        "failed_count",
        "total_count",
        "created_delta",
        "completed_delta",
        "failed_delta",
        "delta_seconds",
        "delta_on",
        "wait_bins",
        "run_bins",
        "ready_oldest_seconds",
        "captured_on",
    ],
    select(
        queue.c.name,
        queue.c.deferred_count,
        queue.c.queued_count,
        queue.c.ready_count,
        queue.c.active_count,
        queue.c.failed_count,
        queue.c.total_count,
        queue.c.created_delta,
        queue.c.completed_delta,
        queue.c.failed_delta,
        queue.c.delta_seconds,
        queue.c.delta_on,
        queue.c.wait_bins,
        queue.c.run_bins,
        queue.c.ready_oldest_seconds,
        JOB_NOW,
    ).where(queue.c.name == any_(_names)),
)
"""A ``queue_stats`` snapshot of each of ``:queue_names`` as its row stands, ``captured_on = job_now()``; run
under the ``queue-stats-insert`` lock (§8.4)."""

STATS_TODAY = select(cast(func.timezone("UTC", JOB_NOW), Date))
"""Today by ``job_now()``, in UTC: the day of the ``queue_stats`` partition rows go to now (§1.10)."""
STATS_PARTITIONS = (
    select(literal_column("c.relname", Text))
    .select_from(
        text(
            "pg_catalog.pg_inherits i JOIN pg_catalog.pg_class p ON p.oid = i.inhparent "
            "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace"
        )
    )
    .where(literal_column("n.nspname") == bindparam("schema", type_=Text), literal_column("p.relname") == "queue_stats")
)
"""The partitions of ``<:schema>.queue_stats``."""
STATS_PARTITION_NAME = re.compile(r"queue_stats_([0-9]{8})")


def stats_partition(schema: str, day: dt.date) -> Any:
    """Create the ``queue_stats`` partition of ``day`` (UTC) unless it exists (§1.10). ``schema`` is validated."""
    return text(
        f"CREATE TABLE IF NOT EXISTS {quote_identifier(schema)}.{quote_identifier(f'queue_stats_{day:%Y%m%d}')} "
        f"PARTITION OF {quote_identifier(schema)}.queue_stats "
        f"FOR VALUES FROM ('{day:%Y-%m-%d} 00:00:00+00') TO ('{day + dt.timedelta(days=1):%Y-%m-%d} 00:00:00+00')"
    )


INSERT_WARNING = insert(warning).values(
    type=bindparam("warning_type", type_=Text),
    message=bindparam("message", type_=Text),
    data=cast(bindparam("data", type_=Text), JSONB),
    created_on=JOB_NOW,
)
"""Persist a warning (§8.7, ``persist_warnings``)."""

DELETE_OLD_WARNINGS = delete(warning).where(
    warning.c.created_on < JOB_NOW - bindparam("retention_days", type_=Integer) * const("interval '1 day'")
)

# ------------------------------------------------------------------------------------- maintenance (§8.6)


def _deletion_batch() -> Select[Any]:
    after = bindparam("after", type_=UUID(as_uuid=True))
    cutoff = bindparam("cutoff", type_=TIMESTAMP(timezone=True))
    queue_name = bindparam("queue_name", type_=Text)
    j = job.alias("w")
    doomed = or_(
        and_(j.c.deletion_seconds > 0, j.c.completed_on + j.c.deletion_seconds * ONE_SECOND < JOB_NOW),
        and_(j.c.state < state_constant(JobState.active), j.c.keep_until < JOB_NOW),
    )
    batch = (
        select(j.c.id, j.c.state, j.c.completed_on, doomed.label("doomed"))
        .where(j.c.name == queue_name, or_(after.is_(None), j.c.id > after))
        .order_by(j.c.id)
        .limit(DELETION_BATCH)
        .cte("batch")
    )
    b = batch.c
    deleted = (
        delete(job)
        .where(job.c.name == queue_name, job.c.id.in_(select(b.id).where(b.doomed)))
        .returning(job.c.id)
        .cte("deleted")
    )
    kept_finished = and_(
        not_(b.doomed),
        b.state.in_([state_constant(JobState.completed), state_constant(JobState.cancelled)]),
        b.completed_on < cutoff,
    )
    return select(
        select(b.id).order_by(b.id.desc()).limit(1).scalar_subquery().label("last_id"),
        select(func.count()).select_from(batch).scalar_subquery().label("walked"),
        select(func.count()).select_from(deleted).scalar_subquery().label("deleted"),
        select(func.count()).select_from(batch).where(kept_finished).scalar_subquery().label("retained"),
    )


DELETION_BATCH_STATEMENT = _deletion_batch()
"""One batch of the retention sweep of ``:queue_name`` (§8.6): the next :data:`DELETION_BATCH` job ids after
``:after`` (from the first when NULL), deleting those finished ``deletion_seconds`` ago (0: never) and those
still queued past ``keep_until``; returns (last id walked, ids walked, deleted, completed or cancelled jobs kept
that finished before ``:cutoff``)."""

RETAINED_CUTOFF = select(func.date_trunc("milliseconds", JOB_NOW - const(f"interval '{RETAINED_LAG_SECONDS} seconds'")))
"""The watermark of a sweep: finished jobs older than this are counted as retained (pg-boss's, to the ms)."""


def _set_retained() -> Any:
    queue_name = bindparam("queue_name", type_=Text)
    cutoff = bindparam("cutoff", type_=TIMESTAMP(timezone=True))
    retained = bindparam("retained", type_=Integer)
    finished = job.c.state.in_([state_constant(JobState.completed), state_constant(JobState.cancelled)])
    others = (
        select(func.count())
        .where(job.c.name == queue_name, or_(not_(finished), job.c.completed_on >= cutoff))
        .scalar_subquery()
    )
    return (
        update(queue)
        .where(queue.c.name == queue_name)
        .values(retained_count=retained, retained_on=cutoff, total_count=retained + others)
    )


SET_RETAINED = _set_retained()
"""After a whole sweep of ``:queue_name``: ``retained_count`` (``:retained``), ``retained_on`` (``:cutoff``) and
``total_count``, the retained jobs and every other job stored."""


def _cleanup_dependencies(side: str) -> Any:
    d = job_dependency.alias("d")
    name, job_id = d.c[f"{side}_name"], d.c[f"{side}_id"]
    orphans = (
        select(d.c.child_name, d.c.child_id, d.c.parent_name, d.c.parent_id)
        .where(name == any_(_names), ~exists().where(job.c.name == name, job.c.id == job_id))
        .limit(DELETION_BATCH)
    )
    dep = job_dependency.c
    return delete(job_dependency).where(
        tuple_(dep.child_name, dep.child_id, dep.parent_name, dep.parent_id).in_(orphans)
    )


CLEANUP_DEPENDENCIES = {side: _cleanup_dependencies(side) for side in ("child", "parent")}
"""Delete up to :data:`DELETION_BATCH` edges of ``job_dependency`` whose child (``child``) or parent
(``parent``), a job of ``:queue_names``, no longer exists (§8.6)."""

# ------------------------------------------------------------------------------------------------ BAM (§8.9)

BAM_TAG = "/* pgboss bam {id} */ "
"""What a build's SQL starts with, so that every instance sees in ``pg_stat_activity`` that it runs (§8.9)."""


def _bam_running(row: Any) -> ColumnElement[bool]:
    tag = literal("/* pgboss bam ", Text) + cast(row.c.id, Text) + literal(" */%", Text)
    activity: Select[Any] = select(literal_column("1")).select_from(text("pg_catalog.pg_stat_activity AS a"))
    return exists(
        activity.where(literal_column("a.query", Text).like(tag), literal_column("a.pid") != func.pg_backend_pid())
    )


def _claim_bam() -> Any:
    b = bam.alias("b")
    busy = bam.alias("busy")
    earlier = bam.alias("earlier")
    stale = JOB_NOW - const(f"interval '{BAM_STALE_SECONDS} seconds'")
    attempted = bindparam("attempted", type_=ARRAY(UUID(as_uuid=True)))
    someone_builds = exists().where(
        busy.c.status == "in_progress", or_(busy.c.started_on.is_(None), busy.c.started_on > stale, _bam_running(busy))
    )
    next_command = (
        select(b.c.id)
        .where(
            or_(
                b.c.status.in_([const("'pending'"), const("'failed'")]),
                and_(b.c.status == "in_progress", b.c.started_on <= stale, not_(_bam_running(b))),
            ),
            not_(func.coalesce(b.c.id == any_(attempted), False)),
            ~exists().where(
                earlier.c.version == b.c.version,
                earlier.c.table_name == b.c.table_name,
                earlier.c.created_on < b.c.created_on,
                earlier.c.status != "completed",
                earlier.c.id != b.c.id,
            ),
            ~someone_builds,
        )
        .order_by(case((b.c.status == "pending", 0), else_=1), b.c.created_on)
        .limit(1)
        .with_for_update(skip_locked=True)
        .cte("next_command")
    )
    return (
        update(bam)
        .where(bam.c.id == next_command.c.id)
        .values(status="in_progress", started_on=JOB_NOW, completed_on=None, error=None)
        .returning(bam.c.id, bam.c.name, bam.c.version, bam.c.queue, bam.c.table_name, bam.c.command)
    )


CLAIM_BAM = _claim_bam()
"""Claim the next deferred build (§8.9), under the ``bamClaim`` lock taken by an earlier statement of the
transaction (so that its snapshot sees every claim committed before): pending before failed or stale, oldest
first, never ahead of an unfinished earlier command of the same migration (``version``) on the same table, none
of ``:attempted`` (this pass's), and nothing while another build is someone's (:data:`BAM_STALE_SECONDS`). Marks
it ``in_progress``; returns (id, name, version, queue, table_name, command), or no row."""

BAM_COMPLETED = (
    update(bam)
    .where(bam.c.id == bindparam("bam_id", type_=UUID(as_uuid=True)))
    .values(status="completed", completed_on=JOB_NOW, error=None)
)
BAM_FAILED = (
    update(bam)
    .where(bam.c.id == bindparam("bam_id", type_=UUID(as_uuid=True)))
    .values(status="failed", completed_on=JOB_NOW, error=bindparam("error", type_=Text))
)

_INDEX_NAME = re.compile(r"\bINDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?\"?([A-Za-z0-9_]+)\"?\s+ON\b", re.I)


def index_name(command: str) -> str | None:
    """The index a ``CREATE INDEX`` command builds, or ``None`` for another command."""
    match = _INDEX_NAME.search(command)
    return None if match is None else match.group(1)


INDEX_VALID = text(
    "SELECT i.indisvalid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relname = :index"
)
"""Whether the index ``:index`` of ``:schema`` is valid (NULL: there is none)."""

# ----------------------------------------------------------------------------------- instances (§8.11)

_instance_id = bindparam("instance_id", type_=UUID(as_uuid=True))


def _register() -> Any:
    values = {
        "id": _instance_id,
        "name": bindparam("instance_name", type_=Text),
        "host": bindparam("host", type_=Text),
        "pid": bindparam("pid", type_=Integer),
        "version": bindparam("version", type_=Text),
        "node_version": bindparam("runtime", type_=Text),
        "application_name": func.current_setting("application_name"),
        "heartbeat_seconds": bindparam("heartbeat_seconds", type_=Integer),
        "supervise": bindparam("supervise", type_=Boolean),
        "schedule": bindparam("schedule", type_=Boolean),
        "migrate": bindparam("migrate", type_=Boolean),
        "persist_queue_stats": bindparam("persist_queue_stats", type_=Boolean),
        "persist_warnings": bindparam("persist_warnings", type_=Boolean),
        "workers": cast(bindparam("workers", type_=Text), JSONB),
        "config": cast(bindparam("config", type_=Text), JSONB),
        "started_on": JOB_NOW,
        "heartbeat_on": JOB_NOW,
    }
    statement = pg_insert(instance).values(values)
    return statement.on_conflict_do_update(
        index_elements=["id"],
        set_={"workers": statement.excluded.workers, "heartbeat_on": JOB_NOW, "stopped_on": None},
    )


REGISTER = _register()
"""Insert this instance's row, or refresh its heartbeat and ``workers`` if it is there (§8.11)."""

_quiet = instance.c.heartbeat_on < JOB_NOW - INSTANCE_QUIET_BEATS * instance.c.heartbeat_seconds * ONE_SECOND


def _count_crashes() -> Any:
    other = instance.alias("other")
    crashed = and_(
        other.c.id != _instance_id,
        other.c.name.is_not_distinct_from(instance.c.name),
        other.c.host == instance.c.host,
        other.c.stopped_on.is_(None),
        other.c.started_on < instance.c.started_on,
        other.c.heartbeat_on < JOB_NOW - INSTANCE_QUIET_BEATS * other.c.heartbeat_seconds * ONE_SECOND,
    )
    return (
        update(instance)
        .where(instance.c.id == _instance_id)
        .values(
            crash_restarts=select(func.count()).where(crashed).scalar_subquery(),
            crash_restarts_since=select(func.min(other.c.started_on)).where(crashed).scalar_subquery(),
        )
    )


COUNT_CRASHES = _count_crashes()
"""Count the lives of this instance's name and host that ended without a stop before it started (§8.11)."""

_dead = or_(instance.c.stopped_on.is_not(None), _quiet)


def _trim_dead(per_name: bool) -> Any:
    ranked_rows = instance.alias("r")
    dead = or_(
        ranked_rows.c.stopped_on.is_not(None),
        ranked_rows.c.heartbeat_on < JOB_NOW - INSTANCE_QUIET_BEATS * ranked_rows.c.heartbeat_seconds * ONE_SECOND,
    )
    rank = func.row_number().over(
        partition_by=ranked_rows.c.name if per_name else None, order_by=ranked_rows.c.heartbeat_on.desc()
    )
    ranked = select(ranked_rows.c.id, rank.label("rank")).where(dead)
    if per_name:
        ranked = ranked.where(ranked_rows.c.name.is_not_distinct_from(bindparam("instance_name", type_=Text)))
    ranked_sub = ranked.subquery("ranked")
    keep = INSTANCE_DEAD_KEPT_PER_NAME if per_name else INSTANCE_DEAD_KEPT
    return delete(instance).where(instance.c.id.in_(select(ranked_sub.c.id).where(ranked_sub.c.rank > keep)))


TRIM_DEAD_OF_NAME = _trim_dead(per_name=True)
"""Keep the newest :data:`INSTANCE_DEAD_KEPT_PER_NAME` dead rows of ``:instance_name``."""
TRIM_DEAD = _trim_dead(per_name=False)
"""Keep the newest :data:`INSTANCE_DEAD_KEPT` dead rows of all."""
DELETE_OLD_INSTANCES = delete(instance).where(
    instance.c.heartbeat_on < JOB_NOW - INSTANCE_RETENTION_DAYS * const("interval '1 day'")
)
HEARTBEAT = (
    update(instance)
    .where(instance.c.id == _instance_id)
    .values(heartbeat_on=JOB_NOW, workers=cast(bindparam("workers", type_=Text), JSONB))
    .returning(instance.c.id)
)
STOP_INSTANCE = update(instance).where(instance.c.id == _instance_id).values(stopped_on=JOB_NOW, heartbeat_on=JOB_NOW)

# ------------------------------------------------------------------------------------------ the operations


@dataclass(frozen=True)
class QueueChunk:
    """Up to :data:`QUEUE_CHUNK` queues of one job table, as the supervise pass walks them."""

    table: str
    names: list[str]


@dataclass(frozen=True)
class Backlog:
    """A ``queue_backlog`` warning: the queue holds more queued jobs than its threshold (§8.4)."""

    name: str
    queued: int
    threshold: int

    @property
    def message(self) -> str:
        return f"queue {self.name} has {self.queued} queued jobs, more than {self.threshold}"

    def data(self) -> dict[str, Any]:
        return {"name": self.name, "queuedCount": self.queued, "warningQueueSize": self.threshold}


@dataclass(frozen=True)
class SweepBatch:
    """What one batch of the retention sweep did (§8.6)."""

    last_id: uuid.UUID | None
    walked: int
    deleted: int
    retained: int


@dataclass(frozen=True)
class BamCommand:
    """A deferred build claimed (§8.9)."""

    id: uuid.UUID
    name: str
    version: int
    queue: str | None
    table_name: str
    command: str

    @property
    def sql(self) -> str:
        """The command as it runs: tagged, so that ``pg_stat_activity`` tells every instance it is running."""
        return BAM_TAG.format(id=self.id) + self.command


@dataclass(frozen=True)
class InstanceRecord:
    """What this instance writes in its ``instance`` row (§8.11)."""

    id: uuid.UUID
    name: str | None
    host: str
    pid: int
    version: str
    runtime: str
    heartbeat_seconds: int
    supervise: bool
    schedule: bool
    migrate: bool
    persist_warnings: bool
    persist_queue_stats: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def params(self, workers: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        return {
            "instance_id": self.id,
            "instance_name": self.name,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "runtime": self.runtime,
            "heartbeat_seconds": self.heartbeat_seconds,
            "supervise": self.supervise,
            "schedule": self.schedule,
            "migrate": self.migrate,
            "persist_warnings": self.persist_warnings,
            "persist_queue_stats": self.persist_queue_stats,
            "workers": json.dumps(list(workers), default=str),
            "config": json.dumps(self.config, default=str),
        }


@dataclass
class SupervisePass:
    """What one supervise pass did (:meth:`AsyncSupervisor.supervise`)."""

    monitored: list[str]
    """The queues whose monitoring this instance claimed."""
    counted: list[str]
    """The queues whose counts it wrote (none when another instance held ``queue-stats``, or under backoff)."""
    maintained: list[str]
    """The queues whose maintenance it claimed and finished."""
    expired: int = 0
    dead_lettered: int = 0
    deleted: int = 0
    backlogs: list[Backlog] | None = None


@dataclass(frozen=True)
class BamRun:
    """A deferred build this instance ran (:meth:`AsyncSupervisor.build_indexes`)."""

    id: uuid.UUID
    name: str
    table_name: str
    error: str | None


class Supervision46:
    """The supervisor's operations on one version-46 schema: each one a transaction's worth of steps, without
    I/O. Locks are pg-boss's (§2.2), taken in the transaction each operation runs in."""

    def __init__(self, schema: str = DEFAULT_SCHEMA) -> None:
        self.schema = validate_schema_name(schema)

    def _lock(self, suffix: str) -> Operation[None]:
        for statement in LOCK_TIMEOUTS:
            yield Step(statement, {}, "rowcount")
        yield Step(LOCK, {"lock_name": self.schema + suffix}, "rows")

    # -------------------------------------------------------------------------------------- claims

    def queue_chunks(self) -> Operation[list[QueueChunk]]:
        """Every queue, by job table, in chunks of :data:`QUEUE_CHUNK`. Reads only."""
        rows = yield Step(QUEUE_TABLES, {}, "rows")
        chunks: list[QueueChunk] = []
        for table_name, name in rows:
            if not chunks or chunks[-1].table != table_name or len(chunks[-1].names) >= QUEUE_CHUNK:
                chunks.append(QueueChunk(table_name, []))
            chunks[-1].names.append(name)
        return chunks

    def claim_monitor(self, names: Sequence[str], interval_seconds: int) -> Operation[list[str]]:
        """Claim the monitoring of those of ``names`` due for it; returns the names this instance won."""
        params = {"queue_names": list(names), "interval_seconds": interval_seconds}
        rows = yield Step(CLAIM_MONITOR, params, "rows")
        return sorted(name for (name,) in rows)

    def claim_maintain(self, names: Sequence[str], interval_seconds: int) -> Operation[list[str]]:
        """Claim the maintenance of those of ``names`` due for it; returns the names this instance won."""
        params = {"queue_names": list(names), "interval_seconds": interval_seconds}
        rows = yield Step(CLAIM_MAINTAIN, params, "rows")
        return sorted(name for (name,) in rows)

    def hand_back_maintain(self, names: Sequence[str]) -> Operation[int]:
        return int((yield Step(HAND_BACK_MAINTAIN, {"queue_names": list(names)}, "rowcount")))

    def claim(self, column: str, interval_seconds: int) -> Operation[bool]:
        """Claim ``version.<column>`` (``flow_on``, ``bam_on``) for ``interval_seconds``; whether this won."""
        rows = yield Step(CLAIM_VERSION[column], {"interval_seconds": interval_seconds}, "rows")
        return bool(rows)

    # -------------------------------------------------------------------------------------- monitor

    def expire(self, table: str, names: Sequence[str], by: str) -> Operation[tuple[int, int]]:
        """One batch of expiry (``by``: ``timeout`` or ``heartbeat``) of the active jobs of ``names`` (queues of
        ``table``), under the lock ``<table>failJobsByTimeout`` / ``...ByHeartbeat``; returns (failed or
        retried, dead-lettered)."""
        yield from self._lock(table + ("failJobsByTimeout" if by == "timeout" else "failJobsByHeartbeat"))
        rows = yield Step(EXPIRE[by], {"queue_names": list(names)}, "rows")
        affected, dead_lettered = rows[0]
        return int(affected), int(dead_lettered)

    def monitor(
        self, names: Sequence[str], reset_seconds: int | None = None
    ) -> Operation[list[tuple[str, int, int]] | None]:
        """Write the cached counts of ``names`` (§8.4) under the ``queue-stats`` try-lock, and with
        ``reset_seconds`` (``persist_queue_stats``) their throughput (:data:`THROUGHPUT`); returns (name,
        queued_count, warning_queued) of each, or ``None`` when another instance held the lock or the backoff
        holds every aggregate back: then, for the lock, the claims are handed back."""
        if (yield Step(MONITOR_BACKOFF, {}, "scalar")):
            return None
        if not (yield Step(TRY_LOCK, {"lock_name": self.schema + "queue-stats"}, "scalar")):
            yield Step(HAND_BACK_MONITOR, {"queue_names": list(names)}, "rowcount")
            return None
        rows = yield Step(AGGREGATE, {"queue_names": list(names)}, "rows")
        if reset_seconds is not None:
            yield Step(THROUGHPUT, {"queue_names": list(names), "reset_seconds": reset_seconds}, "rowcount")
        return [(name, int(queued), int(threshold)) for name, queued, threshold in rows]

    def insert_queue_stats(self, names: Sequence[str]) -> Operation[int]:
        """A ``queue_stats`` snapshot of each of ``names`` (the queues a count just wrote), under the
        ``queue-stats-insert`` lock; returns how many."""
        yield from self._lock("queue-stats-insert")
        return int((yield Step(INSERT_QUEUE_STATS, {"queue_names": list(names)}, "rowcount")))

    def ensure_stats_partitions(self) -> Operation[list[str]]:
        """Create today's and tomorrow's (UTC, by ``job_now()``) ``queue_stats`` partitions unless they exist
        (§8.2 step 1); returns the names of both."""
        today: dt.date = yield Step(STATS_TODAY, {}, "scalar")
        existing = {name for (name,) in (yield Step(STATS_PARTITIONS, {"schema": self.schema}, "rows"))}
        names = []
        for day in (today, today + dt.timedelta(days=1)):
            name = f"queue_stats_{day:%Y%m%d}"
            if name not in existing:
                yield Step(stats_partition(self.schema, day), {}, "rowcount")
            names.append(name)
        return names

    def drop_old_stats_partitions(self, retention_days: int) -> Operation[list[str]]:
        """Drop the ``queue_stats`` partitions of days before today (UTC) minus ``retention_days`` (§8.2
        step 3); returns their names."""
        today: dt.date = yield Step(STATS_TODAY, {}, "scalar")
        cutoff = today - dt.timedelta(days=retention_days)
        dropped = []
        for name in sorted(name for (name,) in (yield Step(STATS_PARTITIONS, {"schema": self.schema}, "rows"))):
            match = STATS_PARTITION_NAME.fullmatch(name)
            if match is None:
                continue
            try:
                day = dt.datetime.strptime(match.group(1), "%Y%m%d").date()
            except ValueError:
                continue
            if day < cutoff:
                drop = text(f"DROP TABLE IF EXISTS {quote_identifier(self.schema)}.{quote_identifier(name)}")
                yield Step(drop, {}, "rowcount")
                dropped.append(name)
        return dropped

    def write_warning(self, warning_type: str, message: str, data: Any) -> Operation[None]:
        params = {"warning_type": warning_type, "message": message, "data": json.dumps(data, default=str)}
        yield Step(INSERT_WARNING, params, "rowcount")

    def delete_old_warnings(self, retention_days: int) -> Operation[int]:
        return int((yield Step(DELETE_OLD_WARNINGS, {"retention_days": retention_days}, "rowcount")))

    # ---------------------------------------------------------------------------------- maintenance

    def retained_cutoff(self) -> Operation[dt.datetime]:
        cutoff: dt.datetime = yield Step(RETAINED_CUTOFF, {}, "scalar")
        return cutoff

    def sweep(self, table: str, queue_name: str, after: uuid.UUID | None, cutoff: dt.datetime) -> Operation[SweepBatch]:
        """One batch of the retention sweep of ``queue_name`` (§8.6) under the lock ``<table>deletion``."""
        yield from self._lock(table + "deletion")
        params = {"queue_name": queue_name, "after": after, "cutoff": cutoff}
        rows = yield Step(DELETION_BATCH_STATEMENT, params, "rows")
        last_id, walked, deleted, retained = rows[0]
        return SweepBatch(last_id, int(walked), int(deleted), int(retained))

    def set_retained(self, queue_name: str, retained: int, cutoff: dt.datetime) -> Operation[None]:
        params = {"queue_name": queue_name, "retained": retained, "cutoff": cutoff}
        yield Step(SET_RETAINED, params, "rowcount")

    def cleanup_dependencies(self, table: str, names: Sequence[str], side: str) -> Operation[int]:
        """Delete one batch of the edges whose ``side`` (``child``, ``parent``) is gone, under the lock
        ``<table>cleanupDependencies``; returns how many."""
        yield from self._lock(table + "cleanupDependencies")
        return int((yield Step(CLEANUP_DEPENDENCIES[side], {"queue_names": list(names)}, "rowcount")))

    # ------------------------------------------------------------------------------------------- BAM

    def claim_bam_command(self, attempted: Sequence[uuid.UUID]) -> Operation[BamCommand | None]:
        """Claim the next deferred build (:data:`CLAIM_BAM`) under the ``bamClaim`` lock; ``None`` when there
        is none for this instance now."""
        yield from self._lock("bamClaim")
        rows = yield Step(CLAIM_BAM, {"attempted": list(attempted)}, "rows")
        return BamCommand(*rows[0]) if rows else None

    def bam_finished(self, command: BamCommand, error: str | None) -> Operation[None]:
        if error is None:
            yield Step(BAM_COMPLETED, {"bam_id": command.id}, "rowcount")
        else:
            yield Step(BAM_FAILED, {"bam_id": command.id, "error": error}, "rowcount")

    def index_valid(self, name: str) -> Operation[bool | None]:
        valid: bool | None = yield Step(INDEX_VALID, {"schema": self.schema, "index": name}, "scalar")
        return valid

    # ------------------------------------------------------------------------------------- instances

    def register(self, record: InstanceRecord, workers: Sequence[dict[str, Any]]) -> Operation[None]:
        """Write this instance's row (§8.11), count its crashed lives, trim the dead ones of its name."""
        params = record.params(workers)
        yield Step(REGISTER, params, "rowcount")
        yield Step(COUNT_CRASHES, {"instance_id": record.id}, "rowcount")
        yield Step(TRIM_DEAD_OF_NAME, {"instance_name": record.name}, "rowcount")

    def heartbeat(self, record: InstanceRecord, workers: Sequence[dict[str, Any]]) -> Operation[None]:
        """Refresh the row's heartbeat and workers, or write it again if it was trimmed meanwhile."""
        rows = yield Step(HEARTBEAT, {"instance_id": record.id, "workers": record.params(workers)["workers"]}, "rows")
        if not rows:
            yield Step(REGISTER, record.params(workers), "rowcount")

    def stop(self, record: InstanceRecord) -> Operation[None]:
        yield Step(STOP_INSTANCE, {"instance_id": record.id}, "rowcount")

    def prune_instances(self) -> Operation[int]:
        """Delete rows not heard from for a week, and the dead beyond the newest 1000 (§8.2)."""
        old = yield Step(DELETE_OLD_INSTANCES, {}, "rowcount")
        dead = yield Step(TRIM_DEAD, {}, "rowcount")
        return int(old) + int(dead)


__all__ = [
    "EXPIRE",
    "HEARTBEAT_OUTPUT",
    "TIMEOUT_OUTPUT",
    "Backlog",
    "BamCommand",
    "BamRun",
    "InstanceRecord",
    "QueueChunk",
    "SupervisePass",
    "Supervision46",
    "SweepBatch",
    "index_name",
]
