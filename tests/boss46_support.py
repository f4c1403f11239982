"""Helpers of the repository tests on schema version 46 (tests/test_boss46_*.py): exact rows of ``job`` and
``queue`` as PGBOSS12.md describes them, and what a fresh job or queue holds.

Each module installs one version-46 schema for all its tests (``installed_schema`` below, with the module's
own ``schema_version``); every test works in the ``connection`` fixture's transaction, rolled back, on
``Boss`` and on ``AsyncBoss`` (the ``api`` fixture). Every row written in that transaction is stamped with its
``job_now()``, which is ``now()``: :func:`~boss_support.db_now`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from boss_support import one_schema_per_module
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from sqla_boss.models.enums import JobState
from sqla_boss.v46.models import Job, Queue

DAY = 86400
JOB = Job.__table__
QUEUE = Queue.__table__


@pytest.fixture(scope="module", name="schema_version")
def schema_version_46(request: pytest.FixtureRequest) -> int:
    """This module's schema is at version 46 (import it with :func:`installed_schema_46`), unless a test asks for
    another with ``@pytest.mark.parametrize("schema_version", [24], indirect=True)``."""
    version: int = getattr(request, "param", 46)
    return version


@pytest.fixture(scope="module", name="installed_schema")
def installed_schema_46(engine: Engine, schema_version: int) -> Iterator[str]:
    """One version-46 schema for the module: its tests never commit, each one's transaction is rolled back."""
    yield from one_schema_per_module(engine, schema_version)


def job_row(session: Session, name: str, job_id: uuid.UUID | None) -> dict[str, Any]:
    """Every column of the job's row as it is now (a Core read: no ORM object in between), but ``id`` and
    ``name``, which the caller gave."""
    assert job_id is not None, "expected a job id, got None"
    row = session.execute(select(JOB).where(JOB.c.name == name, JOB.c.id == job_id)).one()._asdict()
    del row["id"], row["name"]
    return row


def job_rows(session: Session, name: str) -> list[dict[str, Any]]:
    """Every row of the queue's jobs, oldest first, then by id; with ``id``."""
    rows = session.execute(select(JOB).where(JOB.c.name == name).order_by(JOB.c.created_on, JOB.c.id))
    return [row._asdict() for row in rows]


def queue_row(session: Session, name: str) -> dict[str, Any]:
    """Every column of the queue's row as it is now, but ``name``."""
    row = session.execute(select(QUEUE).where(QUEUE.c.name == name)).one()._asdict()
    del row["name"]
    return row


def fresh_job(now: dt.datetime, **changes: Any) -> dict[str, Any]:
    """What :func:`job_row` reads for a job sent at ``now`` to a queue with the default settings (§4.2), with
    ``changes``; ``keep_until`` follows ``start_after`` (14 days later) unless given."""
    row: dict[str, Any] = {
        "priority": 0,
        "data": None,
        "state": JobState.created,
        "retry_limit": 2,
        "retry_count": 0,
        "retry_delay": 0,
        "retry_backoff": False,
        "retry_delay_max": None,
        "expire_seconds": 900,
        "deletion_seconds": 7 * DAY,
        "singleton_key": None,
        "singleton_on": None,
        "group_id": None,
        "group_tier": None,
        "start_after": now,
        "created_on": now,
        "started_on": None,
        "completed_on": None,
        "keep_until": None,
        "output": None,
        "dead_letter": None,
        "policy": "standard",
        "heartbeat_on": None,
        "heartbeat_seconds": None,
        "blocked": False,
        "blocking": False,
        "pending_dependencies": 0,
        "source_name": None,
        "source_id": None,
        "source_created_on": None,
        "source_retry_count": None,
        "source_output": None,
        "source_root_id": None,
        "trace_context": None,
        "upsert_by_key": None,
    }
    unknown = set(changes) - set(row)
    assert not unknown, f"no such job columns: {unknown}"
    row.update(changes)
    if row["keep_until"] is None:
        row["keep_until"] = row["start_after"] + dt.timedelta(days=14)
    return row


def fresh_queue(now: dt.datetime, **changes: Any) -> dict[str, Any]:
    """What :func:`queue_row` reads for a queue created at ``now`` with the default settings (§1.15), with
    ``changes``."""
    row: dict[str, Any] = {
        "policy": "standard",
        "retry_limit": 2,
        "retry_delay": 0,
        "retry_backoff": False,
        "retry_delay_max": None,
        "expire_seconds": 900,
        "retention_seconds": 14 * DAY,
        "deletion_seconds": 7 * DAY,
        "dead_letter": None,
        "partition": False,
        "table_name": "job_common",
        "deferred_count": 0,
        "blocked_count": 0,
        "queued_count": 0,
        "ready_count": 0,
        "warning_queued": 0,
        "active_count": 0,
        "failed_count": 0,
        "total_count": 0,
        "retained_count": None,
        "retained_on": None,
        "created_delta": 0,
        "completed_delta": 0,
        "failed_delta": 0,
        "delta_on": None,
        "delta_seconds": None,
        "wait_bins": None,
        "run_bins": None,
        "ready_oldest_seconds": None,
        "ready_history": [],
        "heartbeat_seconds": None,
        "notify": False,
        "singletons_active": None,
        "monitor_claim_on": None,
        "monitor_on": None,
        "maintain_on": None,
        "created_on": now,
        "updated_on": now,
    }
    unknown = set(changes) - set(row)
    assert not unknown, f"no such queue columns: {unknown}"
    row.update(changes)
    return row


def set_job(session: Session, name: str, job_id: uuid.UUID | None, **values: Any) -> None:
    """Change columns of a job behind the repository's back (to age it, block it, ...)."""
    session.execute(update(JOB).where(JOB.c.name == name, JOB.c.id == job_id).values(**values))
    session.expire_all()


def ids(jobs: list[Any]) -> set[uuid.UUID]:
    return {job.id for job in jobs}


_PICKS = itertools.count(1_000_000)


def in_state(boss: Any, name: str, state: JobState, data: Any = None, **options: Any) -> uuid.UUID:
    """A job of ``name`` sent with ``options``, brought to ``state`` through the repository: fetched for
    ``active`` (it is sent with a priority of its own, above 1,000,000, unless ``options`` give one, so that the
    fetch takes it and no other), then completed, cancelled or failed (``retry``: with retries left;
    ``failed``: with ``retry_limit=0`` unless ``options`` say otherwise)."""
    if state is JobState.failed:
        options.setdefault("retry_limit", 0)
    if state is not JobState.created:
        options.setdefault("priority", next(_PICKS))
    job_id = boss.send(name, data, **options)
    assert job_id is not None
    if state is JobState.created:
        return job_id  # type: ignore[no-any-return]
    [job] = boss.fetch(name, min_priority=options["priority"], max_priority=options["priority"])
    assert job.id == job_id
    if state is JobState.completed:
        assert boss.complete(name, job_id) == 1
    elif state is JobState.cancelled:
        assert boss.cancel(name, job_id) == 1
    elif state in (JobState.retry, JobState.failed):
        assert boss.fail(name, job_id) == 1
    assert boss.get_job_by_id(name, job_id).state is state
    return job_id  # type: ignore[no-any-return]


__all__ = [
    "DAY",
    "JOB",
    "QUEUE",
    "fresh_job",
    "fresh_queue",
    "ids",
    "in_state",
    "installed_schema_46",
    "job_row",
    "job_rows",
    "queue_row",
    "schema_version_46",
    "set_job",
]
