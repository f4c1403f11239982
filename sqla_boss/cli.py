"""The ``sqla-boss`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError

from sqla_boss import migrations
from sqla_boss.database import DATABASE_URL_ENV, normalize_url, url_from_env
from sqla_boss.errors import SqlaBossError
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.schema import SCHEMA_VERSION


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqla-boss", description="PostgreSQL job queues, pg-boss 10 compatible.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def database_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--url", help=f"database URL (default: ${DATABASE_URL_ENV})")
        command.add_argument("--schema", default=DEFAULT_SCHEMA, help="pg-boss schema (default: %(default)s)")
        command.add_argument(
            "--version-table-schema",
            default=migrations.DEFAULT_VERSION_TABLE_SCHEMA,
            help="schema of the Alembic version table (default: %(default)s)",
        )

    migrate = commands.add_parser(
        "migrate",
        help=f"install the pg-boss schema (version {SCHEMA_VERSION}), or adopt the one pg-boss installed",
    )
    database_options(migrate)
    migrate.add_argument("--revision", default="head", help="target revision (default: %(default)s)")

    demo = commands.add_parser(
        "demo",
        help="place orders and their jobs in one transaction each, then work them off (embedded PostgreSQL "
        f"unless ${DATABASE_URL_ENV} is set)",
    )
    demo.add_argument("--async", dest="use_async", action="store_true", help="do the same work through AsyncBoss")

    downgrade = commands.add_parser("downgrade", help="downgrade; 'base' drops the pg-boss schema and its jobs")
    database_options(downgrade)
    downgrade.add_argument("revision", help="target revision, for example 'base'")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _demo(use_async=args.use_async)
    try:
        url = normalize_url(args.url) if args.url else url_from_env()
        if url is None:
            raise SqlaBossError(f"no database: pass --url or set {DATABASE_URL_ENV}")
        action = migrations.upgrade if args.command == "migrate" else migrations.downgrade
        action(url, schema=args.schema, revision=args.revision, version_table_schema=args.version_table_schema)
    except SqlaBossError as exc:
        print(f"sqla-boss: {exc}", file=sys.stderr)
        return 2
    except DBAPIError as exc:
        print(f"sqla-boss: the database refused: {exc.orig}", file=sys.stderr)
        return 1
    verb = "migrated" if args.command == "migrate" else "downgraded"
    print(f"sqla-boss: {verb} schema {args.schema!r} to {args.revision!r}")
    return 0


def _demo(*, use_async: bool) -> int:
    from sqla_boss import demo

    try:
        demo.run(use_async=use_async)
    except SqlaBossError as exc:
        print(f"sqla-boss: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
