"""``Job`` and ``Archive``: jobs in their queue partitions, and jobs that maintenance moved aside."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, ClassVar

from sqlalchemy import DateTime, Index, PrimaryKeyConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, relationship
from sqlalchemy.schema import DefaultClause

from sqla_boss.models.base import Base
from sqla_boss.models.enums import JobState, QueuePolicy
from sqla_boss.models.queue import Queue


class JobColumns:
    """The twenty columns of a pg-boss job, in pg-boss's order, shared by ``Job`` and ``Archive``.

    ``job`` has server defaults; ``archive`` is ``LIKE job`` without them, so the columns that have a
    default take it from :meth:`_default`, which answers according to ``__job_defaults__``.
    """

    __job_defaults__: ClassVar[bool] = True

    @classmethod
    def _default(cls, sql: str) -> DefaultClause | None:
        return DefaultClause(text(sql)) if cls.__job_defaults__ else None

    @declared_attr
    def id(cls) -> Mapped[uuid.UUID]:
        """The job id; unique per queue."""
        return mapped_column(server_default=cls._default("gen_random_uuid()"), sort_order=1)

    name: Mapped[str] = mapped_column(sort_order=2, doc="The queue name; also the partition key.")

    @declared_attr
    def priority(cls) -> Mapped[int]:
        """Higher is fetched first."""
        return mapped_column(server_default=cls._default("0"), sort_order=3)

    data: Mapped[Any] = mapped_column(JSONB, nullable=True, sort_order=4, doc="The payload.")

    @declared_attr
    def state(cls) -> Mapped[JobState]:
        """Where the job is in its life."""
        return mapped_column(server_default=cls._default("'created'"), sort_order=5)

    @declared_attr
    def retry_limit(cls) -> Mapped[int]:
        """How many retries the job gets after its first run."""
        return mapped_column(server_default=cls._default("2"), sort_order=6)

    @declared_attr
    def retry_count(cls) -> Mapped[int]:
        """How many times the job was fetched again after its first start."""
        return mapped_column(server_default=cls._default("0"), sort_order=7)

    @declared_attr
    def retry_delay(cls) -> Mapped[int]:
        """Seconds to wait before a retry (the base of the backoff)."""
        return mapped_column(server_default=cls._default("0"), sort_order=8)

    @declared_attr
    def retry_backoff(cls) -> Mapped[bool]:
        """Whether retry delays grow exponentially, with jitter."""
        return mapped_column(server_default=cls._default("false"), sort_order=9)

    @declared_attr
    def start_after(cls) -> Mapped[dt.datetime]:
        """The job is not fetched before this time."""
        return mapped_column(server_default=cls._default("now()"), sort_order=10)

    started_on: Mapped[dt.datetime | None] = mapped_column(sort_order=11)
    singleton_key: Mapped[str | None] = mapped_column(sort_order=12)
    singleton_on: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=False),
        sort_order=13,
        doc="Start of the throttling slot: naive UTC wall-clock time (timestamp without time zone).",
    )

    @declared_attr
    def expire_in(cls) -> Mapped[dt.timedelta]:
        """How long the job may stay active before maintenance fails it."""
        return mapped_column(server_default=cls._default("interval '15 minutes'"), sort_order=14)

    @declared_attr
    def created_on(cls) -> Mapped[dt.datetime]:
        """When the job was inserted."""
        return mapped_column(server_default=cls._default("now()"), sort_order=15)

    completed_on: Mapped[dt.datetime | None] = mapped_column(sort_order=16)

    @declared_attr
    def keep_until(cls) -> Mapped[dt.datetime]:
        """A job still queued at this time is archived by maintenance."""
        return mapped_column(server_default=cls._default("now() + interval '14 days'"), sort_order=17)

    output: Mapped[Any] = mapped_column(JSONB, nullable=True, sort_order=18, doc="The result, or the failure.")
    dead_letter: Mapped[str | None] = mapped_column(sort_order=19)
    policy: Mapped[QueuePolicy | None] = mapped_column(
        sort_order=20, doc="The queue's policy when the job was sent; the unique indexes read this copy."
    )

    @declared_attr
    def queue(cls) -> Mapped[Queue]:
        """The job's queue (read only: ``job`` has no foreign key of its own, its partitions do)."""
        return relationship(
            Queue,
            primaryjoin=f"foreign({cls.__name__}.name) == Queue.name",  # type: ignore[attr-defined]
            viewonly=True,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, id={self.id!s}, state={self.state!s})"


class Job(JobColumns, Base):
    """``<schema>.job``: every live job, partitioned by queue name (one partition per queue).

    Query it like any table: ``select(Job).where(Job.state == JobState.failed)``. Change states through
    the repository, which keeps pg-boss's rules; the partitions' unique indexes enforce the policies.
    """

    __tablename__ = "job"
    __table_args__ = (
        PrimaryKeyConstraint("name", "id", name="job_pkey"),
        {"postgresql_partition_by": "LIST (name)"},
    )


class Archive(JobColumns, Base):
    """``<schema>.archive``: jobs maintenance moved out of ``job``, with the time they were moved."""

    __tablename__ = "archive"
    __job_defaults__ = False
    __table_args__ = (
        PrimaryKeyConstraint("name", "id", name="archive_pkey"),
        Index("archive_i1", "archived_on"),
    )

    archived_on: Mapped[dt.datetime] = mapped_column(server_default=text("now()"), sort_order=21)
