"""pg-boss 12's cron pass and send-it worker on schema version 46 (PGBOSS12.md §9.2-9.4): the statements, built
once as SQLAlchemy Core, and the evaluation of schedules, pure functions without I/O.

One cron pass, run by whichever instance wins the claim on ``version.cron_on`` (§8.1), files one job in
``__pgboss__send-it`` per due (schedule, slot): a slot is the occurrence's UTC minute, and the row carries it both
in ``data.slot`` and as ``singleton_on``, with ``singleton_key`` = the queue name (``_`` escaped) + ``__`` + the
schedule key. pg-boss's index ``i4`` (name, singleton_on, key) then lets exactly one such row exist, however many
Python and Node instances file it. A send-it worker, on any instance, sends each row's ``{name, data, options}``
with the normal send path and records the job on the schedule (``last_job_id``).
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dateutil import rrule
from sqlalchemy import JSON, Text, bindparam, cast, column, func, null, select, union_all, update
from sqlalchemy.dialects.postgresql import TIMESTAMP, UUID, insert

from sqla_boss import cron as cron_rules
from sqla_boss.errors import InvalidCronError, InvalidTimezoneError
from sqla_boss.operations import CronTick
from sqla_boss.options import v46 as options46
from sqla_boss.v46.statements import (
    JOB_NOW,
    const,
    incoming_rows,
    job,
    job_values,
    notify_if_due,
    queue,
    schedule_table,
)
from sqla_boss.v46.supervision import claim_due, version_table

SEND_IT_QUEUE = cron_rules.SEND_IT_QUEUE
"""pg-boss's internal queue of due schedules, on version 46 as on 24."""
WINDOW = dt.timedelta(seconds=60)
"""A pass files the occurrences of the last minute: the window (database time - 60 s, database time]."""
SLOT_FORMAT = "%Y-%m-%d %H:%M:%S"
"""A slot as pg-boss writes it in ``data.slot`` and casts it to ``singleton_on``: the UTC minute, no zone."""

_UTC = dt.timezone.utc
_ONE_MS = dt.timedelta(milliseconds=1)

# ------------------------------------------------------------------------------------ statements (§9.3)

_prior = version_table.alias("prior")
CLAIM_CRON = (
    update(version_table)
    .where(version_table.c.version == _prior.c.version, claim_due(version_table.c.cron_on))
    .values(cron_on=JOB_NOW)
    .returning(_prior.c.cron_on, JOB_NOW)
)
"""The §8.1 claim on ``version.cron_on`` for ``:interval_seconds``; a row (the prior ``cron_on``, database time)
when this instance won. ``prior`` is the row as this statement's snapshot saw it: had another claim committed
since, the rule, checked again on the row updated, would have failed."""

SCHEDULES = select(
    schedule_table.c.name,
    schedule_table.c.key,
    schedule_table.c.kind,
    schedule_table.c.cron,
    schedule_table.c.timezone,
    schedule_table.c.data,
    schedule_table.c.options,
    schedule_table.c.created_on,
).order_by(schedule_table.c.name, schedule_table.c.key)
"""Every schedule, as rows (a cron pass runs on a connection: no ORM objects)."""


def _insert_send_it() -> Any:
    incoming, view = incoming_rows("i", (("slot", Text()),))
    i = view.c
    q = queue.alias("q")
    values = job_values(i, q)
    values["singleton_on"] = cast(i.slot, TIMESTAMP())  # given, not computed from now (§9.3)
    rows = select(*values.values()).join_from(i.name.table, q, q.c.name == i.name)
    inserted = (
        insert(job)
        .from_select(list(values), rows)
        .on_conflict_do_nothing()
        .returning(job.c.id, job.c.name, job.c.start_after)
        .cte("inserted")
    )
    notified = notify_if_due(inserted, inserted.c.name)
    no_id = cast(null(), UUID(as_uuid=True))
    return union_all(
        select(const("'id'").label("kind"), inserted.c.id.label("id")),
        select(const("'notified'"), no_id).select_from(notified),
    ).add_cte(incoming)


INSERT_SEND_IT = _insert_send_it()
"""File the send-it jobs of ``:jobs`` (JSON records ``{name, data, singleton_key, slot}``), every other column
from the send-it queue's settings, as a send with no options; a (schedule, slot) already filed, in any state but
cancelled, is skipped (index ``i4``). Rows (kind, id): ``id`` per job filed."""


def _relabel() -> Any:
    return (
        update(schedule_table)
        .where(
            schedule_table.c.name == bindparam("queue_name", type_=Text),
            schedule_table.c.key == bindparam("schedule_key", type_=Text),
        )
        .values(kind=bindparam("kind", type_=Text))
    )


RELABEL = _relabel()
"""Set the ``kind`` of the schedule (``:queue_name``, ``:schedule_key``) to ``:kind``; ``updated_on`` stays."""


def _set_last_jobs() -> Any:
    latest = (
        func.json_to_recordset(cast(bindparam("last_jobs", type_=Text), JSON))
        .table_valued(column("name", Text), column("key", Text), column("id", UUID(as_uuid=True)))
        .render_derived(name="l", with_types=True)
    )
    return (
        update(schedule_table)
        .where(schedule_table.c.name == latest.c.name, schedule_table.c.key == latest.c.key)
        .values(last_job_id=latest.c.id)
    )


SET_LAST_JOBS = _set_last_jobs()
"""Set ``last_job_id`` of each schedule of ``:last_jobs`` (JSON records ``{name, key, id}``) (§9.4)."""

# ------------------------------------------------------------------------------------ evaluation (§9.3)


@dataclass(frozen=True)
class Due:
    """One (schedule, slot) to file: the schedule's queue ``name`` and ``key``, its ``data`` and stored
    ``options``, and the ``slot`` (the occurrence's UTC minute, :data:`SLOT_FORMAT`)."""

    name: str
    key: str
    data: Any
    options: Any
    slot: str

    @property
    def singleton_key(self) -> str:
        """pg-boss's key of the send-it job: the name with each ``_`` escaped, ``__``, the key (§9.3)."""
        return singleton_key(self.name, self.key)

    def record(self) -> dict[str, Any]:
        """The send-it job, as :data:`INSERT_SEND_IT` reads it."""
        return {
            "name": SEND_IT_QUEUE,
            "data": {"name": self.name, "key": self.key, "data": self.data, "options": self.options, "slot": self.slot},
            "singleton_key": self.singleton_key,
            "slot": self.slot,
        }

    def __str__(self) -> str:
        return f"{self.name}{f'[{self.key}]' if self.key else ''}@{self.slot}"


@dataclass(frozen=True)
class InvalidSchedule(cron_rules.Unreadable):
    """A schedule the pass could not evaluate, and why; the others still fire (§9.3)."""

    key: str
    kind: str
    expression: str
    timezone: str

    @property
    def message(self) -> str:
        return f"schedule {self.name}{f' (key {self.key})' if self.key else ''} cannot be evaluated: {self.error}"

    def data(self) -> dict[str, Any]:
        """The ``invalid_schedule`` warning's data."""
        return {
            "name": self.name,
            "key": self.key,
            "kind": self.kind,
            "cron": self.expression,
            "timezone": self.timezone,
            "error": str(self.error),
        }


@dataclass(frozen=True)
class CronPass(CronTick):
    """What one cron pass did (§9.3): whether this instance won the claim (``won``), the schedules due
    (``due``, one text per (schedule, slot), and ``slots``, the same as :class:`Due`), how many send-it jobs
    it filed (``filed``: fewer when another instance or pass filed a slot already), the schedules it could not
    evaluate (``unreadable``), those whose ``kind`` it relabelled, the database time of the pass and the
    prior ``cron_on``."""

    slots: list[Due] = field(default_factory=list)
    filed: int = 0
    relabelled: list[tuple[str, str, str]] = field(default_factory=list)
    now: dt.datetime | None = None
    prior_cron_on: dt.datetime | None = None


@dataclass(frozen=True)
class Evaluation:
    """The schedules' due slots at one database time, those that could not be evaluated, and the (name, key,
    kind) of those to relabel."""

    due: list[Due]
    invalid: list[InvalidSchedule]
    relabel: list[tuple[str, str, str]]


def singleton_key(name: str, key: str) -> str:
    r"""pg-boss's singleton key of a schedule's send-it jobs: ``my_q``, ``k1`` → ``my\_q__k1`` (§9.3)."""
    return name.replace("_", "\\_") + "__" + key


def slot_of(occurrence: dt.datetime) -> str:
    """The slot of an occurrence (aware): its UTC minute, ``YYYY-MM-DD HH:MM:SS``."""
    return occurrence.astimezone(_UTC).replace(second=0, microsecond=0).strftime(SLOT_FORMAT)


def zone_of(timezone: str | None) -> zoneinfo.ZoneInfo:
    """The schedule's zone (``None`` or empty: UTC).

    Raises:
        InvalidTimezoneError: not an IANA zone.
    """
    try:
        return zoneinfo.ZoneInfo(timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidTimezoneError(f"Unknown or unsupported time zone: {timezone!r}") from None


# cron kind: cron-parser's prev() from a millisecond after the time, in the row's zone.


def _cron_latest(expression: str, zone: zoneinfo.ZoneInfo, until: dt.datetime) -> dt.datetime:
    return cron_rules.previous_match(expression, zone.key, until + _ONE_MS)


def _cron_readable(expression: str) -> bool:
    try:
        cron_rules.previous_match(expression, "UTC", dt.datetime(2000, 1, 1, tzinfo=_UTC))
    except InvalidCronError:
        return False
    return True


# rrule kind. dateutil walks a rule from its DTSTART (1970 when the rule has none, as pg-boss anchors it): a
# minutely rule would take minutes to reach today. A rule without COUNT whose period has a fixed length in wall
# time (second to week) is the same rule from any later DTSTART a whole number of periods on, since the defaults
# it takes from DTSTART (second, minute, hour, weekday) stay; so its DTSTART is moved up to just before the time
# asked about, by a margin wider than any zone's backward jump (none in a zone that never changes its offset):
# a wall time that does not exist (spring forward) is read with the offset before, so it can fall after a later
# wall time.

_FIXED_PERIODS = {
    rrule.SECONDLY: dt.timedelta(seconds=1),
    rrule.MINUTELY: dt.timedelta(minutes=1),
    rrule.HOURLY: dt.timedelta(hours=1),
    rrule.DAILY: dt.timedelta(days=1),
    rrule.WEEKLY: dt.timedelta(weeks=1),
}
_MARGIN = dt.timedelta(hours=3)


def _margin(zone: dt.tzinfo, when: dt.datetime) -> dt.timedelta:
    """How far before ``when`` (naive, wall time) a moved DTSTART must lie: :data:`_MARGIN` in a zone whose
    offset changes around then (summer time, a new base offset), nothing in a fixed one such as UTC."""
    probes = [dt.datetime(when.year + year, month, 1) for year in (0, 1) for month in (1, 4, 7, 10)]
    return _MARGIN if len({zone.utcoffset(probe) for probe in probes}) > 1 else dt.timedelta(0)


def _aware(value: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def _moved(rule: Any, zone: zoneinfo.ZoneInfo, not_before: dt.datetime) -> Any:
    """``rule`` with a floating DTSTART (and UNTIL) put in ``zone``, and its DTSTART moved up to just before
    ``not_before`` when that keeps its occurrences from there on."""
    start: dt.datetime = rule._dtstart
    if start.tzinfo is None:
        until = rule._until
        rule = rule.replace(dtstart=start.replace(tzinfo=zone), until=None if until is None else _aware(until, zone))
        start = rule._dtstart
    period = _FIXED_PERIODS.get(rule._freq)
    if period is None or rule._count is not None:
        return rule
    step = period * rule._interval
    start_zone = start.tzinfo or zone
    wall = start.replace(tzinfo=None)
    target = not_before.astimezone(start_zone).replace(tzinfo=None)
    target -= _margin(start_zone, target)
    if target <= wall + step:
        return rule
    return rule.replace(dtstart=(wall + step * ((target - wall) // step)).replace(tzinfo=start_zone))


def rule_set(expression: str, zone: zoneinfo.ZoneInfo, not_before: dt.datetime | None = None) -> rrule.rruleset:
    """An RFC 5545 schedule as a ``dateutil`` rule set, anchored at 1970-01-01 00:00 in ``zone`` without a
    DTSTART; exact from ``not_before`` on (earlier occurrences may be left out).

    Raises:
        InvalidCronError: ``dateutil`` cannot read it.
    """
    anchor = dt.datetime(1970, 1, 1, tzinfo=zone)
    try:
        parsed: Any = rrule.rrulestr(expression, forceset=True, dtstart=anchor)
        result = rrule.rruleset()
        moved_to = anchor if not_before is None else not_before
        for rule in parsed._rrule:
            result.rrule(_moved(rule, zone, moved_to))
        for rule in parsed._exrule:
            result.exrule(_moved(rule, zone, moved_to))
        for when in parsed._rdate:
            result.rdate(_aware(when, zone))
        for when in parsed._exdate:
            result.exdate(_aware(when, zone))
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidCronError(f"schedule rule {expression!r} is not an RFC 5545 rule: {exc}") from None
    return result


def _rrule_between(expression: str, zone: zoneinfo.ZoneInfo, after: dt.datetime, until: dt.datetime) -> list[Any]:
    found: list[dt.datetime] = rule_set(expression, zone, after).between(after, until, inc=True)
    return [when for when in found if after < when <= until]


def _rrule_latest(expression: str, zone: zoneinfo.ZoneInfo, after: dt.datetime, until: dt.datetime) -> Any:
    """The latest occurrence in (after, until], looking back from ``until`` an hour, then 32 times further,
    so that a long gap costs little with a dense rule."""
    span = dt.timedelta(hours=1)
    while True:
        start = max(after, until - span)
        found: dt.datetime | None = rule_set(expression, zone, start).before(until, inc=True)
        if found is not None or start <= after:
            return found if found is not None and found > after else None
        span *= 32


def _rrule_readable(expression: str) -> bool:
    try:
        rule_set(expression, zoneinfo.ZoneInfo("UTC"))
    except InvalidCronError:
        return False
    return True


def due_times(
    kind: str, expression: str, zone: zoneinfo.ZoneInfo, now: dt.datetime, gap_after: dt.datetime | None
) -> list[dt.datetime]:
    """The occurrences a pass at ``now`` files for one schedule: cron, the latest at or before ``now`` if it lies
    in the window; rrule, every one in the window; and with ``gap_after`` (``missed = 'once'``), the latest in
    (``gap_after``, window start] too.

    Raises:
        InvalidCronError: the expression cannot be read as ``kind``.
    """
    start = now - WINDOW
    times: list[dt.datetime] = []
    if kind == "rrule":
        if gap_after is not None and gap_after < start:
            missed = _rrule_latest(expression, zone, gap_after, start)
            times += [] if missed is None else [missed]
        times += _rrule_between(expression, zone, start, now)
        return times
    if gap_after is not None and gap_after < start:
        missed = _cron_latest(expression, zone, start)
        times += [missed] if missed > gap_after else []
    latest = _cron_latest(expression, zone, now)
    return times + ([latest] if latest > start else [])


def evaluate(rows: Iterable[Sequence[Any]], now: dt.datetime, prior_cron_on: dt.datetime | None) -> Evaluation:
    """Which slots of which schedules are due at database time ``now`` (§9.3), given rows of :data:`SCHEDULES`
    and the ``cron_on`` before this pass's claim. A schedule that cannot be evaluated is reported, not raised;
    one whose stored kind cannot be read but the other can is evaluated as the other, and relabelled."""
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # pg-boss's clock counts milliseconds
    due: list[Due] = []
    invalid: list[InvalidSchedule] = []
    relabel: list[tuple[str, str, str]] = []
    for name, key, kind, expression, timezone, data, options, created_on in rows:
        try:
            zone = zone_of(timezone)
            readable = _rrule_readable if kind == "rrule" else _cron_readable
            if not readable(expression):
                other = "cron" if kind == "rrule" else "rrule"
                if (_cron_readable if other == "cron" else _rrule_readable)(expression):
                    kind = other
                    relabel.append((name, key, kind))
            missed = isinstance(options, Mapping) and options.get("missed") == "once"
            gap_after = max(prior_cron_on, created_on) if missed and prior_cron_on is not None else None
            times = due_times(kind, expression, zone, now, gap_after)
        except (InvalidCronError, InvalidTimezoneError, ValueError, TypeError, OverflowError) as error:
            invalid.append(InvalidSchedule(name, error, key, kind, expression, timezone or "UTC"))
            continue
        for slot in dict.fromkeys(slot_of(when) for when in times):
            due.append(Due(name, key, data, options, slot))
    return Evaluation(due, invalid, relabel)


def send_it_records(due: Iterable[Due]) -> str:
    """The JSON parameter ``:jobs`` of :data:`INSERT_SEND_IT`."""
    return json.dumps([item.record() for item in due])


# ------------------------------------------------------------------------------ the send-it worker (§9.4)

_SEND_OPTIONS = {
    "".join(part if n == 0 else part.title() for n, part in enumerate(option.split("_"))): option
    for option in options46.SEND_OPTIONS - {"trace_context"}
}
"""pg-boss's camelCase send options, as a schedule stores them, to ours."""


@dataclass(frozen=True)
class SendRequest:
    """What a send-it job asks: send ``data`` to ``name`` with ``options`` (ours, snake_case); the schedule's
    ``key`` and the ``slot`` say whose ``last_job_id`` the new job becomes."""

    name: Any
    data: Any
    options: dict[str, Any]
    key: str
    slot: str

    @classmethod
    def of(cls, payload: Any) -> SendRequest:
        """A send-it job's data: ``key``, ``slot`` and ``options.db`` dropped, the stored options that are
        pg-boss send options kept (the schedule's own ``tz``, ``key`` and ``missed``, and any other key, are
        ignored, as pg-boss's send ignores them).

        Raises:
            InvalidCronError: the data is not a send-it job's.
        """
        if not isinstance(payload, Mapping) or "name" not in payload:
            raise InvalidCronError(f"a send-it job's data must be an object with a name, not {payload!r}")
        stored = payload.get("options")
        if stored is not None and not isinstance(stored, Mapping):
            raise InvalidCronError(f"a send-it job's options must be an object, not {stored!r}")
        options = {_SEND_OPTIONS[key]: value for key, value in (stored or {}).items() if key in _SEND_OPTIONS}
        key, slot = payload.get("key"), payload.get("slot")
        return cls(
            name=payload["name"],
            data=payload.get("data"),
            options={name: value for name, value in options.items() if value is not None},
            key=key if isinstance(key, str) else "",
            slot=slot if isinstance(slot, str) else "",
        )


def last_jobs(sent: Iterable[tuple[SendRequest, Any]]) -> str | None:
    """The JSON parameter ``:last_jobs`` of :data:`SET_LAST_JOBS`: per (name, key), the job sent for its latest
    slot; ``None`` when no job was sent."""
    latest: dict[tuple[str, str], tuple[str, Any]] = {}
    for request, job_id in sent:
        if job_id is None or not isinstance(request.name, str):
            continue
        schedule = (request.name, request.key)
        if schedule not in latest or request.slot >= latest[schedule][0]:
            latest[schedule] = (request.slot, job_id)
    if not latest:
        return None
    return json.dumps([{"name": name, "key": key, "id": str(job_id)} for (name, key), (_, job_id) in latest.items()])


__all__ = [
    "CLAIM_CRON",
    "INSERT_SEND_IT",
    "RELABEL",
    "SCHEDULES",
    "SEND_IT_QUEUE",
    "SET_LAST_JOBS",
    "SLOT_FORMAT",
    "WINDOW",
    "CronPass",
    "Due",
    "Evaluation",
    "InvalidSchedule",
    "SendRequest",
    "due_times",
    "evaluate",
    "last_jobs",
    "rule_set",
    "send_it_records",
    "singleton_key",
    "slot_of",
    "zone_of",
]
