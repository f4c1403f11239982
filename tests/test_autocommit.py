"""``Boss`` on an autocommit connection: each call its own transaction, as pg-boss's calls are, on both schema
versions and both APIs. ``fetch`` there takes no savepoint (PostgreSQL has none outside a transaction block)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import URL, Engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from sqla_boss import AsyncBoss, Boss, migrations
from sqla_boss.schema import schema_translate_map


@pytest.fixture(params=[10, 12], ids=["v24", "v46"])
def schema(request: pytest.FixtureRequest, engine: Engine, schema_name: str) -> str:
    migrations.upgrade(engine, schema=schema_name, pgboss=request.param)
    return schema_name


def committed_states(engine: Engine, schema: str) -> list[str]:
    """The states of the queue's jobs as another connection sees them: what has committed."""
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT state::text FROM \"{schema}\".job WHERE name = 'q' ORDER BY 1"))
        return [state for (state,) in rows]


def test_each_call_commits_by_itself_and_fetch_needs_no_savepoint(engine: Engine, schema: str) -> None:
    autocommit = engine.execution_options(
        isolation_level="AUTOCOMMIT", schema_translate_map=schema_translate_map(schema)
    )
    with autocommit.connect() as connection:
        boss = Boss(connection, schema)
        boss.create_queue("q")
        boss.send("q", {"n": 1})
        boss.send("q", {"n": 2})
        assert committed_states(engine, schema) == ["created", "created"]
        [job] = boss.fetch("q")
        assert committed_states(engine, schema) == ["active", "created"]
        assert boss.complete("q", [job.id]) == 1
        assert committed_states(engine, schema) == ["completed", "created"]


def test_the_same_on_asyncio(database_url: URL, engine: Engine, schema: str) -> None:
    async def run() -> None:
        async_engine = create_async_engine(database_url)
        autocommit = async_engine.execution_options(
            isolation_level="AUTOCOMMIT", schema_translate_map=schema_translate_map(schema)
        )
        try:
            async with autocommit.connect() as connection:
                boss = AsyncBoss(connection, schema)
                await boss.create_queue("q")
                await boss.send("q", {"n": 1})
                [job] = await boss.fetch("q")
                assert committed_states(engine, schema) == ["active"]
                assert await boss.complete("q", [job.id]) == 1
        finally:
            await async_engine.dispose()

    asyncio.run(run())
    assert committed_states(engine, schema) == ["completed"]
