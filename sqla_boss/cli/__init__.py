"""The ``sqla-boss`` command line: readable tables in a terminal, ``--json`` for scripts, one line per error.

Exit statuses (``docs/operations.md`` lists them too):

* 0: done (``work``: stopped gracefully; ``check``: every check holds);
* 1: the database cannot be reached, or refused a statement;
* 2: refused: bad input, a queue or job that does not exist, a schema that holds no pg-boss or another version;
* 128 + N: ``work`` stopped at once by a second signal N (130 for a second Ctrl-C, 143 for a second SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError

from sqla_boss.cli import job_commands, queue_commands, schedule_commands, schema_commands, work_commands
from sqla_boss.cli.work_commands import load_worker
from sqla_boss.database import DATABASE_URL_ENV, normalize_url, url_from_env
from sqla_boss.errors import DatabaseUnavailableError, SqlaBossError
from sqla_boss.handling import one_line
from sqla_boss.schema import SCHEMA_VERSION

EXIT_DATABASE = 1
"""The database cannot be reached, or refused."""
EXIT_REFUSED = 2
"""The command refused its input, or the schema."""


def _parser() -> argparse.ArgumentParser:
    from sqla_boss import __version__

    parser = argparse.ArgumentParser(
        prog="sqla-boss", description=f"PostgreSQL job queues, pg-boss compatible (schema version {SCHEMA_VERSION})."
    )
    parser.add_argument(
        "--version", action="version", version=f"sqla-boss {__version__} (pg-boss schema version {SCHEMA_VERSION})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    schema_commands.add(commands)
    queue_commands.add(commands)
    job_commands.add(commands)
    schedule_commands.add(commands)
    work_commands.add(commands)
    demo = commands.add_parser(
        "demo",
        help="place orders and their jobs in one transaction each, then work them off (embedded PostgreSQL "
        f"unless ${DATABASE_URL_ENV} is set)",
    )
    demo.add_argument("--async", dest="use_async", action="store_true", help="do the same work through AsyncBoss")
    demo.add_argument(
        "--pgboss",
        type=int,
        choices=[10, 12],
        default=10,
        help="the pg-boss release whose schema the demo installs: 10 (version 24, default) or 12 (version 46)",
    )
    demo.add_argument(
        "--schema",
        help="the pg-boss schema to use (default: one of the demo's own, new for each run on a server of yours)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module documentation)."""
    parser = _parser()
    arguments = sys.argv[1:] if argv is None else list(argv)
    if not arguments:
        parser.print_help()
        return 0
    args = parser.parse_args(arguments)
    try:
        if args.command == "demo":
            return _demo(args)
        url = normalize_url(args.url) if args.url else url_from_env()
        if url is None:
            raise SqlaBossError(f"no database: pass --url or set {DATABASE_URL_ENV}")
        status: int = args.handler(args, url)
        return status
    except DatabaseUnavailableError as exc:
        print(f"sqla-boss: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    except SqlaBossError as exc:
        print(f"sqla-boss: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except DBAPIError as exc:
        print(f"sqla-boss: the database refused: {one_line(exc)}", file=sys.stderr)
        return EXIT_DATABASE


def _demo(args: argparse.Namespace) -> int:
    from sqla_boss import demo

    demo.run(use_async=args.use_async, schema=args.schema, pgboss=args.pgboss)
    return 0


__all__ = ["EXIT_DATABASE", "EXIT_REFUSED", "load_worker", "main"]
