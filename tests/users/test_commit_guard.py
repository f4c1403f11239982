"""The kit's pytest plugin seen from a project of its own (pytester): its fixtures, and the guard that fails a
test whose code committed jobs behind the test's back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Engine, delete, select

from sqla_boss import Job
from sqla_boss.schema import schema_translate_map

COMMITTING = '''
import pytest

from sqla_boss import Boss


def commit_a_job(engine, schema, marker):
    """What code with an engine of its own does: its job is committed, whatever the test's session does."""
    with engine.begin() as connection:
        boss = Boss(connection, schema)
        boss.create_queue("leaky")
        boss.send("leaky", {"marker": marker})


def test_commits_through_its_own_engine(boss_session, sqla_boss_engine, sqla_boss_schema):
    commit_a_job(sqla_boss_engine, sqla_boss_schema, "RUN-caught")


@pytest.mark.sqla_boss_allow_commits
def test_may_commit(boss_session, sqla_boss_engine, sqla_boss_schema):
    commit_a_job(sqla_boss_engine, sqla_boss_schema, "RUN-allowed")


def test_without_the_kit_sessions_nothing_is_checked(sqla_boss_engine, sqla_boss_schema):
    commit_a_job(sqla_boss_engine, sqla_boss_schema, "RUN-unchecked")


def test_fails_of_its_own_and_commits(boss_session, sqla_boss_engine, sqla_boss_schema):
    commit_a_job(sqla_boss_engine, sqla_boss_schema, "RUN-failing")
    assert False, "the test's own failure"


def test_commits_only_its_session(boss, boss_session):
    boss.create_queue("tidy")
    boss.send("tidy", {"marker": "RUN-rolled-back"})
    boss_session.commit()  # a savepoint: the fixture's transaction rolls back
'''

FRESH_PROJECT = """
import pytest
from unittest.mock import ANY

from sqla_boss.testing import JobFactory, assert_sent, async_assert_sent, run_jobs


def test_the_boss_fixture_and_the_factories(boss, boss_session, sqla_boss_schema):
    assert boss.schema == sqla_boss_schema
    boss.create_queue("q")
    boss.send("q", {"n": 1})
    JobFactory(name="q", data={"n": 2})
    assert_sent(boss_session, "q", {"n": ANY}, count=2)
    assert run_jobs(boss_session, "q", lambda jobs: None).counts["completed"] == 2


@pytest.mark.asyncio
async def test_the_async_fixtures(async_boss, async_boss_session):
    await async_boss.create_queue("q")
    await async_boss.send("q", {"n": 1})
    await async_assert_sent(async_boss_session, "q", {"n": 1})
"""


@pytest.fixture
def project(
    pytester: pytest.Pytester, sqla_boss_database_url: URL, sqla_boss_schema: str, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """A project of its own on this run's database and pg-boss schema."""
    monkeypatch.setenv("DATABASE_URL", sqla_boss_database_url.render_as_string(hide_password=False))
    pytester.makeini(
        f"[pytest]\nsqla_boss_schema = {sqla_boss_schema}\nasyncio_default_fixture_loop_scope = function\n"
    )
    return pytester


@pytest.fixture
def run_marker(sqla_boss_engine: Engine, sqla_boss_schema: str) -> Iterator[str]:
    """A marker for the jobs the project's tests commit; those left are deleted afterwards."""
    marker = uuid.uuid4().hex
    yield marker
    with sqla_boss_engine.begin() as connection:
        connection.execute(
            delete(Job).where(Job.name == "leaky", Job.data["marker"].as_string().startswith(marker)),
            execution_options={"schema_translate_map": schema_translate_map(sqla_boss_schema)},
        )


def committed_markers(engine: Engine, schema: str, marker: str) -> set[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Job.data["marker"].as_string()).where(Job.data["marker"].as_string().startswith(marker)),
            execution_options={"schema_translate_map": schema_translate_map(schema)},
        )
        return {value.removeprefix(f"{marker}-") for (value,) in rows}


def test_a_test_that_commits_jobs_fails_and_its_jobs_are_deleted(
    project: pytest.Pytester, run_marker: str, sqla_boss_engine: Engine, sqla_boss_schema: str
) -> None:
    project.makepyfile(test_committing=COMMITTING.replace("RUN", run_marker))

    result = project.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_commits_through_its_own_engine _*",
            f"sqla_boss: 1 job(s) were COMMITTED to schema '{sqla_boss_schema}' while this test ran, outside the "
            "test's transaction (which the kit always rolls back):",
            f"  - queue 'leaky', id *, state created, data {{'marker': '{run_marker}-caught'}}",
            "The code under test committed them through a connection of its own*@pytest.mark.sqla_boss_allow_commits*"
            "These jobs are deleted after the test.",
        ]
    )
    # A test that failed of its own keeps its failure; the guard's findings come as a section of the report.
    result.stdout.fnmatch_lines(
        [
            "*_ test_fails_of_its_own_and_commits _*",
            "*AssertionError: the test's own failure*",
            "*Captured sqla_boss call*",
            f"  - queue 'leaky', id *, data {{'marker': '{run_marker}-failing'}}",
        ]
    )
    assert f"{run_marker}-rolled-back" not in result.stdout.str()
    # Caught jobs are gone; allowed and unchecked ones stay (deleted by this test's fixture).
    assert committed_markers(sqla_boss_engine, sqla_boss_schema, run_marker) == {"allowed", "unchecked"}


LOCKING = """
from sqla_boss import Boss


def test_commits_then_locks_the_job_table(boss, sqla_boss_engine, sqla_boss_schema):
    with sqla_boss_engine.begin() as connection:
        Boss(connection, sqla_boss_schema).create_queue("leaky")
        Boss(connection, sqla_boss_schema).send("leaky", {"marker": "RUN-locked"})
    boss.create_queue("dropped")
    boss.delete_queue("dropped")  # holds an ACCESS EXCLUSIVE lock on job until the test's rollback
"""


def test_when_the_tests_transaction_locks_the_job_table_the_guard_reports_at_teardown(
    project: pytest.Pytester, run_marker: str, sqla_boss_engine: Engine, sqla_boss_schema: str
) -> None:
    project.makepyfile(test_locking=LOCKING.replace("RUN", run_marker))

    result = project.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_commits_then_locks_the_job_table*",
            f"  - queue 'leaky', id *, state created, data {{'marker': '{run_marker}-locked'}}",
            "*These jobs have been deleted.",
        ]
    )
    assert committed_markers(sqla_boss_engine, sqla_boss_schema, run_marker) == set()


def test_the_fixtures_in_a_project_of_their_own(project: pytest.Pytester) -> None:
    project.makepyfile(test_fresh=FRESH_PROJECT)

    result = project.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)


def test_the_async_fixtures_say_what_to_install_without_pytest_asyncio(project: pytest.Pytester) -> None:
    project.makepyfile(pytest_asyncio="raise ImportError('no pytest-asyncio here')")  # shadows the real one
    project.makepyfile(test_async="def test_wants_an_async_session(async_boss_session):\n    pass\n")

    result = project.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the async_boss_session and async_boss fixtures need pytest-asyncio*"])
