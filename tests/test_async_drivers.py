"""``AsyncBoss`` outside the ``api`` fixture: on asyncpg as on psycopg, and with really concurrent sessions.

These tests are plain ``asyncio.run`` tests with engines of their own. Each runs on psycopg's async driver
(``postgresql+psycopg://``, what the ``api`` fixture uses) and on asyncpg (``postgresql+asyncpg://``);
the asyncpg variants are skipped when asyncpg is not installed. sqla_boss has no code of its own for
asyncpg: these tests show that SQLAlchemy's asyncpg dialect runs its statements unchanged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from boss_support import committed_count
from sqlalchemy import URL, Engine, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from sqla_boss import AsyncBoss, Job, JobState, Schedule, schema_translate_map
from sqla_boss.errors import JobConflictError
from sqla_boss.identifiers import quote_identifier

T = TypeVar("T")
UTC = dt.timezone.utc
FAR_START = dt.datetime(2041, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

try:
    import asyncpg  # noqa: F401  (only whether it imports)
except ImportError:
    HAVE_ASYNCPG = False
else:
    HAVE_ASYNCPG = True
DRIVERS = [
    pytest.param("psycopg", id="psycopg"),
    pytest.param(
        "asyncpg",
        id="asyncpg",
        marks=pytest.mark.skipif(
            not HAVE_ASYNCPG,
            reason="asyncpg is not importable, so AsyncBoss on postgresql+asyncpg:// is not checked "
            "(pip install asyncpg)",
        ),
    ),
]
"""The async drivers, by the name that follows ``postgresql+`` in the URL."""


def run_on(database_url: URL, driver: str, main: Callable[[AsyncEngine], Awaitable[T]], **engine_options: Any) -> T:
    """``asyncio.run(main(engine))`` with an ``AsyncEngine`` on ``driver``, disposed at the end."""

    async def with_engine() -> T:
        engine = create_async_engine(database_url.set(drivername=f"postgresql+{driver}"), **engine_options)
        try:
            return await main(engine)
        finally:
            await engine.dispose()

    return asyncio.run(with_engine())


def translated(engine: AsyncEngine, schema: str) -> AsyncEngine:
    return engine.execution_options(schema_translate_map=schema_translate_map(schema))


# ------------------------------------------------------------------------------------ every operation


@pytest.mark.parametrize("driver", DRIVERS)
def test_async_boss_runs_unchanged_on_the_driver(
    database_url: URL, engine: Engine, installed_schema: str, driver: str
) -> None:
    """Queues, sends of every option type, insert, fetch, complete, fail, get_job_by_id, a conflict, schedule."""

    async def main(async_engine: AsyncEngine) -> dict[str, uuid.UUID]:
        ids: dict[str, uuid.UUID] = {}
        async with AsyncSession(translated(async_engine, installed_schema)) as session:
            boss = AsyncBoss(session, schema=installed_schema)
            await boss.create_queue("dlq")
            await boss.create_queue("q", retry_limit=1, dead_letter="dlq")
            await boss.create_queue("stately", policy="stately")
            await boss.create_queue("cron")

            # Sends: JSON data, and options as int, text interval, timedelta and aware datetime.
            data = {"n": 1, "text": "é ✓", "list": [1, 2.5, None, True]}
            plain = await boss.send("q", data)
            assert isinstance(plain, uuid.UUID)
            ids["plain"] = plain
            job = await boss.get_job_by_id("q", plain)
            assert isinstance(job, Job)
            assert (job.data, job.state, job.retry_limit, job.dead_letter) == (data, JobState.created, 1, "dlq")

            later = await boss.send(
                "q",
                "text",
                priority=5,
                start_after="2 hours",
                retry_delay=dt.timedelta(seconds=30),
                expire_in_minutes=2,
                retention_days=2,
                singleton_key="k",
            )
            assert later is not None
            job = await boss.get_job_by_id("q", later)
            assert isinstance(job, Job)
            assert (job.data, job.priority, job.retry_delay, job.singleton_key) == ("text", 5, 30, "k")
            assert (job.start_after - job.created_on, job.expire_in) == (dt.timedelta(hours=2), dt.timedelta(minutes=2))
            assert job.keep_until - job.start_after == dt.timedelta(days=2)
            at = await boss.send_after("q", None, after=FAR_START, priority=1)
            job = await boss.get_job_by_id("q", str(at))
            assert isinstance(job, Job)
            assert (job.data, job.start_after) == (None, FAR_START)

            # A taken throttling slot answers None; insert leaves out a row whose id is taken.
            throttled = [await boss.send_throttled("q", {"t": n}, seconds=600, key="t") for n in range(2)]
            assert throttled[0] is not None
            assert throttled[1] is None
            ids["throttled"] = throttled[0]
            explicit = uuid.uuid4()
            inserted = await boss.insert(
                [
                    {"name": "q", "data": {"batch": 0}, "id": explicit},
                    {"name": "q", "data": {"batch": 1}, "start_after": 45},
                    {"name": "q", "data": {"batch": 2}, "id": explicit},
                ]
            )
            assert len(inserted) == 2
            assert explicit in inserted
            ids["explicit"] = explicit

            # Fetch what is due, complete one, fail the others (retry_limit 1: retry, then failed and copied).
            fetched = await boss.fetch("q", batch_size=10)
            assert {job.id for job in fetched} == {plain, throttled[0], explicit}
            assert all(job.state is JobState.active for job in fetched)
            assert await boss.complete("q", plain, {"ok": True}) == 1
            assert await boss.fail("q", explicit, ValueError("boom")) == 1
            assert await boss.fail("q", throttled[0], "no") == 1
            done = await boss.get_job_by_id("q", plain)
            retrying = await boss.get_job_by_id("q", explicit)
            assert isinstance(done, Job)
            assert isinstance(retrying, Job)
            assert (done.state, done.output) == (JobState.completed, {"ok": True})
            assert retrying.state is JobState.retry
            assert retrying.output is not None
            assert (retrying.output["name"], retrying.output["message"]) == ("ValueError", "boom")
            again = await boss.fetch("q", batch_size=10)
            assert {(job.id, job.retry_count) for job in again} == {(explicit, 1), (throttled[0], 1)}
            assert await boss.fail("q", throttled[0], "no") == 1
            gone = await boss.get_job_by_id("q", throttled[0])
            assert isinstance(gone, Job)
            assert (gone.state, gone.output) == (JobState.failed, {"value": "no"})
            assert await boss.get_queue_size("dlq") == 1

            # An IntegrityError in a savepoint becomes JobConflictError, and the transaction goes on.
            cancelled = await boss.send("stately", None, singleton_key="k")
            assert cancelled is not None
            assert await boss.cancel("stately", cancelled) == 1
            assert await boss.send("stately", None, singleton_key="k") is not None
            with pytest.raises(JobConflictError):
                await boss.resume("stately", cancelled)

            # A cron schedule, its options stored in camelCase.
            await boss.schedule(
                "cron", "*/5 * * * *", {"c": 1}, tz="Europe/Paris", priority=2, retry_delay=dt.timedelta(seconds=30)
            )
            [schedule] = await boss.get_schedules()
            assert isinstance(schedule, Schedule)
            assert (schedule.name, schedule.cron, schedule.timezone, schedule.data) == (
                "cron",
                "*/5 * * * *",
                "Europe/Paris",
                {"c": 1},
            )
            assert schedule.options == {"priority": 2, "retryDelay": 30, "tz": "Europe/Paris"}
            await session.commit()
        return ids

    ids = run_on(database_url, driver, main, poolclass=NullPool)

    quoted = quote_identifier(installed_schema)
    with engine.connect() as connection:
        states = connection.execute(
            text(f"SELECT name, state::text AS s, count(*) FROM {quoted}.job GROUP BY name, s ORDER BY name, s")
        ).all()
        outputs = dict(
            connection.execute(
                text(f"SELECT id, output FROM {quoted}.job WHERE id IN (:plain, :throttled)"),
                {"plain": ids["plain"], "throttled": ids["throttled"]},
            ).all()
        )
    assert [tuple(row) for row in states] == [
        ("dlq", "created", 1),
        ("q", "active", 1),
        ("q", "completed", 1),
        ("q", "created", 3),
        ("q", "failed", 1),
        ("stately", "cancelled", 1),
        ("stately", "created", 1),
    ]
    assert outputs == {ids["plain"]: {"ok": True}, ids["throttled"]: {"value": "no"}}
    assert committed_count(engine, installed_schema, "schedule") == 1


# -------------------------------------------------------------------------------------------- concurrency


class Rendezvous:
    """A one-shot ``asyncio.Barrier`` (which Python 3.10 lacks): ``wait`` returns once ``parties`` wait."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.waiting = 0
        self.complete = asyncio.Event()

    async def wait(self) -> None:
        self.waiting += 1
        if self.waiting == self.parties:
            self.complete.set()
        await asyncio.wait_for(self.complete.wait(), timeout=20)


@pytest.mark.parametrize("driver", DRIVERS)
def test_concurrent_async_sessions_fetch_disjoint_jobs(
    database_url: URL, engine: Engine, installed_schema: str, driver: str
) -> None:
    """Four AsyncSessions on four connections fetch at once and hold their locks together: disjoint jobs."""
    workers, batch_size = 4, 3

    async def main(async_engine: AsyncEngine) -> list[tuple[int, list[uuid.UUID]]]:
        bind = translated(async_engine, installed_schema)
        async with AsyncSession(bind) as setup, setup.begin():
            boss = AsyncBoss(setup, schema=installed_schema)
            await boss.create_queue("shared")
            await boss.insert([{"name": "shared", "data": {"n": n}} for n in range(workers * batch_size)])
        before_fetch, after_fetch = Rendezvous(workers), Rendezvous(workers)

        async def worker() -> tuple[int, list[uuid.UUID]]:
            async with AsyncSession(bind) as session:
                boss = AsyncBoss(session, schema=installed_schema)
                pid = await session.scalar(select(func.pg_backend_pid()))
                assert isinstance(pid, int)
                await before_fetch.wait()  # all fetch at once
                ids = [job.id for job in await boss.fetch("shared", batch_size=batch_size)]
                await after_fetch.wait()  # everyone holds their locks until everyone has fetched
                await session.commit()
                return pid, ids

        return await asyncio.gather(*(worker() for _ in range(workers)))

    results = run_on(database_url, driver, main, poolclass=NullPool)
    assert len({pid for pid, _ in results}) == workers  # one connection, one transaction each
    batches = [ids for _, ids in results]
    assert [len(ids) for ids in batches] == [batch_size] * workers
    assert len({job_id for ids in batches for job_id in ids}) == workers * batch_size
    assert committed_count(engine, installed_schema, "job", "state = 'active'") == workers * batch_size


@pytest.mark.parametrize("driver", DRIVERS)
def test_async_workers_drain_a_queue_working_each_job_once(
    database_url: URL, engine: Engine, installed_schema: str, driver: str
) -> None:
    """Eight workers on a pool of eight fetch, complete and commit small batches until the queue is empty."""
    workers, jobs = 8, 200

    async def main(async_engine: AsyncEngine) -> list[list[uuid.UUID]]:
        bind = translated(async_engine, installed_schema)
        async with AsyncSession(bind) as setup, setup.begin():
            boss = AsyncBoss(setup, schema=installed_schema)
            await boss.create_queue("drain")
            await boss.insert([{"name": "drain", "data": {"n": n}} for n in range(jobs)])

        async def worker() -> list[uuid.UUID]:
            worked: list[uuid.UUID] = []
            while True:
                async with AsyncSession(bind) as session, session.begin():
                    boss = AsyncBoss(session, schema=installed_schema)
                    batch = await boss.fetch("drain", batch_size=5)
                    if not batch:
                        return worked
                    ids = [job.id for job in batch]
                    assert await boss.complete("drain", ids, {"done": True}) == len(ids)
                    worked += ids

        return await asyncio.gather(*(worker() for _ in range(workers)))

    results = run_on(database_url, driver, main, pool_size=workers, max_overflow=0)
    worked = [job_id for ids in results for job_id in ids]
    assert len(worked) == len(set(worked)) == jobs
    assert sum(1 for ids in results if ids) > 1  # the work was shared
    assert committed_count(engine, installed_schema, "job", "state = 'completed'") == jobs
