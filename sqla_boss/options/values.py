"""The primitive validators every option goes through: whole numbers, flags, durations, texts.

Each takes the option's name (for the message) and the value given, and returns the value to use or raises
:class:`~sqla_boss.errors.InvalidOptionError` before anything is written. Send and queue options, worker and
maintenance settings and the command line all use these, so one kind of value is checked one way.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqla_boss.errors import InvalidOptionError, UnsupportedOperationError

MAX_NAME_BYTES = 1024
"""The longest queue name, event name or singleton key, in UTF-8 bytes: two of them and a timestamp stay
under PostgreSQL's limit for a btree index entry (2,704 bytes), however little they compress."""

MAX_DURATION_SECONDS = 1000 * 365.25 * 86400
"""The longest delay or retention sqla_boss accepts: far inside PostgreSQL's timestamp and interval range,
so a huge value is refused here rather than failing the caller's transaction."""

INT_RANGE = (-(2**31), 2**31 - 1)
"""What a PostgreSQL ``integer`` holds."""


def integer(option: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number within PostgreSQL's ``integer``: an ``int`` (not a ``bool``), or a ``float`` with no
    fraction, as JavaScript callers and JSON give them; at least ``minimum`` and at most ``maximum``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        wanted = "a whole number" if minimum is None else f"a whole number of at least {minimum}"
        raise InvalidOptionError(f"{option} must be {wanted}, not {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidOptionError(f"{option} must be at most {maximum}, not {value}")
    if not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise InvalidOptionError(f"{option} must fit a PostgreSQL integer, not {value}")
    return value


def flag(option: str, value: object) -> bool:
    """``True`` or ``False``, and nothing that merely looks like one (``1``, ``"yes"``)."""
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{option} must be True or False, not {value!r}")
    return value


def seconds(option: str, value: object, *, minimum: float | None = None, whole: bool = False) -> float:
    """A duration in seconds, from a number or a ``timedelta``: finite, within 1,000 years, at least
    ``minimum``, and a whole number of seconds with ``whole``."""
    if isinstance(value, dt.timedelta):
        amount = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        amount = float(value)
    else:
        raise InvalidOptionError(f"{option} must be a number of seconds or a timedelta, not {value!r}")
    if not math.isfinite(amount):
        raise InvalidOptionError(f"{option} must be finite, not {value!r}")
    if whole and not amount.is_integer():
        raise InvalidOptionError(f"{option} must be a whole number of seconds, not {value!r}")
    if minimum is not None and amount < minimum:
        raise InvalidOptionError(f"{option} must be at least {minimum:g}, not {value!r}")
    if abs(amount) > MAX_DURATION_SECONDS:
        raise InvalidOptionError(f"{option} must be within 1000 years, not {value!r}")
    return amount


def number_text(amount: float) -> str:
    """A number as pg-boss's SQL reads it: ``5``, or ``2.5``."""
    return str(int(amount)) if amount.is_integer() else repr(amount)


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be sent to PostgreSQL: no lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def too_long(text: str) -> str | None:
    """Why ``text`` cannot be a name or key (over :data:`MAX_NAME_BYTES` in UTF-8), or ``None``."""
    if len(text) * 4 <= MAX_NAME_BYTES or len(text.encode()) <= MAX_NAME_BYTES:
        return None
    return f"at most {MAX_NAME_BYTES} bytes of UTF-8 fit PostgreSQL's indexes"


def text(option: str, value: object) -> str:
    """A string PostgreSQL's ``text`` can hold and its indexes can take: no NUL, no lone surrogate, at most
    :data:`MAX_NAME_BYTES` bytes."""
    if not isinstance(value, str):
        raise InvalidOptionError(f"{option} must be a string, not {value!r}")
    if "\x00" in value or not is_utf8(value):
        raise InvalidOptionError(f"{option} {value!r} contains a NUL character or a lone surrogate")
    if too_long(value):
        raise InvalidOptionError(f"{option} {value[:40]!r}... is {len(value.encode())} bytes; {too_long(value)}")
    return value


def known(keys: Iterable[object], allowed: frozenset[str], what: str) -> None:
    """Refuse the ``keys`` that are not ``allowed``, naming them all."""
    unknown = sorted(key if isinstance(key, str) else repr(key) for key in set(keys) - allowed)
    if unknown:
        raise InvalidOptionError(f"unknown {what} option(s): {', '.join(unknown)}")


def not_here(keys: Iterable[object], allowed: frozenset[str], elsewhere: frozenset[str], what: str) -> None:
    """Refuse, with :class:`~sqla_boss.errors.UnsupportedOperationError`, the ``keys`` that are options of the
    other pg-boss schema version (in ``elsewhere``) and not of this one (``allowed``)."""
    other = sorted(key for key in keys if isinstance(key, str) and key in elsewhere and key not in allowed)
    if other:
        raise UnsupportedOperationError(
            f"{what} option(s) {', '.join(other)} are pg-boss 12's (schema version 46); this schema is at version 24"
        )


def optional_integer(options: Mapping[str, Any], key: str, *, minimum: int | None = None) -> int | None:
    """``options[key]`` through :func:`integer`, or ``None`` when absent or ``None``."""
    value = options.get(key)
    return None if value is None else integer(key, value, minimum=minimum)


def optional_flag(options: Mapping[str, Any], key: str) -> bool | None:
    """``options[key]`` through :func:`flag`, or ``None`` when absent or ``None``."""
    return None if options.get(key) is None else flag(key, options[key])


def optional_text(options: Mapping[str, Any], key: str) -> str | None:
    """``options[key]`` through :func:`text`, or ``None`` when absent or ``None``."""
    return None if options.get(key) is None else text(key, options[key])


__all__ = [
    "INT_RANGE",
    "MAX_DURATION_SECONDS",
    "MAX_NAME_BYTES",
    "flag",
    "integer",
    "is_utf8",
    "known",
    "number_text",
    "optional_flag",
    "optional_integer",
    "optional_text",
    "seconds",
    "text",
    "too_long",
]
