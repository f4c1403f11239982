"""sqla_boss: PostgreSQL job queues for SQLAlchemy, wire-compatible with pg-boss 10 and 12 (schema versions 24 and
46)."""

from __future__ import annotations

import logging

from sqla_boss.async_boss import AsyncBoss
from sqla_boss.async_maintenance import AsyncMaintenance
from sqla_boss.async_supervisor import AsyncSupervisor
from sqla_boss.async_worker import AsyncWorker
from sqla_boss.boss import Boss
from sqla_boss.errors import (
    EmbeddedPostgresUnavailableError,
    HandlerTimeoutError,
    InvalidDatabaseUrlError,
    InvalidSchemaNameError,
    SchemaConflictError,
    SchemaVersionError,
    SqlaBossError,
    UnsupportedOperationError,
)
from sqla_boss.identifiers import DEFAULT_SCHEMA, validate_schema_name
from sqla_boss.maintenance import Maintenance
from sqla_boss.models import (
    Archive,
    Base,
    Job,
    JobState,
    Queue,
    QueuePolicy,
    Schedule,
    Subscription,
    Version,
    metadata,
)
from sqla_boss.schema import SCHEMA_VERSION, schema_translate_map
from sqla_boss.supervisor import Supervisor
from sqla_boss.worker import Worker

__version__ = "0.1.0"

# A library's logs go where the application sends them; with none configured, Python's last-resort handler would
# print every warning, tracebacks included, on standard error (the demo's planned failure, say).
logging.getLogger("sqla_boss").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "Archive",
    "AsyncBoss",
    "AsyncMaintenance",
    "AsyncSupervisor",
    "AsyncWorker",
    "Base",
    "Boss",
    "EmbeddedPostgresUnavailableError",
    "HandlerTimeoutError",
    "InvalidDatabaseUrlError",
    "InvalidSchemaNameError",
    "Job",
    "JobState",
    "Maintenance",
    "Queue",
    "QueuePolicy",
    "Schedule",
    "SchemaConflictError",
    "SchemaVersionError",
    "SqlaBossError",
    "Subscription",
    "Supervisor",
    "UnsupportedOperationError",
    "Version",
    "Worker",
    "metadata",
    "schema_translate_map",
    "validate_schema_name",
]
