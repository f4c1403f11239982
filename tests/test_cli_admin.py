"""The daily admin work from ``sqla-boss``: queues, jobs by id or by state, one job whole, checks, migrations that
say what they did, and one clear line (with a documented exit status) for every mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Engine, text
from sqlalchemy.orm import Session
from support import Run, drop_schema, unique_name

from sqla_boss import Boss, cli, migrations
from sqla_boss.schema import schema_translate_map


def boss_of(engine: Engine, schema: str) -> Session:
    return Session(engine.execution_options(schema_translate_map=schema_translate_map(schema)))


def state_of(engine: Engine, schema: str, job_id: uuid.UUID | str) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(text(f"SELECT state::text FROM {schema}.job WHERE id = :id"), {"id": job_id}).scalar()
        )


# ------------------------------------------------------------------------------------------------- queues


def test_create_update_purge_and_delete_a_queue(run: Run, engine: Engine, installed_schema: str) -> None:
    status, out, _ = run("create-queue", "emails", "--retry-limit", "3", "--policy", "singleton", "--dead-letter", "")
    assert status == 2  # an empty dead letter queue name is refused, nothing created
    status, out, _ = run("create-queue", "emails", "--retry-limit", "3", "--policy", "singleton")
    assert (status, out) == (0, "created queue 'emails'\n")
    status, out, _ = run("create-queue", "emails", "--retry-limit", "9")
    assert status == 0
    assert "exists already" in out
    status, out, _ = run("create-queue", "emails", "--json")
    assert json.loads(out) == {"queue": "emails", "created": False}
    status, out, _ = run("update-queue", "emails", "--retry-limit", "5", "--no-retry-backoff")
    assert (status, out) == (0, "updated queue 'emails'\n")
    with boss_of(engine, installed_schema) as session:
        queue = Boss(session, installed_schema).get_queue("emails")
        assert queue is not None
        assert (queue.policy.value, queue.retry_limit, queue.retry_backoff) == ("singleton", 5, False)

    # send right after creating: the quick start of a deployment
    for n in range(3):
        status, out, _ = run("send", "emails", json.dumps({"n": n}), "--singleton-key", f"k{n}")
        assert status == 0, out
    status, out, _ = run("purge", "emails", "--json")
    assert (status, json.loads(out)) == (0, {"queue": "emails", "purged": 3})
    status, out, _ = run("delete-queue", "emails")
    assert (status, out) == (0, "deleted queue 'emails'\n")
    status, _, err = run("delete-queue", "emails")
    assert (status, err) == (2, f"sqla-boss: no queue 'emails' in schema '{installed_schema}'\n")
    status, _, err = run("purge", "emails")
    assert status == 2


# --------------------------------------------------------------------------------------------------- jobs


@pytest.fixture
def jobs(engine: Engine, installed_schema: str) -> dict[str, uuid.UUID]:
    """Jobs in the states the changes act on: two failed, a queued one, a cancelled one, one in another queue."""
    with boss_of(engine, installed_schema) as session, session.begin():
        boss = Boss(session, installed_schema)
        boss.create_queue("reports", retry_limit=0)
        boss.create_queue("other", retry_limit=0)
        # The two to fail first in the fetch order (the same transaction stamps one created_on on all).
        ids = {name: boss.send("reports", {"name": name}, priority=1) for name in ("failed1", "failed2")}
        ids |= {name: boss.send("reports", {"name": name}) for name in ("queued", "cancel")}
        ids["elsewhere"] = boss.send("other", {"name": "elsewhere"})
        fetched = boss.fetch("reports", batch_size=2)
        assert {job.id for job in fetched} == {ids["failed1"], ids["failed2"]}
        for job in fetched:
            boss.fail("reports", job.id, ValueError(f"report {job.data['name']} broke"))
        boss.cancel("reports", ids["cancel"])
    return {name: job_id for name, job_id in ids.items() if job_id is not None}


def test_jobs_lists_the_output_and_refuses_an_unknown_queue(run: Run, jobs: dict[str, uuid.UUID]) -> None:
    status, out, _ = run("jobs", "reports", "--state", "failed")
    assert status == 0
    assert "output" in out.splitlines()[0]
    assert "ValueError: report failed1 broke" in out
    status, out, _ = run("jobs", "reports", "--state", "failed", "--json")
    assert {row["output"]["message"] for row in json.loads(out)} == {"report failed1 broke", "report failed2 broke"}
    status, _, err = run("jobs", "nosuch")
    assert status == 2
    assert err.startswith("sqla-boss: no queue 'nosuch'")


def test_job_shows_every_column_with_the_error_of_a_failure(run: Run, jobs: dict[str, uuid.UUID]) -> None:
    status, out, _ = run("job", str(jobs["failed1"]), "--json")
    assert status == 0
    row = json.loads(out)
    assert (row["id"], row["name"], row["state"], row["archived"]) == (str(jobs["failed1"]), "reports", "failed", False)
    assert {"retry_limit", "started_on", "completed_on", "keep_until", "singleton_key", "dead_letter"} <= set(row)
    assert row["output"]["name"] == "ValueError"
    status, out, _ = run("job", str(jobs["failed1"]))
    assert "state" in out
    assert "ValueError: report failed1 broke" in out  # the stored stack, printed after the columns
    status, _, err = run("job", str(uuid.uuid4()))
    assert status == 2
    assert "nor in its archive" in err
    status, _, err = run("job", "not-a-uuid")
    assert (status, err) == (2, "sqla-boss: find_job(): 'not-a-uuid' is not a UUID\n")


def test_retry_every_failed_job_of_a_queue_and_count_them(
    run: Run, engine: Engine, installed_schema: str, jobs: dict[str, uuid.UUID]
) -> None:
    status, out, _ = run("retry", "--queue", "reports")  # --state failed is retry's default
    assert (status, out) == (0, "retried 2 job(s)\n")
    assert {state_of(engine, installed_schema, jobs[name]) for name in ("failed1", "failed2")} == {"retry"}
    status, out, _ = run("retry", "--queue", "reports", "--json")
    assert json.loads(out) == {"changed": 0}


def test_changes_by_id_count_what_changed_and_refuse_unknown_ids_changing_nothing(
    run: Run, engine: Engine, installed_schema: str, jobs: dict[str, uuid.UUID]
) -> None:
    unknown = uuid.uuid4()
    status, _, err = run("cancel", str(jobs["queued"]), str(unknown))
    assert (status, err) == (2, f"sqla-boss: no job {unknown} in schema '{installed_schema}'; nothing changed\n")
    assert state_of(engine, installed_schema, jobs["queued"]) == "created"
    status, _, err = run("cancel", str(jobs["elsewhere"]), "--queue", "reports")
    assert status == 2
    assert "in queue 'reports'" in err

    status, out, _ = run("cancel", str(jobs["queued"]), str(jobs["elsewhere"]))  # two queues at once
    assert (status, out) == (0, "cancelled 2 job(s)\n")
    status, out, _ = run("resume", "--queue", "reports")  # --state cancelled is resume's default
    assert (status, out) == (0, "resumed 2 job(s)\n")
    status, _, err = run("delete", "--queue", "reports")
    assert (status, err) == (2, "sqla-boss: delete takes job ids, or --queue with --state\n")
    status, out, _ = run("delete", "--queue", "reports", "--state", "failed")
    assert (status, out) == (0, "deleted 2 job(s)\n")
    status, out, _ = run("delete", str(jobs["queued"]))
    assert (status, out) == (0, "deleted 1 job(s)\n")


def test_send_takes_a_large_payload_from_a_file_or_standard_input(
    run: Run, engine: Engine, installed_schema: str, tmp_path: Path, database_url: URL
) -> None:
    run("create-queue", "big")
    payload = {"blob": "x" * 10_000_000}  # over what a command line can carry
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload))
    status, out, err = run("send", "big", "--data-file", str(path), "--json")
    assert status == 0, err
    job_id = json.loads(out)["id"]
    with engine.connect() as connection:
        size = connection.execute(
            text(f"SELECT length(data->>'blob') FROM {installed_schema}.job WHERE id = :id"), {"id": job_id}
        ).scalar()
    assert size == 10_000_000

    result = subprocess.run(
        [sys.executable, "-m", "sqla_boss.cli", "send", "big", "--data-file", "-", "--schema", installed_schema],
        input=json.dumps({"from": "stdin"}),
        env={**os.environ, "DATABASE_URL": database_url.render_as_string(hide_password=False)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    uuid.UUID(result.stdout.strip())
    status, _, err = run("send", "big", "--data-file", str(tmp_path / "missing.json"))
    assert status == 2
    assert "cannot read data" in err


# ------------------------------------------------------------------------------------ schemas and checks


def test_a_schema_without_pgboss_is_one_line_for_every_command(run: Run) -> None:
    expected = "sqla-boss: schema 'nosuch' holds no pg-boss tables; run sqla-boss migrate\n"
    for command in (
        ["queues"],
        ["jobs", "q"],
        ["job", str(uuid.uuid4())],
        ["send", "q"],
        ["create-queue", "q"],
        ["retry", "--queue", "q"],
        ["maintain"],
        ["schedules"],
        ["schedule", "q", "* * * * *"],
    ):
        status, out, err = run(*command, schema="nosuch")
        assert (status, out, err) == (2, "", expected), command


def test_a_schema_at_another_version_is_refused_and_migrate_never_says_migrated(
    run: Run, engine: Engine, installed_schema: str
) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {installed_schema}.version SET version = 25"))
    for command in (["queues"], ["send", "q"], ["migrate"], ["maintain"], ["check"]):
        status, out, err = run(*command)
        assert status == 2, command
        expected = "version 25; sqla_boss installs and upgrades 24" if command == ["migrate"] else "version 25; this"
        assert expected in out + err, command
        if command == ["migrate"]:
            assert "start pg-boss 12.38 once on it" in out + err
        assert "sqla-boss: migrated" not in out + err


@pytest.fixture
def other_schema(engine: Engine) -> Iterator[str]:
    """A schema name beside the test's installed one, nothing in it yet; dropped afterwards."""
    name = unique_name("t")
    yield name
    drop_schema(engine, name)


def test_migrate_says_what_it_did(run: Run, other_schema: str, engine: Engine) -> None:
    schema_name = other_schema
    status, out, _ = run("migrate", schema=schema_name)
    assert (status, out) == (0, f"sqla-boss: installed pg-boss schema version 24 in schema '{schema_name}'\n")
    status, out, _ = run("migrate", schema=schema_name)
    assert (status, out) == (0, f"sqla-boss: schema '{schema_name}' is already at 'head'; nothing to do\n")
    with engine.begin() as connection:  # what a pg-boss install looks like to us: no revision of ours
        connection.execute(text(f"DROP TABLE public.{migrations.version_table_name(schema_name)}"))
    status, out, _ = run("migrate", schema=schema_name)
    assert (status, out) == (
        0,
        f"sqla-boss: adopted pg-boss's schema '{schema_name}' (version 24); nothing in it changed\n",
    )
    status, out, _ = run("downgrade", "base", schema=schema_name)
    assert (status, out) == (0, f"sqla-boss: removed schema '{schema_name}' and its Alembic version table\n")
    status, out, _ = run("downgrade", "base", schema=schema_name)
    assert (status, out) == (0, f"sqla-boss: schema '{schema_name}' is already at 'base'; nothing to do\n")


@pytest.mark.parametrize(
    "command", [["migrate", "--revision", "bogus"], ["downgrade", "bogus"]], ids=["migrate", "downgrade"]
)
def test_an_unknown_revision_is_one_line(run: Run, other_schema: str, command: list[str]) -> None:
    status, _, err = run(*command, schema=other_schema)
    assert status == 2
    assert err.count("\n") == 1
    assert "Can't locate revision identified by 'bogus'" in err
    assert "Traceback" not in err


def test_check_reports_the_database_the_schema_and_the_queues(run: Run, installed_schema: str) -> None:
    run("create-queue", "emails")
    status, out, _ = run("check", "--queues", "emails", "--json")
    assert status == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert [check["check"] for check in report["checks"]] == ["database", "schema", "queue emails"]
    status, out, _ = run("check", "--queues", "emails,missing")
    assert status == 2
    assert "queue missing  FAILED" in out
    status, out, _ = run("check", schema="nosuch")
    assert status == 2
    assert "holds no pg-boss tables" in out


def test_check_of_an_unreachable_database_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["check", "--url", "postgresql://postgres@127.0.0.1:1/test", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1
    assert report["checks"][0]["check"] == "database"
    assert report["checks"][0]["ok"] is False


# ------------------------------------------------------------------------------------------- the command


def test_version_and_bare_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("sqla-boss 0.1.0 (pg-boss schema version 24)")
    assert cli.main([]) == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: sqla-boss")
    for command in ("create-queue", "retry", "check", "work"):
        assert command in help_text


def test_a_bad_log_level_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["work", "app:make", "--log-level", "LOUD"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'LOUD'" in err
    assert "Traceback" not in err


def test_an_out_of_range_cron_step_is_refused(run: Run) -> None:
    run("create-queue", "reports")
    status, _, err = run("schedule", "reports", "*/61 * * * *")
    assert status == 2
    assert "a step of 61 in the minute field (0-59) never repeats" in err


def _demo(database_url: URL | None, *arguments: str) -> subprocess.Popen[str]:
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    if database_url is not None:
        environment["DATABASE_URL"] = database_url.render_as_string(hide_password=False)
    return subprocess.Popen(
        [sys.executable, "-m", "sqla_boss.cli", "demo", *arguments],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_demos_on_one_database_do_not_collide(database_url: URL) -> None:
    demos = [_demo(database_url), _demo(database_url, "--async")]
    results: list[Any] = [demo.communicate(timeout=120) for demo in demos]
    for demo, (out, err) in zip(demos, results, strict=True):
        assert demo.returncode == 0, err
        assert "orders committed : 4 (4 confirmed)" in out
        assert err == ""  # the planned failure is the demo's to tell, not a logged traceback


def test_the_demo_on_an_unreachable_database_is_one_line(database_url: URL) -> None:
    demo = _demo(database_url.set(port=1))
    _, err = demo.communicate(timeout=60)
    assert demo.returncode == 1
    assert err.startswith("sqla-boss: the database refused: OperationalError: connection failed")
    assert err.count("\n") == 1
