"""The NOTIFY channels that wake workers when a job is sent (no trigger: the schema stays pg-boss's own).

``send``, ``insert`` and ``publish`` call ``pg_notify`` for each queue they inserted into, in the caller's
transaction, so PostgreSQL delivers the notification when that transaction commits, and never if it rolls
back. A worker LISTENs on the channels of its queues and fetches at once instead of waiting out its polling
interval. Jobs that Node pg-boss sends carry no notification; workers still find them by polling.

A channel is ``sqla_boss.<schema>.<queue>``. PostgreSQL limits channel names to 63 bytes, so a longer one is
replaced by ``sqla_boss.`` and the MD5 of ``<schema>.<queue>``; :func:`channel` here and
:func:`channel_expression` in SQL compute the same name.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import ColumnElement, Text, case, func, literal_column

PREFIX = "sqla_boss."
MAX_CHANNEL_BYTES = 63
"""PostgreSQL's limit on an identifier, and so on a channel name (NAMEDATALEN - 1)."""


def channel(schema: str, queue: str) -> str:
    """The channel a job sent to ``queue`` of ``schema`` is announced on."""
    name = f"{PREFIX}{schema}.{queue}"
    if len(name.encode()) <= MAX_CHANNEL_BYTES:
        return name
    return PREFIX + hashlib.md5(f"{schema}.{queue}".encode()).hexdigest()


def channel_expression(schema: ColumnElement[str], queue: ColumnElement[str]) -> ColumnElement[str]:
    """:func:`channel` as a SQL expression."""
    prefix = literal_column(f"'{PREFIX}'", Text)
    qualified = schema.concat(literal_column("'.'", Text)).concat(queue)
    full = prefix.concat(qualified)
    return case(
        (func.octet_length(full) <= literal_column(str(MAX_CHANNEL_BYTES)), full),
        else_=prefix.concat(func.md5(qualified)),
    )


__all__ = ["MAX_CHANNEL_BYTES", "PREFIX", "channel", "channel_expression"]
