"""``Subscription``: a queue subscribed to a pub/sub event."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKeyConstraint, PrimaryKeyConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from sqla_boss.models.base import Base

if TYPE_CHECKING:
    from sqla_boss.models.queue import Queue


class Subscription(Base):
    """``<schema>.subscription``: publishing ``event`` sends a job to queue ``name``.

    Deleting the queue deletes its subscriptions.
    """

    __tablename__ = "subscription"
    __table_args__ = (
        PrimaryKeyConstraint("event", "name", name="subscription_pkey"),
        ForeignKeyConstraint(["name"], ["queue.name"], name="subscription_name_fkey", ondelete="CASCADE"),
    )

    event: Mapped[str]
    name: Mapped[str]
    created_on: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_on: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    queue: Mapped[Queue] = relationship(back_populates="subscriptions")

    def __repr__(self) -> str:
        return f"Subscription(event={self.event!r}, name={self.name!r})"
