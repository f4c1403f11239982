"""The shop's async side, tested with the kit's async fixtures (pytest-asyncio) and awaitable helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import ANY

import pytest
import pytest_asyncio
import shop
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from sqla_boss import AsyncBoss, Job, JobState
from sqla_boss.testing import (
    JobFactory,
    QueueFactory,
    async_assert_not_sent,
    async_assert_sent,
    async_drain,
    async_run_jobs,
    async_sent_jobs,
)

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture(autouse=True)
async def installed(async_boss_session: AsyncSession) -> None:
    await async_boss_session.run_sync(shop.install)


@pytest.fixture
def mailer(monkeypatch: pytest.MonkeyPatch) -> shop.Mailer:
    fresh = shop.Mailer()
    monkeypatch.setattr(shop, "mailer", fresh)
    return fresh


async def test_placing_an_order_sends_its_confirmation(async_boss_session: AsyncSession) -> None:
    order = await shop.place_order_async(async_boss_session, "ada", "ada@example.com", 4200)

    (job,) = await async_assert_sent(
        async_boss_session, "emails", {"order_id": order.id, "to": "ada@example.com", "template": ANY}, state="created"
    )
    assert job.singleton_key == f"order-{order.id}"
    assert await async_sent_jobs(async_boss_session, "emails", state=JobState.created) == [job]


async def test_an_invalid_order_sends_nothing(async_boss_session: AsyncSession) -> None:
    with pytest.raises(shop.InvalidOrder):
        await shop.place_order_async(async_boss_session, "ada", "ada@example.com", -1)

    await async_assert_not_sent(async_boss_session, "emails")
    with pytest.raises(AssertionError, match=r"but no job was sent to 'emails' at all"):
        await async_assert_sent(async_boss_session, "emails")


async def test_the_async_boss_fixture(async_boss: AsyncBoss, async_boss_session: AsyncSession) -> None:
    await async_boss.send("shipments", {"order_id": 3}, priority=2)

    await async_assert_sent(async_boss_session, "shipments", {"order_id": 3}, priority=2, count=1)


async def test_factories_through_run_sync(async_boss_session: AsyncSession) -> None:
    def build(session: Any) -> Job:
        QueueFactory(name="reports")
        job: Job = JobFactory(name="reports", state=JobState.active)
        return job

    job = await async_boss_session.run_sync(build)

    assert await async_assert_sent(async_boss_session, "reports", state="active") == [job]


async def test_coroutine_and_plain_handlers(async_boss_session: AsyncSession, mailer: shop.Mailer) -> None:
    await shop.place_order_async(async_boss_session, "ada", "ada@example.com", 4200)
    await shop.place_order_async(async_boss_session, "bob", "bob@example.com", 990)

    first = await async_run_jobs(async_boss_session, "emails", shop.send_confirmation_async, limit=1)
    second = await async_run_jobs(async_boss_session, "emails", shop.send_confirmation)  # a plain function

    assert (first.counts["completed"], second.counts["completed"]) == (1, 1)
    assert len(mailer.outbox) == 2
    done = await async_assert_sent(async_boss_session, "emails", state="completed", count=2)
    assert [job.output for job in done] == [{"delivered": 1}] * 2


async def test_a_failing_coroutine_handler_is_retried_then_dead_lettered(
    async_boss_session: AsyncSession, mailer: shop.Mailer
) -> None:
    order = await shop.place_order_async(async_boss_session, "ada", "ada@example.com", 4200)
    mailer.down = True

    result = await async_run_jobs(async_boss_session, "emails", shop.send_confirmation_async)

    assert result.counts == {"completed": 0, "failed": 1, "retried": 2}
    await async_assert_sent(async_boss_session, "emails_dead", {"order_id": order.id, "to": ANY, "template": ANY})


async def test_a_transactional_coroutine_handler_writes_in_the_test_session(
    async_boss_session: AsyncSession,
) -> None:
    order = await shop.place_order_async(async_boss_session, "ada", "ada@example.com", 4200)
    await AsyncBoss(async_boss_session, shop.JOBS_SCHEMA).send("shipments", {"order_id": order.id})

    result = await async_run_jobs(async_boss_session, "shipments", shop.mark_shipped_async, transactional=True)

    assert result.counts == {"completed": 1, "failed": 0, "retried": 0}
    await async_boss_session.refresh(order)
    assert order.shipped is True


@pytest_asyncio.fixture
async def async_worker_engine(sqla_boss_database_url: URL) -> AsyncIterator[Any]:
    engine = create_async_engine(sqla_boss_database_url)
    yield engine
    await engine.dispose()


async def test_async_drain_runs_the_async_workers_handlers(
    async_boss_session: AsyncSession, async_worker_engine: Any, mailer: shop.Mailer
) -> None:
    worker = shop.build_async_worker(async_worker_engine)  # never started
    order = await shop.place_order_async(async_boss_session, "ada", "ada@example.com", 4200)
    await AsyncBoss(async_boss_session, shop.JOBS_SCHEMA).send("shipments", {"order_id": order.id})

    result = await async_drain(async_boss_session, worker)

    assert result.counts == {"completed": 3, "failed": 0, "retried": 0}
    assert sorted(mailer.outbox) == [("ada@example.com", "confirmation"), ("ada@example.com", "shipped")]
    await async_boss_session.refresh(order)
    assert order.shipped is True
