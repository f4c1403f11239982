"""The shape of the public ``Boss`` API: pg-boss's methods, each saying what it commits and locks."""

from __future__ import annotations

import inspect

from sqla_boss import Boss

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
}


def public_methods() -> dict[str, object]:
    return {name: member for name, member in inspect.getmembers(Boss, inspect.isfunction) if not name.startswith("_")}


def test_boss_has_every_pg_boss_method_and_no_other() -> None:
    assert set(public_methods()) == PGBOSS_METHODS


def test_every_method_says_it_does_not_commit_and_what_it_locks() -> None:
    for name, method in public_methods().items():
        doc = (inspect.getdoc(method) or "").lower()
        assert "not commit" in doc, f"Boss.{name} does not say that it does not commit"
        assert "lock" in doc, f"Boss.{name} does not say what it locks"
