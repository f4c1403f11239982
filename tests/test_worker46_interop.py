"""sqla_boss's workers and the real pg-boss 12.38.0 ``work()`` on one version-46 schema: each works the jobs the
other sends, a failure or a timeout of either leaves the same row, and groups are limited whoever holds them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
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
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from support import drop_schema, schema_sessions, unique_name, wait_until

from sqla_boss import Boss, Worker
from sqla_boss.v46 import ddl
from sqla_boss.v46.models import Job

pytestmark = pytest.mark.pgboss

QUIET = {"migrate": False, "supervise": False, "schedule": False, "registerInstance": False}


@pytest.fixture
def schema(engine: Engine) -> Iterator[str]:
    name = unique_name("w46")
    with engine.begin() as connection:
        ddl.install(connection, name)
    yield name
    drop_schema(engine, name)


@pytest.fixture
def sessions(engine: Engine, schema: str) -> sessionmaker[Session]:
    return schema_sessions(engine, schema)


def job(sessions: sessionmaker[Session], name: str, job_id: Any) -> dict[str, Any]:
    schema = schema_translate_map_of(sessions)
    with sessions() as session:
        row = session.execute(
            text(f"SELECT state::text AS state, retry_count, output FROM {schema}.job WHERE name = :n AND id = :id"),
            {"n": name, "id": uuid.UUID(str(job_id))},
        ).one()
        return row._asdict()


def schema_translate_map_of(sessions: sessionmaker[Session]) -> str:
    translation = sessions.kw["bind"].get_execution_options()["schema_translate_map"]
    return str(next(iter(translation.values())))


def started_worker(sessions: sessionmaker[Session], schema: str) -> Worker:
    return Worker(sessions, schema, supervise=False, schedule=False, polling_interval_seconds=0.5)


def test_python_works_what_node_sends_and_node_reads_the_outcome(
    pgboss12: PgBoss, sessions: sessionmaker[Session], schema: str
) -> None:
    sent = pgboss12.run(
        schema,
        [
            start(**QUIET),
            call("createQueue", "mixed", {"retryLimit": 1}),
            *(call("send", "mixed", {"n": n, "fail": n == 3}, {"group": {"id": f"g{n % 2}"}}) for n in range(6)),
            call("stop", {"graceful": False}),
        ],
    )
    ids = sent[2:8]
    worker = started_worker(sessions, schema)

    @worker.work("mixed", concurrency=2, group_concurrency=1)
    def handle(jobs: list[Job]) -> dict[str, int]:
        if jobs[0].data["fail"]:
            raise ValueError("no")
        return {"doubled": jobs[0].data["n"] * 2}

    worker.start()
    try:
        wait_until(lambda: job(sessions, "mixed", ids[3])["state"] == "failed", what="the failing job failed")
        wait_until(lambda: all(job(sessions, "mixed", i)["state"] != "created" for i in ids), what="all handled")
        wait_until(lambda: job(sessions, "mixed", ids[5])["state"] == "completed", what="the last one")
    finally:
        worker.stop()
    read = pgboss12.run(
        schema,
        [start(**QUIET), *(call("getJobById", "mixed", job_id) for job_id in ids), call("stop", {"graceful": False})],
    )[1:7]
    assert [found["state"] for found in read] == ["completed"] * 3 + ["failed"] + ["completed"] * 2
    assert [found["output"] for found in read if found["state"] == "completed"] == [
        {"doubled": n * 2} for n in (0, 1, 2, 4, 5)
    ]
    failed = read[3]
    assert failed["retryCount"] == 1
    assert (failed["output"]["name"], failed["output"]["message"]) == ("ValueError", "no")


def test_a_handler_timeout_leaves_the_row_pg_boss_12s_worker_leaves(
    pgboss12: PgBoss, sessions: sessionmaker[Session], schema: str
) -> None:
    """Both workers fail a job whose handler outlives ``expire_in_seconds`` with the same output."""
    with sessions.begin() as session:
        boss = Boss(session, schema)
        boss.create_queue("by-python")
        python_job = boss.send("by-python", {}, expire_in_seconds=1, retry_limit=0)
    release = threading.Event()
    worker = started_worker(sessions, schema)
    worker.work("by-python", lambda jobs: release.wait(10))
    worker.start()
    try:
        wait_until(lambda: job(sessions, "by-python", python_job)["state"] == "failed", what="the Python timeout")
    finally:
        release.set()
        worker.stop()

    node = pgboss12.run(
        schema,
        [
            start(**QUIET),
            call("createQueue", "by-node"),
            call("send", "by-node", {}, {"expireInSeconds": 1, "retryLimit": 0}),
            call("workSql", "by-node", {"pollingIntervalSeconds": 0.5}, "SELECT pg_sleep(2), $1::uuid"),
            call("waitSql", f"SELECT state = 'failed' FROM {schema}.job WHERE name = 'by-node'", 20000),
            call("getJobById", "by-node", ref(2)),
            call("stop", {"graceful": False}),
        ],
    )
    node_output = node[5]["output"]
    python_output = job(sessions, "by-python", python_job)["output"]
    assert python_output["message"] == node_output["message"] == "handler execution exceeded 1s"
    assert python_output.keys() == node_output.keys()
