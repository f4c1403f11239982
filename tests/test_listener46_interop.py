"""Wake-ups between sqla_boss and the real pg-boss 12.38.0 on one version-46 schema (PGBOSS12.md §10): a queue with
``notify``; Node sends and a Python worker polling every 30 s runs the job promptly; Python sends and a Node worker
with ``useListenNotify`` and ``pollingIntervalSeconds: 30`` runs it promptly. "Promptly" is a generous 10 s, a
third of the polling interval: each side was woken by the other's NOTIFY, not by its own poll."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pgboss import (  # noqa: F401  (the fixtures pgboss12 and pgboss_install)
    PgBoss,
    call,
    pgboss12_fixture,
    pgboss_install_fixture,
    start,
)
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from support import drop_schema, schema_sessions, unique_name, wait_until

from sqla_boss import Boss, Worker
from sqla_boss.v46 import ddl
from sqla_boss.v46.operations import notify_channel

pytestmark = pytest.mark.pgboss

QUIET = {"migrate": False, "supervise": False, "schedule": False, "registerInstance": False}
QUEUE = "wake"
PROMPTLY = 10.0


@pytest.fixture
def schema(engine: Engine) -> Iterator[str]:
    name = unique_name("l46")
    with engine.begin() as connection:
        ddl.install(connection, name)
        connection.execute(text(f"CREATE TABLE {name}.handled (id uuid PRIMARY KEY, at timestamptz NOT NULL)"))
    yield name
    drop_schema(engine, name)


@pytest.fixture
def sessions(engine: Engine, schema: str) -> sessionmaker[Session]:
    factory = schema_sessions(engine, schema)
    with factory.begin() as session:
        Boss(session, schema).create_queue(QUEUE, notify=True)
    return factory


def state(engine: Engine, schema: str, job_id: object) -> str | None:
    with engine.connect() as connection:
        found = connection.execute(
            text(f"SELECT state::text FROM {schema}.job WHERE name = :n AND id = :id"),
            {"n": QUEUE, "id": uuid.UUID(str(job_id))},
        ).scalar()
        return None if found is None else str(found)


def test_node_sends_and_a_python_worker_polling_every_30_s_runs_it_promptly(
    pgboss12: PgBoss, engine: Engine, sessions: sessionmaker[Session], schema: str
) -> None:
    worker = Worker(sessions, schema, supervise=False, schedule=False, polling_interval_seconds=30)
    worker.work(QUEUE, lambda jobs: None)
    worker.start()
    try:
        listener = worker._listener
        assert listener is not None
        assert listener.subscribed.wait(10)
        wait_until(
            lambda: all(
                s.last_fetch is not None and s.last_fetch > (listener.subscribed_at or 0) for s in worker._loop_states
            ),
            what="the loop waiting out its 30 s",
        )
        (_, job_id, _) = pgboss12.run(schema, [start(**QUIET), call("send", QUEUE, {"from": "node"}), call("stop")])
        wait_until(lambda: state(engine, schema, job_id) == "completed", PROMPTLY, "the Node job run by Python")
    finally:
        worker.stop()


def test_python_sends_and_a_node_worker_with_listen_notify_runs_it_promptly(
    pgboss12: PgBoss, engine: Engine, sessions: sessionmaker[Session], schema: str
) -> None:
    def send() -> uuid.UUID:
        with sessions.begin() as session:
            job_id = Boss(session, schema).send(QUEUE, {"from": "python"})
        assert job_id is not None
        return job_id

    channel = notify_channel(schema)
    actions = [
        start(**QUIET, useListenNotify=True),
        call("workSql", QUEUE, {"pollingIntervalSeconds": 30}, f"INSERT INTO {schema}.handled VALUES ($1, now())"),
        call("waitSql", f"SELECT count(*) >= 2 FROM {schema}.handled", 60_000),
        call("stop", {"graceful": True}),
    ]
    with pgboss12.spawn(schema, actions) as node:

        def node_listens() -> bool:
            with engine.connect() as connection:
                found = connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE :q"), {"q": f"%LISTEN%{channel}%"}
                ).scalar()
            assert not node.done(), node.result(1)
            return bool(found)

        wait_until(node_listens, 30, "the Node instance's LISTEN")
        # The first job may be found by the fetch pg-boss makes when it subscribes; once it is done, the Node
        # worker waits out its 30 s (one batch per interval), and only the NOTIFY can bring the second one in time.
        first = send()
        wait_until(lambda: state(engine, schema, first) == "completed", 40, "the first job run by Node")
        second = send()
        wait_until(lambda: state(engine, schema, second) == "completed", PROMPTLY, "the second job run by Node")
        output = node.result(30)
    assert output["ok"], output
    assert [event for event in output["events"] if event.get("event") == "error"] == []
