"""pg-boss 12's supervisor on schema version 46 (PGBOSS12.md §8): the claims, the cached counts, expiry with dead
letters, the retention sweep, BAM and the instance registry, each checked on the rows it writes. The supervisor
commits, so each test has a schema of its own (``installed_schema`` at version 46)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session
from support import sql, wait_until

from sqla_boss import Boss, JobState
from sqla_boss.async_supervisor import AsyncSupervisor
from sqla_boss.errors import InvalidOptionError
from sqla_boss.flavours import AEvent, Event
from sqla_boss.options.supervision import SupervisionSettings
from sqla_boss.schema import advisory_lock_key, advisory_lock_key_for
from sqla_boss.supervisor import Supervisor
from sqla_boss.v46.supervision import HEARTBEAT_OUTPUT, TIMEOUT_OUTPUT, Supervision46


@pytest.fixture(scope="module")
def schema_version() -> int:
    return 46


def supervisor(engine: Engine, schema: str, **options: Any) -> Supervisor:
    return Supervisor(engine, schema, SupervisionSettings.from_options(options), cron_interval_seconds=None)


def queue_row(engine: Engine, schema: str, name: str) -> dict[str, Any]:
    with engine.connect() as connection:
        return dict(
            connection.execute(text(f"SELECT * FROM {schema}.queue WHERE name = :name"), {"name": name})
            .mappings()
            .one()
        )


def make_jobs(engine: Engine, schema: str, name: str, **queue_options: Any) -> dict[str, uuid.UUID]:
    """One job of ``name`` in each state (and a deferred and a blocked one), committed."""
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        boss.create_queue(name, **queue_options)
        ids = {key: boss.send(name, {"key": key}) for key in ("ready", "deferred", "active", "completed", "failed")}
        sql_set = "UPDATE {s}.job SET {what} WHERE id = :id"
        session.execute(
            text(sql_set.format(s=schema, what="start_after = now() + interval '1 hour'")), {"id": ids["deferred"]}
        )
        session.execute(
            text(sql_set.format(s=schema, what="state = 'active', started_on = now(), heartbeat_on = now()")),
            {"id": ids["active"]},
        )
        session.execute(
            text(sql_set.format(s=schema, what="state = 'completed', completed_on = now()")), {"id": ids["completed"]}
        )
        session.execute(
            text(sql_set.format(s=schema, what="state = 'failed', completed_on = now()")), {"id": ids["failed"]}
        )
        ids["blocked"] = boss.send(name, {"key": "blocked"})
        session.execute(text(sql_set.format(s=schema, what="blocked = true")), {"id": ids["blocked"]})
    return {key: value for key, value in ids.items() if value is not None}


# --------------------------------------------------------------------------------------------- options


def test_settings_defaults_and_bounds() -> None:
    settings = SupervisionSettings.from_options({})
    assert settings == SupervisionSettings(
        supervise_interval_seconds=60,
        monitor_interval_seconds=60,
        maintenance_interval_seconds=86400,
        flow_interval_seconds=5,
        bam_interval_seconds=60,
        register_instance=True,
        instance_name=None,
        instance_heartbeat_seconds=30,
        warning_queue_size=10000,
        persist_warnings=False,
        warning_retention_days=365,
        persist_queue_stats=False,
        queue_stat_retention_days=7,
        migrate=True,
    )
    for option, value in [
        ("supervise_interval_seconds", 86401),
        ("monitor_interval_seconds", 0),
        ("maintenance_interval_seconds", 86401),
        ("flow_interval_seconds", 0),
        ("bam_interval_seconds", 9),
        ("instance_heartbeat_seconds", 3601),
        ("register_instance", 1),
        ("instance_name", 5),
        ("queue_stat_retention_days", 0),
        ("queue_stat_retention_days", 366),
        ("persist_queue_stats", 1),
        ("nope", 1),
    ]:
        with pytest.raises(InvalidOptionError):
            SupervisionSettings.from_options({option: value})
    assert SupervisionSettings.from_options({"bam_interval_seconds": 10, "migrate": False}).migrate is False


def test_advisory_keys_are_pg_boss_12s(db: Engine) -> None:
    # PGBOSS12.md §2.2's verified values.
    assert advisory_lock_key_for("spec12_main", "spec_t1", "create-queue") == 909480543724891247
    assert advisory_lock_key_for("spec12_main", "pgboss") == 5032628428538977298
    with db.connect() as connection:
        database = connection.execute(text("SELECT current_database()")).scalar_one()
        key = connection.execute(select(advisory_lock_key("s", "job_commonfailJobsByTimeout"))).scalar_one()
    assert key == advisory_lock_key_for(database, "s", "job_commonfailJobsByTimeout")


# ------------------------------------------------------------------------------------ monitor and claims


def test_a_supervise_pass_writes_the_cached_counts(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    make_jobs(db, schema, "q")
    result = supervisor(db, schema).supervise()
    assert result.monitored == result.counted == result.maintained == ["q"]
    row = queue_row(db, schema, "q")
    assert {key: row[key] for key in ("queued_count", "blocked_count", "deferred_count", "ready_count")} == {
        "queued_count": 3,
        "blocked_count": 1,
        "deferred_count": 1,
        "ready_count": 1,
    }
    assert (row["active_count"], row["failed_count"], row["total_count"]) == (1, 1, 6)
    assert row["retained_count"] == 0  # the completed job finished less than 10 s ago
    assert row["ready_history"] == [1]
    assert row["singletons_active"] is None
    assert row["monitor_on"] >= row["monitor_claim_on"]
    # Within the interval, neither this nor another supervisor claims the queue again.
    again = supervisor(db, schema).supervise()
    assert again.monitored == again.maintained == []
    assert queue_row(db, schema, "q")["ready_history"] == [1]


def test_each_claim_is_won_once_per_interval(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    with Session(db) as session, session.begin():
        Boss(session, schema).create_queue("q")
    operations = Supervision46(schema)
    a, b = supervisor(db, schema), supervisor(db, schema)

    def claim(s: Supervisor, what: str) -> Any:
        if what == "monitor":
            return s._in_transaction(operations.claim_monitor(["q"], 2))
        if what == "maintain":
            return s._in_transaction(operations.claim_maintain(["q"], 2))
        return s._in_transaction(operations.claim(what, 2))

    for what in ("monitor", "maintain", "flow_on", "bam_on"):
        first = claim(a, what)
        assert first
        assert not claim(b, what)
        assert not claim(a, what)
    # A claim is due again once the interval has passed, by job_now(): stamped 2 s in the past, it is.
    sql(db, f"UPDATE {schema}.queue SET monitor_claim_on = monitor_claim_on - interval '2 seconds'")
    sql(db, f"UPDATE {schema}.version SET flow_on = flow_on - interval '1.9 seconds'")
    assert claim(b, "monitor") == ["q"]
    assert not claim(b, "flow_on")  # 1.9 s is not enough: the rule is >= the interval


def test_the_monitor_claim_falls_back_to_monitor_on(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    with Session(db) as session, session.begin():
        Boss(session, schema).create_queue("q")
    sql(db, f"UPDATE {schema}.queue SET monitor_claim_on = NULL, monitor_on = now()")
    assert supervisor(db, schema, monitor_interval_seconds=60).supervise().monitored == []


def test_the_loser_of_queue_stats_hands_its_claims_back(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    make_jobs(db, schema, "q")
    with db.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _key(db, schema, "queue-stats")})
        result = supervisor(db, schema).supervise()
        holder.execute(text("SELECT pg_advisory_unlock_all()"))
    assert result.monitored == ["q"]
    assert result.counted == []
    row = queue_row(db, schema, "q")
    assert row["monitor_claim_on"] is None
    assert row["monitor_on"] is None
    assert row["queued_count"] == 0


def test_backoff_holds_the_counts_back_but_not_expiry(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    ids = make_jobs(db, schema, "q", expire_in_seconds=1)
    sql(db, f"UPDATE {schema}.job SET started_on = now() - interval '1 minute' WHERE state = 'active'")
    sql(db, f"UPDATE {schema}.version SET monitor_backoff_on = now() + interval '1 hour'")
    result = supervisor(db, schema).supervise()
    assert result.counted == []
    assert result.expired == 1
    assert sql(db, f"SELECT state FROM {schema}.job WHERE id = :id", id=ids["active"]) == [("retry",)]


def test_a_backlog_is_a_warning_persisted_only_when_asked(
    db: Engine, installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = installed_schema
    make_jobs(db, schema, "q")
    with caplog.at_level("WARNING", logger="sqla_boss.supervisor"):
        result = supervisor(db, schema, warning_queue_size=2).supervise()
    assert [(b.name, b.queued, b.threshold) for b in result.backlogs or []] == [("q", 3, 2)]
    assert "queue_backlog" in caplog.text
    assert sql(db, f"SELECT count(*) FROM {schema}.warning") == [(0,)]
    make_jobs(db, schema, "r")
    sql(db, f"UPDATE {schema}.queue SET warning_queued = 1 WHERE name = 'r'")
    supervisor(db, schema, persist_warnings=True).supervise()
    rows = sql(db, f"SELECT type, data FROM {schema}.warning")
    assert rows == [("queue_backlog", {"name": "r", "queuedCount": 3, "warningQueueSize": 1})]


def _key(engine: Engine, schema: str, suffix: str) -> int:
    with engine.connect() as connection:
        database = connection.execute(text("SELECT current_database()")).scalar_one()
    return advisory_lock_key_for(database, schema, suffix)


# ---------------------------------------------------------------------------------------------- expiry


def test_expiry_by_timeout_and_by_heartbeat_with_dead_letters(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    with Session(db) as session, session.begin():
        boss = Boss(session, schema)
        boss.create_queue("dlq", retry_limit=7)
        boss.create_queue("q", retry_limit=1, dead_letter="dlq")
        timed_out = [boss.send("q", {"n": n}, expire_in_seconds=5) for n in range(2)]
        lapsed = boss.send("q", {"n": 3}, heartbeat_seconds=10)
        fine = boss.send("q", {"n": 4}, heartbeat_seconds=60)
    sql(db, f"UPDATE {schema}.job SET state = 'active', started_on = now(), heartbeat_on = now() WHERE name = 'q'")
    sql(
        db,
        f"UPDATE {schema}.job SET started_on = now() - interval '6 seconds' WHERE id = ANY(:ids)",
        ids=[timed_out[0], timed_out[1]],
    )
    sql(db, f"UPDATE {schema}.job SET retry_count = 1 WHERE id = :id", id=timed_out[1])
    sql(db, f"UPDATE {schema}.job SET heartbeat_on = now() - interval '11 seconds' WHERE id = ANY(:ids)", ids=[lapsed])
    result = supervisor(db, schema).supervise()
    assert (result.expired, result.dead_lettered) == (3, 1)
    rows = {
        job_id: (state, output, heartbeat_on)
        for job_id, state, output, heartbeat_on in sql(
            db, f"SELECT id, state, output, heartbeat_on FROM {schema}.job WHERE name = 'q'"
        )
    }
    assert rows[timed_out[0]] == (JobState.retry.value, TIMEOUT_OUTPUT, None)
    assert rows[timed_out[1]] == (JobState.failed.value, TIMEOUT_OUTPUT, None)
    assert rows[lapsed] == (JobState.retry.value, HEARTBEAT_OUTPUT, None)
    assert rows[fine][0] == JobState.active.value
    copies = sql(db, f"SELECT source_id, source_output, retry_limit, data FROM {schema}.job WHERE name = 'dlq'")
    assert copies == [(timed_out[1], TIMEOUT_OUTPUT, 7, {"n": 1})]


# -------------------------------------------------------------------------------------------- deletion


def test_the_retention_sweep_deletes_what_pg_boss_deletes(db: Engine, installed_schema: str) -> None:
    """§8.6's observed list, after one pass with ``deleteAfterSeconds: 1``."""
    schema = installed_schema
    with Session(db) as session, session.begin():
        boss = Boss(session, schema)
        boss.create_queue("q", delete_after_seconds=1)
        boss.create_queue("forever", delete_after_seconds=0)
        sent = {
            key: boss.send("q", {"k": key}, retention_seconds=1)
            for key in ("completed", "failed", "cancelled", "created", "retry", "active")
        }
        sent["deferred"] = boss.send("q", {"k": "deferred"}, retention_seconds=1, start_after=3600)
        old = boss.send("forever", {"k": "old"})
    moves = {
        "completed": "state = 'completed', completed_on = now() - interval '2 seconds'",
        "failed": "state = 'failed', completed_on = now() - interval '2 seconds'",
        "cancelled": "state = 'cancelled', completed_on = now() - interval '2 seconds'",
        "created": "keep_until = now() - interval '1 second'",
        "retry": "state = 'retry', keep_until = now() - interval '1 second'",
        "active": "state = 'active', started_on = now(), keep_until = now() - interval '1 second'",
    }
    for key, what in moves.items():
        sql(db, f"UPDATE {schema}.job SET {what} WHERE id = :id", id=sent[key])
    sql(
        db,
        f"UPDATE {schema}.job SET state = 'completed', completed_on = now() - interval '10 years' WHERE id = :id",
        id=old,
    )
    result = supervisor(db, schema).supervise()
    assert result.deleted == 5
    left = {key for key, job_id in sent.items() if sql(db, f"SELECT 1 FROM {schema}.job WHERE id = :id", id=job_id)}
    assert left == {"deferred", "active"}
    assert sql(db, f"SELECT state FROM {schema}.job WHERE id = :id", id=old) == [("completed",)]
    forever = queue_row(db, schema, "forever")
    assert (forever["retained_count"], forever["total_count"]) == (1, 1)
    q = queue_row(db, schema, "q")
    assert (q["retained_count"], q["total_count"]) == (0, 2)


def test_orphaned_dependencies_are_cleaned_up(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    with Session(db) as session, session.begin():
        Boss(session, schema).create_queue("q")
    gone, kept = uuid.uuid4(), uuid.uuid4()
    with Session(db) as session, session.begin():
        kept_id = Boss(session, schema).send("q", {})
    sql(
        db,
        f"INSERT INTO {schema}.job_dependency VALUES ('q', :gone, 'q', :kept), ('q', :kept_id, 'q', :gone2)",
        gone=gone,
        kept=kept,
        kept_id=kept_id,
        gone2=uuid.uuid4(),
    )
    supervisor(db, schema).supervise()
    assert sql(db, f"SELECT count(*) FROM {schema}.job_dependency") == [(0,)]


# --------------------------------------------------------------------------------------------------- BAM


def _enqueue_builds(db: Engine, schema: str) -> None:
    """What a migration does (§2.3): deferred builds, one per job table, through ``job_table_run_async``."""
    sql(db, f"DROP INDEX {schema}.job_common_i15")
    sql(
        db,
        f"SELECT {schema}.job_table_run_async('rebuild_i15', 46, "
        f"'CREATE INDEX CONCURRENTLY IF NOT EXISTS job_i15 ON {schema}.job (name, created_on)')",
    )
    sql(
        db,
        f"SELECT {schema}.job_table_run_async('broken', 46, "
        f"'CREATE INDEX CONCURRENTLY IF NOT EXISTS job_i99 ON {schema}.job (no_such_column)')",
    )


def test_bam_builds_the_deferred_indexes(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    _enqueue_builds(db, schema)
    s = supervisor(db, schema)
    runs = s.build_indexes_if_due()
    assert runs is not None
    assert [(run.name, run.error is None) for run in runs] == [("rebuild_i15", True), ("broken", False)]
    rows = sql(db, f"SELECT name, status, error, started_on IS NOT NULL, completed_on IS NOT NULL FROM {schema}.bam")
    assert sorted(rows) == [
        ("broken", "failed", 'error: column "no_such_column" does not exist', True, True),
        ("rebuild_i15", "completed", None, True, True),
    ]
    valid = sql(
        db,
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = 'job_common_i15'",
        s=schema,
    )
    assert valid == [(True,)]
    assert s.build_indexes_if_due() is None  # bam_on was claimed for the interval


def test_bam_claims_nothing_while_a_build_is_someones(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    _enqueue_builds(db, schema)
    sql(db, f"UPDATE {schema}.bam SET status = 'in_progress', started_on = now() WHERE name = 'broken'")
    assert supervisor(db, schema).build_indexes() == []
    # Two hours old and run by no backend, its instance died: it is claimed again once nothing is pending.
    sql(db, f"UPDATE {schema}.bam SET started_on = now() - interval '2 hours' WHERE name = 'broken'")
    runs = supervisor(db, schema).build_indexes()
    assert [run.name for run in runs] == ["rebuild_i15", "broken"]


def test_concurrent_bam_claims_never_share_a_command(db: Engine, installed_schema: str) -> None:
    """Two instances claim under ``bamClaim`` at once: the second waits, then sees the first's claim."""
    schema = installed_schema
    _enqueue_builds(db, schema)
    operations = Supervision46(schema)
    first, second = supervisor(db, schema), supervisor(db, schema)
    with db.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _key(db, schema, "bamClaim")})
        claimed: list[Any] = []
        threads = [
            threading.Thread(target=lambda s=s: claimed.append(s._in_transaction(operations.claim_bam_command([]))))
            for s in (first, second)
        ]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: sql(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")[0][0] == 2,
            timeout=10,
        )
        holder.execute(text("SELECT pg_advisory_unlock_all()"))
        for thread in threads:
            thread.join(10)
    # One claimed a command; the other found it in progress (a fresh build is someone's) and claimed nothing.
    assert sorted(command is None for command in claimed) == [False, True]


# ---------------------------------------------------------------------------------------------- instance


def test_the_instance_row(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    s = Supervisor(
        db,
        schema,
        SupervisionSettings.from_options({"instance_name": "py", "instance_heartbeat_seconds": 5}),
        cron_interval_seconds=7,
        workers=lambda: [{"id": "w1", "queue": "q"}],
    )
    s.register()
    row = sql(db, f"SELECT * FROM {schema}.instance")[0]._asdict()
    assert row["id"] == s.instance.id
    assert (row["name"], row["heartbeat_seconds"], row["supervise"], row["schedule"], row["migrate"]) == (
        "py",
        5,
        True,
        True,
        True,
    )
    assert row["workers"] == [{"id": "w1", "queue": "q"}]
    assert row["config"]["cronMonitorIntervalSeconds"] == 7
    assert row["stopped_on"] is None
    sql(db, f"UPDATE {schema}.instance SET heartbeat_on = heartbeat_on - interval '1 minute'")
    s.heartbeat()
    assert sql(db, f"SELECT heartbeat_on > now() - interval '1 minute' FROM {schema}.instance") == [(True,)]
    s.unregister()
    assert sql(db, f"SELECT stopped_on IS NOT NULL FROM {schema}.instance") == [(True,)]
    # A life that went quiet without a stop is a crash restart of the next one of that name and host.
    sql(db, f"UPDATE {schema}.instance SET stopped_on = NULL, heartbeat_on = now() - interval '1 hour'")
    again = Supervisor(
        db, schema, SupervisionSettings.from_options({"instance_name": "py"}), cron_interval_seconds=None
    )
    again.register()
    assert sql(db, f"SELECT crash_restarts FROM {schema}.instance WHERE id = :id", id=again.instance.id) == [(1,)]


# ----------------------------------------------------------------------------------- queue statistics

TIMED = {  # key: (state, created_on, start_after, started_on, completed_on), seconds after T = now - 300 s
    "fast": ("completed", 0, 0, 0.005, 0.009),  # wait 5 ms, run 4 ms: slot 0
    "edge": ("completed", 0, 0, 0.010, 0.0242),  # wait 10 ms: slot 1; run 14.2 ms: slot 2 from 14.14 ms
    "late_start": ("failed", 0, 60, 61, 161),  # wait 1 s (from start_after): slot 14; run 100 s: slot 27
    "long": ("completed", -200_000, -200_000, -200_000, -90),  # created before the window; run: the last slot
    "cancelled": ("cancelled", 0, 0, 1, 2),
    "before": ("completed", -900, -900, -900, -800),  # finished before the window
    "lagging": ("completed", 295, 295, 296, 297),  # finished within the 10 s lag
    "ready": ("created", -1000, -1000, None, None),
}


def make_timed_jobs(engine: Engine, schema: str, name: str) -> None:
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        boss.create_queue(name)
        for key, (state, *stamps) in TIMED.items():
            job_id = boss.send(name, {"key": key})
            created, start_after, started, completed = (
                None if s is None else f"now() - interval '300 s' + interval '{s} s'" for s in stamps
            )
            session.execute(
                text(
                    f"UPDATE {schema}.job SET state = '{state}', created_on = {created}, start_after = {start_after},"
                    f" started_on = {started or 'NULL'}, completed_on = {completed or 'NULL'} WHERE id = :id"
                ),
                {"id": job_id},
            )
        session.execute(
            text(f"UPDATE {schema}.queue SET delta_on = now() - interval '600 s' WHERE name = :n"), {"n": name}
        )


def slots(bins: list[int | None]) -> dict[int, int]:
    assert len(bins) == 48
    return {slot: count for slot, count in enumerate(bins) if count is not None}


def test_persisted_queue_stats_write_throughput_and_snapshots(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    make_timed_jobs(db, schema, "q")
    before = queue_row(db, schema, "q")
    result = supervisor(db, schema, persist_queue_stats=True, monitor_interval_seconds=1).supervise()
    assert result.counted == ["q"]
    row = queue_row(db, schema, "q")
    # created in [delta_on, now - 10 s): all but "long", "before", "ready" and "lagging"
    assert (row["created_delta"], row["completed_delta"], row["failed_delta"]) == (4, 3, 1)
    assert row["delta_on"] == row["monitor_on"] - dt.timedelta(seconds=10)
    assert row["delta_seconds"] == round((row["delta_on"] - before["delta_on"]).total_seconds())
    assert slots(row["wait_bins"]) == {0: 2, 1: 1, 14: 1}
    assert slots(row["run_bins"]) == {0: 1, 2: 1, 27: 1, 47: 1}
    assert row["ready_oldest_seconds"] in (1300, 1301)
    [snapshot] = sql(db, f"SELECT * FROM {schema}.queue_stats")
    snapshot = snapshot._asdict()
    for column in ("created_delta", "completed_delta", "failed_delta", "delta_seconds", "delta_on", "wait_bins"):
        assert snapshot[column] == row[column], column
    assert (snapshot["queued_count"], snapshot["active_count"], snapshot["failed_count"]) == (1, 0, 1)
    assert snapshot["captured_on"] >= row["monitor_on"]
    # The next count starts where this one ended, inclusive: it finds "lagging" there (moved back to that
    # instant, the first window's exclusive end), and nothing else; one more snapshot.
    sql(db, f"UPDATE {schema}.queue SET monitor_claim_on = NULL, monitor_on = now() - interval '1 minute'")
    sql(
        db,
        f"UPDATE {schema}.job SET completed_on = (SELECT delta_on FROM {schema}.queue) WHERE data->>'key' = 'lagging'",
    )
    supervisor(db, schema, persist_queue_stats=True, monitor_interval_seconds=1).supervise()
    again = queue_row(db, schema, "q")
    assert (again["created_delta"], again["completed_delta"], again["failed_delta"]) == (0, 1, 0)  # "lagging"
    assert again["delta_on"] > row["delta_on"]
    assert slots(again["wait_bins"]) == {14: 1}
    assert slots(again["run_bins"]) == {0: 1}  # started after it completed (two clocks): slot 0
    assert sql(db, f"SELECT count(*) FROM {schema}.queue_stats") == [(2,)]


def test_queue_stats_are_not_persisted_unless_asked(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    make_timed_jobs(db, schema, "q")
    before = queue_row(db, schema, "q")
    supervisor(db, schema).supervise()
    row = queue_row(db, schema, "q")
    assert row["monitor_on"] is not None
    columns = ("created_delta", "delta_on", "delta_seconds", "wait_bins", "run_bins", "ready_oldest_seconds")
    assert {c: row[c] for c in columns} == {c: before[c] for c in columns}
    assert sql(db, f"SELECT count(*) FROM {schema}.queue_stats") == [(0,)]


def test_a_window_never_counted_or_too_old_starts_afresh(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    make_timed_jobs(db, schema, "fresh")
    make_timed_jobs(db, schema, "old")
    sql(db, f"UPDATE {schema}.queue SET delta_on = NULL WHERE name = 'fresh'")
    sql(db, f"UPDATE {schema}.queue SET delta_on = now() - interval '2 hours 1 minute' WHERE name = 'old'")
    supervisor(db, schema, persist_queue_stats=True).supervise()
    for name in ("fresh", "old"):
        row = queue_row(db, schema, name)
        assert (row["created_delta"], row["completed_delta"], row["failed_delta"], row["delta_seconds"]) == (
            0,
            0,
            0,
            None,
        )
        assert row["wait_bins"] == row["run_bins"] == [None] * 48
        assert row["delta_on"] == row["monitor_on"] - dt.timedelta(seconds=10)


def partitions(engine: Engine, schema: str) -> list[str]:
    rows = sql(
        engine,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid ="
        " i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace WHERE n.nspname = :s AND p.relname ="
        " 'queue_stats' ORDER BY 1",
        s=schema,
    )
    return [name for (name,) in rows]


def test_queue_stats_partitions_are_made_and_expired(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    [(today,)] = sql(db, f"SELECT ({schema}.job_now() AT TIME ZONE 'UTC')::date")

    def day(offset: int) -> str:
        return f"queue_stats_{today + dt.timedelta(days=offset):%Y%m%d}"

    def make(name: str, offset: int) -> None:
        start_on = today + dt.timedelta(days=offset)
        sql(
            db,
            f"CREATE TABLE {schema}.{name} PARTITION OF {schema}.queue_stats FOR VALUES FROM"
            f" ('{start_on} 00:00:00+00') TO ('{start_on + dt.timedelta(days=1)} 00:00:00+00')",
        )

    sql(db, f"DROP TABLE {schema}.{day(1)}")
    make(day(-4), -4)
    make(day(-3), -3)
    make("queue_stats_kept", -30)  # not a day's name: never dropped
    supervisor(db, schema, persist_queue_stats=True, queue_stat_retention_days=3).supervise()
    assert partitions(db, schema) == sorted([day(-3), day(0), day(1), "queue_stats_kept"])
    # Without persist_queue_stats nothing is made or dropped.
    sql(db, f"DROP TABLE {schema}.{day(1)}")
    supervisor(db, schema, queue_stat_retention_days=1).supervise()
    assert partitions(db, schema) == sorted([day(-3), day(0), "queue_stats_kept"])


def test_bad_queue_stats_settings_are_refused_before_anything_is_written(db: Engine, installed_schema: str) -> None:
    schema = installed_schema
    for options in (
        {"queue_stat_retention_days": 0},
        {"queue_stat_retention_days": 366},
        {"queue_stat_retention_days": 1.5},
        {"persist_queue_stats": "yes"},
        {"persist_queue_stats": True, "queue_stat_retention_days": -1},
    ):
        with pytest.raises(InvalidOptionError):
            supervisor(db, schema, **options).supervise()
    assert sql(db, f"SELECT count(*) FROM {schema}.queue_stats") == [(0,)]
    assert sql(db, f"SELECT count(*) FROM {schema}.instance") == [(0,)]
    settings = SupervisionSettings.from_options({"persist_queue_stats": True, "queue_stat_retention_days": 365})
    assert settings.config()["persistQueueStats"] is True
    assert settings.config()["queueStatRetentionDays"] == 365
    s = Supervisor(db, schema, settings, cron_interval_seconds=None)
    s.register()
    assert sql(db, f"SELECT persist_queue_stats, config->'queueStatRetentionDays' FROM {schema}.instance") == [
        (True, 365)
    ]


# ----------------------------------------------------------------------------------------- the timetable


def test_async_supervisor_runs_its_timetable_until_stopped(
    database_url: Any, db: Engine, installed_schema: str
) -> None:
    schema = installed_schema
    make_jobs(db, schema, "q")

    async def main() -> None:
        engine = create_async_engine(database_url.set(drivername="postgresql+psycopg"))
        settings = SupervisionSettings.from_options({"supervise_interval_seconds": 1, "monitor_interval_seconds": 1})
        supervisor = AsyncSupervisor(engine, schema, settings, cron_interval_seconds=None)
        stopping = AEvent()
        task = asyncio.create_task(supervisor.run(stopping))
        deadline = asyncio.get_running_loop().time() + 30
        while len(queue_row(db, schema, "q")["ready_history"]) < 2:
            assert asyncio.get_running_loop().time() < deadline, "the supervisor did not monitor twice"
            await asyncio.sleep(0.1)
        stopping.set()
        await asyncio.wait_for(task, 30)
        await engine.dispose()

    asyncio.run(main())
    assert sql(db, f"SELECT stopped_on IS NOT NULL FROM {schema}.instance") == [(True,)]
    assert sql(db, f"SELECT flow_on IS NOT NULL, bam_on IS NOT NULL FROM {schema}.version") == [(True, True)]


def test_a_failing_tick_is_logged_and_the_loop_goes_on(
    db: Engine, installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = installed_schema

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("no workers to show")

    options = {"flow_interval_seconds": 1, "instance_heartbeat_seconds": 1}
    s = Supervisor(db, schema, SupervisionSettings.from_options(options), cron_interval_seconds=None, workers=broken)
    stopping = Event()
    thread = threading.Thread(target=s.run, args=(stopping,))
    with caplog.at_level("WARNING", logger="sqla_boss.supervisor"):
        thread.start()
        wait_until(lambda: caplog.text.count("heartbeat tick failed: RuntimeError: no workers") >= 2, timeout=30)
        stopping.set()
        thread.join(30)
    assert not thread.is_alive()
    assert sql(db, f"SELECT flow_on IS NOT NULL FROM {schema}.version") == [(True,)]
