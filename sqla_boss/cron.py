"""pg-boss's cron (PGBOSS10.md §9.3), as pure functions: which schedules are due, and the jobs that say so.

A cron tick, run by whichever instance claims ``version.cron_on``, inserts one job per due schedule into the
internal queue ``__pgboss__send-it``, keyed by the schedule's queue name in a 60-second singleton slot, so
however many Python and Node instances evaluate the same minute, one job per schedule and minute exists.
Every instance's send-it worker then inserts each job's payload into its target queue with pg-boss's
``insert`` semantics.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from croniter import croniter

from sqla_boss.errors import InvalidCronError, InvalidTimezoneError
from sqla_boss.models import Schedule

SEND_IT_QUEUE = "__pgboss__send-it"
"""pg-boss's internal queue of schedules to fire."""
SEND_IT_SLOT_SECONDS = 60
"""A schedule fires at most once per this singleton slot: one minute."""
SEND_IT_BATCH_SIZE = 50
"""How many send-it jobs a send-it worker fetches at once, as pg-boss's."""
DUE_WITHIN = dt.timedelta(seconds=60)
"""A schedule is due while its latest matching time is less than this far in the past; no catch-up."""

# pg-boss's insert() honours these fields of the send-it payload (§4.6); it ignores every other one.
_INSERT_FIELDS = {
    "id": "id",
    "name": "name",
    "data": "data",
    "priority": "priority",
    "startAfter": "start_after",
    "singletonKey": "singleton_key",
    "singletonSeconds": "singleton_seconds",
    "expireInSeconds": "expire_in_seconds",
    "keepUntil": "keep_until",
    "retryLimit": "retry_limit",
    "retryDelay": "retry_delay",
    "retryBackoff": "retry_backoff",
    "deadLetter": "dead_letter",
}


def croniter_expression(cron: str) -> str:
    """``cron`` for croniter: pg-boss's cron-parser puts the seconds field first in a 6-field expression,
    croniter puts it last."""
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise InvalidCronError(f"cron expression {cron!r} must have 5 fields (or 6, with seconds)")
    return " ".join([*fields[1:], fields[0]]) if len(fields) == 6 else cron


_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
"""The fields of a 5-field expression and their ranges; a 6-field one has seconds (0-59) first."""


def check_steps(cron: str) -> None:
    """Refuse a step that cannot repeat within its field (``*/61`` in the minutes, ``*/24`` in the hours).

    pg-boss's cron-parser, like croniter, accepts such a step and fires once per larger unit (``*/61 * * * *``
    is hourly), which is never what was meant. Ranges and values are left to croniter, which refuses them as
    cron-parser does.

    Raises:
        InvalidCronError: naming the field and its range.
    """
    fields = cron.split()
    named = (("second", 0, 59), *_FIELDS) if len(fields) == 6 else _FIELDS
    for text, (field, low, high) in zip(fields, named, strict=False):
        for part in text.split(","):
            _, slash, step = part.partition("/")
            if slash and step.isdigit() and int(step) > high - low:
                raise InvalidCronError(
                    f"invalid cron expression {cron!r}: a step of {step} in the {field} field ({low}-{high}) never "
                    f"repeats; cron-parser would fire it once per {_larger(field)}"
                )


def _larger(field: str) -> str:
    return {"second": "minute", "minute": "hour", "hour": "day", "day of month": "month", "month": "year"}.get(
        field, "week"
    )


def previous_match(cron: str, timezone: str, now: dt.datetime) -> dt.datetime:
    """The latest time before ``now`` (aware) that ``cron`` matches in ``timezone``.

    Raises:
        InvalidTimezoneError: ``timezone`` is not an IANA zone.
        InvalidCronError: croniter cannot read ``cron``.
    """
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidTimezoneError(f"unknown time zone {timezone!r}") from None
    try:
        previous = croniter(croniter_expression(cron), now.astimezone(zone)).get_prev(dt.datetime)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCronError(f"invalid cron expression {cron!r}: {exc}") from None
    return previous


@dataclass(frozen=True)
class Unreadable:
    """A schedule that could not be evaluated, and why; the others still fire (trap 14)."""

    name: str
    error: Exception


def due(schedules: Iterable[Schedule], now: dt.datetime) -> tuple[list[Schedule], list[Unreadable]]:
    """The schedules whose latest match lies less than 60 s before ``now`` (the database's clock, aware),
    and the ones with a bad time zone or expression."""
    found: list[Schedule] = []
    unreadable: list[Unreadable] = []
    for schedule in schedules:
        try:
            previous = previous_match(schedule.cron, schedule.timezone or "UTC", now)
        except (InvalidTimezoneError, InvalidCronError) as error:
            unreadable.append(Unreadable(schedule.name, error))
            continue
        if now - previous < DUE_WITHIN:
            found.append(schedule)
    return found, unreadable


def send_it_job(schedule: Schedule) -> dict[str, Any]:
    """The send-it job for one due schedule, for :meth:`Boss.insert`: pg-boss's payload ``{name, data,
    ...options}`` (the options as stored, so they override ``name`` and ``data`` as in pg-boss), keyed by the
    queue name in a one-minute slot."""
    options = schedule.options if isinstance(schedule.options, Mapping) else {}
    return {
        "name": SEND_IT_QUEUE,
        "data": {"name": schedule.name, "data": schedule.data, **options},
        "singleton_key": schedule.name,
        "singleton_seconds": SEND_IT_SLOT_SECONDS,
    }


def target_job(payload: Any) -> dict[str, Any]:
    """What a send-it job inserts: its payload's fields that pg-boss's ``insert`` honours, in
    :meth:`Boss.insert`'s terms; the others (``expireInMinutes``, ``tz``, ...) are ignored, as pg-boss does."""
    if not isinstance(payload, Mapping):
        raise InvalidCronError(f"a send-it job's data must be an object, not {payload!r}")
    return {field: payload[key] for key, field in _INSERT_FIELDS.items() if payload.get(key) is not None}


__all__ = [
    "DUE_WITHIN",
    "SEND_IT_BATCH_SIZE",
    "SEND_IT_QUEUE",
    "SEND_IT_SLOT_SECONDS",
    "Unreadable",
    "check_steps",
    "croniter_expression",
    "due",
    "previous_match",
    "send_it_job",
    "target_job",
]
