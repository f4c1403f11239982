"""``sqla-boss migrate``, ``downgrade``, ``current`` and ``check``: the schema, and whether a deployment can work."""

from __future__ import annotations

import argparse
import json

from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError

from sqla_boss import migrations
from sqla_boss.cli.common import Commands, add_command, engine_for, table
from sqla_boss.driver import Driver
from sqla_boss.errors import SqlaBossError
from sqla_boss.handling import one_line
from sqla_boss.operations import operations_for
from sqla_boss.schema import (
    DEFAULT_PGBOSS,
    KNOWN_VERSIONS,
    PGBOSS_MAJORS,
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    SchemaState,
    check_schema,
    inspect_schema,
    pgboss_major,
)
from sqla_boss.v24 import VERSION as V24
from sqla_boss.v46 import VERSION as V46
from sqla_boss.v46.from_v24 import Carried

EXIT_DATABASE = 1
EXIT_REFUSED = 2


def add(commands: Commands) -> None:
    """Register the schema commands."""

    def version_table(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--version-table-schema",
            default=migrations.DEFAULT_VERSION_TABLE_SCHEMA,
            help="schema of the Alembic version table (default: %(default)s)",
        )

    fetch_index_help = "the opt-in fetch index revision instead (its own branch and version table)"
    migrate = add_command(
        commands,
        "migrate",
        f"install the pg-boss schema (version {SCHEMA_VERSION}; 46 with --pgboss 12), adopt pg-boss's, "
        "or upgrade 24 to 46 with its jobs",
        _migrate,
    )
    version_table(migrate)
    migrate.add_argument("--revision", default="head", help="target revision (default: %(default)s)")
    migrate.add_argument(
        "--pgboss",
        type=_pgboss_choice,
        default=DEFAULT_PGBOSS,
        metavar="{10,12}",
        help="the pg-boss release whose schema 'head' means: 10 (version 24, the default) or 12 (version 46, "
        "pg-boss 12.38); 12 on a version-24 schema upgrades it in place with its jobs",
    )
    migrate.add_argument("--fetch-index", action="store_true", help=fetch_index_help)
    downgrade = add_command(commands, "downgrade", "downgrade; 'base' drops the pg-boss schema and its jobs", _migrate)
    version_table(downgrade)
    downgrade.add_argument("revision", help="target revision, for example 'base'")
    downgrade.add_argument("--fetch-index", action="store_true", help=fetch_index_help + "; 'base' drops the index")
    current = add_command(
        commands,
        "current",
        "the pg-boss schema version installed, and our Alembic revision",
        _current,
        json_output=True,
    )
    version_table(current)
    check = add_command(
        commands,
        "check",
        "whether a worker can work here: the database answers, the schema holds a version this release runs, "
        "and the queues exist; exits 0 when all holds",
        _check,
        json_output=True,
    )
    check.add_argument("--queues", help="queues that must exist, comma-separated")


_SAID = {
    (True, migrations.Outcome.installed): "installed pg-boss schema version {version} in {what}",
    (True, migrations.Outcome.adopted): "adopted pg-boss's {what} (version {version}); nothing in it changed",
    (True, migrations.Outcome.migrated): "migrated {what} to revision {revision!r}",
    (True, migrations.Outcome.unchanged): "{what} is already at {revision!r}; nothing to do",
    (False, migrations.Outcome.removed): "removed {what} and its Alembic version table",
    (False, migrations.Outcome.migrated): "downgraded {what} to revision {revision!r}",
    (False, migrations.Outcome.unchanged): "{what} is already at {revision!r}; nothing to do",
}


def _pgboss_choice(value: str) -> int:
    try:
        return pgboss_major(value)
    except SqlaBossError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _migrate(args: argparse.Namespace, url: URL) -> int:
    upgrading = args.command == "migrate"
    what = f"the fetch index of schema {args.schema!r}" if args.fetch_index else f"schema {args.schema!r}"
    if upgrading:
        carried: list[Carried] = []
        if args.pgboss == 12 and not args.fetch_index and _holds_version(url, args.schema, V24):
            print(
                f"sqla-boss: upgrading {what} from pg-boss 10's version 24 to pg-boss 12.38's version 46 with its "
                "jobs, in one transaction: every pg-boss 10 instance on it (Node or sqla_boss) must be stopped first"
            )
        outcome = migrations.upgrade(
            url,
            schema=args.schema,
            revision=args.revision,
            version_table_schema=args.version_table_schema,
            fetch_index=args.fetch_index,
            pgboss=args.pgboss,
            carried=carried,
        )
    else:
        outcome = migrations.downgrade(
            url,
            schema=args.schema,
            revision=args.revision,
            version_table_schema=args.version_table_schema,
            fetch_index=args.fetch_index,
        )
    if args.fetch_index and outcome is migrations.Outcome.installed:
        said = f"created {what}"
    elif upgrading and carried:
        said = f"upgraded {what} to pg-boss schema version {V46}: {carried[0].describe()}"
    else:
        version = PGBOSS_MAJORS[args.pgboss] if upgrading else SCHEMA_VERSION
        said = _SAID[upgrading, outcome].format(what=what, version=version, revision=args.revision)
    print(f"sqla-boss: {said}")
    return 0


def _holds_version(url: URL, schema: str, version: int) -> bool:
    with engine_for(url) as engine, engine.connect() as connection:
        state, found = inspect_schema(connection, schema)
    return state is SchemaState.installed and found == version


def _current(args: argparse.Namespace, url: URL) -> int:
    with engine_for(url) as engine, engine.connect() as connection:
        state, version = inspect_schema(connection, args.schema)
        revision = migrations.current_revision(connection, args.schema, args.version_table_schema)
        index = migrations.current_revision(connection, args.schema, args.version_table_schema, fetch_index=True)
    releases = None if version is None else KNOWN_VERSIONS.get(version, "not one sqla_boss knows")
    info = {
        "schema": args.schema,
        "state": state.value,
        "pgboss_version": version,
        "pgboss_releases": releases,
        "revision": revision,
        "fetch_index_revision": index,
    }
    if args.json:
        print(json.dumps(info))
    else:
        of = "" if releases is None else f" ({releases})"
        print(
            f"schema {args.schema}: {state.value}, pg-boss version {version}{of}, revision {revision or '(none)'}, "
            f"fetch index {index or '(not installed)'}"
        )
    return 0


def _check(args: argparse.Namespace, url: URL) -> int:
    """Each check in turn; the first that fails makes the later ones moot."""
    wanted = [] if args.queues is None else [name.strip() for name in args.queues.split(",") if name.strip()]
    checks: list[dict[str, object]] = []
    status = 0
    with engine_for(url) as engine:
        try:
            with engine.connect() as connection:
                server = connection.execute(text("SHOW server_version")).scalar()
                checks.append({"check": "database", "ok": True, "detail": f"PostgreSQL {server}"})
                try:
                    version = check_schema(connection, args.schema)
                except SqlaBossError as exc:
                    checks.append({"check": "schema", "ok": False, "detail": str(exc)})
                    status = EXIT_REFUSED
                else:
                    supported = ", ".join(map(str, SUPPORTED_VERSIONS))
                    detail = f"{args.schema}: pg-boss schema version {version} (supported: {supported})"
                    checks.append({"check": "schema", "ok": True, "detail": detail})
                    operation = operations_for(args.schema, {}, version).missing_queues(wanted)
                    missing = Driver(args.schema).run(connection, operation)
                    for name in wanted:
                        ok = name not in missing
                        checks.append({"check": f"queue {name}", "ok": ok, "detail": "exists" if ok else "missing"})
                    if missing:
                        status = EXIT_REFUSED
        except DBAPIError as exc:
            checks.append({"check": "database", "ok": False, "detail": one_line(exc)})
            status = EXIT_DATABASE
    if args.json:
        print(json.dumps({"ok": status == 0, "checks": checks}))
    else:
        rows = [[str(c["check"]), "ok" if c["ok"] else "FAILED", str(c["detail"])] for c in checks]
        print(table(["check", "result", "detail"], rows))
    return status
