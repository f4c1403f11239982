"""Cron on schema version 46 beside the real pg-boss 12.38.0 (PGBOSS12.md §9.3-9.4): a schedule Python created and
filed reaches Node through Node's send-it worker; Python's send-it worker sends what Node's cron pass filed, whose
rows are the ones Python files; and Python cron passes racing a Node instance with ``schedule: true`` over the same
schedules leave exactly one send-it row and one job per (schedule, slot), which triggers prove both sides tried."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from pgboss import (  # noqa: F401  (the fixtures pgboss12 and pgboss_install)
    PgBoss,
    call,
    pgboss12_fixture,
    pgboss_install_fixture,
    start,
)
from sqlalchemy import URL, Engine, create_engine
from sqlalchemy.orm import Session
from support import sql, wait_until

from sqla_boss import Boss, Worker
from sqla_boss.flavours import Event
from sqla_boss.options.supervision import SupervisionSettings
from sqla_boss.supervisor import Supervisor

pytestmark = pytest.mark.pgboss

SEND_IT = "__pgboss__send-it"
QUIET = {"supervise": False, "schedule": False, "migrate": False, "registerInstance": False}
SCHEDULING = {**QUIET, "schedule": True, "cronWorkerIntervalSeconds": 1}


@pytest.fixture(scope="module")
def schema_version() -> int:
    return 46


@pytest.fixture
def db(database_url: URL) -> Iterator[Engine]:
    engine = create_engine(database_url, connect_args={"application_name": "py-test"})
    yield engine
    engine.dispose()


def send_it_rows(engine: Engine, schema: str) -> list[dict[str, Any]]:
    rows = sql(
        engine,
        f"SELECT id, singleton_key, singleton_on, data, state::text AS state, retry_limit, policy "
        f"FROM {schema}.job WHERE name = :n ORDER BY singleton_key, singleton_on",
        n=SEND_IT,
    )
    return [row._asdict() for row in rows]


def python_pass(engine: Engine, schema: str) -> Any:
    sql(engine, f"UPDATE {schema}.version SET cron_on = NULL")
    return Supervisor(engine, schema, SupervisionSettings.from_options({}), cron_interval_seconds=30).cron()


def test_a_python_schedule_fires_a_job_node_sees(pgboss12: PgBoss, db: Engine, installed_schema: str) -> None:
    """Python schedules and files; Node's send-it worker sends it (with the stored options) and records it;
    Node fetches the job."""
    schema = installed_schema
    with Session(db) as session, session.begin():
        boss = Boss(session, schema)
        boss.create_queue(SEND_IT)
        boss.create_queue("my_q", retry_limit=5)
        boss.schedule("my_q", "* * * * *", {"from": "python"}, key="k1", priority=3, expire_in_seconds=77)
    result = python_pass(db, schema)
    assert result.filed == 1
    [filed] = send_it_rows(db, schema)
    assert filed["singleton_key"] == "my\\_q__k1"
    # Node's own cron pass loses its claim (Python's was just now): only its send-it worker acts.
    [_, found, fetched, _] = pgboss12.run(
        schema,
        [
            start(**SCHEDULING),
            call("waitSql", f"SELECT count(*) > 0 FROM {schema}.job WHERE name = 'my_q'", 20_000),
            call("fetch", "my_q", {"includeMetadata": True}),
            call("stop", {"graceful": True, "timeout": 5000}),
        ],
    )
    assert found is True
    [job] = fetched
    assert job["data"] == {"from": "python"}
    assert (job["priority"], job["expireInSeconds"], job["retryLimit"]) == (3, 77, 5)
    [consumed] = send_it_rows(db, schema)
    assert (consumed["id"], consumed["state"]) == (filed["id"], "completed")
    assert sql(db, f"SELECT last_job_id FROM {schema}.schedule") == [(uuid.UUID(job["id"]),)]


BLOCK_NODE_SEND_IT = """
CREATE FUNCTION {s}.no_node_send_it() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF left(current_setting('application_name'), 6) = 'pgboss' THEN
    RAISE EXCEPTION 'this test keeps send-it jobs from pg-boss';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER no_node_send_it BEFORE UPDATE ON {s}.job FOR EACH ROW
  WHEN (NEW.name = '__pgboss__send-it' AND NEW.state = 'active') EXECUTE FUNCTION {s}.no_node_send_it();
"""


def test_python_sends_what_node_filed_and_files_the_same_rows(
    pgboss12: PgBoss, database_url: URL, db: Engine, installed_schema: str
) -> None:
    """Node's cron pass files; a trigger keeps Node's send-it worker from taking the row; a Python Worker's
    send-it worker sends it. A Python pass over the same schedule and slot files nothing more: the same row."""
    schema = installed_schema
    with db.begin() as connection:
        connection.exec_driver_sql(BLOCK_NODE_SEND_IT.format(s=schema))
    pgboss12.run(
        schema,
        [
            start(**SCHEDULING),
            call("createQueue", "node_q", {"retryLimit": 4}),
            call("schedule", "node_q", "* * * * *", {"from": "node"}, {"key": "n_1", "priority": 2}),
            call("stop", {"graceful": True, "timeout": 5000}),
        ],
    )
    # The start above filed nothing (the schedule came after its pass); a second start's pass does, once the
    # first one's claim is out of the way.
    sql(db, f"UPDATE {schema}.version SET cron_on = NULL")
    pgboss12.run(
        schema,
        [
            start(**SCHEDULING),
            call("waitSql", f"SELECT count(*) > 0 FROM {schema}.job WHERE name = '{SEND_IT}'", 20_000),
            call("stop", {"graceful": True, "timeout": 5000}),
        ],
    )
    [filed] = send_it_rows(db, schema)
    slot = filed["data"]["slot"]
    assert filed["singleton_key"] == "node\\_q__n_1"
    assert filed["singleton_on"].strftime("%Y-%m-%d %H:%M:%S") == slot
    assert filed["data"] == {
        "name": "node_q",
        "key": "n_1",
        "data": {"from": "node"},
        "options": {"key": "n_1", "priority": 2},
        "slot": slot,
    }
    assert (filed["state"], filed["retry_limit"], filed["policy"]) == ("created", 2, "standard")
    with Session(db) as session, session.begin():
        Boss(session, schema).schedule("node_q", "* * * * *", {"from": "python"}, key="py")
    result = python_pass(db, schema)
    if slot in [due.slot for due in result.slots if due.key == "n_1"]:
        assert result.filed == 1  # the very row Node filed, and the new schedule's
    assert (
        len([row for row in send_it_rows(db, schema) if (row["data"]["key"], row["data"]["slot"]) == ("n_1", slot)])
        == 1
    )
    # Every other column of Python's row is what Node's is.
    columns = sql(
        db,
        f"SELECT DISTINCT ON (singleton_key) singleton_key, policy, state::text, priority, retry_limit, "
        "retry_delay, retry_backoff, retry_delay_max, expire_seconds, deletion_seconds, "
        "keep_until - start_after, start_after = created_on, "
        "heartbeat_seconds, dead_letter, group_id, group_tier, blocked, blocking, pending_dependencies, "
        f"trace_context, output FROM {schema}.job WHERE name = :n ORDER BY singleton_key, singleton_on",
        n=SEND_IT,
    )
    assert [row[0] for row in columns] == ["node\\_q__n_1", "node\\_q__py"]
    assert columns[0][1:] == columns[1][1:]
    sql(db, f"DELETE FROM {schema}.schedule WHERE key = 'py'")
    sql(db, f"UPDATE {schema}.version SET cron_on = now()")  # the Worker's own passes lose their claim
    worker = Worker(
        create_engine(database_url),
        schema,
        supervise=False,
        migrate=False,
        register_instance=False,
        cron_worker_interval_seconds=1,
    )
    worker.start()
    try:
        wait_until(
            lambda: sql(db, f"SELECT state::text FROM {schema}.job WHERE id = :id", id=filed["id"]) == [("completed",)],
            timeout=15,
            what="the send-it job",
        )
    finally:
        worker.stop()
    jobs = sql(
        db, f"SELECT id, data, priority, retry_limit FROM {schema}.job WHERE name = 'node_q' AND data->>'from' = 'node'"
    )
    assert [tuple(row[1:]) for row in jobs] == [({"from": "node"}, 2, 4)]
    assert sql(db, f"SELECT last_job_id FROM {schema}.schedule WHERE key = 'n_1'") == [(jobs[0][0],)]
    [_, fetched] = pgboss12.run(schema, [start(**QUIET), call("fetch", "node_q", {"batchSize": 10})])
    assert {job["data"]["from"] for job in fetched} == {"node", "python"}


# --------------------------------------------------------------------------------------------- the race

AUDIT = """
CREATE TABLE {s}.attempts (
    id bigserial PRIMARY KEY, singleton_key text, singleton_on timestamp,
    app text NOT NULL DEFAULT current_setting('application_name')
);
CREATE FUNCTION {s}.record_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.name = '__pgboss__send-it' THEN
    INSERT INTO {s}.attempts (singleton_key, singleton_on) VALUES (NEW.singleton_key, NEW.singleton_on);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER record_attempt BEFORE INSERT ON {s}.job FOR EACH ROW EXECUTE FUNCTION {s}.record_attempt();
"""
"""Every send-it row any instance tries to file, by whom: a BEFORE INSERT trigger runs before ``ON CONFLICT``
decides, so the attempts a conflict skipped are recorded too."""

RACE_SCHEDULES = (
    ("race_a", "", "* * * * *"),
    ("race_a", "x_1", "FREQ=SECONDLY;INTERVAL=15"),
    ("race-b", "", "*/10 * * * * *"),
)


def test_python_and_node_racing_file_one_job_per_schedule_and_slot(
    pgboss12: PgBoss, database_url: URL, db: Engine, installed_schema: str
) -> None:
    """A Node instance (``schedule: true``, cron every second), a Python Worker (cron every second, send-it
    worker) and a bare Python supervisor run cron over the same schedules until both runtimes have tried to file
    the same (schedule, slot); every send-it row is then sent. Each (schedule, slot) has one send-it row and its
    queue one job, though the queue names hold ``_``, which the key escapes."""
    schema = installed_schema
    with db.begin() as connection:
        connection.exec_driver_sql(AUDIT.format(s=schema))
    with Session(db) as session, session.begin():
        boss = Boss(session, schema)
        boss.create_queue(SEND_IT)
        for name, key, expression in RACE_SCHEDULES:
            if boss.get_queue(name) is None:
                boss.create_queue(name)
            boss.schedule(name, expression, {"s": f"{name}/{key}"}, key=key)
    sql(db, f"CREATE TABLE {schema}.finish (done boolean)")
    node_actions = [
        start(**SCHEDULING, cronMonitorIntervalSeconds=1),
        call("waitSql", f"SELECT done FROM {schema}.finish", 60_000),
        call("stop", {"graceful": True, "timeout": 10_000}),
    ]
    engines = [create_engine(database_url, connect_args={"application_name": f"py-{n}"}) for n in "ab"]
    worker = Worker(
        engines[0],
        schema,
        supervise=False,
        migrate=False,
        register_instance=False,
        cron_monitor_interval_seconds=1,
        cron_worker_interval_seconds=1,
    )
    bare = Supervisor(engines[1], schema, SupervisionSettings.from_options({}), cron_interval_seconds=1)
    stopping = Event()
    thread = threading.Thread(target=bare.run, args=(stopping,))

    def collided() -> bool:
        rows = sql(db, f"SELECT singleton_key, singleton_on, app FROM {schema}.attempts")
        apps: dict[tuple[str, Any], set[str]] = defaultdict(set)
        for key, slot, app in rows:
            apps[key, slot].add("node" if app.startswith("pgboss") else "python")
        return any(len(who) == 2 for who in apps.values())

    try:
        with pgboss12.spawn(schema, node_actions) as node:
            worker.start()
            thread.start()
            wait_until(collided, timeout=40, what="Python and Node filing the same slot")
            stopping.set()
            thread.join(30)
            sql(db, f"INSERT INTO {schema}.finish VALUES (true)")
            node.result(timeout=60)
            wait_until(
                lambda: not sql(db, f"SELECT 1 FROM {schema}.job WHERE name = :n AND state < 'completed'", n=SEND_IT),
                timeout=20,
                what="every send-it job sent",
            )
    finally:
        stopping.set()
        worker.stop()
        thread.join(30)
        for engine in engines:
            engine.dispose()
    rows = send_it_rows(db, schema)
    filed = [(row["data"]["name"], row["data"]["key"], row["data"]["slot"]) for row in rows]
    assert len(filed) == len(set(filed))  # one send-it row per (schedule, slot)
    assert {row["state"] for row in rows} == {"completed"}
    for name, key, _ in RACE_SCHEDULES:
        schedule_slots = {slot for n, k, slot in filed if (n, k) == (name, key)}
        [(jobs,)] = sql(
            db, f"SELECT count(*) FROM {schema}.job WHERE name = :n AND data->>'s' = :s", n=name, s=f"{name}/{key}"
        )
        assert schedule_slots
        assert jobs == len(schedule_slots), (name, key, jobs, sorted(schedule_slots))
    attempts = sql(db, f"SELECT DISTINCT split_part(split_part(app, ':', 1), '-', 1) FROM {schema}.attempts")
    assert {app for (app,) in attempts} >= {"pgboss", "py"}


def test_node_and_python_agree_on_what_was_missed(pgboss12: PgBoss, db: Engine, installed_schema: str) -> None:
    """``missed: 'once'``: with the last pass two hours ago, Node's pass files the latest occurrence of the gap
    for a cron expression and a rule, and nothing for a schedule that skips; a Python pass then wants the same
    slots, all filed already."""
    schema = installed_schema
    [(now,)] = sql(db, "SELECT now() AT TIME ZONE 'UTC'")  # naive, as slots are
    minute = (now.minute - 10) % 60  # neither in this minute's window nor moving while the test runs
    with Session(db) as session, session.begin():
        boss = Boss(session, schema)
        boss.create_queue(SEND_IT)
        boss.create_queue("late")
        boss.schedule("late", f"{minute} * * * *", None, key="cron", missed="once")
        boss.schedule("late", f"FREQ=HOURLY;BYMINUTE={minute};BYSECOND=0", None, key="rule", missed="once")
        boss.schedule("late", f"{minute} * * * *", None, key="skip")
    sql(db, f"UPDATE {schema}.schedule SET created_on = now() - interval '3 hours'")
    sql(db, f"UPDATE {schema}.version SET cron_on = now() - interval '2 hours'")
    pgboss12.run(
        schema,
        [
            start(**SCHEDULING),
            call("waitSql", f"SELECT count(*) >= 2 FROM {schema}.job WHERE name = '{SEND_IT}'", 20_000),
            call("stop", {"graceful": True, "timeout": 5000}),
        ],
    )
    by_node = sorted((row["data"]["key"], row["data"]["slot"]) for row in send_it_rows(db, schema))
    expected = (now - dt.timedelta(seconds=60)).replace(minute=minute, second=0, microsecond=0)
    if expected > now - dt.timedelta(seconds=60):
        expected -= dt.timedelta(hours=1)
    slot = expected.strftime("%Y-%m-%d %H:%M:%S")
    assert by_node == [("cron", slot), ("rule", slot)]
    sql(db, f"UPDATE {schema}.version SET cron_on = now() - interval '2 hours'")
    result = Supervisor(db, schema, SupervisionSettings.from_options({}), cron_interval_seconds=30).cron()
    assert sorted((due.key, due.slot) for due in result.slots) == by_node
    assert result.filed == 0
