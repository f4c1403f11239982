"""Bad input on schema version 46, and the operations of the other version: each refusal is the precise
:class:`SqlaBossError`, raised before anything is written, and leaves the transaction usable (a job is sent and
read back afterwards).

The operations of one version raise :class:`UnsupportedOperationError` on the other, both ways: version 24's
on a version-46 schema (``get_queue_size``, the archive, pg-boss 10's option spellings, constructor job
defaults) and version 46's on a version-24 schema. The cases that behave the same on both versions are in
tests/test_boss_bad_input.py, which runs them on both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from boss46_support import installed_schema_46, schema_version_46  # noqa: F401  (the module's fixtures)
from boss_support import assert_usable, snapshot
from sqlalchemy.orm import Session

from sqla_boss import Boss
from sqla_boss.errors import (
    InvalidOptionError,
    InvalidQueueNameError,
    PayloadError,
    SqlaBossError,
    UnsupportedOperationError,
)
from sqla_boss.v46.models import Job

VERSION_24 = pytest.mark.parametrize("schema_version", [24], indirect=True)
"""Run the test on a schema of version 24 instead."""


@pytest.fixture
def q(boss: Boss) -> str:
    boss.create_queue("q")
    return "q"


def _refused(boss: Boss, session: Session, schema: str, call: Callable[[], Any], error: type[SqlaBossError]) -> None:
    before = snapshot(session, schema)
    with pytest.raises(SqlaBossError) as raised:
        call()
    assert type(raised.value) is error, f"expected {error.__name__}, got {type(raised.value).__name__}: {raised.value}"
    assert str(raised.value)
    assert snapshot(session, schema) == before
    assert session.in_transaction()
    assert_usable(boss, "q")


# ------------------------------------------------------------------------------- version 24's, on 46


_VERSION_24_CALLS: dict[str, Callable[[Boss, uuid.UUID], Any]] = {
    "get_queue_size": lambda b, job: b.get_queue_size("q"),
    "get_job_by_id(include_archive)": lambda b, job: b.get_job_by_id("q", job, True),
    "create_queue(retention_minutes)": lambda b, job: b.create_queue("fresh", retention_minutes=5),
    "update_queue(retention_minutes)": lambda b, job: b.update_queue("q", retention_minutes=5),
    "send(singleton_minutes)": lambda b, job: b.send("q", None, singleton_minutes=1),
    "send(singleton_hours)": lambda b, job: b.send("q", None, singleton_hours=1),
    "send(expire_in_minutes)": lambda b, job: b.send("q", None, expire_in_minutes=1),
    "send(expire_in_hours)": lambda b, job: b.send("q", None, expire_in_hours=1),
    "send(retention_minutes)": lambda b, job: b.send("q", None, retention_minutes=1),
    "send(retention_hours)": lambda b, job: b.send("q", None, retention_hours=1),
    "send(retention_days)": lambda b, job: b.send("q", None, retention_days=1),
    "send(keep_until)": lambda b, job: b.send("q", None, keep_until="2030-01-01T00:00:00Z"),
    "send_after(retention_days)": lambda b, job: b.send_after("q", None, after=5, retention_days=1),
    "send_throttled(expire_in_minutes)": lambda b, job: b.send_throttled("q", None, seconds=5, expire_in_minutes=1),
    "insert(keep_until)": lambda b, job: b.insert([{"name": "q"}, {"name": "q", "keep_until": "2030-01-01"}]),
    "insert(singleton_minutes)": lambda b, job: b.insert([{"name": "q", "singleton_minutes": 1}]),
    "publish(retention_days)": lambda b, job: b.publish("event", None, retention_days=1),
    "schedule(expire_in_hours)": lambda b, job: b.schedule("q", "0 * * * *", expire_in_hours=1),
}


@pytest.mark.parametrize("method", list(_VERSION_24_CALLS))
def test_version_24s_operations_and_spellings_are_unsupported_on_46(
    boss: Boss, session: Session, installed_schema: str, q: str, method: str
) -> None:
    job = boss.send(q)
    boss.subscribe("event", q)
    _refused(boss, session, installed_schema, lambda: _VERSION_24_CALLS[method](boss, job), UnsupportedOperationError)


@pytest.mark.parametrize("defaults", [{"retry_limit": 1}, {"expire_in_seconds": 60}, {"retention_days": 1}], ids=repr)
def test_constructor_job_defaults_are_unsupported_on_46(
    boss: Boss,
    make_boss: Callable[..., Any],
    session: Session,
    installed_schema: str,
    q: str,
    defaults: dict[str, Any],
) -> None:
    """pg-boss 12 has no constructor job defaults: settings live on the queue and the job. The repository can
    only tell once it has read the schema's version, at its first call."""
    with_defaults = make_boss(session, schema=installed_schema, **defaults)
    for call in (
        lambda: with_defaults.send(q, {"n": 1}),
        lambda: with_defaults.create_queue("fresh"),
        lambda: with_defaults.fetch(q),
        lambda: with_defaults.get_queue(q),
    ):
        _refused(boss, session, installed_schema, call, UnsupportedOperationError)


# ------------------------------------------------------------------------------- version 46's, on 24


_VERSION_46_CALLS: dict[str, Callable[[Boss, uuid.UUID], Any]] = {
    "get_queue_stats": lambda b, job: b.get_queue_stats("q"),
    "touch": lambda b, job: b.touch("q", job),
    "find_jobs": lambda b, job: b.find_jobs("q"),
    "delete_queued_jobs": lambda b, job: b.delete_queued_jobs("q"),
    "delete_stored_jobs": lambda b, job: b.delete_stored_jobs("q"),
    "delete_all_jobs(name)": lambda b, job: b.delete_all_jobs("q"),
    "delete_all_jobs()": lambda b, job: b.delete_all_jobs(),
    "get_schedule": lambda b, job: b.get_schedule("q"),
    "get_schedules(name)": lambda b, job: b.get_schedules("q"),
    "get_schedules(key)": lambda b, job: b.get_schedules(None, "k"),
    "unschedule(key)": lambda b, job: b.unschedule("q", "k"),
    "fetch(min_priority)": lambda b, job: b.fetch("q", min_priority=1),
    "fetch(max_priority)": lambda b, job: b.fetch("q", max_priority=1),
    "fetch(group_concurrency)": lambda b, job: b.fetch("q", group_concurrency=1),
    "complete(include_queued)": lambda b, job: b.complete("q", job, include_queued=True),
}


@VERSION_24
@pytest.mark.parametrize("method", list(_VERSION_46_CALLS))
def test_version_46s_operations_are_unsupported_on_24(
    boss: Boss, session: Session, installed_schema: str, q: str, method: str, schema_version: int
) -> None:
    assert schema_version == boss.version() == 24
    job = boss.send(q)
    boss.schedule(q, "0 * * * *")
    _refused(boss, session, installed_schema, lambda: _VERSION_46_CALLS[method](boss, job), UnsupportedOperationError)


def test_the_version_is_46(boss: Boss, schema_version: int) -> None:
    assert schema_version == boss.version() == 46


# ----------------------------------------------------------------------------------------- queue names


_METHODS = ["create_queue", "send", "insert", "fetch", "touch", "find_jobs", "get_queue_stats", "delete_all_jobs"]


@pytest.mark.parametrize(
    ("method", "name"),
    [(method, "a\\b") for method in [*_METHODS, "schedule"]]
    + [("create_queue", name) for name in ["é", "sp ace", "quo'te", "*weird", "a\x00b", "", "x" * 1025]],
    ids=repr,
)
def test_queue_names_pg_boss_12_refuses_are_refused(
    boss: Boss, session: Session, installed_schema: str, q: str, method: str, name: str
) -> None:
    job = boss.send(q)
    calls: dict[str, Callable[[], Any]] = {
        "create_queue": lambda: boss.create_queue(name),
        "send": lambda: boss.send(name),
        "insert": lambda: boss.insert([{"name": q}, {"name": name}]),
        "fetch": lambda: boss.fetch(name),
        "touch": lambda: boss.touch(name, job),
        "find_jobs": lambda: boss.find_jobs(name),
        "get_queue_stats": lambda: boss.get_queue_stats(name),
        "delete_all_jobs": lambda: boss.delete_all_jobs(name),
        "schedule": lambda: boss.schedule(name, "0 * * * *"),
    }
    _refused(boss, session, installed_schema, calls[method], InvalidQueueNameError)


# ------------------------------------------------------------------------------ version 46's own options


_CASES: list[Any] = [
    pytest.param(
        lambda b, job: b.send("q", None, retry_delay_max=5), InvalidOptionError, id="send-retry_delay_max-alone"
    ),
    pytest.param(
        lambda b, job: b.send("q", None, retry_backoff=False, retry_delay_max=5),
        InvalidOptionError,
        id="send-retry_delay_max-no-backoff",
    ),
    pytest.param(
        lambda b, job: b.send("q", None, retry_backoff=True, retry_delay_max=-1),
        InvalidOptionError,
        id="send-retry_delay_max-neg",
    ),
    pytest.param(lambda b, job: b.send("q", None, heartbeat_seconds=9), InvalidOptionError, id="send-heartbeat-9"),
    pytest.param(
        lambda b, job: b.send("q", None, heartbeat_seconds=10.5), InvalidOptionError, id="send-heartbeat-frac"
    ),
    pytest.param(
        lambda b, job: b.send("q", None, expire_in_seconds=86401), InvalidOptionError, id="send-expire-over-24h"
    ),
    pytest.param(
        lambda b, job: b.send("q", None, delete_after_seconds=-1), InvalidOptionError, id="send-delete_after-neg"
    ),
    pytest.param(lambda b, job: b.send("q", None, retention_seconds=0), InvalidOptionError, id="send-retention-0"),
    pytest.param(lambda b, job: b.send("q", None, singleton_seconds=0), InvalidOptionError, id="send-singleton-0"),
    pytest.param(
        lambda b, job: b.send("q", None, group={"id": "g", "tier": 3}), InvalidOptionError, id="send-group-tier-int"
    ),
    pytest.param(
        lambda b, job: b.insert([{"name": "q", "singleton_next_slot": True}]), InvalidOptionError, id="insert-next_slot"
    ),
    pytest.param(lambda b, job: b.insert([{"name": "q", "group": "g"}]), InvalidOptionError, id="insert-group-str"),
    pytest.param(lambda b, job: b.fetch("q", min_priority="1"), InvalidOptionError, id="fetch-min-str"),
    pytest.param(lambda b, job: b.fetch("q", max_priority=1.5), InvalidOptionError, id="fetch-max-frac"),
    pytest.param(
        lambda b, job: b.fetch("q", group_concurrency={"default": 1, "tiers": {"": 1}}),
        InvalidOptionError,
        id="fetch-group-tier-empty",
    ),
    pytest.param(
        lambda b, job: b.complete("q", job, include_queued="yes"), InvalidOptionError, id="complete-include_queued-str"
    ),
    pytest.param(
        lambda b, job: b.complete("q", [Job(id=job, name="q", retry_count=0), job]),
        InvalidOptionError,
        id="complete-mixed",
    ),
    pytest.param(lambda b, job: b.touch("q", []), InvalidOptionError, id="touch-empty"),
    pytest.param(lambda b, job: b.touch("q", "not-a-uuid"), InvalidOptionError, id="touch-text"),
    pytest.param(lambda b, job: b.find_jobs("q", after=uuid.uuid4()), InvalidOptionError, id="find_jobs-after-missing"),
    pytest.param(lambda b, job: b.find_jobs("q", queued="yes"), InvalidOptionError, id="find_jobs-queued-str"),
    pytest.param(lambda b, job: b.get_job_by_id("q", job, "yes"), InvalidOptionError, id="get_job_by_id-archive-str"),
    pytest.param(lambda b, job: b.update_queue("q", policy="short"), InvalidOptionError, id="update_queue-policy"),
    pytest.param(lambda b, job: b.update_queue("q"), InvalidOptionError, id="update_queue-nothing"),
]


@pytest.mark.parametrize(("call", "error"), _CASES)
def test_bad_version_46_options_are_refused(
    boss: Boss, session: Session, installed_schema: str, q: str, call: Any, error: type[SqlaBossError]
) -> None:
    job = boss.send(q)
    _refused(boss, session, installed_schema, lambda: call(boss, job), error)


def test_a_trace_context_json_cannot_carry_is_refused_by_its_name(
    boss: Boss, session: Session, installed_schema: str, q: str
) -> None:
    call = lambda: boss.send(q, {"data": "fine"}, trace_context={"traceparent": {1, 2}})  # noqa: E731
    _refused(boss, session, installed_schema, call, PayloadError)
    with pytest.raises(PayloadError, match=r"^trace_context cannot be stored as JSON"):
        call()
