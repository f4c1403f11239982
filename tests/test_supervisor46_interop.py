"""The version-46 supervisor beside the real pg-boss 12.38.0: each side reads what the other's supervisor wrote,
and a mixed cluster of two Python supervisors and one Node instance does each piece of once-per-cluster work once
per interval, as the claims recorded by triggers prove."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections import defaultdict
from typing import Any

import pytest
from pgboss import (  # noqa: F401  (the fixtures pgboss12 and pgboss_install)
    PgBoss,
    call,
    pgboss12_fixture,
    pgboss_install_fixture,
    ref,
    start,
)
from sqlalchemy import URL, Engine, create_engine, text
from support import sql, wait_until

from sqla_boss.flavours import Event
from sqla_boss.options.supervision import SupervisionSettings
from sqla_boss.supervisor import Supervisor

pytestmark = pytest.mark.pgboss

QUIET = {"supervise": False, "schedule": False, "migrate": False, "registerInstance": False}
COUNTS = ("queued_count", "blocked_count", "deferred_count", "ready_count", "active_count", "failed_count")


@pytest.fixture(scope="module")
def schema_version() -> int:
    return 46


def supervisor(engine: Engine, schema: str, **options: Any) -> Supervisor:
    return Supervisor(engine, schema, SupervisionSettings.from_options(options), cron_interval_seconds=None)


def test_each_side_reads_what_the_others_supervisor_wrote(pgboss12: PgBoss, db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    setup = [start(**QUIET)]
    for name in ("py", "node"):
        setup += [
            call("createQueue", name, {"retryLimit": 1, "expireInSeconds": 5}),
            call("send", name, {"n": 1}),
            call("send", name, {"n": 2}),
            call("send", name, {"n": 3}, {"startAfter": 3600}),
            call("fetch", name, {"batchSize": 1}),
        ]
    pgboss12.run(schema, setup)
    sql(db, f"UPDATE {schema}.job SET started_on = started_on - interval '6 seconds' WHERE state = 'active'")
    # Python supervises the queue "py" (the other is claimed meanwhile), then pg-boss the queue "node".
    sql(db, f"UPDATE {schema}.queue SET monitor_claim_on = now(), maintain_on = now() WHERE name = 'node'")
    result = supervisor(db, schema).supervise()
    assert (result.monitored, result.expired) == (["py"], 1)
    sql(db, f"UPDATE {schema}.queue SET monitor_claim_on = NULL, maintain_on = NULL WHERE name = 'node'")
    pgboss12.run(
        schema,
        [start(**QUIET), call("supervise", "node")],
    )
    columns = f"state, retry_count, output, heartbeat_on IS NULL, completed_on IS NULL, {', '.join(COUNTS)}"
    rows = {
        name: row
        for name, *row in sql(
            db,
            f"SELECT j.name, {columns} FROM {schema}.job j JOIN {schema}.queue q USING (name) WHERE data->>'n' = '1'",
        )
    }
    assert rows["py"] == rows["node"]  # the same expiry, the same counts, on either side
    assert rows["py"][:3] == ["retry", 0, {"value": {"message": "job timed out"}}]
    # pg-boss fetches the job Python expired as its next attempt.
    [_, fetched, instances] = pgboss12.run(
        schema, [start(**QUIET), call("fetch", "py", {"includeMetadata": True}), call("getInstances")]
    )
    assert fetched[0]["retryCount"] == 1
    assert fetched[0]["output"] == {"value": {"message": "job timed out"}}
    assert instances == []  # no instance registered yet; see the next test


def test_pg_boss_reads_a_python_instance_row(pgboss12: PgBoss, db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    python = Supervisor(
        db,
        schema,
        SupervisionSettings.from_options({"instance_name": "py"}),
        cron_interval_seconds=30,
        workers=lambda: [{"id": "w1", "queue": "q", "localConcurrency": 1, "batchSize": 1, "active": 0}],
    )
    python.register()
    [_, instances] = pgboss12.run(schema, [start(**QUIET), call("getInstances")])
    [ours] = [row for row in instances if row["id"] == str(python.instance.id)]
    assert ours["name"] == "py"
    assert ours["live"] is True
    assert ours["supervise"] is True
    assert ours["schedule"] is True
    assert ours["workers"][0]["queue"] == "q"
    assert ours["crashRestarts"] == 0
    python.unregister()
    [_, instances] = pgboss12.run(schema, [start(**QUIET), call("getInstances")])
    [ours] = [row for row in instances if row["id"] == str(python.instance.id)]
    assert ours["live"] is False
    assert ours["stoppedOn"] is not None


# ------------------------------------------------------------------------------------ queue statistics

STATS_JOBS = {  # n: (state, created_on, start_after, started_on, completed_on), seconds after T = now - 300 s
    1: ("completed", 0, 0, 0.005, 0.020),  # wait 5 ms (slot 0), run 15 ms
    2: ("completed", 0, 0, 0.010, 0.030),  # wait 10 ms: slot 1's lower edge; run 20 ms: the edge of slots 2 and 3
    3: ("failed", 0, 60, 61, 161),  # wait from start_after: 1 s; run 100 s
    4: ("completed", -200_000, -200_000, -200_000, -90),  # created before the window; runs past the last edge
    5: ("cancelled", 0, 0, 1, 2),  # neither completed nor failed, no bins
    6: ("completed", -900, -900, -900, -800),  # finished before the window
    7: ("created", -1000, -1000, None, None),  # the oldest ready job
    8: ("created", 10, 5000, None, None),  # deferred
    9: ("completed", 20, 20, None, 30),  # completed without a start: counted, no bins
    10: ("completed", 290, 290, 291, 295),  # finished within the 10 s lag: the next window's
    11: ("active", 50, 50, 60, None),
}
STATS_COLUMNS = (
    "created_delta",
    "completed_delta",
    "failed_delta",
    "wait_bins",
    "run_bins",
    "deferred_count",
    "queued_count",
    "ready_count",
    "active_count",
    "failed_count",
    "total_count",
)


def stats_setup(db: Engine, schema: str, pgboss12: PgBoss, sides: tuple[str, ...]) -> dict[str, Any]:
    """Queues ``<side>`` (counted 600 s ago), ``<side>_new`` (never counted), ``<side>_old`` (3 h ago), each
    with :data:`STATS_JOBS`, stamped in one transaction so that every side has the same timings; returns each
    queue's ``delta_on`` before the pass."""
    actions = [start(**QUIET)]
    queues = [f"{side}{suffix}" for side in sides for suffix in ("", "_new", "_old")]
    for name in queues:
        actions += [call("createQueue", name)] + [call("send", name, {"n": n}) for n in STATS_JOBS]
    pgboss12.run(schema, actions)

    def at(seconds: float | None) -> str:
        return "NULL" if seconds is None else f"now() - interval '300 s' + interval '{seconds} s'"

    with db.begin() as connection:
        for n, (state, *stamps) in STATS_JOBS.items():
            created, start_after, started, completed = (at(s) for s in stamps)
            connection.execute(
                text(
                    f"UPDATE {schema}.job SET state = '{state}', created_on = {created}, start_after = {start_after},"
                    f" started_on = {started}, completed_on = {completed} WHERE data->>'n' = '{n}'"
                )
            )
        for side in sides:
            connection.execute(
                text(f"UPDATE {schema}.queue SET delta_on = now() - interval '600 s' WHERE name = '{side}'")
            )
            connection.execute(
                text(f"UPDATE {schema}.queue SET delta_on = now() - interval '3 hours' WHERE name = '{side}_old'")
            )
        return dict(list(connection.execute(text(f"SELECT name, delta_on FROM {schema}.queue"))))  # type: ignore[arg-type]


def stats_of(db: Engine, schema: str, before: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each queue's throughput columns and its one snapshot, checked against the rules that depend on the
    moment of the pass (window length and end, oldest ready wait), which two passes cannot share."""
    columns = ", ".join(STATS_COLUMNS)
    rows = sql(
        db,
        f"SELECT q.name, {columns}, q.delta_seconds, q.delta_on, q.ready_oldest_seconds, q.monitor_on,"
        f" (SELECT min(greatest(created_on, start_after)) FROM {schema}.job j WHERE j.name = q.name"
        f"   AND state = 'created' AND start_after <= q.monitor_on) AS oldest FROM {schema}.queue q",
    )
    snapshots = {
        row[0]: row[1:]
        for row in sql(
            db,
            f"SELECT name, {columns}, delta_seconds, delta_on, ready_oldest_seconds, captured_on"
            f" FROM {schema}.queue_stats",
        )
    }
    result = {}
    for name, *values in rows:
        *counts, seconds, delta_on, ready_oldest, monitor_on, oldest = values
        assert delta_on == monitor_on - dt.timedelta(seconds=10)  # the window ends 10 s before the pass
        assert ready_oldest == round((monitor_on - oldest).total_seconds())
        if before[name] is None or before[name] < delta_on - dt.timedelta(hours=2):
            assert seconds is None  # a fresh window: no length, nothing counted
        else:
            assert seconds == round((delta_on - before[name]).total_seconds())
        snapshot = snapshots[name]
        # The row's throughput as the count left it (maintenance may move total_count afterwards).
        assert list(snapshot[:5]) == counts[:5]
        assert list(snapshot[-4:-1]) == [seconds, delta_on, ready_oldest]
        assert snapshot[-1] >= monitor_on
        result[name] = dict(zip(STATS_COLUMNS, counts, strict=True))
        result[name]["snapshot"] = list(snapshot[: len(STATS_COLUMNS)])
    return result


def test_python_and_pg_boss_persist_the_same_queue_stats(pgboss12: PgBoss, db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    before = stats_setup(db, schema, pgboss12, ("py", "node"))
    node_queues = "name LIKE 'node%'"
    sql(db, f"UPDATE {schema}.queue SET monitor_claim_on = now(), maintain_on = now() WHERE {node_queues}")
    result = supervisor(db, schema, persist_queue_stats=True, register_instance=False).supervise()
    assert sorted(result.counted) == ["py", "py_new", "py_old"]
    sql(db, f"UPDATE {schema}.queue SET monitor_claim_on = NULL, maintain_on = NULL WHERE {node_queues}")
    pgboss12.run(schema, [start(**QUIET, persistQueueStats=True), call("supervise")])
    stats = stats_of(db, schema, before)
    for suffix in ("", "_new", "_old"):
        assert stats[f"py{suffix}"] == stats[f"node{suffix}"], suffix
    counted = stats["py"]
    assert (counted["created_delta"], counted["completed_delta"], counted["failed_delta"]) == (8, 4, 1)
    slots = {k: v for k, v in enumerate(counted["wait_bins"]) if v is not None}
    assert slots == {0: 2, 1: 1, 14: 1}
    slots = {k: v for k, v in enumerate(counted["run_bins"]) if v is not None}
    assert slots == {2: 2, 27: 1, 47: 1}  # 20 ms lands in slot 2, as pg-boss's float8 arithmetic has it
    for fresh in ("py_new", "py_old"):
        assert stats[fresh]["wait_bins"] == stats[fresh]["run_bins"] == [None] * 48
        assert (stats[fresh]["created_delta"], stats[fresh]["completed_delta"]) == (0, 0)


# ------------------------------------------------------------------------------------ the mixed cluster

INTERVALS = {"supervise": 1, "monitor": 2, "maintain": 3, "flow": 1, "bam": 10, "cron": 2}

AUDIT = """
CREATE TABLE {s}.claims (
    id bigserial PRIMARY KEY, task text NOT NULL, item text NOT NULL, stamp timestamptz,
    app text NOT NULL DEFAULT current_setting('application_name'), recorded timestamptz DEFAULT clock_timestamp()
);
CREATE FUNCTION {s}.record_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.monitor_claim_on IS DISTINCT FROM OLD.monitor_claim_on AND NEW.monitor_claim_on IS NOT NULL THEN
    INSERT INTO {s}.claims (task, item, stamp) VALUES ('monitor', NEW.name, NEW.monitor_claim_on);
  END IF;
  IF NEW.monitor_on IS DISTINCT FROM OLD.monitor_on THEN
    INSERT INTO {s}.claims (task, item, stamp) VALUES ('counted', NEW.name, NEW.monitor_claim_on);
  END IF;
  IF NEW.maintain_on IS DISTINCT FROM OLD.maintain_on AND NEW.maintain_on IS NOT NULL THEN
    INSERT INTO {s}.claims (task, item, stamp) VALUES ('maintain', NEW.name, NEW.maintain_on);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER record_queue AFTER UPDATE ON {s}.queue FOR EACH ROW EXECUTE FUNCTION {s}.record_queue();
CREATE FUNCTION {s}.record_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.flow_on IS DISTINCT FROM OLD.flow_on THEN
    INSERT INTO {s}.claims (task, item, stamp) VALUES ('flow', '', NEW.flow_on);
  END IF;
  IF NEW.bam_on IS DISTINCT FROM OLD.bam_on THEN
    INSERT INTO {s}.claims (task, item, stamp) VALUES ('bam', '', NEW.bam_on);
  END IF;
  IF NEW.cron_on IS DISTINCT FROM OLD.cron_on THEN
    INSERT INTO {s}.claims (task, item, stamp) VALUES ('cron', '', NEW.cron_on);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER record_version AFTER UPDATE ON {s}.version FOR EACH ROW EXECUTE FUNCTION {s}.record_version();
CREATE FUNCTION {s}.record_bam() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status = 'in_progress' AND OLD.status IS DISTINCT FROM 'in_progress' THEN
    INSERT INTO {s}.claims (task, item, stamp) VALUES ('build', NEW.id::text, NEW.started_on);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER record_bam AFTER UPDATE ON {s}.bam FOR EACH ROW EXECUTE FUNCTION {s}.record_bam();
"""


def test_a_mixed_cluster_does_each_task_once_per_interval(
    pgboss12: PgBoss, database_url: URL, db: Engine, installed_schema: str
) -> None:
    """Two Python supervisors and one pg-boss 12.38 run side by side for a few intervals; every claim is recorded
    by a trigger. Each task's claims (for the monitor: the claims its counts consumed) fall at least one interval
    apart, whoever made them, and each deferred build ran once."""
    schema = installed_schema
    with db.begin() as connection:
        connection.exec_driver_sql(AUDIT.format(s=schema))
    pgboss12.run(
        schema,
        [
            start(**QUIET),
            *(call("createQueue", f"q{n}", {"partition": n == 2}) for n in range(3)),
            call("createQueue", "__pgboss__send-it"),
            call("schedule", "q0", "* * * * *"),
        ],
    )
    for n in (15, 16, 17):
        sql(db, f"DROP INDEX {schema}.job_common_i{n}")
    for n, columns in (
        (15, "name, created_on"),
        (16, "name, completed_on) WHERE completed_on IS NOT NULL"),
        (17, "name, singleton_key, created_on) WHERE state < 'active' AND singleton_key IS NOT NULL"),
    ):
        statement = f"CREATE INDEX CONCURRENTLY IF NOT EXISTS job_i{n} ON {schema}.job ({columns}"
        statement += "" if statement.endswith("NULL") else ")"
        sql(
            db,
            f"SELECT {schema}.job_table_run_async(:name, 46, :command, 'job_common')",
            name=f"i{n}",
            command=statement,
        )
    sql(db, f"CREATE TABLE {schema}.finish (done boolean)")
    node_options = {
        "superviseIntervalSeconds": INTERVALS["supervise"],
        "monitorIntervalSeconds": INTERVALS["monitor"],
        "maintenanceIntervalSeconds": INTERVALS["maintain"],
        "flowIntervalSeconds": INTERVALS["flow"],
        "bamIntervalSeconds": INTERVALS["bam"],
        "cronMonitorIntervalSeconds": INTERVALS["cron"],
    }
    options = {
        "supervise_interval_seconds": INTERVALS["supervise"],
        "monitor_interval_seconds": INTERVALS["monitor"],
        "maintenance_interval_seconds": INTERVALS["maintain"],
        "flow_interval_seconds": INTERVALS["flow"],
        "bam_interval_seconds": INTERVALS["bam"],
        "instance_heartbeat_seconds": 2,
    }
    engines = [create_engine(database_url, connect_args={"application_name": f"py-{n}"}) for n in "ab"]
    stopping = Event()
    pythons = [
        Supervisor(e, schema, SupervisionSettings.from_options(options), cron_interval_seconds=INTERVALS["cron"])
        for e in engines
    ]
    threads = [threading.Thread(target=p.run, args=(stopping,)) for p in pythons]
    node_actions = [start(**node_options), call("waitSql", f"SELECT done FROM {schema}.finish", 120_000), call("stop")]
    try:
        with pgboss12.spawn(schema, node_actions) as node:
            for thread in threads:
                thread.start()
            # Two BAM intervals, every build ended, and a cron pass by Python (on a loaded machine Node can win
            # the first few): what the assertions below read.
            wait_until(
                lambda: sql(
                    db,
                    f"SELECT (SELECT count(DISTINCT stamp) FROM {schema}.claims WHERE task = 'bam') >= 2 "
                    f"AND NOT EXISTS (SELECT FROM {schema}.bam WHERE status <> 'completed') "
                    f"AND EXISTS (SELECT FROM {schema}.claims WHERE task = 'cron' AND app LIKE 'py%')",
                )[0][0],
                timeout=90,
                what="two BAM intervals, every build completed, a Python cron pass",
            )
            sql(db, f"INSERT INTO {schema}.finish VALUES (true)")
            node.result(timeout=60)
    finally:
        stopping.set()
        for thread in threads:
            thread.join(30)
        for e in engines:
            e.dispose()
    claims = sql(db, f"SELECT task, item, stamp, app FROM {schema}.claims ORDER BY stamp, id")
    by_task: dict[tuple[str, str], list[Any]] = defaultdict(list)
    apps: dict[str, set[str]] = defaultdict(set)
    for task, item, stamp, app in claims:
        if task == "counted":
            task = "monitor-used"
        by_task[task, item].append(stamp)
        apps[task].add(app.split(":")[0].split("-")[0])
    interval_of = {"monitor-used": INTERVALS["monitor"], **INTERVALS}
    for (task, item), stamps in by_task.items():
        if task in ("build", "monitor"):
            continue
        gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(stamps)]
        assert all(gap >= interval_of[task] for gap in gaps), (task, item, gaps)
    for n in range(3):
        assert len(by_task["monitor-used", f"q{n}"]) >= 2
        assert len(by_task["maintain", f"q{n}"]) >= 2
    builds = [item for task, item, _, _ in claims if task == "build"]
    assert len(builds) == len(set(builds)) == 3
    assert sql(db, f"SELECT DISTINCT status FROM {schema}.bam") == [("completed",)]
    # Both runtimes took turns: pg-boss and Python each won some of the claims; Python ran cron passes too, and
    # whoever filed the schedule's send-it rows, each minute has one.
    assert set().union(*apps.values()) >= {"pgboss", "py"}, dict(apps)
    assert "py" in apps["cron"], dict(apps)
    filed = sql(db, f"SELECT data->>'slot' FROM {schema}.job WHERE name = '__pgboss__send-it'")
    assert filed
    assert len(filed) == len(set(filed))
