"""Validation and quoting of the SQL identifiers sqla_boss accepts from its callers."""

from __future__ import annotations

import re

from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS

from sqla_boss.errors import InvalidSchemaNameError

DEFAULT_SCHEMA = "pgboss"
"""The schema pg-boss and sqla_boss use unless told otherwise."""

MAX_SCHEMA_NAME_LENGTH = 50
"""pg-boss's own limit for a schema name."""

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def validate_schema_name(name: object) -> str:
    """Return ``name`` if pg-boss and PostgreSQL both read it as the same schema, else raise.

    pg-boss accepts ``\\w`` names of at most 50 characters that do not start with a digit, and pastes them
    unquoted, so PostgreSQL folds upper case. sqla_boss refuses upper case outright instead of folding it
    behind the caller's back, and refuses reserved words and the ``pg_`` prefix, which PostgreSQL would
    reject anyway.

    Raises:
        InvalidSchemaNameError: with the reason, before any SQL has run.
    """
    if not isinstance(name, str):
        raise InvalidSchemaNameError(f"schema name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidSchemaNameError("schema name must not be empty")
    if len(name) > MAX_SCHEMA_NAME_LENGTH:
        raise InvalidSchemaNameError(
            f"schema name {name[:60]!r}... has {len(name)} characters; pg-boss allows at most {MAX_SCHEMA_NAME_LENGTH}"
        )
    if _SCHEMA_NAME.fullmatch(name) is None:
        if _SCHEMA_NAME.fullmatch(name.lower()) is not None:
            reason = "has upper case letters, which PostgreSQL folds to lower case in pg-boss's unquoted SQL"
        elif name[0].isdigit():
            reason = "starts with a digit"
        else:
            reason = "may only contain lower case ASCII letters, digits and underscores"
        raise InvalidSchemaNameError(f"invalid schema name {name!r}: it {reason}")
    if name in RESERVED_WORDS:
        raise InvalidSchemaNameError(
            f"invalid schema name {name!r}: it is a reserved word in PostgreSQL, which pg-boss's unquoted SQL "
            "cannot use"
        )
    if name.startswith("pg_"):
        raise InvalidSchemaNameError(f"invalid schema name {name!r}: names starting with pg_ are PostgreSQL's")
    return name


def quote_identifier(name: str) -> str:
    """Quote ``name`` as a PostgreSQL identifier, doubling any embedded double quote."""
    if "\x00" in name:
        raise ValueError("an identifier cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote ``value`` as a standard-conforming PostgreSQL string literal."""
    if "\x00" in value:
        raise ValueError("a string literal cannot contain a NUL character")
    return "'" + value.replace("'", "''") + "'"
