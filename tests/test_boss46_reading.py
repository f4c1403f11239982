"""Reading queues as pg-boss 12.38.0 does, against the real pg-boss on the same schema: ``get_queues`` with names,
``after`` and ``limit`` (``getQueues``) and ``get_blocked_keys`` (``getBlockedKeys``); and version 24 refusing
pg-boss 12's operations and options."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pgboss import (  # noqa: F401  (the fixtures pgboss12 and pgboss_install)
    PgBoss,
    attempt,
    call,
    pgboss12_fixture,
    pgboss_install_fixture,
    start,
)
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sqla_boss import Boss, migrations
from sqla_boss.errors import InvalidOptionError, QueueNotFoundError, UnsupportedOperationError
from sqla_boss.schema import schema_translate_map

pytestmark = pytest.mark.pgboss

QUIET = {"migrate": False, "supervise": False, "schedule": False, "registerInstance": False}


@pytest.fixture
def schema(engine: Engine, schema_name: str) -> str:
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    return schema_name


@pytest.fixture
def boss(engine: Engine, schema: str) -> Iterator[Boss]:
    """A ``Boss`` whose writes commit when the test's block says so."""
    with Session(engine.execution_options(schema_translate_map=schema_translate_map(schema))) as session:
        yield Boss(session, schema)


def names(queues: list[Any]) -> list[str]:
    return [queue["name"] if isinstance(queue, dict) else queue.name for queue in queues]


def test_get_queues_pages_as_get_queues_does(pgboss12: PgBoss, boss: Boss, schema: str) -> None:
    for name in ("a", "b", "c", "d", "e"):
        boss.create_queue(name)
    boss.session.commit()
    pages = [
        ((["b", "d", "x"],), {}),
        ((None,), {"limit": 2}),
        ((None,), {"after": "b", "limit": 2}),
        ((["a", "c", "e"],), {"after": "a"}),
    ]
    node = pgboss12.run(
        schema,
        [
            start(**QUIET),
            *(call("getQueues", *args, options) for args, options in pages),
            call("stop", {"graceful": False}),
        ],
    )[1:-1]
    ours = [names(boss.get_queues(*args, **options)) for args, options in pages]
    assert ours == [names(page) for page in node]
    assert ours == [["b", "d"], ["a", "b"], ["c", "d"], ["c", "e"]]


def test_get_blocked_keys_as_get_blocked_keys_does(pgboss12: PgBoss, boss: Boss, schema: str) -> None:
    boss.create_queue("fifo", policy="key_strict_fifo", retry_limit=0)
    boss.create_queue("plain")
    for key in ("k3", "k1", "k2", "k4"):
        boss.send("fifo", {"key": key}, singleton_key=key)
    jobs = boss.fetch("fifo", batch_size=10)  # the head of each key
    assert sorted(job.singleton_key for job in jobs) == ["k1", "k2", "k3", "k4"]
    boss.fail("fifo", [job.id for job in jobs if job.singleton_key in ("k1", "k3")], "down")  # no retries
    boss.session.commit()
    node = pgboss12.run(
        schema,
        [
            start(**QUIET),
            call("getBlockedKeys", "fifo"),
            call("getBlockedKeys", "fifo", {"after": "k1", "limit": 5}),
            attempt("getBlockedKeys", "plain"),
            call("stop", {"graceful": False}),
        ],
    )[1:-1]
    assert boss.get_blocked_keys("fifo") == node[0] == ["k1", "k3"]
    assert boss.get_blocked_keys("fifo", after="k1", limit=5) == node[1] == ["k3"]
    assert node[2]["ok"] is False
    with pytest.raises(InvalidOptionError, match="only for key_strict_fifo queues"):
        boss.get_blocked_keys("plain")
    with pytest.raises(QueueNotFoundError):
        boss.get_blocked_keys("nowhere")


def test_version_24_refuses_them(engine: Engine, schema_name: str) -> None:
    migrations.upgrade(engine, schema=schema_name)
    with Session(engine.execution_options(schema_translate_map=schema_translate_map(schema_name))) as session:
        boss = Boss(session, schema_name)
        assert boss.get_queues() == []
        with pytest.raises(UnsupportedOperationError, match="get_queues by names"):
            boss.get_queues(["a"])
        with pytest.raises(UnsupportedOperationError, match="get_blocked_keys"):
            boss.get_blocked_keys("a")
        # pg-boss 12's options, likewise, before anything is written
        with pytest.raises(UnsupportedOperationError, match="partition are pg-boss 12's"):
            boss.create_queue("a", partition=True)
        with pytest.raises(UnsupportedOperationError, match="'exclusive' is pg-boss 12's"):
            boss.create_queue("a", policy="exclusive")
        boss.create_queue("a")
        with pytest.raises(UnsupportedOperationError, match="group, heartbeat_seconds are pg-boss 12's"):
            boss.send("a", None, group={"id": "g"}, heartbeat_seconds=30)
        with pytest.raises(UnsupportedOperationError, match="retention_seconds are pg-boss 12's"):
            boss.insert([{"name": "a", "retention_seconds": 60}])
