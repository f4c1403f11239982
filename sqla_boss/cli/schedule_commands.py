"""``sqla-boss schedule``, ``unschedule`` and ``schedules``: cron schedules. Each change commits at once."""

from __future__ import annotations

import argparse

from sqlalchemy import URL

from sqla_boss.boss import Boss
from sqla_boss.cli.common import Commands, add_command, dumps, json_argument, session_for, short, table


def add(commands: Commands) -> None:
    """Register the schedule commands."""
    schedule = add_command(commands, "schedule", "store (or replace) the cron schedule of a queue", _schedule)
    schedule.add_argument("queue")
    schedule.add_argument("cron", help="a cron expression, quoted: '*/5 * * * *'")
    schedule.add_argument("data", nargs="?", default="null", help="the payload of each job, as JSON")
    schedule.add_argument("--tz", help="IANA time zone (default: UTC)")
    schedule.add_argument("--key", help="pg-boss 12 (schema 46): one of several schedules of the queue")
    unschedule = add_command(commands, "unschedule", "delete the cron schedule of a queue", _unschedule)
    unschedule.add_argument("queue")
    unschedule.add_argument("--key", help="pg-boss 12 (schema 46): which of the queue's schedules")
    add_command(commands, "schedules", "every cron schedule", _schedules, json_output=True)


def _schedule(args: argparse.Namespace, url: URL) -> int:
    data = json_argument(args.data, "data")
    with session_for(url, args.schema) as session, session.begin():
        keyed = {} if args.key is None else {"key": args.key}
        Boss(session, schema=args.schema).schedule(args.queue, args.cron, data, tz=args.tz, **keyed)
    print(f"scheduled {args.queue!r}: {args.cron} ({args.tz or 'UTC'})")
    return 0


def _unschedule(args: argparse.Namespace, url: URL) -> int:
    with session_for(url, args.schema) as session, session.begin():
        removed = Boss(session, schema=args.schema).unschedule(args.queue, args.key)
    print(f"unscheduled {args.queue!r}" if removed else f"queue {args.queue!r} had no schedule")
    return 0


def _schedules(args: argparse.Namespace, url: URL) -> int:
    with session_for(url, args.schema) as session:
        rows = [
            {
                "name": s.name,
                **({"key": s.key} if hasattr(s, "key") else {}),
                "cron": s.cron,
                "timezone": s.timezone,
                "data": s.data,
                "options": s.options,
            }
            for s in Boss(session, schema=args.schema).get_schedules()
        ]
    if args.json:
        print(dumps(rows))
        return 0
    keyed = any("key" in row for row in rows)
    cells = [
        [row["name"], *([row["key"]] if keyed else []), row["cron"], str(row["timezone"]), short(dumps(row["data"]))]
        for row in rows
    ]
    headers = ["queue", *(["key"] if keyed else []), "cron", "timezone", "data"]
    print(table(headers, cells) if cells else "no schedules")
    return 0
