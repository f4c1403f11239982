"""A pg-boss schema in a database, whatever its version: the translation of the models to its name, pg-boss's
advisory lock, what a schema holds, the opt-in fetch index and the worker role; installing and removing it,
through the room of its version (:mod:`sqla_boss.v24`).

Everything here runs on the connection it is given and leaves the transaction to the caller (Alembic, in
the shipped migrations).
"""

from __future__ import annotations

import enum
import functools
import hashlib
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Executable,
    MetaData,
    Select,
    Text,
    bindparam,
    cast,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import BIT, BYTEA
from sqlalchemy.schema import CreateIndex, Index
from sqlalchemy.sql.elements import ColumnElement

from sqla_boss import v24, v46
from sqla_boss.errors import InvalidOptionError, SchemaConflictError, SchemaNotInstalledError, SchemaVersionError
from sqla_boss.identifiers import DEFAULT_SCHEMA, quote_identifier, validate_schema_name
from sqla_boss.models import Version, metadata
from sqla_boss.v24 import VERSION as SCHEMA_VERSION

__all__ = [
    "DEFAULT_PGBOSS",
    "FETCH_INDEX",
    "FETCH_INDEX_NAME",
    "KNOWN_VERSIONS",
    "MAINTENANCE_VERSIONS",
    "PGBOSS_MAJORS",
    "READ_VERSION",
    "REPOSITORY_VERSIONS",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "SchemaState",
    "advisory_lock_key",
    "advisory_lock_key_for",
    "advisory_lock_key_of",
    "check_migration",
    "check_schema",
    "create_fetch_index",
    "drop_fetch_index",
    "grant_worker_role",
    "inspect_schema",
    "install",
    "lock_schema",
    "lock_statements",
    "pgboss_major",
    "prepare_install",
    "schema_has_objects",
    "schema_translate_map",
    "supported_version",
    "translated",
    "uninstall",
    "version_table_exists",
]


def schema_translate_map(schema: str) -> dict[str | None, str]:
    """The ``schema_translate_map`` execution option that points the models at ``schema``.

    Use it on an engine or connection: ``engine.execution_options(schema_translate_map=...)``.

    Raises:
        InvalidSchemaNameError: ``schema`` is not a name pg-boss can use.
    """
    return {DEFAULT_SCHEMA: validate_schema_name(schema)}


def advisory_lock_key(schema: str, suffix: str = "") -> ColumnElement[int]:
    """pg-boss's advisory lock key for ``schema``, as SQL evaluated in the current database.

    It is the first 64 bits of ``sha224(current_database() || '.pgboss.' || schema || suffix)``, read as a
    signed bigint: every pg-boss and sqla_boss instance on the same schema contends for the same lock. pg-boss
    12 names one lock per kind of work with ``suffix`` (``create-queue``, ``delete-queue``...).
    """
    return advisory_lock_key_of(literal(schema + suffix, Text))


def advisory_lock_key_of(name: ColumnElement[str]) -> ColumnElement[int]:
    """:func:`advisory_lock_key` of ``name``, the schema and its suffix as one SQL text (say, a parameter), so
    that one statement built once serves every schema and suffix: pg-boss 12's locks per job table
    (``<table>failJobsByTimeout``...) name the table in the suffix."""
    key_text = func.current_database(type_=Text) + literal(".pgboss.", Text) + name
    digest = func.encode(func.sha224(cast(key_text, BYTEA)), "hex", type_=Text)
    return cast(cast(literal("x", Text) + digest, BIT(64)), BigInteger)


def advisory_lock_key_for(database: str, schema: str, suffix: str = "") -> int:
    """The same key as :func:`advisory_lock_key`, computed in Python for a known database name."""
    digest = hashlib.sha224(f"{database}.pgboss.{schema}{suffix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@functools.lru_cache(maxsize=64)
def lock_statements(schema: str) -> tuple[Executable, ...]:
    """The statements that take pg-boss's schema lock for the rest of the transaction, as pg-boss does for
    schema changes and maintenance: ``lock_timeout`` and ``idle_in_transaction_session_timeout`` of 30 s for
    the transaction, then ``pg_advisory_xact_lock`` on the schema's key (waiting while another holds it)."""
    return (
        text("SET LOCAL lock_timeout = '30s'"),
        text("SET LOCAL idle_in_transaction_session_timeout = '30s'"),
        select(func.pg_advisory_xact_lock(advisory_lock_key(validate_schema_name(schema)))),
    )


def lock_schema(connection: Connection, schema: str) -> None:
    """Run :func:`lock_statements` on ``connection``: the schema lock, held until its transaction ends."""
    for statement in lock_statements(schema):
        connection.execute(statement)


class SchemaState(enum.Enum):
    """What :func:`inspect_schema` found."""

    absent = "absent"
    """No schema of that name, or an empty one."""
    installed = "installed"
    """A pg-boss ``version`` table."""
    foreign = "foreign"
    """Objects, but no ``version`` table: not something sqla_boss may install into."""


SUPPORTED_VERSIONS: tuple[int, ...] = (v24.VERSION, v46.VERSION)
"""The pg-boss schema versions this release runs: ``Boss``, the workers, the supervisor and the CLI, each with
that version's statements. pg-boss 10's :class:`~sqla_boss.Maintenance` runs version 24 only
(:data:`MAINTENANCE_VERSIONS`)."""

REPOSITORY_VERSIONS: tuple[int, ...] = SUPPORTED_VERSIONS
"""The versions ``Boss`` and ``AsyncBoss`` run on: :data:`SUPPORTED_VERSIONS`."""

MAINTENANCE_VERSIONS: tuple[int, ...] = (v24.VERSION,)
"""The version pg-boss 10's maintenance (:class:`~sqla_boss.Maintenance`) runs on; version 46 has its
supervisor (:class:`~sqla_boss.Supervisor`)."""

KNOWN_VERSIONS: dict[int, str] = {v24.VERSION: v24.PGBOSS_RELEASES, v46.VERSION: v46.PGBOSS_RELEASES}
"""Every schema version this release installs, adopts or upgrades to, one room of the package each
(:mod:`sqla_boss.v24`, :mod:`sqla_boss.v46`), with the pg-boss releases that run it."""

PGBOSS_MAJORS: dict[int, int] = {10: v24.VERSION, 12: v46.VERSION}
"""The choice of ``sqla-boss migrate --pgboss N`` (and ``-x pgboss=N``): the pg-boss major release whose
schema version to install or upgrade to. 10 is the default."""

DEFAULT_PGBOSS = 10
"""The pg-boss release whose schema a plain ``sqla-boss migrate`` or ``alembic upgrade head`` installs."""


def pgboss_major(value: object) -> int:
    """``value`` (``10``, ``"12"``...) as a key of :data:`PGBOSS_MAJORS`.

    Raises:
        InvalidOptionError: another value, naming the ones there are.
    """
    text_value = str(value).strip()
    if text_value.isdigit() and int(text_value) in PGBOSS_MAJORS:
        return int(text_value)
    choices = " or ".join(str(major) for major in PGBOSS_MAJORS)
    raise InvalidOptionError(f"pgboss must be {choices} (the pg-boss release whose schema to install), not {value!r}")


def check_migration(schema: str, version: int | None, pgboss: int) -> None:
    """Refuse, before anything runs, a migration of ``schema`` (at ``version``, ``None`` when not installed) to
    the schema of pg-boss ``pgboss`` that sqla_boss cannot do, saying what to do instead.

    Possible: installing either version, adopting either, and upgrading 24 to 46 with the data.

    Raises:
        SchemaVersionError: anything else.
    """
    target = PGBOSS_MAJORS[pgboss]
    if version is None or version == target or (version, target) == (v24.VERSION, v46.VERSION):
        return
    known = ", ".join(f"{number} ({releases})" for number, releases in KNOWN_VERSIONS.items())
    if version == v46.VERSION:
        why = (
            "sqla_boss does not take a schema back from 46 to 24 (it would lose what only 46 can hold); "
            "migrate with --pgboss 12 (alembic -x pgboss=12) to keep it"
        )
    elif v24.VERSION < version < v46.VERSION:
        why = (
            "an older pg-boss 11 or 12 made it; start pg-boss 12.38 once on it (it migrates the schema to 46), "
            "then run sqla-boss migrate --pgboss 12 to adopt it"
        )
    elif version < v24.VERSION:
        why = "start pg-boss 10.4 once on it (it migrates the schema to 24), then run sqla-boss migrate"
    else:
        why = "a newer pg-boss migrated it, and sqla_boss cannot take it back"
    raise SchemaVersionError(
        f"schema {schema!r} holds pg-boss schema version {version}; sqla_boss installs and upgrades {known}: {why}",
        version,
        tuple(KNOWN_VERSIONS),
    )


def version_table_exists(schema: str) -> Select[tuple[str | None]]:
    """Whether ``schema`` has a ``version`` table: a statement that cannot fail, whatever the schema holds."""
    return select(func.to_regclass(literal(f"{quote_identifier(validate_schema_name(schema))}.version", Text)))


READ_VERSION = select(Version.version).limit(1)
"""The schema's version, as pg-boss reads it (the first row); run it with the schema's translation."""


def supported_version(schema: str, version: int | None, runs: tuple[int, ...] = SUPPORTED_VERSIONS) -> int:
    """``version`` when it is one of ``runs`` (what the caller runs on); raises otherwise (``None``: no ``version``
    table or row).

    Raises:
        SchemaNotInstalledError: the schema holds no pg-boss tables.
        SchemaVersionError: the schema holds another version, naming it and the supported ones.
    """
    if version is None:
        raise SchemaNotInstalledError(f"schema {schema!r} holds no pg-boss tables; run sqla-boss migrate")
    if version not in runs:
        supported = ", ".join(f"{number} ({KNOWN_VERSIONS[number]})" for number in runs)
        if version == v46.VERSION:
            why = (
                "on version 46 pg-boss 12's maintenance is the supervisor's (Supervisor / AsyncSupervisor, which a "
                "Worker runs), and a worker started on version 24 must be started afresh"
            )
        elif version < min(runs):
            why = "pg-boss 10.4 migrates it to 24 when it starts"
        elif version < v46.VERSION:
            why = "pg-boss 12.38 migrates it to 46 when it starts" + (
                ", which sqla_boss's Boss runs" if v46.VERSION in runs else ""
            )
        else:
            why = "a newer pg-boss migrated it, and cannot go back"
        raise SchemaVersionError(
            f"schema {schema!r} holds pg-boss schema version {version}; this sqla_boss runs version"
            f"{'s' if len(runs) > 1 else ''} {supported}; {why}",
            version,
            runs,
        )
    return version


def inspect_schema(connection: Connection, schema: str) -> tuple[SchemaState, int | None]:
    """Say whether ``schema`` holds pg-boss, and at which version (pg-boss reads the first row)."""
    if connection.execute(version_table_exists(schema)).scalar_one() is not None:
        return SchemaState.installed, connection.execute(READ_VERSION, execution_options=translated(schema)).scalar()
    return (SchemaState.foreign if schema_has_objects(connection, schema) else SchemaState.absent), None


def check_schema(connection: Connection, schema: str, runs: tuple[int, ...] = SUPPORTED_VERSIONS) -> int:
    """The version of the pg-boss schema ``schema``, when it is one of ``runs`` (by default what the workers and
    maintenance run). Reads only; takes no lock.

    Raises:
        SchemaNotInstalledError, SchemaVersionError: see :func:`supported_version`.
    """
    state, version = inspect_schema(connection, schema)
    return supported_version(schema, version if state is SchemaState.installed else None, runs)


def schema_has_objects(connection: Connection, schema: str) -> bool:
    """Whether ``schema`` holds any table, type or function."""
    statement = text(
        """
        SELECT EXISTS (SELECT FROM pg_class WHERE relnamespace = n.oid)
            OR EXISTS (SELECT FROM pg_type WHERE typnamespace = n.oid)
            OR EXISTS (SELECT FROM pg_proc WHERE pronamespace = n.oid)
        FROM pg_namespace n WHERE n.nspname = :schema
        """
    ).bindparams(bindparam("schema", schema, Text))
    return bool(connection.execute(statement).scalar())


def prepare_install(connection: Connection, schema: str, version: int) -> bool:
    """The checks every version's ``install`` makes first: validate ``schema``, take pg-boss's schema lock (held
    until the transaction ends), and say whether to create the schema (``True``) or adopt the ``version`` already
    there (``False``).

    Raises:
        InvalidSchemaNameError: before any SQL runs.
        SchemaVersionError: the schema holds pg-boss at another version.
        SchemaConflictError: the schema holds other objects but no pg-boss ``version`` table.
    """
    validate_schema_name(schema)
    lock_schema(connection, schema)
    state, found = inspect_schema(connection, schema)
    if state is SchemaState.installed:
        if found != version:
            raise SchemaVersionError(
                f"schema {schema!r} holds pg-boss schema version {found}; installing version {version} "
                f"({KNOWN_VERSIONS[version]}) will not change it",
                found,
                (version,),
            )
        return False
    if state is SchemaState.foreign:
        raise SchemaConflictError(
            f"schema {schema!r} already holds objects but no pg-boss version table; "
            "install pg-boss into an empty or new schema"
        )
    return True


def install(connection: Connection, schema: str = DEFAULT_SCHEMA) -> bool:
    """Create the pg-boss schema in ``schema``, or adopt the one there: :func:`sqla_boss.v24.ddl.install`, which
    says what it returns, locks and raises. Runs in the caller's transaction and does not commit."""
    from sqla_boss.v24 import ddl

    return ddl.install(connection, schema)


def uninstall(connection: Connection, schema: str = DEFAULT_SCHEMA) -> None:
    """Drop every pg-boss object in ``schema``, jobs included: :func:`sqla_boss.v24.ddl.uninstall`. Runs in the
    caller's transaction and does not commit."""
    from sqla_boss.v24 import ddl

    ddl.uninstall(connection, schema)


FETCH_INDEX_NAME = "sqla_boss_job_fetch"
"""The opt-in index that serves fetch's order; not part of pg-boss's schema (see :func:`create_fetch_index`)."""

# A copy of the job table in a MetaData of its own, so the models' tables (and so install()) never carry it.
_optional = metadata.tables[f"{DEFAULT_SCHEMA}.job"].to_metadata(MetaData())
FETCH_INDEX = Index(
    FETCH_INDEX_NAME,
    _optional.c.name,
    _optional.c.priority.desc(),
    _optional.c.created_on,
    _optional.c.id,
    postgresql_where=text("state < 'active'"),
)
"""``(name, priority DESC, created_on, id) WHERE state < 'active'``: fetch's filter and order, queued jobs only.

Built on the partitioned ``job`` table, so PostgreSQL gives every partition its own copy, and every partition
``create_queue`` attaches later gets one too: pg-boss 10 and sqla_boss then fetch from the index instead of
sorting the queue's whole backlog on every call.
"""


def create_fetch_index(connection: Connection, schema: str = DEFAULT_SCHEMA) -> None:
    """Create :data:`FETCH_INDEX` in ``schema`` (if missing) under pg-boss's schema lock.

    Runs in the caller's transaction and does not commit. Building it on a partitioned table cannot be
    ``CONCURRENTLY``: it holds a SHARE lock on every partition (sends wait, fetches go on) while it builds.
    """
    validate_schema_name(schema)
    lock_schema(connection, schema)
    connection.execute(CreateIndex(FETCH_INDEX, if_not_exists=True), execution_options=translated(schema))


def drop_fetch_index(connection: Connection, schema: str = DEFAULT_SCHEMA) -> None:
    """Drop :data:`FETCH_INDEX` from ``schema`` if it is there. Does not commit; holds the schema lock."""
    validate_schema_name(schema)
    lock_schema(connection, schema)
    connection.execute(text(f"DROP INDEX IF EXISTS {quote_identifier(schema)}.{FETCH_INDEX_NAME}"))


def grant_worker_role(connection: Connection, role: str, schema: str = DEFAULT_SCHEMA) -> None:
    """Give ``role`` what a worker needs on ``schema`` and nothing more: ``USAGE`` on the schema and ``SELECT,
    INSERT, UPDATE, DELETE`` on its tables, including the partitions ``create_queue`` adds later (default
    privileges of the role running this, which should be the schema's owner, the migration role).

    Enough to send, fetch, complete, fail, cancel, schedule, publish and run maintenance and cron; not enough to
    create or delete queues, which are DDL (a partition each). Runs in the caller's transaction, does not commit.

    Raises:
        InvalidSchemaNameError: ``schema`` is not a valid pg-boss schema name; nothing was run.
        InvalidOptionError: ``role`` is not a PostgreSQL role name (empty, over 63 bytes, NUL); nothing was run.
    """
    validate_schema_name(schema)
    if not isinstance(role, str) or not role or "\x00" in role or len(role.encode()) > 63:
        raise InvalidOptionError(f"not a PostgreSQL role name: {role!r}")
    quoted_schema, quoted_role = quote_identifier(schema), quote_identifier(role)
    for statement in (
        f"GRANT USAGE ON SCHEMA {quoted_schema} TO {quoted_role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {quoted_schema} TO {quoted_role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {quoted_schema} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted_role}",
    ):
        connection.execute(text(statement))


def translated(schema: str) -> dict[str, Any]:
    """The execution options that point the models at ``schema``."""
    return {"schema_translate_map": schema_translate_map(schema)}
