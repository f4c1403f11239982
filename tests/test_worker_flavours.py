"""Rules the threaded and the asyncio worker once kept differently, settled once and proven on both.

Each test runs on three flavours: ``Worker`` (plain handlers on threads), ``AsyncWorker`` with coroutine
handlers, and ``AsyncWorker`` with plain handlers (run in worker threads). The asyncio worker runs on an event
loop of its own thread, so one test body drives every flavour.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from support import LoopThread, wait_until

from sqla_boss import AsyncWorker, Boss, Job, Worker
from sqla_boss.errors import (
    DatabaseUnavailableError,
    QueueNotFoundError,
    SchemaNotInstalledError,
    SchemaVersionError,
)
from sqla_boss.handling import Health, LoopState, stale_after
from sqla_boss.schema import schema_translate_map

QUEUE = "jobs"
FLAVOURS = ("threads", "asyncio coroutines", "asyncio plain functions")
TIMEOUT_MESSAGE = "handler execution exceeded 1000ms"


class Abort(BaseException):
    """A ``BaseException`` of a handler's own, neither ``SystemExit`` nor ``KeyboardInterrupt``."""


# ------------------------------------------------------------------------------------------- harness


class _AsyncRunning(LoopThread):
    def __init__(self, url: URL, schema: str, register: Callable[[Any], None], engine_options: dict[str, Any]) -> None:
        super().__init__("asyncio-worker")
        self.url, self.schema, self.register, self.engine_options = url, schema, register, engine_options

    async def run(self, stop: asyncio.Event) -> None:
        engine = create_async_engine(self.url, poolclass=NullPool, **self.engine_options)
        worker = AsyncWorker(engine, self.schema, supervise=False, schedule=False, polling_interval_seconds=0.5)
        self.register(worker)
        try:
            await worker.start()
            self.started.set()
            await stop.wait()
        finally:
            await worker.stop(graceful=False)
            await engine.dispose()


class Running:
    """A started worker of one flavour, with ``handler`` registered on :data:`QUEUE`; stopped by :meth:`stop`."""

    def __init__(
        self, flavour: str, url: URL, schema: str, handler: Callable[..., Any], *, transactional: bool, **engine: Any
    ) -> None:
        def register(worker: Any) -> None:
            self.worker = worker
            worker.work(QUEUE, handler, transactional=transactional)

        self._thread: _AsyncRunning | None = None
        self._worker: Worker | None = None
        self.worker: Any = None
        """The running Worker or AsyncWorker (its health() may be read from any thread)."""
        self._engine: Engine | None = None
        if flavour == "threads":
            self._engine = create_engine(url, poolclass=NullPool, **engine)
            self._worker = Worker(self._engine, schema, supervise=False, schedule=False, polling_interval_seconds=0.5)
            register(self._worker)
            self._worker.start()
        else:
            self._thread = _AsyncRunning(url, schema, register, engine)
            self._thread.start()

    def stop(self) -> None:
        if self._worker is not None and self._engine is not None:
            self._worker.stop(graceful=False)
            self._engine.dispose()
        if self._thread is not None:
            self._thread.stop()


def handler_of(flavour: str, outcome: Callable[[list[Job]], Any], *, transactional: bool) -> Callable[..., Any]:
    """A handler of the flavour's kind that returns (or raises) what ``outcome(jobs)`` does."""
    if flavour == "asyncio coroutines":
        if transactional:

            async def in_transaction(jobs: list[Job], session: Any) -> Any:
                return outcome(jobs)

            return in_transaction

        async def coroutine(jobs: list[Job]) -> Any:
            return outcome(jobs)

        return coroutine
    if transactional:
        return lambda jobs, session: outcome(jobs)
    return outcome


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for worker in started:
        worker.stop()


def send(engine: Engine, schema: str, *payloads: dict[str, Any], **options: Any) -> list[uuid.UUID]:
    with Session(engine.execution_options(schema_translate_map=schema_translate_map(schema))) as session:
        boss = Boss(session, schema)
        if boss.get_queue(QUEUE) is None:
            boss.create_queue(QUEUE)
        ids = [boss.send(QUEUE, payload, **options) for payload in payloads]
        session.commit()
    assert all(ids)
    return [job_id for job_id in ids if job_id is not None]


def job_of(engine: Engine, schema: str, job_id: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as connection:
        row = connection.execute(
            text(f"SELECT state::text AS state, output FROM {schema}.job WHERE name = :q AND id = :id"),
            {"q": QUEUE, "id": job_id},
        )
        return dict(row.mappings().one())


# -------------------------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("transactional", [False, True], ids=["pg-boss mode", "transactional"])
@pytest.mark.parametrize("exception", [SystemExit(3), KeyboardInterrupt(), Abort("stop right there")], ids=repr)
def test_a_handler_raising_any_base_exception_fails_its_jobs_and_the_loop_goes_on(
    engine: Engine,
    database_url: URL,
    installed_schema: str,
    running: list[Running],
    flavour: str,
    transactional: bool,
    exception: BaseException,
) -> None:
    """``SystemExit``, ``KeyboardInterrupt`` and other ``BaseException``\\ s from a handler fail its jobs, like any
    error, and the same loop runs the next job: stopping a worker is ``stop()``'s, or its signals'."""

    def outcome(jobs: list[Job]) -> Any:
        (job,) = jobs
        if job.data["raise"]:
            raise exception
        return {"ran": job.data["n"]}

    (first,) = send(engine, installed_schema, {"raise": True, "n": 1}, retry_limit=0, priority=1)  # fetched first
    (second,) = send(engine, installed_schema, {"raise": False, "n": 2}, retry_limit=0)
    handler = handler_of(flavour, outcome, transactional=transactional)
    running.append(Running(flavour, database_url, installed_schema, handler, transactional=transactional))

    wait_until(lambda: job_of(engine, installed_schema, second)["state"] == "completed", what="the second job done")
    failed = job_of(engine, installed_schema, first)
    assert failed["state"] == "failed"
    assert failed["output"]["name"] == type(exception).__name__
    assert failed["output"]["message"] == str(exception)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_failure_the_database_refuses_after_a_transactional_timeout_is_kept_for_the_next_fetch(
    engine: Engine,
    database_url: URL,
    installed_schema: str,
    running: list[Running],
    flavour: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A transactional handler outlives its timeout while another transaction holds its job's row: the failure
    cannot be recorded then (lock timeout), so the loop keeps it and records it with a later fetch, instead of
    leaving the job ``active`` until expiry."""
    handler_started = threading.Event()

    def outcome(jobs: list[Job]) -> Any:
        handler_started.set()
        time.sleep(3)  # past the 1 s timeout

    async def sleeping(jobs: list[Job], session: Any) -> Any:
        handler_started.set()
        await asyncio.sleep(3)

    (job_id,) = send(engine, installed_schema, {"n": 1}, retry_limit=0, expire_in_seconds=1)
    handler = sleeping if flavour == "asyncio coroutines" else (lambda jobs, session: outcome(jobs))
    caplog.set_level(logging.WARNING, logger="sqla_boss.worker")
    with engine.connect() as holder:
        holder.begin()
        options = {"connect_args": {"options": "-c lock_timeout=300"}}
        running.append(Running(flavour, database_url, installed_schema, handler, transactional=True, **options))
        assert handler_started.wait(10)
        holder.execute(
            text(f"SELECT 1 FROM {installed_schema}.job WHERE name = :q AND id = :id FOR UPDATE"),
            {"q": QUEUE, "id": job_id},
        )
        wait_until(
            lambda: any("could not record the failure" in record.getMessage() for record in caplog.records),
            what="the refused failure",
        )
        assert job_of(engine, installed_schema, job_id)["state"] == "active"
        holder.rollback()
    wait_until(lambda: job_of(engine, installed_schema, job_id)["state"] == "failed", what="the failure recorded")
    assert job_of(engine, installed_schema, job_id)["output"]["message"] == TIMEOUT_MESSAGE


# ------------------------------------------------------------------------------------ start checks, health


def start_error(flavour: str, url: URL, schema: str, queue: str) -> BaseException | None:
    """What ``start()`` raises for a worker with a handler on ``queue``, on either flavour (``None``: it started)."""
    if flavour == "threads":
        engine = create_engine(url, poolclass=NullPool)
        worker = Worker(engine, schema, supervise=False, schedule=False, listen=False)
        worker.work(queue, lambda jobs: None)
        try:
            worker.start()
        except Exception as error:
            assert list(worker._threads) == []  # nothing started
            assert worker.health().status == "not started"
            return error
        finally:
            worker.stop(graceful=False)
            engine.dispose()
        return None

    async def main() -> BaseException | None:
        engine = create_async_engine(url, poolclass=NullPool)
        worker = AsyncWorker(engine, schema, supervise=False, schedule=False, listen=False)
        worker.work(queue, lambda jobs: None)
        try:
            await worker.start()
        except Exception as error:
            assert list(worker._tasks) == []
            return error
        finally:
            await worker.stop(graceful=False)
            await engine.dispose()
        return None

    return asyncio.run(main())


@pytest.mark.parametrize("flavour", ["threads", "asyncio"])
def test_start_refuses_what_it_cannot_work_on_and_starts_nothing(
    engine: Engine, database_url: URL, installed_schema: str, flavour: str
) -> None:
    error = start_error(flavour, database_url, installed_schema, "nosuch")
    assert isinstance(error, QueueNotFoundError)
    assert error.names == ("nosuch",)
    assert isinstance(start_error(flavour, database_url, "nosuch_schema", QUEUE), SchemaNotInstalledError)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {installed_schema}.version SET version = 45"))
    assert isinstance(start_error(flavour, database_url, installed_schema, QUEUE), SchemaVersionError)
    unreachable = database_url.set(port=1)
    assert isinstance(start_error(flavour, unreachable, installed_schema, QUEUE), DatabaseUnavailableError)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_health_reports_each_loop_of_a_working_worker(
    engine: Engine, database_url: URL, installed_schema: str, running: list[Running], flavour: str
) -> None:
    reports: list[Any] = []

    def outcome(jobs: list[Job]) -> Any:
        reports.append(current.health())  # asked from inside a handler: that loop is busy
        return None

    send(engine, installed_schema)  # the queue, and no job yet
    handler = handler_of(flavour, outcome, transactional=False)
    running.append(Running(flavour, database_url, installed_schema, handler, transactional=False))
    current = running[-1].worker
    send(engine, installed_schema, {"n": 1})
    wait_until(lambda: reports, what="the handler's report")
    [busy] = reports
    assert busy.healthy
    assert busy.status == "ok"
    [loop] = busy.loops
    assert loop["queue"] == QUEUE
    assert loop["handling_for_seconds"] is not None
    wait_until(lambda: current.health().loops[0]["handling_for_seconds"] is None, what="the handler done")
    idle = current.health()
    assert idle.healthy
    assert idle.loops[0]["last_fetch_seconds_ago"] < 5


def test_a_loop_is_stale_when_it_has_not_fetched_for_a_minute_and_runs_no_handler() -> None:
    loop = LoopState(QUEUE, stale_after(0.5), started=90.0, last_fetch=100.0)
    assert stale_after(0.5) == 60.0
    assert stale_after(30) == 120.0
    assert not loop.stale(150.0)
    assert loop.stale(161.0)
    starting = LoopState(QUEUE, 60.0, started=100.0)  # no fetch yet: judged from its start
    assert not starting.stale(159.0)
    assert starting.stale(161.0)
    loop.handling_since = 155.0  # a long handler is work, not a stall
    assert not loop.stale(1000.0)
    health = Health.of("ok", None, [LoopState(QUEUE, 60.0, last_fetch=100.0)], 200.0)
    assert (health.healthy, health.status) == (False, "stale")
    assert health.reason == f"queue {QUEUE}: no fetch succeeded for 100 s"
    assert Health.of("stopping", None, [], 0.0).healthy is False
