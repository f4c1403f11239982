"""Our revisions beside a user's own Alembic environment, and the filters that keep its autogenerate clean.

A scratch user project (its own ``alembic.ini``, ``env.py``, ``script.py.mako`` and declarative models with
an ``orders`` table in ``public``) runs ``sqla_boss.migrations.upgrade`` on its own connection and hands
``include_name_for`` / ``include_object_for`` to ``context.configure``. Each test gets a database of its own,
because the user's tables and its ``alembic_version`` live in ``public``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic import context as alembic_context
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, MetaData, inspect, text
from support import create_queue, tables_in, unique_name

from sqla_boss import migrations
from sqla_boss.schema import SCHEMA_VERSION

PGBOSS_TABLES = {"archive", "job", "queue", "schedule", "subscription", "version"}
PARTITION = re.compile(r"j[0-9a-f]{56}")

USER_ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/migrations
prepend_sys_path = %(here)s
path_separator = os
"""

USER_MODELS_PY = '''\
"""The user's own models: nothing to do with pg-boss."""

from sqlalchemy import Integer, Numeric, String
from sqlalchemy.orm import DeclarativeBase, mapped_column


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id = mapped_column(Integer, primary_key=True)
    customer = mapped_column(String(100), nullable=False, index=True)
    total = mapped_column(Numeric(10, 2), nullable=False)
'''

USER_ENV_PY = '''\
"""The user's env.py: its own models, plus sqla_boss's revisions run on the same connection."""

import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import sqla_boss.migrations
from models import Base

PGBOSS_SCHEMA = os.environ["PGBOSS_SCHEMA"]

engine = create_engine(os.environ["DATABASE_URL"], poolclass=NullPool)
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            include_schemas=True,
            include_name=sqla_boss.migrations.include_name_for(PGBOSS_SCHEMA),
            include_object=sqla_boss.migrations.include_object_for(PGBOSS_SCHEMA),
        )
        with context.begin_transaction():
            sqla_boss.migrations.upgrade(connection, schema=PGBOSS_SCHEMA)
            context.run_migrations()
finally:
    engine.dispose()
'''

USER_SCRIPT_PY_MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade():
    ${upgrades if upgrades else "pass"}


def downgrade():
    ${downgrades if downgrades else "pass"}
'''


@dataclass
class UserProject:
    path: Path
    pgboss_schema: str
    database_url: URL

    def alembic(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the real ``alembic`` command line in the project; fail the test on a nonzero exit."""
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url.render_as_string(hide_password=False),
            "PGBOSS_SCHEMA": self.pgboss_schema,
        }
        result = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (
            f"alembic {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
        return result

    def revision_file(self, message: str) -> str:
        (path,) = (self.path / "migrations" / "versions").glob(f"*_{message}.py")
        return path.read_text(encoding="utf-8")


@pytest.fixture
def user_project(tmp_path: Path, fresh_database: URL) -> UserProject:
    project = tmp_path / "shop"
    (project / "migrations" / "versions").mkdir(parents=True)
    (project / "alembic.ini").write_text(USER_ALEMBIC_INI, encoding="utf-8")
    (project / "models.py").write_text(USER_MODELS_PY, encoding="utf-8")
    (project / "migrations" / "env.py").write_text(USER_ENV_PY, encoding="utf-8")
    (project / "migrations" / "script.py.mako").write_text(USER_SCRIPT_PY_MAKO, encoding="utf-8")
    return UserProject(path=project, pgboss_schema=unique_name("t"), database_url=fresh_database)


def load_user_models(directory: Path) -> ModuleType:
    """Import the user's ``models.py`` under a name of its own, without touching ``sys.modules``."""
    path = directory / "models.py"
    path.write_text(USER_MODELS_PY, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"user_models_{uuid.uuid4().hex}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def function_body(source: str, function: str) -> list[str]:
    """The statements of a generated revision's ``upgrade()`` or ``downgrade()``, without comments."""
    body = source.split(f"def {function}():", 1)[1].split("\ndef ", 1)[0]
    return [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_autogenerate_leaves_pgboss_alone_through_the_cli(user_project: UserProject, fresh_engine: Engine) -> None:
    schema = user_project.pgboss_schema

    # The first autogenerate already runs our upgrade inside the user's transaction: the comparison sees
    # the pg-boss schema and must propose nothing about it.
    user_project.alembic("revision", "--autogenerate", "-m", "init")
    init = user_project.revision_file("init")
    assert "op.create_table('orders'" in init
    statements = function_body(init, "upgrade")
    operations = [match.group(1) for line in statements if (match := re.match(r"op\.(\w+)\(", line))]
    assert operations == ["create_table", "create_index"], statements
    assert "'orders'" in statements[-1]
    for pgboss_name in [*PGBOSS_TABLES, migrations.version_table_name(schema), schema]:
        assert f"'{pgboss_name}'" not in init, pgboss_name
    assert PARTITION.search(init) is None
    downgrade = [line for line in function_body(init, "downgrade") if line.startswith("op.")]
    assert [line.split("(", 1)[0] for line in downgrade] == ["op.drop_index", "op.drop_table"], downgrade
    assert all("'orders'" in line for line in downgrade), downgrade

    user_project.alembic("upgrade", "head")
    with fresh_engine.connect() as connection:
        assert tables_in(connection, "public") == {"orders", "alembic_version", migrations.version_table_name(schema)}
        assert tables_in(connection, schema) == PGBOSS_TABLES
        assert connection.execute(text(f'SELECT version FROM "{schema}".version')).scalars().all() == [SCHEMA_VERSION]
        ours = f"public.{migrations.version_table_name(schema)}"
        assert connection.execute(text(f"SELECT version_num FROM {ours}")).scalars().all() == ["pgboss_v24"]
        users = connection.execute(text("SELECT version_num FROM public.alembic_version")).scalars().all()
        assert users == re.findall(r"^Revision ID: (\w+)$", init, re.MULTILINE)

    # pg-boss queues live in partitions created at run time: autogenerate must not see them either.
    with fresh_engine.begin() as connection:
        partitions = {
            create_queue(connection, schema, "q1", {"policy": "short"}),
            create_queue(connection, schema, "q2", {"policy": "short"}),
        }
    with fresh_engine.connect() as connection:
        assert partitions <= tables_in(connection, schema)
        assert all(PARTITION.fullmatch(name) for name in partitions)

    checked = user_project.alembic("check")
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr

    user_project.alembic("revision", "--autogenerate", "-m", "second")
    second = user_project.revision_file("second")
    assert function_body(second, "upgrade") == ["pass"], second
    assert function_body(second, "downgrade") == ["pass"], second


@pytest.fixture
def populated(fresh_engine: Engine, tmp_path: Path) -> tuple[Engine, str, ModuleType, str]:
    """A database with the user's ``orders``, a pg-boss schema installed by us, and a queue partition in it."""
    schema = unique_name("t")
    models = load_user_models(tmp_path)
    migrations.upgrade(fresh_engine, schema=schema)
    with fresh_engine.begin() as connection:
        models.Base.metadata.create_all(connection)
        partition = create_queue(connection, schema, "q1", {"policy": "short"})
    return fresh_engine, schema, models, partition


def test_filters_hide_reflected_pgboss_objects_and_keep_the_users(
    populated: tuple[Engine, str, ModuleType, str],
) -> None:
    engine, schema, models, partition = populated
    include_name = migrations.include_name_for(schema)
    include_object = migrations.include_object_for(schema)
    version_table = migrations.version_table_name(schema)

    with engine.connect() as connection:
        inspector = inspect(connection)

        # include_name: the pg-boss schema is not even reflected; public and other schemas are.
        assert schema in inspector.get_schema_names()
        assert include_name(schema, "schema", {}) is False
        for kept in (None, "public", "sales", "pgboss"):
            assert include_name(kept, "schema", {}) is True, kept

        pgboss_tables = set(inspector.get_table_names(schema=schema))
        assert pgboss_tables == {*PGBOSS_TABLES, partition}
        for name in pgboss_tables:
            parents = {"schema_name": schema, "table_name": name, "schema_qualified_table_name": f"{schema}.{name}"}
            assert include_name(name, "table", parents) is False, name

        assert set(inspector.get_table_names()) == {"orders", version_table}
        default = {"schema_name": None}
        assert include_name(version_table, "table", default) is False
        assert include_name("orders", "table", default) is True
        # A partition reached through search_path, without its schema name, is still pg-boss's.
        assert include_name(partition, "table", default) is False
        # Names of pg-boss tables are only pg-boss's inside the pg-boss schema.
        assert include_name("job", "table", default) is True
        assert include_name("job", "table", {"schema_name": "sales"}) is True
        assert include_name("alembic_version", "table", default) is True

        # include_object, on tables reflected from the database, and on their columns and indexes.
        reflected = MetaData()
        reflected.reflect(connection, schema=schema)
        reflected.reflect(connection)
        assert {table.name for table in reflected.tables.values() if table.schema == schema} == pgboss_tables
        for table in reflected.tables.values():
            hidden = table.schema == schema or table.name == version_table
            assert include_object(table, table.name, "table", True, None) is not hidden, table.fullname
            for column in table.columns:
                assert include_object(column, column.name, "column", True, None) is not hidden, column
            for index in table.indexes:
                assert include_object(index, index.name, "index", True, None) is not hidden, index
        assert not reflected.tables["orders"].schema
        assert include_object(reflected.tables["orders"], "orders", "table", True, None) is True

    # And on the model side, the user's tables are kept.
    for table in models.Base.metadata.tables.values():
        assert include_object(table, table.name, "table", False, None) is True
        for index in table.indexes:
            assert include_object(index, index.name, "index", False, None) is True

    # Our models of either schema version are hidden on the model side, wherever they are translated to.
    from sqla_boss.models import metadata as v24_models
    from sqla_boss.v46.models import metadata as v46_models

    for table in (*v24_models.tables.values(), *v46_models.tables.values()):
        assert include_object(table, table.name, "table", False, None) is False, table.fullname

    # Filters for another schema do not hide this one's tables (only its partitions, by their name shape).
    other = migrations.include_name_for(unique_name("t"))
    assert other(schema, "schema", {}) is True
    assert other("job", "table", {"schema_name": schema}) is True


def _diffs(connection: Connection, metadata: MetaData, **opts: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"include_schemas": True, **opts})
    return compare_metadata(context, metadata)


def test_without_the_filters_autogenerate_would_drop_pgboss(populated: tuple[Engine, str, ModuleType, str]) -> None:
    engine, schema, models, partition = populated
    with engine.connect() as connection:
        unfiltered = _diffs(connection, models.Base.metadata)
        filtered = _diffs(
            connection,
            models.Base.metadata,
            include_name=migrations.include_name_for(schema),
            include_object=migrations.include_object_for(schema),
        )
    removed = {(diff[1].schema, diff[1].name) for diff in unfiltered if diff[0] == "remove_table"}
    assert {(schema, name) for name in [*PGBOSS_TABLES, partition]} <= removed
    assert (None, migrations.version_table_name(schema)) in removed
    assert filtered == []


def test_upgrade_inside_an_env_py_keeps_the_callers_alembic_context(fresh_engine: Engine, tmp_path: Path) -> None:
    """Alembic's ``context`` is a module proxy: a nested command must not leave the user's env.py without it.

    This is what the user's env.py above does, without the subprocess: call ``migrations.upgrade`` while the
    user's own ``EnvironmentContext`` is active, then keep using ``context``.
    """
    schema = unique_name("t")
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    environment = EnvironmentContext(config, ScriptDirectory.from_config(config))
    with environment:
        try:
            with fresh_engine.begin() as connection:
                migrations.upgrade(connection, schema=schema)
            proxy = vars(alembic_context).get("_proxy")
            kept_config = getattr(alembic_context, "config", None)
        finally:
            if vars(alembic_context).get("_proxy") is not environment:
                environment._install_proxy()  # so that leaving the block does not fail on top of the assert
    assert proxy is environment, (
        "sqla_boss.migrations.upgrade() removed the calling env.py's alembic.context proxy: "
        "its context.configure() / context.run_migrations() fail after the call"
    )
    assert kept_config is config
    with fresh_engine.connect() as connection:
        assert tables_in(connection, schema) == PGBOSS_TABLES
