"""Declarative SQLAlchemy models of pg-boss 12.38's tables (schema version 46).

They live on :data:`metadata`, apart from the version-24 models of :mod:`sqla_boss.models`, whose tables
have the same names. Point them at a schema other than ``pgboss`` with ``schema_translate_map``, as for 24.

``job`` is partitioned by queue name: ``job_common`` is its default partition, holding every queue created
without ``partition: true``, and each partitioned queue has a table of its own (``queue.table_name``). Query
``Job``, the parent; PostgreSQL finds the partition.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ENUM, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.models.base import TextEnum
from sqla_boss.models.enums import JobState

metadata = MetaData(schema=DEFAULT_SCHEMA)
"""The version-46 tables; never the application's own metadata, nor the version-24 one."""

JobStateType = ENUM(
    JobState,
    name="job_state",
    schema=DEFAULT_SCHEMA,
    metadata=metadata,
    values_callable=lambda states: [state.value for state in states],
    validate_strings=True,
)
"""``<schema>.job_state``: the same six labels as version 24, in the order pg-boss's SQL relies on."""


class QueuePolicy(str, enum.Enum):
    """A version-46 queue's policy: which jobs of one singleton key the job table's unique indexes let coexist.

    Jobs without a key share the key ``''``.
    """

    standard = "standard"
    """No restriction."""
    short = "short"
    """At most one *created* job per key."""
    singleton = "singleton"
    """At most one *active* job per key; fetching skips keys that have one."""
    stately = "stately"
    """At most one job per key in each of created, retry and active."""
    exclusive = "exclusive"
    """At most one job per key among created, retry and active together."""
    key_strict_fifo = "key_strict_fifo"
    """A key is required; per key, jobs run one at a time in order, and a failed job blocks its key."""

    def __str__(self) -> str:
        return self.value


class QueuePolicyType(TextEnum):
    """A ``text`` column holding a version-46 policy, read and written as :class:`QueuePolicy`."""

    cache_ok = True  # SQLAlchemy reads it from each class itself

    def __init__(self) -> None:
        super().__init__(QueuePolicy)


class Base(DeclarativeBase):
    """Base of the version-46 models: :data:`metadata`, default schema ``pgboss``."""

    metadata = metadata
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        int: Integer,
        str: Text,
        uuid.UUID: UUID(as_uuid=True),
        dt.datetime: DateTime(timezone=True),
        JobState: JobStateType,
        QueuePolicy: QueuePolicyType,
        list[int]: ARRAY(Integer),
        list[str]: ARRAY(Text),
    }


def _now() -> Any:
    return func.now()


class Version(Base):
    """``<schema>.version``: the schema version (46) and the cluster-wide claims of once-per-cluster work.

    Each instance, Node or Python, claims the cron pass, the deferred index builds (``bam``), the flow
    resolver and the reindex by moving its clock forward; ``monitor_backoff_on`` is a deadline before which no
    instance starts a statistics pass.
    """

    __tablename__ = "version"
    __table_args__ = (PrimaryKeyConstraint("version", name="version_pkey"),)

    version: Mapped[int] = mapped_column(autoincrement=False)
    cron_on: Mapped[dt.datetime | None]
    bam_on: Mapped[dt.datetime | None]
    flow_on: Mapped[dt.datetime | None]
    reindex_on: Mapped[dt.datetime | None]
    monitor_backoff_on: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"Version(version={self.version!r})"


class Queue(Base):
    """``<schema>.queue``: a queue, its complete settings (copied into each job at insert) and its cached
    counts, written by the supervisor.

    Create and delete queues through the ``create_queue`` / ``delete_queue`` functions (or the repository),
    never by inserting rows: a partitioned queue needs its table.
    """

    __tablename__ = "queue"
    __table_args__ = (
        PrimaryKeyConstraint("name", name="queue_pkey"),
        ForeignKeyConstraint(["dead_letter"], ["queue.name"], name="queue_dead_letter_fkey"),
        CheckConstraint("dead_letter IS DISTINCT FROM name", name="queue_check"),
    )

    name: Mapped[str]
    policy: Mapped[QueuePolicy]
    retry_limit: Mapped[int]
    retry_delay: Mapped[int]
    retry_backoff: Mapped[bool]
    retry_delay_max: Mapped[int | None]
    expire_seconds: Mapped[int]
    retention_seconds: Mapped[int]
    deletion_seconds: Mapped[int] = mapped_column(doc="Finished jobs are deleted this long after completion; 0 never.")
    dead_letter: Mapped[str | None]
    partition: Mapped[bool] = mapped_column(doc="Whether the queue has a job table of its own.")
    table_name: Mapped[str] = mapped_column(doc="``job_common``, or the queue's own partition.")
    deferred_count: Mapped[int] = mapped_column(server_default=text("0"))
    blocked_count: Mapped[int] = mapped_column(server_default=text("0"))
    queued_count: Mapped[int] = mapped_column(server_default=text("0"))
    ready_count: Mapped[int] = mapped_column(server_default=text("0"))
    warning_queued: Mapped[int] = mapped_column(server_default=text("0"))
    active_count: Mapped[int] = mapped_column(server_default=text("0"))
    failed_count: Mapped[int] = mapped_column(server_default=text("0"))
    total_count: Mapped[int] = mapped_column(server_default=text("0"))
    retained_count: Mapped[int | None]
    retained_on: Mapped[dt.datetime | None]
    created_delta: Mapped[int] = mapped_column(server_default=text("0"))
    completed_delta: Mapped[int] = mapped_column(server_default=text("0"))
    failed_delta: Mapped[int] = mapped_column(server_default=text("0"))
    delta_on: Mapped[dt.datetime | None]
    delta_seconds: Mapped[int | None]
    wait_bins: Mapped[list[int] | None]
    run_bins: Mapped[list[int] | None]
    ready_oldest_seconds: Mapped[int | None]
    ready_history: Mapped[list[int]] = mapped_column(server_default=text("'{}'"))
    heartbeat_seconds: Mapped[int | None]
    notify: Mapped[bool] = mapped_column(server_default=text("false"))
    singletons_active: Mapped[list[str] | None]
    monitor_claim_on: Mapped[dt.datetime | None]
    monitor_on: Mapped[dt.datetime | None]
    maintain_on: Mapped[dt.datetime | None]
    created_on: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_on: Mapped[dt.datetime] = mapped_column(server_default=_now())

    dead_letter_queue: Mapped[Queue | None] = relationship(remote_side="Queue.name")
    """The queue this queue's failed jobs are copied to."""
    schedules: Mapped[list[Schedule]] = relationship(back_populates="queue", passive_deletes=True)
    """The queue's schedules, one per key."""
    subscriptions: Mapped[list[Subscription]] = relationship(back_populates="queue", passive_deletes=True)
    """The events this queue is subscribed to."""

    def __repr__(self) -> str:
        return f"Queue(name={self.name!r}, policy={self.policy!r})"


class Schedule(Base):
    """``<schema>.schedule``: a cron expression or an RFC 5545 rule (``kind``) that sends jobs to a queue;
    a queue has one per ``key``. Deleting the queue deletes its schedules."""

    __tablename__ = "schedule"
    __table_args__ = (
        PrimaryKeyConstraint("name", "key", name="schedule_pkey"),
        ForeignKeyConstraint(["name"], ["queue.name"], name="schedule_name_fkey", ondelete="CASCADE"),
        CheckConstraint("kind IN ('cron', 'rrule')", name="schedule_kind_check"),
    )

    name: Mapped[str]
    key: Mapped[str] = mapped_column(server_default=text("''"))
    kind: Mapped[str] = mapped_column(server_default=text("'cron'"))
    cron: Mapped[str] = mapped_column(doc="The expression, of either kind.")
    timezone: Mapped[str | None] = mapped_column(server_default=text("'UTC'"))
    data: Mapped[Any] = mapped_column(JSONB, nullable=True)
    options: Mapped[Any] = mapped_column(JSONB, nullable=True)
    created_on: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_on: Mapped[dt.datetime] = mapped_column(server_default=_now())
    last_job_id: Mapped[uuid.UUID | None]

    queue: Mapped[Queue] = relationship(back_populates="schedules")

    def __repr__(self) -> str:
        return f"Schedule(name={self.name!r}, key={self.key!r}, kind={self.kind!r}, cron={self.cron!r})"


class Subscription(Base):
    """``<schema>.subscription``: publishing ``event`` sends a job to queue ``name`` (as in version 24)."""

    __tablename__ = "subscription"
    __table_args__ = (
        PrimaryKeyConstraint("event", "name", name="subscription_pkey"),
        ForeignKeyConstraint(["name"], ["queue.name"], name="subscription_name_fkey", ondelete="CASCADE"),
    )

    event: Mapped[str]
    name: Mapped[str]
    created_on: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_on: Mapped[dt.datetime] = mapped_column(server_default=_now())

    queue: Mapped[Queue] = relationship(back_populates="subscriptions")

    def __repr__(self) -> str:
        return f"Subscription(event={self.event!r}, name={self.name!r})"


class Bam(Base):
    """``<schema>.bam``: index builds a migration deferred, run later one at a time (``status``)."""

    __tablename__ = "bam"
    __table_args__ = (PrimaryKeyConstraint("id", name="bam_pkey"),)

    id: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    name: Mapped[str]
    version: Mapped[int]
    status: Mapped[str] = mapped_column(server_default=text("'pending'"))
    queue: Mapped[str | None]
    table_name: Mapped[str]
    command: Mapped[str]
    error: Mapped[str | None]
    created_on: Mapped[dt.datetime] = mapped_column(server_default=text("clock_timestamp()"))
    started_on: Mapped[dt.datetime | None]
    completed_on: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"Bam(name={self.name!r}, table_name={self.table_name!r}, status={self.status!r})"


class Job(Base):
    """``<schema>.job``: every job, partitioned by queue name (``job_common`` and the partitioned queues'
    tables). Finished jobs stay here until ``deletion_seconds`` after ``completed_on``: there is no archive.

    Change states through the repository, which keeps pg-boss's rules; the partitions' unique indexes
    enforce the policies.
    """

    __tablename__ = "job"
    __table_args__ = (
        PrimaryKeyConstraint("name", "id", name="job_pkey"),
        {"postgresql_partition_by": "LIST (name)"},
    )

    id: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    name: Mapped[str] = mapped_column(doc="The queue name; also the partition key.")
    priority: Mapped[int] = mapped_column(server_default=text("0"))
    data: Mapped[Any] = mapped_column(JSONB, nullable=True)
    state: Mapped[JobState] = mapped_column(server_default=text("'created'"))
    retry_limit: Mapped[int] = mapped_column(server_default=text("2"))
    retry_count: Mapped[int] = mapped_column(server_default=text("0"))
    retry_delay: Mapped[int] = mapped_column(server_default=text("0"))
    retry_backoff: Mapped[bool] = mapped_column(server_default=text("false"))
    retry_delay_max: Mapped[int | None]
    expire_seconds: Mapped[int] = mapped_column(server_default=text("900"))
    deletion_seconds: Mapped[int] = mapped_column(server_default=text("604800"))
    singleton_key: Mapped[str | None]
    singleton_on: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=False), doc="Start of the throttling slot: naive UTC (timestamp without time zone)."
    )
    group_id: Mapped[str | None]
    group_tier: Mapped[str | None]
    start_after: Mapped[dt.datetime] = mapped_column(server_default=_now())
    created_on: Mapped[dt.datetime] = mapped_column(server_default=_now())
    started_on: Mapped[dt.datetime | None]
    completed_on: Mapped[dt.datetime | None]
    keep_until: Mapped[dt.datetime] = mapped_column(server_default=text("now() + interval '1209600'"))
    output: Mapped[Any] = mapped_column(JSONB, nullable=True)
    dead_letter: Mapped[str | None]
    policy: Mapped[QueuePolicy | None] = mapped_column(doc="The queue's policy at insert; the indexes read it.")
    heartbeat_on: Mapped[dt.datetime | None]
    heartbeat_seconds: Mapped[int | None]
    blocked: Mapped[bool] = mapped_column(server_default=text("false"), doc="Waiting for its flow parents.")
    blocking: Mapped[bool] = mapped_column(server_default=text("false"), doc="A parent not yet propagated.")
    pending_dependencies: Mapped[int] = mapped_column(server_default=text("0"))
    source_name: Mapped[str | None] = mapped_column(doc="Dead-letter provenance: the queue it failed in.")
    source_id: Mapped[uuid.UUID | None]
    source_created_on: Mapped[dt.datetime | None]
    source_retry_count: Mapped[int | None]
    source_output: Mapped[Any] = mapped_column(JSONB, nullable=True)
    source_root_id: Mapped[uuid.UUID | None]
    trace_context: Mapped[Any] = mapped_column(JSONB, nullable=True, doc="The OpenTelemetry carrier.")
    upsert_by_key: Mapped[bool | None]

    queue: Mapped[Queue] = relationship(primaryjoin="foreign(Job.name) == Queue.name", viewonly=True)
    """The job's queue (read only: ``job`` has no foreign key of its own, its partitions do)."""

    def __repr__(self) -> str:
        return f"Job(name={self.name!r}, id={self.id!s}, state={self.state!s})"


class JobDependency(Base):
    """``<schema>.job_dependency``: a flow's edge, child waiting on parent (no foreign keys: maintenance
    removes orphans)."""

    __tablename__ = "job_dependency"
    __table_args__ = (
        PrimaryKeyConstraint("child_name", "child_id", "parent_name", "parent_id", name="job_dependency_pkey"),
        Index("job_dep_parent_idx", "parent_name", "parent_id"),
    )

    child_name: Mapped[str]
    child_id: Mapped[uuid.UUID]
    parent_name: Mapped[str]
    parent_id: Mapped[uuid.UUID]


class PersistedWarning(Base):
    """``<schema>.warning``: warnings an instance persisted (``persistWarnings``)."""

    __tablename__ = "warning"
    __table_args__ = (PrimaryKeyConstraint("id", name="warning_pkey"), Index("warning_i1", text("created_on DESC")))

    id: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    type: Mapped[str]
    message: Mapped[str]
    data: Mapped[Any] = mapped_column(JSONB, nullable=True)
    created_on: Mapped[dt.datetime] = mapped_column(server_default=_now())


class QueueStats(Base):
    """``<schema>.queue_stats``: snapshots of the queues' counts, partitioned by day (UTC) of ``captured_on``."""

    __tablename__ = "queue_stats"
    __table_args__ = (
        PrimaryKeyConstraint("id", "captured_on", name="queue_stats_pkey"),
        Index(
            "queue_stats_i1",
            "name",
            text("captured_on DESC"),
            postgresql_include=[
                "deferred_count",
                "queued_count",
                "ready_count",
                "active_count",
                "failed_count",
                "total_count",
            ],
        ),
        {"postgresql_partition_by": "RANGE (captured_on)"},
    )

    id: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    name: Mapped[str]
    deferred_count: Mapped[int] = mapped_column(server_default=text("0"))
    queued_count: Mapped[int] = mapped_column(server_default=text("0"))
    ready_count: Mapped[int] = mapped_column(server_default=text("0"))
    active_count: Mapped[int] = mapped_column(server_default=text("0"))
    failed_count: Mapped[int] = mapped_column(server_default=text("0"))
    total_count: Mapped[int] = mapped_column(server_default=text("0"))
    created_delta: Mapped[int | None]
    completed_delta: Mapped[int | None]
    failed_delta: Mapped[int | None]
    delta_seconds: Mapped[int | None]
    delta_on: Mapped[dt.datetime | None]
    wait_bins: Mapped[list[int] | None]
    run_bins: Mapped[list[int] | None]
    ready_oldest_seconds: Mapped[int | None]
    captured_on: Mapped[dt.datetime] = mapped_column(server_default=_now())


class Instance(Base):
    """``<schema>.instance``: a running pg-boss instance, its settings and its heartbeat."""

    __tablename__ = "instance"
    __table_args__ = (PrimaryKeyConstraint("id", name="instance_pkey"),)

    id: Mapped[uuid.UUID]
    name: Mapped[str | None]
    host: Mapped[str]
    pid: Mapped[int]
    version: Mapped[str]
    node_version: Mapped[str]
    application_name: Mapped[str | None]
    heartbeat_seconds: Mapped[int]
    supervise: Mapped[bool]
    schedule: Mapped[bool]
    migrate: Mapped[bool]
    persist_queue_stats: Mapped[bool]
    persist_warnings: Mapped[bool]
    pool_max: Mapped[int | None]
    pool_total: Mapped[int | None]
    pool_idle: Mapped[int | None]
    pool_waiting: Mapped[int | None]
    workers: Mapped[Any] = mapped_column(JSONB, server_default=text("'[]'"))
    metrics: Mapped[Any] = mapped_column(JSONB, nullable=True)
    config: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'"))
    crash_restarts: Mapped[int] = mapped_column(server_default=text("0"))
    crash_restarts_since: Mapped[dt.datetime | None]
    started_on: Mapped[dt.datetime] = mapped_column(server_default=_now())
    heartbeat_on: Mapped[dt.datetime] = mapped_column(server_default=_now())
    stopped_on: Mapped[dt.datetime | None]


__all__ = [
    "Bam",
    "Base",
    "Instance",
    "Job",
    "JobDependency",
    "JobState",
    "JobStateType",
    "PersistedWarning",
    "Queue",
    "QueuePolicy",
    "QueuePolicyType",
    "QueueStats",
    "Schedule",
    "Subscription",
    "Version",
    "metadata",
]
