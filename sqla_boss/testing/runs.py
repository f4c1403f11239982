"""What :func:`~sqla_boss.testing.run_jobs`, :func:`~sqla_boss.testing.drain` and their async twins share:
the result they return, and how their options become worker registrations. No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqla_boss.errors import InvalidOptionError, QueueNotFoundError
from sqla_boss.handling import Completion, log_failure
from sqla_boss.models import JobState
from sqla_boss.options.values import integer
from sqla_boss.options.workers import Registration, WorkerSettings, adjust

Handler = Callable[..., Any]
"""``handler(jobs)``, or ``handler(jobs, session)`` with ``transactional=True``; ``jobs`` is a list."""

_WORKERS = {"drain": "a Worker", "async_drain": "an AsyncWorker"}
"""What each drain takes besides a mapping of handlers."""


@dataclass
class RunResult:
    """What a run did, by job id. A job that failed and was retried within the run appears in ``retried``
    once per retry, then in ``completed`` or ``failed``.

    ``assert result.counts == {"completed": 2, "failed": 0, "retried": 0}`` checks it all at once.
    """

    completed: list[uuid.UUID] = field(default_factory=list)
    """Jobs completed."""
    failed: list[uuid.UUID] = field(default_factory=list)
    """Jobs failed for good (state ``failed``; a copy went to their dead letter queue, if they have one)."""
    retried: list[uuid.UUID] = field(default_factory=list)
    """Failures that left the job in state ``retry``, to run again by its retry rules."""
    errors: dict[uuid.UUID, Any] = field(default_factory=dict)
    """The last error each failed or retried job was failed with (the handler's exception, or the
    ``PayloadError`` of an output that cannot be stored)."""

    @property
    def counts(self) -> dict[str, int]:
        """``{"completed": ..., "failed": ..., "retried": ...}``."""
        return {"completed": len(self.completed), "failed": len(self.failed), "retried": len(self.retried)}

    def record(self, name: str, completion: Completion, states: Mapping[uuid.UUID, JobState]) -> None:
        """Count one batch's end: completed, or each job failed or retried by the state it was left in."""
        if not completion.failed:
            self.completed.extend(completion.ids)
            return
        log_failure(name, completion.ids, completion.output)
        for job_id in completion.ids:
            self.errors[job_id] = completion.output
            if states.get(job_id) == JobState.retry:
                self.retried.append(job_id)
            else:
                self.failed.append(job_id)

    def batch_size(self, registration: Registration, limit: int | None) -> int:
        """The next batch's size: the registration's, within what is left of ``limit``."""
        if limit is None:
            return registration.batch_size
        ran = len(self.completed) + len(self.failed) + len(self.retried)
        return max(0, min(registration.batch_size, limit - ran))


def registration(
    queue: str, handler: Handler, batch_size: int, transactional: bool, include_metadata: bool
) -> Registration:
    """A run's options, validated as ``work()`` validates them."""
    return Registration.of(
        queue,
        batch_size=batch_size,
        concurrency=1,
        polling_interval_seconds=2.0,
        include_metadata=include_metadata,
        transactional=transactional,
    ).with_handler(handler)


def of_mapping(handlers: Mapping[str, Handler], drain: str) -> list[Registration]:
    """The registrations of ``{queue: handler}``: one job per batch, pg-boss's completion mode."""
    if not isinstance(handlers, Mapping):
        other = next(name for name in _WORKERS if name != drain)
        raise InvalidOptionError(
            f"{drain} takes {_WORKERS[drain]} ({other} takes {_WORKERS[other]}) or a mapping {{queue: handler}}, "
            f"not {handlers!r}"
        )
    return [registration(queue, handler, 1, False, False) for queue, handler in handlers.items()]


def of_worker(
    worker_schema: str, registrations: Iterable[Registration], schema: str | None, settings: WorkerSettings
) -> tuple[list[Registration], str, dict[str, Any]]:
    """A worker's registrations (the send-it one left out), schema and job defaults."""
    if schema is not None and schema != worker_schema:
        raise InvalidOptionError(f"the worker serves schema {worker_schema!r}, not {schema!r}")
    return [r for r in registrations if not r.internal], worker_schema, dict(settings.defaults)


def selected(registrations: list[Registration], queues: Sequence[str] | None) -> list[Registration]:
    """The registrations of ``queues`` (all when ``None``); refuses a drain with nothing to run."""
    if not registrations:
        raise InvalidOptionError("nothing to drain: no handler is registered")
    return adjust(registrations, queues=queues, concurrency=None, transactional=None)


def not_found(queue: str, schema: str) -> QueueNotFoundError:
    """The error of a run on a queue that does not exist (a typo would otherwise run nothing, silently)."""
    return QueueNotFoundError(f"there is no queue {queue!r} in schema {schema!r} to run jobs of", (queue,))


def checked_limit(limit: int | None) -> int | None:
    """``limit``: ``None``, or a whole number of at least 1."""
    return None if limit is None else integer("limit", limit, minimum=1)


__all__ = ["Handler", "RunResult"]
