"""Least privilege on a real PostgreSQL: a migration role owns the schema, a worker role has DML only.

The worker role gets exactly ``schema.grant_worker_role`` (the README's roles section), no DDL and no
ownership, and still sends, fetches, completes, fails and maintains; a role with no rights gets PostgreSQL's
"permission denied", from the repository and the command line alike.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from support import drop_schema

from sqla_boss import Boss, Job, Worker, cli, cron, migrations
from sqla_boss.errors import InvalidOptionError
from sqla_boss.identifiers import quote_identifier
from sqla_boss.maintenance import Maintenance
from sqla_boss.schema import grant_worker_role

QUEUE = "mail"


def _role(engine: Engine, name: str, *extra: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {quote_identifier(name)} LOGIN {' '.join(extra)}"))


def _drop_role(engine: Engine, name: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"DROP OWNED BY {quote_identifier(name)} CASCADE"))
        connection.execute(text(f"DROP ROLE IF EXISTS {quote_identifier(name)}"))


@pytest.fixture
def roles(engine: Engine, database_url: URL, schema_name: str) -> Iterator[dict[str, Engine]]:
    """``migrator`` (owns the schema it migrates), ``worker`` (DML through grant_worker_role), ``stranger``."""
    names = {kind: f"{schema_name}_{kind}" for kind in ("migrator", "worker", "stranger")}
    _role(engine, names["migrator"])
    _role(engine, names["worker"])
    _role(engine, names["stranger"])
    database = database_url.database
    with engine.begin() as connection:  # the pg-boss schema, and its version table in public
        connection.execute(text(f"GRANT CREATE ON DATABASE {quote_identifier(str(database))} TO {names['migrator']}"))
        connection.execute(text(f"GRANT CREATE ON SCHEMA public TO {names['migrator']}"))
    engines = {kind: create_engine(database_url.set(username=name), poolclass=NullPool) for kind, name in names.items()}
    try:
        migrations.upgrade(engines["migrator"], schema=schema_name)
        with Session(engines["migrator"]) as session, session.begin():
            boss = Boss(session, schema_name)
            boss.create_queue("dead")
            boss.create_queue(QUEUE, retry_limit=1, dead_letter="dead")
            boss.create_queue(cron.SEND_IT_QUEUE)
            grant_worker_role(session.connection(), names["worker"], schema_name)
        yield engines
    finally:
        for made in engines.values():
            made.dispose()
        drop_schema(engine, schema_name)
        with engine.begin() as connection:
            connection.execute(
                text(f"REVOKE CREATE ON DATABASE {quote_identifier(str(database))} FROM {names['migrator']}")
            )
        for name in names.values():
            _drop_role(engine, name)


def test_the_migration_role_owns_the_schema_and_the_worker_role_owns_nothing(
    engine: Engine, roles: dict[str, Engine], schema_name: str
) -> None:
    with engine.connect() as connection:
        owner = connection.execute(
            text("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = :s"), {"s": schema_name}
        ).scalar_one()
        owned = connection.execute(
            text(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relowner = CAST(:r AS regrole)"
            ),
            {"s": schema_name, "r": f"{schema_name}_worker"},
        ).scalar_one()
        can_create = connection.execute(
            text("SELECT has_schema_privilege(:r, :s, 'CREATE')"), {"r": f"{schema_name}_worker", "s": schema_name}
        ).scalar_one()
    assert owner == f"{schema_name}_migrator"
    assert owned == 0
    assert can_create is False


def test_the_worker_role_sends_fetches_completes_fails_and_maintains(
    roles: dict[str, Engine], schema_name: str
) -> None:
    worker = roles["worker"]
    with Session(worker) as session, session.begin():
        boss = Boss(session, schema_name)
        first = boss.send(QUEUE, {"n": 1})
        second = boss.send(QUEUE, {"n": 2}, expire_in_seconds=1)
        boss.insert([{"name": QUEUE, "data": {"n": 3}}])
        boss.schedule(QUEUE, "*/5 * * * *")
        boss.subscribe("evt", QUEUE)
        boss.publish("evt", {"n": 4})
    with Session(worker) as session, session.begin():
        boss = Boss(session, schema_name)
        jobs = {job.data["n"]: job for job in boss.fetch(QUEUE, batch_size=10)}
        assert set(jobs) == {1, 2, 3, 4}
        assert boss.complete(QUEUE, jobs[1].id, {"sent": True}) == 1
        assert boss.fail(QUEUE, jobs[3].id, RuntimeError("smtp")) == 1
        assert boss.cancel(QUEUE, jobs[4].id) == 1
        assert boss.resume(QUEUE, jobs[4].id) == 1
    assert first is not None
    assert second is not None
    with worker.begin() as connection:  # let the second job's expire_in pass, by the database's clock
        connection.execute(
            text(f"UPDATE {schema_name}.job SET started_on = now() - interval '1 minute' WHERE id = :id"),
            {"id": second},
        )
    maintenance = Maintenance(worker, schema_name, maintenance_interval_seconds=1)
    result = maintenance.maintain()
    assert result.expired == 1
    assert maintenance.claim() in (True, False)
    assert maintenance.count_states()["queues"][QUEUE]["all"] >= 4
    with Session(worker) as session:
        boss = Boss(session, schema_name)
        assert boss.get_job_by_id(QUEUE, second).state.value == "retry"  # type: ignore[union-attr]
        assert boss.get_job_by_id(QUEUE, first).state.value == "completed"  # type: ignore[union-attr]


def test_a_worker_running_as_the_worker_role_completes_jobs(roles: dict[str, Engine], schema_name: str) -> None:
    with Session(roles["worker"]) as session, session.begin():
        job_id = Boss(session, schema_name).send(QUEUE, {"n": 1})
    done = threading.Event()
    handled: list[uuid.UUID] = []

    def handle(jobs: list[Job]) -> None:
        handled.extend(job.id for job in jobs)
        done.set()

    worker = Worker(roles["worker"], schema_name, polling_interval_seconds=0.5, cron_monitor_interval_seconds=1)
    worker.work(QUEUE, handle)
    worker.start()
    try:
        assert done.wait(10)
    finally:
        worker.stop()
    assert handled == [job_id]
    with Session(roles["worker"]) as session:
        assert Boss(session, schema_name).get_job_by_id(QUEUE, job_id).state.value == "completed"  # type: ignore[union-attr]


def test_the_worker_role_cannot_create_or_delete_queues(roles: dict[str, Engine], schema_name: str) -> None:
    for action in (lambda boss: boss.create_queue("another"), lambda boss: boss.delete_queue(cron.SEND_IT_QUEUE)):
        with Session(roles["worker"]) as session:
            with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"):
                action(Boss(session, schema_name))
            session.rollback()


def test_a_role_without_rights_gets_permission_denied(roles: dict[str, Engine], schema_name: str) -> None:
    with Session(roles["stranger"]) as session:
        with pytest.raises(ProgrammingError, match=f"permission denied for schema {schema_name}"):
            Boss(session, schema_name).send(QUEUE, {"n": 1})
        session.rollback()


def test_the_command_line_says_permission_denied(
    roles: dict[str, Engine], schema_name: str, database_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_url.set(username=f"{schema_name}_stranger").render_as_string(hide_password=False)
    status = cli.main(["queues", "--url", url, "--schema", schema_name])
    _, err = capsys.readouterr()
    assert status == 1
    assert "permission denied" in err


@pytest.mark.parametrize("role", ["", "x" * 64, "a\x00b", 42])
def test_grant_refuses_what_is_no_role_name(engine: Engine, installed_schema: str, role: Any) -> None:
    with engine.begin() as connection, pytest.raises(InvalidOptionError):
        grant_worker_role(connection, role, installed_schema)
