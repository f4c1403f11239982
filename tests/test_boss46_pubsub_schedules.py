"""Pub/sub (PGBOSS12.md §4.9) and schedules (§9.1) on schema version 46: keyed schedules of kind cron or
rrule, their stored options (with ``tz``, ``key`` and ``missed``), and what publish sends and refuses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from boss46_support import (  # noqa: F401  (the module's fixtures)
    fresh_job,
    installed_schema_46,
    job_rows,
    schema_version_46,
)
from boss_support import assert_usable, db_now, snapshot
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sqla_boss import Boss
from sqla_boss.errors import (
    InvalidCronError,
    InvalidOptionError,
    InvalidQueueNameError,
    InvalidTimezoneError,
    QueueNotFoundError,
    SqlaBossError,
    UnsupportedOperationError,
)
from sqla_boss.v46.models import Schedule, Subscription

SCHEDULE = Schedule.__table__
SUBSCRIPTION = Subscription.__table__


@pytest.fixture
def queues(boss: Boss) -> tuple[str, str]:
    boss.create_queue("audit")
    boss.create_queue("mail")
    return ("audit", "mail")


def _schedule_rows(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(select(SCHEDULE).order_by(SCHEDULE.c.name, SCHEDULE.c.key))
    return [row._asdict() for row in rows]


def _refused(boss: Boss, session: Session, schema: str, call: Any, error: type[SqlaBossError]) -> None:
    before = snapshot(session, schema)
    with pytest.raises(SqlaBossError) as raised:
        call()
    assert type(raised.value) is error, f"{type(raised.value).__name__}: {raised.value}"
    assert snapshot(session, schema) == before
    assert_usable(boss, "audit")


# ------------------------------------------------------------------------------------------- schedules


def test_a_schedule_row_holds_its_key_kind_zone_data_and_options(
    boss: Boss, session: Session, queues: tuple[str, str]
) -> None:
    boss.schedule(
        "mail",
        "*/5 * * * *",
        {"digest": True},
        tz="Europe/Paris",
        key="k1",
        missed="once",
        priority=3,
        retention_seconds=120,
        singleton_key="sk",
        group={"id": "g", "tier": "t"},
        start_after=dt.timedelta(seconds=30),
        retry_backoff=True,
        retry_delay_max=9,
    )
    now = db_now(session)
    assert _schedule_rows(session) == [
        {
            "name": "mail",
            "key": "k1",
            "kind": "cron",
            "cron": "*/5 * * * *",
            "timezone": "Europe/Paris",
            "data": {"digest": True},
            # Stored as given, tz, key and missed included (§9.1), in pg-boss's camelCase.
            "options": {
                "tz": "Europe/Paris",
                "key": "k1",
                "missed": "once",
                "priority": 3,
                "retentionSeconds": 120,
                "singletonKey": "sk",
                "group": {"id": "g", "tier": "t"},
                "startAfter": 30,
                "retryBackoff": True,
                "retryDelayMax": 9,
            },
            "created_on": now,
            "updated_on": now,
            "last_job_id": None,
        }
    ]


def test_a_plain_schedule_has_the_empty_key_utc_and_no_options(
    boss: Boss, session: Session, queues: tuple[str, str]
) -> None:
    boss.schedule("audit", "0 0 * * *")
    [row] = _schedule_rows(session)
    assert (row["key"], row["kind"], row["timezone"], row["data"], row["options"]) == ("", "cron", "UTC", None, {})
    assert session.scalar(select(SCHEDULE.c.data.is_(None))) is True  # SQL NULL


def test_a_queue_has_one_schedule_per_key(boss: Boss, session: Session, queues: tuple[str, str]) -> None:
    boss.schedule("audit", "0 * * * *", {"k": 1}, key="k1")
    boss.schedule("audit", "0 0 * * *", {"k": 2}, key="k2")
    boss.schedule("audit", "30 1 * * *")
    boss.schedule("mail", "0 0 * * *", key="k1")
    listed = [(schedule.name, schedule.key) for schedule in boss.get_schedules()]
    assert listed == [("audit", ""), ("audit", "k1"), ("audit", "k2"), ("mail", "k1")]
    assert [s.key for s in boss.get_schedules("audit")] == ["", "k1", "k2"]
    assert [(s.name, s.key) for s in boss.get_schedules("audit", "k2")] == [("audit", "k2")]
    assert [(s.name, s.key) for s in boss.get_schedules(None, "k1")] == [("audit", "k1"), ("mail", "k1")]
    one = boss.get_schedule("audit", "k1")
    assert isinstance(one, Schedule)
    assert (one.cron, one.data, one.queue.name) == ("0 * * * *", {"k": 1}, "audit")
    assert boss.get_schedule("audit").cron == "30 1 * * *"
    assert boss.get_schedule("audit", "k3") is None
    assert boss.get_schedule("nope") is None


def test_unschedule_removes_one_key(boss: Boss, session: Session, queues: tuple[str, str]) -> None:
    boss.schedule("audit", "0 * * * *", key="k1")
    boss.schedule("audit", "0 * * * *")
    assert boss.unschedule("audit", "k1") is True
    assert boss.unschedule("audit", "k1") is False
    assert [s.key for s in boss.get_schedules()] == [""]
    assert boss.unschedule("audit") is True
    assert boss.get_schedules() == []
    assert boss.unschedule("nope", "k") is False


def test_schedule_again_replaces_the_row_of_its_key(boss: Boss, session: Session, queues: tuple[str, str]) -> None:
    boss.schedule("audit", "0 0 * * *", {"v": 1}, tz="Europe/Paris", key="k", priority=1)
    long_ago = db_now(session) - dt.timedelta(days=3)
    session.execute(update(SCHEDULE).values(created_on=long_ago, updated_on=long_ago, last_job_id=None))
    boss.schedule("audit", "FREQ=HOURLY", {"v": 2}, key="k")
    [row] = _schedule_rows(session)
    assert row == {
        "name": "audit",
        "key": "k",
        "kind": "rrule",
        "cron": "FREQ=HOURLY",
        "timezone": "UTC",
        "data": {"v": 2},
        "options": {"key": "k"},
        "created_on": long_ago,
        "updated_on": db_now(session),
        "last_job_id": None,
    }


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
        "RRULE:FREQ=WEEKLY;BYDAY=MO,WE",
        "DTSTART:20300101T090000Z\nRRULE:FREQ=DAILY;COUNT=3",
        "DTSTART;TZID=Europe/Paris:20300101T090000\nRRULE:FREQ=DAILY",
    ],
    ids=repr,
)
def test_an_rfc_5545_rule_is_stored_as_an_rrule(
    boss: Boss, session: Session, queues: tuple[str, str], rule: str
) -> None:
    boss.schedule("audit", rule, tz="Europe/Paris")
    [row] = _schedule_rows(session)
    assert (row["kind"], row["cron"], row["timezone"], row["options"]) == (
        "rrule",
        rule,
        "Europe/Paris",
        {"tz": "Europe/Paris"},
    )


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda b: b.schedule("audit", "0 * * * *", missed="always"), InvalidOptionError),
        (lambda b: b.schedule("audit", "0 * * * *", key="bad key"), InvalidOptionError),
        (lambda b: b.schedule("audit", "0 * * * *", key=5), InvalidOptionError),
        (lambda b: b.schedule("audit", "0 * * * *", key="k\\x"), InvalidOptionError),
        (lambda b: b.schedule("audit", "0 * * * *", priority="x"), InvalidOptionError),
        (lambda b: b.schedule("audit", "0 * * * *", retry_delay_max=5), InvalidOptionError),
        (lambda b: b.schedule("audit", "0 * * * *", group={"id": ""}), InvalidOptionError),
        (lambda b: b.schedule("audit", "0 * * * *", foo=1), InvalidOptionError),
        (lambda b: b.schedule("audit", "0 * * * *", retention_days=1), UnsupportedOperationError),
        (lambda b: b.schedule("audit", "0 * * * *", expire_in_minutes=1), UnsupportedOperationError),
        (lambda b: b.schedule("audit", "0 * * * *", tz="Mars/Base"), InvalidTimezoneError),
        (lambda b: b.schedule("audit", "FREQ=DAILY", tz="Mars/Base"), InvalidTimezoneError),
        (lambda b: b.schedule("audit", "RRULE:FREQ=SOMETIMES"), InvalidCronError),
        (lambda b: b.schedule("audit", "61 * * * *"), InvalidCronError),
        (lambda b: b.schedule("audit", ""), InvalidCronError),
        (lambda b: b.schedule("audit", None), InvalidCronError),
        (lambda b: b.schedule("nope", "0 * * * *", key="k"), QueueNotFoundError),
        (lambda b: b.schedule("no way", "0 * * * *"), InvalidQueueNameError),
        (lambda b: b.get_schedule("audit", "bad key"), InvalidOptionError),
        (lambda b: b.unschedule("audit", "bad key"), InvalidOptionError),
    ],
    ids=[
        "missed",
        "key-space",
        "key-int",
        "key-backslash",
        "priority",
        "retry_delay_max-without-backoff",
        "group",
        "unknown-option",
        "retention_days",
        "expire_in_minutes",
        "tz",
        "rrule-tz",
        "rrule",
        "cron",
        "cron-empty",
        "cron-none",
        "queue-missing",
        "queue-name",
        "get_schedule-key",
        "unschedule-key",
    ],
)
def test_bad_schedules_are_refused_before_writing(
    boss: Boss, session: Session, installed_schema: str, queues: tuple[str, str], call: Any, error: type[Exception]
) -> None:
    boss.schedule("audit", "0 0 * * *", key="kept")
    _refused(boss, session, installed_schema, lambda: call(boss), error)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- pub/sub


def test_subscribe_writes_its_row_and_again_refreshes_it(boss: Boss, session: Session, queues: tuple[str, str]) -> None:
    boss.subscribe("order.paid", "audit")
    now = db_now(session)
    rows = [row._asdict() for row in session.execute(select(SUBSCRIPTION))]
    assert rows == [{"event": "order.paid", "name": "audit", "created_on": now, "updated_on": now}]
    long_ago = now - dt.timedelta(days=1)
    session.execute(update(SUBSCRIPTION).values(created_on=long_ago, updated_on=long_ago))
    boss.subscribe("order.paid", "audit")
    [row] = [row._asdict() for row in session.execute(select(SUBSCRIPTION))]
    assert (row["created_on"], row["updated_on"]) == (long_ago, now)


def test_publish_sends_version_46_jobs_to_every_subscriber(
    boss: Boss, session: Session, queues: tuple[str, str]
) -> None:
    boss.create_queue("dlq")
    boss.update_queue("mail", retry_limit=5, dead_letter="dlq")
    boss.subscribe("event", "audit")
    boss.subscribe("event", "mail")
    ids = boss.publish("event", {"n": 1}, group={"id": "g"}, priority=2, heartbeat_seconds=10)
    assert len(ids) == 2
    now = db_now(session)
    common = {"data": {"n": 1}, "group_id": "g", "priority": 2, "heartbeat_seconds": 10}
    [audit] = job_rows(session, "audit")
    [mail] = job_rows(session, "mail")
    assert {audit.pop("id"), mail.pop("id")} == set(ids)
    assert audit == fresh_job(now, **common) | {"name": "audit"}
    assert mail == fresh_job(now, **common, retry_limit=5, dead_letter="dlq") | {"name": "mail"}


def test_publish_refuses_a_key_strict_fifo_subscriber_without_a_key_before_sending_anything(
    boss: Boss, session: Session, installed_schema: str, queues: tuple[str, str]
) -> None:
    """pg-boss 12 sends to the others and throws an AggregateError; in one transaction nothing is sent."""
    boss.create_queue("fifo", policy="key_strict_fifo")
    boss.subscribe("event", "audit")  # before "fifo" by name: sent first
    boss.subscribe("event", "fifo")
    _refused(boss, session, installed_schema, lambda: boss.publish("event", {"n": 1}), InvalidOptionError)
    assert len(boss.publish("event", {"n": 2}, singleton_key="k")) == 2


def test_publish_refuses_bad_options_before_sending_anything(
    boss: Boss, session: Session, installed_schema: str, queues: tuple[str, str]
) -> None:
    boss.subscribe("event", "audit")
    boss.subscribe("event", "mail")
    for options, error in (
        ({"retry_delay_max": 3}, InvalidOptionError),
        ({"group": {"tier": "t"}}, InvalidOptionError),
        ({"singleton_minutes": 1}, UnsupportedOperationError),
    ):
        _refused(boss, session, installed_schema, lambda options=options: boss.publish("event", None, **options), error)
