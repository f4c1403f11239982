"""The exceptions sqla_boss raises: one root, one subclass per way things go wrong."""

from __future__ import annotations


class SqlaBossError(Exception):
    """Something sqla_boss refused or could not do.

    Errors raised by SQLAlchemy or the driver are let through unwrapped: when one reaches you, the
    transaction may be aborted and is yours to roll back.
    """


class InvalidSchemaNameError(SqlaBossError, ValueError):
    """The schema name is not one pg-boss can use unquoted.

    pg-boss pastes the schema name into SQL without quotes, so a name only works on both sides when it is
    lower case ASCII letters, digits and underscores, does not start with a digit, and has at most 50
    characters.
    """


class InvalidDatabaseUrlError(SqlaBossError, ValueError):
    """The database URL does not name a PostgreSQL database."""


class SchemaVersionError(SqlaBossError):
    """The pg-boss schema is at a version this release of sqla_boss does not manage (it manages 24)."""


class SchemaConflictError(SqlaBossError):
    """The schema already holds objects but no pg-boss ``version`` table, so installing would clash."""


class EmbeddedPostgresUnavailableError(SqlaBossError):
    """No embedded PostgreSQL package is installed (``pip install "sqla-boss[embedded]"``)."""
