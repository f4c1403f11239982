"""Queue options (``create_queue``, ``update_queue``), job states, and fetch options."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqla_boss.errors import InvalidOptionError, UnsupportedOperationError
from sqla_boss.models import JobState, QueuePolicy
from sqla_boss.options import v46
from sqla_boss.options.names import optional_queue_name
from sqla_boss.options.timing import expire_in_seconds, optional_delay
from sqla_boss.options.values import flag, integer, known, not_here, optional_flag, optional_integer

QUEUE_OPTIONS = frozenset(
    {"policy", "retry_limit", "retry_delay", "retry_backoff", "expire_in_seconds", "retention_minutes", "dead_letter"}
)


class Keep(enum.Enum):
    """The default of ``update_queue``'s settings: keep the stored value (``None`` clears the settings pg-boss
    12 lets clear, and keeps the others)."""

    KEEP = "keep"


KEEP = Keep.KEEP

ALL_QUEUE_OPTIONS = QUEUE_OPTIONS | v46.QUEUE_OPTIONS
"""The queue options of both schema versions: each version refuses the other's."""


def queue_settings(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The queue options given among a method's ``locals()`` (neither ``None`` nor :data:`KEEP`, but ``None``
    where an ``update_queue`` clears): the one place that lists them for both APIs and both versions."""
    updating = any(arguments.get(key) is KEEP for key in ALL_QUEUE_OPTIONS)
    return {
        key: arguments[key]
        for key in sorted(ALL_QUEUE_OPTIONS)
        if key in arguments
        and arguments[key] is not KEEP
        and (arguments[key] is not None or (updating and key in v46.CLEARABLE))
    }


def queue_policy(value: object) -> QueuePolicy:
    """A :class:`~sqla_boss.models.QueuePolicy`, or its name."""
    try:
        return QueuePolicy(value)
    except ValueError:
        if value in v46.V46_POLICIES:
            raise UnsupportedOperationError(
                f"queue policy {value!r} is pg-boss 12's (schema version 46); this schema is at version 24"
            ) from None
        choices = ", ".join(policy.value for policy in QueuePolicy)
        raise InvalidOptionError(f"{value!r} is not a valid queue policy ({choices})") from None


def queue_options(options: Mapping[str, Any], *, policy_default: QueuePolicy | None) -> dict[str, Any]:
    """The ``create_queue`` JSON options (pg-boss's camelCase keys), validated. ``None`` values are left out."""
    not_here(options, QUEUE_OPTIONS, v46.QUEUE_OPTIONS, "queue")
    known(options, QUEUE_OPTIONS, "queue")
    policy = options.get("policy")
    expire = options.get("expire_in_seconds")
    retention = options.get("retention_minutes")
    values = {
        "policy": (queue_policy(policy).value if policy is not None else policy_default and policy_default.value),
        "retryLimit": optional_integer(options, "retry_limit", minimum=0),
        "retryDelay": optional_delay(options, "retry_delay"),
        "retryBackoff": optional_flag(options, "retry_backoff"),
        "expireInSeconds": None if expire is None else _whole_expire(expire),
        "retentionMinutes": None if retention is None else integer("retention_minutes", retention, minimum=1),
        "deadLetter": optional_queue_name(options, "dead_letter"),
    }
    return {key: value for key, value in values.items() if value is not None}


def _whole_expire(value: object) -> int:
    seconds = expire_in_seconds({"expire_in_seconds": value})
    assert seconds is not None
    if not seconds.is_integer():
        raise InvalidOptionError(f"a queue's expire_in_seconds must be a whole number, not {value!r}")
    return int(seconds)


def job_state(value: object, *, what: str = "state") -> JobState:
    """A :class:`~sqla_boss.models.JobState`, or its name."""
    try:
        return JobState(value)
    except ValueError:
        raise InvalidOptionError(f"{value!r} is not a valid {what}") from None


# ------------------------------------------------------------------------------------------------ fetch


@dataclass(frozen=True)
class FetchOptions:
    """``fetch()``'s options, validated."""

    batch_size: int
    priority: bool
    include_metadata: bool
    ignore_start_after: bool

    @classmethod
    def of(
        cls, batch_size: object, priority: object, include_metadata: object, ignore_start_after: object
    ) -> FetchOptions:
        """Validate each option; ``batch_size`` is at least 1."""
        return cls(
            batch_size=integer("batch_size", batch_size, minimum=1),
            priority=flag("priority", priority),
            include_metadata=flag("include_metadata", include_metadata),
            ignore_start_after=flag("ignore_start_after", ignore_start_after),
        )


__all__ = [
    "ALL_QUEUE_OPTIONS",
    "KEEP",
    "QUEUE_OPTIONS",
    "FetchOptions",
    "Keep",
    "job_state",
    "queue_options",
    "queue_policy",
    "queue_settings",
]
