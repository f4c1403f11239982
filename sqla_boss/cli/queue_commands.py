"""``sqla-boss queues``, ``create-queue``, ``update-queue``, ``delete-queue`` and ``purge``. Each commits at once."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import URL, Engine

from sqla_boss.boss import Boss
from sqla_boss.cli.common import Commands, add_command, age, dumps, session_for, table
from sqla_boss.errors import QueueNotFoundError
from sqla_boss.maintenance import Maintenance
from sqla_boss.models import JobState, QueuePolicy
from sqla_boss.operations import QueueSnapshot
from sqla_boss.v46.models import QueuePolicy as QueuePolicy46
from sqla_boss.v46.operations import QueueStats


def add(commands: Commands) -> None:
    """Register the queue commands."""
    add_command(
        commands,
        "queues",
        "queues with their jobs by state and the age of the oldest queued job",
        _queues,
        json_output=True,
    )
    create = add_command(
        commands, "create-queue", "create a queue (nothing changes if it exists)", _create, json_output=True
    )
    create.add_argument("queue")
    _queue_options(create, policy_default=QueuePolicy.standard.value)
    update = add_command(
        commands, "update-queue", "change a queue's settings; those not given stay", _update, json_output=True
    )
    update.add_argument("queue")
    _queue_options(update, policy_default=None)
    delete = add_command(
        commands, "delete-queue", "delete an empty queue, its schedule and subscriptions", _delete, json_output=True
    )
    delete.add_argument("queue")
    purge = add_command(
        commands, "purge", "delete the queued (created and retry) jobs of a queue", _purge, json_output=True
    )
    purge.add_argument("queue")


def _queue_options(sub: argparse.ArgumentParser, *, policy_default: str | None) -> None:
    policies = [policy.value for policy in QueuePolicy46]  # pg-boss 10's four, and pg-boss 12's two more
    sub.add_argument("--policy", choices=policies, default=policy_default, help="the queue's policy")
    sub.add_argument("--retry-limit", type=int, help="retries of a failed job")
    sub.add_argument("--retry-delay", type=int, help="seconds before a retry")
    backoff = sub.add_mutually_exclusive_group()
    backoff.add_argument("--retry-backoff", dest="retry_backoff", action="store_true", default=None)
    backoff.add_argument("--no-retry-backoff", dest="retry_backoff", action="store_false")
    sub.add_argument("--expire-in-seconds", type=int, help="how long a job may stay active")
    sub.add_argument("--retention-minutes", type=int, help="pg-boss 10 (schema 24): how long a queued job is kept")
    sub.add_argument("--dead-letter", help="the queue failed jobs are copied to")
    sub.add_argument("--retention-seconds", type=int, help="pg-boss 12 (schema 46): how long a queued job is kept")
    sub.add_argument("--delete-after-seconds", type=int, help="pg-boss 12: how long a finished job is kept")
    sub.add_argument("--retry-delay-max", type=int, help="pg-boss 12: the longest backoff delay")
    sub.add_argument("--heartbeat-seconds", type=int, help="pg-boss 12: fail a job whose heartbeat is older")
    if policy_default is not None:  # creating
        sub.add_argument("--partition", action="store_true", default=None, help="pg-boss 12: a job table of its own")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = {
        "policy": args.policy,
        "retry_limit": args.retry_limit,
        "retry_delay": args.retry_delay,
        "retry_backoff": args.retry_backoff,
        "expire_in_seconds": args.expire_in_seconds,
        "retention_minutes": args.retention_minutes,
        "dead_letter": args.dead_letter,
        "retention_seconds": args.retention_seconds,
        "delete_after_seconds": args.delete_after_seconds,
        "retry_delay_max": args.retry_delay_max,
        "heartbeat_seconds": args.heartbeat_seconds,
        "partition": getattr(args, "partition", None),
    }
    return {key: value for key, value in settings.items() if value is not None}


def _queues(args: argparse.Namespace, url: URL) -> int:
    with session_for(url, args.schema) as session:
        boss = Boss(session, args.schema)
        if boss.version() == 46:
            stats = [boss.get_queue_stats(queue.name) for queue in boss.get_queues()]
            snapshots = [_snapshot(queue) for queue in stats]
        else:
            engine = session.get_bind()
            assert isinstance(engine, Engine)
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
        print(dumps(rows))
        return 0
    headers = ["queue", *(state.value for state in JobState), "oldest queued"]
    cells = [
        [row["name"], *(str(row[state.value]) for state in JobState), age(row["oldest_queued_seconds"])] for row in rows
    ]
    print(table(headers, cells) if cells else "no queues")
    return 0


def _snapshot(stats: QueueStats) -> QueueSnapshot:
    """A version-46 queue's counts in the columns of the listing."""
    return QueueSnapshot(
        stats.name,
        stats.created,
        stats.retry,
        stats.active,
        stats.completed,
        stats.cancelled,
        stats.failed,
        stats.ready_oldest_seconds,
    )


def _create(args: argparse.Namespace, url: URL) -> int:
    with session_for(url, args.schema) as session, session.begin():
        boss = Boss(session, args.schema)
        existed = boss.get_queue(args.queue) is not None
        boss.create_queue(args.queue, **_settings(args))
    if args.json:
        print(dumps({"queue": args.queue, "created": not existed}))
    elif existed:
        print(f"queue {args.queue!r} exists already; its settings stay as they are (see update-queue)")
    else:
        print(f"created queue {args.queue!r}")
    return 0


def _update(args: argparse.Namespace, url: URL) -> int:
    with session_for(url, args.schema) as session, session.begin():
        Boss(session, args.schema).update_queue(args.queue, **_settings(args))
    print(dumps({"queue": args.queue, "updated": True}) if args.json else f"updated queue {args.queue!r}")
    return 0


def _delete(args: argparse.Namespace, url: URL) -> int:
    with session_for(url, args.schema) as session, session.begin():
        if not Boss(session, args.schema).delete_queue(args.queue):
            raise QueueNotFoundError(f"no queue {args.queue!r} in schema {args.schema!r}", (args.queue,))
    print(dumps({"queue": args.queue, "deleted": True}) if args.json else f"deleted queue {args.queue!r}")
    return 0


def _purge(args: argparse.Namespace, url: URL) -> int:
    with session_for(url, args.schema) as session, session.begin():
        boss = Boss(session, args.schema)
        if boss.get_queue(args.queue) is None:
            raise QueueNotFoundError(f"no queue {args.queue!r} in schema {args.schema!r}", (args.queue,))
        purged = boss.purge_queue(args.queue)
    if args.json:
        print(dumps({"queue": args.queue, "purged": purged}))
    else:
        print(f"purged {purged} queued job(s) of queue {args.queue!r}")
    return 0
