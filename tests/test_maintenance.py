"""Maintenance on real PostgreSQL: expire, archive, drop, the cluster-wide claim, and the state counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from sqla_boss import Boss, JobState
from sqla_boss.errors import InvalidOptionError
from sqla_boss.identifiers import quote_identifier
from sqla_boss.maintenance import Maintenance, MaintenanceSettings
from sqla_boss.schema import schema_translate_map
from sqla_boss.v24.statements import EXPIRED_OUTPUT


@pytest.fixture
def jobs_engine(engine: Engine, installed_schema: str) -> Engine:
    return engine.execution_options(schema_translate_map=schema_translate_map(installed_schema))


@pytest.fixture
def boss(jobs_engine: Engine, installed_schema: str) -> Iterator[Boss]:
    """A Boss whose every call commits, so that maintenance (its own transactions) sees the rows."""
    with Session(jobs_engine, autoflush=False) as session:
        boss = Boss(session, schema=installed_schema)
        yield boss


def commit(boss: Boss) -> None:
    boss.session.commit()


def execute(engine: Engine, schema: str, sql: str, **params: object) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql.replace("<S>", quote_identifier(schema))), params)


def state_of(engine: Engine, schema: str, job_id: uuid.UUID) -> tuple[str, object] | None:
    with engine.connect() as connection:
        row = connection.execute(
            text(f"SELECT state::text, output FROM {quote_identifier(schema)}.job WHERE id = :id"), {"id": job_id}
        ).first()
    return None if row is None else (row[0], row[1])


def test_expire_fails_jobs_that_ran_too_long_by_their_retry_rules(
    boss: Boss, engine: Engine, installed_schema: str
) -> None:
    boss.create_queue("dlq")
    boss.create_queue("q", dead_letter="dlq")
    once = boss.send("q", {"n": 1}, retry_limit=0, expire_in_seconds=1)
    twice = boss.send("q", {"n": 2}, retry_limit=1, expire_in_seconds=1)
    fresh = boss.send("q", {"n": 3}, retry_limit=0, expire_in_seconds=60)
    assert len(boss.fetch("q", batch_size=3)) == 3
    commit(boss)
    execute(engine, installed_schema, "UPDATE <S>.job SET started_on = now() - interval '5 seconds' WHERE name = 'q'")

    assert Maintenance(engine, installed_schema).expire() == 2
    assert state_of(engine, installed_schema, once) == ("failed", EXPIRED_OUTPUT)
    assert state_of(engine, installed_schema, twice) == ("retry", EXPIRED_OUTPUT)
    assert state_of(engine, installed_schema, fresh) == ("active", None)
    with engine.connect() as connection:
        copies = connection.execute(
            text(f"SELECT data, output FROM {quote_identifier(installed_schema)}.job WHERE name = 'dlq'")
        ).all()
    assert [tuple(row) for row in copies] == [({"n": 1}, EXPIRED_OUTPUT)]


def test_archive_moves_finished_and_outdated_jobs(boss: Boss, engine: Engine, installed_schema: str) -> None:
    boss.create_queue("q")
    done, failed, waiting, recent = (boss.send("q", {"n": n}, retry_limit=0) for n in range(4))
    boss.fetch("q", batch_size=4)
    boss.complete("q", [done, recent])
    boss.fail("q", failed)
    commit(boss)
    execute(
        engine,
        installed_schema,
        "UPDATE <S>.job SET completed_on = now() - interval '2 hours' WHERE id IN (:a, :b)",
        a=done,
        b=failed,
    )
    execute(
        engine,
        installed_schema,
        "UPDATE <S>.job SET state = 'created', keep_until = now() - interval '1 second' WHERE id = :w",
        w=waiting,
    )

    maintenance = Maintenance(
        engine, installed_schema, archive_completed_after_seconds=3600, archive_failed_after_seconds=7200 * 2
    )
    assert maintenance.archive() == 2  # done (completed > 1 h ago) and waiting (past keep_until); failed waits 4 h
    with engine.connect() as connection:
        archived = dict(
            connection.execute(text(f"SELECT id, state::text FROM {quote_identifier(installed_schema)}.archive")).all()
        )
    assert archived == {done: "completed", waiting: "created"}
    assert state_of(engine, installed_schema, failed) is not None
    assert state_of(engine, installed_schema, recent) is not None

    execute(
        engine, installed_schema, "UPDATE <S>.archive SET archived_on = now() - interval '8 days' WHERE id = :d", d=done
    )
    assert maintenance.drop() == 1
    with engine.connect() as connection:
        left = connection.execute(text(f"SELECT id FROM {quote_identifier(installed_schema)}.archive")).scalars().all()
    assert left == [waiting]


def test_maintain_runs_all_three_and_reports(boss: Boss, engine: Engine, installed_schema: str) -> None:
    boss.create_queue("q")
    commit(boss)
    result = Maintenance(engine, installed_schema).maintain()
    assert (result.expired, result.archived, result.dropped) == (0, 0, 0)
    assert result.ms >= 0


def test_only_one_instance_wins_each_interval(engine: Engine, installed_schema: str) -> None:
    first = Maintenance(engine, installed_schema, maintenance_interval_seconds=60)
    second = Maintenance(engine, installed_schema, maintenance_interval_seconds=60)
    assert first.claim() is True
    assert second.claim() is False
    assert first.maintain_if_due() is None
    execute(engine, installed_schema, "UPDATE <S>.version SET maintained_on = now() - interval '61 seconds'")
    result = second.maintain_if_due()
    assert result is not None
    assert first.claim() is False


def test_count_states_and_queue_snapshots(boss: Boss, engine: Engine, installed_schema: str) -> None:
    boss.create_queue("a")
    boss.create_queue("b")
    boss.create_queue("idle")
    boss.send("a")
    boss.send("a")
    boss.send("b")
    [active] = boss.fetch("b")
    commit(boss)
    maintenance = Maintenance(engine, installed_schema)
    counts = maintenance.count_states()
    assert {key: counts[key] for key in ("created", "active", "failed", "all")} == {
        "created": 2,
        "active": 1,
        "failed": 0,
        "all": 3,
    }
    assert counts["queues"]["a"] == {
        "created": 2,
        "retry": 0,
        "active": 0,
        "completed": 0,
        "cancelled": 0,
        "failed": 0,
        "all": 2,
    }
    assert set(counts["queues"]) == {"a", "b"}  # as in pg-boss, only queues with jobs
    snapshots = {snapshot.name: snapshot for snapshot in maintenance.queue_snapshots()}
    assert snapshots["a"].created == 2
    assert snapshots["a"].oldest_queued_seconds is not None
    assert snapshots["a"].oldest_queued_seconds >= 0
    assert snapshots["b"].active == 1
    assert snapshots["b"].oldest_queued_seconds is None
    assert snapshots["idle"].created == 0
    assert active.state is JobState.active


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, MaintenanceSettings(43200, 43200, 7 * 86400, 120)),
        ({"archive_completed_after_seconds": 60}, MaintenanceSettings(60, 60, 7 * 86400, 120)),
        ({"delete_after_hours": 2, "delete_after_seconds": 5}, MaintenanceSettings(43200, 43200, 7200, 120)),
        (
            {"maintenance_interval_minutes": 3, "maintenance_interval_seconds": 5},
            MaintenanceSettings(43200, 43200, 7 * 86400, 180),
        ),
    ],
)
def test_settings_follow_pg_boss(options: dict[str, int], expected: MaintenanceSettings) -> None:
    assert MaintenanceSettings.from_options(options) == expected


@pytest.mark.parametrize(
    "options",
    [
        {"archive_completed_after_seconds": 0},
        {"delete_after_days": -1},
        {"maintenance_interval_seconds": 86400},
        {"nope": 1},
    ],
)
def test_bad_settings_are_refused(options: dict[str, int]) -> None:
    with pytest.raises(InvalidOptionError):
        MaintenanceSettings.from_options(options)
