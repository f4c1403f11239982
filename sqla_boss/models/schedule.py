"""``Schedule``: a cron expression that sends a job to its queue."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKeyConstraint, PrimaryKeyConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from sqla_boss.models.base import Base

if TYPE_CHECKING:
    from sqla_boss.models.queue import Queue


class Schedule(Base):
    """``<schema>.schedule``: keyed by queue name, so a queue has at most one schedule.

    ``options`` holds the send options exactly as the caller gave them (pg-boss's camelCase keys).
    Deleting the queue deletes its schedule.
    """

    __tablename__ = "schedule"
    __table_args__ = (
        PrimaryKeyConstraint("name", name="schedule_pkey"),
        ForeignKeyConstraint(["name"], ["queue.name"], name="schedule_name_fkey", ondelete="CASCADE"),
    )

    name: Mapped[str]
    cron: Mapped[str]
    timezone: Mapped[str | None]
    data: Mapped[Any] = mapped_column(JSONB, nullable=True)
    options: Mapped[Any] = mapped_column(JSONB, nullable=True)
    created_on: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_on: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    queue: Mapped[Queue] = relationship(back_populates="schedule")

    def __repr__(self) -> str:
        return f"Schedule(name={self.name!r}, cron={self.cron!r}, timezone={self.timezone!r})"
