"""The operations commands of ``sqla-boss``: current, queues, jobs, send, maintain, schedule(s), unschedule."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import Engine, text
from support import Run

from sqla_boss.identifiers import quote_identifier


def test_current_reports_the_installed_version(run: Run, installed_schema: str) -> None:
    status, out, _ = run("current", "--json")
    assert status == 0
    assert json.loads(out) == {
        "schema": installed_schema,
        "state": "installed",
        "pgboss_version": 24,
        "pgboss_releases": "pg-boss 10.1.5 to 10.4.x",
        "revision": "pgboss_v24",
        "fetch_index_revision": None,
    }


def test_send_then_list_queues_and_jobs(run: Run, engine: Engine, installed_schema: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"SELECT {quote_identifier(installed_schema)}.create_queue('emails', '{{}}')"))
    status, out, _ = run("send", "emails", '{"to": "ada"}', "--priority", "3", "--json")
    assert status == 0
    job_id = uuid.UUID(json.loads(out)["id"])  # committed: the next commands see it

    status, out, _ = run("queues", "--json")
    [emails] = json.loads(out)
    assert (emails["name"], emails["created"], emails["active"]) == ("emails", 1, 0)
    assert emails["oldest_queued_seconds"] >= 0

    status, out, _ = run("jobs", "emails", "--json")
    assert [(row["id"], row["priority"], row["data"]) for row in json.loads(out)] == [(str(job_id), 3, {"to": "ada"})]
    status, out, _ = run("jobs", "emails", "--state", "completed", "--json")
    assert json.loads(out) == []

    status, out, _ = run("queues")
    assert status == 0
    assert out.splitlines()[0].split() == [
        "queue", "created", "retry", "active", "completed", "cancelled", "failed", "oldest", "queued",
    ]  # fmt: skip
    assert out.splitlines()[2].split()[:2] == ["emails", "1"]


def test_send_refuses_bad_input_with_exit_2(run: Run) -> None:
    status, _, err = run("send", "missing", "{}")
    assert status == 2
    assert "queue 'missing' does not exist" in err
    status, _, err = run("send", "missing", "{bad")
    assert (status, "data is not JSON") == (2, err.split(": ", 1)[1][:16])


def test_schedule_schedules_and_unschedule(run: Run, engine: Engine, installed_schema: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"SELECT {quote_identifier(installed_schema)}.create_queue('digest', '{{}}')"))
    assert run("schedule", "digest", "*/5 * * * *", '{"n": 1}', "--tz", "Europe/Paris")[0] == 0
    status, out, _ = run("schedules", "--json")
    assert json.loads(out) == [
        {
            "name": "digest",
            "cron": "*/5 * * * *",
            "timezone": "Europe/Paris",
            "data": {"n": 1},
            "options": {"tz": "Europe/Paris"},
        }
    ]
    status, _, err = run("schedule", "digest", "not a cron")
    assert status == 2
    assert "cron" in err
    assert run("unschedule", "digest")[1].strip() == "unscheduled 'digest'"
    assert json.loads(run("schedules", "--json")[1]) == []


def test_maintain_reports_what_it_did(run: Run, engine: Engine, installed_schema: str) -> None:
    schema = quote_identifier(installed_schema)
    with engine.begin() as connection:
        connection.execute(text(f"SELECT {schema}.create_queue('q', '{{}}')"))
        connection.execute(
            text(
                f"INSERT INTO {schema}.job (name, state, started_on, expire_in, retry_limit) "
                "VALUES ('q', 'active', now() - interval '1 hour', interval '1 second', 0)"
            )
        )
    status, out, _ = run("maintain", "--json")
    assert status == 0
    result = json.loads(out)
    assert (result["expired"], result["archived"], result["dropped"]) == (1, 0, 0)
