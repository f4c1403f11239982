"""Cron and the send-it worker on schema version 46 (PGBOSS12.md §9.2-9.4), against the real PostgreSQL: the claim
on ``version.cron_on``, the due window, ``missed = 'once'``, rules, the send-it rows exactly as pg-boss 12 files
them (key escaping, slot text, ``singleton_on``), de-duplication, schedules that cannot be evaluated, relabelling,
and the send-it worker's sends (options honoured, one bad send isolated, ``last_job_id``).

Cron is minute-grained, so most tests pin the database clock: the schema's ``job_now()``, which every pg-boss 12
statement reads (a Node ``TestClock`` swaps its body the same way), is replaced by a constant."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from support import sql, wait_until

from sqla_boss import Boss, Worker
from sqla_boss.options.supervision import SupervisionSettings
from sqla_boss.supervisor import Supervisor
from sqla_boss.v46 import cron as cron46
from sqla_boss.v46.cron import CronPass

SEND_IT = "__pgboss__send-it"
UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def schema_version() -> int:
    return 46


def at(text_: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text_).replace(tzinfo=UTC)


def set_clock(engine: Engine, schema: str, when: dt.datetime | None) -> None:
    """Pin the schema's ``job_now()`` at ``when`` (``None``: back to ``now()``)."""
    body = "SELECT pg_catalog.now()" if when is None else f"SELECT '{when.isoformat()}'::timestamptz"
    sql(engine, f"CREATE OR REPLACE FUNCTION {schema}.job_now() RETURNS timestamptz LANGUAGE sql STABLE AS $${body}$$")


def cron_pass(
    engine: Engine, schema: str, prior: dt.datetime | None = None, **settings: Any
) -> tuple[Supervisor, CronPass]:
    """One pass by a fresh supervisor, ``version.cron_on`` set to ``prior`` first so that it wins."""
    sql(engine, f"UPDATE {schema}.version SET cron_on = :prior", prior=prior)
    supervisor = Supervisor(engine, schema, SupervisionSettings.from_options(settings), cron_interval_seconds=30)
    return supervisor, supervisor.cron()


def send_it_rows(engine: Engine, schema: str) -> list[dict[str, Any]]:
    rows = sql(
        engine,
        f"SELECT singleton_key, singleton_on, data, state, retry_limit, policy FROM {schema}.job "
        "WHERE name = :n ORDER BY singleton_key, singleton_on",
        n=SEND_IT,
    )
    return [row._asdict() for row in rows]


def slots(engine: Engine, schema: str) -> list[tuple[str, str]]:
    return [(row["singleton_key"], row["data"]["slot"]) for row in send_it_rows(engine, schema)]


def boss_do(engine: Engine, schema: str, *calls: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None:
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        for method, args, kwargs in calls:
            getattr(boss, method)(*args, **kwargs)


def setup(engine: Engine, schema: str, when: dt.datetime, *schedules: tuple[Any, ...], **kwargs: Any) -> None:
    """The send-it queue and each schedule's queue, created with the clock at ``when``; then ``schedules`` as
    (name, expression, data, options)."""
    set_clock(engine, schema, when)
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [("create_queue", (SEND_IT,), {})]
    for name in dict.fromkeys(schedule[0] for schedule in schedules):
        calls.append(("create_queue", (name,), {}))
    for name, expression, data, options in schedules:
        calls.append(("schedule", (name, expression, data), options))
    boss_do(engine, schema, *calls)


# ------------------------------------------------------------------------------------- the cron pass


def test_the_pass_files_send_it_rows_exactly_as_pg_boss(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    setup(
        db,
        schema,
        at("2026-06-01 11:00:00"),
        ("my_q", "* * * * *", {"v": 1}, {"key": "k1", "priority": 3}),
        ("other", "0 * * * *", None, {}),
        ("late", "1 * * * *", {"v": 2}, {}),  # 11:01 is no occurrence in (11:59:30, 12:00:30]
    )
    set_clock(db, schema, at("2026-06-01 12:00:30.250"))
    _, result = cron_pass(db, schema)
    assert result.won
    assert result.filed == 2
    assert result.due == ["my_q[k1]@2026-06-01 12:00:00", "other@2026-06-01 12:00:00"]
    assert result.now == at("2026-06-01 12:00:30.250")
    assert result.prior_cron_on is None
    rows = send_it_rows(db, schema)
    assert [(row["singleton_key"], row["singleton_on"]) for row in rows] == [
        ("my\\_q__k1", dt.datetime(2026, 6, 1, 12, 0)),
        ("other__", dt.datetime(2026, 6, 1, 12, 0)),
    ]
    assert rows[0]["data"] == {
        "name": "my_q",
        "key": "k1",
        "data": {"v": 1},
        "options": {"key": "k1", "priority": 3},
        "slot": "2026-06-01 12:00:00",
    }
    assert rows[1]["data"] == {"name": "other", "key": "", "data": None, "options": {}, "slot": "2026-06-01 12:00:00"}
    # Everything else from the send-it queue's settings, as a send with no options.
    assert {(row["state"], row["retry_limit"], row["policy"]) for row in rows} == {("created", 2, "standard")}


def test_a_slot_is_filed_once_however_often_it_is_due(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    setup(db, schema, at("2026-06-01 11:00:00"), ("q", "* * * * *", None, {}))
    set_clock(db, schema, at("2026-06-01 12:00:10"))
    assert cron_pass(db, schema)[1].filed == 1
    set_clock(db, schema, at("2026-06-01 12:00:50"))
    again = cron_pass(db, schema)[1]
    assert (again.due, again.filed) == (["q@2026-06-01 12:00:00"], 0)  # due again, filed by the first pass
    sql(db, f"UPDATE {schema}.job SET state = 'completed', completed_on = now() WHERE name = :n", n=SEND_IT)
    assert cron_pass(db, schema)[1].filed == 0  # a completed row keeps its slot
    set_clock(db, schema, at("2026-06-01 12:01:00"))
    assert cron_pass(db, schema)[1].due == ["q@2026-06-01 12:01:00"]  # the window's end is in, its start out
    assert slots(db, schema) == [("q__", "2026-06-01 12:00:00"), ("q__", "2026-06-01 12:01:00")]


def test_the_claim_lets_one_pass_per_interval_through(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    setup(db, schema, at("2026-06-01 11:00:00"), ("q", "* * * * *", None, {}))
    set_clock(db, schema, at("2026-06-01 12:00:10"))
    supervisor, first = cron_pass(db, schema, prior=at("2026-06-01 11:59:40"))  # 30 s ago: due
    assert first.won
    assert first.prior_cron_on == at("2026-06-01 11:59:40")
    assert sql(db, f"SELECT cron_on FROM {schema}.version")[0][0] == at("2026-06-01 12:00:10")
    assert supervisor.cron() == CronPass(won=False)  # the same time: not 30 s since the claim
    set_clock(db, schema, at("2026-06-01 12:00:39"))
    assert not supervisor.cron().won
    set_clock(db, schema, at("2026-06-01 12:00:40"))  # >= the interval, as pg-boss 12
    assert supervisor.cron().won


def test_cron_reads_the_time_in_the_schedules_zone(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    setup(
        db,
        schema,
        at("2026-06-01 10:00:00"),
        ("paris", "30 13 * * *", None, {"tz": "Europe/Paris"}),  # 11:30 UTC in summer
        ("utc", "30 13 * * *", None, {}),
        ("seconds", "15 30 11 * * *", None, {}),  # six fields: seconds first, as cron-parser reads them
    )
    set_clock(db, schema, at("2026-06-01 11:30:20"))
    assert cron_pass(db, schema)[1].due == ["paris@2026-06-01 11:30:00", "seconds@2026-06-01 11:30:00"]


def test_a_rule_files_each_slot_of_the_window(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    setup(
        db,
        schema,
        at("2026-06-01 10:00:00"),
        ("every20s", "FREQ=SECONDLY;INTERVAL=20", None, {}),  # anchored at 1970: must not walk from there
        ("minutely", "RRULE:FREQ=MINUTELY;BYSECOND=0", None, {"key": "m"}),
        ("paris", "FREQ=DAILY;BYHOUR=14;BYMINUTE=0;BYSECOND=0", None, {"tz": "Europe/Paris"}),
        ("dated", "DTSTART:20260601T115945Z\nRRULE:FREQ=HOURLY;COUNT=2", None, {}),
        ("never", "FREQ=YEARLY;BYMONTH=2", None, {}),
    )
    set_clock(db, schema, at("2026-06-01 12:00:30"))
    started = time.monotonic()
    result = cron_pass(db, schema)[1]
    assert time.monotonic() - started < 2
    assert result.due == [
        "dated@2026-06-01 11:59:00",
        "every20s@2026-06-01 11:59:00",  # 11:59:40
        "every20s@2026-06-01 12:00:00",  # 12:00:00 and 12:00:20 share a slot
        "minutely[m]@2026-06-01 12:00:00",
        "paris@2026-06-01 12:00:00",
    ]
    assert result.filed == 5
    assert sql(db, f"SELECT kind FROM {schema}.schedule WHERE name = 'paris'") == [("rrule",)]


@pytest.mark.parametrize(
    ("missed", "created", "expected"),
    [
        ("once", "2026-06-01 10:00:00", ["q@2026-06-01 11:15:00"]),  # the latest of the gap: 11:15, not 10:15
        ("skip", "2026-06-01 10:00:00", []),
        ("once", "2026-06-01 11:20:00", []),  # created after 11:15: nothing missed
    ],
)
def test_missed_once_files_the_latest_occurrence_of_the_gap(
    db: Engine, installed_schema: str, missed: str, created: str, expected: list[str]
) -> None:
    schema = installed_schema
    setup(db, schema, at(created), ("q", "15 * * * *", None, {"missed": missed}))
    set_clock(db, schema, at("2026-06-01 12:00:30"))
    # The last pass was at 09:30: the gap is (max(09:30, created_on), 11:59:30].
    assert cron_pass(db, schema, prior=at("2026-06-01 09:30:00"))[1].due == expected
    # Without a prior pass nothing counts as missed.
    assert cron_pass(db, schema, prior=None)[1].due == []


def test_missed_once_with_a_rule_and_a_long_gap(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    setup(
        db,
        schema,
        at("2025-01-01 00:00:00"),
        ("dense", "FREQ=SECONDLY;INTERVAL=7", None, {"missed": "once"}),
        ("sparse", "FREQ=DAILY;BYMONTH=3;BYHOUR=5;BYMINUTE=0;BYSECOND=0", None, {"missed": "once"}),
    )
    set_clock(db, schema, at("2026-06-01 12:00:30"))
    started = time.monotonic()
    result = cron_pass(db, schema, prior=at("2025-06-01 00:00:00"))[1]
    assert time.monotonic() - started < 2
    # dense: 11:59:30 is no multiple of 7 s since 1970; its latest before it is 11:59:26.
    assert result.due[:2] == ["dense@2026-06-01 11:59:00", "dense@2026-06-01 12:00:00"]
    assert result.due[2:] == ["sparse@2026-03-31 05:00:00"]


def test_a_schedule_that_cannot_be_evaluated_is_skipped_and_warned_once(
    db: Engine, installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = installed_schema
    setup(db, schema, at("2026-06-01 11:00:00"), ("good", "* * * * *", None, {}))
    for key, kind, expression, zone in (
        ("bad-cron", "cron", "not a cron", "UTC"),
        ("bad-zone", "cron", "* * * * *", "Mars/Base"),
        ("bad-rule", "rrule", "FREQ=NEVER", "UTC"),
    ):
        sql(
            db,
            f"INSERT INTO {schema}.schedule (name, key, kind, cron, timezone) VALUES ('good', :k, :kind, :e, :z)",
            k=key,
            kind=kind,
            e=expression,
            z=zone,
        )
    set_clock(db, schema, at("2026-06-01 12:00:30"))
    with caplog.at_level(logging.WARNING, logger="sqla_boss.supervisor"):
        supervisor, result = cron_pass(db, schema, persist_warnings=True)
        assert result.due == ["good@2026-06-01 12:00:00"]
        assert sorted((invalid.key, invalid.kind) for invalid in result.unreadable) == [  # type: ignore[attr-defined]
            ("bad-cron", "cron"),
            ("bad-rule", "rrule"),
            ("bad-zone", "cron"),
        ]
        set_clock(db, schema, at("2026-06-01 12:01:30"))
        sql(db, f"UPDATE {schema}.version SET cron_on = NULL")
        assert supervisor.cron().due == ["good@2026-06-01 12:01:00"]
    warnings = sql(db, f"SELECT type, data->>'key', data->>'error' FROM {schema}.warning ORDER BY 2")
    assert [(kind, key) for kind, key, _ in warnings] == [
        ("invalid_schedule", "bad-cron"),
        ("invalid_schedule", "bad-rule"),
        ("invalid_schedule", "bad-zone"),
    ]  # once each, though both passes met them
    assert "Mars/Base" in warnings[2][2]
    assert sum("invalid_schedule" in record.getMessage() for record in caplog.records) == 3


def test_a_schedule_whose_kind_cannot_be_read_is_evaluated_as_the_other_and_relabelled(
    db: Engine, installed_schema: str
) -> None:
    schema = installed_schema
    setup(db, schema, at("2026-06-01 11:00:00"), ("q", "* * * * *", None, {}))
    sql(
        db,
        f"INSERT INTO {schema}.schedule (name, key, kind, cron, updated_on) VALUES "
        "('q', 'rule', 'cron', 'FREQ=MINUTELY', '2020-01-01'), ('q', 'cron', 'rrule', '*/5 * * * *', '2020-01-01')",
    )
    set_clock(db, schema, at("2026-06-01 12:00:30"))
    result = cron_pass(db, schema)[1]
    assert result.due == ["q@2026-06-01 12:00:00", "q[cron]@2026-06-01 12:00:00", "q[rule]@2026-06-01 12:00:00"]
    assert sorted(result.relabelled) == [("q", "cron", "cron"), ("q", "rule", "rrule")]
    rows = sql(db, f"SELECT key, kind, updated_on FROM {schema}.schedule WHERE key <> '' ORDER BY key")
    assert [(key, kind) for key, kind, _ in rows] == [("cron", "cron"), ("rule", "rrule")]
    assert {updated for _, _, updated in rows} == {at("2020-01-01 00:00:00")}


def test_without_the_send_it_queue_the_pass_files_nothing_and_says_so(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    set_clock(db, schema, at("2026-06-01 11:00:00"))
    boss_do(db, schema, ("create_queue", ("q",), {}), ("schedule", ("q", "* * * * *"), {}))
    set_clock(db, schema, at("2026-06-01 12:00:30"))
    supervisor = Supervisor(db, schema, SupervisionSettings.from_options({}), cron_interval_seconds=30)
    with pytest.raises(Exception, match="__pgboss__send-it"):
        supervisor.cron()
    assert sql(db, f"SELECT cron_on FROM {schema}.version") == [(None,)]  # the claim rolled back with it
    assert supervisor.create_send_it_queue() is True
    assert supervisor.create_send_it_queue() is False
    assert supervisor.cron().filed == 1


# -------------------------------------------------------------------------------- the send-it worker


def run_send_it(engine: Engine, schema: str, payloads: list[Any]) -> list[uuid.UUID]:
    from sqla_boss.driver import Driver
    from sqla_boss.operations import operations_for

    with Session(engine) as session, session.begin():
        return Driver(schema, (46,)).run(session, operations_for(schema, {}, 46).send_it(payloads))


def test_send_it_sends_with_the_stored_options_and_records_the_latest_job(
    db: Engine, installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = installed_schema
    set_clock(db, schema, None)
    boss_do(
        db,
        schema,
        ("create_queue", (SEND_IT,), {}),
        ("create_queue", ("target",), {"retry_limit": 7}),
        ("schedule", ("target", "* * * * *", {"v": 1}), {"key": "k", "priority": 3, "expire_in_seconds": 77}),
    )
    options = {
        "key": "k",
        "tz": "UTC",
        "missed": "once",
        "db": {"executeSql": None},
        "priority": 3,
        "expireInSeconds": 77,
        "retentionSeconds": 120,
        "singletonKey": "sk",
        "notAnOption": True,
    }

    def payload(slot: str, **more: Any) -> dict[str, Any]:
        return {"name": "target", "key": "k", "data": {"slot": slot}, "options": options, "slot": slot, **more}

    with caplog.at_level(logging.WARNING, logger="sqla_boss.cron"):
        ids = run_send_it(
            db,
            schema,
            [
                payload("2026-06-01 12:01:00"),
                {"name": "gone", "key": "", "data": None, "options": {}, "slot": "2026-06-01 12:00:00"},
                {**payload("2026-06-01 12:02:00"), "options": {"priority": "high"}},
                payload("2026-06-01 12:00:00", data={"slot": "early"}) | {"options": {}},
            ],
        )
    assert len(ids) == 2
    assert sum("could not send" in record.getMessage() for record in caplog.records) == 2
    rows = sql(
        db,
        f"SELECT id, data, priority, expire_seconds, retry_limit, singleton_key, "
        f"round(extract(epoch FROM keep_until - start_after)) FROM {schema}.job WHERE name = 'target' "
        "ORDER BY priority DESC",
    )
    assert [tuple(row[1:]) for row in rows] == [
        ({"slot": "2026-06-01 12:01:00"}, 3, 77, 7, "sk", 120),
        ({"slot": "early"}, 0, 900, 7, None, 1209600),
    ]
    # last_job_id: the job of the latest slot that was sent (12:01; 12:02 was refused).
    assert sql(db, f"SELECT last_job_id FROM {schema}.schedule WHERE key = 'k'") == [(rows[0][0],)]


def test_a_worker_with_schedule_on_runs_cron_and_the_send_it_queue(db: Engine, installed_schema: str) -> None:
    """The real clock: ``* * * * *`` always has an occurrence in the last minute."""
    schema = installed_schema
    boss_do(
        db,
        schema,
        ("create_queue", ("ticks",), {}),
        ("schedule", ("ticks", "* * * * *", {"tick": True}), {"key": "w"}),
    )
    with Session(db) as session, session.begin():
        assert Boss(session, schema).get_queue(SEND_IT) is None
    worker = Worker(
        db,
        schema,
        supervise=False,
        migrate=False,
        register_instance=False,
        cron_worker_interval_seconds=1,
        polling_interval_seconds=0.5,
    )
    seen: list[Any] = []
    worker.work("ticks")(lambda jobs: seen.extend(job.data for job in jobs))
    worker.start()
    try:
        wait_until(lambda: seen, timeout=15, what="the scheduled job")
    finally:
        worker.stop()
    assert seen == [{"tick": True}]
    [row] = send_it_rows(db, schema)
    assert (row["singleton_key"], row["state"]) == ("ticks__w", "completed")
    [(last_job_id,)] = sql(db, f"SELECT last_job_id FROM {schema}.schedule")
    assert sql(db, f"SELECT data FROM {schema}.job WHERE id = :id", id=last_job_id) == [({"tick": True},)]


# ------------------------------------------------------------------------------------ pure functions


def test_singleton_key_and_slot_text() -> None:
    assert cron46.singleton_key("my_q", "k1") == "my\\_q__k1"
    assert cron46.singleton_key("a__b", "") == "a\\_\\_b__"
    assert cron46.slot_of(dt.datetime(2026, 6, 1, 14, 5, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == (
        "2026-06-01 12:05:00"
    )


@pytest.mark.parametrize(
    "rule",
    [
        "DTSTART;TZID=Europe/Paris:20260301T000013\nRRULE:FREQ=SECONDLY;INTERVAL=997",
        "DTSTART;TZID=Europe/Paris:20260301T001500\nRRULE:FREQ=MINUTELY;INTERVAL=13;BYSECOND=0,30",
        "DTSTART;TZID=Europe/Paris:20260301T020700\nRRULE:FREQ=HOURLY;INTERVAL=5",
        "DTSTART;TZID=Europe/Paris:20260301T023000\nRRULE:FREQ=DAILY;INTERVAL=3;BYHOUR=2,3",
        "DTSTART;TZID=Europe/Paris:20260302T090000\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH",
        "DTSTART:20260301T000000Z\nRRULE:FREQ=MINUTELY;INTERVAL=7\nEXRULE:FREQ=MINUTELY;INTERVAL=21",
        "DTSTART;TZID=Europe/Paris:20260301T000000\nRRULE:FREQ=MINUTELY;INTERVAL=15",
    ],
)
@pytest.mark.parametrize(
    "around", ["2026-03-29 00:30:00", "2026-03-29 01:10:00", "2026-10-25 00:30:00", "2026-06-10 11:00:00"]
)
def test_a_rule_moved_up_keeps_its_occurrences(rule: str, around: str) -> None:
    """A rule's DTSTART is moved up to just before the time asked about, so that a pass never walks from 1970: the
    occurrences from there on are the rule's own, across both summer-time changes."""
    zone = cron46.zone_of("Europe/Paris")
    start = at(around)
    end = start + dt.timedelta(days=15)
    walked = cron46.rule_set(rule, zone).between(start, end, inc=True)
    moved = cron46.rule_set(rule, zone, start).between(start, end, inc=True)
    assert walked
    assert moved == walked
