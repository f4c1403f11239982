"""factory-boy factories that build valid pg-boss rows through the real models.

Bind them to a session first (:func:`bind_factories`; the pytest plugin's ``boss_session`` fixture does it).
The schema is the one the session serves (see :func:`sqla_boss.binding.schema_of`). The factories write in
the session's transaction and never commit.

For a job exactly as ``send`` makes it (the queue's retry settings, a singleton slot, ...) call
``Boss.send``; :class:`JobFactory` is for rows in any state, with the columns you give and the table's
defaults for the others.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import factory
from factory.alchemy import SQLAlchemyModelFactory
from sqlalchemy.orm import Session

from sqla_boss.binding import schema_of
from sqla_boss.boss import Boss
from sqla_boss.errors import FactoryNotBoundError, QueueNotFoundError
from sqla_boss.models import Archive, Job, JobState, Queue, QueuePolicy
from sqla_boss.v46.models import Job as Job46

_QUEUE_OPTIONS = {
    "policy": "policy",
    "retry_limit": "retry_limit",
    "retry_delay": "retry_delay",
    "retry_backoff": "retry_backoff",
    "expire_seconds": "expire_in_seconds",
    "retention_minutes": "retention_minutes",
    "dead_letter": "dead_letter",
    # schema version 46 (pg-boss 12)
    "retry_delay_max": "retry_delay_max",
    "retention_seconds": "retention_seconds",
    "deletion_seconds": "delete_after_seconds",
    "partition": "partition",
    "heartbeat_seconds": "heartbeat_seconds",
    "notify": "notify",
    "warning_queued": "warning_queue_size",
}
"""``Queue`` columns (of either schema version), and the ``Boss.create_queue`` options that set them."""


def bind_factories(session: Session | None) -> None:
    """Make :class:`QueueFactory`, :class:`JobFactory` and :class:`ArchiveFactory` build their rows in
    ``session`` (``None`` unbinds them). On an ``AsyncSession``, bind its ``sync_session`` and call the
    factories through ``await session.run_sync(lambda _: JobFactory())``."""
    for model_factory in (QueueFactory, JobFactory, ArchiveFactory):
        model_factory._meta.sqlalchemy_session = session


def bound_session() -> Session | None:
    """The session the factories build in, or ``None``."""
    session: Session | None = QueueFactory._meta.sqlalchemy_session
    return session


def _session(factory_class: Any) -> Session:
    session: Session | None = factory_class._meta.sqlalchemy_session
    if session is None:
        raise FactoryNotBoundError(
            f"{factory_class.__name__} is not bound to a session: call bind_factories(session) first "
            "(the boss_session fixture does it)"
        )
    return session


class QueueFactory(SQLAlchemyModelFactory):  # type: ignore[misc]
    """A queue made the way pg-boss makes one, through ``create_queue``, so its partition exists too.

    Takes ``Queue``'s columns: ``name, policy, retry_limit, retry_delay, retry_backoff, expire_seconds,
    retention_minutes, dead_letter``; on schema version 46 (pg-boss 12) ``retention_seconds`` instead of
    ``retention_minutes``, and ``retry_delay_max, deletion_seconds, partition, heartbeat_seconds, notify,
    warning_queued``. Returns the queue as the model of the schema's version. Runs in the bound session's
    transaction and does not commit; takes ``create_queue``'s locks (see :meth:`sqla_boss.Boss.create_queue`).
    """

    class Meta:
        model = Queue

    name = factory.Sequence(lambda n: f"queue-{n}")
    policy = QueuePolicy.standard

    @classmethod
    def _create(cls, model_class: type[Queue], *args: Any, **kwargs: Any) -> Queue:
        session = _session(cls)
        boss = Boss(session, schema_of(session))
        options = {_QUEUE_OPTIONS[key]: value for key, value in kwargs.items() if key in _QUEUE_OPTIONS}
        boss.create_queue(kwargs["name"], **{key: value for key, value in options.items() if value is not None})
        queue = boss.get_queue(kwargs["name"])
        assert queue is not None
        return queue


class JobFactory(SQLAlchemyModelFactory):  # type: ignore[misc]
    """A job row, ``created`` unless told otherwise, in a new queue unless ``name`` names an existing one.
    On schema version 46 (pg-boss 12) the row is that version's ``Job``, and takes its columns.

    ``policy`` defaults to the queue's, as ``send`` copies it (the partition's unique indexes read it); the
    other columns you do not give take the table's defaults, not the queue's settings. Flushed in the bound
    session's transaction, never committed.

    Raises:
        QueueNotFoundError: ``name`` names no queue.
        FactoryNotBoundError: no session is bound.
    """

    class Meta:
        model = Job
        sqlalchemy_session_persistence = "flush"

    name = factory.LazyFunction(lambda: QueueFactory().name)
    data = factory.Sequence(lambda n: {"n": n})
    state = JobState.created
    policy = None

    @classmethod
    def _create(cls, model_class: type[Job], *args: Any, **kwargs: Any) -> Job:
        session = _session(cls)
        boss = Boss(session, schema_of(session))
        if boss.version() == 46:
            model_class = Job46  # type: ignore[assignment]
        queue = boss.get_queue(kwargs["name"])
        if queue is None:
            raise QueueNotFoundError(
                f"JobFactory: queue {kwargs['name']!r} does not exist; create it first (QueueFactory(name=...))",
                (kwargs["name"],),
            )
        if kwargs.get("policy") is None:
            kwargs["policy"] = queue.policy
        job: Job = super()._create(model_class, *args, **kwargs)
        return job


class ArchiveFactory(SQLAlchemyModelFactory):  # type: ignore[misc]
    """An archived job. ``archive`` has no column defaults, so the factory gives every NOT NULL column.

    Flushed in the bound session's transaction, never committed.
    """

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


__all__ = ["ArchiveFactory", "JobFactory", "QueueFactory", "bind_factories", "bound_session"]
