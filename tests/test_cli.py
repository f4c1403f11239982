"""``sqla-boss migrate`` / ``downgrade``, and ``alembic`` run with the repository's own ``alembic.ini``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, text
from support import ROOT, schema_exists, tables_in, unique_name

from sqla_boss import cli, migrations
from sqla_boss.identifiers import MAX_SCHEMA_NAME_LENGTH
from sqla_boss.schema import SCHEMA_VERSION

PGBOSS_TABLES = {"archive", "job", "queue", "schedule", "subscription", "version"}
DEAD_URL = "postgresql://postgres@127.0.0.1:1/nowhere"
"""A PostgreSQL URL nothing listens on: a command that fails with a schema message never connected."""

BAD_SCHEMAS = {
    "upper_case": "Bad",
    "semicolon": "a;b",
    "too_long": "a" * (MAX_SCHEMA_NAME_LENGTH + 1),
    "reserved_word": "select",
}


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def recorded(engine: Engine, schema: str) -> tuple[list[int] | None, list[str] | None]:
    """The pg-boss ``version`` rows of ``schema`` and the revisions in our version table (None: no table)."""
    with engine.connect() as connection:
        version = None
        if connection.execute(text("SELECT to_regclass(:t)"), {"t": f'"{schema}".version'}).scalar() is not None:
            version = connection.execute(text(f'SELECT version FROM "{schema}".version')).scalars().all()
        ours = f"public.{migrations.version_table_name(schema)}"
        revisions = None
        if connection.execute(text("SELECT to_regclass(:t)"), {"t": ours}).scalar() is not None:
            revisions = connection.execute(text(f"SELECT version_num FROM {ours}")).scalars().all()
        return (list(version) if version is not None else None), (list(revisions) if revisions is not None else None)


def assert_installed(engine: Engine, schema: str) -> None:
    assert tables_in(engine, schema) == PGBOSS_TABLES
    assert recorded(engine, schema) == ([SCHEMA_VERSION], ["pgboss_v24"])


def assert_removed(engine: Engine, schema: str, *, by_alembic: bool = False) -> None:
    assert not schema_exists(engine, schema)
    # Down to base, sqla-boss (and migrations.downgrade) also drop the version table Alembic created; Alembic's
    # own command leaves it, empty.
    assert recorded(engine, schema) == (None, [] if by_alembic else None)


def assert_nothing_named(engine: Engine, name: str) -> None:
    """No schema and no version table under ``name``, nor under any spelling PostgreSQL could make of it."""
    candidates = {name, name.lower(), name[:63], name.lower()[:63], *name.split(";")}
    with engine.connect() as connection:
        schemas = connection.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names)"), {"names": sorted(candidates)}
        )
        assert schemas.scalars().all() == []
        tables = connection.execute(
            text("SELECT relname FROM pg_class WHERE relname = ANY(:names)"),
            {"names": sorted(f"alembic_{candidate}"[:63] for candidate in candidates)},
        )
        assert tables.scalars().all() == []


def console_script() -> Path:
    script = Path(sys.executable).parent / "sqla-boss"
    assert script.is_file(), f"the console script is not installed in {script.parent}"
    return script


def run(args: list[str], *, database_url: str | None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# sqla-boss, in process


@pytest.mark.parametrize("command", [["migrate"], ["downgrade", "base"]], ids=["migrate", "downgrade"])
@pytest.mark.parametrize("bad", list(BAD_SCHEMAS.values()), ids=list(BAD_SCHEMAS))
def test_bad_schema_names_exit_2_before_connecting(
    command: list[str], bad: str, engine: Engine, database_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    # On the real server: nothing is created.
    assert cli.main([*command, "--url", url_string(database_url), "--schema", bad]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("sqla-boss: ")
    assert "schema name" in captured.err
    assert repr(bad)[:40] in captured.err
    assert "Traceback" not in captured.err
    assert_nothing_named(engine, bad)

    # On a server that is not there: the same message, so the name was refused before any connection.
    assert cli.main([*command, "--url", DEAD_URL, "--schema", bad]) == 2
    assert capsys.readouterr().err == captured.err


@pytest.mark.parametrize(
    ("url", "backend"),
    [("mysql://user:secret@localhost/shop", "mysql"), ("sqlite:///x.db", "sqlite")],
    ids=["mysql", "sqlite"],
)
def test_non_postgresql_urls_exit_2(
    url: str,
    backend: str,
    schema_name: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for command in (["migrate"], ["downgrade", "base"]):
        assert cli.main([*command, "--url", url, "--schema", schema_name]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("sqla-boss: ")
        assert "PostgreSQL" in captured.err
        assert repr(backend) in captured.err
        assert "secret" not in captured.err
    # Also through $DATABASE_URL.
    monkeypatch.setenv("DATABASE_URL", url)
    assert cli.main(["migrate", "--schema", schema_name]) == 2
    assert "PostgreSQL" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # sqlite never opened x.db
    assert not schema_exists(engine, schema_name)


def test_no_database_at_all_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["migrate", "--schema", unique_name("t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sqla-boss: ")
    assert "DATABASE_URL" in err
    assert "--url" in err


def test_an_unreachable_server_exits_1_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate", "--url", DEAD_URL, "--schema", unique_name("t")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sqla-boss: the database refused: ")
    assert "Traceback" not in err


def test_migrate_is_idempotent_and_downgrade_base_removes_the_schema(
    schema_name: str, engine: Engine, database_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    url = url_string(database_url)
    assert cli.main(["migrate", "--url", url, "--schema", schema_name]) == 0
    assert schema_name in capsys.readouterr().out
    assert_installed(engine, schema_name)

    # A second run adopts what is there: no error, no second version row, no new objects.
    assert cli.main(["migrate", "--url", url, "--schema", schema_name]) == 0
    assert capsys.readouterr().err == ""
    assert_installed(engine, schema_name)

    assert cli.main(["downgrade", "base", "--url", url, "--schema", schema_name]) == 0
    assert capsys.readouterr().err == ""
    assert_removed(engine, schema_name)


def test_migrate_reads_database_url_from_the_environment(
    schema_name: str, engine: Engine, database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", url_string(database_url))
    assert cli.main(["migrate", "--schema", schema_name]) == 0
    assert_installed(engine, schema_name)
    assert cli.main(["downgrade", "base", "--schema", schema_name]) == 0
    assert_removed(engine, schema_name)


# sqla-boss, the console script


def test_console_script_round_trip_and_refusal(schema_name: str, engine: Engine, database_url: URL) -> None:
    script = str(console_script())
    url = url_string(database_url)

    refused = run([script, "migrate", "--schema", "Bad"], database_url=url)
    assert refused.returncode == 2, refused
    assert "sqla-boss: " in refused.stderr
    assert "'Bad'" in refused.stderr
    assert "upper case" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert_nothing_named(engine, "Bad")

    refused = run([script, "migrate", "--url", "sqlite:///x.db", "--schema", schema_name], database_url=None)
    assert refused.returncode == 2, refused
    assert "PostgreSQL" in refused.stderr

    for _ in range(2):  # the second run adopts
        done = run([script, "migrate", "--schema", schema_name], database_url=url)
        assert done.returncode == 0, done
        assert_installed(engine, schema_name)
    done = run([script, "downgrade", "base", "--url", url, "--schema", schema_name], database_url=None)
    assert done.returncode == 0, done
    assert_removed(engine, schema_name)


# alembic, with the repository's alembic.ini


def alembic(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "alembic", *args], database_url=database_url, cwd=ROOT)


def test_repository_alembic_ini_round_trip(schema_name: str, engine: Engine, database_url: URL) -> None:
    url = url_string(database_url)
    x_schema = ["-x", f"schema={schema_name}"]

    done = alembic(*x_schema, "upgrade", "head", database_url=url)
    assert done.returncode == 0, done
    assert_installed(engine, schema_name)

    current = alembic(*x_schema, "current", database_url=url)
    assert current.returncode == 0, current
    assert "pgboss_v24" in current.stdout  # not "(head)": the history goes on to pgboss_v46

    done = alembic(*x_schema, "downgrade", "base", database_url=url)
    assert done.returncode == 0, done
    assert_removed(engine, schema_name, by_alembic=True)

    done = alembic(*x_schema, "upgrade", "head", database_url=url)
    assert done.returncode == 0, done
    assert_installed(engine, schema_name)


def test_repository_alembic_ini_refuses_a_bad_schema_before_any_sql(engine: Engine, database_url: URL) -> None:
    for url in (url_string(database_url), DEAD_URL):
        refused = alembic("-x", "schema=Bad", "upgrade", "head", database_url=url)
        assert refused.returncode != 0
        assert "'Bad'" in refused.stderr
        assert "upper case" in refused.stderr
        # With nothing listening at DEAD_URL, the schema message shows no connection was tried.
        assert "connection" not in refused.stderr.lower()
    assert_nothing_named(engine, "Bad")


def test_repository_alembic_ini_default_schema_comes_from_the_ini(tmp_path: Path) -> None:
    """Without ``-x schema`` the ini's ``sqla_boss.schema`` applies: shown with a dead URL, no SQL."""
    ini = (ROOT / "alembic.ini").read_text(encoding="utf-8")
    assert "sqla_boss.schema = pgboss" in ini
    broken = tmp_path / "alembic.ini"
    broken.write_text(
        ini.replace("sqla_boss.schema = pgboss", "sqla_boss.schema = Bad").replace(
            "%(here)s/alembic", str(ROOT / "alembic")
        ),
        encoding="utf-8",
    )
    refused = run([sys.executable, "-m", "alembic", "-c", str(broken), "upgrade", "head"], database_url=DEAD_URL)
    assert refused.returncode != 0
    assert "'Bad'" in refused.stderr
