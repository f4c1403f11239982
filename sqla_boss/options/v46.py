"""The options of pg-boss 12.38 (schema version 46), checked as PGBOSS12.md says pg-boss checks them, and more
strictly where pg-boss lets a mistake through to a failed statement or a silently ignored key.

Version 24's options live beside these (:mod:`~sqla_boss.options.jobs`, :mod:`~sqla_boss.options.queues`); what
both share (a whole number, a duration, a name's bytes, ``start_after``'s forms) comes from the same primitives.
"""

from __future__ import annotations

import dataclasses
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


_NAME_AND_DATA = frozenset({"name", "data"})


def insert_record(job: Mapping[str, Any]) -> dict[str, Any]:
    """One element of an ``insert`` batch, validated, as its ``json_to_recordset`` object.

    The common job, a name and data only, takes a short path: it runs per job of batches of thousands."""
    if isinstance(job, dict) and "name" in job and job.keys() <= _NAME_AND_DATA:
        data = job.get("data")
        record = {"name": queue_name(job["name"])}
        if data is not None:
            check_structure(data, what="job data")
            record["data"] = data
        return record
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

V46_POLICIES = frozenset({"exclusive", "key_strict_fifo"})
"""The queue policies pg-boss 12 added to pg-boss 10's four."""

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
    "V46_POLICIES",
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


# ------------------------------------------------------------ update and upsert (§4.7), flows (§4.8)

UPDATE_OPTIONS = frozenset(
    {
        "id",
        "singleton_key",
        "match",
        "priority",
        "start_after",
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
    }
)
"""The options of ``update`` (and, with ``trace_context``, of ``upsert``): the target (``id`` or ``singleton_key``,
and ``match``) and the settings it may change. pg-boss 12 leaves the throttling options out: a job keeps its slot."""

UPSERT_OPTIONS = UPDATE_OPTIONS | {"trace_context"}
"""``upsert``'s options: ``update``'s, and the ``trace_context`` a job it inserts stores."""

MATCHES = ("newest", "oldest", "all")
"""Which of several queued jobs of one key an ``update`` by key changes, by ``created_on`` (pg-boss 12's ``match``)."""

CLEARED_BY_NONE = frozenset({"retry_delay_max", "heartbeat_seconds", "dead_letter"})
"""The settings ``update`` clears when given ``None``, as pg-boss 12 does when its caller passes ``null``; ``None``
leaves every other setting as it is."""


@dataclass(frozen=True)
class JobUpdate:
    """A validated ``update`` or ``upsert``: its target, the changes (pg-boss 12's camelCase JSON document, only
    the keys given) and, for ``upsert``, the job to insert when nothing matched."""

    job_id: uuid.UUID | None
    key: str | None
    match: str
    changes: dict[str, Any]
    insert: JobInput


def update_start_after(value: object) -> str | None:
    """``start_after`` of an update: :func:`~sqla_boss.options.timing.start_after_text`, except that a number
    (or ``timedelta``) of 0 or less is kept, so it moves a deferred job to now, or into the past (§4.7)."""
    if isinstance(value, dt.timedelta) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        amount = seconds("start_after", value)
        return number_text(amount) if amount <= 0 else start_after_text(value)
    return start_after_text(value)


def job_update(name: str, data: Any, options: Mapping[str, Any], *, keep_data: bool, upsert: bool) -> JobUpdate:
    """Validate the arguments of ``update`` (or ``upsert``) as pg-boss 12 does, and more strictly: unknown
    options are refused, a dead letter queue must be a valid name, ``None`` keeps a setting (but clears
    :data:`CLEARED_BY_NONE`). ``keep_data``: no ``data`` was given, so the job's stays."""
    operation = "upsert" if upsert else "update"
    _refuse_unknown(options, UPSERT_OPTIONS if upsert else UPDATE_OPTIONS, operation)
    given = {key: value for key, value in options.items() if value is not None or key in CLEARED_BY_NONE}
    target_id, key = given.get("id"), given.get("singleton_key")
    if (target_id is None) == (key is None):
        raise InvalidOptionError(f"{operation}() requires exactly one of id or singleton_key")
    match = given.get("match")
    if match is not None and target_id is not None:
        raise InvalidOptionError("match is only valid when targeting jobs by singleton_key")
    if match is not None and match not in MATCHES:
        raise InvalidOptionError(f"match must be one of: {', '.join(MATCHES)}; not {match!r}")
    backoff = _optional_flag(given, "retry_backoff")
    if given.get("retry_delay_max") is not None and backoff is not True:
        raise InvalidOptionError("retry_delay_max can only be set together with retry_backoff=True")
    group_id, group_tier = group(given.get("group"))
    if not keep_data:
        json_text(data, what="job data")
    insert = JobInput(
        name=name,
        data=None if keep_data else data,
        id=None if target_id is None else job_id(target_id, operation=operation),
        priority=_optional_integer(given, "priority"),
        start_after=None if "start_after" not in given else update_start_after(given["start_after"]),
        singleton_key=None if key is None else text("singleton_key", key),
        group_id=group_id,
        group_tier=group_tier,
        expire_in_seconds=_expire(given),
        delete_after_seconds=_whole_seconds(given, "delete_after_seconds", minimum=0, maximum=_MAX_SECONDS),
        retention_seconds=_whole_seconds(
            given, "retention_seconds", minimum=1, maximum=min(_MAX_SECONDS, int(MAX_DURATION_SECONDS))
        ),
        retry_limit=_optional_integer(given, "retry_limit", minimum=0),
        retry_delay=_whole_seconds(given, "retry_delay", minimum=0),
        retry_backoff=backoff,
        retry_delay_max=_whole_seconds(given, "retry_delay_max", minimum=0),
        heartbeat_seconds=_heartbeat(given),
        dead_letter=_optional_name(given, "dead_letter"),
        trace_context=_trace_context(given.get("trace_context")),
    )
    changes: dict[str, Any] = {} if keep_data else {"data": data}
    for camel, value, present in (
        ("priority", insert.priority, "priority" in given),
        ("startAfter", insert.start_after, "start_after" in given),
        ("retentionSeconds", insert.retention_seconds, "retention_seconds" in given),
        ("expireInSeconds", insert.expire_in_seconds, "expire_in_seconds" in given),
        ("deleteAfterSeconds", insert.delete_after_seconds, "delete_after_seconds" in given),
        ("retryLimit", insert.retry_limit, "retry_limit" in given),
        ("retryDelay", insert.retry_delay, "retry_delay" in given),
        ("retryBackoff", insert.retry_backoff, "retry_backoff" in given),
        ("retryDelayMax", insert.retry_delay_max, "retry_delay_max" in given),
        ("deadLetter", insert.dead_letter, "dead_letter" in given),
        ("heartbeatSeconds", insert.heartbeat_seconds, "heartbeat_seconds" in given),
        ("groupId", group_id, group_id is not None),
        ("groupTier", group_tier, group_tier is not None),
    ):
        if present:
            changes[camel] = value
    return JobUpdate(
        job_id=insert.id, key=insert.singleton_key, match=match or "newest", changes=changes, insert=insert
    )


FLOW_JOB_KEYS = frozenset({"ref", "name", "data", "options", "depends_on"})
"""What each job of a ``flow`` holds: its ``ref`` in the flow, its queue ``name``, ``data``, send ``options``
and the refs it ``depends_on``."""


@dataclass(frozen=True)
class FlowJob:
    """One job of a validated flow: the job to insert, with its flow columns."""

    ref: str
    job: JobInput
    parents: tuple[str, ...]
    blocking: bool

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def id(self) -> uuid.UUID:
        assert self.job.id is not None  # flow_jobs gives every job its id
        return self.job.id

    def record(self) -> dict[str, Any]:
        """The job's JSON object for the flow's insert: :meth:`JobInput.record` and the flow columns."""
        record = self.job.record()
        if self.parents:
            record.update(blocked=True, pending_dependencies=len(self.parents))
        if self.blocking:
            record["blocking"] = True
        return record


def flow_jobs(jobs: object) -> list[FlowJob]:
    """Validate a ``flow`` as pg-boss 12 does (§4.8): at least two jobs, unique non-empty refs, valid queue
    names, some ``depends_on``, every dependency a ref of the flow and not the job itself, no cycle; each
    job's options as :func:`send_input`'s (without ``singleton_next_slot``, which a flow cannot honour). Every
    job gets its id here (``options["id"]`` or a new one); two jobs of one queue may not share one."""
    if isinstance(jobs, (str, bytes, Mapping)) or not isinstance(jobs, (list, tuple)):
        raise InvalidOptionError(f"flow() takes a list of jobs (mappings), not {type(jobs).__name__}")
    if len(jobs) < 2:
        raise InvalidOptionError("flow() requires at least 2 jobs")
    refs: dict[str, Mapping[str, Any]] = {}
    for job in jobs:
        if not isinstance(job, Mapping):
            raise InvalidOptionError(f"each flow job must be a mapping, not {type(job).__name__}")
        extra = sorted(str(key) for key in job if key not in FLOW_JOB_KEYS)
        if extra:
            raise InvalidOptionError(f"a flow job takes {', '.join(sorted(FLOW_JOB_KEYS))}; not {', '.join(extra)}")
        ref = job.get("ref")
        if not isinstance(ref, str) or not ref:
            raise InvalidOptionError(f"each flow job must have a non-empty string ref, not {ref!r}")
        if ref in refs:
            raise InvalidOptionError(f"duplicate ref {ref!r} in flow")
        refs[ref] = job
    parents: dict[str, tuple[str, ...]] = {}
    for ref, job in refs.items():
        depends_on = job.get("depends_on") or ()
        if isinstance(depends_on, (str, bytes, Mapping)) or not isinstance(depends_on, (list, tuple)):
            raise InvalidOptionError(f"depends_on of ref {ref!r} must be a list of refs, not {depends_on!r}")
        for parent in depends_on:
            if not isinstance(parent, str) or not parent:
                raise InvalidOptionError(f"depends_on entries must be non-empty strings, not {parent!r}")
            if parent == ref:
                raise InvalidOptionError(f"job {ref!r} cannot depend on itself")
            if parent not in refs:
                raise InvalidOptionError(f"depends_on ref {parent!r} of job {ref!r} is not in the flow")
        parents[ref] = tuple(dict.fromkeys(depends_on))
    if not any(parents.values()):
        raise InvalidOptionError("flow() requires at least one job with depends_on")
    cycle = _dependency_cycle(parents)
    if cycle:
        raise InvalidOptionError(f"flow contains a dependency cycle: {' -> '.join(cycle)}")
    blocking = {parent for ref_parents in parents.values() for parent in ref_parents}
    flow: list[FlowJob] = []
    seen: set[tuple[str, uuid.UUID]] = set()
    for ref, job in refs.items():
        options = job.get("options") or {}
        if not isinstance(options, Mapping):
            raise InvalidOptionError(f"options of flow job {ref!r} must be a mapping, not {options!r}")
        if options.get("singleton_next_slot") is not None:
            raise InvalidOptionError("a flow job cannot debounce (singleton_next_slot): it is inserted once")
        data = job.get("data")
        json_text(data, what="job data")
        validated = job_input(job.get("name"), data, options, what="send")
        validated = dataclasses.replace(validated, id=validated.id or uuid.uuid4())
        assert validated.id is not None
        if (validated.name, validated.id) in seen:
            raise InvalidOptionError(f"two jobs of flow queue {validated.name!r} have the id {validated.id}")
        seen.add((validated.name, validated.id))
        flow.append(FlowJob(ref=ref, job=validated, parents=parents[ref], blocking=ref in blocking))
    return flow


def _dependency_cycle(parents: Mapping[str, tuple[str, ...]]) -> list[str]:
    """A cycle of the dependency graph as refs ``[a, b, ..., a]`` (each depending on the next), or ``[]``."""
    done: set[str] = set()
    for start in parents:
        path: list[str] = []
        on_path: dict[str, int] = {}
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            ref, index = stack.pop()
            if index == 0:
                if ref in on_path:
                    return [*path[on_path[ref] :], ref]
                if ref in done:
                    continue
                on_path[ref] = len(path)
                path.append(ref)
            if index < len(parents[ref]):
                stack.append((ref, index + 1))
                stack.append((parents[ref][index], 0))
            else:
                done.add(ref)
                path.pop()
                del on_path[ref]
    return []


def list_limit(operation: str, value: object) -> int:
    """The ``limit`` of a list read (``get_dependencies``, ``preview_redrive``): 1 to 100,000, as pg-boss 12."""
    return integer(f"{operation}: limit", value, minimum=1, maximum=100_000)


__all__ += [
    "CLEARED_BY_NONE",
    "FLOW_JOB_KEYS",
    "MATCHES",
    "UPDATE_OPTIONS",
    "UPSERT_OPTIONS",
    "FlowJob",
    "JobUpdate",
    "flow_jobs",
    "job_update",
    "list_limit",
    "update_start_after",
]
