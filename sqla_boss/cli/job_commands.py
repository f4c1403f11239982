"""``sqla-boss jobs``, ``job``, ``send``, and ``retry`` / ``cancel`` / ``resume`` / ``delete``. Each commits at once."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import URL
from sqlalchemy.orm import Session

from sqla_boss.boss import Boss
from sqla_boss.cli.common import (
    Commands,
    add_command,
    dumps,
    json_argument,
    json_file,
    number_or_text,
    repository,
    session_for,
    short,
    table,
)
from sqla_boss.errors import InvalidOptionError, JobNotFoundError, QueueNotFoundError
from sqla_boss.models import Archive, JobState

STATES = [state.value for state in JobState]

_CHANGES: dict[str, tuple[str, str | None]] = {
    "retry": ("give failed jobs one more try", JobState.failed.value),
    "cancel": ("cancel queued or active jobs", None),
    "resume": ("return cancelled jobs to the queue", JobState.cancelled.value),
    "delete": ("delete jobs in any state, without archiving them", None),
}
"""What each change does, and the state it takes with ``--queue`` alone (``None``: ``--state`` is needed)."""

_DONE = {"retry": "retried", "cancel": "cancelled", "resume": "resumed", "delete": "deleted"}


def add(commands: Commands) -> None:
    """Register the job commands."""
    jobs = add_command(
        commands, "jobs", "the jobs of a queue, newest first, with their output", _jobs, json_output=True
    )
    jobs.add_argument("queue")
    jobs.add_argument("--state", choices=STATES, help="only jobs in this state")
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default: %(default)s)")

    job = add_command(commands, "job", "one job, every column (or its archived copy)", _job, json_output=True)
    job.add_argument("id", help="the job's id")

    send = add_command(commands, "send", "send one job (committed at once); prints its id", _send, json_output=True)
    send.add_argument("queue")
    payload = send.add_mutually_exclusive_group()
    payload.add_argument("data", nargs="?", default=None, help="the payload, as JSON (default: null)")
    payload.add_argument(
        "--data-file", metavar="PATH", help="read the payload, as JSON, from PATH ('-': standard input)"
    )
    send.add_argument("--priority", type=int)
    send.add_argument("--start-after", help="seconds, interval text ('5 minutes') or an ISO timestamp")
    send.add_argument("--singleton-key")
    send.add_argument("--retry-limit", type=int)
    send.add_argument("--retry-delay", type=int)
    send.add_argument("--retry-backoff", action="store_true", default=None)
    send.add_argument("--expire-in-seconds", type=int)
    send.add_argument("--dead-letter")
    send.add_argument("--group", metavar="ID[:TIER]", help="pg-boss 12 (schema 46): the job's group, and its tier")
    send.add_argument("--retention-seconds", type=int, help="pg-boss 12: how long the job may stay queued")
    send.add_argument("--delete-after-seconds", type=int, help="pg-boss 12: how long the finished job is kept")
    send.add_argument("--heartbeat-seconds", type=int, help="pg-boss 12: fail the job when its heartbeat is older")

    for name, (does, default_state) in _CHANGES.items():
        change = add_command(
            commands,
            name,
            f"{does}: by id, or every job of --queue in --state; prints how many changed",
            _change,
            json_output=True,
        )
        change.add_argument("ids", nargs="*", metavar="ID", help="job ids")
        change.add_argument("--queue", help="the queue (with ids: only jobs of this queue)")
        state_help = "without ids: the jobs of --queue in this state" + (
            f" (default: {default_state})" if default_state else ""
        )
        change.add_argument("--state", choices=STATES, default=default_state, help=state_help)


def _jobs(args: argparse.Namespace, url: URL) -> int:
    with session_for(url, args.schema) as session:
        driver, operations = repository(session, args.schema)
        if driver.run(session, operations.get_queue(args.queue)) is None:
            raise QueueNotFoundError(f"no queue {args.queue!r} in schema {args.schema!r}", (args.queue,))
        jobs = driver.run(session, operations.newest_jobs(args.queue, args.state, args.limit))
        rows = [_row(job) for job in jobs]
    if args.json:
        print(dumps(rows))
        return 0
    headers = ["id", "state", "priority", "retry", "created_on", "start_after", "data", "output"]
    cells = [
        [
            str(row["id"]),
            str(row["state"]),
            str(row["priority"]),
            f"{row['retry_count']}/{row['retry_limit']}",
            row["created_on"].isoformat(timespec="seconds"),
            row["start_after"].isoformat(timespec="seconds"),
            short(dumps(row["data"])),
            _output(row["output"]),
        ]
        for row in rows
    ]
    print(table(headers, cells) if cells else f"no jobs in queue {args.queue!r}")
    return 0


def _output(output: Any) -> str:
    """A job's output in a cell: a failure's ``name: message``, else its JSON, shortened."""
    if isinstance(output, dict) and "message" in output and "name" in output:
        return short(f"{output['name']}: {output['message']}", 60)
    return "" if output is None else short(dumps(output), 60)


def _row(job: Any) -> dict[str, Any]:
    return {column.key: getattr(job, column.key) for column in job.__table__.columns}


def _job(args: argparse.Namespace, url: URL) -> int:
    with session_for(url, args.schema) as session:
        driver, operations = repository(session, args.schema)
        found = driver.run(session, operations.find_job(args.id))
        if found is None:
            raise JobNotFoundError(f"no job {args.id} in schema {args.schema!r}, nor in its archive")
        row = _row(found)
    row["archived"] = isinstance(found, Archive)
    if args.json:
        print(dumps(row))
        return 0
    width = max(map(len, row))
    for key, value in row.items():
        shown = (
            dumps(value)
            if key in ("data", "output")
            else ("" if value is None else str(getattr(value, "value", value)))
        )
        print(f"{key.ljust(width)}  {shown}")
    if isinstance(row.get("output"), dict) and "stack" in row["output"]:
        print(f"\n{row['output']['stack']}")
    return 0


def _send(args: argparse.Namespace, url: URL) -> int:
    if args.data_file is not None:
        data = json_file(args.data_file, "data")
    else:
        data = None if args.data is None else json_argument(args.data, "data")
    options = {
        "priority": args.priority,
        "start_after": number_or_text(args.start_after),
        "singleton_key": args.singleton_key,
        "retry_limit": args.retry_limit,
        "retry_delay": args.retry_delay,
        "retry_backoff": args.retry_backoff,
        "expire_in_seconds": args.expire_in_seconds,
        "dead_letter": args.dead_letter,
        "group": None if args.group is None else _group(args.group),
        "retention_seconds": args.retention_seconds,
        "delete_after_seconds": args.delete_after_seconds,
        "heartbeat_seconds": args.heartbeat_seconds,
    }
    with session_for(url, args.schema) as session, session.begin():
        job_id = Boss(session, schema=args.schema).send(
            args.queue, data, **{key: value for key, value in options.items() if value is not None}
        )
    if args.json:
        print(dumps({"id": job_id}))
    elif job_id is None:
        print("not sent: the queue's policy, a throttling slot or the id was taken")
    else:
        print(job_id)
    return 0


def _group(text: str) -> dict[str, str]:
    group_id, _, tier = text.partition(":")
    return {"id": group_id, "tier": tier} if tier else {"id": group_id}


def _change(args: argparse.Namespace, url: URL) -> int:
    verb = args.command
    with session_for(url, args.schema) as session, session.begin():
        boss = Boss(session, args.schema)
        targets = _targets(args, session, boss)
        change: Callable[[str, list[uuid.UUID]], int] = getattr(boss, "delete_job" if verb == "delete" else verb)
        changed = sum(change(name, ids) for name, ids in targets.items())
    if args.json:
        print(dumps({"changed": changed}))
    else:
        print(f"{_DONE[verb]} {changed} job(s)")
    return 0


def _targets(args: argparse.Namespace, session: Session, boss: Boss) -> dict[str, list[uuid.UUID]]:
    """The jobs a change is for, by queue: the ids given (all of them must exist), or ``--queue`` in ``--state``."""
    driver, operations = repository(session, args.schema)
    if args.ids:
        by_queue, missing = driver.run(session, operations.locate_jobs(args.ids))
        if args.queue is not None:
            missing += [job_id for name, ids in by_queue.items() if name != args.queue for job_id in ids]
            by_queue = {name: ids for name, ids in by_queue.items() if name == args.queue}
        if missing:
            where = f"queue {args.queue!r}" if args.queue else f"schema {args.schema!r}"
            listed = ", ".join(map(str, missing))
            raise JobNotFoundError(f"no job {listed} in {where}; nothing changed")
        return dict(by_queue)
    if args.queue is None or args.state is None:
        raise InvalidOptionError(f"{args.command} takes job ids, or --queue with --state")
    if boss.get_queue(args.queue) is None:
        raise QueueNotFoundError(f"no queue {args.queue!r} in schema {args.schema!r}", (args.queue,))
    ids = driver.run(session, operations.job_ids_in_state(args.queue, args.state))
    return {args.queue: ids} if ids else {}
