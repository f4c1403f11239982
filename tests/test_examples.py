"""The programs in ``examples/``, run as a user runs them: ``python examples/<name>/run.py`` in a subprocess.

Each run gets the suite's database (``$DATABASE_URL`` or the embedded server) and a schema or database of its
own, and is cleaned up afterwards whatever happens. The examples that write files (the Alembic one generates a
revision) run from a copy in ``tmp_path``, so that a run never races another one in the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgboss import PGBOSS_VERSION, find_node, install, pgboss_install_fixture  # noqa: F401
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.pool import NullPool
from support import ROOT, schema_exists, tables_in, unique_name

from sqla_boss import migrations
from sqla_boss.identifiers import quote_identifier

EXAMPLES = ROOT / "examples"
RUN_TIMEOUT = 120


def run_example(script: Path, database_url: URL, *args: str, expect_exit: int = 0) -> subprocess.CompletedProcess[str]:
    """Run an example's ``run.py`` with ``DATABASE_URL`` set to the suite's database; check its exit status."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ left in examples/
    }
    env.pop("EXAMPLE_SCHEMA", None)
    env.pop("EXAMPLE_DATABASE", None)
    completed = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        cwd=ROOT,
    )
    assert completed.returncode == expect_exit, (
        f"{script.relative_to(script.parents[1])} {' '.join(args)} exited {completed.returncode}\n"
        f"--- stdout\n{completed.stdout}\n--- stderr\n{completed.stderr}"
    )
    return completed


def copy_example(name: str, destination: Path) -> Path:
    """A copy of ``examples/<name>`` (without node_modules or caches) under ``destination``."""
    target = destination / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("node_modules", "__pycache__"))
    return target


@pytest.fixture
def app_schema(engine: Engine, schema_name: str) -> Iterator[str]:
    """The schema of the outbox examples' own tables, ``<schema>_app``; dropped afterwards."""
    name = f"{schema_name}_app"
    yield name
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {quote_identifier(name)} CASCADE"))


# --- the outbox examples -------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["wsgi_outbox", "async_outbox"])
def test_outbox_example(example: str, database_url: URL, engine: Engine, schema_name: str, app_schema: str) -> None:
    script = EXAMPLES / example / "run.py"

    first = run_example(script, database_url, "--schema", schema_name).stdout
    assert 'POST /orders {"customer": "ada", "total_cents": 4200} -> 201 {"id": 1, "status": "pending"' in first
    assert 'POST /orders {"customer": "grace", "total_cents": 120000} -> 422 {"error": ' in first
    assert "the refused order left nothing behind: still 1 order(s) and 1 job(s)" in first
    assert '"status": "pending", "job_state": "created"}' in first
    assert '"status": "confirmed", "job_state": "completed"}' in first
    assert "order 1 confirmed" in first

    # Without --drop the rows stay: the order is confirmed, and its job completed with the handler's output,
    # in the schemas the example was told to use.
    with engine.connect() as connection:
        assert tables_in(connection, app_schema) == {"orders"}
        orders = connection.execute(
            text(f"SELECT id, customer, status, job_id FROM {quote_identifier(app_schema)}.orders")
        ).all()
        assert [(order.id, order.customer, order.status) for order in orders] == [(1, "ada", "confirmed")]
        jobs = connection.execute(
            text(f"SELECT id, name, state, data, output FROM {quote_identifier(schema_name)}.job")
        ).all()
    assert [(job.id, job.name, job.state, job.data, job.output) for job in jobs] == [
        (orders[0].job_id, "order-confirmation", "completed", {"order_id": 1}, {"confirmed": 1})
    ]

    # A second run on the same schemas works too (the refused order used up id 2), and --drop cleans up.
    second = run_example(script, database_url, "--schema", schema_name, "--drop").stdout
    assert "the refused order left nothing behind: still 2 order(s) and 2 job(s)" in second
    assert "order 3 confirmed" in second
    assert f"Dropped the schemas {schema_name} and {app_schema}." in second
    with engine.connect() as connection:
        assert not schema_exists(connection, schema_name)
        assert not schema_exists(connection, app_schema)
        version_table = migrations.version_table_name(schema_name)
        assert version_table not in tables_in(connection, "public")


# --- Node interop --------------------------------------------------------------------------------------

NODE_INTEROP = EXAMPLES / "node_interop"


def _lock_entry(lock_file: Path, package: str) -> dict[str, object]:
    return dict(json.loads(lock_file.read_text(encoding="utf-8"))["packages"][f"node_modules/{package}"])


@pytest.fixture(scope="session")
def node_interop_script(pgboss_install: tuple[str, Path]) -> Path:
    """The example's worker.mjs beside the interop tests' cached pg-boss 10.4.2 (skipped, or failed under
    $SQLA_BOSS_REQUIRE_PGBOSS=1, without node and npm, as the interop tests are)."""
    _node, npm = find_node()
    return install(npm, script=NODE_INTEROP / "worker.mjs")


def test_node_interop_example_pins_the_pgboss_the_tests_install() -> None:
    example = _lock_entry(NODE_INTEROP / "package-lock.json", "pg-boss")
    ours = _lock_entry(ROOT / "tests" / "pgboss_node" / "package-lock.json", "pg-boss")
    assert example["version"] == PGBOSS_VERSION
    assert example == ours
    package = json.loads((NODE_INTEROP / "package.json").read_text(encoding="utf-8"))
    assert package["dependencies"] == {"pg-boss": PGBOSS_VERSION}


def _check_interop_transcript(stdout: str, schema: str, jobs: int) -> None:
    lines = stdout.splitlines()

    def count(prefix: str) -> int:
        return sum(line.startswith(prefix) for line in lines)

    assert f"[node]   pg-boss started on schema {schema} (migrate: false)" in lines
    assert count("[node]   sent py-tasks job ") == jobs
    assert count("[python] handled py-tasks job ") == jobs
    assert count("[node]   sees py-tasks job ") == jobs
    assert count("[node]   handled node-tasks job ") == jobs
    assert count("[python] sees node-tasks job ") == jobs
    for n in range(1, jobs + 1):
        assert f'completed by Python, output {{"double":{2 * n},"handledBy":"python"}}' in stdout
        assert f'completed by Node, output {{"square": {n * n}, "handledBy": "node"}}' in stdout
    assert f"[python] done: Node completed all {jobs} jobs Python sent, and Python all {jobs} jobs Node sent" in lines
    assert f"Dropped the schema {schema}." in lines


@pytest.mark.pgboss
def test_node_interop_example(node_interop_script: Path, database_url: URL, engine: Engine, schema_name: str) -> None:
    completed = run_example(
        NODE_INTEROP / "run.py",
        database_url,
        "--schema",
        schema_name,
        "--jobs",
        "4",
        "--drop",
        "--node-script",
        str(node_interop_script),
    )
    _check_interop_transcript(completed.stdout, schema_name, 4)
    assert "pg-boss error" not in completed.stdout + completed.stderr
    with engine.connect() as connection:
        assert not schema_exists(connection, schema_name)


@pytest.mark.pgboss
@pytest.mark.slow
def test_node_interop_example_installs_pgboss_itself(
    pgboss_install: tuple[str, Path], database_url: URL, schema_name: str, tmp_path: Path
) -> None:
    """The user's path: no --node-script, so run.py runs ``npm ci`` in (a copy of) the example folder."""
    example = copy_example("node_interop", tmp_path)
    completed = run_example(example / "run.py", database_url, "--schema", schema_name, "--drop")
    assert f"Installing pg-boss {PGBOSS_VERSION} into {example / 'node_modules'} (npm ci)" in completed.stdout
    installed = json.loads((example / "node_modules" / "pg-boss" / "package.json").read_text(encoding="utf-8"))
    assert installed["version"] == PGBOSS_VERSION
    _check_interop_transcript(completed.stdout, schema_name, 3)


# --- Alembic -------------------------------------------------------------------------------------------


@pytest.fixture
def example_database(engine: Engine) -> Iterator[str]:
    """A database name no other test uses; the example creates it, and it is dropped afterwards."""
    name = unique_name("sqla_boss_example")
    yield name
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)"))


def _database_exists(engine: Engine, name: str) -> bool:
    with engine.connect() as connection:
        found = connection.scalar(text("SELECT EXISTS (SELECT FROM pg_database WHERE datname = :name)"), {"name": name})
    return bool(found)


def test_alembic_example(database_url: URL, engine: Engine, example_database: str, tmp_path: Path) -> None:
    example = copy_example("alembic_app", tmp_path)
    revisions = sorted(path.name for path in (example / "migrations" / "versions").glob("*.py"))

    stdout = run_example(example / "run.py", database_url, "--database", example_database).stdout
    assert f"Created the database {example_database}." in stdout
    assert "Running upgrade  -> pgboss_v24" in stdout
    assert "Running upgrade  -> 724e53f01aba, Create the orders table." in stdout
    assert "sqla_boss's revision: pgboss_v24 (public.alembic_pgboss), pg-boss schema version 24" in stdout
    assert "is empty: upgrade() and downgrade() are just `pass`." in stdout
    # The generated revision was removed again.
    assert sorted(path.name for path in (example / "migrations" / "versions").glob("*.py")) == revisions

    # The database holds the app's table, pg-boss's schema with the example's queue, and both version tables.
    example_engine = create_engine(database_url.set(database=example_database), poolclass=NullPool)
    try:
        with example_engine.connect() as connection:
            assert tables_in(connection, "public") == {"orders", "alembic_version", "alembic_pgboss"}
            queues = connection.execute(text("SELECT name FROM pgboss.queue")).scalars().all()
            assert queues == ["emails"]
    finally:
        example_engine.dispose()

    # Run again with --drop: nothing to upgrade, autogenerate still empty, and the database is gone after.
    stdout = run_example(example / "run.py", database_url, "--database", example_database, "--drop").stdout
    assert "Created the database" not in stdout
    assert "Running upgrade" not in stdout
    assert "is empty" in stdout
    assert f"Dropped the database {example_database}." in stdout
    assert not _database_exists(engine, example_database)


def test_alembic_example_fails_when_autogenerate_finds_changes(
    database_url: URL, example_database: str, tmp_path: Path
) -> None:
    """The check is real: a model the revisions do not create makes the run fail, and the file is removed."""
    example = copy_example("alembic_app", tmp_path)
    models = example / "models.py"
    models.write_text(
        models.read_text(encoding="utf-8")
        + "\n\nclass Invoice(Base):\n"
        + '    __tablename__ = "invoices"\n\n'
        + "    id: Mapped[int] = mapped_column(primary_key=True)\n",
        encoding="utf-8",
    )
    revisions = sorted(path.name for path in (example / "migrations" / "versions").glob("*.py"))

    completed = run_example(example / "run.py", database_url, "--database", example_database, expect_exit=1)
    assert "FAILED: autogenerate proposed changes:" in completed.stderr
    assert "op.create_table('invoices'" in completed.stderr
    assert sorted(path.name for path in (example / "migrations" / "versions").glob("*.py")) == revisions
