"""Validating and normalising the options pg-boss takes, before anything reaches the database.

Everything here is pure: it turns snake_case Python arguments into the values pg-boss's own JavaScript
would have produced (seconds, interval text, ISO timestamps ending in ``Z``), so that the SQL that
applies them produces the same rows, and it refuses bad input with a precise
:class:`~sqla_boss.errors.InvalidOptionError` instead of an SQL error that would abort the caller's
transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import traceback
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqla_boss.errors import InvalidOptionError, InvalidQueueNameError, PayloadError
from sqla_boss.models import JobState, QueuePolicy

ARCHIVE_COMPLETED_AFTER_SECONDS = 43200
"""pg-boss's default ``archiveCompletedAfterSeconds``; a ``singleton_seconds`` above it is refused."""

MAX_EXPIRE_SECONDS = 86400
"""``expire_in`` must stay below 24 hours, as pg-boss checks."""

MAX_NAME_BYTES = 1024
"""The longest queue name, event name or singleton key, in UTF-8 bytes: two of them and a timestamp stay
under PostgreSQL's limit for a btree index entry (2,704 bytes), however little they compress."""

MAX_DURATION_SECONDS = 1000 * 365.25 * 86400
"""The longest delay or retention sqla_boss accepts: far inside PostgreSQL's timestamp and interval range,
so a huge value is refused here rather than failing the caller's transaction."""

# Interval units sqla_boss lets through to PostgreSQL, by spelling: (the field PostgreSQL sets, seconds).
# A field may be given once ("1 day 1 day" is an error there); a bare number means seconds.
_UNITS: dict[str, tuple[str, float]] = {
    spelling: (field, seconds)
    for spellings, field, seconds in (
        (("microsecond", "microseconds"), "microsecond", 1e-6),
        (("millisecond", "milliseconds"), "millisecond", 1e-3),
        (("", "s", "sec", "secs", "second", "seconds"), "second", 1),
        (("m", "min", "mins", "minute", "minutes"), "minute", 60),
        (("h", "hr", "hrs", "hour", "hours"), "hour", 3600),
        (("d", "day", "days"), "day", 86400),
        (("w", "week", "weeks"), "week", 604800),
        (("mon", "mons", "month", "months"), "month", 30 * 86400),
        (("y", "year", "years"), "year", 365.25 * 86400),
    )
    for spelling in spellings
}
# ASCII only: \d and \s would take other scripts' digits and spaces, which PostgreSQL refuses.
_INTERVAL_PART = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE | re.ASCII)
_CLOCK = re.compile(r"\s*[+-]?(\d+):(\d{2})(?::(\d{2})(?:\.\d+)?)?\s*", re.ASCII)
# The ISO 8601 forms PostgreSQL's timestamptz input shares with Python: date, T or space, hh:mm[:ss[.f]], offset.
_ISO_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6})\d*)?)?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)",
    re.IGNORECASE | re.ASCII,
)

_QUEUE_NAME_CHAR = re.compile(r"[A-Za-z0-9_-]")
# json.dumps writes NUL as \u0000; an escaped backslash before "u0000" is an even run of backslashes.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# ---------------------------------------------------------------------------------------------- names


def queue_name(name: object, *, what: str = "queue name") -> str:
    """Check a queue name as pg-boss does, and refuse what PostgreSQL cannot hold (see :func:`_queue_name`)."""
    if isinstance(name, str) and what == "queue name":
        return _valid_queue_name(name)
    return _queue_name(name, what=what)


@functools.lru_cache(maxsize=4096)
def _valid_queue_name(name: str) -> str:
    """:func:`_queue_name` remembered for valid names (an insert checks the same few names thousands of
    times); a refused name raises, and exceptions are not cached."""
    return _queue_name(name, what="queue name")


def _queue_name(name: object, *, what: str) -> str:
    """Check a queue name as pg-boss does, and refuse what PostgreSQL cannot hold.

    pg-boss only asks for one character of ``[A-Za-z0-9_-]`` somewhere in the name. sqla_boss also refuses
    NUL (PostgreSQL text cannot hold it) and backslashes (pg-boss's ``text::bytea`` cast reads them as
    escapes, so the partition name would not be the plain digest of the name, or creation would fail).
    """
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


def too_long(text: str) -> str | None:
    """Why ``text`` cannot be a name or key (over :data:`MAX_NAME_BYTES` in UTF-8), or ``None``."""
    if len(text) * 4 <= MAX_NAME_BYTES or len(text.encode()) <= MAX_NAME_BYTES:
        return None
    return f"at most {MAX_NAME_BYTES} bytes of UTF-8 fit PostgreSQL's indexes"


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be sent to PostgreSQL: no lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_value(name: str, value: object) -> str | None:
    """An optional text option (``singleton_key``): a string PostgreSQL's text can hold."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidOptionError(f"{name} must be a string, not {value!r}")
    if "\x00" in value or not is_utf8(value):
        raise InvalidOptionError(f"{name} {value!r} contains a NUL character or a lone surrogate")
    if too_long(value):
        raise InvalidOptionError(f"{name} {value[:40]!r}... is {len(value.encode())} bytes; {too_long(value)}")
    return value


def job_ids(ids: object, *, operation: str) -> list[uuid.UUID]:
    """One id or many, as ``uuid.UUID``; pg-boss refuses an empty list, and so do we."""
    items: list[object] = list(ids) if isinstance(ids, (list, tuple, set, frozenset)) else [ids]
    if not items:
        raise InvalidOptionError(f"{operation}() requires an id")
    return [job_id(item, operation=operation) for item in items]


def job_id(value: object, *, operation: str = "job") -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            raise InvalidOptionError(f"{operation}(): {value!r} is not a UUID") from None
    raise InvalidOptionError(f"{operation}(): a job id must be a UUID or its string, not {type(value).__name__}")


# ------------------------------------------------------------------------------------------- values


def _integer(name: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidOptionError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidOptionError(f"{name} must be at least {minimum}, not {value}")
    if not -(2**31) <= value <= 2**31 - 1:
        raise InvalidOptionError(f"{name} must fit a PostgreSQL integer, not {value}")
    return value


def _seconds(name: str, value: object, *, minimum: float | None = None, whole: bool = False) -> float:
    """A duration in seconds from a number or a ``timedelta``."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidOptionError(f"{name} must be a number of seconds or a timedelta, not {value!r}")
    if not math.isfinite(seconds):
        raise InvalidOptionError(f"{name} must be finite, not {value!r}")
    if whole and not seconds.is_integer():
        raise InvalidOptionError(f"{name} must be a whole number of seconds, not {value!r}")
    if minimum is not None and seconds < minimum:
        raise InvalidOptionError(f"{name} must be at least {minimum:g}, not {value!r}")
    if abs(seconds) > MAX_DURATION_SECONDS:
        raise InvalidOptionError(f"{name} must be within 1000 years, not {value!r}")
    return seconds


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{name} must be True or False, not {value!r}")
    return value


def _number_text(seconds: float) -> str:
    return str(int(seconds)) if seconds.is_integer() else repr(seconds)


def start_after_text(value: object) -> str | None:
    """``start_after`` as pg-boss's SQL expects it: an ISO timestamp ending in ``Z``, or interval text.

    Accepts an aware ``datetime``, a ``timedelta`` or a number of seconds from now (0 or less means now,
    as in pg-boss), or a string: an ISO 8601 timestamp (any offset; pg-boss only takes ``Z``) or
    PostgreSQL interval text such as ``"90 minutes"``.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidOptionError(f"start_after must be an aware datetime, not the naive {value!r}")
        return _utc_text(value, what="start_after")
    if isinstance(value, dt.timedelta) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        seconds = _seconds("start_after", value)
        return _number_text(seconds) if seconds > 0 else None
    if isinstance(value, str):
        interval = _interval_seconds(value)
        if interval is None:
            timestamp = _iso_timestamp(value)
            if timestamp is None:
                raise InvalidOptionError(
                    f"start_after {value!r} is neither an ISO 8601 timestamp with an offset "
                    "(YYYY-MM-DDThh:mm[:ss[.f]], then Z or +hh:mm) nor interval text of distinct units "
                    "('90', '5 minutes', '1 day 2 hours', '01:30:00')"
                )
            return _utc_text(timestamp, what="start_after")
        if interval > MAX_DURATION_SECONDS:
            raise InvalidOptionError(f"start_after {value!r} must be within 1000 years")
        return value
    raise InvalidOptionError(f"start_after must be a datetime, timedelta, number or string, not {value!r}")


def _iso_timestamp(text: str) -> dt.datetime | None:
    """An ISO 8601 timestamp with an offset, in the forms PostgreSQL and Python both read the same way;
    ``None`` for other text."""
    match = _ISO_TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset.upper() == "Z":
        zone = dt.timezone.utc
    else:
        digits = offset[1:].replace(":", "")
        delta = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        if delta >= dt.timedelta(hours=24):
            raise InvalidOptionError(f"start_after {text!r} has an offset of a day or more")
        zone = dt.timezone(-delta if offset[0] == "-" else delta)
    try:
        return dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=zone,
        )
    except ValueError as exc:
        raise InvalidOptionError(f"start_after {text!r} is not a valid timestamp: {exc}") from None


def _interval_seconds(text: str) -> float | None:
    """Roughly how many seconds interval text such as ``"2 days 3 hours"`` or ``"01:30"`` means; ``None`` for
    text outside the grammar sqla_boss lets through (each field once, a bare number only last, a clock's
    minutes and seconds under 60), all of which PostgreSQL reads as it is meant."""
    clock = _CLOCK.fullmatch(text)
    if clock is not None:
        hours, minutes, whole = (int(part or 0) for part in clock.groups())
        return None if minutes > 59 or whole > 59 else float(hours * 3600 + minutes * 60 + whole)
    total, position = 0.0, 0
    fields: set[str] = set()
    while position < len(text):
        part = _INTERVAL_PART.match(text, position)
        if part is None or part.end() == position:
            return None
        number, unit = part.groups()
        if unit.lower() not in _UNITS or (unit == "" and part.end() != len(text)):
            return None
        field, factor = _UNITS[unit.lower()]
        if field in fields:
            return None
        fields.add(field)
        total += abs(float(number)) * factor
        position = part.end()
    return total if fields else None


def _utc_text(value: dt.datetime, *, what: str = "a datetime") -> str:
    try:
        utc = value.astimezone(dt.timezone.utc)
    except OverflowError:
        raise InvalidOptionError(f"{what} {value.isoformat()} is outside the years 1-9999 in UTC") from None
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def keep_until_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidOptionError(f"keep_until must be an aware datetime, not the naive {value!r}")
        return _utc_text(value, what="keep_until")
    raise InvalidOptionError(f"keep_until must be an aware datetime, not {value!r}")


def json_text(value: Any, *, what: str = "data") -> str:
    """``value`` as JSON text; refuses what JSON cannot carry (NaN, infinities, other objects)."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} cannot be stored as JSON: {exc}") from exc
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply to be stored as JSON") from None
    if _JSON_NUL.search(text):
        raise PayloadError(f"{what} contains a NUL character (\\u0000), which PostgreSQL's jsonb cannot store")
    if text.startswith(("{", "[")):
        _check_keys(value, what)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{what} contains a lone surrogate, which is not valid UTF-8") from None
    return text


def _check_keys(value: Any, what: str) -> None:
    """Refuse mapping keys that are not strings: JSON would turn ``1`` and ``None`` into ``"1"`` and ``"null"``
    silently (and keep one value of ``{1: a, "1": b}``), so the job would not read back as it was sent."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, member in item.items():
                if not isinstance(key, str):
                    raise PayloadError(f"{what} has a {type(key).__name__} key {key!r}; JSON object keys are strings")
                if isinstance(member, (dict, list, tuple)):
                    stack.append(member)
        elif isinstance(item, (list, tuple)):
            stack.extend(member for member in item if isinstance(member, (dict, list, tuple)))


def check_json(value: Any, *, what: str = "data") -> Any:
    json_text(value, what=what)
    return value


def output_value(value: Any) -> Any:
    """What pg-boss stores as ``output`` for a completion or failure value (PGBOSS10.md §6.1).

    ``None`` stays NULL; an exception becomes ``{name, message, stack, ...its attributes}``; a mapping
    is stored as it is; anything else (string, number, boolean, list) is wrapped as ``{"value": ...}``.
    """
    if value is None or (callable(value) and not isinstance(value, BaseException)):
        return None
    if isinstance(value, BaseException):
        stored: dict[str, Any] = {
            "name": type(value).__name__,
            "message": str(value),
            "stack": "".join(traceback.format_exception(type(value), value, value.__traceback__)).rstrip(),
        }
        for key, attribute in vars(value).items():
            if key.startswith("_") or callable(attribute):
                continue
            try:
                json_text(attribute)
            except PayloadError:
                attribute = _safe_repr(attribute)
            stored.setdefault(key, attribute)
        return stored
    if isinstance(value, Mapping):
        return check_json(dict(value), what="output")
    return check_json({"value": value}, what="output")


def _safe_repr(value: object) -> str:
    """``repr(value)``, or a placeholder when that fails (nested too deeply, or a ``__repr__`` that raises)."""
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    except Exception as exc:
        return f"<{type(value).__name__}: repr() raised {type(exc).__name__}>"


# ---------------------------------------------------------------------------------------- durations


_EXPIRE_UNITS = (("expire_in_hours", 3600), ("expire_in_minutes", 60), ("expire_in_seconds", 1))
_RETENTION_UNITS = (
    ("retention_days", 86400, "days"),
    ("retention_hours", 3600, "hours"),
    ("retention_minutes", 60, "minutes"),
    ("retention_seconds", 1, "seconds"),
)
_SINGLETON_UNITS = (("singleton_hours", 3600), ("singleton_minutes", 60), ("singleton_seconds", 1))


def _unit_seconds(key: str, value: object, factor: float, *, minimum: float | None = None) -> float:
    """A ``*_minutes`` / ``*_hours`` option in seconds: a number counts in the key's unit (``minimum`` in that
    unit too), a ``timedelta`` is taken as it is (``minimum`` in seconds)."""
    if isinstance(value, dt.timedelta):
        return _seconds(key, value, minimum=minimum)
    return _seconds(key, value, minimum=minimum) * factor


def expire_in_seconds(options: Mapping[str, Any]) -> float | None:
    """The expiration in seconds: hours, else minutes, else seconds (by presence), each at least 1."""
    for key, factor in _EXPIRE_UNITS:
        if key in options and options[key] is not None:
            _unit_seconds(key, options[key], factor, minimum=1)
    for key, factor in _EXPIRE_UNITS:
        if key in options and options[key] is not None:
            seconds = _unit_seconds(key, options[key], factor, minimum=1)
            if seconds >= MAX_EXPIRE_SECONDS:
                raise InvalidOptionError(f"{key} must be less than 24 hours in all, not {options[key]!r}")
            return seconds
    return None


def retention_text(options: Mapping[str, Any]) -> str | None:
    """The retention as pg-boss's interval text (``'3 days'``): days, hours, minutes, then seconds."""
    for key, factor, _ in _RETENTION_UNITS:
        if key in options and options[key] is not None:
            value = options[key]
            seconds = _seconds(key, value, minimum=1)
            if not isinstance(value, dt.timedelta) and seconds * factor > MAX_DURATION_SECONDS:
                raise InvalidOptionError(f"{key} must be within 1000 years, not {value!r}")
    for key, _, unit in _RETENTION_UNITS:
        if key in options and options[key] is not None:
            value = options[key]
            if isinstance(value, dt.timedelta):
                return f"{_number_text(value.total_seconds())} seconds"
            return f"{_number_text(_seconds(key, value, minimum=1))} {unit}"
    return None


def singleton_seconds(options: Mapping[str, Any]) -> int | None:
    """The throttling slot length: hours, else minutes, else seconds, whichever is above 0 (by value)."""
    raw = options.get("singleton_seconds")
    if raw is not None:
        seconds = _seconds("singleton_seconds", raw)
        if seconds > ARCHIVE_COMPLETED_AFTER_SECONDS:
            raise InvalidOptionError(
                f"singleton_seconds must be at most {ARCHIVE_COMPLETED_AFTER_SECONDS} (pg-boss's "
                f"archiveCompletedAfterSeconds), not {raw!r}; use singleton_minutes or singleton_hours"
            )
    for key, factor in _SINGLETON_UNITS:
        value = options.get(key)
        if value is None:
            continue
        seconds = _unit_seconds(key, value, factor)
        if seconds > 0:
            if not seconds.is_integer():
                raise InvalidOptionError(f"{key} must make a whole number of seconds, not {value!r}")
            return _integer(key, int(seconds))
    return None


# -------------------------------------------------------------------------------------------- defaults


@dataclass(frozen=True)
class Defaults:
    """pg-boss constructor options that shape rows: the last fallback before pg-boss's built-in values."""

    retry_limit: int | None = None
    retry_delay: int | None = None
    retry_backoff: bool | None = None
    expire_in_seconds: float | None = None
    retention: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Defaults:
        allowed = {"retry_limit", "retry_delay", "retry_backoff"} | {key for key, _ in _EXPIRE_UNITS}
        allowed |= {key for key, _, _ in _RETENTION_UNITS}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InvalidOptionError(
                f"unknown default option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
            )
        return cls(
            retry_limit=_optional_integer(options, "retry_limit", minimum=0),
            retry_delay=_optional_delay(options, "retry_delay"),
            retry_backoff=_optional_boolean(options, "retry_backoff"),
            expire_in_seconds=expire_in_seconds(options),
            retention=retention_text(options),
        )


def _optional_integer(options: Mapping[str, Any], key: str, *, minimum: int | None = None) -> int | None:
    value = options.get(key)
    return None if value is None else _integer(key, value, minimum=minimum)


def _optional_delay(options: Mapping[str, Any], key: str) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return _integer(key, _seconds(key, value, minimum=0, whole=True), minimum=0)
    return _integer(key, value, minimum=0)


def _optional_boolean(options: Mapping[str, Any], key: str) -> bool | None:
    value = options.get(key)
    return None if value is None else _boolean(key, value)


def _optional_name(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    return None if value is None else queue_name(value, what=key)


# ------------------------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class JobInput:
    """One job to insert, in the terms of pg-boss's insert SQL. ``None`` means "fall back"."""

    name: str
    data: Any = None
    id: uuid.UUID | None = None
    priority: int | None = None
    start_after: str | None = None
    singleton_key: str | None = None
    singleton_seconds: int | None = None
    singleton_offset: int = 0
    expire_in_seconds: float | None = None
    keep_until: str | None = None
    retention: str | None = None
    retry_limit: int | None = None
    retry_delay: int | None = None
    retry_backoff: bool | None = None
    dead_letter: str | None = None

    def record(self) -> dict[str, Any]:
        """The JSON object for ``json_to_recordset``, nulls left out (written out: it runs per job)."""
        record: dict[str, Any] = {"name": self.name, "data": self.data}
        if self.id is not None:
            record["id"] = str(self.id)
        for key, value in (
            ("priority", self.priority),
            ("start_after", self.start_after),
            ("singleton_key", self.singleton_key),
            ("singleton_seconds", self.singleton_seconds),
            ("singleton_offset", self.singleton_offset),
            ("expire_in_seconds", self.expire_in_seconds),
            ("keep_until", self.keep_until),
            ("retention", self.retention),
            ("retry_limit", self.retry_limit),
            ("retry_delay", self.retry_delay),
            ("retry_backoff", self.retry_backoff),
            ("dead_letter", self.dead_letter),
        ):
            if value is not None:
                record[key] = value
        if self.data is None:
            del record["data"]
        return record


SEND_OPTIONS = frozenset(
    {
        "id",
        "priority",
        "start_after",
        "singleton_key",
        "singleton_seconds",
        "singleton_minutes",
        "singleton_hours",
        "singleton_next_slot",
        "retry_limit",
        "retry_delay",
        "retry_backoff",
        "expire_in_seconds",
        "expire_in_minutes",
        "expire_in_hours",
        "retention_seconds",
        "retention_minutes",
        "retention_hours",
        "retention_days",
        "dead_letter",
    }
)
"""Every pg-boss 10 send option, in snake_case."""

INSERT_FIELDS = frozenset(
    {
        "name",
        "data",
        "id",
        "priority",
        "start_after",
        "singleton_key",
        "singleton_seconds",
        "expire_in_seconds",
        "keep_until",
        "retry_limit",
        "retry_delay",
        "retry_backoff",
        "dead_letter",
    }
)
"""The fields pg-boss's batch ``insert`` honours; it silently ignores all others, sqla_boss refuses them."""


def _unknown(keys: Iterable[object], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(key if isinstance(key, str) else repr(key) for key in set(keys) - allowed)
    if unknown:
        raise InvalidOptionError(f"unknown {what} option(s): {', '.join(unknown)}")


def send_options(options: object, **fixed: Any) -> dict[str, Any]:
    """The ``options`` mapping of ``send_after``/``send_throttled``/``send_debounced``, with their own keys over
    it; :func:`send_input` then refuses what is no send option (``name``, ``data`` included)."""
    if options is None:
        return fixed
    if not isinstance(options, Mapping):
        raise InvalidOptionError(f"options must be a mapping of send options or None, not {type(options).__name__}")
    return {**options, **fixed}


def send_input(name: object, data: Any, options: Mapping[str, Any]) -> tuple[JobInput, bool]:
    """Validate a ``send`` and return its :class:`JobInput` and whether it debounces (``singleton_next_slot``)."""
    _unknown(options, SEND_OPTIONS, "send")
    json_text(data)
    priority = _optional_integer(options, "priority")
    singleton_key = text_value("singleton_key", options.get("singleton_key"))
    next_slot = options.get("singleton_next_slot")
    job = JobInput(
        name=queue_name(name),
        data=data,
        id=None if options.get("id") is None else job_id(options["id"], operation="send"),
        priority=priority or None,
        start_after=start_after_text(options.get("start_after")),
        singleton_key=singleton_key,
        singleton_seconds=singleton_seconds(options),
        expire_in_seconds=expire_in_seconds(options),
        retention=retention_text(options),
        retry_limit=_optional_integer(options, "retry_limit", minimum=0),
        retry_delay=_optional_delay(options, "retry_delay"),
        retry_backoff=_optional_boolean(options, "retry_backoff"),
        dead_letter=_optional_name(options, "dead_letter"),
    )
    return job, bool(next_slot is not None and _boolean("singleton_next_slot", next_slot))


_NAME_AND_DATA = frozenset({"name", "data"})


def insert_record(job: Mapping[str, Any]) -> dict[str, Any]:
    """One element of an ``insert`` batch, validated, as its ``json_to_recordset`` object.

    The common job, a name and data only, takes a short path: it runs per job of batches of thousands.
    """
    if isinstance(job, dict) and "name" in job and job.keys() <= _NAME_AND_DATA:
        data = job.get("data")
        record = {"name": queue_name(job["name"])}
        if data is not None:
            record["data"] = data
        return record
    return insert_input(job).record()


def insert_input(job: Mapping[str, Any]) -> JobInput:
    """Validate one element of an ``insert`` batch (the fields pg-boss's insert honours)."""
    if not isinstance(job, Mapping):
        raise InvalidOptionError(f"each job to insert must be a mapping, not {type(job).__name__}")
    _unknown(job, INSERT_FIELDS, "insert")
    if "name" not in job:
        raise InvalidOptionError("each job to insert needs a name")
    # The data is checked when the whole batch is serialised (Operations.insert), not once more per job.
    singleton_key = text_value("singleton_key", job.get("singleton_key"))
    raw_singleton = job.get("singleton_seconds")
    return JobInput(
        name=queue_name(job["name"]),
        data=job.get("data"),
        id=None if job.get("id") is None else job_id(job["id"], operation="insert"),
        priority=_optional_integer(job, "priority"),
        start_after=start_after_text(job.get("start_after")),
        singleton_key=singleton_key,
        singleton_seconds=None if raw_singleton is None else singleton_seconds({"singleton_seconds": raw_singleton}),
        expire_in_seconds=None
        if job.get("expire_in_seconds") is None
        else expire_in_seconds({"expire_in_seconds": job["expire_in_seconds"]}),
        keep_until=keep_until_text(job.get("keep_until")),
        retry_limit=_optional_integer(job, "retry_limit", minimum=0),
        retry_delay=_optional_delay(job, "retry_delay"),
        retry_backoff=_optional_boolean(job, "retry_backoff"),
        dead_letter=_optional_name(job, "dead_letter"),
    )


# ---------------------------------------------------------------------------------------------- queues

QUEUE_OPTIONS = frozenset(
    {"policy", "retry_limit", "retry_delay", "retry_backoff", "expire_in_seconds", "retention_minutes", "dead_letter"}
)


def queue_settings(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The queue options among a method's ``locals()``: the one place that lists them for both APIs."""
    return {key: arguments[key] for key in QUEUE_OPTIONS}


def queue_policy(value: object) -> QueuePolicy:
    try:
        return QueuePolicy(value)
    except ValueError:
        known = ", ".join(policy.value for policy in QueuePolicy)
        raise InvalidOptionError(f"{value!r} is not a valid queue policy ({known})") from None


def queue_options(options: Mapping[str, Any], *, policy_default: QueuePolicy | None) -> dict[str, Any]:
    """The ``create_queue`` JSON options (pg-boss's camelCase keys), validated. ``None`` values are left out."""
    _unknown(options, QUEUE_OPTIONS, "queue")
    policy = options.get("policy")
    expire = options.get("expire_in_seconds")
    retention = options.get("retention_minutes")
    values = {
        "policy": (queue_policy(policy).value if policy is not None else policy_default and policy_default.value),
        "retryLimit": _optional_integer(options, "retry_limit", minimum=0),
        "retryDelay": _optional_delay(options, "retry_delay"),
        "retryBackoff": _optional_boolean(options, "retry_backoff"),
        "expireInSeconds": None if expire is None else _whole_expire(expire),
        "retentionMinutes": None if retention is None else _integer("retention_minutes", retention, minimum=1),
        "deadLetter": _optional_name(options, "dead_letter"),
    }
    return {key: value for key, value in values.items() if value is not None}


def _whole_expire(value: object) -> int:
    seconds = expire_in_seconds({"expire_in_seconds": value})
    assert seconds is not None
    if not seconds.is_integer():
        raise InvalidOptionError(f"a queue's expire_in_seconds must be a whole number, not {value!r}")
    return int(seconds)


def job_state(value: object, *, what: str = "state") -> JobState:
    try:
        return JobState(value)
    except ValueError:
        raise InvalidOptionError(f"{value!r} is not a valid {what}") from None


# ------------------------------------------------------------------------------------------------ fetch


@dataclass(frozen=True)
class FetchOptions:
    batch_size: int
    priority: bool
    include_metadata: bool
    ignore_start_after: bool

    @classmethod
    def of(
        cls, batch_size: object, priority: object, include_metadata: object, ignore_start_after: object
    ) -> FetchOptions:
        return cls(
            batch_size=_integer("batch_size", batch_size, minimum=1),
            priority=_boolean("priority", priority),
            include_metadata=_boolean("include_metadata", include_metadata),
            ignore_start_after=_boolean("ignore_start_after", ignore_start_after),
        )
