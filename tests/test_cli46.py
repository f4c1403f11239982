"""The repository commands of ``sqla-boss`` on a schema at version 46 (pg-boss 12): the same commands, pg-boss
12's options, and a clear line where a command runs version 24 only."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import Engine
from support import Run

from sqla_boss import migrations


@pytest.fixture
def installed_schema(engine: Engine, schema_name: str) -> str:
    """A schema at version 46, committed (the ``run`` fixture's commands work on it)."""
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    return schema_name


def test_queue_send_jobs_and_changes_on_version_46(run: Run) -> None:
    status, out, err = run("create-queue", "orders", "--policy", "key_strict_fifo", "--partition", "--json")
    assert (status, json.loads(out)) == (0, {"queue": "orders", "created": True}), err
    status, out, err = run("send", "orders", '{"n": 1}', "--singleton-key", "k", "--group", "g:gold", "--json")
    assert status == 0, err
    job_id = json.loads(out)["id"]
    status, _, err = run("send", "orders", '{"n": 2}')
    assert status == 2
    assert "key_strict_fifo" in err
    assert "singleton_key" in err
    assert "Traceback" not in err

    status, out, _ = run("queues", "--json")
    [orders] = json.loads(out)
    assert (orders["name"], orders["created"], orders["retry"], orders["active"]) == ("orders", 1, 0, 0)

    status, out, _ = run("jobs", "orders", "--json")
    [row] = json.loads(out)
    assert (row["id"], row["singleton_key"], row["group_id"], row["group_tier"], row["policy"]) == (
        job_id,
        "k",
        "g",
        "gold",
        "key_strict_fifo",
    )
    status, out, _ = run("job", job_id, "--json")
    assert (json.loads(out)["id"], json.loads(out)["archived"]) == (job_id, False)

    status, out, _ = run("cancel", job_id, "--json")
    assert (status, json.loads(out)) == (0, {"changed": 1})
    status, out, _ = run("resume", "--queue", "orders", "--json")
    assert (status, json.loads(out)) == (0, {"changed": 1})
    status, out, _ = run("delete", str(uuid.UUID(job_id)), "--json")
    assert (status, json.loads(out)) == (0, {"changed": 1})


def test_keyed_schedules_on_version_46(run: Run) -> None:
    assert run("create-queue", "reports")[0] == 0
    assert run("schedule", "reports", "0 * * * *", '{"r": 1}', "--key", "hourly", "--tz", "Europe/Paris")[0] == 0
    assert run("schedule", "reports", "30 6 * * *", "--key", "daily")[0] == 0
    status, out, _ = run("schedules", "--json")
    rows = json.loads(out)
    assert [(row["name"], row["key"], row["cron"], row["timezone"]) for row in rows] == [
        ("reports", "daily", "30 6 * * *", "UTC"),
        ("reports", "hourly", "0 * * * *", "Europe/Paris"),
    ]
    assert rows[1]["options"] == {"key": "hourly", "tz": "Europe/Paris"}
    status, out, _ = run("unschedule", "reports", "--key", "daily")
    assert status == 0
    assert "unscheduled" in out
    status, out, _ = run("schedules", "--json")
    assert [row["key"] for row in json.loads(out)] == ["hourly"]


def test_version_24_options_are_refused_on_version_46_in_one_line(run: Run) -> None:
    status, _, err = run("create-queue", "old", "--retention-minutes", "5")
    assert status == 2
    assert "retention_minutes" in err
    assert "retention_seconds" in err
    assert len(err.strip().splitlines()) == 1, err


def test_maintain_runs_one_supervise_pass_on_version_46(run: Run, engine: Engine, installed_schema: str) -> None:
    from sqlalchemy import text

    from sqla_boss.identifiers import quote_identifier

    schema = quote_identifier(installed_schema)
    assert run("create-queue", "q")[0] == 0
    with engine.begin() as connection:
        connection.execute(
            text(
                f"INSERT INTO {schema}.job (name, state, started_on, expire_seconds, retry_limit) "
                "VALUES ('q', 'active', now() - interval '1 hour', 1, 0)"
            )
        )
    status, out, err = run("maintain", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert (result["monitored"], result["expired"], result["deleted"]) == (["q"], 1, 0)
    status, out, _ = run("maintain")  # the queue's turn is taken for the next minute
    assert out.startswith("counted 0 and swept 0 queue(s): expired 0")
    status, _, err = run("maintain", "--archive-completed-after-seconds", "60")
    assert status == 2
    assert err.strip().splitlines() == [
        "sqla-boss: --archive-completed-after-seconds: not an option of schema version 46"
    ]


def test_check_passes_on_version_46_and_names_a_missing_queue(run: Run) -> None:
    assert run("create-queue", "orders")[0] == 0
    status, out, err = run("check", "--queues", "orders,absent", "--json")
    checks = {check["check"]: (check["ok"], check["detail"]) for check in json.loads(out)["checks"]}
    assert checks["schema"][0] is True, checks
    assert "pg-boss schema version 46 (supported: 24, 46)" in str(checks["schema"][1])
    assert (checks["queue orders"], checks["queue absent"]) == ((True, "exists"), (False, "missing"))
    assert status == 2, err
