"""Running the same repository tests on ``Boss`` and on ``AsyncBoss``.

The ``api`` fixture is parametrised ``sync`` / ``async``; ``connection``, ``session``, ``boss``,
``make_boss`` and ``committing_session_factory`` follow it. On ``async`` they are built on an
``AsyncEngine`` (psycopg's async driver) in an event loop of the test's own, the test body runs inside
SQLAlchemy's greenlet bridge (``greenlet_spawn``), and ``boss`` is an :class:`AwaitingBoss`: each call
awaits the real ``AsyncBoss`` coroutine. So a test reads the same for both APIs while every statement of
the async variant goes through ``AsyncSession`` and the async driver.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from sqlalchemy import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_session, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.util import await_only, greenlet_spawn

from sqla_boss import AsyncBoss, Boss
from sqla_boss.schema import schema_translate_map

T = TypeVar("T")
APIS = ("sync", "async")


class LoopRunner:
    """An event loop of one test's own: runs coroutines, and sync code inside the greenlet bridge."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def call(self, function: Callable[[], T]) -> T:
        result: T = self.loop.run_until_complete(greenlet_spawn(function))
        return result

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class AwaitingBoss:
    """``AsyncBoss`` with a synchronous face: each method awaits the coroutine through the greenlet bridge.

    Only usable inside a test body that :func:`pytest_pyfunc_call` runs in ``greenlet_spawn``.
    """

    def __init__(self, boss: AsyncBoss) -> None:
        self.async_boss = boss

    @property
    def session(self) -> Session:
        return self.async_boss.session.sync_session

    @property
    def schema(self) -> str:
        return self.async_boss.schema

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.async_boss, name)
        if not inspect.iscoroutinefunction(method):
            return method

        def awaiting(*args: Any, **kwargs: Any) -> Any:
            return await_only(method(*args, **kwargs))

        return awaiting


_current: list[LoopRunner] = []
"""The runner of the ``async`` test being set up or run, if any (tests run one at a time)."""

_INFRASTRUCTURE = {"api", "async_engine", "connection", "session", "make_boss", "boss", "committing_session_factory"}


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> Iterator[str]:
    """``sync`` or ``async``: which repository API the test runs on."""
    if request.param == "async":
        runner = LoopRunner()
        request.node.sqla_boss_runner = runner
        _current.append(runner)
        try:
            yield "async"
        finally:
            _current.remove(runner)
            runner.close()
    else:
        yield "sync"


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> None:
    """Let the tests' own function fixtures (a queue made through ``boss``, say) run in the greenlet bridge too."""
    if fixturedef.scope != "function" or fixturedef.argname in _INFRASTRUCTURE:
        return
    if getattr(fixturedef.func, "_sqla_boss_bridged", False):
        return
    fixturedef.func = _bridged(fixturedef.func)  # type: ignore[misc]


def _bridged(function: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(function):

        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            if not _current:
                yield from function(*args, **kwargs)
                return
            runner = _current[-1]
            steps = function(*args, **kwargs)
            value = runner.call(lambda: next(steps))
            try:
                yield value
            finally:
                runner.call(lambda: next(steps, None))

        bridged: Callable[..., Any] = generator
    else:

        def plain(*args: Any, **kwargs: Any) -> Any:
            if not _current:
                return function(*args, **kwargs)
            return _current[-1].call(lambda: function(*args, **kwargs))

        bridged = plain
    bridged._sqla_boss_bridged = True  # type: ignore[attr-defined]
    return bridged


def runner_of(request: pytest.FixtureRequest) -> LoopRunner:
    runner: LoopRunner = request.node.sqla_boss_runner
    return runner


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run the body of an ``async``-variant test inside the greenlet bridge of its event loop."""
    runner: LoopRunner | None = getattr(pyfuncitem, "sqla_boss_runner", None)
    if runner is None:
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    runner.call(lambda: pyfuncitem.obj(**arguments))
    return True


@pytest.fixture
def async_engine(api: str, database_url: URL, request: pytest.FixtureRequest) -> Iterator[AsyncEngine | None]:
    """An ``AsyncEngine`` on psycopg's async driver for the ``async`` variant, else ``None``."""
    if api != "async":
        yield None
        return
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        runner_of(request).run(engine.dispose())


@pytest.fixture
def connection(
    api: str, engine: Engine, async_engine: AsyncEngine | None, installed_schema: str, request: pytest.FixtureRequest
) -> Iterator[Connection]:
    """A connection in a transaction that is rolled back after the test, aimed at ``installed_schema``.

    On ``async`` it is the sync face of an ``AsyncConnection``, usable from the test body.
    """
    translate = schema_translate_map(installed_schema)
    if async_engine is None:
        with engine.connect() as sync_connection:
            sync_connection.execution_options(schema_translate_map=translate)
            transaction = sync_connection.begin()
            try:
                yield sync_connection
            finally:
                transaction.rollback()
        return
    runner = runner_of(request)
    async_connection = runner.run(async_engine.connect())
    runner.run(async_connection.execution_options(schema_translate_map=translate))
    async_transaction = runner.run(async_connection.begin())
    request.node.sqla_boss_async_connection = async_connection
    try:
        yield async_connection.sync_connection
    finally:
        runner.run(async_transaction.rollback())
        runner.run(async_connection.close())


@pytest.fixture
def session(api: str, connection: Connection, request: pytest.FixtureRequest) -> Iterator[Session]:
    """An ORM session joined to ``connection``'s transaction: its commits are savepoints, all rolled back.

    On ``async`` it is the ``sync_session`` of an ``AsyncSession`` on that connection.
    """
    if api == "sync":
        with Session(bind=connection, join_transaction_mode="create_savepoint") as sync_session:
            yield sync_session
        return
    owner = AsyncSession(bind=request.node.sqla_boss_async_connection, join_transaction_mode="create_savepoint")
    try:
        yield owner.sync_session
    finally:
        runner_of(request).run(owner.close())


@pytest.fixture
def make_boss(api: str) -> Callable[..., Any]:
    """``make_boss(session, **kwargs)``: a ``Boss``, or an :class:`AwaitingBoss` on ``AsyncBoss``, for ``session``.

    On ``async``, ``session`` must be the ``sync_session`` of an ``AsyncSession`` (as the fixtures give).
    """

    def make(session: Session, *args: Any, **kwargs: Any) -> Any:
        if api == "sync":
            return Boss(session, *args, **kwargs)
        owner = async_session(session)
        assert owner is not None, "on the async API, use a session the fixtures made"
        return AwaitingBoss(AsyncBoss(owner, *args, **kwargs))

    return make


@pytest.fixture
def boss(make_boss: Callable[..., Any], session: Session, installed_schema: str) -> Any:
    """A ``Boss`` (or ``AsyncBoss``) on ``session``: everything it writes is rolled back after the test."""
    return make_boss(session, schema=installed_schema)


@pytest.fixture
def committing_session_factory(
    api: str, engine: Engine, async_engine: AsyncEngine | None, installed_schema: str
) -> Callable[[], Session]:
    """Sessions that really commit, on ``installed_schema``: for outbox and interop tests.

    On ``async`` each is the ``sync_session`` of a new ``AsyncSession`` (kept alive by the factory).
    """
    translate = schema_translate_map(installed_schema)
    if async_engine is None:
        return sessionmaker(engine.execution_options(schema_translate_map=translate))
    owners: list[AsyncSession] = []

    def factory() -> Session:
        owner = AsyncSession(async_engine.execution_options(schema_translate_map=translate))
        owners.append(owner)
        return owner.sync_session

    factory.begin = _begin_of(factory)  # type: ignore[attr-defined]
    return factory


def _begin_of(factory: Callable[[], Session]) -> Callable[[], Any]:
    @contextmanager
    def begin() -> Iterator[Session]:
        with factory() as sync_session, sync_session.begin():
            yield sync_session

    return begin
