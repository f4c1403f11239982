"""``Queue``: a named queue, its policy and the defaults it gives its jobs."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKeyConstraint, PrimaryKeyConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from sqla_boss.models.base import Base
from sqla_boss.models.enums import QueuePolicy

if TYPE_CHECKING:
    from sqla_boss.models.schedule import Schedule
    from sqla_boss.models.subscription import Subscription


class Queue(Base):
    """``<schema>.queue``: one row per queue; its jobs live in the partition named ``partition_name``.

    Create and delete queues through the ``create_queue`` / ``delete_queue`` functions (or the
    repository), never by inserting rows: a queue without its partition cannot hold jobs.
    """

    __tablename__ = "queue"
    __table_args__ = (
        PrimaryKeyConstraint("name", name="queue_pkey"),
        ForeignKeyConstraint(["dead_letter"], ["queue.name"], name="queue_dead_letter_fkey"),
    )

    name: Mapped[str]
    policy: Mapped[QueuePolicy | None]
    retry_limit: Mapped[int | None]
    retry_delay: Mapped[int | None]
    retry_backoff: Mapped[bool | None]
    expire_seconds: Mapped[int | None]
    retention_minutes: Mapped[int | None]
    dead_letter: Mapped[str | None]
    partition_name: Mapped[str | None]
    created_on: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_on: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    dead_letter_queue: Mapped[Queue | None] = relationship(remote_side="Queue.name")
    """The queue this queue's failed jobs are copied to."""
    schedule: Mapped[Schedule | None] = relationship(back_populates="queue", passive_deletes=True)
    """The queue's cron schedule; pg-boss allows at most one per queue."""
    subscriptions: Mapped[list[Subscription]] = relationship(back_populates="queue", passive_deletes=True)
    """The events this queue is subscribed to."""

    def __repr__(self) -> str:
        return f"Queue(name={self.name!r}, policy={self.policy!r})"
