"""The worker's listener on schema version 46 (PGBOSS12.md §10): pg-boss 12's channel of the configured schema
spelling, the payload naming the queue; a send wakes a loop that polls every 30 s long before its poll, on
threads and on asyncio; and where notifications cannot arrive (a transaction-pooling PgBouncer, asyncpg) the
loops poll after one ``listen_notify_unavailable`` warning. "Promptly" is a generous 10 s, a third of the
polling interval: no timing of performance here (``python -m bench wakeup`` measures it)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import psycopg
import pytest
from pgbouncer import run_pgbouncer
from sqlalchemy import URL, Engine, create_engine, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from support import schema_sessions, wait_until

from sqla_boss import AsyncWorker, Boss, Worker
from sqla_boss.async_listener import UNAVAILABLE
from sqla_boss.v46.models import Job
from sqla_boss.v46.operations import notify_channel

LOUD = "loud"
"""A queue with ``notify``."""
PROMPTLY = 10.0
"""Well under the 30 s polling interval: a job handled within this was woken, not polled."""

JOB = Job.__table__


@pytest.fixture
def schema_version() -> int:
    return 46


@pytest.fixture
def sessions(engine: Engine, installed_schema: str) -> sessionmaker[Session]:
    factory = schema_sessions(engine, installed_schema)
    with factory.begin() as session:
        Boss(session, installed_schema).create_queue(LOUD, notify=True)
    return factory


def send(sessions: sessionmaker[Session], schema: str, name: str = LOUD) -> uuid.UUID:
    with sessions.begin() as session:
        job_id = Boss(session, schema).send(name, {"sent": time.time()})
    assert job_id is not None
    return job_id


def completed(sessions: sessionmaker[Session], job_id: uuid.UUID) -> bool:
    with sessions() as session:
        return session.scalar(select(JOB.c.state).where(JOB.c.id == job_id)) == "completed"


def waiting(worker: Worker | AsyncWorker) -> bool:
    """Every loop fetched (and found nothing, as nothing was sent) after the listener proved its subscription and
    woke them all: they now wait out their interval, and only a notification can bring a job in sooner."""
    since = None if worker._listener is None else worker._listener.subscribed_at
    return since is not None and all(s.last_fetch is not None and s.last_fetch > since for s in worker._loop_states)


def unavailable_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith(UNAVAILABLE)]


def test_a_send_wakes_a_worker_polling_every_30_s(
    sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    worker = Worker(sessions, installed_schema, supervise=False, schedule=False, polling_interval_seconds=30)
    workers.append(worker)
    worker.work(LOUD, lambda jobs: None, concurrency=2)
    worker.start()
    listener = worker._listener
    assert listener is not None
    assert listener.subscribed.wait(10), "the listener never proved its subscription"
    wait_until(lambda: waiting(worker), what="the loops waiting out their 30 s")
    job_id = send(sessions, installed_schema)
    wait_until(lambda: completed(sessions, job_id), PROMPTLY, "the job woken by its notification")
    assert listener.channels() == {notify_channel(installed_schema): None}
    assert listener.unavailable is None
    assert worker.listening


def test_a_notification_naming_the_queue_wakes_it_and_others_do_not_matter(
    database_url: URL, sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    """What Node pg-boss 12 sends: ``pg_notify(channel, queue name)``. A job inserted without a notification
    (a queue without ``notify``) waits for the poll; the notification that names its queue wakes it."""
    with sessions.begin() as session:
        Boss(session, installed_schema).update_queue(LOUD, notify=False)
    worker = Worker(sessions, installed_schema, supervise=False, schedule=False, polling_interval_seconds=30)
    workers.append(worker)
    worker.work(LOUD, lambda jobs: None)
    worker.start()
    assert worker._listener is not None
    assert worker._listener.subscribed.wait(10)
    wait_until(lambda: waiting(worker), what="the loop waiting out its 30 s")
    job_id = send(sessions, installed_schema)  # no notification: notify is off
    conninfo = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as other:
        channel = notify_channel(installed_schema)
        other.execute("SELECT pg_notify(%s, %s)", (channel, "some-other-queue"))
        other.execute("SELECT pg_notify(%s, %s)", (notify_channel(installed_schema.upper()), LOUD))
        assert not completed(sessions, job_id)
        other.execute("SELECT pg_notify(%s, %s)", (channel, LOUD))
    wait_until(lambda: completed(sessions, job_id), PROMPTLY, "the job woken by a notification naming its queue")


def test_an_async_worker_is_woken_too(
    database_url: URL, sessions: sessionmaker[Session], installed_schema: str
) -> None:
    async def main() -> None:
        engine = create_async_engine(database_url)
        worker = AsyncWorker(engine, installed_schema, supervise=False, schedule=False, polling_interval_seconds=30)
        worker.work(LOUD, lambda jobs: None)
        await worker.start()
        try:
            assert worker._listener is not None
            assert await worker._listener.subscribed.wait(10)
            await _until(lambda: waiting(worker))
            job_id = await asyncio.to_thread(send, sessions, installed_schema)
            await _until(lambda: completed(sessions, job_id), PROMPTLY)
        finally:
            await worker.stop(graceful=False)
            await engine.dispose()

    asyncio.run(main())


async def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------------------------- fallback


def test_behind_a_transaction_pooling_pgbouncer_the_worker_says_so_once_and_polls(
    database_url: URL,
    sessions: sessionmaker[Session],
    installed_schema: str,
    workers: list[Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """LISTEN "succeeds" through PgBouncer, but the server connection that ran it goes back to the pool: the
    probe NOTIFY never reaches the listener, which logs one ``listen_notify_unavailable`` line and returns; the
    loops find the jobs by polling."""
    with run_pgbouncer(database_url) as bounced:
        engine = create_engine(bounced, poolclass=NullPool, connect_args={"prepare_threshold": None})
        try:
            factory = schema_sessions(engine, installed_schema)
            with caplog.at_level(logging.INFO, logger="sqla_boss"):
                worker = Worker(
                    factory, installed_schema, supervise=False, schedule=False, polling_interval_seconds=0.5
                )
                workers.append(worker)
                worker.work(LOUD, lambda jobs: None)
                worker.start()
                listener = worker._listener
                assert listener is not None
                wait_until(lambda: listener.unavailable is not None, 15, "the listener giving up")
                job_id = send(sessions, installed_schema)
                wait_until(lambda: completed(sessions, job_id), PROMPTLY, "the job found by polling")
                worker.stop()
            assert not listener.subscribed.is_set()
            assert not worker.listening
            assert "did not arrive" in listener.unavailable
            (line,) = unavailable_records(caplog)
            assert "PgBouncer" in line
            assert "polling" in line
        finally:
            engine.dispose()


def test_the_same_worker_straight_to_the_server_listens(
    database_url: URL, installed_schema: str, workers: list[Worker], caplog: pytest.LogCaptureFixture
) -> None:
    """The control for the PgBouncer test: the same settings without PgBouncer prove the subscription."""
    engine = create_engine(database_url, poolclass=NullPool, connect_args={"prepare_threshold": None})
    try:
        factory = schema_sessions(engine, installed_schema)
        with factory.begin() as session:
            Boss(session, installed_schema).create_queue(LOUD, notify=True)
        worker = Worker(factory, installed_schema, supervise=False, schedule=False, polling_interval_seconds=0.5)
        workers.append(worker)
        worker.work(LOUD, lambda jobs: None)
        with caplog.at_level(logging.INFO, logger="sqla_boss"):
            worker.start()
            assert worker._listener is not None
            assert worker._listener.subscribed.wait(10)
            worker.stop()
        assert worker._listener.unavailable is None
        assert unavailable_records(caplog) == []
    finally:
        engine.dispose()


def test_on_asyncpg_the_worker_says_so_once_and_polls(
    database_url: URL, sessions: sessionmaker[Session], installed_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("asyncpg")

    async def main() -> None:
        engine = create_async_engine(database_url.set(drivername="postgresql+asyncpg"))
        worker = AsyncWorker(engine, installed_schema, supervise=False, schedule=False, polling_interval_seconds=0.5)
        worker.work(LOUD, lambda jobs: None)
        await worker.start()
        try:
            assert worker._listener is not None
            await _until(lambda: worker._listener is not None and worker._listener.unavailable is not None)
            job_id = await asyncio.to_thread(send, sessions, installed_schema)
            await _until(lambda: completed(sessions, job_id), PROMPTLY)
        finally:
            await worker.stop(graceful=False)
            await engine.dispose()

    with caplog.at_level(logging.INFO, logger="sqla_boss"):
        asyncio.run(main())
    (line,) = unavailable_records(caplog)
    assert "asyncpg" in line
    assert "psycopg 3" in line


def test_behind_a_session_pooling_pgbouncer_the_worker_listens(
    database_url: URL, sessions: sessionmaker[Session], installed_schema: str, workers: list[Worker]
) -> None:
    """Session pooling keeps a server connection with its client, LISTEN included: the probe comes back, and a
    send wakes the loop long before its 30 s poll."""
    with run_pgbouncer(database_url, pool_mode="session") as bounced:
        engine = create_engine(bounced, poolclass=NullPool, connect_args={"prepare_threshold": None})
        try:
            worker = Worker(
                schema_sessions(engine, installed_schema),
                installed_schema,
                supervise=False,
                schedule=False,
                polling_interval_seconds=30,
            )
            workers.append(worker)
            worker.work(LOUD, lambda jobs: None)
            worker.start()
            wait_until(lambda: worker.listening, 10, "the listener proving its subscription through PgBouncer")
            wait_until(lambda: waiting(worker), what="the loop waiting out its 30 s")
            job_id = send(sessions, installed_schema)
            wait_until(lambda: completed(sessions, job_id), PROMPTLY, "the job woken through PgBouncer")
            worker.stop()
        finally:
            engine.dispose()
