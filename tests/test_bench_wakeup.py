"""``python -m bench wakeup``, small (slow: it runs pg-boss 12 in Node processes): it measures both directions
from the database's clock and cleans up after itself. No number is judged here beyond "woken, not polled"
(every latency under the 30 s polling interval by a wide margin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pgboss import PgBoss, pgboss12_fixture, pgboss_install_fixture  # noqa: F401  (the fixtures)
from sqlalchemy import URL, Engine
from support import ROOT, schema_exists

pytestmark = [pytest.mark.slow, pytest.mark.pgboss]


def test_the_wakeup_bench_measures_both_directions(
    tmp_path: Path, database_url: URL, engine: Engine, pgboss12: PgBoss
) -> None:
    output = tmp_path / "wakeup.json"
    env = {**os.environ, "DATABASE_URL": database_url.render_as_string(hide_password=False)}
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "wakeup", "--count", "3", "--spacing", "0.05", "--json", str(output)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, f"bench failed:\n{completed.stdout}\n{completed.stderr}"
    result = json.loads(output.read_text())
    assert set(result["directions"]) == {"Node -> Python", "Python -> Node"}
    for direction, row in result["directions"].items():
        assert len(row["latencies_ms"]) == 3, direction
        assert all(0 < value < 10_000 for value in row["latencies_ms"]), (direction, row)
        assert row["median_ms"] <= row["p90_ms"] <= row["max_ms"]
    assert "Node -> Python" in completed.stdout
    assert "median ms" in completed.stdout
    assert not schema_exists(engine, "bench_wakeup")
