"""``JobState`` and ``QueuePolicy``: pg-boss's job states and queue policies as Python enums."""

from __future__ import annotations

import enum
from typing import Any


class JobState(str, enum.Enum):
    """A job's state: the ``job_state`` enum, in its declaration order.

    pg-boss's SQL compares states by that order (``state < 'active'`` means "queued"), so the members
    compare the same way in Python: ``JobState.retry < JobState.active``. Members are strings, so
    ``JobState("failed")`` and ``JobState.failed == "failed"`` both work.
    """

    created = "created"
    retry = "retry"
    active = "active"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"

    @property
    def rank(self) -> int:
        """The position in the enum, which is what PostgreSQL orders ``job_state`` values by."""
        return _RANK[self]

    def _rank_of(self, other: Any) -> int:
        if isinstance(other, JobState):
            return other.rank
        if isinstance(other, str):
            return JobState(other).rank
        raise TypeError(f"cannot compare JobState with {type(other).__name__}")

    def __lt__(self, other: Any) -> bool:
        return self.rank < self._rank_of(other)

    def __le__(self, other: Any) -> bool:
        return self.rank <= self._rank_of(other)

    def __gt__(self, other: Any) -> bool:
        return self.rank > self._rank_of(other)

    def __ge__(self, other: Any) -> bool:
        return self.rank >= self._rank_of(other)

    def __str__(self) -> str:
        return self.value


_RANK = {state: rank for rank, state in enumerate(JobState)}


class QueuePolicy(str, enum.Enum):
    """A queue's policy: which jobs its partition's unique indexes let coexist."""

    standard = "standard"
    """No restriction."""
    short = "short"
    """At most one *created* job per singleton key."""
    singleton = "singleton"
    """At most one *active* job per singleton key."""
    stately = "stately"
    """At most one job per singleton key in each of created, retry and active."""

    def __str__(self) -> str:
        return self.value
