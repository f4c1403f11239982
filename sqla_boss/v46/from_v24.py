"""The upgrade pg-boss lacks: a version-24 schema (pg-boss 10) to version 46 (pg-boss 12.38) in place, with
every queue, job, finished job, schedule and subscription.

pg-boss 12 refuses a version-24 schema ("the oldest supported starting version is 25") and no release
migrates 24 to 25. This upgrade renames the old schema aside, installs version 46 under the same name, copies
the rows over with ``INSERT ... SELECT`` (ids kept) and drops the old schema, all in the caller's transaction
under pg-boss's advisory lock of the schema. Every pg-boss 10 instance (Node or sqla_boss) on the schema must
be stopped first: they would find version 46 under their feet.

What moves, and how (``docs/schema.md`` says the same for users):

* queues: their settings, completed where version 24 left them empty (retry limit 2, delay 0, no backoff,
  expiry 900 s), ``retention_minutes`` as ``retention_seconds``, finished jobs kept 7 days
  (``deletion_seconds`` 604,800, pg-boss 12's default); all in the shared table ``job_common``, as pg-boss
  12 makes queues unless told ``partition: true``; a dead letter naming its own queue (which 46 forbids)
  is cleared;
* jobs, in every state, keeping id, data, output, retry count and limits, singleton key and slot, and
  timestamps; ``expire_in`` becomes ``expire_seconds`` (whole seconds, 1 to 86,400); ``policy`` is the
  queue's (version 24 let raw inserts leave it empty, escaping the policy's index). Active jobs stay active:
  their worker is gone, so pg-boss 12's expiry fails or retries them ``expire_seconds`` after they started.
  A job that the queue's policy index refuses (a duplicate that version 24's empty ``policy`` let in) is not
  carried: the oldest of the duplicates is, and the others are counted;
* archived jobs in a final state (completed, cancelled, failed) come back into ``job`` as finished jobs,
  ``completed_on`` taken from the archive time where it was empty; version 46's maintenance deletes them
  ``deletion_seconds`` after ``completed_on``. Archived jobs still queued (pg-boss 10 archived those whose
  retention ran out) and those of deleted queues are not carried, and are counted: they would run again;
* schedules, as cron schedules with the key ``''`` and the time zone ``UTC`` where none was set;
  subscriptions as they are.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, text

from sqla_boss.errors import SchemaVersionError
from sqla_boss.identifiers import quote_identifier, validate_schema_name
from sqla_boss.schema import SchemaState, inspect_schema, lock_schema
from sqla_boss.v24 import VERSION as FROM_VERSION
from sqla_boss.v46 import ddl

DELETION_SECONDS = 604_800
"""How long the carried queues keep finished jobs: pg-boss 12's default, 7 days."""

FINAL_STATES = ("completed", "cancelled", "failed")


@dataclass(frozen=True)
class Carried:
    """What :func:`upgrade` moved, and what it left behind (each left-behind count says why)."""

    queues: int
    jobs: int
    archived: int
    schedules: int
    subscriptions: int
    duplicate_jobs: int
    """Jobs of version 24 that the queue's policy refuses in version 46 (duplicates of a carried job)."""
    archived_left: int
    """Archived jobs not carried: still queued, of a queue that no longer exists, or carried from ``job``."""

    def describe(self) -> str:
        """One line for people: what moved, and what did not."""
        left = []
        if self.duplicate_jobs:
            left.append(f"{self.duplicate_jobs} duplicate job(s) the queue's policy refuses")
        if self.archived_left:
            left.append(f"{self.archived_left} archived job(s) still queued, of deleted queues, or already carried")
        moved = (
            f"carried {self.queues} queue(s), {self.jobs} job(s), {self.archived} archived job(s), "
            f"{self.schedules} schedule(s) and {self.subscriptions} subscription(s)"
        )
        return moved + (f"; left behind {' and '.join(left)}" if left else "")


def upgrade(connection: Connection, schema: str) -> Carried:
    """Upgrade ``schema`` from version 24 to 46 in place, with its data; returns what it carried.

    Runs in the caller's transaction and does not commit: if anything fails, the transaction's rollback leaves
    version 24 as it was. Holds pg-boss's advisory lock on the schema (the same key for both versions) until
    the transaction ends, and ``ACCESS EXCLUSIVE`` locks on every table of version 24, taken before anything is
    read (waiting up to the 30 s ``lock_timeout`` for a transaction still using them).

    Raises:
        InvalidSchemaNameError: before any SQL runs.
        SchemaVersionError: the schema does not hold version 24.
    """
    validate_schema_name(schema)
    lock_schema(connection, schema)
    state, version = inspect_schema(connection, schema)
    if state is not SchemaState.installed or version != FROM_VERSION:
        raise SchemaVersionError(f"schema {schema!r} does not hold pg-boss schema version {FROM_VERSION}")
    old_name = f"sqla_boss_v24_{secrets.token_hex(6)}"
    old, new = quote_identifier(old_name), quote_identifier(schema)
    # Before anything is read, so a pg-boss 10 transaction still open is waited for and its rows are copied,
    # instead of being dropped with the old schema after its producer was told they were written. The job
    # table first: a send holds it and, at commit, checks its deferred foreign key against queue.
    order = ("job", "archive", "queue", "schedule", "subscription", "version")
    tables = ", ".join(f"{new}.{table}" for table in order)
    connection.execute(text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"))
    connection.execute(text(f"ALTER SCHEMA {new} RENAME TO {old}"))
    ddl.create(connection, schema)

    def run(sql: str) -> int:
        return connection.execute(text(sql)).rowcount

    def count(sql: str) -> int:
        return int(connection.execute(text(sql)).scalar_one())

    queues = run(
        f"""
        INSERT INTO {new}.queue (name, policy, retry_limit, retry_delay, retry_backoff, expire_seconds,
                                 retention_seconds, deletion_seconds, partition, table_name, created_on, updated_on)
        SELECT name, coalesce(policy, 'standard'), coalesce(retry_limit, 2), coalesce(retry_delay, 0),
               coalesce(retry_backoff, false), coalesce(expire_seconds, 900),
               coalesce(least(retention_minutes::bigint * 60, 2147483647)::int, 1209600), {DELETION_SECONDS},
               false, 'job_common', created_on, updated_on
        FROM {old}.queue
        """
    )
    run(
        f"""
        UPDATE {new}.queue q SET dead_letter = o.dead_letter
        FROM {old}.queue o WHERE o.name = q.name AND o.dead_letter IS NOT NULL AND o.dead_letter <> o.name
        """
    )
    columns = (
        "id, name, priority, data, state, retry_limit, retry_count, retry_delay, retry_backoff, expire_seconds, "
        "deletion_seconds, singleton_key, singleton_on, start_after, created_on, started_on, completed_on, "
        "keep_until, output, dead_letter, policy"
    )

    def carried(source: str, completed_on: str) -> str:
        return (
            f"SELECT j.id, j.name, j.priority, j.data, j.state::text::{new}.job_state, j.retry_limit, j.retry_count, "
            "j.retry_delay, j.retry_backoff, "
            "least(greatest(ceil(extract(epoch FROM j.expire_in)), 1), 86400)::int, q.deletion_seconds, "
            f"j.singleton_key, j.singleton_on, j.start_after, j.created_on, j.started_on, {completed_on}, "
            f"j.keep_until, j.output, j.dead_letter, q.policy FROM {source} j JOIN {new}.queue q ON q.name = j.name"
        )

    jobs = run(
        f"INSERT INTO {new}.job ({columns}) {carried(f'{old}.job', 'j.completed_on')} "
        "ORDER BY j.created_on, j.id ON CONFLICT DO NOTHING"
    )
    duplicate_jobs = count(f"SELECT count(*) FROM {old}.job") - jobs
    final = ", ".join(f"'{state}'" for state in FINAL_STATES)
    archived = run(
        f"INSERT INTO {new}.job ({columns}) {carried(f'{old}.archive', 'coalesce(j.completed_on, j.archived_on)')} "
        f"WHERE j.state::text IN ({final}) ORDER BY j.created_on, j.id ON CONFLICT DO NOTHING"
    )
    archived_left = count(f"SELECT count(*) FROM {old}.archive") - archived
    schedules = run(
        f"""
        INSERT INTO {new}.schedule (name, key, kind, cron, timezone, data, options, created_on, updated_on)
        SELECT name, '', 'cron', cron, coalesce(timezone, 'UTC'), data, options, created_on, updated_on
        FROM {old}.schedule
        """
    )
    subscriptions = run(
        f"INSERT INTO {new}.subscription (event, name, created_on, updated_on) "
        f"SELECT event, name, created_on, updated_on FROM {old}.subscription"
    )
    connection.execute(text(f"DROP SCHEMA {old} CASCADE"))
    return Carried(queues, jobs, archived, schedules, subscriptions, duplicate_jobs, archived_left)


__all__ = ["DELETION_SECONDS", "Carried", "upgrade"]
