"""Names and ids: queue names, event names and job ids, checked as pg-boss checks them and for what
PostgreSQL can hold. (Schema names are SQL identifiers: :mod:`sqla_boss.identifiers` checks and quotes them.)"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Mapping
from typing import Any

from sqla_boss.errors import InvalidOptionError, InvalidQueueNameError
from sqla_boss.options.values import is_utf8, text, too_long

_QUEUE_NAME_CHAR = re.compile(r"[A-Za-z0-9_-]")


def queue_name(name: object, *, what: str = "queue name") -> str:
    """Check a queue name as pg-boss does, and refuse what PostgreSQL cannot hold.

    pg-boss only asks for one character of ``[A-Za-z0-9_-]`` somewhere in the name. sqla_boss also refuses
    NUL (PostgreSQL text cannot hold it), lone surrogates, backslashes (pg-boss's ``text::bytea`` cast reads
    them as escapes, so the partition name would not be the plain digest of the name, or creation would
    fail) and names over :data:`~sqla_boss.options.values.MAX_NAME_BYTES`.

    Raises:
        InvalidQueueNameError: with the reason.
    """
    if isinstance(name, str) and what == "queue name":
        return _valid_queue_name(name)
    return _queue_name(name, what=what)


@functools.lru_cache(maxsize=4096)
def _valid_queue_name(name: str) -> str:
    """:func:`_queue_name` remembered for valid names (an insert checks the same few names thousands of
    times); a refused name raises, and exceptions are not cached."""
    return _queue_name(name, what="queue name")


def _queue_name(name: object, *, what: str) -> str:
    if not isinstance(name, str):
        raise InvalidQueueNameError(f"{what} must be a string, not {type(name).__name__}")
    if _QUEUE_NAME_CHAR.search(name) is None:
        raise InvalidQueueNameError(f"{what} {name!r} needs at least one letter, digit, '_' or '-'")
    if "\x00" in name:
        raise InvalidQueueNameError(f"{what} {name!r} contains a NUL character")
    if not is_utf8(name):
        raise InvalidQueueNameError(f"{what} {name!r} contains a lone surrogate, which is not valid UTF-8")
    if "\\" in name:
        raise InvalidQueueNameError(f"{what} {name!r} contains a backslash, which pg-boss's partition naming misreads")
    if too_long(name):
        raise InvalidQueueNameError(f"{what} {name[:40]!r}... is {len(name.encode())} bytes; {too_long(name)}")
    return name


def optional_queue_name(options: Mapping[str, Any], key: str) -> str | None:
    """``options[key]`` as a queue name (a dead letter queue), or ``None`` when absent or ``None``."""
    value = options.get(key)
    return None if value is None else queue_name(value, what=key)


def event_name(event: object) -> str:
    """A pub/sub event name: a non-empty string PostgreSQL can hold and index."""
    if not isinstance(event, str) or not event:
        raise InvalidOptionError(f"an event name must be a non-empty string, not {event!r}")
    return text("event name", event)


def job_ids(ids: object, *, operation: str) -> list[uuid.UUID]:
    """One id or many, as ``uuid.UUID``; pg-boss refuses an empty list, and so do we."""
    items: list[object] = list(ids) if isinstance(ids, (list, tuple, set, frozenset)) else [ids]
    if not items:
        raise InvalidOptionError(f"{operation}() requires an id")
    return [job_id(item, operation=operation) for item in items]


def job_id(value: object, *, operation: str = "job") -> uuid.UUID:
    """A job id: a ``UUID``, or its string."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            raise InvalidOptionError(f"{operation}(): {value!r} is not a UUID") from None
    raise InvalidOptionError(f"{operation}(): a job id must be a UUID or its string, not {type(value).__name__}")


__all__ = ["event_name", "job_id", "job_ids", "optional_queue_name", "queue_name"]
