"""The opt-in fetch index (``sqla_boss.schema.FETCH_INDEX``): installed only when asked, on every partition.

``sqla_boss_job_fetch ON <schema>.job (name, priority DESC, created_on, id) WHERE state < 'active'`` is built on
the partitioned ``job`` table through its own Alembic revision (``fetch_index_v1``, tracked in
``public.alembic_idx_<schema>``), so PostgreSQL gives every partition a copy, and every partition attached later
one too. These tests check that a plain upgrade never installs it, that the opt-in revision, its downgrade and
the CLI install and drop it on the parent and every partition, that our fetch reads it instead of sorting the
backlog (EXPLAIN of the very statement ``Boss.fetch`` runs) without changing the order, that pg-boss 10.4.2
works (and fetches through it) with it in place, and that ``python -m bench --index on`` still runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg.sql
import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from catalog import Snapshot, differences, snapshot, without_relations
from pgboss import (  # noqa: F401  (the fixtures pgboss, pgboss12 and pgboss_install)
    PgBoss,
    call,
    partition_name,
    pgboss12_fixture,
    pgboss_fixture,
    pgboss_install_fixture,
    ref,
    start,
)
from sqlalchemy import URL, Engine, event, text
from sqlalchemy.orm import Session
from support import ROOT, drop_schema, schema_exists, tables_in, unique_name

from sqla_boss import Boss, cli, migrations
from sqla_boss.errors import SchemaVersionError
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import FETCH_INDEX_NAME

PGBOSS_TABLES = {"archive", "job", "queue", "schedule", "subscription", "version"}
FETCH_KEY = "USING btree (name, priority DESC, created_on, id) WHERE (state < 'active'::{schema}.job_state)"
"""The tail of ``pg_get_indexdef`` of the fetch index, on the parent and on each partition."""

QUIET = {"supervise": False, "schedule": False}
"""pg-boss options that leave out maintenance and the timekeeper."""

BACKLOG = 5000

BENCH_SCHEMA = "bench_sqla_boss"
"""The fixed schema ``python -m bench`` works in (bench/run.py)."""


@pytest.fixture
def schema_name(engine: Engine) -> Iterator[str]:
    """conftest's ``schema_name``, also dropping the fetch index's own version table ``alembic_idx_<schema>``."""
    name = unique_name("t")
    yield name
    drop_schema(engine, name)
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE IF EXISTS public.{migrations.fetch_index_version_table_name(name)}"))


# ------------------------------------------------------------------------------------------ catalog helpers


@dataclass(frozen=True)
class FetchIndex:
    table: str
    name: str
    definition: str
    parent: str | None
    valid: bool


def fetch_indexes(engine: Engine, schema: str) -> dict[str, FetchIndex]:
    """Indexes of ``schema`` that are, or look like, the fetch index, by the table they are on.

    "Looks like": named ``sqla_boss...``, or on ``(name, priority DESC, created_on, id)`` whatever the predicate.
    """
    statement = text(
        """
        SELECT tc.relname AS table_name, ic.relname AS index_name, pg_get_indexdef(ic.oid) AS definition,
               i.indisvalid AS valid,
               (SELECT p.relname FROM pg_inherits inh JOIN pg_class p ON p.oid = inh.inhparent
                WHERE inh.inhrelid = ic.oid) AS parent
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class tc ON tc.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE n.nspname = :schema
        """
    )
    found: dict[str, FetchIndex] = {}
    with engine.connect() as connection:
        for row in connection.execute(statement, {"schema": schema}):
            if row.index_name.startswith("sqla_boss") or "(name, priority DESC, created_on, id)" in row.definition:
                assert row.table_name not in found, f"two fetch-like indexes on {row.table_name}"
                found[row.table_name] = FetchIndex(
                    row.table_name, row.index_name, row.definition, row.parent, row.valid
                )
    return found


def partitions(engine: Engine, schema: str) -> set[str]:
    """The partitions of ``schema.job``."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(:t AS regclass)"
            ),
            {"t": f"{quote_identifier(schema)}.job"},
        )
        return set(rows.scalars())


def assert_fetch_index_everywhere(engine: Engine, schema: str) -> dict[str, FetchIndex]:
    """The fetch index is on ``job`` and a copy of it, attached to it, on every partition; returns them."""
    found = fetch_indexes(engine, schema)
    expected_tables = {"job"} | partitions(engine, schema)
    assert set(found) == expected_tables, f"fetch index on {sorted(found)}, expected on {sorted(expected_tables)}"
    key = FETCH_KEY.format(schema=schema)
    parent = found["job"]
    assert parent.definition == f"CREATE INDEX {FETCH_INDEX_NAME} ON ONLY {schema}.job {key}"
    assert parent.parent is None
    assert parent.valid  # an index on a partitioned table is valid once every partition has its copy
    for table, index in found.items():
        if table == "job":
            continue
        assert index.definition == f"CREATE INDEX {index.name} ON {schema}.{table} {key}"
        assert index.parent == FETCH_INDEX_NAME, f"the copy on {table} is not attached to {FETCH_INDEX_NAME}"
        assert index.valid
    return found


def index_oid(engine: Engine, schema: str) -> int | None:
    with engine.connect() as connection:
        value = connection.execute(
            text("SELECT to_regclass(:name)::oid"), {"name": f"{quote_identifier(schema)}.{FETCH_INDEX_NAME}"}
        ).scalar()
    return None if value is None else int(value)


def table_exists(engine: Engine, qualified: str) -> bool:
    with engine.connect() as connection:
        return connection.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": qualified}).scalar_one()


def fetch_version_table(schema: str) -> str:
    return f"public.{migrations.fetch_index_version_table_name(schema)}"


def fetch_revision(engine: Engine, schema: str) -> str | None:
    """The revision Alembic reads from the fetch index's version table (``None``: no table, or empty)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"version_table": migrations.fetch_index_version_table_name(schema), "version_table_schema": "public"},
        )
        return context.get_current_revision()


def main_revision(engine: Engine, schema: str) -> str | None:
    with engine.connect() as connection:
        return migrations.current_revision(connection, schema)


def take(engine: Engine, schema: str) -> Snapshot:
    with engine.connect() as connection:
        return snapshot(connection, schema)


def without_fetch_indexes(snap: Snapshot, indexes: dict[str, FetchIndex]) -> Snapshot:
    """``snap`` without the fetch index and its copies (as indexes, and as relations of kind ``i``)."""
    names = {index.name for index in indexes.values()}
    return {
        **snap,
        "indexes": {key: value for key, value in snap["indexes"].items() if key not in names},
        "relations": {key: value for key, value in snap["relations"].items() if key not in names},
    }


def version_numbers(snap: Snapshot) -> Snapshot:
    """``snap`` with only the ``version`` column of the version rows: pg-boss's timers stamp the others."""
    return {**snap, "version": [row["version"] for row in snap["version"] or []]}


def job_rows(engine: Engine, schema: str) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT name, id, state::text, data FROM {quote_identifier(schema)}.job ORDER BY name, id")
        )
        return [tuple(row) for row in rows]


def create_queues(engine: Engine, schema: str, *names: str) -> None:
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        for name in names:
            boss.create_queue(name)


def analyze(engine: Engine, schema: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"ANALYZE {quote_identifier(schema)}.job"))


# ---------------------------------------------------------------------------------------------- opt-in


def test_a_plain_upgrade_installs_no_fetch_index(engine: Engine, installed_schema: str) -> None:
    create_queues(engine, installed_schema, "q")
    migrations.upgrade(engine, schema=installed_schema)  # and a second, adopting run neither

    assert partitions(engine, installed_schema) == {partition_name("q")}
    assert fetch_indexes(engine, installed_schema) == {}
    assert not table_exists(engine, fetch_version_table(installed_schema))
    assert main_revision(engine, installed_schema) == "pgboss_v24"


def test_the_fetch_index_revision_covers_the_parent_and_every_partition(engine: Engine, installed_schema: str) -> None:
    schema = installed_schema
    create_queues(engine, schema, "before one", "before two")
    before = take(engine, schema)

    migrations.upgrade(engine, schema=schema, fetch_index=True)

    found = assert_fetch_index_everywhere(engine, schema)
    assert set(found) == {"job", partition_name("before one"), partition_name("before two")}
    assert fetch_revision(engine, schema) == "fetch_index_v1"
    assert main_revision(engine, schema) == "pgboss_v24"
    # Nothing but the index and its copies was added.
    installed = take(engine, schema)
    assert differences(without_fetch_indexes(installed, found), before, names=("with index", "before")) == []

    # Twice is a no-op: the same index object, the same catalog, the same revision; a plain upgrade leaves it too.
    oid = index_oid(engine, schema)
    migrations.upgrade(engine, schema=schema, fetch_index=True)
    migrations.upgrade(engine, schema=schema)
    assert index_oid(engine, schema) == oid
    assert differences(take(engine, schema), installed, names=("again", "first")) == []
    assert fetch_revision(engine, schema) == "fetch_index_v1"
    assert main_revision(engine, schema) == "pgboss_v24"

    # A queue created afterwards, by Boss.create_queue and by the schema's create_queue function, gets a copy.
    create_queues(engine, schema, "after")
    with engine.begin() as connection:
        connection.execute(text(f"SELECT {schema}.create_queue('after sql', '{{\"policy\": \"short\"}}'::json)"))
    found = assert_fetch_index_everywhere(engine, schema)
    assert {partition_name("after"), partition_name("after sql")} <= set(found)
    assert len(found) == 5


def test_the_fetch_index_downgrade_drops_it_and_keeps_pgboss_and_its_jobs(
    engine: Engine, installed_schema: str
) -> None:
    schema = installed_schema
    create_queues(engine, schema, "q", "r")
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        boss.insert([{"name": "q", "data": {"n": n}, "priority": n} for n in range(5)])
        boss.send("r", {"n": "r"})
    before, jobs = take(engine, schema), job_rows(engine, schema)
    assert len(jobs) == 6

    migrations.upgrade(engine, schema=schema, fetch_index=True)
    assert len(assert_fetch_index_everywhere(engine, schema)) == 3
    migrations.downgrade(engine, schema=schema, fetch_index=True)

    assert fetch_indexes(engine, schema) == {}
    assert differences(take(engine, schema), before, names=("after downgrade", "before")) == []
    assert job_rows(engine, schema) == jobs
    assert fetch_revision(engine, schema) is None  # Alembic keeps its version table, empty
    assert main_revision(engine, schema) == "pgboss_v24"
    with Session(engine) as session, session.begin():
        assert [job.data for job in Boss(session, schema).fetch("q")] == [{"n": 4}]

    # And it can be installed again.
    migrations.upgrade(engine, schema=schema, fetch_index=True)
    assert len(assert_fetch_index_everywhere(engine, schema)) == 3
    assert fetch_revision(engine, schema) == "fetch_index_v1"


def test_a_plain_downgrade_to_base_with_the_fetch_index_drops_everything(engine: Engine, installed_schema: str) -> None:
    schema = installed_schema
    create_queues(engine, schema, "q")
    migrations.upgrade(engine, schema=schema, fetch_index=True)
    assert len(assert_fetch_index_everywhere(engine, schema)) == 2

    migrations.downgrade(engine, schema=schema)

    assert not schema_exists(engine, schema)
    assert main_revision(engine, schema) is None


def test_reinstalling_after_a_plain_downgrade_gets_the_fetch_index_back(engine: Engine, installed_schema: str) -> None:
    """A plain downgrade to base drops the index with the tables; asking for it again must create it again."""
    schema = installed_schema
    create_queues(engine, schema, "q")
    migrations.upgrade(engine, schema=schema, fetch_index=True)
    migrations.downgrade(engine, schema=schema)
    assert not schema_exists(engine, schema)

    migrations.upgrade(engine, schema=schema)
    create_queues(engine, schema, "q")
    migrations.upgrade(engine, schema=schema, fetch_index=True)

    assert fetch_indexes(engine, schema) != {}, (
        f"upgrade(fetch_index=True) created no index: {fetch_version_table(schema)} still records "
        f"{fetch_revision(engine, schema)!r} from before the plain downgrade to base"
    )
    assert len(assert_fetch_index_everywhere(engine, schema)) == 2
    assert fetch_revision(engine, schema) == "fetch_index_v1"


def test_the_fetch_index_revision_is_found_under_a_path_with_spaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package can live under ``/Users/Jane Doe/...``: the opt-in revision's
    folder must stay one location, not be split on the space (which finds no revision, so the upgrade is a no-op)."""
    location = tmp_path / "with space" / "fetch_index"
    shutil.copytree(migrations.FETCH_INDEX_LOCATION, location, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrations, "FETCH_INDEX_LOCATION", str(location))

    script = ScriptDirectory.from_config(migrations.make_config(schema="jobs", fetch_index=True))

    assert script.get_current_head() == "fetch_index_v1", f"version locations: {script.version_locations}"


@pytest.mark.parametrize("state", ["absent", "empty", "other_version"])
def test_the_fetch_index_revision_refuses_a_schema_without_pgboss_24(
    engine: Engine, schema_name: str, state: str
) -> None:
    if state == "empty":
        with engine.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema_name}"))
    elif state == "other_version":
        migrations.upgrade(engine, schema=schema_name)
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE {schema_name}.version SET version = 23"))
    before = take(engine, schema_name)

    refusal = "no pg-boss schema version 24|pg-boss schema version 23; this sqla_boss runs version 24"
    with pytest.raises(SchemaVersionError, match=rf"schema '{schema_name}' holds ({refusal})"):
        migrations.upgrade(engine, schema=schema_name, fetch_index=True)

    assert take(engine, schema_name) == before
    assert fetch_indexes(engine, schema_name) == {}
    assert schema_exists(engine, schema_name) == (state != "absent")
    assert not table_exists(engine, fetch_version_table(schema_name))
    assert table_exists(engine, f"public.{migrations.version_table_name(schema_name)}") == (state == "other_version")


# ------------------------------------------------------------------------------------------------- CLI


def test_the_cli_installs_and_drops_the_fetch_index(
    engine: Engine, schema_name: str, database_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    url = database_url.render_as_string(hide_password=False)
    common = ["--url", url, "--schema", schema_name]

    assert cli.main(["migrate", *common, "--fetch-index"]) == 2  # no pg-boss there yet
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"sqla-boss: schema '{schema_name}' holds no pg-boss schema version 24")
    assert "Traceback" not in captured.err
    assert not schema_exists(engine, schema_name)
    assert not table_exists(engine, fetch_version_table(schema_name))

    assert cli.main(["migrate", *common]) == 0
    capsys.readouterr()
    create_queues(engine, schema_name, "q")
    assert fetch_indexes(engine, schema_name) == {}

    assert cli.main(["migrate", *common, "--fetch-index"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"sqla-boss: created the fetch index of schema '{schema_name}'\n"
    assert captured.err == ""
    assert set(assert_fetch_index_everywhere(engine, schema_name)) == {"job", partition_name("q")}
    assert fetch_revision(engine, schema_name) == "fetch_index_v1"

    assert cli.main(["downgrade", "base", *common, "--fetch-index"]) == 0
    captured = capsys.readouterr()
    removed = f"removed the fetch index of schema '{schema_name}' and its Alembic version table"
    assert captured.out == f"sqla-boss: {removed}\n"
    assert captured.err == ""
    assert fetch_indexes(engine, schema_name) == {}
    assert fetch_revision(engine, schema_name) is None
    assert tables_in(engine, schema_name) == PGBOSS_TABLES | {partition_name("q")}
    assert main_revision(engine, schema_name) == "pgboss_v24"


# --------------------------------------------------------------------------------------- our fetch uses it


def plan_nodes(node: dict[str, Any], *, subplans: bool = True) -> Iterator[dict[str, Any]]:
    """``node`` and every node beneath it; without ``subplans``, not those of its SubPlans (fetch's ``busy`` check)."""
    yield node
    for child in node.get("Plans", []):
        if subplans or child.get("Parent Relationship") != "SubPlan":
            yield from plan_nodes(child, subplans=subplans)


def relations_under(node: dict[str, Any]) -> set[str]:
    return {item["Relation Name"] for item in plan_nodes(node) if "Relation Name" in item}


@dataclass
class Explained:
    plan: dict[str, Any]
    text: str

    def candidates(self) -> dict[str, Any]:
        """The plan of fetch's ``candidates`` CTE: the scan of the queue's backlog."""
        [cte] = [node for node in plan_nodes(self.plan) if node.get("Subplan Name") == "CTE candidates"]
        return cte

    def index_scans(self, relation: str) -> list[str]:
        """The indexes plain ``Index Scan`` nodes of ``relation`` read for the candidates CTE's rows."""
        return [
            node["Index Name"]
            for node in plan_nodes(self.candidates(), subplans=False)
            if node["Node Type"] == "Index Scan" and node.get("Relation Name") == relation
        ]

    def sorts_over(self, relation: str) -> list[dict[str, Any]]:
        """Sort nodes anywhere in the plan with a scan of ``relation`` beneath them."""
        return [
            node for node in plan_nodes(self.plan) if node["Node Type"] == "Sort" and relation in relations_under(node)
        ]


class FetchCapture:
    """Records every statement (and its parameters) the engine's cursors execute, while active."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []

    def _record(self, connection: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        self.statements.append((statement, parameters))

    def __enter__(self) -> FetchCapture:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def fetch_statements(self) -> list[tuple[str, Any]]:
        """The fetch statements run, with their parameters."""
        return [(sql, params) for sql, params in self.statements if "WITH candidates AS" in sql]

    def fetch_statement(self) -> tuple[str, Any]:
        [found] = self.fetch_statements()
        return found


def explain(session: Session, statement: str, parameters: dict[str, Any], *, generic: bool = False) -> Explained:
    """EXPLAIN (not ANALYZE: nothing runs) ``statement`` with ``parameters`` on the session's own psycopg cursor.

    The planner sees the parameters' values (a custom plan), unless ``generic``: then the statement is PREPAREd
    and its generic plan explained (``plan_cache_mode = force_generic_plan``), the plan a prepared statement
    gets once PostgreSQL stops re-planning it (psycopg prepares a statement on its sixth run).
    """
    cursor = session.connection().connection.cursor()
    try:
        if not generic:
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            plan = cursor.fetchone()[0][0]["Plan"]
            cursor.execute("EXPLAIN " + statement, parameters)
            return Explained(plan, "\n".join(row[0] for row in cursor.fetchall()))
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        cursor.execute("PREPARE sqla_boss_fetch_probe AS " + re.sub(r"%\((\w+)\)s", number, statement))
        try:
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            # As literals: EXECUTE's arguments take the prepared parameters' types, which bound values could not.
            arguments = psycopg.sql.SQL(", ").join(psycopg.sql.Literal(parameters[name]) for name in names)
            execute = psycopg.sql.SQL("EXECUTE sqla_boss_fetch_probe({})").format(arguments)
            cursor.execute(psycopg.sql.SQL("EXPLAIN (FORMAT JSON) {}").format(execute))
            plan = cursor.fetchone()[0][0]["Plan"]
            cursor.execute(psycopg.sql.SQL("EXPLAIN {}").format(execute))
            return Explained(plan, "\n".join(row[0] for row in cursor.fetchall()))
        finally:
            cursor.execute("DEALLOCATE sqla_boss_fetch_probe")
    finally:
        cursor.close()


def explain_fetch(engine: Engine, schema: str, queue: str) -> tuple[Explained, Explained, list[uuid.UUID]]:
    """Run ``Boss.fetch(queue)``, EXPLAIN the statement it ran with its parameters, roll back.

    Returns the custom plan, the generic plan and the ids of the jobs the fetch returned.
    """
    with Session(engine) as session, session.begin(), FetchCapture(engine) as capture:
        ids = [job.id for job in Boss(session, schema).fetch(queue)]
        custom = explain(session, *capture.fetch_statement())
        generic = explain(session, *capture.fetch_statement(), generic=True)
        session.rollback()
    return custom, generic, ids


def test_our_fetch_reads_the_fetch_index_instead_of_sorting_the_backlog(engine: Engine, installed_schema: str) -> None:
    schema = installed_schema
    create_queues(engine, schema, "backlog", "other")
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        boss.insert([{"name": "backlog", "data": {"n": n}, "priority": n % 5} for n in range(BACKLOG)])
        boss.insert([{"name": "other", "data": {"n": n}, "priority": 9} for n in range(100)])
    analyze(engine, schema)
    partition = partition_name("backlog")

    *plans_without, fetched_without = explain_fetch(engine, schema, "backlog")
    assert len(fetched_without) == 1
    for without in plans_without:
        assert without.index_scans(partition) == [], without.text
        assert without.sorts_over(partition) != [], f"no sort without the index?\n{without.text}"

    migrations.upgrade(engine, schema=schema, fetch_index=True)
    analyze(engine, schema)
    partition_index = assert_fetch_index_everywhere(engine, schema)[partition].name

    *plans_with, fetched_with = explain_fetch(engine, schema, "backlog")
    # Both plans: the generic one too, where the planner cannot see the parameters' values and so needs fetch's
    # state < 'active' written as a constant to match the partial index.
    for with_index in plans_with:
        assert with_index.index_scans(partition) == [partition_index], with_index.text
        assert with_index.sorts_over(partition) == [], with_index.text
    # The same job either way: priority 4, the oldest, the lowest id.
    assert fetched_with == fetched_without


def test_fetch_order_is_the_same_with_the_fetch_index(engine: Engine, installed_schema: str) -> None:
    schema = installed_schema
    create_queues(engine, schema, "q")
    # (priority, minutes old): ties on priority broken by age, and two exact ties broken by id.
    shapes = [(0, 5), (5, 1), (5, 3), (10, 2), (-1, 9), (3, 4), (3, 4), (0, 7), (10, 2), (5, 8)]
    ids = [uuid.uuid4() for _ in shapes]
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        inserted = boss.insert(
            [{"name": "q", "id": str(job_id), "priority": p} for job_id, (p, _) in zip(ids, shapes, strict=True)]
        )
        now = session.scalar(text("SELECT now()"))
        for job_id, (_, minutes) in zip(ids, shapes, strict=True):
            session.execute(
                text(f"UPDATE {schema}.job SET created_on = :at WHERE name = 'q' AND id = :id"),
                {"at": now - dt.timedelta(minutes=minutes), "id": job_id},
            )
    assert sorted(inserted) == sorted(ids)
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT id, priority, created_on FROM {schema}.job WHERE name = 'q'")).all()
    expected = [row.id for row in sorted(rows, key=lambda row: (-row.priority, row.created_on, row.id))]
    assert [row.priority for row in rows if row.id == expected[0]] == [10]

    def fetch_one_by_one(*, force_index: bool) -> list[uuid.UUID]:
        with Session(engine) as session, session.begin(), FetchCapture(engine) as capture:
            if force_index:  # ten rows: without this the planner would rather sort them
                for setting in ("enable_sort", "enable_seqscan", "enable_bitmapscan"):
                    session.execute(text(f"SET LOCAL {setting} = off"))
            boss = Boss(session, schema)
            order = []
            for _ in shapes:
                [job] = boss.fetch("q")
                order.append(job.id)
            assert boss.fetch("q") == []
            if force_index:
                explained = explain(session, *capture.fetch_statements()[0])
                partition = partition_name("q")
                assert explained.index_scans(partition) == [fetch_indexes(engine, schema)[partition].name]
                assert explained.sorts_over(partition) == []
            session.rollback()
        return order

    without = fetch_one_by_one(force_index=False)
    migrations.upgrade(engine, schema=schema, fetch_index=True)
    with_index = fetch_one_by_one(force_index=True)
    assert without == expected
    assert with_index == expected


# ----------------------------------------------------------------------------------- pg-boss with the index


@pytest.mark.pgboss
def test_pgboss_works_with_the_fetch_index_in_place(pgboss: PgBoss, engine: Engine, installed_schema: str) -> None:
    schema = installed_schema
    migrations.upgrade(engine, schema=schema, fetch_index=True)
    before = take(engine, schema)

    actions = [
        start(),  # every default: migrate (a version check here), schedule and supervise on
        call("createQueue", "work", {"policy": "short"}),
        call("send", "work", {"n": 1}),
        call("fetch", "work"),
        call("complete", "work", ref(3, 0, "id")),
        call("createQueue", "retrying", {"retryLimit": 1, "retryDelay": 0}),
        call("send", "retrying", {"n": 2}),
        call("fetch", "retrying"),
        call("fail", "retrying", ref(7, 0, "id"), {"why": "first"}),
        call("fetch", "retrying"),
        call("fail", "retrying", ref(9, 0, "id"), {"why": "second"}),
        call("getJobById", "retrying", ref(6)),
        call("stop"),
    ]
    results = pgboss.run(schema, actions)
    work_id, [fetched], completed = results[2], results[3], results[4]
    retry_id, first_try, first_fail, second_try, second_fail, final = results[6:12]

    assert fetched["id"] == work_id
    assert fetched["data"] == {"n": 1}
    assert completed["affected"] == 1
    assert [job["id"] for job in first_try] == [retry_id]
    assert [job["id"] for job in second_try] == [retry_id]  # retried at once (retryDelay 0)
    assert first_fail["affected"] == second_fail["affected"] == 1
    assert final["state"] == "failed"
    assert final["retryCount"] == 1
    with engine.connect() as connection:
        states = dict(connection.execute(text(f"SELECT name, state::text FROM {schema}.job")).all())
    assert states == {"work": "completed", "retrying": "failed"}

    # pg-boss wrote no DDL of its own beyond its queues' partitions, each of which got a copy of the index;
    # the version is still 24.
    after = take(engine, schema)
    found = assert_fetch_index_everywhere(engine, schema)
    new_partitions = set(found) - {"job"} - set(before["relations"])
    assert {partition_name("work"), partition_name("retrying")} <= new_partitions
    assert differences(version_numbers(without_relations(after, new_partitions)), version_numbers(before)) == []
    assert [row["version"] for row in after["version"]] == [24]
    assert fetch_revision(engine, schema) == "fetch_index_v1"
    assert main_revision(engine, schema) == "pgboss_v24"


def index_scans(engine: Engine, index: str) -> int:
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(
            connection.execute(
                text("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = :index"), {"index": index}
            ).scalar_one()
        )


@pytest.mark.pgboss
def test_pgboss_fetches_through_the_fetch_index(pgboss: PgBoss, engine: Engine, installed_schema: str) -> None:
    schema = installed_schema
    create_queues(engine, schema, "backlog")
    with Session(engine) as session, session.begin():
        Boss(session, schema).insert([{"name": "backlog", "data": {"n": n}, "priority": n % 5} for n in range(BACKLOG)])
    migrations.upgrade(engine, schema=schema, fetch_index=True)
    analyze(engine, schema)
    partition_index = assert_fetch_index_everywhere(engine, schema)[partition_name("backlog")].name
    scans_before = index_scans(engine, partition_index)

    actions = [start(**QUIET, migrate=False), call("fetch", "backlog", {"includeMetadata": True}), call("stop")]
    results = pgboss.run(schema, actions)

    [job] = results[1]
    assert job["priority"] == 4
    # The pg-boss backends have exited, so their statistics are flushed; allow the collector a moment.
    deadline = time.monotonic() + 10
    while index_scans(engine, partition_index) <= scans_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert index_scans(engine, partition_index) > scans_before, "pg-boss's fetch did not read the fetch index"


# ------------------------------------------------------------------------------------------------ the bench


def run_bench(tmp_path: Path, database_url: URL, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    output = tmp_path / "bench.json"
    env = {**os.environ, "DATABASE_URL": database_url.render_as_string(hide_password=False)}
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--scale", "0.01", "--repeat", "1", *args, "--json", str(output)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, f"bench failed:\n{completed.stdout}\n{completed.stderr}"
    return completed, json.loads(output.read_text())


def assert_bench_cleaned_up(engine: Engine) -> None:
    """The bench drops its schema and both its version tables when it ends."""
    assert not schema_exists(engine, BENCH_SCHEMA)
    for table in (migrations.version_table_name(BENCH_SCHEMA), migrations.fetch_index_version_table_name(BENCH_SCHEMA)):
        assert not table_exists(engine, f"public.{table}")


def medians(result: dict[str, Any]) -> dict[tuple[str, str], float]:
    return {(row["workload"], row["client"]): row["median"] for row in result["rows"]}


@pytest.mark.slow
def test_the_bench_runs_with_the_fetch_index(tmp_path: Path, database_url: URL, engine: Engine) -> None:
    completed, result = run_bench(tmp_path, database_url, "--no-pgboss", "--only", "W1,W2,W3", "--index", "on")

    found = medians(result)
    for workload in ("W1", "W2", "W3"):
        rows = {key: value for key, value in found.items() if key[0].startswith(workload + " ")}
        assert rows, f"no {workload} row in {sorted(found)}"
        assert all(value > 0 for value in rows.values()), rows
    assert all(workload.endswith("+index") for workload, _ in found if workload.startswith("W3"))
    assert not any(client == "pg-boss 10.4.2" for _, client in found)
    assert "| workload |" in completed.stdout
    assert_bench_cleaned_up(engine)


@pytest.mark.slow
@pytest.mark.pgboss
def test_the_bench_runs_against_pgboss(tmp_path: Path, database_url: URL, engine: Engine, pgboss: PgBoss) -> None:
    completed, result = run_bench(tmp_path, database_url, "--only", "W1")

    found = medians(result)
    pgboss_rows = {key: value for key, value in found.items() if key[1] == "pg-boss 10.4.2"}
    assert pgboss_rows, f"no pg-boss row in {sorted(found)}"
    assert all(key[0].startswith("W1 ") and value > 0 for key, value in pgboss_rows.items())
    assert "| workload |" in completed.stdout
    assert "pg-boss 10.4.2 |" in completed.stdout
    assert_bench_cleaned_up(engine)


@pytest.mark.slow
@pytest.mark.pgboss
def test_the_bench_runs_on_version_46_against_pgboss_12(
    tmp_path: Path, database_url: URL, engine: Engine, pgboss12: PgBoss
) -> None:
    completed, result = run_bench(tmp_path, database_url, "--pgboss", "12", "--only", "W1,W3")

    found = medians(result)
    assert "pg-boss 12.38.0 |" in completed.stdout
    assert result["pgboss"] == "pg-boss 12.38.0"
    assert {client for _, client in found} == {"sqla_boss sync", "sqla_boss async", "pg-boss 12.38.0"}
    assert any(workload.startswith("W3") and workload.endswith(", autocommit") for workload, _ in found)
    assert not any("+index" in workload or workload.startswith("W1 raw") for workload, _ in found)
    assert all(value > 0 for value in found.values())
    assert_bench_cleaned_up(engine)
