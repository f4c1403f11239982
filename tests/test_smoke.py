"""The quickest proof that the suite reaches a PostgreSQL and our schema installs there."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from sqla_boss import SCHEMA_VERSION, Version


def test_installed_schema_has_its_version_row(session: Session) -> None:
    assert session.scalars(select(Version.version)).all() == [SCHEMA_VERSION]
