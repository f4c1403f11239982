"""The driver runs the real pg-boss 12.38.0 (``pgboss12``, tests/pgboss.py) beside 10.4.2: it installs its schema
(version 46) and works jobs, hands out its construction SQL, and reports its own fresh install drift-free."""

from __future__ import annotations

import pytest
from pgboss import (  # noqa: F401  (the fixtures pgboss12, pgboss and pgboss_install)
    PGBOSS12_PACKAGE,
    PGBOSS12_VERSION,
    PGBOSS_PACKAGE,
    PGBOSS_VERSION,
    PgBoss,
    call,
    exports,
    listen,
    pgboss12_fixture,
    pgboss_fixture,
    pgboss_install_fixture,
    ref,
    start,
    static,
)
from sqlalchemy import Engine, text

pytestmark = pytest.mark.pgboss

QUIET = start(supervise=False, schedule=False)


def test_each_runner_loads_its_own_package(pgboss: PgBoss, pgboss12: PgBoss, schema_name: str) -> None:
    [ten] = pgboss.run(schema_name, [exports()])
    [twelve] = pgboss12.run(schema_name, [exports()])
    assert (ten["package"], ten["version"]) == (PGBOSS_PACKAGE, PGBOSS_VERSION) == (pgboss.package, pgboss.version)
    assert (twelve["package"], twelve["version"]) == (PGBOSS12_PACKAGE, PGBOSS12_VERSION)
    assert (pgboss12.package, pgboss12.version) == (PGBOSS12_PACKAGE, PGBOSS12_VERSION)
    # 10.x: a default-exported class with statics; 12.x: named exports, PgBoss among them.
    assert ten["exports"] == ["default"]
    assert "getConstructionPlans" in ten["statics"]
    assert {"PgBoss", "getConstructionPlans", "getMigrationPlans"} <= set(twelve["exports"])


def test_pg_boss_12_installs_version_46_and_round_trips_a_job(
    engine: Engine, pgboss12: PgBoss, schema_name: str
) -> None:
    output = pgboss12.run_raw(
        schema_name,
        [
            listen("stopped"),
            QUIET,
            call("schemaVersion"),
            call("createQueue", "q"),
            call("send", "q", {"n": 1}),
            call("fetch", "q"),
            call("complete", "q", ref(5, 0, "id")),
            call("getJobById", "q", ref(4)),
            call("stop", {"graceful": False}),
        ],
    )
    _, _, version, _, job_id, fetched, completed, job, _ = output["results"]
    assert version == 46
    assert [(row["id"], row["name"], row["data"]) for row in fetched] == [(job_id, "q", {"n": 1})]
    assert completed["affected"] == 1
    assert (job["state"], job["id"]) == ("completed", job_id)
    assert [event["event"] for event in output["events"]] == ["stopped"]  # no errors, no warnings
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version FROM {schema_name}.version")).scalar_one() == 46
        state = connection.execute(text(f"SELECT state::text FROM {schema_name}.job WHERE id = :id"), {"id": job_id})
        assert state.scalar_one() == "completed"


def test_pg_boss_12_gives_its_construction_sql_without_a_database(pgboss12: PgBoss, schema_name: str) -> None:
    [sql] = pgboss12.run(schema_name, [static("getConstructionPlans", schema_name)])
    assert isinstance(sql, str)
    assert "job_common" in sql
    assert f"CREATE SCHEMA IF NOT EXISTS {schema_name}" in sql


def test_pg_boss_12_finds_no_drift_in_its_own_fresh_install(pgboss12: PgBoss, schema_name: str) -> None:
    [_, drift] = pgboss12.run(schema_name, [QUIET, call("detectSchemaDrift")])
    assert drift == {
        "ok": True,
        "missingTables": [],
        "missing": [],
        "building": [],
        "invalid": [],
        "extraIndexes": [],
        "mismatched": [],
        "missingFunctions": [],
        "mismatchedFunctions": [],
        "columnDrift": [],
        "constraintDrift": [],
        "enumDrift": None,
    }
