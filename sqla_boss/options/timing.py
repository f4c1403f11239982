"""Times and durations: ``start_after`` (timestamps and PostgreSQL interval text), ``keep_until``, and the
``expire_in`` / ``retention`` / ``singleton`` / ``retry_delay`` durations, turned into what pg-boss's SQL reads."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from sqla_boss.errors import InvalidOptionError
from sqla_boss.options.values import MAX_DURATION_SECONDS, integer, number_text, seconds

ARCHIVE_COMPLETED_AFTER_SECONDS = 43200
"""pg-boss's default ``archiveCompletedAfterSeconds``; a ``singleton_seconds`` above it is refused."""

MAX_EXPIRE_SECONDS = 86400
"""``expire_in`` must stay below 24 hours, as pg-boss checks."""

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


def start_after_text(value: object) -> str | None:
    """``start_after`` as pg-boss's SQL expects it: an ISO timestamp ending in ``Z``, or interval text.

    Accepts an aware ``datetime``, a ``timedelta`` or a number of seconds from now (0 or less means now,
    as in pg-boss), or a string: an ISO 8601 timestamp (any offset; pg-boss only takes ``Z``) or
    PostgreSQL interval text such as ``"90 minutes"``.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return utc_text(value, what="start_after")
    if isinstance(value, dt.timedelta) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        amount = seconds("start_after", value)
        return number_text(amount) if amount > 0 else None
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
            return utc_text(timestamp, what="start_after")
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


def utc_text(value: dt.datetime, *, what: str = "a datetime") -> str:
    """An aware ``datetime`` as the ISO text, in UTC and ending in ``Z``, that pg-boss's SQL reads; a naive one
    is refused rather than taken for UTC or local time."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidOptionError(f"{what} must be an aware datetime, not the naive {value!r}")
    try:
        utc = value.astimezone(dt.timezone.utc)
    except OverflowError:
        raise InvalidOptionError(f"{what} {value.isoformat()} is outside the years 1-9999 in UTC") from None
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def keep_until_text(value: object) -> str | None:
    """``keep_until`` (an aware ``datetime``) as pg-boss's SQL reads it, or ``None``."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return utc_text(value, what="keep_until")
    raise InvalidOptionError(f"keep_until must be an aware datetime, not {value!r}")


# ---------------------------------------------------------------------------------------- durations


_EXPIRE_UNITS = (("expire_in_hours", 3600), ("expire_in_minutes", 60), ("expire_in_seconds", 1))
_RETENTION_UNITS = (
    ("retention_days", 86400, "days"),
    ("retention_hours", 3600, "hours"),
    ("retention_minutes", 60, "minutes"),
    ("retention_seconds", 1, "seconds"),
)
_SINGLETON_UNITS = (("singleton_hours", 3600), ("singleton_minutes", 60), ("singleton_seconds", 1))
EXPIRE_OPTIONS = frozenset(key for key, _ in _EXPIRE_UNITS)
"""The spellings of ``expire_in``: ``expire_in_seconds``, ``_minutes``, ``_hours``."""
RETENTION_OPTIONS = frozenset(key for key, _, _ in _RETENTION_UNITS)
"""The spellings of ``retention``: ``retention_seconds``, ``_minutes``, ``_hours``, ``_days``."""


def _unit_seconds(key: str, value: object, factor: float, *, minimum: float | None = None) -> float:
    """A ``*_minutes`` / ``*_hours`` option in seconds: a number counts in the key's unit (``minimum`` in that
    unit too), a ``timedelta`` is taken as it is (``minimum`` in seconds)."""
    if isinstance(value, dt.timedelta):
        return seconds(key, value, minimum=minimum)
    return seconds(key, value, minimum=minimum) * factor


def expire_in_seconds(options: Mapping[str, Any]) -> float | None:
    """The expiration in seconds: hours, else minutes, else seconds (by presence), each at least 1."""
    for key, factor in _EXPIRE_UNITS:
        if key in options and options[key] is not None:
            _unit_seconds(key, options[key], factor, minimum=1)
    for key, factor in _EXPIRE_UNITS:
        if key in options and options[key] is not None:
            amount = _unit_seconds(key, options[key], factor, minimum=1)
            if amount >= MAX_EXPIRE_SECONDS:
                raise InvalidOptionError(f"{key} must be less than 24 hours in all, not {options[key]!r}")
            return amount
    return None


def retention_text(options: Mapping[str, Any]) -> str | None:
    """The retention as pg-boss's interval text (``'3 days'``): days, hours, minutes, then seconds."""
    for key, factor, _ in _RETENTION_UNITS:
        if key in options and options[key] is not None:
            value = options[key]
            amount = seconds(key, value, minimum=1)
            if not isinstance(value, dt.timedelta) and amount * factor > MAX_DURATION_SECONDS:
                raise InvalidOptionError(f"{key} must be within 1000 years, not {value!r}")
    for key, _, unit in _RETENTION_UNITS:
        if key in options and options[key] is not None:
            value = options[key]
            if isinstance(value, dt.timedelta):
                return f"{number_text(value.total_seconds())} seconds"
            return f"{number_text(seconds(key, value, minimum=1))} {unit}"
    return None


def singleton_seconds(options: Mapping[str, Any]) -> int | None:
    """The throttling slot length: hours, else minutes, else seconds, whichever is above 0 (by value)."""
    raw = options.get("singleton_seconds")
    if raw is not None and seconds("singleton_seconds", raw) > ARCHIVE_COMPLETED_AFTER_SECONDS:
        raise InvalidOptionError(
            f"singleton_seconds must be at most {ARCHIVE_COMPLETED_AFTER_SECONDS} (pg-boss's "
            f"archiveCompletedAfterSeconds), not {raw!r}; use singleton_minutes or singleton_hours"
        )
    for key, factor in _SINGLETON_UNITS:
        value = options.get(key)
        if value is None:
            continue
        amount = _unit_seconds(key, value, factor)
        if amount > 0:
            if not amount.is_integer():
                raise InvalidOptionError(f"{key} must make a whole number of seconds, not {value!r}")
            return integer(key, int(amount))
    return None


def optional_delay(options: Mapping[str, Any], key: str) -> int | None:
    """A retry delay in whole seconds (a number or a ``timedelta``), or ``None`` when absent or ``None``."""
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return integer(key, seconds(key, value, minimum=0, whole=True), minimum=0)
    return integer(key, value, minimum=0)


__all__ = [
    "ARCHIVE_COMPLETED_AFTER_SECONDS",
    "EXPIRE_OPTIONS",
    "MAX_EXPIRE_SECONDS",
    "RETENTION_OPTIONS",
    "expire_in_seconds",
    "keep_until_text",
    "optional_delay",
    "retention_text",
    "singleton_seconds",
    "start_after_text",
    "utc_text",
]
