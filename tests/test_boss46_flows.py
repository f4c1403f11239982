"""pg-boss 12's remaining job operations on schema version 46 (PGBOSS12.md §4.7, §4.8, §6.5, §8.8): update and
upsert, flows (flow, get_dependencies, get_dependents, resolve_flow), redrive and preview_redrive; on both
repository APIs, with exact rows. The same calls against the real pg-boss 12.38: tests/test_interop46_flows.py."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg.sql
import pytest
from boss_support import backend_waits_for_lock, db_now, plain_connection
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, sessionmaker
from support import drop_schema, unique_name, wait_until

from sqla_boss import Boss, migrations
from sqla_boss.errors import (
    DeadLetterQueueNotFoundError,
    InvalidOptionError,
    InvalidQueueNameError,
    JobConflictError,
    PayloadError,
    QueueNotFoundError,
    UnsupportedOperationError,
)
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map
from sqla_boss.v46.operations import JobRef, RedrivePreview, UpdateResult, notify_channel

UTC = dt.timezone.utc
AT = dt.datetime(2031, 1, 1, tzinfo=UTC)
SECOND = dt.timedelta(seconds=1)

COLUMNS = (
    "name, id, priority, data, jsonb_typeof(data) AS data_type, state::text AS state, retry_limit, retry_count, "
    "retry_delay, retry_backoff, retry_delay_max, expire_seconds, deletion_seconds, singleton_key, singleton_on, "
    "group_id, group_tier, start_after, created_on, started_on, completed_on, keep_until, output, dead_letter, "
    "policy, heartbeat_on, heartbeat_seconds, blocked, blocking, pending_dependencies, source_name, source_id, "
    "source_created_on, source_retry_count, source_output, source_root_id, trace_context, upsert_by_key"
)
"""Every column of ``job`` (the state as text, and the JSON type of ``data``: SQL NULL and JSON null differ)."""


@pytest.fixture(scope="module", name="installed_schema")
def v46_schema(engine: Engine) -> Iterator[str]:
    """One version-46 schema for the module: its tests never commit (but the one that says so)."""
    name = unique_name("f46")
    migrations.upgrade(engine, schema=name, pgboss=12)
    yield name
    drop_schema(engine, name)


@pytest.fixture(scope="module")
def v24_schema(engine: Engine) -> Iterator[str]:
    name = unique_name("f24")
    migrations.upgrade(engine, schema=name)
    yield name
    drop_schema(engine, name)


@pytest.fixture
def q(boss: Boss) -> str:
    """Queue ``q`` with every setting of its own, and ``dlq``."""
    boss.create_queue("dlq")
    boss.create_queue(
        "q",
        retry_limit=3,
        retry_delay=4,
        expire_in_seconds=50,
        retention_seconds=1000,
        delete_after_seconds=60,
        heartbeat_seconds=30,
    )
    return "q"


def rows(session: Session, schema: str, where: str = "true", **params: Any) -> list[dict[str, Any]]:
    found = session.execute(
        text(f"SELECT {COLUMNS} FROM {quote_identifier(schema)}.job WHERE {where} ORDER BY name, created_on, id"),
        params,
    )
    return [dict(row._mapping) for row in found]


def row(session: Session, schema: str, name: str, job_id: uuid.UUID | None) -> dict[str, Any]:
    [found] = rows(session, schema, "name = :name AND id = :id", name=name, id=job_id)
    return found


def edges(session: Session, schema: str) -> set[tuple[str, uuid.UUID, str, uuid.UUID]]:
    found = session.execute(
        text(f"SELECT child_name, child_id, parent_name, parent_id FROM {quote_identifier(schema)}.job_dependency")
    )
    return {tuple(edge) for edge in found}  # type: ignore[misc]


def age(session: Session, schema: str, name: str, job_id: uuid.UUID | None, seconds: int) -> None:
    """Make the job ``seconds`` older (its ``created_on``): every job of one transaction is stamped alike."""
    session.execute(
        text(
            f"UPDATE {quote_identifier(schema)}.job SET created_on = created_on - make_interval(secs => :s) "
            "WHERE name = :name AND id = :id"
        ),
        {"s": seconds, "name": name, "id": job_id},
    )


def sent(boss: Boss, name: str, data: Any = None, **options: Any) -> uuid.UUID:
    job_id = boss.send(name, data, **options)
    assert job_id is not None
    return job_id


# ------------------------------------------------------------------------------------------- update


def test_update_changes_only_the_settings_given(boss: Boss, session: Session, q: str) -> None:
    job_id = sent(boss, q, {"a": 1}, singleton_key="k", group={"id": "g0", "tier": "t0"})
    before = row(session, boss.schema, q, job_id)
    result = boss.update(
        q,
        id=job_id,
        priority=5,
        retry_limit=7,
        retry_delay=8,
        retry_backoff=True,
        retry_delay_max=9,
        expire_in_seconds=60,
        delete_after_seconds=5,
        heartbeat_seconds=20,
        dead_letter="dlq",
        group={"id": "g1"},
    )
    assert result == UpdateResult(jobs=[job_id], updated=1, inserted=0)
    after = row(session, boss.schema, q, job_id)
    changed = {
        "priority": 5,
        "retry_limit": 7,
        "retry_delay": 8,
        "retry_backoff": True,
        "retry_delay_max": 9,
        "expire_seconds": 60,
        "deletion_seconds": 5,
        "heartbeat_seconds": 20,
        "dead_letter": "dlq",
        "group_id": "g1",  # the tier stays: only the parts of group given change, as in pg-boss
    }
    assert after == {**before, **changed}
    # None keeps a setting, but clears the three pg-boss 12 clears with null.
    boss.update(q, id=job_id, priority=None, retry_delay_max=None, heartbeat_seconds=None, dead_letter=None)
    assert row(session, boss.schema, q, job_id) == {
        **after,
        "retry_delay_max": None,
        "heartbeat_seconds": None,
        "dead_letter": None,
    }


def test_update_moves_keep_until_with_a_new_start_or_retention(boss: Boss, session: Session, q: str) -> None:
    now = db_now(session)
    jobs = {label: sent(boss, q) for label in ("both", "start", "retention", "neither", "zero", "negative", "text")}
    boss.update(q, id=jobs["both"], start_after=AT, retention_seconds=100)
    boss.update(q, id=jobs["start"], start_after=AT)
    boss.update(q, id=jobs["retention"], retention_seconds=100)
    boss.update(q, id=jobs["neither"], priority=1)
    boss.update(q, id=jobs["zero"], start_after=0)
    boss.update(q, id=jobs["negative"], start_after=-30)
    boss.update(q, id=jobs["text"], start_after="90 minutes")
    window = dt.timedelta(seconds=1000)  # the queue's retention, which every job got at send
    expected = {
        "both": (AT, AT + 100 * SECOND),
        "start": (AT, AT + window),  # slides with the start
        "retention": (now, now + 100 * SECOND),  # from the start it has
        "neither": (now, now + window),
        "zero": (now, now + window),  # update honours 0 and negatives, unlike send
        "negative": (now - 30 * SECOND, now - 30 * SECOND + window),
        "text": (now + 5400 * SECOND, now + 5400 * SECOND + window),
    }
    for label, job_id in jobs.items():
        found = row(session, boss.schema, q, job_id)
        assert (found["start_after"], found["keep_until"]) == expected[label], label


def test_update_data_is_kept_replaced_or_set_to_json_null(boss: Boss, session: Session, q: str) -> None:
    job_id = sent(boss, q, {"a": 1})
    boss.update(q, id=job_id, priority=2)
    assert (row(session, boss.schema, q, job_id)["data"], row(session, boss.schema, q, job_id)["priority"]) == (
        {"a": 1},
        2,
    )
    boss.update(q, [1, "two"], id=job_id)
    assert row(session, boss.schema, q, job_id)["data"] == [1, "two"]
    boss.update(q, None, id=job_id)
    found = row(session, boss.schema, q, job_id)
    assert (found["data"], found["data_type"]) == (None, "null")  # JSON null, as pg-boss 12 stores it


def test_update_by_key_changes_the_newest_the_oldest_or_all(boss: Boss, session: Session, q: str) -> None:
    keyed = [sent(boss, q, {"n": n}, singleton_key="k") for n in range(3)]
    for n, job_id in enumerate(keyed):
        age(session, boss.schema, q, job_id, 30 - 10 * n)  # keyed[2] is the newest
    other = sent(boss, q, {"n": "other"}, singleton_key="other")
    assert boss.update(q, {"by": "newest"}, singleton_key="k") == UpdateResult([keyed[2]], 1)
    assert boss.update(q, {"by": "oldest"}, singleton_key="k", match="oldest") == UpdateResult([keyed[0]], 1)
    assert [found["data"] for found in rows(session, boss.schema, "singleton_key = 'k'")] == [
        {"by": "oldest"},
        {"n": 1},
        {"by": "newest"},
    ]
    active = sent(boss, q, {"n": "active"}, singleton_key="k", priority=10)
    assert [job.id for job in boss.fetch(q)] == [active]
    result = boss.update(q, {"by": "all"}, singleton_key="k", match="all")
    assert (sorted(result.jobs), result.updated, result.inserted) == (sorted(keyed), 3, 0)
    assert row(session, boss.schema, q, active)["data"] == {"n": "active"}
    assert row(session, boss.schema, q, other)["data"] == {"n": "other"}


@pytest.mark.parametrize("state", ["active", "completed", "failed", "cancelled"])
def test_update_leaves_jobs_that_are_no_longer_queued(boss: Boss, session: Session, q: str, state: str) -> None:
    job_id = sent(boss, q, {"a": 1}, singleton_key="k", retry_limit=0)
    boss.fetch(q)
    if state == "completed":
        boss.complete(q, job_id)
    elif state == "failed":
        boss.fail(q, job_id)
    elif state == "cancelled":
        boss.cancel(q, job_id)
    before = row(session, boss.schema, q, job_id)
    assert before["state"] == state
    assert boss.update(q, {"b": 2}, id=job_id) == UpdateResult([], 0, 0)
    assert boss.update(q, {"b": 2}, singleton_key="k", match="all") == UpdateResult([], 0, 0)
    assert row(session, boss.schema, q, job_id) == before


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({}, InvalidOptionError, "exactly one of id or singleton_key"),
        ({"id": "ID", "singleton_key": "k"}, InvalidOptionError, "exactly one of id or singleton_key"),
        ({"id": "ID", "match": "oldest"}, InvalidOptionError, "match is only valid"),
        ({"singleton_key": "k", "match": "latest"}, InvalidOptionError, "match must be one of"),
        ({"id": "not-a-uuid"}, InvalidOptionError, "not a UUID"),
        ({"id": "ID", "singleton_seconds": 60}, InvalidOptionError, "unknown update option"),
        ({"id": "ID", "singleton_minutes": 1}, UnsupportedOperationError, "singleton_seconds"),
        ({"id": "ID", "retry_delay_max": 5}, InvalidOptionError, "retry_backoff=True"),
        ({"id": "ID", "priority": "high"}, InvalidOptionError, "priority"),
        ({"id": "ID", "expire_in_seconds": 0}, InvalidOptionError, "expire_in_seconds"),
        ({"id": "ID", "retention_seconds": 0}, InvalidOptionError, "retention_seconds"),
        ({"id": "ID", "heartbeat_seconds": 5}, InvalidOptionError, "heartbeat_seconds"),
        ({"id": "ID", "group": {"id": ""}}, InvalidOptionError, "group id"),
        ({"id": "ID", "start_after": "soon"}, InvalidOptionError, "start_after"),
        ({"id": "ID", "dead_letter": "bad name!"}, InvalidQueueNameError, "dead_letter"),
        ({"id": "ID", "dead_letter": "nope"}, DeadLetterQueueNotFoundError, "'nope' does not exist"),
    ],
)
def test_update_refuses_bad_arguments_before_writing(
    boss: Boss, session: Session, q: str, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    job_id = sent(boss, q, {"a": 1})
    options = {key: job_id if value == "ID" else value for key, value in options.items()}
    before = rows(session, boss.schema)
    for method in ("update", "upsert"):
        with pytest.raises(error, match=message.replace("update", method)):
            getattr(boss, method)(q, {"b": 2}, **options)
    with pytest.raises(InvalidOptionError, match="unknown update option"):
        boss.update(q, id=job_id, trace_context={"traceparent": "x"})  # upsert stores it on a job it inserts
    with pytest.raises(PayloadError):
        boss.update(q, {"b": object()}, id=job_id)
    with pytest.raises(QueueNotFoundError, match="'nope' does not exist"):
        boss.update("nope", id=job_id)
    assert rows(session, boss.schema) == before


# ------------------------------------------------------------------------------------------- upsert


def test_upsert_by_key_inserts_a_job_as_send_would_then_updates_it(boss: Boss, session: Session, q: str) -> None:
    options: dict[str, Any] = {
        "singleton_key": "u",
        "priority": 2,
        "retry_limit": 9,
        "start_after": AT,
        "group": {"id": "g", "tier": "t"},
        "retention_seconds": 100,
        "trace_context": {"traceparent": "00-1-2-01"},
    }
    inserted = boss.upsert(q, {"x": 1}, **options)
    assert (inserted.updated, inserted.inserted, len(inserted.jobs)) == (0, 1, 1)
    upserted = row(session, boss.schema, q, inserted.jobs[0])
    twin = row(session, boss.schema, q, sent(boss, q, {"x": 1}, **options))
    assert upserted["upsert_by_key"] is True
    assert twin["upsert_by_key"] is None
    ignored = {"id", "upsert_by_key"}
    assert {k: v for k, v in upserted.items() if k not in ignored} == {
        k: v for k, v in twin.items() if k not in ignored
    }
    # Its key now has two queued jobs: the twin is the newest (the ids break the tie of one transaction).
    age(session, boss.schema, q, inserted.jobs[0], 10)
    updated = boss.upsert(q, {"x": 2}, singleton_key="u", match="oldest", priority=7)
    assert updated == UpdateResult(jobs=inserted.jobs, updated=1, inserted=0)
    after = row(session, boss.schema, q, inserted.jobs[0])
    assert after == {**upserted, "created_on": after["created_on"], "data": {"x": 2}, "priority": 7}


def test_upsert_by_id_inserts_that_id_without_a_key(boss: Boss, session: Session, q: str) -> None:
    job_id = uuid.uuid4()
    assert boss.upsert(q, id=job_id) == UpdateResult([job_id], updated=0, inserted=1)
    found = row(session, boss.schema, q, job_id)
    now = db_now(session)
    assert (found["singleton_key"], found["upsert_by_key"], found["data"], found["data_type"]) == (
        None,
        None,
        None,
        None,  # no data given: SQL NULL, as a send without data
    )
    assert (found["retry_limit"], found["start_after"], found["keep_until"]) == (3, now, now + 1000 * SECOND)
    assert boss.upsert(q, {"y": 1}, id=str(job_id)) == UpdateResult([job_id], updated=1, inserted=0)
    assert row(session, boss.schema, q, job_id)["data"] == {"y": 1}


def test_upsert_of_a_job_no_longer_queued_changes_nothing(boss: Boss, session: Session) -> None:
    # exclusive: one queued-or-active job per key, so the insert meets the active job and the update finds none.
    boss.create_queue("ex", policy="exclusive")
    active = sent(boss, "ex", {"a": 1}, singleton_key="k")
    boss.fetch("ex")
    before = rows(session, boss.schema)
    assert boss.upsert("ex", {"b": 2}, singleton_key="k") == UpdateResult([], 0, 0)
    assert boss.upsert("ex", {"b": 2}, id=active) == UpdateResult([], 0, 0)
    assert rows(session, boss.schema) == before


def test_upsert_on_a_key_strict_fifo_queue_needs_a_key(boss: Boss, session: Session) -> None:
    boss.create_queue("fifo", policy="key_strict_fifo")
    with pytest.raises(InvalidOptionError, match="key_strict_fifo"):
        boss.upsert("fifo", {"a": 1}, id=uuid.uuid4())
    assert rows(session, boss.schema, "name = 'fifo'") == []
    result = boss.upsert("fifo", {"a": 1}, singleton_key="k")
    assert row(session, boss.schema, "fifo", result.jobs[0])["policy"] == "key_strict_fifo"


def test_two_upserts_of_one_key_end_with_one_job(engine: Engine) -> None:
    """Committed, in two transactions: the second upsert's insert waits on i13 for the first, then updates its job."""
    schema = unique_name("f46u")
    migrations.upgrade(engine, schema=schema, pgboss=12)
    sessions = sessionmaker(engine.execution_options(schema_translate_map=schema_translate_map(schema)))
    try:
        with sessions.begin() as session:
            Boss(session, schema).create_queue("q")
        first = sessions()
        first_result = Boss(first, schema).upsert("q", {"by": "first"}, singleton_key="k")
        outcome: list[Any] = []
        pids: list[int] = []

        def second() -> None:
            with sessions.begin() as session:
                pids.append(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
                try:
                    outcome.append(Boss(session, schema).upsert("q", {"by": "second"}, singleton_key="k"))
                except Exception as exc:  # pragma: no cover - reported below
                    outcome.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        wait_until(lambda: pids and backend_waits_for_lock(engine, pids[0]), what="the second upsert waits")
        first.commit()
        first.close()
        thread.join(30)
        assert outcome == [UpdateResult(jobs=first_result.jobs, updated=1, inserted=0)]
        assert first_result.inserted == 1
        with sessions() as session:
            [only] = rows(session, schema)
        assert (only["id"], only["data"], only["upsert_by_key"]) == (first_result.jobs[0], {"by": "second"}, True)
    finally:
        drop_schema(engine, schema)


# -------------------------------------------------------------------------------------------- flows


@pytest.fixture
def flow_queues(boss: Boss) -> tuple[str, str]:
    boss.create_queue("fa", retry_limit=4)
    boss.create_queue("fb", retention_seconds=500)
    return "fa", "fb"


def test_flow_inserts_blocked_and_blocking_jobs_and_their_edges(
    boss: Boss, session: Session, flow_queues: tuple[str, str]
) -> None:
    fa, fb = flow_queues
    given = uuid.uuid4()
    ids = boss.flow(
        [
            {"ref": "root", "name": fa, "data": {"step": 1}, "options": {"id": given, "priority": 3}},
            {"ref": "side", "name": fb},
            {"ref": "join", "name": fb, "data": [1], "depends_on": ["root", "side", "root"]},
            {"ref": "last", "name": fa, "depends_on": ["join"], "options": {"start_after": AT, "singleton_key": "k"}},
        ]
    )
    assert list(ids) == ["root", "side", "join", "last"]
    assert ids["root"] == given
    found = {
        label: row(session, boss.schema, name, ids[label]) for label, name in zip(ids, [fa, fb, fb, fa], strict=True)
    }
    flags = {label: (r["blocked"], r["blocking"], r["pending_dependencies"]) for label, r in found.items()}
    assert flags == {
        "root": (False, True, 0),
        "side": (False, True, 0),
        "join": (True, True, 2),  # root counted once
        "last": (True, False, 1),
    }
    assert edges(session, boss.schema) == {
        (fb, ids["join"], fa, ids["root"]),
        (fb, ids["join"], fb, ids["side"]),
        (fa, ids["last"], fb, ids["join"]),
    }
    # Apart from the flow columns, each job is the job send() makes of the same options.
    now = db_now(session)
    assert (found["root"]["priority"], found["root"]["data"], found["root"]["retry_limit"]) == (3, {"step": 1}, 4)
    assert (found["last"]["start_after"], found["last"]["singleton_key"]) == (AT, "k")
    assert found["join"]["keep_until"] == now + 500 * SECOND
    twin_id = sent(boss, fb, [1])
    twin = row(session, boss.schema, fb, twin_id)
    flow_columns = {"id", "blocked", "blocking", "pending_dependencies"}
    assert {k: v for k, v in twin.items() if k not in flow_columns} == {
        k: v for k, v in found["join"].items() if k not in flow_columns
    }
    # Blocked jobs are not fetched; the roots are.
    assert {job.id for job in boss.fetch(fa, batch_size=10)} == {ids["root"]}
    assert {job.id for job in boss.fetch(fb, batch_size=10)} == {ids["side"], twin_id}


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ("not a list", "takes a list of jobs"),
        ([{"ref": "a", "name": "fa"}], "at least 2 jobs"),
        ([{"ref": "a", "name": "fa"}, {"ref": "b", "name": "fa"}], "at least one job with depends_on"),
        ([{"ref": "a", "name": "fa"}, {"ref": "a", "name": "fa", "depends_on": ["a"]}], "duplicate ref 'a'"),
        ([{"ref": "", "name": "fa"}, {"ref": "b", "name": "fa", "depends_on": [""]}], "non-empty string ref"),
        ([{"ref": "a", "name": "fa"}, {"ref": "b", "name": "fa", "depends_on": ["c"]}], "'c' of job 'b' is not"),
        ([{"ref": "a", "name": "fa"}, {"ref": "b", "name": "fa", "depends_on": ["b"]}], "cannot depend on itself"),
        ([{"ref": "a", "name": "fa"}, {"ref": "b", "name": "fa", "depends_on": "a"}], "must be a list of refs"),
        (
            [
                {"ref": "a", "name": "fa", "depends_on": ["c"]},
                {"ref": "b", "name": "fa", "depends_on": ["a"]},
                {"ref": "c", "name": "fa", "depends_on": ["b"]},
                {"ref": "d", "name": "fa"},
            ],
            "dependency cycle: a -> c -> b -> a",
        ),
        ([{"ref": "a", "name": "fa"}, {"ref": "b", "name": "fa", "depends_on": ["a"], "after": 1}], "not after"),
        ([{"ref": "a", "name": "bad name"}, {"ref": "b", "name": "fa", "depends_on": ["a"]}], "can only contain"),
        (
            [
                {"ref": "a", "name": "fa", "options": {"singleton_next_slot": True}},
                {"ref": "b", "name": "fa", "depends_on": ["a"]},
            ],
            "cannot debounce",
        ),
        (
            [
                {"ref": "a", "name": "fa", "options": {"retry_limit": -1}},
                {"ref": "b", "name": "fa", "depends_on": ["a"]},
            ],
            "retry_limit",
        ),
        (
            [
                {"ref": "a", "name": "fa", "options": {"id": "00000000-0000-4000-8000-000000000001"}},
                {
                    "ref": "b",
                    "name": "fa",
                    "depends_on": ["a"],
                    "options": {"id": "00000000-0000-4000-8000-000000000001"},
                },
            ],
            "have the id",
        ),
    ],
)
def test_flow_refuses_a_bad_flow_before_writing(
    boss: Boss, session: Session, flow_queues: tuple[str, str], jobs: Any, message: str
) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        boss.flow(jobs)
    assert rows(session, boss.schema, "name IN ('fa', 'fb')") == []


def test_flow_is_all_or_nothing(boss: Boss, session: Session, flow_queues: tuple[str, str]) -> None:
    fa, fb = flow_queues
    taken = sent(boss, fb, {"taken": True})
    before = (rows(session, boss.schema), edges(session, boss.schema))
    jobs = [{"ref": "a", "name": fa}, {"ref": "b", "name": fb, "depends_on": ["a"], "options": {"id": taken}}]
    with pytest.raises(JobConflictError, match="nothing was sent"):
        boss.flow(jobs)
    assert (rows(session, boss.schema), edges(session, boss.schema)) == before  # and the transaction goes on
    with pytest.raises(QueueNotFoundError, match="'nope' does not exist"):
        boss.flow([{"ref": "a", "name": fa}, {"ref": "b", "name": "nope", "depends_on": ["a"]}])
    with pytest.raises(DeadLetterQueueNotFoundError, match="'gone' does not exist"):
        boss.flow(
            [
                {"ref": "a", "name": fa, "options": {"dead_letter": "gone"}},
                {"ref": "b", "name": fa, "depends_on": ["a"]},
            ]
        )
    boss.create_queue("fifo", policy="key_strict_fifo")
    with pytest.raises(InvalidOptionError, match="'fifo' is key_strict_fifo"):
        boss.flow([{"ref": "a", "name": fa}, {"ref": "b", "name": "fifo", "depends_on": ["a"]}])
    assert (rows(session, boss.schema), edges(session, boss.schema)) == before
    ids = boss.flow([{"ref": "a", "name": fa}, {"ref": "b", "name": fb, "depends_on": ["a"]}])
    assert len(rows(session, boss.schema)) == len(before[0]) + 2
    assert (fb, ids["b"], fa, ids["a"]) in edges(session, boss.schema)


def test_get_dependencies_and_dependents_page_by_name_and_id(
    boss: Boss, session: Session, flow_queues: tuple[str, str]
) -> None:
    fa, fb = flow_queues
    parents = [{"ref": f"p{n}", "name": fa if n % 2 else fb} for n in range(5)]
    ids = boss.flow([*parents, {"ref": "c", "name": fa, "depends_on": [p["ref"] for p in parents]}])
    expected = sorted((JobRef(p["name"], ids[p["ref"]]) for p in parents), key=lambda r: (r.name, r.id))
    assert boss.get_dependencies(fa, ids["c"]) == expected
    first = boss.get_dependencies(fa, ids["c"], limit=2)
    assert first == expected[:2]
    assert boss.get_dependencies(fa, ids["c"], limit=2, after=first[-1]) == expected[2:4]
    assert boss.get_dependencies(fa, ids["c"], after=(expected[3].name, str(expected[3].id))) == expected[4:]
    assert boss.get_dependencies(fa, ids["c"], after={"name": expected[4].name, "id": expected[4].id}) == []
    for parent in parents:
        assert boss.get_dependents(parent["name"], ids[parent["ref"]]) == [JobRef(fa, ids["c"])]
        assert boss.get_dependencies(parent["name"], ids[parent["ref"]]) == []
    assert boss.get_dependents(fb, ids["c"]) == []  # the wrong queue: nothing
    with pytest.raises(InvalidOptionError, match="limit"):
        boss.get_dependencies(fa, ids["c"], limit=100_001)
    with pytest.raises(InvalidOptionError, match="after"):
        boss.get_dependents(fa, ids["c"], after="p1")


def test_resolve_flow_releases_a_child_when_its_last_parent_completed(
    boss: Boss, session: Session, flow_queues: tuple[str, str]
) -> None:
    fa, fb = flow_queues
    ids = boss.flow(
        [
            {"ref": "a", "name": fa},
            {"ref": "b", "name": fa},
            {"ref": "c", "name": fb, "depends_on": ["a", "b"]},
            {"ref": "late", "name": fb, "depends_on": ["a"], "options": {"start_after": AT}},
            {"ref": "failing", "name": fa, "options": {"retry_limit": 0}},
            {"ref": "orphan", "name": fb, "depends_on": ["failing"]},
        ]
    )
    now = db_now(session)
    session.execute(  # sent a minute ago: a released child starts when it is released, not when it was sent
        text(
            f"UPDATE {quote_identifier(boss.schema)}.job SET start_after = start_after - interval '1 minute' "
            "WHERE start_after <= now()"
        )
    )

    def flags(label: str) -> tuple[bool, bool, int, dt.datetime]:
        found = row(session, boss.schema, fb if label in ("c", "late", "orphan") else fa, ids[label])
        return found["blocked"], found["blocking"], found["pending_dependencies"], found["start_after"]

    before = now - 60 * SECOND
    child = boss.get_job_by_id(fb, ids["c"])  # an ORM object the session holds: resolve_flow expires it
    assert child.blocked is True
    assert boss.resolve_flow() == 0  # no parent has completed
    assert {job.id for job in boss.fetch(fa, batch_size=5)} == {ids["a"], ids["b"], ids["failing"]}
    assert boss.complete(fa, ids["a"]) == 1
    assert flags("a") == (False, True, 0, before)  # completion alone releases nothing
    assert boss.resolve_flow() == 1
    assert flags("a") == (False, False, 0, before)
    assert flags("c") == (True, False, 1, before)
    assert flags("late") == (False, False, 0, AT)  # released; a later start is kept
    assert boss.resolve_flow() == 0  # nothing left to resolve
    assert boss.complete(fa, ids["b"]) == 1
    assert boss.fail(fa, ids["failing"]) == 1
    assert row(session, boss.schema, fa, ids["failing"])["state"] == "failed"
    assert boss.resolve_flow() == 1  # the second parent; a failed parent releases nothing
    assert flags("c") == (False, False, 0, now)  # moved up to its release
    assert (child.blocked, child.pending_dependencies) == (False, 0)
    assert flags("orphan") == (True, False, 1, before)
    assert flags("failing") == (False, True, 0, before)
    assert [job.id for job in boss.fetch(fb, batch_size=5)] == [ids["c"]]


def test_complete_with_include_queued_forces_a_blocked_job_out(
    boss: Boss, session: Session, flow_queues: tuple[str, str]
) -> None:
    fa, fb = flow_queues
    ids = boss.flow([{"ref": "a", "name": fa}, {"ref": "b", "name": fb, "depends_on": ["a"]}])
    assert boss.complete(fb, ids["b"], include_queued=True) == 1
    found = row(session, boss.schema, fb, ids["b"])
    assert (found["state"], found["blocked"], found["pending_dependencies"]) == ("completed", False, 0)
    boss.fetch(fa)
    boss.complete(fa, ids["a"])
    assert boss.resolve_flow() == 1  # the parent is resolved; its child, no longer blocked, is left alone
    assert row(session, boss.schema, fb, ids["b"]) == found


# ------------------------------------------------------------------------------------------ redrive


@pytest.fixture
def dead(boss: Boss) -> Callable[..., uuid.UUID]:
    """``dead(queue, data, **options)``: send a job, fetch and fail it; return its dead-letter copy's id."""
    boss.create_queue("dlq", retention_seconds=300)
    boss.create_queue(
        "src",
        dead_letter="dlq",
        retry_limit=0,
        retry_delay=1,
        expire_in_seconds=40,
        retention_seconds=500,
        delete_after_seconds=70,
        heartbeat_seconds=25,
    )

    def dead(name: str = "src", data: Any = None, **options: Any) -> uuid.UUID:
        job_id = sent(boss, name, data, **options)
        assert job_id in {job.id for job in boss.fetch(name, batch_size=50)}
        assert boss.fail(name, job_id, {"boom": str(job_id)}) == 1
        [copy] = rows(boss.session, boss.schema, "name = 'dlq' AND source_id = :id", id=job_id)
        return uuid.UUID(str(copy["id"]))

    return dead


def test_redrive_makes_a_new_job_with_the_queue_settings_of_now(
    boss: Boss, session: Session, dead: Callable[..., uuid.UUID]
) -> None:
    copy = dead(
        "src",
        {"n": 1},
        priority=4,
        singleton_key="k",
        group={"id": "g", "tier": "t"},
        trace_context={"traceparent": "x"},
    )
    original = row(session, boss.schema, "dlq", copy)["source_id"]
    boss.update_queue("src", retry_limit=6, retry_backoff=True, retry_delay_max=90)
    now = db_now(session)
    assert boss.preview_redrive("dlq") == RedrivePreview(total=1, destinations={"src": 1}, unroutable=0)
    assert boss.redrive("dlq") == 1
    assert rows(session, boss.schema, "name = 'dlq'") == []
    [new] = rows(session, boss.schema, "name = 'src' AND id <> :id", id=original)
    assert new == {
        "name": "src",
        "id": new["id"],
        "priority": 4,
        "data": {"n": 1},
        "data_type": "object",
        "state": "created",
        "retry_limit": 6,
        "retry_count": 0,
        "retry_delay": 1,
        "retry_backoff": True,
        "retry_delay_max": 90,
        "expire_seconds": 40,
        "deletion_seconds": 70,
        "singleton_key": "k",
        "singleton_on": None,
        "group_id": "g",
        "group_tier": "t",
        "start_after": now,
        "created_on": now,
        "started_on": None,
        "completed_on": None,
        "keep_until": now + 500 * SECOND,
        "output": None,
        "dead_letter": "dlq",
        "policy": "standard",
        "heartbeat_on": None,
        "heartbeat_seconds": 25,
        "blocked": False,
        "blocking": False,
        "pending_dependencies": 0,
        "source_name": None,
        "source_id": None,
        "source_created_on": None,
        "source_retry_count": None,
        "source_output": None,
        "source_root_id": original,
        "trace_context": {"traceparent": "x"},
        "upsert_by_key": None,
    }
    assert new["id"] not in (original, copy)
    # Dead-lettered again, and redriven again: the root stays the first job of the chain.
    boss.fetch("src", batch_size=10)
    session.execute(text(f"UPDATE {quote_identifier(boss.schema)}.job SET retry_limit = 0 WHERE name = 'src'"))
    assert boss.fail("src", new["id"]) == 1
    [again] = rows(session, boss.schema, "name = 'dlq'")
    assert (again["source_id"], again["source_root_id"]) == (new["id"], original)
    assert boss.redrive("dlq") == 1
    [newest] = rows(session, boss.schema, "name = 'src' AND state = 'created'")
    assert newest["source_root_id"] == original


def test_redrive_filters_and_limits(boss: Boss, session: Session, dead: Callable[..., uuid.UUID]) -> None:
    boss.create_queue("other", dead_letter="dlq", retry_limit=0)
    boss.create_queue("elsewhere")
    a1 = dead("src", {"kind": "a", "n": 1})
    a2 = dead("src", {"kind": "a", "n": 2})
    b1 = dead("other", {"kind": "b"})
    direct = sent(boss, "dlq", {"kind": "a"})  # no source: unroutable unless a destination is given
    for job_id, seconds in ((a1, 40), (a2, 30), (b1, 20), (direct, 10)):
        age(session, boss.schema, "dlq", job_id, seconds)
    oldest_two = db_now(session) - 25 * SECOND
    origin = {copy: row(session, boss.schema, "dlq", copy)["source_id"] for copy in (a1, a2, b1)}

    def preview(**filters: Any) -> tuple[int, dict[str, int], int]:
        found = boss.preview_redrive("dlq", **filters)
        return found.total, found.destinations, found.unroutable

    assert preview() == (4, {"src": 2, "other": 1}, 1)
    assert preview(source_name="src") == (2, {"src": 2}, 0)
    assert preview(data={"kind": "a"}) == (3, {"src": 2}, 1)
    assert preview(created_before=oldest_two) == (2, {"src": 2}, 0)
    assert preview(ids=[b1, str(direct)]) == (2, {"other": 1}, 1)
    assert preview(destination="elsewhere") == (4, {"elsewhere": 4}, 0)
    assert preview(destination="gone") == (4, {}, 4)
    total, destinations, unroutable = preview(limit=1)  # at most one of each kind, whichever
    assert (total, sum(destinations.values()), unroutable) == (2, 1, 1)

    assert boss.redrive("dlq", limit=1) == 1  # oldest first
    assert [r["source_root_id"] for r in rows(session, boss.schema, "name = 'src' AND state = 'created'")] == [
        origin[a1]
    ]
    assert {r["id"] for r in rows(session, boss.schema, "name = 'dlq'")} == {a2, b1, direct}
    assert boss.redrive("dlq", data={"kind": "b"}) == 1
    assert boss.redrive("dlq", ids=[direct]) == 0  # unroutable: left alone
    assert boss.redrive("dlq", ids=[direct], destination="elsewhere") == 1
    assert boss.redrive("dlq", source_name="other") == 0
    assert {r["id"] for r in rows(session, boss.schema, "name = 'dlq'")} == {a2}
    [moved] = rows(session, boss.schema, "name = 'elsewhere'")
    assert (moved["data"], moved["source_root_id"], moved["dead_letter"]) == ({"kind": "a"}, None, None)


def test_redrive_fails_a_job_its_destination_refuses(
    boss: Boss, session: Session, dead: Callable[..., uuid.UUID]
) -> None:
    boss.create_queue("shorty", policy="short", dead_letter="dlq", retry_limit=0)
    keyed = dead("shorty", {"n": 1}, singleton_key="k")
    keyless = dead("shorty", {"n": 2})
    sent(boss, "shorty", {"blocks": "k"}, singleton_key="k")
    sent(boss, "shorty", {"blocks": "no key"})
    before = {job_id: row(session, boss.schema, "dlq", job_id) for job_id in (keyed, keyless)}
    now = db_now(session)
    held = boss.get_job_by_id("dlq", keyed)  # an ORM object the session holds: redrive expires it
    assert held.state == "created"
    assert boss.redrive("dlq") == 0
    assert held.state == "failed"
    message = "Not redriven: queue shorty already has a job {} under its short policy"
    for job_id, key, what in ((keyed, "k", "with singletonKey k"), (keyless, None, "this one conflicts with")):
        after = row(session, boss.schema, "dlq", job_id)
        assert after == {
            **before[job_id],
            "state": "failed",
            "completed_on": now,
            "output": {
                "message": message.format(what),
                "reason": "redrive_conflict",
                "destination": "shorty",
                "policy": "short",
                "singletonKey": key,
            },
        }
        assert after["source_output"] is not None
    assert boss.redrive("dlq") == 0  # failed rows are no candidates any more


def test_redrive_fails_one_conflicting_job_per_key_of_a_key_strict_fifo_queue(boss: Boss, session: Session) -> None:
    """job_i8 allows one failed job per key there: the oldest is failed, the rest wait behind it, unredriven."""
    boss.create_queue("fdlq", policy="key_strict_fifo")
    boss.create_queue("dest", policy="short")
    first, second = sent(boss, "fdlq", {"n": 1}, singleton_key="k"), sent(boss, "fdlq", {"n": 2}, singleton_key="k")
    age(session, boss.schema, "fdlq", first, 20)
    age(session, boss.schema, "fdlq", second, 10)
    sent(boss, "dest", {"blocks": True}, singleton_key="k")
    assert boss.preview_redrive("fdlq", destination="dest") == RedrivePreview(2, {"dest": 2}, 0)
    assert boss.redrive("fdlq", destination="dest") == 0
    assert row(session, boss.schema, "fdlq", first)["output"] == {
        "message": "Not redriven: queue dest already has a job with singletonKey k under its short policy",
        "reason": "redrive_conflict",
        "destination": "dest",
        "policy": "short",
        "singletonKey": "k",
    }
    assert (row(session, boss.schema, "fdlq", first)["state"], row(session, boss.schema, "fdlq", second)["state"]) == (
        "failed",
        "created",
    )
    # The failed job now holds the key: the one behind it is no candidate until it is retried or deleted.
    assert boss.preview_redrive("fdlq", destination="dest") == RedrivePreview(0, {}, 0)
    assert boss.redrive("fdlq", destination="dest") == 0


def test_redrive_refuses_bad_filters(boss: Boss, session: Session, dead: Callable[..., uuid.UUID]) -> None:
    copy = dead()
    before = rows(session, boss.schema)
    for method in (boss.redrive, boss.preview_redrive):
        for filters, message in (
            ({"data": [1]}, "data must be a mapping"),
            ({"created_before": dt.datetime(2030, 1, 1)}, "aware datetime"),
            ({"ids": str(copy)}, "not one id"),
            ({"ids": []}, "requires an id"),
            ({"ids": ["x"]}, "not a UUID"),
            ({"limit": 0}, "limit"),
            ({"destination": "bad name"}, "destination"),
            ({"source_name": 5}, "source_name"),
        ):
            with pytest.raises(InvalidOptionError, match=message):
                method("dlq", **filters)
    with pytest.raises(InvalidOptionError, match="at most 100000"):
        boss.preview_redrive("dlq", limit=100_001)
    with pytest.raises(QueueNotFoundError, match="'nope' does not exist"):
        boss.redrive("nope")
    with pytest.raises(QueueNotFoundError, match="'nope' does not exist"):
        boss.preview_redrive("nope")
    assert rows(session, boss.schema) == before


# ---------------------------------------------------------------------------------------- notify (§10)


def test_update_upsert_and_flow_notify_as_pg_boss_12_does(engine: Engine) -> None:
    """Committed, with a listener on pg-boss 12's channel: an update or upsert that leaves a job of a notify-enabled
    queue due announces the queue once at commit; a flow announces each of its notify-enabled queues."""
    schema = unique_name("f46n")
    migrations.upgrade(engine, schema=schema, pgboss=12)
    sessions = sessionmaker(engine.execution_options(schema_translate_map=schema_translate_map(schema)))
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True) as listener:
            listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(notify_channel(schema))))

            def heard(expected: int) -> list[str]:
                found = listener.notifies(timeout=5 if expected else 0.2, stop_after=expected or None)
                return [notification.payload for notification in found]

            def run(call: Callable[[Boss], Any]) -> None:
                with sessions.begin() as session:
                    call(Boss(session, schema))

            with sessions.begin() as session:
                boss = Boss(session, schema)
                boss.create_queue("loud", notify=True)
                boss.create_queue("quiet")
                later = sent(boss, "loud", start_after=3600)
                quiet = sent(boss, "quiet")
            assert heard(0) == []
            run(lambda boss: boss.update("loud", id=later, priority=1))  # still deferred
            assert heard(0) == []
            run(lambda boss: boss.update("loud", id=later, start_after=0))
            assert heard(1) == ["loud"]
            run(lambda boss: boss.update("quiet", id=quiet, start_after=-5))
            assert heard(0) == []
            run(lambda boss: boss.upsert("loud", singleton_key="later", start_after=60))
            assert heard(0) == []
            run(lambda boss: boss.upsert("loud", {"n": 1}, singleton_key="now"))
            assert heard(1) == ["loud"]
            flow = [
                {"ref": "a", "name": "loud", "options": {"start_after": 60}},
                {"ref": "b", "name": "quiet", "depends_on": ["a"]},
            ]
            run(lambda boss: boss.flow(flow))
            assert heard(1) == ["loud"]  # due or not
            assert heard(0) == []
    finally:
        drop_schema(engine, schema)


# --------------------------------------------------------------------------------------- version 24


def test_version_24_refuses_each_with_a_clear_error(
    engine: Engine, async_engine: AsyncEngine | None, v24_schema: str
) -> None:
    with plain_connection(engine, async_engine) as plain:
        _refused_on_version_24(plain.boss(schema=v24_schema))


def _refused_on_version_24(old: Any) -> None:
    assert old.version() == 24
    for call in (
        lambda: old.update("q", id=uuid.uuid4()),
        lambda: old.upsert("q", singleton_key="k"),
        lambda: old.flow([{"ref": "a", "name": "q"}, {"ref": "b", "name": "q", "depends_on": ["a"]}]),
        lambda: old.get_dependencies("q", uuid.uuid4()),
        lambda: old.get_dependents("q", uuid.uuid4()),
        lambda: old.resolve_flow(),
        lambda: old.redrive("q"),
        lambda: old.preview_redrive("q"),
    ):
        with pytest.raises(UnsupportedOperationError, match=r"pg-boss 12's \(schema version 46\)"):
            call()
