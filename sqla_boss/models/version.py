"""``Version``: the one-row table holding the schema version and the cluster's coordination clocks."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import PrimaryKeyConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sqla_boss.models.base import Base


class Version(Base):
    """``<schema>.version``: the schema version (24), and when maintenance, cron and monitoring last ran.

    Every pg-boss and sqla_boss instance claims its maintenance, cron and monitoring turns by updating
    this row's clocks, so only one instance in the cluster runs each at a time.
    """

    __tablename__ = "version"
    __table_args__ = (PrimaryKeyConstraint("version", name="version_pkey"),)

    version: Mapped[int] = mapped_column(autoincrement=False)
    maintained_on: Mapped[dt.datetime | None]
    cron_on: Mapped[dt.datetime | None]
    monitored_on: Mapped[dt.datetime | None]

    def __repr__(self) -> str:
        return f"Version(version={self.version!r})"
