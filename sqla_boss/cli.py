"""The ``sqla-boss`` command line: readable tables in a terminal, ``--json`` for scripts."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import URL, Engine, create_engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from sqla_boss import migrations
from sqla_boss.async_worker import AsyncWorker
from sqla_boss.boss import Boss
from sqla_boss.database import DATABASE_URL_ENV, normalize_url, url_from_env
from sqla_boss.errors import InvalidOptionError, SqlaBossError
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.maintenance import Maintenance
from sqla_boss.models import Job, JobState
from sqla_boss.options.values import integer
from sqla_boss.schema import SCHEMA_VERSION, inspect_schema, schema_translate_map
from sqla_boss.worker import Worker

Command = Callable[[argparse.Namespace, URL], int]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sqla-boss", description="PostgreSQL job queues, pg-boss 10 compatible.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *, json_output: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--url", help=f"database URL (default: ${DATABASE_URL_ENV})")
        sub.add_argument("--schema", default=DEFAULT_SCHEMA, help="pg-boss schema (default: %(default)s)")
        if json_output:
            sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return sub

    def version_table(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--version-table-schema",
            default=migrations.DEFAULT_VERSION_TABLE_SCHEMA,
            help="schema of the Alembic version table (default: %(default)s)",
        )

    migrate = command("migrate", f"install the pg-boss schema (version {SCHEMA_VERSION}), or adopt pg-boss's")
    version_table(migrate)
    migrate.add_argument("--revision", default="head", help="target revision (default: %(default)s)")
    fetch_index_help = "the opt-in fetch index revision instead (its own branch and version table)"
    migrate.add_argument("--fetch-index", action="store_true", help=fetch_index_help)
    downgrade = command("downgrade", "downgrade; 'base' drops the pg-boss schema and its jobs")
    version_table(downgrade)
    downgrade.add_argument("revision", help="target revision, for example 'base'")
    downgrade.add_argument("--fetch-index", action="store_true", help=fetch_index_help + "; 'base' drops the index")
    current = command("current", "the pg-boss schema version installed, and our Alembic revision", json_output=True)
    version_table(current)

    command("queues", "queues with their jobs by state and the age of the oldest queued job", json_output=True)
    jobs = command("jobs", "the jobs of a queue, newest first", json_output=True)
    jobs.add_argument("queue")
    jobs.add_argument("--state", choices=[state.value for state in JobState], help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default: %(default)s)")

    send = command("send", "send one job (committed at once); prints its id", json_output=True)
    send.add_argument("queue")
    send.add_argument("data", nargs="?", default="null", help="the payload, as JSON (default: null)")
    send.add_argument("--priority", type=int)
    send.add_argument("--start-after", help="seconds, interval text ('5 minutes') or an ISO timestamp")
    send.add_argument("--singleton-key")
    send.add_argument("--retry-limit", type=int)
    send.add_argument("--retry-delay", type=int)
    send.add_argument("--retry-backoff", action="store_true", default=None)
    send.add_argument("--expire-in-seconds", type=int)
    send.add_argument("--dead-letter")

    maintain = command("maintain", "one maintenance pass: expire, archive, drop", json_output=True)
    maintain.add_argument("--archive-completed-after-seconds", type=int, default=43200)
    maintain.add_argument("--archive-failed-after-seconds", type=int)
    maintain.add_argument("--delete-after-seconds", type=int, default=7 * 86400)

    schedule = command("schedule", "store (or replace) the cron schedule of a queue")
    schedule.add_argument("queue")
    schedule.add_argument("cron", help="a cron expression, quoted: '*/5 * * * *'")
    schedule.add_argument("data", nargs="?", default="null", help="the payload of each job, as JSON")
    schedule.add_argument("--tz", help="IANA time zone (default: UTC)")
    unschedule = command("unschedule", "delete the cron schedule of a queue")
    unschedule.add_argument("queue")
    command("schedules", "every cron schedule", json_output=True)

    work = command("work", "run the workers a module registers, until SIGTERM or SIGINT (then stop gracefully)")
    work.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="a Worker or AsyncWorker, or a function (url, schema) returning one",
    )
    work.add_argument("--queues", help="only these queues, comma-separated (default: every registered queue)")
    work.add_argument("--concurrency", type=int, help="loops per queue, replacing what was registered")
    work.add_argument(
        "--transactional",
        action="store_true",
        default=None,
        help="complete each job in its handler's transaction; handlers take (jobs, session)",
    )
    work.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")

    demo = commands.add_parser(
        "demo",
        help="place orders and their jobs in one transaction each, then work them off (embedded PostgreSQL "
        f"unless ${DATABASE_URL_ENV} is set)",
    )
    demo.add_argument("--async", dest="use_async", action="store_true", help="do the same work through AsyncBoss")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: refused input, 1: a database error)."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _demo(use_async=args.use_async)
    try:
        url = normalize_url(args.url) if args.url else url_from_env()
        if url is None:
            raise SqlaBossError(f"no database: pass --url or set {DATABASE_URL_ENV}")
        return _COMMANDS[args.command](args, url)
    except SqlaBossError as exc:
        print(f"sqla-boss: {exc}", file=sys.stderr)
        return 2
    except DBAPIError as exc:
        print(f"sqla-boss: the database refused: {exc.orig}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------------------------------- commands


def _migrate(args: argparse.Namespace, url: URL) -> int:
    action = migrations.upgrade if args.command == "migrate" else migrations.downgrade
    action(
        url,
        schema=args.schema,
        revision=args.revision,
        version_table_schema=args.version_table_schema,
        fetch_index=args.fetch_index,
    )
    verb = "migrated" if args.command == "migrate" else "downgraded"
    what = "the fetch index of schema" if args.fetch_index else "schema"
    print(f"sqla-boss: {verb} {what} {args.schema!r} to {args.revision!r}")
    return 0


def _current(args: argparse.Namespace, url: URL) -> int:
    with _engine(url) as engine, engine.connect() as connection:
        state, version = inspect_schema(connection, args.schema)
        revision = migrations.current_revision(connection, args.schema, args.version_table_schema)
        index = migrations.current_revision(connection, args.schema, args.version_table_schema, fetch_index=True)
    info = {
        "schema": args.schema,
        "state": state.value,
        "pgboss_version": version,
        "revision": revision,
        "fetch_index_revision": index,
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(
            f"schema {args.schema}: {state.value}, pg-boss version {version}, revision {revision or '(none)'}, "
            f"fetch index {index or '(not installed)'}"
        )
    return 0


def _queues(args: argparse.Namespace, url: URL) -> int:
    with _engine(url) as engine:
        snapshots = Maintenance(engine, args.schema).queue_snapshots()
    rows = [
        {
            "name": snapshot.name,
            **{state.value: getattr(snapshot, state.value) for state in JobState},
            "oldest_queued_seconds": snapshot.oldest_queued_seconds,
        }
        for snapshot in snapshots
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    headers = ["queue", *(state.value for state in JobState), "oldest queued"]
    table = [
        [row["name"], *(str(row[state.value]) for state in JobState), _age(row["oldest_queued_seconds"])]
        for row in rows
    ]
    print(_table(headers, table) if table else "no queues")
    return 0


def _jobs(args: argparse.Namespace, url: URL) -> int:
    limit = integer("--limit", args.limit, minimum=1)
    with _session(url, args.schema) as session:
        query = select(Job).where(Job.name == args.queue).order_by(Job.created_on.desc()).limit(limit)
        if args.state:
            query = query.where(Job.state == JobState(args.state))
        jobs = session.scalars(query).all()
        rows = [
            {
                "id": str(job.id),
                "state": job.state.value,
                "priority": job.priority,
                "retry": f"{job.retry_count}/{job.retry_limit}",
                "created_on": job.created_on.isoformat(),
                "start_after": job.start_after.isoformat(),
                "data": job.data,
            }
            for job in jobs
        ]
    if args.json:
        print(json.dumps(rows))
        return 0
    headers = ["id", "state", "priority", "retry", "created_on", "start_after", "data"]
    table = [[*(str(row[key]) for key in headers[:-1]), _short(json.dumps(row["data"]))] for row in rows]
    print(_table(headers, table) if table else f"no jobs in queue {args.queue!r}")
    return 0


def _send(args: argparse.Namespace, url: URL) -> int:
    data = _json_argument(args.data, "data")
    options = {
        "priority": args.priority,
        "start_after": _number_or_text(args.start_after),
        "singleton_key": args.singleton_key,
        "retry_limit": args.retry_limit,
        "retry_delay": args.retry_delay,
        "retry_backoff": args.retry_backoff,
        "expire_in_seconds": args.expire_in_seconds,
        "dead_letter": args.dead_letter,
    }
    with _session(url, args.schema) as session, session.begin():
        job_id = Boss(session, schema=args.schema).send(
            args.queue, data, **{key: value for key, value in options.items() if value is not None}
        )
    if args.json:
        print(json.dumps({"id": None if job_id is None else str(job_id)}))
    elif job_id is None:
        print("not sent: the queue's policy, a throttling slot or the id was taken")
    else:
        print(job_id)
    return 0


def _maintain(args: argparse.Namespace, url: URL) -> int:
    options = {
        "archive_completed_after_seconds": args.archive_completed_after_seconds,
        "archive_failed_after_seconds": args.archive_failed_after_seconds,
        "delete_after_seconds": args.delete_after_seconds,
    }
    with _engine(url) as engine:
        result = Maintenance(
            engine, args.schema, **{key: value for key, value in options.items() if value is not None}
        ).maintain()
    if args.json:
        print(json.dumps(result.__dict__))
    else:
        print(f"expired {result.expired}, archived {result.archived}, dropped {result.dropped} in {result.ms} ms")
    return 0


def _schedule(args: argparse.Namespace, url: URL) -> int:
    data = _json_argument(args.data, "data")
    with _session(url, args.schema) as session, session.begin():
        Boss(session, schema=args.schema).schedule(args.queue, args.cron, data, tz=args.tz)
    print(f"scheduled {args.queue!r}: {args.cron} ({args.tz or 'UTC'})")
    return 0


def _unschedule(args: argparse.Namespace, url: URL) -> int:
    with _session(url, args.schema) as session, session.begin():
        removed = Boss(session, schema=args.schema).unschedule(args.queue)
    print(f"unscheduled {args.queue!r}" if removed else f"queue {args.queue!r} had no schedule")
    return 0


def _work(args: argparse.Namespace, url: URL) -> int:
    worker = load_worker(args.target, url, args.schema)
    worker.adjust(
        queues=None if args.queues is None else [name.strip() for name in args.queues.split(",") if name.strip()],
        concurrency=args.concurrency,
        transactional=args.transactional,
    )
    if not worker.queues:
        raise SqlaBossError(f"{args.target} registers no handler")
    _log_to_stderr(args.log_level)
    kind = type(worker).__name__
    print(f"sqla-boss: {kind} on schema {worker.schema!r}, queues {', '.join(worker.queues)}", file=sys.stderr)
    if isinstance(worker, AsyncWorker):
        asyncio.run(worker.run())
    else:
        worker.run()
    print("sqla-boss: stopped", file=sys.stderr)
    return 0


def load_worker(target: str, url: URL, schema: str) -> Worker | AsyncWorker:
    """Import ``module:attr``: a :class:`Worker` or :class:`AsyncWorker`, or a function ``(url, schema)`` that
    returns one (it gets ``--url`` / ``$DATABASE_URL`` and ``--schema``)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise InvalidOptionError(f"expected MODULE:ATTR, not {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does, so a module beside you is found
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidOptionError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise InvalidOptionError(f"{module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not isinstance(found, (Worker, AsyncWorker)) and callable(found):
        found = found(url, schema)
    if not isinstance(found, (Worker, AsyncWorker)):
        raise InvalidOptionError(f"{target} is not a Worker, an AsyncWorker or a function returning one")
    return found


class _JobContext(logging.Filter):
    """Give every record the ``queue`` and ``job_id`` the format shows, ``-`` when it has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in ("queue", "job_id"):
            if not getattr(record, name, None):
                setattr(record, name, "-")
        return True


def _log_to_stderr(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_JobContext())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s queue=%(queue)s job=%(job_id)s %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


def _schedules(args: argparse.Namespace, url: URL) -> int:
    with _session(url, args.schema) as session:
        schedules = Boss(session, schema=args.schema).get_schedules()
        rows = [
            {"name": s.name, "cron": s.cron, "timezone": s.timezone, "data": s.data, "options": s.options}
            for s in schedules
        ]
    if args.json:
        print(json.dumps(rows))
        return 0
    table = [[row["name"], row["cron"], str(row["timezone"]), _short(json.dumps(row["data"]))] for row in rows]
    print(_table(["queue", "cron", "timezone", "data"], table) if table else "no schedules")
    return 0


_COMMANDS: dict[str, Command] = {
    "migrate": _migrate,
    "work": _work,
    "downgrade": _migrate,
    "current": _current,
    "queues": _queues,
    "jobs": _jobs,
    "send": _send,
    "maintain": _maintain,
    "schedule": _schedule,
    "unschedule": _unschedule,
    "schedules": _schedules,
}


# -------------------------------------------------------------------------------------------- helpers


class _engine:
    """An engine for one command, disposed afterwards."""

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(url, poolclass=NullPool)

    def __enter__(self) -> Engine:
        return self.engine

    def __exit__(self, *exc: object) -> None:
        self.engine.dispose()


class _session:
    """A session on the pg-boss schema for one command."""

    def __init__(self, url: URL, schema: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool).execution_options(
            schema_translate_map=schema_translate_map(schema)
        )
        self.session = Session(self.engine)

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, *exc: object) -> None:
        self.session.close()
        self.engine.dispose()


def _json_argument(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidOptionError(f"{what} is not JSON: {exc}") from None


def _number_or_text(value: str | None) -> float | str | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return str(dt.timedelta(seconds=round(seconds)))


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, ["-" * width for width in widths], *rows]
    ]
    return "\n".join(lines)


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
