"""``sqla-boss work`` and ``maintain``: run the workers of an application, and one maintenance pass."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import time
from typing import Any

from sqlalchemy import URL, Engine

from sqla_boss.async_worker import AsyncWorker
from sqla_boss.cli.common import Commands, add_command, dumps, engine_for
from sqla_boss.errors import InvalidOptionError, SqlaBossError, UnsupportedOperationError
from sqla_boss.health import HealthServer
from sqla_boss.maintenance import Maintenance
from sqla_boss.options.supervision import SupervisionSettings
from sqla_boss.schema import REPOSITORY_VERSIONS, check_schema
from sqla_boss.supervisor import Supervisor
from sqla_boss.worker import Worker

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

EXIT_SIGNAL_BASE = 128
"""``work`` exits with this plus the signal's number when a second signal forced it to stop (130, 143)."""


def add(commands: Commands) -> None:
    """Register ``work`` and ``maintain``."""
    work = add_command(
        commands, "work", "run the workers a module registers, until SIGTERM or SIGINT (then stop gracefully)", _work
    )
    work.add_argument(
        "target", metavar="MODULE:ATTR", help="a Worker or AsyncWorker, or a function (url, schema) returning one"
    )
    work.add_argument("--queues", help="only these queues, comma-separated (default: every registered queue)")
    work.add_argument("--concurrency", type=int, help="loops per queue, replacing what was registered")
    work.add_argument(
        "--transactional",
        action="store_true",
        default=None,
        help="complete each job in its handler's transaction; handlers take (jobs, session)",
    )
    work.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, help="logging level (default: %(default)s)"
    )
    work.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds a graceful stop waits for the jobs in flight (default: %(default)s)",
    )
    work.add_argument("--health-port", type=int, help="serve GET /healthz on this port (200 healthy, 503 not)")
    work.add_argument("--health-host", default="0.0.0.0", help="the address /healthz listens on (default: %(default)s)")

    maintain = add_command(
        commands,
        "maintain",
        "one maintenance pass: expire, archive, drop (version 24); one supervise pass under the cluster's claims "
        "(version 46)",
        _maintain,
        json_output=True,
    )
    maintain.add_argument("--archive-completed-after-seconds", type=int, help="version 24 (default 43200)")
    maintain.add_argument("--archive-failed-after-seconds", type=int, help="version 24")
    maintain.add_argument("--delete-after-seconds", type=int, help="version 24 (default 7 days)")
    maintain.add_argument(
        "--monitor-interval-seconds", type=int, help="version 46: claim queues not counted for this long (default 60)"
    )
    maintain.add_argument(
        "--maintenance-interval-seconds",
        type=int,
        help="version 46: claim queues not swept for this long (default 86400)",
    )


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
    health = None if args.health_port is None else HealthServer(worker, args.health_port, args.health_host)
    try:
        if isinstance(worker, AsyncWorker):
            forced = asyncio.run(worker.run(timeout=args.stop_timeout))
        else:
            forced = worker.run(timeout=args.stop_timeout)
    finally:
        if health is not None:
            health.close()
    if forced is not None:
        print("sqla-boss: stopped at once, on a second signal", file=sys.stderr)
        return EXIT_SIGNAL_BASE + forced
    print("sqla-boss: stopped", file=sys.stderr)
    return 0


def load_worker(target: str, url: URL, schema: str) -> Worker | AsyncWorker:
    """Import ``module:attr``: a :class:`Worker` or :class:`AsyncWorker`, or a function ``(url, schema)`` that
    returns one (it gets ``--url`` / ``$DATABASE_URL`` and ``--schema``).

    Raises:
        InvalidOptionError: the target cannot be imported or is no worker (with the error, in one line).
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise InvalidOptionError(f"expected MODULE:ATTR, not {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does, so a module beside you is found
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise InvalidOptionError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise InvalidOptionError(f"{module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not isinstance(found, (Worker, AsyncWorker)) and callable(found):
        try:
            found = found(url, schema)
        except SqlaBossError:
            raise
        except Exception as exc:
            raise InvalidOptionError(f"{target}({url.render_as_string()!r}, {schema!r}) failed: {exc}") from exc
    if not isinstance(found, (Worker, AsyncWorker)):
        raise InvalidOptionError(f"{target} is not a Worker, an AsyncWorker or a function returning one")
    return found


def _log_to_stderr(level: str) -> None:
    """Log to standard error; each record names its queue and jobs in its message."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def _maintain(args: argparse.Namespace, url: URL) -> int:
    v24 = {
        "archive_completed_after_seconds": args.archive_completed_after_seconds,
        "archive_failed_after_seconds": args.archive_failed_after_seconds,
        "delete_after_seconds": args.delete_after_seconds,
    }
    v46 = {
        "monitor_interval_seconds": args.monitor_interval_seconds,
        "maintenance_interval_seconds": args.maintenance_interval_seconds,
    }
    with engine_for(url) as engine:
        with engine.connect() as connection:
            version = check_schema(connection, args.schema, REPOSITORY_VERSIONS)
        given = [f"--{key.replace('_', '-')}" for key, value in (v46 if version == 24 else v24).items() if value]
        if given:
            raise UnsupportedOperationError(f"{', '.join(given)}: not an option of schema version {version}")
        if version == 46:
            return _supervise(engine, args, SupervisionSettings.from_options(v46))
        maintenance = Maintenance(
            engine, args.schema, **{key: value for key, value in v24.items() if value is not None}
        )
        done = maintenance.maintain()
    if args.json:
        print(dumps(done.__dict__))
    else:
        print(f"expired {done.expired}, archived {done.archived}, dropped {done.dropped} in {done.ms} ms")
    return 0


def _supervise(engine: Engine, args: argparse.Namespace, settings: SupervisionSettings) -> int:
    """One supervise pass of version 46 (pg-boss 12's ``supervise()``): the queues whose turn has come."""
    started = time.monotonic()
    done = Supervisor(engine, args.schema, settings, cron_interval_seconds=None).supervise()
    ms = round((time.monotonic() - started) * 1000)
    if args.json:
        print(
            dumps(
                {
                    "monitored": done.monitored,
                    "counted": done.counted,
                    "maintained": done.maintained,
                    "expired": done.expired,
                    "dead_lettered": done.dead_lettered,
                    "deleted": done.deleted,
                    "ms": ms,
                }
            )
        )
    else:
        print(
            f"counted {len(done.counted)} and swept {len(done.maintained)} queue(s): expired {done.expired} "
            f"({done.dead_lettered} dead-lettered), deleted {done.deleted} in {ms} ms"
        )
    return 0
