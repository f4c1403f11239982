"""``sqla-boss demo``, the README's main command, on the test server and on an embedded PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import URL, Engine
from support import schema_exists

from sqla_boss import demo


@pytest.mark.parametrize("pgboss", [10, 12], ids=["pgboss10", "pgboss12"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_demo_on_a_server_commits_orders_with_their_jobs_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch, database_url: URL, engine: Engine, use_async: bool, pgboss: int
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url.render_as_string(hide_password=False))
    lines: list[str] = []
    summary = demo.run(say=lines.append, use_async=use_async, pgboss=pgboss)
    version = {10: 24, 12: 46}[pgboss]
    assert any(f"(version {version}, pg-boss {pgboss})" in line for line in lines)

    assert summary.rolled_back == ["linus"]
    assert sorted(summary.placed) == ["ada", "barbara", "edsger", "grace"]
    assert sorted(summary.confirmations) == ["ada", "barbara", "edsger", "grace"]
    assert summary.failures == ["barbara"]
    assert summary.states == {"completed": 4}
    assert any("ROLLED BACK" in line and "linus" in line for line in lines)
    assert any(line.startswith("  jobs by state    : completed 4") for line in lines)
    assert not schema_exists(engine, demo.BOSS_SCHEMA)
    assert not schema_exists(engine, demo.APP_SCHEMA)


def test_demo_runs_twice_on_the_same_embedded_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    first: list[str] = []
    demo.run(say=first.append)
    second: list[str] = []
    summary = demo.run(say=second.append)
    third: list[str] = []
    beside = demo.run(say=third.append, pgboss=12)  # version 46 in a schema of its own, beside version 24

    assert summary.states == {"completed": 4}
    assert beside.states == {"completed": 4}
    assert (tmp_path / "sqla_boss" / "pgdata" / "PG_VERSION").exists()
    assert "embedded PostgreSQL" in first[0]
    assert "embedded PostgreSQL" in second[0]
