"""Schema version 46 (pg-boss 12.38): our install against pg-boss 12.38's own, pg-boss 12.38 on ours, and the
upgrade from version 24 with the data, proven by the real pg-boss 12.38 fetching what was moved."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from catalog import differences, snapshot
from pgboss import (  # noqa: F401  (the fixtures pgboss12 and pgboss_install)
    PgBoss,
    call,
    node_connection_string,
    pgboss12_fixture,
    pgboss_install_fixture,
    start,
)
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from support import drop_schema, unique_name, wait_until

from sqla_boss import Boss, Maintenance, migrations
from sqla_boss.errors import InvalidOptionError, MigrationError, SchemaVersionError
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map
from sqla_boss.v46 import models as v46

pytestmark = pytest.mark.pgboss

QUIET = start(supervise=False, schedule=False, registerInstance=False)
"""A pg-boss 12.38 that only does what the actions ask (it still installs or migrates: ``migrate`` is on)."""

POLICIES = ("standard", "short", "singleton", "stately", "exclusive", "key_strict_fifo")
EVERY_KIND_OF_QUEUE = [
    *(call("createQueue", f"q_{policy}", {"policy": policy}) for policy in POLICIES),
    call("createQueue", "q_partitioned", {"partition": True}),
    call("createQueue", "q_partitioned_fifo", {"partition": True, "policy": "key_strict_fifo"}),
]
CLOCKS = ("cron_on", "bam_on", "flow_on", "reindex_on", "monitor_backoff_on")


def comparable(engine: Engine, schema: str) -> dict[str, Any]:
    """The catalog of ``schema``, with the version row's clock readings left out (pg-boss stamps ``bam_on``
    when it starts)."""
    with engine.connect() as connection:
        snap = snapshot(connection, schema)
    snap["version"] = [{k: v for k, v in row.items() if k not in CLOCKS} for row in snap["version"] or []]
    return snap


@pytest.fixture
def two_databases(engine: Engine, database_url: URL) -> Iterator[tuple[URL, URL]]:
    """Two new, empty databases, so both installs can use the default schema name ``pgboss``."""
    names = [unique_name("sqla_boss_v46"), unique_name("sqla_boss_v46")]
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as connection:
        for name in names:
            connection.execute(text(f"CREATE DATABASE {quote_identifier(name)}"))
    try:
        yield database_url.set(database=names[0]), database_url.set(database=names[1])
    finally:
        with autocommit.connect() as connection:
            for name in names:
                connection.execute(text(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)"))


def on(pgboss12: PgBoss, url: URL) -> PgBoss:
    return dataclasses.replace(pgboss12, connection_string=node_connection_string(url))


# ---------------------------------------------------------------------------------- install and adopt


def test_our_install_is_pg_boss_12s_own_in_a_custom_schema(engine: Engine, pgboss12: PgBoss) -> None:
    ours, theirs = unique_name("ours46"), unique_name("theirs46")
    try:
        assert migrations.upgrade(engine, schema=ours, pgboss=12) is migrations.Outcome.installed
        pgboss12.run(theirs, [QUIET])
        assert differences(comparable(engine, ours), comparable(engine, theirs), names=("ours", "pg-boss")) == []
        for schema in (ours, theirs):  # pg-boss makes every kind of queue on both: the catalogs stay equal
            pgboss12.run(schema, [start(supervise=False, schedule=False, migrate=False), *EVERY_KIND_OF_QUEUE])
        assert differences(comparable(engine, ours), comparable(engine, theirs), names=("ours", "pg-boss")) == []
    finally:
        drop_schema(engine, ours)
        drop_schema(engine, theirs)


def test_our_install_is_pg_boss_12s_own_in_the_pgboss_schema(two_databases: tuple[URL, URL], pgboss12: PgBoss) -> None:
    ours_url, theirs_url = two_databases
    ours, theirs = (create_engine(url, poolclass=NullPool) for url in two_databases)
    try:
        migrations.upgrade(ours, pgboss=12)
        on(pgboss12, theirs_url).run("pgboss", [QUIET])
        assert differences(comparable(ours, "pgboss"), comparable(theirs, "pgboss"), names=("ours", "pg-boss")) == []
        on(pgboss12, ours_url).run("pgboss", [QUIET, *EVERY_KIND_OF_QUEUE])
        on(pgboss12, theirs_url).run("pgboss", [QUIET, *EVERY_KIND_OF_QUEUE])
        assert differences(comparable(ours, "pgboss"), comparable(theirs, "pgboss"), names=("ours", "pg-boss")) == []
    finally:
        ours.dispose()
        theirs.dispose()


def test_pg_boss_12_starts_on_our_install_without_migrating_and_finds_only_our_own_function_bodies(
    engine: Engine, schema_name: str, pgboss12: PgBoss
) -> None:
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    before = comparable(engine, schema_name)
    # migrate: false refuses any version but 46; detectSchemaDrift diffs the catalog with pg-boss's manifest.
    (_, drift) = pgboss12.run(
        schema_name, [start(supervise=False, schedule=False, migrate=False), call("detectSchemaDrift")]
    )
    assert {key: value for key, value in drift.items() if key not in ("ok", "mismatchedFunctions")} == {
        "missingTables": [],
        "missing": [],
        "building": [],
        "invalid": [],
        "extraIndexes": [],
        "mismatched": [],
        "missingFunctions": [],
        "columnDrift": [],
        "constraintDrift": [],
        "enumDrift": None,
    }
    # Our plpgsql is written in our own words: only its text differs (docs/differences.md).
    assert {entry["name"] for entry in drift["mismatchedFunctions"]} <= {
        "create_queue",
        "delete_queue",
        "job_now",
        "job_table_format",
        "job_table_run",
        "job_table_run_async",
    }
    pgboss12.run(schema_name, [QUIET])  # migrate: true (the default) finds nothing to do
    assert differences(comparable(engine, schema_name), before) == []
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {schema_name}.bam")).scalar_one() == 0


def test_we_adopt_what_pg_boss_12_installed_without_changing_it(
    engine: Engine, schema_name: str, pgboss12: PgBoss
) -> None:
    pgboss12.run(schema_name, [QUIET, *EVERY_KIND_OF_QUEUE])
    before = comparable(engine, schema_name)
    assert migrations.upgrade(engine, schema=schema_name, pgboss=12) is migrations.Outcome.adopted
    assert differences(comparable(engine, schema_name), before) == []
    with engine.connect() as connection:
        assert migrations.current_revision(connection, schema_name) == "pgboss_v46"


def test_the_models_read_pg_boss_12s_rows(engine: Engine, schema_name: str, pgboss12: PgBoss) -> None:
    [_, _, job_id, _] = pgboss12.run(
        schema_name,
        [
            QUIET,
            call("createQueue", "q_part", {"partition": True, "policy": "exclusive"}),
            call("send", "q_part", {"n": 1}, {"singletonKey": "k", "group": {"id": "g1", "tier": "gold"}}),
            call("schedule", "q_part", "*/5 * * * *", {"n": 2}, {"key": "every-five"}),
        ],
    )
    translated = engine.execution_options(schema_translate_map=schema_translate_map(schema_name))
    with Session(translated) as session:
        job = session.get(v46.Job, ("q_part", uuid.UUID(job_id)))
        assert job is not None
        assert (job.data, job.policy, job.group_id, job.group_tier) == (
            {"n": 1},
            v46.QueuePolicy.exclusive,
            "g1",
            "gold",
        )
        assert job.queue.table_name.startswith("j")
        assert job.queue.partition
        [schedule] = job.queue.schedules
        assert (schedule.key, schedule.kind, schedule.data) == ("every-five", "cron", {"n": 2})


# ------------------------------------------------------------------------------------------ choosing


def test_the_default_stays_version_24_and_refuses_a_version_46_schema(engine: Engine, schema_name: str) -> None:
    assert migrations.upgrade(engine, schema=schema_name) is migrations.Outcome.installed
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version FROM {schema_name}.version")).scalar_one() == 24
    drop_schema(engine, schema_name)
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    with pytest.raises(SchemaVersionError, match=r"version 46.*--pgboss 12"):
        migrations.upgrade(engine, schema=schema_name)
    with pytest.raises(InvalidOptionError, match="pgboss must be 10 or 12"):
        migrations.upgrade(engine, schema=schema_name, pgboss=11)


def test_version_46_does_not_go_back_to_24_but_goes_to_base(engine: Engine, schema_name: str) -> None:
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    with pytest.raises(MigrationError, match="does not take a pg-boss schema back from version 46 to 24"):
        migrations.downgrade(engine, schema=schema_name, revision="pgboss_v24")
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version FROM {schema_name}.version")).scalar_one() == 46
    assert migrations.downgrade(engine, schema=schema_name) is migrations.Outcome.removed
    with engine.connect() as connection:
        assert connection.execute(text("SELECT to_regnamespace(:s)"), {"s": schema_name}).scalar() is None


@pytest.mark.parametrize("version", [25, 38, 45])
def test_a_schema_of_an_older_pg_boss_11_or_12_is_refused_with_the_way_to_46(
    engine: Engine, schema_name: str, version: int
) -> None:
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {schema_name}.version SET version = :v"), {"v": version})
        connection.execute(text(f"DROP TABLE public.{migrations.version_table_name(schema_name)}"))
    for pgboss in (10, 12):
        with pytest.raises(SchemaVersionError, match=rf"version {version}.*start pg-boss 12\.38 once on it"):
            migrations.upgrade(engine, schema=schema_name, pgboss=pgboss)


def test_alembic_x_pgboss_12_upgrades_head_to_46_and_plain_head_stays_at_24(
    engine: Engine, schema_name: str, database_url: URL
) -> None:
    from test_cli import alembic, url_string

    url = url_string(database_url)
    done = alembic("-x", f"schema={schema_name}", "upgrade", "head", database_url=url)
    assert done.returncode == 0, done
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version FROM {schema_name}.version")).scalar_one() == 24
    done = alembic("-x", f"schema={schema_name}", "-x", "pgboss=12", "upgrade", "head", database_url=url)
    assert done.returncode == 0, done
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version FROM {schema_name}.version")).scalar_one() == 46
        assert migrations.current_revision(connection, schema_name) == "pgboss_v46"


# ------------------------------------------------------------------------------- 24 -> 46 with the data


JOB_COLUMNS = (
    "id, name, priority, data, state::text AS state, retry_limit, retry_count, retry_delay, retry_backoff, "
    "singleton_key, singleton_on, start_after, created_on, started_on, completed_on, keep_until, output, dead_letter"
)


def jobs_of(engine: Engine, schema: str, table: str = "job") -> dict[uuid.UUID, dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT {JOB_COLUMNS} FROM {schema}.{table}")).mappings()
        return {row["id"]: dict(row) for row in rows}


def a_version_24_schema_with_everything(engine: Engine, schema: str) -> dict[str, Any]:
    """Queues of every version-24 policy with a dead letter; jobs in every state; archived jobs; a schedule and
    a subscription. Returns the ids by what they are."""
    migrations.upgrade(engine, schema=schema)
    translated = engine.execution_options(schema_translate_map=schema_translate_map(schema))
    ids: dict[str, Any] = {}
    with Session(translated) as session:
        boss = Boss(session, schema)
        boss.create_queue("dlq")
        boss.create_queue("work", retry_limit=3, retention_minutes=90, expire_in_seconds=45, dead_letter="dlq")
        boss.create_queue("shorts", policy="short")
        ids["queued"] = [boss.send("work", {"n": n, "text": "é\u2603"}, priority=n % 3) for n in range(20)]
        ids["deferred"] = boss.send("work", {"later": True}, start_after=3600)
        ids["throttled"] = boss.send_throttled("shorts", {"slot": 1}, seconds=600, key="k1")
        ids["short"] = boss.send("shorts", {"s": 1}, singleton_key="only")
        session.commit()
        fetched = boss.fetch("work", batch_size=4, priority=False)  # the oldest four: queued ones
        for what, job in zip(
            ("active", "completed", "failed", "retry"), sorted(fetched, key=lambda j: j.created_on), strict=True
        ):
            ids["queued"].remove(job.id)
            ids[what] = job.id
        boss.complete("work", ids["completed"], {"done": True})
        boss.fail("work", [ids["failed"], ids["retry"]], {"boom": 1})
        session.commit()
        with engine.begin() as connection:  # "failed" still has retries: spend them so it ends failed
            connection.execute(
                text(f"UPDATE {schema}.job SET retry_limit = retry_count WHERE id = :id"), {"id": ids["failed"]}
            )
        ids["cancelled"] = ids["queued"].pop()
        boss.cancel("work", ids["cancelled"])
        boss.schedule("work", "0 * * * *", {"cron": True}, tz="Europe/Paris")
        boss.subscribe("events", "work")
        session.commit()
    with engine.begin() as connection:  # archive a finished job and a queued one, as pg-boss 10 did
        for what in ("archived_done", "archived_queued"):
            source = ids["queued"].pop()
            if what == "archived_done":
                connection.execute(
                    text(f"UPDATE {schema}.job SET state = 'completed', completed_on = NULL WHERE id = :id"),
                    {"id": source},
                )
            connection.execute(
                text(
                    f"INSERT INTO {schema}.archive SELECT *, now() - interval '1 hour' FROM {schema}.job WHERE id = :id"
                ),
                {"id": source},
            )
            connection.execute(text(f"DELETE FROM {schema}.job WHERE id = :id"), {"id": source})
            ids[what] = source
    return ids


def test_24_is_upgraded_to_46_in_place_with_every_job_and_pg_boss_12_runs_each_queued_one_once(
    engine: Engine, schema_name: str, pgboss12: PgBoss
) -> None:
    ids = a_version_24_schema_with_everything(engine, schema_name)
    before = jobs_of(engine, schema_name)
    archived = jobs_of(engine, schema_name, "archive")
    carried: list[Any] = []
    outcome = migrations.upgrade(engine, schema=schema_name, pgboss=12, carried=carried)
    assert outcome is migrations.Outcome.migrated
    [report] = carried
    assert (report.queues, report.jobs, report.archived, report.archived_left) == (3, len(before), 1, 1)
    assert (report.schedules, report.subscriptions, report.duplicate_jobs) == (1, 1, 0)

    after = jobs_of(engine, schema_name)
    assert set(after) == set(before) | {ids["archived_done"]}
    for job_id, row in before.items():
        assert after[job_id] == row  # id, data, output, state, retries, key and slot, every timestamp
    done = archived[ids["archived_done"]]
    assert after[ids["archived_done"]]["state"] == "completed"
    assert after[ids["archived_done"]]["completed_on"] is not None
    assert after[ids["archived_done"]]["data"] == done["data"]
    with engine.connect() as connection:
        queue = connection.execute(text(f"SELECT * FROM {schema_name}.queue WHERE name = 'work'")).mappings().one()
        assert (queue["retry_limit"], queue["retention_seconds"], queue["expire_seconds"], queue["dead_letter"]) == (
            3,
            5400,
            45,
            "dlq",
        )
        assert (queue["policy"], queue["table_name"], queue["deletion_seconds"]) == ("standard", "job_common", 604800)
        assert (
            connection.execute(
                text(f"SELECT policy FROM {schema_name}.job WHERE id = :id"), {"id": ids["short"]}
            ).scalar_one()
            == "short"
        )
        expire = (
            connection.execute(text(f"SELECT DISTINCT expire_seconds FROM {schema_name}.job WHERE name = 'work'"))
            .scalars()
            .all()
        )
        assert expire == [45]
        schedule = connection.execute(text(f"SELECT key, kind, cron, timezone FROM {schema_name}.schedule")).one()
        assert tuple(schedule) == ("", "cron", "0 * * * *", "Europe/Paris")

    runnable = {
        job_id
        for job_id, row in before.items()
        if row["name"] == "work"
        and row["state"] in ("created", "retry")
        and row["start_after"] <= dt.datetime.now(dt.timezone.utc)
    }
    assert ids["retry"] in runnable
    assert ids["deferred"] not in runnable
    runnable_shorts = {ids["short"], ids["throttled"]}
    results = pgboss12.run(
        schema_name,
        [
            QUIET,  # migrate: true, as users start it: it finds version 46 and migrates nothing
            call("fetch", "work", {"batchSize": 100}),
            call("fetch", "work", {"batchSize": 100}),
            call("getJobById", "work", str(ids["archived_done"])),
            call("getJobById", "work", str(ids["archived_queued"])),
            call("fetch", "shorts", {"batchSize": 100}),
            call("fetch", "shorts", {"batchSize": 100}),
            call("fetch", "dlq", {"batchSize": 100}),
            call("detectSchemaDrift"),
            call("fetch", "work", {"batchSize": 100, "ignoreStartAfter": True}),  # the deferred one
        ],
    )
    fetched = [uuid.UUID(job["id"]) for job in results[1]]
    assert len(fetched) == len(set(fetched))
    assert set(fetched) == runnable
    assert results[2] == []
    assert {uuid.UUID(job["id"]) for job in results[5]} == runnable_shorts
    assert (len(results[5]), results[6], results[7]) == (2, [], [])
    drift = results[8]
    assert [
        key for key, value in drift.items() if value not in ([], None) and key not in ("ok", "mismatchedFunctions")
    ] == []
    for job in results[1]:
        assert job["data"] == before[uuid.UUID(job["id"])]["data"]
    assert results[3]["state"] == "completed"
    assert results[3]["id"] == str(ids["archived_done"])
    assert results[4] is None
    assert [(uuid.UUID(job["id"]), job["data"]) for job in results[9]] == [(ids["deferred"], {"later": True})]
    fetched.append(ids["deferred"])  # every moved queued job of every queue, each once
    pgboss12.run(
        schema_name,
        [
            QUIET,
            call("complete", "work", [str(job_id) for job_id in fetched]),
            call("complete", "shorts", [str(job_id) for job_id in runnable_shorts]),
        ],
    )
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version FROM {schema_name}.version")).scalar_one() == 46
        assert connection.execute(text(f"SELECT count(*) FROM {schema_name}.bam")).scalar_one() == 0
        states = dict(
            connection.execute(
                text(f"SELECT id, state::text FROM {schema_name}.job WHERE id = ANY(:ids)"),
                {"ids": [*fetched, *runnable_shorts]},
            ).all()
        )
    assert len(states) == len(fetched) + len(runnable_shorts)
    assert set(states.values()) == {"completed"}


def test_the_upgrade_is_one_transaction_of_the_callers_and_a_rollback_leaves_24_as_it_was(
    engine: Engine, schema_name: str
) -> None:
    a_version_24_schema_with_everything(engine, schema_name)
    before = jobs_of(engine, schema_name)
    with engine.connect() as connection:
        transaction = connection.begin()
        assert migrations.upgrade(connection, schema=schema_name, pgboss=12) is migrations.Outcome.migrated
        assert connection.execute(text(f"SELECT version FROM {schema_name}.version")).scalar_one() == 46
        transaction.rollback()
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version FROM {schema_name}.version")).scalar_one() == 24
        assert migrations.current_revision(connection, schema_name) == "pgboss_v24"
        leftovers = connection.execute(text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'sqla_boss_v24_%'"))
        assert leftovers.all() == []
    assert jobs_of(engine, schema_name) == before


def test_a_job_a_pg_boss_10_is_still_sending_when_the_upgrade_starts_is_carried_not_lost(
    engine: Engine, schema_name: str
) -> None:
    """The upgrade locks version 24's tables before it reads them, so a pg-boss 10 transaction still open makes
    it wait, and the job that transaction commits is copied; read first, it would be dropped with the old
    schema after its producer was told it was sent."""
    ids = a_version_24_schema_with_everything(engine, schema_name)
    before = set(jobs_of(engine, schema_name))
    outcome: dict[str, BaseException | None] = {}

    def upgrade() -> None:
        try:
            migrations.upgrade(engine, schema=schema_name, pgboss=12)
            outcome["error"] = None
        except BaseException as error:
            outcome["error"] = error

    with engine.connect() as producer:
        producer.begin()
        late = producer.execute(  # as pg-boss 10 sends, with version 24's expire_in; not committed yet
            text(f"INSERT INTO {schema_name}.job (name, data, expire_in) VALUES ('work', '{{}}', '1 min') RETURNING id")
        ).scalar_one()
        upgrading = threading.Thread(target=upgrade)
        upgrading.start()
        wait_until(lambda: upgrade_waits_for_a_lock(engine), what="the upgrade waiting for the producer")
        producer.commit()
    upgrading.join(timeout=60)
    assert outcome == {"error": None}
    assert set(jobs_of(engine, schema_name)) == before | {ids["archived_done"], late}


def upgrade_waits_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND (query LIKE 'LOCK TABLE%' OR query LIKE 'DROP SCHEMA \"sqla_boss_v24_%')"
                )
            ).scalar_one()
        )


def test_boss_and_the_command_line_know_version_46_and_say_what_runs_it(
    engine: Engine, schema_name: str, run_in: Any
) -> None:
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    translated = engine.execution_options(schema_translate_map=schema_translate_map(schema_name))
    with Session(translated) as session:
        assert Boss(session, schema_name).version() == 46  # the repository runs it
        assert Boss(session, schema_name).get_queues() == []
    with pytest.raises(SchemaVersionError, match=r"version 46.*runs version 24 .*the supervisor's \(Supervisor"):
        Maintenance(engine, schema_name).maintain()
    status, out, _ = run_in(schema_name, "current")
    assert status == 0
    assert "pg-boss version 46 (pg-boss 12.38), revision pgboss_v46" in out
    status, out, err = run_in(schema_name, "migrate")
    assert status == 2
    assert "--pgboss 12" in out + err


def test_migrate_pgboss_12_says_to_stop_pg_boss_10_first_and_what_it_carried(
    engine: Engine, schema_name: str, run_in: Any
) -> None:
    a_version_24_schema_with_everything(engine, schema_name)
    status, out, err = run_in(schema_name, "migrate", "--pgboss", "12")
    assert (status, err) == (0, "")
    first, second = out.splitlines()
    assert "every pg-boss 10 instance on it (Node or sqla_boss) must be stopped first" in first
    assert second.startswith(
        f"sqla-boss: upgraded schema '{schema_name}' to pg-boss schema version 46: carried 3 queue(s)"
    )
    assert "left behind 1 archived job(s)" in second
    status, out, err = run_in(schema_name, "migrate", "--pgboss", "11")
    assert status == 2
    assert "pgboss must be 10 or 12" in err


@pytest.fixture
def run_in(database_url: URL) -> Any:
    """``sqla-boss ARGS --schema SCHEMA`` as a process: (exit status, stdout, stderr)."""
    environment = {**os.environ, "DATABASE_URL": database_url.render_as_string(hide_password=False)}

    def run(schema: str, *args: str) -> tuple[int, str, str]:
        command = [sys.executable, "-m", "sqla_boss.cli", *args, "--schema", schema]
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300, check=False)
        return done.returncode, done.stdout, done.stderr

    return run


def test_the_upgrade_forgets_the_fetch_index_of_version_24_which_went_with_its_job_table(
    engine: Engine, schema_name: str
) -> None:
    migrations.upgrade(engine, schema=schema_name)
    migrations.upgrade(engine, schema=schema_name, fetch_index=True)
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    with engine.connect() as connection:
        assert migrations.current_revision(connection, schema_name, fetch_index=True) is None
        assert migrations.current_revision(connection, schema_name) == "pgboss_v46"


def test_our_functions_do_what_pg_boss_12s_do(engine: Engine, pgboss12: PgBoss) -> None:
    """Our plpgsql is our own text: the same calls on our install and on pg-boss's give the same results, rows
    and errors, including pg-boss deleting its queues through our delete_queue."""
    ours, theirs = unique_name("ours46"), unique_name("theirs46")
    try:
        migrations.upgrade(engine, schema=ours, pgboss=12)
        pgboss12.run(theirs, [QUIET])
        for schema in (ours, theirs):
            pgboss12.run(schema, [start(supervise=False, schedule=False, migrate=False), *EVERY_KIND_OF_QUEUE])

        def outcomes(schema: str) -> list[Any]:
            results: list[Any] = []
            calls = [
                (
                    "SELECT {s}.job_table_format(:c, :t)",
                    {"c": "CREATE INDEX job_i5 ON {s}.job (name) -- .job_x myjob_i1", "t": "job_common"},
                ),
                ("SELECT {s}.job_table_format(:c, :t)", {"c": "ALTER TABLE {s}.job ADD x; job_i12_y", "t": "Odd Name"}),
                ("SELECT {s}.job_table_run_async('a', 7, :c)", {"c": "CREATE INDEX job_i99 ON {s}.job (name)"}),
                ("SELECT {s}.job_table_run_async('b', 8, :c, NULL, 'q_partitioned')", {"c": "X {s}.job"}),
                ("SELECT {s}.job_table_run_async('c', 8, :c, NULL, 'q_short')", {"c": "X {s}.job"}),
                ("SELECT {s}.job_table_run_async('d', 8, :c, 'tbl', NULL)", {"c": "X {s}.job"}),
                ("SELECT {s}.job_table_run_async('e', 8, :c, NULL, 'nope')", {"c": "X {s}.job"}),
                ("SELECT {s}.job_table_run(:c)", {"c": "COMMENT ON TABLE {s}.job IS 'seen'"}),
                (
                    "SELECT {s}.job_table_run(:c, NULL, 'q_partitioned_fifo')",
                    {"c": "COMMENT ON TABLE {s}.job IS 'one'"},
                ),
                ("SELECT {s}.delete_queue('q_nope')", {}),
                ("SELECT {s}.delete_queue('q_partitioned')", {}),
                ("SELECT {s}.delete_queue('q_short')", {}),
                ("SELECT {s}.create_queue('q_defaults', '{{\"policy\": \"standard\"}}')", {}),
                ('SELECT {s}.create_queue(\'q_defaults\', \'{{"policy": "short", "retryLimit": 9}}\')', {}),
            ]
            for sql, params in calls:
                bound = {key: value.replace("{s}", schema) for key, value in params.items()}
                try:
                    with engine.begin() as connection:
                        results.append(connection.execute(text(sql.format(s=schema)), bound).scalar())
                except Exception as error:
                    results.append(type(getattr(error, "orig", error)).__name__)
            with engine.connect() as connection:
                results.append(
                    [
                        tuple(row)
                        for row in connection.execute(
                            text(
                                f"SELECT name, version, status, queue, table_name, command FROM {schema}.bam "
                                "ORDER BY name, table_name"
                            )
                        )
                    ]
                )
                results.append(
                    connection.execute(
                        text(
                            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
                            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s "
                            "AND obj_description(c.oid, 'pg_class') IS NOT NULL ORDER BY 1"
                        ),
                        {"s": schema},
                    ).all()
                )
                results.append(
                    connection.execute(
                        text(
                            f"SELECT name, policy, retry_limit, expire_seconds, retention_seconds, deletion_seconds, "
                            f"partition, table_name FROM {schema}.queue ORDER BY name"
                        )
                    ).all()
                )
            return [_without(result, schema) for result in results]

        assert outcomes(ours) == outcomes(theirs)
        assert differences(comparable(engine, ours), comparable(engine, theirs), names=("ours", "pg-boss")) == []
    finally:
        drop_schema(engine, ours)
        drop_schema(engine, theirs)


def _without(value: Any, schema: str) -> Any:
    """``value`` with the schema's name replaced by ``<S>`` in every string, for comparing two schemas."""
    if isinstance(value, str):
        return value.replace(schema, "<S>")
    if isinstance(value, (list, tuple)):
        return [_without(item, schema) for item in value]
    if hasattr(value, "_mapping"):
        return [_without(item, schema) for item in tuple(value)]
    return value


def test_an_upgraded_schema_has_the_catalog_of_a_fresh_install(engine: Engine, schema_name: str) -> None:
    a_version_24_schema_with_everything(engine, schema_name)
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    fresh = unique_name("fresh46")
    try:
        migrations.upgrade(engine, schema=fresh, pgboss=12)
        assert (
            differences(comparable(engine, schema_name), comparable(engine, fresh), names=("upgraded", "fresh")) == []
        )
    finally:
        drop_schema(engine, fresh)
