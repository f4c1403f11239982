"""Database URLs: which ones sqla_boss accepts, and how they become SQLAlchemy engines."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError

from sqla_boss.errors import InvalidDatabaseUrlError

DATABASE_URL_ENV = "DATABASE_URL"
"""The environment variable sqla_boss reads a database URL from."""

_DRIVER = "psycopg"


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and make it a SQLAlchemy URL for psycopg 3.

    ``postgresql://`` and ``postgres://`` (the libpq and Node spellings) become ``postgresql+psycopg://``;
    an explicit ``postgresql+psycopg://`` is kept as it is.

    Raises:
        InvalidDatabaseUrlError: the URL cannot be parsed, or names another database or driver.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidDatabaseUrlError(f"cannot parse database URL: {exc}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in ("postgresql", "postgres"):
        raise InvalidDatabaseUrlError(
            f"sqla_boss needs PostgreSQL, but the URL names {backend!r} ({parsed.render_as_string(hide_password=True)})"
        )
    if driver and driver != _DRIVER:
        raise InvalidDatabaseUrlError(
            f"sqla_boss runs on psycopg 3; driver {driver!r} is not supported "
            f"(use postgresql:// or postgresql+psycopg://)"
        )
    return parsed.set(drivername=f"postgresql+{_DRIVER}")


def url_from_env(default: str | URL | None = None) -> URL | None:
    """Return ``$DATABASE_URL`` normalised, else ``default`` normalised, else ``None``."""
    value = os.environ.get(DATABASE_URL_ENV) or default
    return None if value is None else normalize_url(value)


def create_sync_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create a SQLAlchemy engine on psycopg 3 for a PostgreSQL ``url`` in any accepted spelling."""
    return create_engine(normalize_url(url), **kwargs)
