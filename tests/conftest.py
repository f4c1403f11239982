"""Test fixtures: a real PostgreSQL (``$DATABASE_URL`` or an embedded one), isolated per test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.pool import NullPool
from support import Run, drop_schema, install_schema, unique_name

from sqla_boss import Worker
from sqla_boss import models as v24_models
from sqla_boss.identifiers import quote_identifier
from sqla_boss.v46 import models as v46_models

# connection, session, boss, make_boss, committing_session_factory: on Boss and on AsyncBoss; pytester, for
# tests/users' tests of the testing kit's pytest plugin (a non-root conftest cannot load plugins).
pytest_plugins = ["apis", "pytester"]


@pytest.fixture(scope="session")
def database_url(sqla_boss_database_url: URL) -> URL:
    """The testing kit's database (sqla_boss.testing.plugin): ``$DATABASE_URL``, or one embedded PostgreSQL
    started for the whole run, shared with the tests of tests/users."""
    return sqla_boss_database_url


@pytest.fixture(scope="session")
def engine(database_url: URL) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(database_url: URL) -> Iterator[Engine]:
    """An engine of the test's own, disposed of afterwards (a supervisor's or a worker's connections come and
    go; the session-wide ``engine`` stays untouched)."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def schema_name(engine: Engine) -> Iterator[str]:
    """A schema name no other test uses; whatever it ends up holding is dropped afterwards."""
    name = unique_name("t")
    yield name
    drop_schema(engine, name)


@pytest.fixture(scope="module")
def schema_version(request: pytest.FixtureRequest) -> int:
    """The pg-boss schema version ``installed_schema`` installs: 24 (pg-boss 10) unless parametrised, as
    ``boss_support.BOTH_VERSIONS`` does (``parametrize("schema_version", [24, 46], indirect=True)``), or
    overridden by a module of version 46 alone. Indirect, so that a schema of one version is never reused by a
    test of another: pytest tears down what depends on this fixture whenever its value changes."""
    version: int = getattr(request, "param", 24)
    return version


@pytest.fixture
def models(schema_version: int) -> ModuleType:
    """The models module of ``schema_version``: :mod:`sqla_boss.models` or :mod:`sqla_boss.v46.models`."""
    return v46_models if schema_version == 46 else v24_models


@pytest.fixture
def installed_schema(engine: Engine, schema_name: str, schema_version: int) -> str:
    """A pg-boss schema at ``schema_version`` installed by our migrations, committed."""
    install_schema(engine, schema_name, schema_version)
    return schema_name


@pytest.fixture
def fresh_database(engine: Engine, database_url: URL) -> Iterator[URL]:
    """A new, empty database on the same server, dropped afterwards: for tests of the default schema."""
    name = unique_name("sqla_boss_test")
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {quote_identifier(name)}"))
    try:
        yield database_url.set(database=name)
    finally:
        with autocommit.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)"))


@pytest.fixture
def fresh_engine(fresh_database: URL) -> Iterator[Engine]:
    engine = create_engine(fresh_database, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Workers the test made; each is stopped (not gracefully) at the end whatever happened."""
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.stop(graceful=False)
    for worker in made:  # before the schema goes; the listener holds no lock on it, and takes 0.5 s to notice
        for thread in worker._threads:
            if thread.name != "sqla_boss-listener":
                thread.join(5)


@pytest.fixture
def run(database_url: URL, installed_schema: str) -> Run:
    """Run ``sqla-boss COMMAND ... --schema <the test's schema>`` as a process, as a user would; returns (exit
    status, stdout, stderr)."""
    environment = {**os.environ, "DATABASE_URL": database_url.render_as_string(hide_password=False)}

    def run(*args: str, schema: str | None = None) -> tuple[int, str, str]:
        command = [sys.executable, "-m", "sqla_boss.cli", *args, "--schema", schema or installed_schema]
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, check=False)
        return result.returncode, result.stdout, result.stderr

    return run
