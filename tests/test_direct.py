"""The driver's short way (sqla_boss.direct): statements run on psycopg's own connection, when nothing can tell.

Each test holds on sync and on asyncio (psycopg's async driver), and checks what a user relies on: listeners see
every statement, a bare connection's ``commit()`` commits what a call wrote, and errors are SQLAlchemy's, with a
broken connection invalidated as SQLAlchemy would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from boss_support import committed_count
from sqlalchemy import URL, Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from sqla_boss import AsyncBoss, Boss
from sqla_boss.binding import driver_backend_pid
from sqla_boss.direct import direct_statement
from sqla_boss.v24 import statements

FLAVOURS = ("sync", "async")


@pytest.fixture
def queue(engine: Engine, installed_schema: str) -> str:
    with Session(engine) as session, session.begin():
        Boss(session, installed_schema).create_queue("q")
    return "q"


def _run(flavour: str, url: URL, body: Any, **engine_options: Any) -> Any:
    """Run ``body(engine)`` on a sync engine, or as a coroutine on an async one; the engine is disposed after."""
    if flavour == "sync":
        engine = create_engine(url, **engine_options)
        try:
            return body(engine)
        finally:
            engine.dispose()

    async def main() -> Any:
        async_engine = create_async_engine(url, **engine_options)
        try:
            return await body(async_engine)
        finally:
            await async_engine.dispose()

    return asyncio.run(main())


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_statement_listeners_see_every_statement(
    database_url: URL, installed_schema: str, queue: str, flavour: str
) -> None:
    seen: list[str] = []

    def listen(engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement))

    if flavour == "sync":

        def body(engine: Engine) -> None:
            listen(engine)
            with Session(engine) as session, session.begin():
                boss = Boss(session, installed_schema)
                job_id = boss.send(queue, {"n": 1})
                assert job_id is not None
                boss.complete(queue, job_id)

    else:

        async def body(engine: AsyncEngine) -> None:  # type: ignore[misc]
            listen(engine.sync_engine)
            async with async_sessionmaker(engine)() as session, session.begin():
                boss = AsyncBoss(session, installed_schema)
                job_id = await boss.send(queue, {"n": 1})
                assert job_id is not None
                await boss.complete(queue, job_id)

    _run(flavour, database_url, body)
    assert any("json_to_recordset" in statement for statement in seen)
    assert any(statement.lstrip().startswith("UPDATE") for statement in seen)


def test_the_short_way_is_taken_only_when_nothing_can_tell(database_url: URL, installed_schema: str) -> None:
    def short_way(engine: Engine, begin: bool = True) -> bool:
        with engine.connect() as connection:
            if begin:
                connection.begin()
            return direct_statement(connection, statements.INSERT_JOBS, installed_schema) is not None

    plain = create_engine(database_url)
    echoing = create_engine(database_url, echo=True)
    listened = create_engine(database_url)
    listener = lambda *_: None  # noqa: E731
    event.listen(listened, "after_cursor_execute", listener)
    autocommit = plain.execution_options(isolation_level="AUTOCOMMIT")
    try:
        assert short_way(plain)
        assert not short_way(plain, begin=False)  # SQLAlchemy begins it, so that commit() commits
        assert short_way(autocommit, begin=False)
        assert not short_way(echoing)
        assert not short_way(listened)
        event.remove(listened, "after_cursor_execute", listener)
        assert short_way(listened)  # the flag SQLAlchemy keeps is not the last word
    finally:
        for engine in (plain, echoing, listened):
            engine.dispose()

    async def async_short_way(driver: str) -> bool:
        engine = create_async_engine(database_url.set(drivername=f"postgresql+{driver}"))
        try:
            async with engine.connect() as connection:
                await connection.begin()
                return direct_statement(connection, statements.INSERT_JOBS, installed_schema) is not None
        finally:
            await engine.dispose()

    assert asyncio.run(async_short_way("psycopg"))
    assert not asyncio.run(async_short_way("asyncpg"))

    async def from_sync_code() -> bool:  # AsyncSession.run_sync: psycopg's AsyncConnection under a sync Connection
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                await connection.begin()
                assert connection.sync_connection is not None
                return direct_statement(connection.sync_connection, statements.INSERT_JOBS, installed_schema) is None
        finally:
            await engine.dispose()

    assert asyncio.run(from_sync_code())


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_bare_connection_commits_what_a_call_wrote(
    engine: Engine, database_url: URL, installed_schema: str, queue: str, flavour: str
) -> None:
    """``Boss(connection)`` before and after the connection's first statement: its ``commit()`` commits both."""
    if flavour == "sync":

        def body(sync_engine: Engine) -> None:
            with sync_engine.connect() as connection:
                Boss(connection, installed_schema).send(queue, {"n": 1})  # SQLAlchemy begins the transaction
                Boss(connection, installed_schema).send(queue, {"n": 2})  # the short way, in it
                connection.commit()

    else:

        async def body(async_engine: AsyncEngine) -> None:  # type: ignore[misc]
            async with async_engine.connect() as connection:
                await AsyncBoss(connection, installed_schema).send(queue, {"n": 1})
                await AsyncBoss(connection, installed_schema).send(queue, {"n": 2})
                await connection.commit()

    _run(flavour, database_url, body)
    assert committed_count(engine, installed_schema, "job", "name = :q", q=queue) == 2


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_error_is_sqlalchemys_and_the_session_recovers(
    engine: Engine, database_url: URL, installed_schema: str, queue: str, flavour: str
) -> None:
    """A lock timeout on the transaction's first statement: SQLAlchemy's ``OperationalError`` with psycopg's
    error inside; after a rollback the same session sends."""
    holder = engine.connect()
    holder.execute(text(f'LOCK TABLE "{installed_schema}".queue IN ACCESS EXCLUSIVE MODE'))
    options = {"connect_args": {"options": "-c lock_timeout=100"}}
    try:
        if flavour == "sync":

            def body(sync_engine: Engine) -> None:
                with sessionmaker(sync_engine)() as session:
                    boss = Boss(session, installed_schema)
                    with pytest.raises(OperationalError) as raised:
                        boss.send(queue)
                    assert isinstance(raised.value.orig, psycopg.errors.LockNotAvailable)
                    session.rollback()
                    holder.rollback()
                    boss.send(queue)
                    session.commit()

        else:

            async def body(async_engine: AsyncEngine) -> None:  # type: ignore[misc]
                async with async_sessionmaker(async_engine)() as session:
                    boss = AsyncBoss(session, installed_schema)
                    with pytest.raises(OperationalError) as raised:
                        await boss.send(queue)
                    assert isinstance(raised.value.orig, psycopg.errors.LockNotAvailable)
                    await session.rollback()
                    holder.rollback()
                    await boss.send(queue)
                    await session.commit()

        _run(flavour, database_url, body, **options)
    finally:
        holder.close()
    assert committed_count(engine, installed_schema, "job", "name = :q", q=queue) == 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_broken_connection_is_invalidated(
    engine: Engine, database_url: URL, installed_schema: str, queue: str, flavour: str
) -> None:
    """The server ends the session's backend: the next call raises SQLAlchemy's error marked
    ``connection_invalidated``, and the pool hands out a working connection afterwards."""

    def terminate(pid: int | None) -> None:
        assert pid is not None
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    if flavour == "sync":

        def body(sync_engine: Engine) -> None:
            with sessionmaker(sync_engine)() as session:
                boss = Boss(session, installed_schema)
                boss.send(queue, {"n": 1})
                terminate(driver_backend_pid(session.connection()))
                with pytest.raises(OperationalError) as raised:
                    boss.send(queue, {"n": 2})
                assert raised.value.connection_invalidated
                session.rollback()
            with sessionmaker(sync_engine).begin() as session:
                Boss(session, installed_schema).send(queue, {"n": 3})

    else:

        async def body(async_engine: AsyncEngine) -> None:  # type: ignore[misc]
            async with async_sessionmaker(async_engine)() as session:
                boss = AsyncBoss(session, installed_schema)
                await boss.send(queue, {"n": 1})
                terminate(driver_backend_pid(await session.connection()))
                with pytest.raises(OperationalError) as raised:
                    await boss.send(queue, {"n": 2})
                assert raised.value.connection_invalidated
                await session.rollback()
            async with async_sessionmaker(async_engine).begin() as session:
                await AsyncBoss(session, installed_schema).send(queue, {"n": 3})

    _run(flavour, database_url, body)
    assert committed_count(engine, installed_schema, "job", "name = :q", q=queue) == 1
