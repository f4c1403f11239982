"""Running sqla_boss's Alembic revisions (shipped in ``sqla_boss/alembic/``) from anywhere.

Three ways in:

* ``alembic upgrade head`` from a checkout (``alembic.ini`` points at this folder);
* ``sqla-boss migrate``, or :func:`upgrade` / :func:`downgrade` from Python, on an installed package;
* beside an application's own Alembic environment: call :func:`upgrade` on the connection of its
  ``env.py``, and give its ``context.configure`` the :func:`include_name` and :func:`include_object`
  filters so autogenerate leaves pg-boss's tables alone.

Our revisions keep their own version table, ``public.alembic_<schema>`` by default, outside the pg-boss
schema, so the schema stays identical to the one pg-boss creates.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import IncludeNameFn, IncludeObjectFn
from alembic.util.exc import CommandError
from sqlalchemy import URL, Connection, Engine, text
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.schema import SchemaItem, Table

from sqla_boss.database import create_sync_engine
from sqla_boss.errors import MigrationError
from sqla_boss.identifiers import DEFAULT_SCHEMA, quote_identifier, validate_schema_name
from sqla_boss.models import metadata as models_metadata
from sqla_boss.schema import DEFAULT_PGBOSS, SchemaState, inspect_schema, pgboss_major
from sqla_boss.v46.from_v24 import Carried
from sqla_boss.v46.models import metadata as v46_metadata

SCRIPT_LOCATION = str(Path(__file__).parent / "alembic")
"""The folder holding ``env.py`` and ``versions/``; in an ``alembic.ini`` also ``sqla_boss:alembic``."""

FETCH_INDEX_LOCATION = str(Path(__file__).parent / "alembic" / "fetch_index")
"""The opt-in revision of the fetch index (:data:`sqla_boss.schema.FETCH_INDEX`), kept out of ``versions/``."""
DEFAULT_VERSION_TABLE_SCHEMA = "public"
"""Where the version table of our revisions lives unless told otherwise."""

HEADS: dict[int, str] = {10: "pgboss_v24", 12: "pgboss_v46"}
"""Where ``head`` leads for each pg-boss release: the revision of its schema version. The history is one line,
24's revision then 46's; ``head`` stops at 24's unless pg-boss 12 is asked for."""

_PARTITION_NAME = re.compile(r"j[0-9a-f]{56}")


def version_table_name(schema: str) -> str:
    """The name of the Alembic version table that tracks the pg-boss schema ``schema``."""
    return f"alembic_{validate_schema_name(schema)}"


def fetch_index_version_table_name(schema: str) -> str:
    """The version table of the opt-in fetch index revision of ``schema`` (its own, so plain upgrades ignore it)."""
    return f"alembic_idx_{validate_schema_name(schema)}"


def current_revision(
    connection: Connection,
    schema: str = DEFAULT_SCHEMA,
    version_table_schema: str = DEFAULT_VERSION_TABLE_SCHEMA,
    *,
    fetch_index: bool = False,
) -> str | None:
    """The revision of our migrations recorded for ``schema`` (with ``fetch_index``, of the opt-in fetch
    index revision), or ``None``. Reads only."""
    from alembic.runtime.migration import MigrationContext

    table = fetch_index_version_table_name(schema) if fetch_index else version_table_name(schema)
    context = MigrationContext.configure(
        connection,
        opts={"version_table": table, "version_table_schema": validate_schema_name(version_table_schema)},
    )
    return context.get_current_revision()


def make_config(
    *,
    schema: str = DEFAULT_SCHEMA,
    url: str | URL | None = None,
    connection: Connection | None = None,
    version_table_schema: str = DEFAULT_VERSION_TABLE_SCHEMA,
    fetch_index: bool = False,
    pgboss: int | str = DEFAULT_PGBOSS,
) -> Config:
    """An Alembic ``Config`` for our revisions, with no ``alembic.ini`` needed.

    Give it a ``connection`` to run in that connection's transaction, or a ``url`` to connect. With
    ``fetch_index``, the config sees only the opt-in fetch index revision, tracked in its own version table.
    ``pgboss`` (10 or 12) says where ``head`` leads: the schema version of that pg-boss release.
    """
    config = Config()
    config.attributes["pgboss"] = pgboss_major(pgboss)
    config.attributes["fetch_index"] = fetch_index
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if fetch_index:
        # One location, which may hold spaces: split it on the OS path separator only (both spellings, for
        # the Alembic versions before and after the option was renamed).
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_path_separator", "os")
        config.set_main_option("version_locations", FETCH_INDEX_LOCATION)
        config.attributes["version_table"] = fetch_index_version_table_name(schema)
    if url is not None:
        config.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    config.attributes["schema"] = validate_schema_name(schema)
    config.attributes["version_table_schema"] = validate_schema_name(version_table_schema)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class Outcome(enum.Enum):
    """What :func:`upgrade` or :func:`downgrade` did."""

    installed = "installed"
    """The pg-boss schema was created (or the fetch index, with ``fetch_index``)."""
    adopted = "adopted"
    """A schema pg-boss had installed is now tracked by our revisions; nothing in it changed."""
    migrated = "migrated"
    """Moved to another revision."""
    removed = "removed"
    """Down to ``base``: the schema (or the fetch index) is gone, and so is our version table."""
    unchanged = "unchanged"
    """Already at the revision asked for: nothing was done."""


def upgrade(
    bind: Connection | Engine | str | URL,
    *,
    schema: str = DEFAULT_SCHEMA,
    revision: str = "head",
    version_table_schema: str = DEFAULT_VERSION_TABLE_SCHEMA,
    fetch_index: bool = False,
    pgboss: int | str = DEFAULT_PGBOSS,
    carried: list[Carried] | None = None,
) -> Outcome:
    """Upgrade (install or adopt) the pg-boss schema ``schema`` to ``revision``; returns what it did.

    ``pgboss`` is the pg-boss release whose schema ``head`` means: 10 (the default) for version 24, 12 for
    version 46 (pg-boss 12.38). With 12, a version-24 schema is upgraded in place with all its data (see
    :mod:`sqla_boss.v46.from_v24`; stop every pg-boss 10 instance first), and what it moved is appended to
    ``carried`` when a list is given.

    ``fetch_index=True`` runs the opt-in fetch index revision instead (``head`` creates the index on a
    schema already at pg-boss version 24; see :data:`sqla_boss.schema.FETCH_INDEX`).

    On a ``Connection`` with a transaction open (inside ``context.begin_transaction()`` of your ``env.py``,
    or after ``connection.begin()``) it runs in that transaction and does not commit; on a ``Connection``
    with none open, Alembic begins one and commits it. Given an engine or a URL it opens its own connection
    and commits. Holds pg-boss's advisory lock on the schema while it runs.

    Raises:
        InvalidOptionError: ``pgboss`` is neither 10 nor 12.
        SchemaVersionError: the schema holds a version sqla_boss cannot bring to the one asked for (46 when 10
            is asked for, 25 to 45, or a newer one), even where our revisions say they are at head; the message
            says what to do, and nothing is done.
        SchemaConflictError: the schema holds other objects but no pg-boss ``version`` table.
        MigrationError: Alembic cannot run the revision asked for (an unknown one, say).
    """
    return _run(command.upgrade, bind, schema, revision, version_table_schema, fetch_index, pgboss, carried)


def downgrade(
    bind: Connection | Engine | str | URL,
    *,
    schema: str = DEFAULT_SCHEMA,
    revision: str = "base",
    version_table_schema: str = DEFAULT_VERSION_TABLE_SCHEMA,
    fetch_index: bool = False,
) -> Outcome:
    """Downgrade ``schema`` to ``revision``; ``"base"`` drops every pg-boss object, jobs included, and our
    version table of the schema, whichever version it holds. Returns what it did.

    ``fetch_index=True`` downgrades the opt-in fetch index revision instead: ``base`` drops only the index (and
    its version table).

    Commits as :func:`upgrade` does.

    Raises:
        MigrationError: Alembic cannot run the revision asked for, or it asks to take version 46 back to 24,
            which sqla_boss refuses.
    """
    return _run(command.downgrade, bind, schema, revision, version_table_schema, fetch_index)


def _run(
    alembic_command: Callable[[Config, str], None],
    bind: Connection | Engine | str | URL,
    schema: str,
    revision: str,
    version_table_schema: str,
    fetch_index: bool = False,
    pgboss: int | str = DEFAULT_PGBOSS,
    carried: list[Carried] | None = None,
) -> Outcome:
    validate_schema_name(schema)  # before connecting: a bad name never reaches the server
    validate_schema_name(version_table_schema)
    major = pgboss_major(pgboss)
    upgrading = alembic_command is command.upgrade
    with _connection(bind) as connection, _keep_callers_alembic_proxies():
        state, _version = inspect_schema(connection, schema)
        before = current_revision(connection, schema, version_table_schema, fetch_index=fetch_index)
        config = make_config(
            schema=schema,
            connection=connection,
            version_table_schema=version_table_schema,
            fetch_index=fetch_index,
            pgboss=major,
        )
        try:
            alembic_command(config, revision)  # env.py refuses what check_migration refuses, before any step
        except CommandError as exc:
            raise MigrationError(f"cannot {'upgrade' if upgrading else 'downgrade'} to {revision!r}: {exc}") from exc
        if carried is not None:
            carried.extend(config.attributes.get("report", ()))
        after = current_revision(connection, schema, version_table_schema, fetch_index=fetch_index)
        if after == before:
            return Outcome.unchanged
        if after is None:
            _drop_version_table(connection, schema, version_table_schema, fetch_index)
            return Outcome.removed
        if before is None and upgrading and not config.attributes.get("report"):
            return Outcome.adopted if state is SchemaState.installed and not fetch_index else Outcome.installed
        return Outcome.migrated


def forget_fetch_index(connection: Connection, schema: str, version_table_schema: str | None) -> None:
    """Drop the version table of the opt-in fetch index revision of ``schema``, for the revisions that drop the
    index with its job table: a later install must not believe the index is still there. Does not commit."""
    _drop_version_table(connection, schema, version_table_schema or DEFAULT_VERSION_TABLE_SCHEMA, True)


def _drop_version_table(connection: Connection, schema: str, version_table_schema: str, fetch_index: bool) -> None:
    """Drop our version table of ``schema``, which the way down to ``base`` leaves empty."""
    table = fetch_index_version_table_name(schema) if fetch_index else version_table_name(schema)
    connection.execute(text(f"DROP TABLE IF EXISTS {quote_identifier(version_table_schema)}.{quote_identifier(table)}"))


@contextmanager
def _keep_callers_alembic_proxies() -> Iterator[None]:
    """Put back the ``alembic.context`` and ``alembic.op`` of an ``env.py`` that called us.

    An Alembic command installs those module-level proxies when it starts and deletes them when it ends,
    so running ours from inside an application's ``env.py`` would otherwise leave that ``env.py`` without
    its ``context``.
    """
    from alembic import context as alembic_context
    from alembic import op as alembic_op

    outer = [vars(module).get("_proxy") for module in (alembic_context, alembic_op)]
    try:
        yield
    finally:
        for proxy in outer:
            if proxy is not None:
                proxy._install_proxy()


@contextmanager
def _connection(bind: Connection | Engine | str | URL) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
        return
    engine = bind if isinstance(bind, Engine) else create_sync_engine(bind, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        if engine is not bind:
            engine.dispose()


_NameType = Literal[
    "schema", "table", "column", "index", "unique_constraint", "foreign_key_constraint", "check_constraint"
]
_ParentName = Literal["schema_name", "table_name", "schema_qualified_table_name"]

IncludeName = IncludeNameFn
"""The signature of Alembic's ``include_name`` hook (Alembic's own type, so a type-checked ``env.py`` accepts it)."""
IncludeObject = IncludeObjectFn
"""The signature of Alembic's ``include_object`` hook."""


def include_name_for(*schemas: str) -> IncludeName:
    """An Alembic ``include_name`` hook that hides the pg-boss ``schemas`` and their version tables."""
    names = {validate_schema_name(schema) for schema in schemas or (DEFAULT_SCHEMA,)}
    version_tables = {version_table_name(schema) for schema in names}

    def include_name(name: str | None, type_: _NameType, parent_names: MutableMapping[_ParentName, str | None]) -> bool:
        if type_ == "schema":
            return name not in names
        if type_ == "table":
            return not _is_pgboss_table(name, parent_names.get("schema_name"), names, version_tables)
        return True

    return include_name


def include_object_for(*schemas: str) -> IncludeObject:
    """An Alembic ``include_object`` hook that hides pg-boss's tables on the model and database sides."""
    names = {validate_schema_name(schema) for schema in schemas or (DEFAULT_SCHEMA,)}
    version_tables = {version_table_name(schema) for schema in names}

    def include_object(
        obj: SchemaItem, name: str | None, type_: _NameType, reflected: bool, compare_to: SchemaItem | None
    ) -> bool:
        table = obj if isinstance(obj, Table) else getattr(obj, "table", None)
        if isinstance(table, Table) and any(table.metadata is ours for ours in (models_metadata, v46_metadata)):
            return False  # our models of either version, whatever schema they are translated to
        if type_ == "table":
            return not _is_pgboss_table(name, getattr(obj, "schema", None), names, version_tables)
        if isinstance(table, Table):
            return not _is_pgboss_table(table.name, table.schema, names, version_tables)
        return True

    return include_object


def _is_pgboss_table(name: str | None, schema: str | None, schemas: set[str], version_tables: set[str]) -> bool:
    if name is None:
        return False
    if name in version_tables:
        return True
    if schema in schemas:
        return True
    # Partitions and tables of pg-boss reached through search_path rather than by schema name.
    return _PARTITION_NAME.fullmatch(name) is not None


include_name = include_name_for(DEFAULT_SCHEMA)
"""``include_name`` for the default ``pgboss`` schema."""

include_object = include_object_for(DEFAULT_SCHEMA)
"""``include_object`` for the default ``pgboss`` schema."""

__all__ = [
    "DEFAULT_VERSION_TABLE_SCHEMA",
    "FETCH_INDEX_LOCATION",
    "HEADS",
    "SCRIPT_LOCATION",
    "Outcome",
    "current_revision",
    "downgrade",
    "fetch_index_version_table_name",
    "forget_fetch_index",
    "include_name",
    "include_name_for",
    "include_object",
    "include_object_for",
    "make_config",
    "upgrade",
    "version_table_name",
]
