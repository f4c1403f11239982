"""The shape of the public API: pg-boss's methods, each saying what it commits and locks, the same on
``Boss`` and ``AsyncBoss``."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from sqla_boss import AsyncBoss, AsyncMaintenance, AsyncWorker, Boss, Maintenance, Worker
from sqla_boss.testing import async_drain, async_run_jobs, drain, run_jobs

PGBOSS_METHODS = {
    "create_queue",
    "update_queue",
    "delete_queue",
    "purge_queue",
    "get_queue",
    "get_queues",
    "get_queue_size",
    "send",
    "send_after",
    "send_throttled",
    "send_debounced",
    "insert",
    "fetch",
    "complete",
    "fail",
    "cancel",
    "resume",
    "retry",
    "delete_job",
    "get_job_by_id",
    "publish",
    "subscribe",
    "unsubscribe",
    "schedule",
    "unschedule",
    "get_schedules",
    # pg-boss 12's (schema version 46)
    "touch",
    "delete_queued_jobs",
    "delete_stored_jobs",
    "delete_all_jobs",
    "get_queue_stats",
    "find_jobs",
    "get_schedule",
    "update",
    "upsert",
    "flow",
    "get_dependencies",
    "get_dependents",
    "resolve_flow",
    "redrive",
    "preview_redrive",
    "get_blocked_keys",
    # sqla_boss's own: which of the two the schema is at
    "version",
}

# How the async API may spell what the sync one says: read AsyncSession as Session, and so on.
_ASYNC_SPELLINGS = (
    ("async_sessionmaker", "sessionmaker"),
    ("AsyncEngine", "Engine"),
    ("AsyncSession", "Session"),
    ("AsyncConnection", "Connection"),
    ("AsyncBoss", "Boss"),
    ("AsyncWorker", "Worker"),
    ("AsyncMaintenance", "Maintenance"),
    ("AsyncHandler", "Handler"),
)


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") or name == "__init__"
    }


def _as_sync(text: object) -> str:
    result = str(text)
    for async_spelling, sync_spelling in _ASYNC_SPELLINGS:
        result = result.replace(async_spelling, sync_spelling)
    return result


def _shape(function: Any) -> list[tuple[str, ...]]:
    signature = inspect.signature(function)
    shape = [
        (name, str(parameter.kind), repr(parameter.default), _as_sync(parameter.annotation))
        for name, parameter in signature.parameters.items()
    ]
    return [*shape, ("return", _as_sync(signature.return_annotation))]


def api_differences(
    sync_class: type, async_class: type, *, docstrings: bool = True, coroutines: set[str] | None = None
) -> list[str]:
    """Every way ``async_class`` differs from ``sync_class``: methods, parameters, defaults, annotations,
    docstrings, and coroutine-ness (of every method but ``__init__``, or of ``coroutines`` only); empty when
    they are twins."""
    sync_methods, async_methods = public_methods(sync_class), public_methods(async_class)
    differences = [f"only on {sync_class.__name__}: {name}" for name in sorted(set(sync_methods) - set(async_methods))]
    differences += [
        f"only on {async_class.__name__}: {name}" for name in sorted(set(async_methods) - set(sync_methods))
    ]
    for name in sorted(set(sync_methods) & set(async_methods)):
        sync_method, async_method = sync_methods[name], async_methods[name]
        if _shape(sync_method) != _shape(async_method):
            differences.append(f"{name}: {_shape(sync_method)} != {_shape(async_method)}")
        if docstrings and _as_sync(inspect.getdoc(sync_method)) != _as_sync(inspect.getdoc(async_method)):
            differences.append(f"{name}: the docstrings differ")
        should_await = name != "__init__" if coroutines is None else name in coroutines
        if should_await != inspect.iscoroutinefunction(async_method):
            differences.append(f"{name}: coroutine function on {async_class.__name__}: {not should_await}")
        if inspect.iscoroutinefunction(sync_method):
            differences.append(f"{name}: a coroutine function on {sync_class.__name__}")
    return differences


def test_boss_has_every_pg_boss_method_and_no_other() -> None:
    assert set(public_methods(Boss)) - {"__init__"} == PGBOSS_METHODS


def test_async_boss_is_the_twin_of_boss() -> None:
    assert api_differences(Boss, AsyncBoss) == []


def test_async_worker_is_the_twin_of_worker() -> None:
    """The same constructor, options, defaults and docstrings; ``start``, ``stop`` and ``run`` are awaited."""
    assert api_differences(Worker, AsyncWorker, coroutines={"start", "stop", "run"}) == []
    sync_properties = {name for name, _ in inspect.getmembers(Worker, lambda m: isinstance(m, property))}
    async_properties = {name for name, _ in inspect.getmembers(AsyncWorker, lambda m: isinstance(m, property))}
    assert sync_properties == async_properties == {"listening", "queues"}


def test_async_maintenance_is_the_twin_of_maintenance() -> None:
    assert api_differences(Maintenance, AsyncMaintenance) == []


@pytest.mark.parametrize(("sync", "async_"), [(run_jobs, async_run_jobs), (drain, async_drain)])
def test_the_async_runners_are_the_twins_of_the_runners(sync: Any, async_: Any) -> None:
    assert _shape(sync) == _shape(async_)
    articles = re.compile(r"\ban\b")  # "an AsyncWorker" is "a Worker"
    assert articles.sub("a", _as_sync(inspect.getdoc(async_)).replace("async_", "")) == articles.sub(
        "a", str(inspect.getdoc(sync))
    )
    assert inspect.iscoroutinefunction(async_)
    assert not inspect.iscoroutinefunction(sync)


def test_the_parity_check_sees_a_drift() -> None:
    """The checker itself: a changed default, a renamed parameter, a missing method, a sync twin."""

    class Sync:
        def fetch(self, name: str, *, batch_size: int = 1) -> list[int]:
            """Fetch."""
            return []

        def send(self, name: str) -> None:
            """Send."""

    class Async:
        async def fetch(self, name: str, *, batch_size: int = 2) -> list[int]:
            """Fetch."""
            return []

        def send(self, queue: str) -> None:
            """Send."""

        async def extra(self) -> None:
            """Extra."""

    differences = api_differences(Sync, Async)
    assert any(line.startswith("fetch:") and "'1'" in line and "'2'" in line for line in differences)
    assert any(line.startswith("send:") and "queue" in line for line in differences)
    assert "send: coroutine function on Async: False" in differences
    assert "only on Async: extra" in differences


@pytest.mark.parametrize("cls", [Boss, AsyncBoss])
def test_every_method_says_it_does_not_commit_and_what_it_locks(cls: type) -> None:
    for name, method in public_methods(cls).items():
        if name == "__init__":
            continue
        doc = (inspect.getdoc(method) or "").lower()
        assert "not commit" in doc, f"{cls.__name__}.{name} does not say that it does not commit"
        assert "lock" in doc, f"{cls.__name__}.{name} does not say what it locks"
