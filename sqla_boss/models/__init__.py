"""Declarative SQLAlchemy models of pg-boss 10's tables (schema version 24)."""

from __future__ import annotations

from sqla_boss.models.base import Base, JobStateType, QueuePolicyType, metadata
from sqla_boss.models.enums import JobState, QueuePolicy
from sqla_boss.models.job import Archive, Job, JobColumns
from sqla_boss.models.queue import Queue
from sqla_boss.models.schedule import Schedule
from sqla_boss.models.subscription import Subscription
from sqla_boss.models.version import Version

__all__ = [
    "Archive",
    "Base",
    "Job",
    "JobColumns",
    "JobState",
    "JobStateType",
    "Queue",
    "QueuePolicy",
    "QueuePolicyType",
    "Schedule",
    "Subscription",
    "Version",
    "metadata",
]
