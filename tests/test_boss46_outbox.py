"""The transactional outbox on schema version 46: no call commits, every expected outcome (the errors
sqla_boss raises included) leaves the transaction usable, NOTIFY fires at commit only, and dropping a
partitioned queue holds its locks until the caller's transaction ends.

These tests commit for real (``committing_session_factory``, on ``Boss`` and ``AsyncBoss``) and look from
other connections; each has a fresh version-46 schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from boss46_support import schema_version_46  # noqa: F401  (the module's schema version)
from boss_support import committed_count, committed_snapshot, snapshot
from sqlalchemy import URL, Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from sqla_boss import JobState
from sqla_boss.errors import (
    DeadLetterQueueNotFoundError,
    InvalidOptionError,
    JobConflictError,
    QueueInUseError,
    QueueNotFoundError,
    SqlaBossError,
    UnsupportedOperationError,
)
from sqla_boss.identifiers import quote_identifier
from sqla_boss.v46.operations import notify_channel


@pytest.fixture
def setup(
    committing_session_factory: sessionmaker[Session], make_boss: Callable[..., Any], installed_schema: str
) -> Any:
    """Committed queues: ``work`` (dead letter ``dlq``), ``short``, ``fifo`` (key_strict_fifo), ``part``
    (partitioned), ``gone`` and ``stale`` (one queued job each); returns the repository factory."""
    with committing_session_factory.begin() as session:
        boss = make_boss(session, schema=installed_schema)
        boss.create_queue("dlq")
        boss.create_queue("work", dead_letter="dlq")
        boss.create_queue("short", policy="short")
        boss.create_queue("fifo", policy="key_strict_fifo")
        boss.create_queue("part", partition=True)
        boss.create_queue("gone")
        boss.create_queue("stale")
        boss.send("stale", {"old": True})
        boss.send("part", {"old": True})
    return lambda session: make_boss(session, schema=installed_schema)


def test_no_boss_call_commits(
    committing_session_factory: sessionmaker[Session], engine: Engine, installed_schema: str, setup: Any
) -> None:
    baseline = committed_snapshot(engine, installed_schema)
    with committing_session_factory() as session:
        boss = setup(session)
        calls: list[str] = []

        def check(label: str) -> None:
            calls.append(label)
            assert session.in_transaction(), f"{label} ended the transaction"
            assert committed_snapshot(engine, installed_schema) == baseline, f"{label} committed something"

        boss.create_queue("fresh", policy="exclusive")  # partitioned: test_creating_a_partitioned_queue_...
        check("create_queue")
        boss.update_queue("work", retry_limit=4, heartbeat_seconds=10)
        check("update_queue")
        first = boss.send("work", {"n": 1}, retry_limit=0)
        check("send")
        boss.send_after("work", {"n": 2}, after=60)
        check("send_after")
        boss.send_throttled("work", {"n": 3}, seconds=60, key="throttled")
        check("send_throttled")
        boss.send_debounced("work", {"n": 4}, seconds=60, key="debounced")
        boss.send_debounced("work", {"n": 5}, seconds=60, key="debounced")
        check("send_debounced")
        boss.insert([{"name": "work", "data": {"n": 6}}, {"name": "work", "data": {"n": 7}, "group": {"id": "g"}}])
        check("insert")
        fetched = boss.fetch("work", batch_size=10, group_concurrency=1)
        check("fetch")
        by_n = {job.data["n"]: job for job in fetched}
        assert sorted(by_n) == [1, 3, 4, 6, 7]
        assert boss.touch("work", [by_n[6]]) == 1
        check("touch")
        assert boss.complete("work", [by_n[3]], {"done": True}) == 1
        check("complete")
        assert boss.fail("work", [by_n[1]], {"failed": True}) == 1  # no retry left: failed, copied to dlq
        check("fail")
        assert boss.cancel("work", by_n[4].id) == 1
        check("cancel")
        assert boss.resume("work", by_n[4].id) == 1
        check("resume")
        assert boss.retry("work", first) == 1
        check("retry")
        assert boss.delete_job("work", [by_n[7]]) == 1
        check("delete_job")
        assert boss.complete("work", boss.send("work", {"n": 8}), include_queued=True) == 1
        check("complete(include_queued)")
        boss.subscribe("event", "work")
        check("subscribe")
        assert len(boss.publish("event", {"n": 9})) == 1
        check("publish")
        assert boss.unsubscribe("event", "work") is True
        check("unsubscribe")
        boss.schedule("work", "*/5 * * * *", {"cron": True}, tz="Europe/Paris", key="k", missed="once")
        boss.schedule("work", "FREQ=DAILY")
        check("schedule")
        assert boss.unschedule("work") is True
        check("unschedule")
        assert boss.delete_queued_jobs("stale") == 1
        check("delete_queued_jobs")
        assert boss.delete_stored_jobs("dlq") == 0
        check("delete_stored_jobs")
        assert boss.delete_all_jobs("part") == 1
        check("delete_all_jobs")
        assert boss.delete_queue("gone") is True
        check("delete_queue")
        assert boss.get_queue("work").retry_limit == 4
        assert len(boss.get_queues()) == 7
        assert boss.get_queue_stats("work").active == 1
        assert boss.get_job_by_id("work", first).state is JobState.retry
        assert [job.data for job in boss.find_jobs("work", key="throttled")] == [{"n": 3}]
        assert [s.key for s in boss.get_schedules("work")] == ["k"]
        assert boss.get_schedule("work", "k").kind == "cron"
        check("the getters")
        seen = snapshot(session, installed_schema)
        session.commit()

    assert calls[-1] == "the getters"
    after = committed_snapshot(engine, installed_schema)
    assert after == seen != baseline  # exactly what the transaction saw was committed
    assert committed_count(engine, installed_schema, "job", "name = 'dlq'") == 1
    assert committed_count(engine, installed_schema, "queue", "name = 'gone'") == 0
    assert committed_count(engine, installed_schema, "schedule", "key = 'k'") == 1


def _expected_errors(boss: Any) -> dict[str, tuple[Callable[[], Any], type[SqlaBossError]]]:
    cancelled = boss.send("short", {"cancelled": True}, singleton_key="k")
    boss.cancel("short", cancelled)
    boss.send("short", {"took the slot": True}, singleton_key="k")
    twice = uuid.uuid4()
    return {
        "send to a missing queue": (lambda: boss.send("nope"), QueueNotFoundError),
        "fetch from a missing queue": (lambda: boss.fetch("nope"), QueueNotFoundError),
        "insert into a missing queue": (lambda: boss.insert([{"name": "work"}, {"name": "nope"}]), QueueNotFoundError),
        "stats of a missing queue": (lambda: boss.get_queue_stats("nope"), QueueNotFoundError),
        "update a missing queue": (lambda: boss.update_queue("nope", retry_limit=1), QueueNotFoundError),
        "subscribe a missing queue": (lambda: boss.subscribe("event", "nope"), QueueNotFoundError),
        "schedule a missing queue": (lambda: boss.schedule("nope", "0 * * * *"), QueueNotFoundError),
        "a missing dead letter": (lambda: boss.send("work", None, dead_letter="nope"), DeadLetterQueueNotFoundError),
        "no key for key_strict_fifo": (lambda: boss.send("fifo", {"n": 1}), InvalidOptionError),
        "one id twice": (lambda: boss.insert([{"name": "work", "id": twice}] * 2), InvalidOptionError),
        "find after a missing job": (lambda: boss.find_jobs("work", after=uuid.uuid4()), InvalidOptionError),
        "update without settings": (lambda: boss.update_queue("work"), InvalidOptionError),
        "resume into a taken slot": (lambda: boss.resume("short", cancelled), JobConflictError),
        "delete a dead letter queue": (lambda: boss.delete_queue("dlq"), QueueInUseError),
        "get_queue_size": (lambda: boss.get_queue_size("work"), UnsupportedOperationError),
        "the archive": (lambda: boss.get_job_by_id("work", twice, True), UnsupportedOperationError),
        "pg-boss 10's options": (lambda: boss.send("work", None, retention_days=1), UnsupportedOperationError),
    }


def test_after_every_expected_error_the_transaction_goes_on_and_commits(
    committing_session_factory: sessionmaker[Session], engine: Engine, installed_schema: str, setup: Any
) -> None:
    baseline = committed_snapshot(engine, installed_schema)
    with committing_session_factory() as session:
        boss = setup(session)
        boss.subscribe("event", "dlq")
        boss.subscribe("event", "fifo")
        before = boss.send("work", {"before": True})
        errors = _expected_errors(boss)
        errors["publish without a key to key_strict_fifo"] = (
            lambda: boss.publish("event", {"n": 1}),
            InvalidOptionError,
        )
        sent_after = []
        for label, (call, error) in errors.items():
            written = snapshot(session, installed_schema)
            with pytest.raises(error):
                call()
            assert session.in_transaction(), label
            assert snapshot(session, installed_schema) == written, f"{label} wrote something"
            sent_after.append(boss.send("work", {"after": label}))
            assert committed_snapshot(engine, installed_schema) == baseline, f"{label} committed something"
        assert None not in sent_after
        session.commit()
    with engine.connect() as connection:
        job_ids = set(connection.execute(text(f"SELECT id FROM {installed_schema}.job")).scalars())
    assert {before, *sent_after} <= job_ids
    assert committed_count(engine, installed_schema, "job", "name = 'work'") == 1 + len(errors)
    assert committed_count(engine, installed_schema, "job", "name IN ('dlq', 'fifo', 'nope')") == 0


# ------------------------------------------------------------------------------------------------ notify


@pytest.fixture
def listener(database_url: URL, installed_schema: str) -> Iterator[Callable[[Callable[[], Any]], list[str]]]:
    """``listen(action)``: the payloads pg-boss 12's channel of the schema (§10) delivers because of ``action``.

    After the action a sentinel is notified from another connection; NOTIFYs arrive in commit order, so what
    came before the sentinel is the action's. No sleeping."""
    conninfo = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    channel = notify_channel(installed_schema)
    with psycopg.connect(conninfo, autocommit=True) as listening, psycopg.connect(conninfo, autocommit=True) as other:
        listening.execute(f"LISTEN {quote_identifier(channel)}")

        def listen(action: Callable[[], Any]) -> list[str]:
            action()
            sentinel = f"sentinel-{uuid.uuid4()}"
            other.execute("SELECT pg_notify(%s, %s)", (channel, sentinel))
            payloads = []
            for notification in listening.notifies(timeout=10):
                if notification.payload == sentinel:
                    return payloads
                payloads.append(notification.payload)
            raise AssertionError("the sentinel never arrived")

        yield listen


def test_notify_queues_announce_due_jobs_at_commit(
    committing_session_factory: sessionmaker[Session],
    make_boss: Callable[..., Any],
    installed_schema: str,
    listener: Callable[[Callable[[], Any]], list[str]],
) -> None:
    with committing_session_factory.begin() as session:
        boss = make_boss(session, schema=installed_schema)
        boss.create_queue("loud", notify=True)
        boss.create_queue("quiet")

    def committed(action: Callable[[Any], Any], commit: bool = True) -> Callable[[], None]:
        def run() -> None:
            with committing_session_factory() as session:
                action(make_boss(session, schema=installed_schema))
                assert listener(lambda: None) == []  # nothing before the commit
                if commit:
                    session.commit()

        return run

    assert listener(committed(lambda b: b.send("loud", {"n": 1}))) == ["loud"]
    assert listener(committed(lambda b: b.send("loud", None, start_after=60))) == []  # deferred
    assert listener(committed(lambda b: b.insert([{"name": "loud"}, {"name": "loud"}]))) == ["loud"]  # once
    assert listener(committed(lambda b: b.send("quiet"))) == []
    assert listener(committed(lambda b: b.send("loud"), commit=False)) == []  # rolled back
    assert listener(committed(lambda b: [b.send("loud"), b.send("quiet"), b.send("loud")])) == ["loud"]
    assert listener(committed(lambda b: b.subscribe("ping", "loud"))) == []
    assert listener(committed(lambda b: b.publish("ping", {"n": 2}))) == ["loud"]
    assert listener(committed(lambda b: b.publish("ping", {"n": 3}), commit=False)) == []


# ------------------------------------------------------------------------------- partitioned queues' locks


def _table_exists(engine: Engine, table: str) -> bool:
    with engine.connect() as observer:  # the catalog takes no table locks
        return bool(observer.execute(text("SELECT count(*) FROM pg_class WHERE relname = :t"), {"t": table}).scalar())


def _blocked(engine: Engine, sql: str) -> bool:
    """Whether ``sql`` on a connection of its own waits for a lock (50 ms at most)."""
    with engine.connect() as observer:
        observer.execute(text("SET lock_timeout = '50ms'"))
        try:
            observer.execute(text(sql))
        except OperationalError as exc:
            if "lock timeout" not in str(exc):
                raise
            return True
        return False


def test_creating_a_partitioned_queue_holds_the_shared_job_table_until_the_end(
    committing_session_factory: sessionmaker[Session], engine: Engine, installed_schema: str, setup: Any
) -> None:
    """Attaching a partition beside the DEFAULT partition locks ``job_common`` ACCESS EXCLUSIVE: until the caller
    commits, every send to and fetch from the shared table (Node's too) waits. pg-boss 12 does the same, in a
    transaction of its own."""
    schema = quote_identifier(installed_schema)
    with committing_session_factory() as session:
        boss = setup(session)
        boss.create_queue("fresh", partition=True)
        table = session.execute(text(f"SELECT table_name FROM {schema}.queue WHERE name = 'fresh'")).scalar_one()
        assert session.in_transaction()
        assert not _table_exists(engine, table)
        assert _blocked(engine, f"SELECT count(*) FROM {schema}.job_common")
        assert _blocked(engine, f"INSERT INTO {schema}.job (name) VALUES ('stale')")
        assert not _blocked(engine, f"SELECT count(*) FROM {schema}.queue")
        session.commit()
    assert _table_exists(engine, table)
    assert not _blocked(engine, f"SELECT count(*) FROM {schema}.job_common")
    assert committed_count(engine, installed_schema, "queue", "name = 'fresh'") == 1


def test_deleting_a_partitioned_queue_holds_the_job_table_until_the_end(
    committing_session_factory: sessionmaker[Session], engine: Engine, installed_schema: str, setup: Any
) -> None:
    schema = quote_identifier(installed_schema)
    with engine.connect() as connection:
        table = connection.execute(text(f"SELECT table_name FROM {schema}.queue WHERE name = 'part'")).scalar_one()
    with committing_session_factory() as session:
        boss = setup(session)
        assert boss.delete_queue("part") is True
        assert session.in_transaction()
        assert _table_exists(engine, table)
        # DROP TABLE of a partition holds ACCESS EXCLUSIVE on job: every reader of job waits.
        assert _blocked(engine, f"SELECT count(*) FROM {schema}.job")
        session.commit()
    assert not _table_exists(engine, table)
    assert committed_count(engine, installed_schema, "queue", "name = 'part'") == 0
    assert committed_count(engine, installed_schema, "job", "name = 'stale'") == 1


# ------------------------------------------------------------------------------------ concurrent fetchers


def test_a_fetch_passes_over_the_jobs_another_transaction_holds(
    committing_session_factory: sessionmaker[Session], setup: Any
) -> None:
    with committing_session_factory.begin() as session:
        sent = {setup(session).send("work", {"n": n}) for n in range(2)}
    with committing_session_factory() as first, committing_session_factory() as second:
        [held] = setup(first).fetch("work")
        [other] = setup(second).fetch("work")  # SKIP LOCKED: no waiting for the first transaction
        assert {held.id, other.id} == sent
        assert setup(second).fetch("work") == []
        first.rollback()
        [again] = setup(second).fetch("work")
        assert again.id == held.id


def test_key_strict_fifo_keeps_a_keys_order_across_transactions(
    committing_session_factory: sessionmaker[Session], engine: Engine, installed_schema: str, setup: Any
) -> None:
    with committing_session_factory.begin() as session:
        boss = setup(session)
        head = boss.send("fifo", {"n": 1}, singleton_key="k")
        boss.send("fifo", {"n": 2}, singleton_key="k")
        other_key = boss.send("fifo", {"n": 3}, singleton_key="other")
    schema = quote_identifier(installed_schema)
    older = text(f"UPDATE {schema}.job SET created_on = created_on - interval '1 minute' WHERE id = :id")
    with engine.begin() as connection:  # the head is the older one
        connection.execute(older, {"id": head})
    with committing_session_factory() as first, committing_session_factory() as second:
        assert {job.id for job in setup(first).fetch("fifo", batch_size=10)} == {head, other_key}
        # The head is locked by the first transaction; the job behind it is no head, so nothing is handed out.
        assert setup(second).fetch("fifo", batch_size=10) == []
