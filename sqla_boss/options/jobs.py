"""Job options: what ``send`` and ``insert`` take, and the constructor defaults behind them, as the values
pg-boss's insert SQL reads (:class:`JobInput`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqla_boss.errors import InvalidOptionError
from sqla_boss.options import v46
from sqla_boss.options.names import job_id, optional_queue_name, queue_name
from sqla_boss.options.payloads import check_structure, json_text
from sqla_boss.options.timing import (
    EXPIRE_OPTIONS,
    RETENTION_OPTIONS,
    expire_in_seconds,
    keep_until_text,
    optional_delay,
    retention_text,
    singleton_seconds,
    start_after_text,
)
from sqla_boss.options.values import flag, known, not_here, optional_flag, optional_integer, optional_text


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
        """Validate the defaults given to a ``Boss`` or a worker (``retry_limit``, ``retry_delay``, ``retry_backoff``,
        ``expire_in_*``, ``retention_*``)."""
        allowed = {"retry_limit", "retry_delay", "retry_backoff"} | EXPIRE_OPTIONS | RETENTION_OPTIONS
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InvalidOptionError(
                f"unknown default option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
            )
        return cls(
            retry_limit=optional_integer(options, "retry_limit", minimum=0),
            retry_delay=optional_delay(options, "retry_delay"),
            retry_backoff=optional_flag(options, "retry_backoff"),
            expire_in_seconds=expire_in_seconds(options),
            retention=retention_text(options),
        )


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


def fixed_options(options: Mapping[str, Any], method: str, **fixed: Any) -> dict[str, Any]:
    """The send ``options`` of ``send_after`` / ``send_throttled`` / ``send_debounced`` with what their own
    arguments set; an option that would contradict one of those arguments is refused (:func:`send_input` then
    refuses what is no send option)."""
    given = sorted(
        key for key in options if key in fixed or (key.startswith("singleton_") and "singleton_key" in fixed)
    )
    if given:
        raise InvalidOptionError(
            f"{method}() sets {', '.join(given)} from its own arguments; do not give it as an option"
        )
    return {**options, **fixed}


def send_input(name: object, data: Any, options: Mapping[str, Any]) -> tuple[JobInput, bool]:
    """Validate a ``send`` and return its :class:`JobInput` and whether it debounces (``singleton_next_slot``)."""
    not_here(options, SEND_OPTIONS, v46.SEND_OPTIONS, "send")
    known(options, SEND_OPTIONS, "send")
    json_text(data)
    priority = optional_integer(options, "priority")
    singleton_key = optional_text(options, "singleton_key")
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
        retry_limit=optional_integer(options, "retry_limit", minimum=0),
        retry_delay=optional_delay(options, "retry_delay"),
        retry_backoff=optional_flag(options, "retry_backoff"),
        dead_letter=optional_queue_name(options, "dead_letter"),
    )
    return job, bool(next_slot is not None and flag("singleton_next_slot", next_slot))


_NAME_AND_DATA = frozenset({"name", "data"})


def insert_record(job: Mapping[str, Any]) -> dict[str, Any]:
    """One element of an ``insert`` batch, validated, as its ``json_to_recordset`` object.

    The common job, a name and data only, takes a short path: it runs per job of batches of thousands.
    """
    if isinstance(job, dict) and "name" in job and job.keys() <= _NAME_AND_DATA:
        data = job.get("data")
        record = {"name": queue_name(job["name"])}
        if data is not None:
            check_structure(data, what="job data")
            record["data"] = data
        return record
    validated = insert_input(job)
    check_structure(validated.data, what="job data")
    return validated.record()


def insert_input(job: Mapping[str, Any]) -> JobInput:
    """Validate one element of an ``insert`` batch (the fields pg-boss's insert honours)."""
    if not isinstance(job, Mapping):
        raise InvalidOptionError(f"each job to insert must be a mapping, not {type(job).__name__}")
    not_here(job, INSERT_FIELDS, v46.INSERT_FIELDS, "insert")
    known(job, INSERT_FIELDS, "insert")
    if "name" not in job:
        raise InvalidOptionError("each job to insert needs a name")
    # The data's structure is checked by insert_record, its text when the whole batch is serialised.
    singleton_key = optional_text(job, "singleton_key")
    raw_singleton = job.get("singleton_seconds")
    return JobInput(
        name=queue_name(job["name"]),
        data=job.get("data"),
        id=None if job.get("id") is None else job_id(job["id"], operation="insert"),
        priority=optional_integer(job, "priority"),
        start_after=start_after_text(job.get("start_after")),
        singleton_key=singleton_key,
        singleton_seconds=None if raw_singleton is None else singleton_seconds({"singleton_seconds": raw_singleton}),
        expire_in_seconds=None
        if job.get("expire_in_seconds") is None
        else expire_in_seconds({"expire_in_seconds": job["expire_in_seconds"]}),
        keep_until=keep_until_text(job.get("keep_until")),
        retry_limit=optional_integer(job, "retry_limit", minimum=0),
        retry_delay=optional_delay(job, "retry_delay"),
        retry_backoff=optional_flag(job, "retry_backoff"),
        dead_letter=optional_queue_name(job, "dead_letter"),
    )


__all__ = [
    "INSERT_FIELDS",
    "SEND_OPTIONS",
    "Defaults",
    "JobInput",
    "fixed_options",
    "insert_input",
    "insert_record",
    "send_input",
]
