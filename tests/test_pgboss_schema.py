"""Our Alembic-made schema is the one pg-boss 10.4.2 makes, object for object, and each side accepts the other's.

Every test compares system-catalog snapshots (tests/catalog.py) of schemas built by the real pg-boss,
driven through tests/pgboss_node/driver.mjs, and by ``sqla_boss.migrations.upgrade``. Each schema gets a
fresh name, generic (``t_...``) and custom-looking (``jobs_a_...``), and is dropped afterwards along with
its ``public.alembic_<schema>`` version table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from catalog import Snapshot, differences, snapshot, without_relations
from pgboss import (  # noqa: F401  (the fixtures pgboss and pgboss_install)
    PgBoss,
    call,
    partition_name,
    pgboss_fixture,
    pgboss_install_fixture,
    ref,
    start,
)
from sqlalchemy import Engine, text
from support import create_queue, drop_schema, unique_name

from sqla_boss import migrations
from sqla_boss.identifiers import quote_identifier

pytestmark = pytest.mark.pgboss

PREFIXES = pytest.mark.parametrize("prefix", ["t", "jobs_a"])
"""Schema names to try: generic ones, and ones like an application's own (``jobs_a_<random>``)."""

SEND_IT = "__pgboss__send-it"

QUIET = {"supervise": False, "schedule": False}
"""pg-boss options that leave out maintenance and the timekeeper: it only installs (or checks)."""

DEAD_LETTERS = "dead letters"

QUEUES: list[tuple[str, dict[str, Any]]] = [
    # The dead-letter queue first: queue_dead_letter_fkey needs it to exist.
    (DEAD_LETTERS, {"policy": "standard"}),
    ("plain", {}),
    ("short", {"policy": "short", "retryLimit": 3, "retryDelay": 5, "retryBackoff": True}),
    ("singleton", {"policy": "singleton", "expireInSeconds": 30, "retentionMinutes": 90}),
    ("stately", {"policy": "stately", "retryLimit": 0, "retryBackoff": False, "retentionMinutes": 5}),
    (
        "with-dead-letter",
        {"policy": "standard", "retryLimit": 1, "retryDelay": 2, "expireInSeconds": 60, "deadLetter": DEAD_LETTERS},
    ),
    # Quoting: a quote, a space, upper case and a non-ASCII letter in the name.
    ("Mixed 'Quoted' é.name", {"policy": "short"}),
]


def create_queue_options(options: dict[str, Any]) -> dict[str, Any]:
    """The JSON pg-boss's createQueue hands to ``create_queue``: the policy defaults to standard."""
    return {"policy": "standard", **options}


@pytest.fixture
def new_schema(engine: Engine) -> Iterator[Callable[[str], str]]:
    """Make fresh schema names with a prefix; drops the schemas and their Alembic version tables afterwards."""
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(unique_name(prefix))
        return made[-1]

    yield make
    for schema in made:
        drop_schema(engine, schema)


def take(engine: Engine, schema: str) -> Snapshot:
    with engine.connect() as connection:
        return snapshot(connection, schema)


def install_with_pgboss(pgboss: PgBoss, schema: str, *actions: dict[str, Any]) -> list[Any]:
    """pg-boss's own install, by a start() without maintenance or timekeeper, then ``actions``."""
    return pgboss.run(schema, [start(**QUIET), *actions, call("stop")])


def install_with_alembic(engine: Engine, schema: str) -> None:
    migrations.upgrade(engine, schema=schema)


def create_queues_with_our_function(engine: Engine, schema: str) -> None:
    with engine.begin() as connection:
        for name, options in QUEUES:
            create_queue(connection, schema, name, create_queue_options(options))


def queue_rows(engine: Engine, schema: str) -> list[dict[str, Any]]:
    """The queue table without its timestamps, which differ from run to run."""
    statement = text(
        "SELECT name, policy, retry_limit, retry_delay, retry_backoff, expire_seconds, retention_minutes, "
        f"dead_letter, partition_name FROM {quote_identifier(schema)}.queue ORDER BY name"
    )
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(statement).mappings()]


def function_sources(engine: Engine, schema: str) -> dict[str, str]:
    """The bodies of the schema's functions, to tell whose installer wrote them."""
    statement = text(
        "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = :schema"
    )
    with engine.connect() as connection:
        return {row.proname: row.prosrc for row in connection.execute(statement, {"schema": schema})}


def alembic_revision(engine: Engine, schema: str) -> list[str]:
    table = quote_identifier(migrations.version_table_name(schema))
    with engine.connect() as connection:
        return list(connection.execute(text(f"SELECT version_num FROM public.{table}")).scalars())


def head_revision(schema: str) -> str:
    """The revision ``head`` leads to by default: version 24's (the history goes on to 46's)."""
    script = ScriptDirectory.from_config(migrations.make_config(schema=schema))
    assert script.get_current_head() == migrations.HEADS[12]
    head = migrations.HEADS[10]
    assert script.get_revision(head) is not None
    return head


def version_numbers(snap: Snapshot) -> Snapshot:
    """``snap`` with only the ``version`` column of the version rows: pg-boss's timers stamp the others."""
    return {**snap, "version": [row["version"] for row in snap["version"] or []]}


@PREFIXES
def test_fresh_alembic_schema_is_the_one_pgboss_installs(
    pgboss: PgBoss, engine: Engine, new_schema: Callable[[str], str], prefix: str
) -> None:
    ours, theirs = new_schema(prefix), new_schema(prefix)
    install_with_alembic(engine, ours)
    install_with_pgboss(pgboss, theirs)

    ours_snapshot, theirs_snapshot = take(engine, ours), take(engine, theirs)
    assert differences(ours_snapshot, theirs_snapshot, names=("ours", "pg-boss")) == []
    # The comparison saw the whole of pg-boss's install, not an empty schema.
    assert set(theirs_snapshot["relations"]) >= {"version", "queue", "schedule", "subscription", "job", "archive"}
    assert set(theirs_snapshot["functions"]) == {
        "create_queue(queue_name text, options json)",
        "delete_queue(queue_name text)",
    }
    assert theirs_snapshot["version"] == [{"version": 24, "maintained_on": None, "cron_on": None, "monitored_on": None}]


@PREFIXES
def test_queue_partitions_are_the_ones_pgboss_makes(
    pgboss: PgBoss, engine: Engine, new_schema: Callable[[str], str], prefix: str
) -> None:
    alembic_pgboss_queues, theirs, alembic_our_queues = new_schema(prefix), new_schema(prefix), new_schema(prefix)
    create_queues = [call("createQueue", name, options) for name, options in QUEUES]

    install_with_alembic(engine, alembic_pgboss_queues)
    pgboss.run(alembic_pgboss_queues, [start(**QUIET), *create_queues, call("stop")])
    install_with_pgboss(pgboss, theirs, *create_queues)
    install_with_alembic(engine, alembic_our_queues)
    create_queues_with_our_function(engine, alembic_our_queues)

    reference = take(engine, theirs)
    partitions = {partition_name(name) for name, _ in QUEUES}
    assert partitions <= set(reference["relations"]), "pg-boss did not create every partition"
    assert differences(take(engine, alembic_pgboss_queues), reference, names=("ours", "pg-boss")) == []
    assert differences(take(engine, alembic_our_queues), reference, names=("ours+create_queue", "pg-boss")) == []

    expected_rows = queue_rows(engine, theirs)
    assert len(expected_rows) == len(QUEUES)
    assert queue_rows(engine, alembic_pgboss_queues) == expected_rows
    assert queue_rows(engine, alembic_our_queues) == expected_rows


@PREFIXES
def test_pgboss_with_defaults_uses_an_alembic_schema_without_migrating_it(
    pgboss: PgBoss, engine: Engine, new_schema: Callable[[str], str], prefix: str
) -> None:
    ours, theirs = new_schema(prefix), new_schema(prefix)
    install_with_alembic(engine, ours)
    before = take(engine, ours)
    sources_before = function_sources(engine, ours)

    # start() with every default: migrate, schedule and supervise on.
    actions = [
        start(),
        call("createQueue", "work", {"policy": "short", "retryLimit": 1}),
        call("send", "work", {"n": 1}),
        call("fetch", "work"),
        call("complete", "work", ref(3, 0, "id")),
        call("stop"),
    ]
    _, _, job_id, fetched, completed, _ = pgboss.run(ours, actions)
    pgboss.run(theirs, actions)

    assert [job["id"] for job in fetched] == [job_id]
    assert fetched[0]["data"] == {"n": 1}
    assert completed["affected"] == 1
    with engine.connect() as connection:
        state, policy, retry_limit = connection.execute(
            text(f"SELECT state::text, policy, retry_limit FROM {quote_identifier(ours)}.job WHERE id = :id"),
            {"id": job_id},
        ).one()
    assert (state, policy, retry_limit) == ("completed", "short", 1)

    after = take(engine, ours)
    # pg-boss wrote no DDL of its own: apart from the partitions of the timekeeper's queue and ours,
    # the schema is as Alembic left it, with our function bodies and the same version.
    new_partitions = {partition_name(SEND_IT), partition_name("work")}
    assert new_partitions <= set(after["relations"])
    assert differences(version_numbers(without_relations(after, new_partitions)), version_numbers(before)) == []
    assert function_sources(engine, ours) == sources_before
    assert [row["version"] for row in after["version"]] == [24]
    # And it is the schema pg-boss ends up with when it installs it itself and does the same.
    assert differences(version_numbers(after), version_numbers(take(engine, theirs)), names=("ours", "pg-boss")) == []


@PREFIXES
def test_alembic_upgrade_adopts_a_pgboss_schema_unchanged(
    pgboss: PgBoss, engine: Engine, new_schema: Callable[[str], str], prefix: str
) -> None:
    theirs = new_schema(prefix)
    install_with_pgboss(pgboss, theirs, call("createQueue", "q", {"policy": "stately"}), call("send", "q", {"n": 1}))
    before = take(engine, theirs)
    sources_before = function_sources(engine, theirs)

    install_with_alembic(engine, theirs)

    assert differences(take(engine, theirs), before, names=("after upgrade", "before")) == []
    assert function_sources(engine, theirs) == sources_before
    assert alembic_revision(engine, theirs) == [head_revision(theirs)]
    # pg-boss carries on with the adopted schema as before.
    results = pgboss.run(theirs, [start(**QUIET, migrate=False), call("fetch", "q"), call("stop")])
    assert [job["data"] for job in results[1]] == [{"n": 1}]


def test_our_create_queue_works_in_a_schema_named_like_job_i(engine: Engine, new_schema: Callable[[str], str]) -> None:
    # pg-boss 10.4's installer rewrites "job_i" inside create_queue and breaks such schemas (PGBOSS10.md
    # trap 24); ours must not. No pg-boss here: compare with the same queues in a generic Alembic schema.
    odd, generic = new_schema("t_job_ix"), new_schema("t")
    assert "job_i" in odd
    for schema in (odd, generic):
        install_with_alembic(engine, schema)
        create_queues_with_our_function(engine, schema)

    quoted = quote_identifier(odd)
    with engine.begin() as connection:
        job_id = connection.execute(
            text(
                f"INSERT INTO {quoted}.job (name, data, policy) VALUES ('short', '{{\"n\": 1}}', 'short') RETURNING id"
            )
        ).scalar_one()
    with engine.connect() as connection:
        row = connection.execute(
            text(f"SELECT name, data, state::text AS state, retry_limit FROM {quoted}.job WHERE id = :id"),
            {"id": job_id},
        ).one()
        partition = connection.execute(
            text(f"SELECT partition_name FROM {quoted}.queue WHERE name = 'short'")
        ).scalar_one()
        in_partition = connection.execute(
            text(f"SELECT count(*) FROM {quoted}.{quote_identifier(partition)} WHERE id = :id"), {"id": job_id}
        ).scalar_one()
    assert tuple(row) == ("short", {"n": 1}, "created", 2)
    assert partition == partition_name("short")
    assert in_partition == 1
    assert differences(take(engine, odd), take(engine, generic), names=("job_i schema", "generic schema")) == []
