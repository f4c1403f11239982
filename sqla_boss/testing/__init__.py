"""sqla_boss's testing kit, for applications that send jobs: assertions on what was sent, a synchronous
runner for queued jobs, factory-boy factories, and a pytest plugin (:mod:`sqla_boss.testing.plugin`) whose
fixtures give each test a session that always rolls back.

Everything works inside the test's own transaction and commits nothing. The factories need factory-boy
(``pip install "sqla-boss[testing]"``), imported only when a factory is first used; the rest needs only
sqla_boss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqla_boss.testing.assertions import (
    assert_not_sent,
    assert_sent,
    async_assert_not_sent,
    async_assert_sent,
    async_sent_jobs,
    sent_jobs,
)
from sqla_boss.testing.async_runner import async_drain, async_run_jobs
from sqla_boss.testing.runner import drain, run_jobs
from sqla_boss.testing.runs import Handler, RunResult

if TYPE_CHECKING:
    from sqla_boss.testing.factories import ArchiveFactory, JobFactory, QueueFactory, bind_factories

_FACTORIES = ("ArchiveFactory", "JobFactory", "QueueFactory", "bind_factories")


def __getattr__(name: str) -> Any:
    """The factories, imported on first use: importing this package (as the pytest plugin does in every
    test run) must not need factory-boy."""
    if name in _FACTORIES:
        from sqla_boss.testing import factories

        return getattr(factories, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ArchiveFactory",
    "Handler",
    "JobFactory",
    "QueueFactory",
    "RunResult",
    "assert_not_sent",
    "assert_sent",
    "async_assert_not_sent",
    "async_assert_sent",
    "async_drain",
    "async_run_jobs",
    "async_sent_jobs",
    "bind_factories",
    "drain",
    "run_jobs",
    "sent_jobs",
]
