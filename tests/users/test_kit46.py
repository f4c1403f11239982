"""The testing kit on a schema at version 46 (pg-boss 12), in a project of its own (pytester): the ini option
``sqla_boss_pgboss = 12``, the factories, ``assert_sent`` on version 46's columns, ``run_jobs`` and ``drain``,
on both APIs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Engine, text
from support import drop_schema, unique_name

from sqla_boss import migrations
from sqla_boss.identifiers import quote_identifier

PROJECT = """
import pytest
from unittest.mock import ANY

from sqla_boss import Boss
from sqla_boss.testing import (
    JobFactory,
    QueueFactory,
    assert_not_sent,
    assert_sent,
    async_assert_sent,
    async_drain,
    async_run_jobs,
    drain,
    run_jobs,
)
from sqla_boss.v46.models import Job, Queue


def test_the_fixtures_install_version_46(boss):
    assert boss.version() == 46


def test_factories_build_version_46_rows(boss, boss_session):
    queue = QueueFactory(name="fifo", policy="key_strict_fifo", partition=True, retention_seconds=60)
    assert isinstance(queue, Queue)
    assert (queue.policy.value, queue.partition, queue.retention_seconds) == ("key_strict_fifo", True, 60)
    job = JobFactory(name="fifo", singleton_key="k", group_id="g", heartbeat_seconds=30)
    assert isinstance(job, Job)
    assert (job.policy.value, job.group_id, job.heartbeat_seconds) == ("key_strict_fifo", "g", 30)


def test_assert_sent_reads_version_46_columns(boss, boss_session):
    boss.create_queue("emails")
    boss.send("emails", {"to": "ada"}, group={"id": "tenant", "tier": "gold"}, delete_after_seconds=60)
    [job] = assert_sent(boss_session, "emails", {"to": ANY}, group_id="tenant", group_tier="gold")
    assert job.deletion_seconds == 60
    assert_not_sent(boss_session, "emails", group_id="other")
    with pytest.raises(Exception, match="no Job column named 'expire_in'"):
        assert_sent(boss_session, "emails", expire_in=1)  # a column of version 24


def test_run_jobs_and_drain_settle_by_version_46_rules(boss, boss_session):
    boss.create_queue("work", retry_limit=1)
    boss.create_queue("flaky", retry_limit=1)
    boss.send("work", {"n": 1})
    boss.send("flaky", {"n": 2})
    result = run_jobs(boss_session, "work", lambda jobs: {"done": jobs[0].data["n"]})
    assert result.counts["completed"] == 1
    assert_sent(boss_session, "work", state="completed", output={"done": 1})

    def fail(jobs):
        raise RuntimeError("down")

    result = drain(boss_session, {"flaky": fail, "work": lambda jobs: None})
    assert result.counts == {"completed": 0, "failed": 1, "retried": 1}  # the first try, then its retry
    [job] = assert_sent(boss_session, "flaky", state="failed", retry_count=1)
    assert job.output["message"] == "down"
    assert drain(boss_session, {"missing": fail}).counts["completed"] == 0  # a queue that is not there


@pytest.mark.asyncio
async def test_the_async_kit(async_boss, async_boss_session):
    await async_boss.create_queue("q")
    await async_boss.send("q", {"n": 1}, priority=3)
    await async_assert_sent(async_boss_session, "q", {"n": 1}, priority=3)
    assert (await async_run_jobs(async_boss_session, "q", lambda jobs: None)).counts["completed"] == 1
    assert (await async_drain(async_boss_session, {"q": lambda jobs: None})).counts["completed"] == 0
"""


@pytest.fixture
def v46_project(
    pytester: pytest.Pytester, sqla_boss_database_url: URL, sqla_boss_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.Pytester]:
    """A project whose kit installs version 46 in a schema of its own, dropped afterwards."""
    schema = unique_name("kit46")
    monkeypatch.setenv("DATABASE_URL", sqla_boss_database_url.render_as_string(hide_password=False))
    pytester.makeini(
        f"[pytest]\nsqla_boss_schema = {schema}\nsqla_boss_pgboss = 12\nasyncio_default_fixture_loop_scope = function\n"
    )
    yield pytester
    drop_schema(sqla_boss_engine, schema)
    with sqla_boss_engine.begin() as connection:
        connection.execute(
            text(f"DROP TABLE IF EXISTS public.{quote_identifier(migrations.version_table_name(schema))}")
        )


def test_the_kit_on_version_46(v46_project: pytest.Pytester) -> None:
    v46_project.makepyfile(test_v46=PROJECT)

    result = v46_project.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=5)


def test_an_installed_version_46_schema_keeps_its_version_without_the_option(
    pytester: pytest.Pytester, sqla_boss_database_url: URL, sqla_boss_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = unique_name("kit46")
    migrations.upgrade(sqla_boss_engine, schema=schema, pgboss=12)
    monkeypatch.setenv("DATABASE_URL", sqla_boss_database_url.render_as_string(hide_password=False))
    pytester.makeini(f"[pytest]\nsqla_boss_schema = {schema}\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_kept="def test_kept(boss):\n    assert boss.version() == 46\n")
    try:
        pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    finally:
        drop_schema(sqla_boss_engine, schema)
        with sqla_boss_engine.begin() as connection:
            table = quote_identifier(migrations.version_table_name(schema))
            connection.execute(text(f"DROP TABLE IF EXISTS public.{table}"))
