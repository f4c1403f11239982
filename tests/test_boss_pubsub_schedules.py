"""Pub/sub (PGBOSS10.md §10) and schedules (§9.1): the rows they write, and what they refuse. On schema versions
24 and 46 (PGBOSS12.md §4.9, §9.1: the same rows but for the schedule's key and kind), but for pg-boss 10's
option spellings; tests/test_boss46_pubsub_schedules.py has version 46's keys, rules and stored options."""

from __future__ import annotations

import datetime as dt
import uuid
from types import ModuleType
from typing import Any

import pytest
from boss_support import BOTH_VERSIONS, assert_usable, db_now, jobs_of, load, one_schema_per_module, snapshot
from sqlalchemy import select
from sqlalchemy.orm import Session

from sqla_boss import Boss, Schedule
from sqla_boss.errors import InvalidCronError, InvalidTimezoneError, QueueNotFoundError

installed_schema = pytest.fixture(scope="module", name="installed_schema")(one_schema_per_module)
"""One schema for the module: its tests never commit, each one's transaction is rolled back."""


@pytest.fixture
def queues(boss: Boss) -> tuple[str, str, str]:
    for name in ("audit", "mail", "unsubscribed"):
        boss.create_queue(name)
    return ("audit", "mail", "unsubscribed")


def _subscriptions(session: Session, models: ModuleType) -> list[tuple[str, str]]:
    subscription = models.Subscription
    rows = session.execute(
        select(subscription.event, subscription.name).order_by(subscription.event, subscription.name)
    )
    return [(event, name) for event, name in rows]


# --------------------------------------------------------------------------------------------- pub/sub


@BOTH_VERSIONS
def test_publish_sends_to_every_subscribed_queue(
    boss: Boss, session: Session, queues: tuple[str, str, str], models: ModuleType
) -> None:
    boss.subscribe("order.paid", "audit")
    boss.subscribe("order.paid", "mail")
    boss.subscribe("order.shipped", "mail")
    ids = boss.publish("order.paid", {"order": 7}, priority=3, start_after=60)
    assert len(ids) == 2
    assert all(isinstance(job_id, uuid.UUID) for job_id in ids)
    jobs = [job for name in queues for job in jobs_of(session, name, models.Job)]
    assert sorted((job.name, job.id in ids) for job in jobs) == [("audit", True), ("mail", True)]
    for job in jobs:
        assert (job.data, job.priority) == ({"order": 7}, 3)
        assert job.start_after == db_now(session) + dt.timedelta(seconds=60)


@BOTH_VERSIONS
def test_publish_without_subscribers_sends_nothing(
    boss: Boss, session: Session, queues: tuple[str, str, str], models: ModuleType
) -> None:
    assert boss.publish("nobody.listens", {"x": 1}) == []
    assert boss.publish("audit") == []  # an event name is not a queue name
    assert [job for name in queues for job in jobs_of(session, name, models.Job)] == []


@BOTH_VERSIONS
def test_publish_leaves_out_the_queues_where_the_send_conflicts(
    boss: Boss, session: Session, models: ModuleType
) -> None:
    boss.create_queue("short", policy="short")
    boss.create_queue("standard")
    boss.subscribe("event", "short")
    boss.subscribe("event", "standard")
    boss.send("short", None, singleton_key="k")
    ids = boss.publish("event", {"n": 1}, singleton_key="k")
    assert len(ids) == 1
    assert load(session, "standard", ids[0], models.Job).data == {"n": 1}


@BOTH_VERSIONS
def test_subscribe_is_idempotent_and_unsubscribe_reports_whether_it_removed(
    boss: Boss, session: Session, queues: tuple[str, str, str], models: ModuleType
) -> None:
    boss.subscribe("event", "audit")
    boss.subscribe("event", "audit")
    boss.subscribe("event", "mail")
    assert _subscriptions(session, models) == [("event", "audit"), ("event", "mail")]
    assert boss.unsubscribe("event", "audit") is True
    assert boss.unsubscribe("event", "audit") is False
    assert boss.unsubscribe("other-event", "mail") is False
    assert _subscriptions(session, models) == [("event", "mail")]
    [job_id] = boss.publish("event", "payload")
    assert load(session, "mail", job_id, models.Job).data == "payload"
    assert jobs_of(session, "audit", models.Job) == []


@BOTH_VERSIONS
def test_subscribe_to_a_missing_queue_raises_and_writes_nothing(
    boss: Boss, session: Session, installed_schema: str, queues: tuple[str, str, str]
) -> None:
    before = snapshot(session, installed_schema)
    with pytest.raises(QueueNotFoundError) as raised:
        boss.subscribe("event", "missing")
    assert raised.value.names == ("missing",)
    assert snapshot(session, installed_schema) == before
    assert boss.unsubscribe("event", "missing") is False
    assert_usable(boss, "audit")


@BOTH_VERSIONS
def test_subscriptions_are_orm_objects_of_their_queue(
    boss: Boss, session: Session, queues: tuple[str, str, str]
) -> None:
    boss.subscribe("event", "mail")
    queue = boss.get_queue("mail")
    assert queue is not None
    assert [(sub.event, sub.queue is queue) for sub in queue.subscriptions] == [("event", True)]


# ------------------------------------------------------------------------------------------- schedules


def test_schedule_stores_cron_time_zone_data_and_camel_case_options(
    boss: Boss, session: Session, queues: tuple[str, str, str]
) -> None:
    boss.schedule(
        "mail",
        "*/5 * * * *",
        {"digest": True},
        tz="Europe/Paris",
        retry_limit=3,
        expire_in_seconds=60,
        singleton_key="k",
        start_after=dt.timedelta(seconds=30),
        priority=2,
        retention_days=1,
    )
    [schedule] = boss.get_schedules()
    assert isinstance(schedule, Schedule)
    assert (schedule.name, schedule.cron, schedule.timezone, schedule.data) == (
        "mail",
        "*/5 * * * *",
        "Europe/Paris",
        {"digest": True},
    )
    assert schedule.options == {
        "retryLimit": 3,
        "expireInSeconds": 60,
        "singletonKey": "k",
        "startAfter": 30,
        "priority": 2,
        "retentionDays": 1,
        "tz": "Europe/Paris",
    }
    assert schedule.queue is boss.get_queue("mail")


@BOTH_VERSIONS
def test_schedule_defaults_to_utc_without_tz_in_the_options(
    boss: Boss, session: Session, queues: tuple[str, str, str], models: ModuleType
) -> None:
    boss.schedule("audit", "0 0 * * *")
    [schedule] = boss.get_schedules()
    assert (schedule.timezone, schedule.data, schedule.options) == ("UTC", None, {})
    assert session.scalar(select(models.Schedule.data.is_(None))) is True  # SQL NULL, as pg-boss stores it


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (dt.datetime(2031, 1, 2, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=1))), "2031-01-02T03:05:06.000Z"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (dt.timedelta(milliseconds=1500), 1.5),
    ],
    ids=["datetime", "uuid", "timedelta"],
)
@BOTH_VERSIONS
def test_schedule_options_are_stored_as_json(boss: Boss, queues: tuple[str, str, str], value: Any, stored: Any) -> None:
    key = "id" if isinstance(value, uuid.UUID) else "start_after"
    boss.schedule("audit", "0 0 * * *", **{key: value})
    [schedule] = boss.get_schedules()
    camel = "id" if key == "id" else "startAfter"
    assert schedule.options == {camel: stored}


@BOTH_VERSIONS
def test_schedule_again_replaces_the_queue_schedule(boss: Boss, queues: tuple[str, str, str]) -> None:
    boss.schedule("audit", "0 0 * * *", {"v": 1}, tz="Europe/Paris", priority=1)
    boss.schedule("audit", "30 1 * * 1-5", {"v": 2})
    boss.schedule("mail", "*/10 * * * * *")  # six fields: seconds first, as cron-parser reads them
    schedules = boss.get_schedules()
    assert [(s.name, s.cron, s.timezone, s.data, s.options) for s in schedules] == [
        ("audit", "30 1 * * 1-5", "UTC", {"v": 2}, {}),
        ("mail", "*/10 * * * * *", "UTC", None, {}),
    ]


@BOTH_VERSIONS
def test_unschedule_reports_whether_it_removed(boss: Boss, queues: tuple[str, str, str]) -> None:
    boss.schedule("audit", "0 0 * * *")
    boss.schedule("mail", "0 0 * * *")
    assert boss.unschedule("audit") is True
    assert boss.unschedule("audit") is False
    assert boss.unschedule("missing") is False
    assert [schedule.name for schedule in boss.get_schedules()] == ["mail"]


@pytest.mark.parametrize(
    "cron",
    ["", "   ", "* * *", "* * * * * * *", "61 * * * *", "* 25 * * *", "not a cron at all", "@daily", "0 0 30 2 *"],
)
@BOTH_VERSIONS
def test_schedule_refuses_bad_cron_before_writing(
    boss: Boss, session: Session, installed_schema: str, queues: tuple[str, str, str], cron: str
) -> None:
    before = snapshot(session, installed_schema)
    with pytest.raises(InvalidCronError):
        boss.schedule("audit", cron)
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, "audit")


@BOTH_VERSIONS
@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "utc+1", "../etc/passwd", "Europe/Paris\x00"])
def test_schedule_refuses_an_unknown_time_zone(
    boss: Boss, session: Session, installed_schema: str, queues: tuple[str, str, str], tz: str
) -> None:
    before = snapshot(session, installed_schema)
    with pytest.raises(InvalidTimezoneError):
        boss.schedule("audit", "0 0 * * *", tz=tz)
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, "audit")


@BOTH_VERSIONS
@pytest.mark.parametrize("tz", ["localtime", "Factory", "posix/Europe/Paris", "right/UTC", "posixrules"])
def test_schedule_refuses_time_zone_files_that_are_not_iana_names(
    boss: Boss, queues: tuple[str, str, str], tz: str
) -> None:
    with pytest.raises(InvalidTimezoneError):
        boss.schedule("audit", "0 0 * * *", tz=tz)


@BOTH_VERSIONS
def test_schedule_on_a_missing_queue_raises_and_writes_nothing(
    boss: Boss, session: Session, installed_schema: str, queues: tuple[str, str, str]
) -> None:
    before = snapshot(session, installed_schema)
    with pytest.raises(QueueNotFoundError) as raised:
        boss.schedule("missing", "0 0 * * *")
    assert raised.value.names == ("missing",)
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, "audit")
