"""factory-boy factories that build valid pg-boss rows through the real models.

Bind them to a session first (:func:`bind_factories`); the schema comes from the session's
``schema_translate_map``.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import factory
from factory.alchemy import SQLAlchemyModelFactory
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from sqla_boss.identifiers import DEFAULT_SCHEMA, quote_identifier
from sqla_boss.models import Archive, Job, JobState, Queue, QueuePolicy

# Queue columns and the create_queue option keys pg-boss's JavaScript sends for them.
_OPTION_KEYS = {
    "policy": "policy",
    "retry_limit": "retryLimit",
    "retry_delay": "retryDelay",
    "retry_backoff": "retryBackoff",
    "expire_seconds": "expireInSeconds",
    "retention_minutes": "retentionMinutes",
    "dead_letter": "deadLetter",
}


def bind_factories(session: Session) -> None:
    """Make every factory build its rows in ``session``."""
    for model_factory in (QueueFactory, JobFactory, ArchiveFactory):
        model_factory._meta.sqlalchemy_session = session


def _schema_of(session: Session) -> str:
    translate = session.connection().get_execution_options().get("schema_translate_map") or {}
    return str(translate.get(DEFAULT_SCHEMA, DEFAULT_SCHEMA))


class QueueFactory(SQLAlchemyModelFactory):  # type: ignore[misc]
    """A queue made the way pg-boss makes one, through ``create_queue``, so its partition exists too."""

    class Meta:
        model = Queue

    name = factory.Sequence(lambda n: f"queue-{n}")
    policy = QueuePolicy.standard

    @classmethod
    def _create(cls, model_class: type[Queue], *args: Any, **kwargs: Any) -> Queue:
        session: Session = cls._meta.sqlalchemy_session
        options = {
            _OPTION_KEYS[key]: getattr(value, "value", value)
            for key, value in kwargs.items()
            if key in _OPTION_KEYS and value is not None
        }
        session.execute(
            text(f"SELECT {quote_identifier(_schema_of(session))}.create_queue(:name, CAST(:options AS json))"),
            {"name": kwargs["name"], "options": json.dumps(options)},
        )
        return session.scalars(select(Queue).where(Queue.name == kwargs["name"])).one()


class JobFactory(SQLAlchemyModelFactory):  # type: ignore[misc]
    """A queued job, in a new queue unless ``name`` names an existing one."""

    class Meta:
        model = Job
        sqlalchemy_session_persistence = "flush"

    name = factory.LazyFunction(lambda: QueueFactory().name)
    data = factory.Sequence(lambda n: {"n": n})
    state = JobState.created


class ArchiveFactory(SQLAlchemyModelFactory):  # type: ignore[misc]
    """An archived job. ``archive`` has no column defaults, so the factory gives every NOT NULL column."""

    class Meta:
        model = Archive
        sqlalchemy_session_persistence = "flush"

    id = factory.LazyFunction(uuid.uuid4)
    name = "archived-queue"
    priority = 0
    data = factory.Sequence(lambda n: {"n": n})
    state = JobState.completed
    retry_limit = 2
    retry_count = 0
    retry_delay = 0
    retry_backoff = False
    start_after = factory.LazyFunction(lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
    expire_in = dt.timedelta(minutes=15)
    created_on = factory.SelfAttribute("start_after")
    completed_on = factory.SelfAttribute("start_after")
    keep_until = factory.LazyAttribute(lambda job: job.start_after + dt.timedelta(days=14))
