"""The wheel ships the migrations: build it, install it in a fresh venv, and migrate with only that install.

Slow (a wheel build, a venv and a pip install): run with ``-m slow``, or leave out with ``-m "not slow"``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, text
from support import ROOT, drop_schema, schema_exists, tables_in, unique_name

from sqla_boss import migrations
from sqla_boss.schema import SCHEMA_VERSION

pytestmark = pytest.mark.slow

PGBOSS_TABLES = {"archive", "job", "queue", "schedule", "subscription", "version"}
PACKAGE = Path(migrations.__file__).resolve().parent
SCRIPT_FOLDER = Path(migrations.SCRIPT_LOCATION).resolve().relative_to(PACKAGE).as_posix()
"""The Alembic script folder inside the package (``alembic``), as ``script_location = sqla_boss:<it>`` names it."""


@dataclass
class Installed:
    wheel: Path
    venv: Path
    timings: dict[str, float] = field(default_factory=dict)

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def run(
        self, args: list[str], *, cwd: Path, database_url: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command of the venv, away from the checkout: nothing but the installed wheel is importable."""
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_URL")
        }
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, (
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
        return result


def timed(timings: dict[str, float], step: str, args: list[str], *, cwd: Path) -> None:
    started = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)
    timings[step] = time.perf_counter() - started
    assert result.returncode == 0, f"{step} failed\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Installed]:
    """A wheel of the checkout, installed with its dependencies in a venv of its own."""
    work = tmp_path_factory.mktemp("packaging")
    timings: dict[str, float] = {}
    timed(
        timings,
        "build wheel",
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(work), str(ROOT)],
        cwd=work,
    )
    (wheel,) = work.glob("sqla_boss-*.whl")
    venv = work / "venv"
    timed(timings, "create venv", [sys.executable, "-m", "venv", str(venv)], cwd=work)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", str(wheel)]
    timed(timings, "pip install", pip, cwd=work)
    result = Installed(wheel=wheel, venv=venv, timings=timings)
    yield result
    total = sum(timings.values())
    summary = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in timings.items())
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n[test_packaging] {summary}; total {total:.1f}s")


@pytest.fixture
def url(database_url: URL) -> str:
    return database_url.render_as_string(hide_password=False)


def assert_installed(engine: Engine, schema: str) -> None:
    assert tables_in(engine, schema) == PGBOSS_TABLES
    with engine.connect() as connection:
        assert connection.execute(text(f'SELECT version FROM "{schema}".version')).scalars().all() == [SCHEMA_VERSION]
        ours = f"public.{migrations.version_table_name(schema)}"
        assert connection.execute(text(f"SELECT version_num FROM {ours}")).scalars().all() == ["pgboss_v24"]


def test_wheel_ships_the_migrations(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for required in (
        f"sqla_boss/{SCRIPT_FOLDER}/env.py",
        f"sqla_boss/{SCRIPT_FOLDER}/script.py.mako",
        f"sqla_boss/{SCRIPT_FOLDER}/versions/pgboss_v24.py",
        "sqla_boss/v24/functions.sql",
        "sqla_boss/py.typed",
        "sqla_boss/migrations.py" if (PACKAGE / "migrations.py").is_file() else "sqla_boss/migrations/__init__.py",
    ):
        assert required in names, required
    # Nothing that would shadow the alembic package, no tests, no bytecode.
    assert not any(name.startswith(("alembic/", "tests/")) for name in names), sorted(names)
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names), sorted(names)
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "sqla-boss = sqla_boss.cli:main" in zipfile.ZipFile(installed.wheel).read(entry_points).decode()


def test_installed_venv_imports_the_wheel_not_the_checkout(installed: Installed, tmp_path: Path) -> None:
    found = installed.run(
        [
            str(installed.bin("python")),
            "-c",
            "import sqla_boss.migrations as m; print(m.__file__); print(m.SCRIPT_LOCATION)",
        ],
        cwd=tmp_path,
    ).stdout.split()
    site_packages = installed.venv / "lib"
    assert all(Path(path).resolve().is_relative_to(site_packages.resolve()) for path in found), found
    assert Path(found[1], "versions", "pgboss_v24.py").is_file()


def test_installed_sqla_boss_migrate_and_downgrade(
    installed: Installed, engine: Engine, url: str, schema_name: str, tmp_path: Path
) -> None:
    sqla_boss = str(installed.bin("sqla-boss"))
    installed.run([sqla_boss, "migrate", "--url", url, "--schema", schema_name], cwd=tmp_path)
    assert_installed(engine, schema_name)
    installed.run([sqla_boss, "migrate", "--url", url, "--schema", schema_name], cwd=tmp_path)  # adopts
    assert_installed(engine, schema_name)
    installed.run([sqla_boss, "downgrade", "base", "--schema", schema_name], cwd=tmp_path, database_url=url)
    assert not schema_exists(engine, schema_name)
    # pg-boss 12.38's schema from the wheel too (its plpgsql ships as package data)
    installed.run([sqla_boss, "migrate", "--pgboss", "12", "--url", url, "--schema", schema_name], cwd=tmp_path)
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version FROM {schema_name}.version")).scalar_one() == 46
    installed.run([sqla_boss, "downgrade", "base", "--schema", schema_name], cwd=tmp_path, database_url=url)
    assert not schema_exists(engine, schema_name)


def test_script_location_in_an_ini_of_ones_own(installed: Installed, engine: Engine, url: str, tmp_path: Path) -> None:
    schema = unique_name("t")
    (tmp_path / "alembic.ini").write_text(
        f"[alembic]\nscript_location = sqla_boss:{SCRIPT_FOLDER}\nsqla_boss.schema = {schema}\n", encoding="utf-8"
    )
    alembic = str(installed.bin("alembic"))
    try:
        installed.run([alembic, "upgrade", "head"], cwd=tmp_path, database_url=url)
        assert_installed(engine, schema)
        current = installed.run([alembic, "current"], cwd=tmp_path, database_url=url)
        assert current.stdout.split() == ["pgboss_v24"]  # not the head: the history goes on to pgboss_v46
        installed.run([alembic, "downgrade", "base"], cwd=tmp_path, database_url=url)
        assert not schema_exists(engine, schema)
    finally:
        drop_schema(engine, schema)
