"""Installing, adopting, refusing and removing the pg-boss schema through our Alembic revisions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, select, text
from support import create_queue, schema_exists

from sqla_boss import migrations
from sqla_boss.errors import (
    InvalidDatabaseUrlError,
    InvalidSchemaNameError,
    SchemaConflictError,
    SchemaVersionError,
    SqlaBossError,
)
from sqla_boss.schema import SCHEMA_VERSION, advisory_lock_key, advisory_lock_key_for, install


def relations(connection: Connection, schema: str) -> list[tuple[str, str]]:
    rows = connection.execute(
        text(
            "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') ORDER BY 1"
        ),
        {"schema": schema},
    )
    return [(name, kind) for name, kind in rows]


def recorded_revision(connection: Connection, schema: str) -> str | None:
    table = f"public.{migrations.version_table_name(schema)}"
    if connection.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
        return None
    return connection.execute(text(f"SELECT version_num FROM {table}")).scalar()


PGBOSS_TABLES = [
    ("archive", "r"),
    ("job", "p"),
    ("queue", "r"),
    ("schedule", "r"),
    ("subscription", "r"),
    ("version", "r"),
]


@pytest.mark.parametrize("custom", [False, True], ids=["pgboss", "custom"])
def test_upgrade_downgrade_upgrade_round_trips(fresh_engine: Engine, custom: bool) -> None:
    schema = "jobs_a" if custom else "pgboss"
    for _ in range(2):
        migrations.upgrade(fresh_engine, schema=schema)
        with fresh_engine.connect() as connection:
            assert relations(connection, schema) == PGBOSS_TABLES
            assert connection.execute(text(f"SELECT version FROM {schema}.version")).scalars().all() == [24]
            assert recorded_revision(connection, schema) == "pgboss_v24"
        migrations.downgrade(fresh_engine, schema=schema)
        with fresh_engine.connect() as connection:
            assert not schema_exists(connection, schema)
            assert recorded_revision(connection, schema) is None
            types = connection.execute(text("SELECT count(*) FROM pg_type WHERE typname = 'job_state'")).scalar()
            assert types == 0


def test_a_second_upgrade_adopts_and_changes_nothing(engine: Engine, installed_schema: str) -> None:
    with engine.begin() as connection:
        create_queue(connection, installed_schema, "q", {"policy": "short"})
        before = relations(connection, installed_schema)
    migrations.upgrade(engine, schema=installed_schema)
    with engine.connect() as connection:
        assert relations(connection, installed_schema) == before
        assert len(before) == len(PGBOSS_TABLES) + 1  # the queue's partition is still there


def test_adopts_a_schema_installed_without_alembic(engine: Engine, schema_name: str) -> None:
    with engine.begin() as connection:
        assert install(connection, schema_name) is True
    with engine.begin() as connection:
        assert install(connection, schema_name) is False
    migrations.upgrade(engine, schema=schema_name)
    with engine.connect() as connection:
        assert recorded_revision(connection, schema_name) == "pgboss_v24"


@pytest.mark.parametrize("version", [20, 23, 25])
def test_refuses_a_schema_at_another_version(engine: Engine, installed_schema: str, version: int) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {installed_schema}.version SET version = :v"), {"v": version})
        connection.execute(text(f"DROP TABLE public.{migrations.version_table_name(installed_schema)}"))
    with pytest.raises(SchemaVersionError, match=rf"version {version}; sqla_boss installs and upgrades 24 "):
        migrations.upgrade(engine, schema=installed_schema)
    with engine.connect() as connection:
        assert recorded_revision(connection, installed_schema) is None
        assert connection.execute(text(f"SELECT version FROM {installed_schema}.version")).scalar() == version


def test_refuses_a_schema_holding_other_objects(engine: Engine, schema_name: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema_name}"))
        connection.execute(text(f"CREATE TYPE {schema_name}.job_state AS ENUM ('created')"))
    with pytest.raises(SchemaConflictError, match="no pg-boss version table"):
        migrations.upgrade(engine, schema=schema_name)
    with engine.connect() as connection:
        assert relations(connection, schema_name) == []


def test_installs_into_an_existing_empty_schema(engine: Engine, schema_name: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema_name}"))
    migrations.upgrade(engine, schema=schema_name)
    with engine.connect() as connection:
        assert relations(connection, schema_name) == PGBOSS_TABLES


def test_downgrade_keeps_a_schema_that_holds_other_objects(engine: Engine, installed_schema: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {installed_schema}.mine (id int)"))
    migrations.downgrade(engine, schema=installed_schema)
    with engine.connect() as connection:
        assert relations(connection, installed_schema) == [("mine", "r")]


def test_upgrade_on_a_connection_leaves_the_commit_to_the_caller(engine: Engine, schema_name: str) -> None:
    with engine.connect() as connection:
        with connection.begin() as transaction:
            migrations.upgrade(connection, schema=schema_name)
            assert relations(connection, schema_name) == PGBOSS_TABLES
            transaction.rollback()
        assert not schema_exists(connection, schema_name)


def test_install_waits_for_pg_boss_advisory_lock(engine: Engine, schema_name: str) -> None:
    """A Node pg-boss installing or maintaining the same schema holds this lock; we queue behind it."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run_upgrade() -> None:
        try:
            migrations.upgrade(engine, schema=schema_name)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    with engine.connect() as holder:
        key = holder.execute(select(advisory_lock_key(schema_name))).scalar_one()
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        holder.commit()
        worker = threading.Thread(target=run_upgrade)
        worker.start()
        wait_until(lambda: advisory_waiters(holder, key) == 1, "the upgrade to wait for the advisory lock")
        assert not done.is_set()
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        holder.commit()
    assert done.wait(30)
    worker.join()
    assert errors == []
    with engine.connect() as connection:
        assert relations(connection, schema_name) == PGBOSS_TABLES


def advisory_waiters(connection: Connection, key: int) -> int:
    count = connection.execute(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND ((classid::bigint << 32) | objid::bigint) = CAST(:k AS bigint)"
        ),
        {"k": key},
    ).scalar_one()
    connection.commit()
    return int(count)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_lock_key_is_pg_boss_formula(connection: Connection) -> None:
    database = connection.execute(text("SELECT current_database()")).scalar_one()
    in_sql = connection.execute(select(advisory_lock_key("spec_coord"))).scalar_one()
    assert in_sql == advisory_lock_key_for(database, "spec_coord")
    assert advisory_lock_key_for("test", "spec_coord") == 4959423308769631196  # observed from pg-boss 10.4.2


@pytest.mark.parametrize(
    "bad",
    ["Bad", "jobs;drop", 'we"ird', "a b", "1abc", "", "x" * 51, "x" * 64, "select", "pg_jobs", "é"],
)
def test_bad_schema_names_are_refused_before_any_sql(bad: str) -> None:
    unreachable = "postgresql://nobody@unreachable.invalid:1/none"
    with pytest.raises(InvalidSchemaNameError):
        migrations.upgrade(unreachable, schema=bad)
    with pytest.raises(InvalidSchemaNameError):
        migrations.downgrade(unreachable, schema=bad)


@pytest.mark.parametrize("url", ["mysql://root@localhost/x", "sqlite:///x.db", "postgresql+asyncpg://x/y", "nope"])
def test_non_postgresql_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidDatabaseUrlError):
        migrations.upgrade(url, schema="jobs")


def test_offline_sql_is_refused_with_a_reason() -> None:
    config = migrations.make_config(url="postgresql://nobody@unreachable.invalid/none")
    with pytest.raises(SqlaBossError, match="cannot be rendered as offline SQL"):
        command.upgrade(config, "head", sql=True)


def test_schema_version_constant() -> None:
    assert SCHEMA_VERSION == 24
