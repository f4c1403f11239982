"""The schema-version guard: the repository and maintenance refuse a schema this release does not run (another
pg-boss version, or no pg-boss at all), before anything is written and leaving the transaction usable; the
check runs once per connection pool and schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import URL, Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from support import drop_schema

from sqla_boss import Boss, Maintenance
from sqla_boss.errors import SchemaNotInstalledError, SchemaVersionError
from sqla_boss.schema import schema_translate_map


def set_version(engine: Engine, schema: str, version: int) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {schema}.version SET version = :v"), {"v": version})


def still_usable(session: Session) -> None:
    assert session.execute(text("SELECT 42")).scalar() == 42


def test_a_schema_at_another_version_is_refused_and_the_transaction_stays_usable(
    api: str, engine: Engine, session: Session, make_boss: Callable[..., Any], installed_schema: str
) -> None:
    set_version(engine, installed_schema, 25)  # what a Node pg-boss 11 starting on the shared schema leaves
    boss = make_boss(session, installed_schema)
    refusal = r"holds pg-boss schema version 25; this sqla_boss runs versions 24 \(.*\), 46 \(pg-boss 12.38\); pg-boss"
    with pytest.raises(SchemaVersionError, match=refusal + r" 12.38 migrates it to 46 when it starts, which"):
        boss.create_queue("emails")
    with pytest.raises(SchemaVersionError) as raised:
        boss.send("emails", {"n": 1})
    assert (raised.value.found, raised.value.supported) == (25, (24, 46))
    still_usable(session)
    assert session.execute(text(f"SELECT count(*) FROM {installed_schema}.queue")).scalar() == 0


def test_a_schema_without_pgboss_is_refused_with_what_to_do(
    api: str, engine: Engine, session: Session, make_boss: Callable[..., Any], installed_schema: str
) -> None:
    drop_schema(engine, installed_schema)
    with pytest.raises(
        SchemaNotInstalledError, match=rf"schema '{installed_schema}' holds no pg-boss tables; run sqla-boss migrate"
    ):
        make_boss(session, installed_schema).get_queues()
    still_usable(session)


def test_maintenance_refuses_another_version(engine: Engine, installed_schema: str) -> None:
    set_version(engine, installed_schema, 46)
    with pytest.raises(SchemaVersionError, match="version 46"):
        Maintenance(engine, installed_schema).maintain()


@pytest.fixture
def counted(database_url: URL) -> Iterator[tuple[Engine, list[str]]]:
    """An engine of its own (a pool no other test verified), and the statements it runs."""
    engine = create_engine(database_url, poolclass=NullPool)
    statements: list[str] = []

    def record(connection: Connection, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield engine, statements
    finally:
        engine.dispose()


def test_the_check_runs_once_per_pool_and_schema(counted: tuple[Engine, list[str]], installed_schema: str) -> None:
    engine, statements = counted
    translated = engine.execution_options(schema_translate_map=schema_translate_map(installed_schema))

    def checks() -> int:
        return sum("to_regclass" in statement for statement in statements)

    with Session(translated) as session, session.begin():
        Boss(session, installed_schema).create_queue("emails")
    assert checks() == 1
    for _ in range(3):
        with Session(translated) as session, session.begin():
            Boss(session, installed_schema).send("emails", {"n": 1})
    # Another engine made from this one with other options shares its pool, and its check.
    with Session(engine.execution_options(schema_translate_map=schema_translate_map(installed_schema))) as session:
        Boss(session, installed_schema).get_queues()
    assert checks() == 1
