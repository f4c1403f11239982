"""The options of pg-boss 12.38 (schema version 46), checked as PGBOSS12.md says pg-boss checks them, and more
strictly where pg-boss lets a mistake through to a failed statement or a silently ignored key.

Version 24's options live beside these (:mod:`~sqla_boss.options.jobs`, :mod:`~sqla_boss.options.queues`); what
both share (a whole number, a duration, a name's bytes, ``start_after``'s forms) comes from the same primitives.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqla_boss.errors import InvalidOptionError, InvalidQueueNameError, UnsupportedOperationError
from sqla_boss.options.names import job_id
from sqla_boss.options.payloads import check_structure, json_text
from sqla_boss.options.timing import MAX_EXPIRE_SECONDS, start_after_text
from sqla_boss.options.values import (
    MAX_DURATION_SECONDS,
    flag,
    integer,
    is_utf8,
    number_text,
    seconds,
    text,
    too_long,
)

_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")

V24_SPELLINGS = {
    "singleton_minutes": "singleton_seconds",
    "singleton_hours": "singleton_seconds",
    "expire_in_minutes": "expire_in_seconds",
    "expire_in_hours": "expire_in_seconds",
    "retention_minutes": "retention_seconds",
    "retention_hours": "retention_seconds",
    "retention_days": "retention_seconds",
    "keep_until": "retention_seconds",
}
"""Options of pg-boss 10 that pg-boss 12 no longer has (it ignores them silently), and what replaces each."""


def queue_name(name: object, *, what: str = "queue name") -> str:
    """A queue name as pg-boss 12 checks it, ``^[\\w.\\-/]+$`` with ASCII ``\\w``, within
    :data:`~sqla_boss.options.values.MAX_NAME_BYTES`.

    Raises:
        InvalidQueueNameError: with the reason.
    """
    if isinstance(name, str) and what == "queue name":
        return _valid_name(name)
    return _name(name, what)


@functools.lru_cache(maxsize=4096)
def _valid_name(name: str) -> str:
    return _name(name, "queue name")


def _name(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise InvalidQueueNameError(f"{what} must be a string, not {type(name).__name__}")
    if _NAME.fullmatch(name) is None:
        raise InvalidQueueNameError(
            f"{what} {name!r} can only contain letters, digits, underscores, hyphens, periods or forward slashes"
        )
    reason = too_long(name)
    if reason:
        raise InvalidQueueNameError(f"{what} {name[:40]!r}... is {len(name.encode())} bytes; {reason}")
    return name


def key_name(value: object, *, what: str = "key") -> str:
    """A schedule key: the queue name's characters, or ``''`` (the default key)."""
    if value == "":
        return ""
    try:
        return _name(value, what)
    except InvalidQueueNameError as exc:
        raise InvalidOptionError(str(exc)) from None


def _optional_name(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    return None if value is None else queue_name(value, what=key)


def _whole_seconds(options: Mapping[str, Any], key: str, *, minimum: int, maximum: int | None = None) -> int | None:
    """A duration in whole seconds (a number or a ``timedelta``), or ``None`` when absent or ``None``."""
    value = options.get(key)
    if value is None:
        return None
    amount = seconds(key, value, whole=True) if isinstance(value, dt.timedelta) else value
    return integer(key, amount, minimum=minimum, maximum=maximum)


def _optional_integer(options: Mapping[str, Any], key: str, *, minimum: int | None = None) -> int | None:
    value = options.get(key)
    return None if value is None else integer(key, value, minimum=minimum)


def _optional_flag(options: Mapping[str, Any], key: str) -> bool | None:
    return None if options.get(key) is None else flag(key, options[key])


def _refuse_unknown(options: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(key if isinstance(key, str) else repr(key) for key in set(options) - allowed)
    if not unknown:
        return
    replaced = [f"{key} (use {V24_SPELLINGS[key]})" for key in unknown if key in V24_SPELLINGS]
    if replaced:
        raise UnsupportedOperationError(
            f"pg-boss 12 (schema version 46) has no {what} option {', '.join(replaced)}; pg-boss would ignore it"
        )
    raise InvalidOptionError(f"unknown {what} option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")


def _retry_delay_max(options: Mapping[str, Any], backoff: bool | None) -> int | None:
    value = _whole_seconds(options, "retry_delay_max", minimum=0)
    if value is not None and backoff is not True:
        raise InvalidOptionError("retry_delay_max can only be set together with retry_backoff=True")
    return value


def _heartbeat(options: Mapping[str, Any]) -> int | None:
    return _whole_seconds(options, "heartbeat_seconds", minimum=10)


def _expire(options: Mapping[str, Any]) -> int | None:
    return _whole_seconds(options, "expire_in_seconds", minimum=1, maximum=MAX_EXPIRE_SECONDS)


_MAX_SECONDS = 2**31 - 1  # the integer columns


# -------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobInput:
    """One job to insert into a version-46 schema, in the terms of the insert statement. ``None``: fall back
    to the queue's setting."""

    name: str
    data: Any = None
    id: uuid.UUID | None = None
    priority: int | None = None
    start_after: str | None = None
    singleton_key: str | None = None
    singleton_seconds: int | None = None
    singleton_offset: int = 0
    group_id: str | None = None
    group_tier: str | None = None
    expire_in_seconds: int | None = None
    delete_after_seconds: int | None = None
    retention_seconds: int | None = None
    retry_limit: int | None = None
    retry_delay: int | None = None
    retry_backoff: bool | None = None
    retry_delay_max: int | None = None
    heartbeat_seconds: int | None = None
    dead_letter: str | None = None
    trace_context: Mapping[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """The JSON object of the job for ``json_to_recordset``, nulls left out."""
        record: dict[str, Any] = {"name": self.name}
        for key, value in (
            ("data", self.data),
            ("id", None if self.id is None else str(self.id)),
            ("priority", self.priority),
            ("start_after", self.start_after),
            ("singleton_key", self.singleton_key),
            ("singleton_seconds", self.singleton_seconds),
            ("singleton_offset", self.singleton_offset or None),
            ("group_id", self.group_id),
            ("group_tier", self.group_tier),
            ("expire_in_seconds", self.expire_in_seconds),
            ("delete_after_seconds", self.delete_after_seconds),
            ("retention_seconds", self.retention_seconds),
            ("retry_limit", self.retry_limit),
            ("retry_delay", self.retry_delay),
            ("retry_backoff", self.retry_backoff),
            ("retry_delay_max", self.retry_delay_max),
            ("heartbeat_seconds", self.heartbeat_seconds),
            ("dead_letter", self.dead_letter),
            ("trace_context", None if self.trace_context is None else dict(self.trace_context)),
        ):
            if value is not None:
                record[key] = value
        return record


SEND_OPTIONS = frozenset(
    {
        "id",
        "priority",
        "start_after",
        "singleton_key",
        "singleton_seconds",
        "singleton_next_slot",
        "group",
        "dead_letter",
        "retry_limit",
        "retry_delay",
        "retry_backoff",
        "retry_delay_max",
        "expire_in_seconds",
        "retention_seconds",
        "delete_after_seconds",
        "heartbeat_seconds",
        "trace_context",
    }
)
"""Every pg-boss 12 send option, in snake_case (``trace_context``: the OpenTelemetry carrier to store)."""

INSERT_FIELDS = (SEND_OPTIONS - {"singleton_next_slot"}) | {"name", "data"}
"""What each job of an ``insert`` may hold: the send options and its queue's ``name`` and ``data``."""


def group(value: object) -> tuple[str | None, str | None]:
    """``group={"id": ..., "tier": ...}`` as (group_id, group_tier); ``tier`` is optional."""
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        raise InvalidOptionError(f"group must be a mapping with an id (and a tier), not {value!r}")
    extra = sorted(str(key) for key in value if key not in ("id", "tier"))
    if extra:
        raise InvalidOptionError(f"group takes id and tier, not {', '.join(extra)}")
    group_id, tier = value.get("id"), value.get("tier")
    if not isinstance(group_id, str) or not group_id:
        raise InvalidOptionError(f"group id must be a non-empty string, not {group_id!r}")
    if tier is not None and (not isinstance(tier, str) or not tier):
        raise InvalidOptionError(f"group tier must be a non-empty string, not {tier!r}")
    return text("group id", group_id), None if tier is None else text("group tier", tier)


def _trace_context(value: object) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidOptionError(f"trace_context must be a mapping of strings (a propagator's carrier), not {value!r}")
    json_text(value, what="trace_context")  # what JSON cannot carry is refused here, under its own name
    return value


def _start_after(value: object, *, clamp: bool) -> str | None:
    """``start_after`` as the insert statement reads it. A send takes 0 or less as now (pg-boss 12's send drops
    it); an ``insert`` does not clamp, so a negative number of seconds starts the job that long ago, as pg-boss
    12's ``insert`` does (PGBOSS12.md §4.6)."""
    if not clamp and isinstance(value, (int, float, dt.timedelta)) and not isinstance(value, bool):
        amount = seconds("start_after", value)
        if amount < 0:
            return number_text(amount)
    return start_after_text(value)


def job_input(name: object, data: Any, options: Mapping[str, Any], *, what: str = "send") -> JobInput:
    """Validate one job of a ``send`` (or, with ``what="insert"``, one element of an ``insert``)."""
    allowed = SEND_OPTIONS if what == "send" else INSERT_FIELDS
    _refuse_unknown(options, allowed, what)
    backoff = _optional_flag(options, "retry_backoff")
    group_id, group_tier = group(options.get("group"))
    raw_slot = options.get("singleton_seconds")
    return JobInput(
        name=queue_name(name),
        data=data,
        id=None if options.get("id") is None else job_id(options["id"], operation=what),
        priority=_optional_integer(options, "priority"),
        start_after=_start_after(options.get("start_after"), clamp=what == "send"),
        singleton_key=None if options.get("singleton_key") is None else text("singleton_key", options["singleton_key"]),
        singleton_seconds=None if raw_slot is None else _whole_seconds(options, "singleton_seconds", minimum=1),
        group_id=group_id,
        group_tier=group_tier,
        expire_in_seconds=_expire(options),
        delete_after_seconds=_whole_seconds(options, "delete_after_seconds", minimum=0, maximum=_MAX_SECONDS),
        retention_seconds=_whole_seconds(
            options, "retention_seconds", minimum=1, maximum=min(_MAX_SECONDS, int(MAX_DURATION_SECONDS))
        ),
        retry_limit=_optional_integer(options, "retry_limit", minimum=0),
        retry_delay=_whole_seconds(options, "retry_delay", minimum=0),
        retry_backoff=backoff,
        retry_delay_max=_retry_delay_max(options, backoff),
        heartbeat_seconds=_heartbeat(options),
        dead_letter=_optional_name(options, "dead_letter"),
        trace_context=_trace_context(options.get("trace_context")),
    )


def send_input(name: object, data: Any, options: Mapping[str, Any]) -> tuple[JobInput, bool]:
    """A ``send``: its :class:`JobInput`, and whether it debounces (``singleton_next_slot``)."""
    json_text(data)
    job = job_input(name, data, options)
    next_slot = options.get("singleton_next_slot")
    return job, bool(next_slot is not None and flag("singleton_next_slot", next_slot))


def insert_record(job: Mapping[str, Any]) -> dict[str, Any]:
    """One element of an ``insert`` batch, validated, as its ``json_to_recordset`` object."""
    if not isinstance(job, Mapping):
        raise InvalidOptionError(f"each job to insert must be a mapping, not {type(job).__name__}")
    if "name" not in job:
        raise InvalidOptionError("each job to insert needs a name")
    validated = job_input(job["name"], job.get("data"), job, what="insert")
    check_structure(validated.data, what="job data")
    return validated.record()


# ------------------------------------------------------------------------------------------- queues

QUEUE_OPTIONS = frozenset(
    {
        "policy",
        "retry_limit",
        "retry_delay",
        "retry_backoff",
        "retry_delay_max",
        "expire_in_seconds",
        "retention_seconds",
        "delete_after_seconds",
        "dead_letter",
        "partition",
        "heartbeat_seconds",
        "notify",
        "warning_queue_size",
    }
)
"""Every pg-boss 12 queue option, in snake_case."""

CLEARABLE = frozenset({"retry_delay_max", "heartbeat_seconds", "dead_letter"})
"""The settings ``update_queue`` replaces whenever given, so ``None`` clears them (pg-boss 12 §3.3)."""

_CAMEL = {
    "policy": "policy",
    "retry_limit": "retryLimit",
    "retry_delay": "retryDelay",
    "retry_backoff": "retryBackoff",
    "retry_delay_max": "retryDelayMax",
    "expire_in_seconds": "expireInSeconds",
    "retention_seconds": "retentionSeconds",
    "delete_after_seconds": "deleteAfterSeconds",
    "dead_letter": "deadLetter",
    "partition": "partition",
    "heartbeat_seconds": "heartbeatSeconds",
    "notify": "notify",
    "warning_queue_size": "warningQueueSize",
}


def queue_options(options: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """The JSON options of ``create_queue`` (``creating``) or the changes of ``update_queue``, in pg-boss's
    camelCase keys, validated. ``None`` values are left out, except, when updating, for the settings of
    :data:`CLEARABLE`, where ``None`` clears."""
    from sqla_boss.v46.models import QueuePolicy  # the room of 46 builds on the options

    if not creating:
        for fixed in ("policy", "partition"):
            if fixed in options:
                raise InvalidOptionError(f"a queue's {fixed} cannot be changed after it is created")
        if not options:
            raise InvalidOptionError("update_queue() needs at least one setting to change")
    _refuse_unknown(options, QUEUE_OPTIONS, "queue")
    policy = options.get("policy")
    if policy is not None:
        try:
            policy = QueuePolicy(policy).value
        except ValueError:
            choices = ", ".join(member.value for member in QueuePolicy)
            raise InvalidOptionError(f"{policy!r} is not a valid queue policy ({choices})") from None
    backoff = _optional_flag(options, "retry_backoff")
    values: dict[str, Any] = {
        "policy": policy if policy is not None else ("standard" if creating else None),
        "retry_limit": _optional_integer(options, "retry_limit", minimum=0),
        "retry_delay": _whole_seconds(options, "retry_delay", minimum=0),
        "retry_backoff": backoff,
        "retry_delay_max": _retry_delay_max(options, backoff),
        "expire_in_seconds": _expire(options),
        "retention_seconds": _whole_seconds(options, "retention_seconds", minimum=1, maximum=_MAX_SECONDS),
        "delete_after_seconds": _whole_seconds(options, "delete_after_seconds", minimum=0, maximum=_MAX_SECONDS),
        "dead_letter": _optional_name(options, "dead_letter"),
        "partition": _optional_flag(options, "partition"),
        "heartbeat_seconds": _heartbeat(options),
        "notify": _optional_flag(options, "notify"),
        "warning_queue_size": _optional_integer(options, "warning_queue_size", minimum=0),
    }
    return {
        _CAMEL[key]: value
        for key, value in values.items()
        if value is not None or (not creating and key in CLEARABLE and key in options)
    }


# -------------------------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class FetchOptions:
    """pg-boss 12's ``fetch()`` options, validated."""

    batch_size: int
    include_metadata: bool
    ignore_start_after: bool
    min_priority: int | None
    max_priority: int | None
    group_default: int | None
    group_tiers: dict[str, int]

    @classmethod
    def of(
        cls,
        batch_size: object,
        include_metadata: object,
        ignore_start_after: object,
        min_priority: object,
        max_priority: object,
        group_concurrency: object,
    ) -> FetchOptions:
        """Validate each option: ``group_concurrency`` is a whole number ≥ 1 or ``{"default": n, "tiers":
        {tier: n}}``; ``min_priority`` ≤ ``max_priority``."""
        low = None if min_priority is None else integer("min_priority", min_priority)
        high = None if max_priority is None else integer("max_priority", max_priority)
        if low is not None and high is not None and low > high:
            raise InvalidOptionError(f"min_priority ({low}) must not exceed max_priority ({high})")
        default, tiers = _group_concurrency(group_concurrency)
        return cls(
            batch_size=integer("batch_size", batch_size, minimum=1),
            include_metadata=flag("include_metadata", include_metadata),
            ignore_start_after=flag("ignore_start_after", ignore_start_after),
            min_priority=low,
            max_priority=high,
            group_default=default,
            group_tiers=tiers,
        )


def _group_concurrency(value: object) -> tuple[int | None, dict[str, int]]:
    if value is None:
        return None, {}
    if not isinstance(value, Mapping):
        return integer("group_concurrency", value, minimum=1), {}
    extra = sorted(str(key) for key in value if key not in ("default", "tiers"))
    if extra:
        raise InvalidOptionError(f"group_concurrency takes default and tiers, not {', '.join(extra)}")
    default = integer("group_concurrency default", value.get("default"), minimum=1)
    tiers = value.get("tiers") or {}
    if not isinstance(tiers, Mapping):
        raise InvalidOptionError(f"group_concurrency tiers must be a mapping of tier to limit, not {tiers!r}")
    checked: dict[str, int] = {}
    for tier, limit in tiers.items():
        if not isinstance(tier, str) or not tier or not is_utf8(tier):
            raise InvalidOptionError(f"a group_concurrency tier must be a non-empty string, not {tier!r}")
        checked[tier] = integer(f"group_concurrency tier {tier!r}", limit, minimum=1)
    return default, checked


__all__ = [
    "CLEARABLE",
    "INSERT_FIELDS",
    "QUEUE_OPTIONS",
    "SEND_OPTIONS",
    "V24_SPELLINGS",
    "FetchOptions",
    "JobInput",
    "group",
    "insert_record",
    "job_input",
    "key_name",
    "queue_name",
    "queue_options",
    "send_input",
]
