"""Schedule options: the cron expression, the time zone, and the send options a schedule stores in pg-boss's
camelCase, as a JavaScript caller would have given them."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
import zoneinfo
from collections.abc import Mapping
from typing import Any

from sqla_boss import cron as cron_rules
from sqla_boss.errors import InvalidCronError, InvalidTimezoneError
from sqla_boss.models import JobState, QueuePolicy
from sqla_boss.options.payloads import json_text
from sqla_boss.options.timing import start_after_text


def cron_rule(cron: object, tz: object) -> tuple[str, str]:
    """A schedule's cron expression and time zone (``None`` means UTC), checked together: the expression must
    be one pg-boss's cron-parser (and croniter) can evaluate in that zone.

    Raises:
        InvalidCronError: an empty or unreadable expression, or a step that never repeats in its field.
        InvalidTimezoneError: an unknown zone.
    """
    if not isinstance(cron, str) or not cron.strip():
        raise InvalidCronError(f"a cron expression must be a non-empty string, not {cron!r}")
    timezone = time_zone(tz)
    cron_rules.previous_match(cron, timezone, dt.datetime.now(dt.timezone.utc))
    cron_rules.check_steps(cron)
    return cron, timezone


def time_zone(tz: object) -> str:
    """An IANA time zone name JavaScript's ``Intl`` knows; ``None`` means UTC. pg-boss itself only finds a
    bad zone when its cron pass fails on it, and one such schedule stops every schedule (trap 14).

    Raises:
        InvalidTimezoneError: an unknown zone.
    """
    if tz is None:
        return "UTC"
    if not isinstance(tz, str) or not tz:
        raise InvalidTimezoneError(f"a time zone must be an IANA name such as 'Europe/Paris', not {tz!r}")
    if tz not in _iana_time_zones():
        raise InvalidTimezoneError(f"unknown time zone {tz!r}; pg-boss's cron pass would fail on it (trap 14)")
    return tz


@functools.cache
def _iana_time_zones() -> frozenset[str]:
    # zoneinfo also lists files of the system's database that are no zone names JavaScript's Intl knows,
    # and one schedule pg-boss cannot evaluate stops all of them.
    not_zones = {"Factory", "localtime", "posixrules"}
    return frozenset(zone for zone in zoneinfo.available_timezones() if zone not in not_zones) | {"UTC"}


def stored_options(options: Mapping[str, Any], tz: str | None) -> str:
    """A schedule's send options as pg-boss stores them: camelCase keys, JavaScript's values (seconds, ISO
    strings), plus ``tz`` when one was given; JSON text. The options themselves are checked by
    :func:`~sqla_boss.options.jobs.send_input` first."""
    stored = {_camel(key): _json_value(value) for key, value in options.items()}
    if tz is not None:
        stored["tz"] = tz
    return json_text(stored, what="schedule options")


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def _json_value(value: Any) -> Any:
    """An option value as a JavaScript caller would have given it: seconds, ISO strings, plain JSON."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    if isinstance(value, dt.datetime):
        stamp = start_after_text(value)  # refuses naive datetimes
        if stamp is not None and value.microsecond % 1000 == 0:
            # As a JavaScript Date would be stored (toISOString(): milliseconds); microseconds only if any.
            return stamp[:-4] + "Z"
        return stamp
    if isinstance(value, (uuid.UUID, JobState, QueuePolicy)):
        return str(value)
    return value


__all__ = ["cron_rule", "stored_options", "time_zone"]
