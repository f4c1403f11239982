"""Sending (PGBOSS10.md §4): the rows ``send``, ``send_*`` and ``insert`` write, read back through ``Job``."""

from __future__ import annotations

import datetime as dt
import math
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from boss_support import EPOCH, assert_usable, db_epoch, db_now, jobs_of, load, one_schema_per_module
from sqlalchemy import Connection, event, func, select
from sqlalchemy.orm import Session

from sqla_boss import Boss, Job, JobState, QueuePolicy
from sqla_boss.errors import DeadLetterQueueNotFoundError, QueueNotFoundError

UTC = dt.timezone.utc


installed_schema = pytest.fixture(scope="module", name="installed_schema")(one_schema_per_module)
"""One schema for the module: its tests never commit, each one's transaction is rolled back."""


@pytest.fixture
def q(boss: Boss) -> str:
    """A standard queue named ``q``."""
    boss.create_queue("q")
    return "q"


@pytest.fixture
def statements(connection: Connection) -> Iterator[list[str]]:
    """The SQL statements sent to the server on the test's connection (sync or async) while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append(statement)

    event.listen(connection, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(connection, "before_cursor_execute", record)


# ---------------------------------------------------------------------------------------- defaults


def test_a_plain_send_takes_pg_boss_defaults(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, {"a": 1})
    assert isinstance(job_id, uuid.UUID)
    job = load(session, q, job_id)
    now = db_now(session)
    assert (job.name, job.data, job.state, job.priority) == (q, {"a": 1}, JobState.created, 0)
    assert (job.retry_limit, job.retry_count, job.retry_delay, job.retry_backoff) == (2, 0, 0, False)
    assert job.expire_in == dt.timedelta(minutes=15)
    assert job.start_after == now
    assert job.created_on == now
    assert job.keep_until == job.start_after + dt.timedelta(days=14)
    assert job.policy is QueuePolicy.standard
    assert (job.singleton_key, job.singleton_on, job.dead_letter) == (None, None, None)
    assert (job.started_on, job.completed_on, job.output) == (None, None, None)


@pytest.mark.parametrize(
    "data",
    [None, {"nested": {"list": [1, 2.5, None, True]}}, [1, "two"], "text", 42, 0, False, "é ☃ 🎉", {"": ""}],
    ids=["none", "dict", "list", "str", "int", "zero", "false", "unicode", "empty-key"],
)
def test_data_is_stored_as_json(boss: Boss, session: Session, q: str, data: Any) -> None:
    job = load(session, q, boss.send(q, data))
    assert job.data == data
    if data is None:
        assert session.scalar(select(Job.data.is_(None)).where(Job.id == job.id)) is True  # SQL NULL, not 'null'


def test_priority_is_stored_and_zero_is_the_default(boss: Boss, session: Session, q: str) -> None:
    high = load(session, q, boss.send(q, None, priority=10))
    negative = load(session, q, boss.send(q, None, priority=-3))
    zero = load(session, q, boss.send(q, None, priority=0))
    assert (high.priority, negative.priority, zero.priority) == (10, -3, 0)


def test_an_explicit_id_is_used(boss: Boss, session: Session, q: str) -> None:
    wanted = uuid.uuid4()
    assert boss.send(q, None, id=wanted) == wanted
    wanted_text = uuid.uuid4()
    assert boss.send(q, None, id=str(wanted_text)) == wanted_text
    assert load(session, q, wanted).id == wanted


# -------------------------------------------------------------------------------------- precedence


def test_settings_come_from_the_job_then_the_queue_then_the_constructor_then_pg_boss(
    session: Session, make_boss: Callable[..., Any], installed_schema: str
) -> None:
    boss = make_boss(
        session,
        schema=installed_schema,
        retry_limit=5,
        retry_delay=7,
        retry_backoff=False,
        expire_in_minutes=3,
        retention_hours=5,
    )
    boss.create_queue("dlq")
    boss.create_queue("dlq2")
    boss.create_queue(
        "configured",
        retry_limit=3,
        retry_delay=11,
        retry_backoff=True,
        expire_in_seconds=120,
        retention_minutes=90,
        dead_letter="dlq",
    )
    boss.create_queue("plain")

    job_level = load(
        session,
        "configured",
        boss.send(
            "configured",
            None,
            retry_limit=1,
            retry_delay=13,
            retry_backoff=False,
            expire_in_seconds=30,
            retention_days=2,
            dead_letter="dlq2",
        ),
    )
    queue_level = load(session, "configured", boss.send("configured"))
    constructor_level = load(session, "plain", boss.send("plain"))
    built_in = load(session, "plain", make_boss(session, schema=installed_schema).send("plain"))

    def settings(job: Job) -> tuple[Any, ...]:
        return (
            job.retry_limit,
            job.retry_delay,
            job.retry_backoff,
            job.expire_in,
            job.keep_until - job.start_after,
            job.dead_letter,
        )

    assert settings(job_level) == (1, 13, False, dt.timedelta(seconds=30), dt.timedelta(days=2), "dlq2")
    assert settings(queue_level) == (3, 11, True, dt.timedelta(minutes=2), dt.timedelta(minutes=90), "dlq")
    assert settings(constructor_level) == (5, 7, False, dt.timedelta(minutes=3), dt.timedelta(hours=5), None)
    assert settings(built_in) == (2, 0, False, dt.timedelta(minutes=15), dt.timedelta(days=14), None)


def test_constructor_defaults_apply_to_insert_too(
    session: Session, make_boss: Callable[..., Any], installed_schema: str
) -> None:
    boss = make_boss(session, schema=installed_schema, retry_limit=6, expire_in_seconds=45, retention_days=1)
    boss.create_queue("plain")
    [job_id] = boss.insert([{"name": "plain"}])
    job = load(session, "plain", job_id)
    assert (job.retry_limit, job.expire_in) == (6, dt.timedelta(seconds=45))
    assert job.keep_until - job.start_after == dt.timedelta(days=1)


def test_retry_delay_is_at_least_one_second_with_backoff(
    session: Session, make_boss: Callable[..., Any], installed_schema: str
) -> None:
    plain = make_boss(session, schema=installed_schema)
    plain.create_queue("q")
    backing_off = make_boss(session, schema=installed_schema, retry_backoff=True)
    assert load(session, "q", plain.send("q", None, retry_backoff=True)).retry_delay == 1
    assert load(session, "q", plain.send("q", None, retry_backoff=True, retry_delay=0)).retry_delay == 1
    assert load(session, "q", backing_off.send("q")).retry_delay == 1
    assert load(session, "q", backing_off.send("q", None, retry_delay=9)).retry_delay == 9
    assert load(session, "q", plain.send("q", None, retry_delay=0)).retry_delay == 0


def test_durations_take_timedeltas(boss: Boss, session: Session, q: str) -> None:
    job = load(
        session,
        q,
        boss.send(
            q,
            None,
            retry_delay=dt.timedelta(minutes=1),
            expire_in_seconds=dt.timedelta(minutes=2),
            retention_minutes=dt.timedelta(hours=1),
        ),
    )
    assert (job.retry_delay, job.expire_in) == (60, dt.timedelta(minutes=2))
    assert job.keep_until - job.start_after == dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("options", "expire_in"),
    [
        ({"expire_in_seconds": 86399}, dt.timedelta(seconds=86399)),
        ({"expire_in_minutes": 2}, dt.timedelta(minutes=2)),
        ({"expire_in_hours": 23}, dt.timedelta(hours=23)),
        ({"expire_in_hours": 1, "expire_in_minutes": 5, "expire_in_seconds": 7}, dt.timedelta(hours=1)),
        ({"expire_in_minutes": 5, "expire_in_seconds": 7}, dt.timedelta(minutes=5)),
    ],
)
def test_expiration_units_by_presence(
    boss: Boss, session: Session, q: str, options: dict[str, Any], expire_in: dt.timedelta
) -> None:
    assert load(session, q, boss.send(q, None, **options)).expire_in == expire_in


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({"retention_seconds": 90}, dt.timedelta(seconds=90)),
        ({"retention_minutes": 3}, dt.timedelta(minutes=3)),
        ({"retention_hours": 4}, dt.timedelta(hours=4)),
        ({"retention_days": 3}, dt.timedelta(days=3)),
        ({"retention_days": 1, "retention_hours": 5, "retention_seconds": 9}, dt.timedelta(days=1)),
    ],
)
def test_retention_units_by_presence(
    boss: Boss, session: Session, q: str, options: dict[str, Any], kept: dt.timedelta
) -> None:
    job = load(session, q, boss.send(q, None, **options))
    assert job.keep_until - job.start_after == kept


@pytest.mark.parametrize("policy", list(QueuePolicy))
def test_the_policy_is_copied_from_the_queue(boss: Boss, session: Session, policy: QueuePolicy) -> None:
    boss.create_queue("p", policy=policy.value)
    assert load(session, "p", boss.send("p")).policy is policy


def test_jobs_keep_the_policy_they_were_sent_with(boss: Boss, session: Session) -> None:
    boss.create_queue("p", policy="short")
    before = boss.send("p", None, singleton_key="k")
    boss.update_queue("p", policy="standard", retry_limit=9)
    after = boss.send("p", None, singleton_key="k")
    assert (load(session, "p", before).policy, load(session, "p", before).retry_limit) == (QueuePolicy.short, 2)
    assert (load(session, "p", after).policy, load(session, "p", after).retry_limit) == (QueuePolicy.standard, 9)


# -------------------------------------------------------------------------------------- start_after


@pytest.mark.parametrize(
    ("start_after", "delay"),
    [
        (30, dt.timedelta(seconds=30)),
        (1.5, dt.timedelta(seconds=1.5)),
        ("90 minutes", dt.timedelta(minutes=90)),
        ("5", dt.timedelta(seconds=5)),
        ("1 day 2 hours", dt.timedelta(days=1, hours=2)),
        ("01:30:00", dt.timedelta(hours=1, minutes=30)),
        (dt.timedelta(minutes=5), dt.timedelta(minutes=5)),
        (-5, dt.timedelta(0)),
        (0, dt.timedelta(0)),
        (dt.timedelta(seconds=-30), dt.timedelta(0)),
        (None, dt.timedelta(0)),
    ],
)
def test_start_after_relative_to_now(
    boss: Boss, session: Session, q: str, start_after: Any, delay: dt.timedelta
) -> None:
    job = load(session, q, boss.send(q, None, start_after=start_after))
    assert job.start_after - db_now(session) == delay


@pytest.mark.parametrize(
    "start_after",
    [
        dt.datetime(2031, 2, 3, 6, 5, 6, 789000, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(2031, 2, 3, 5, 5, 6, 789000, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
        dt.datetime(2031, 2, 3, 4, 5, 6, 789000, tzinfo=UTC),
        "2031-02-03T04:05:06.789Z",
        "2031-02-03T06:05:06.789+02:00",
        "2031-02-02T23:05:06.789-05:00",
    ],
    ids=["datetime+02", "datetime-paris", "datetime-utc", "iso-z", "iso+02", "iso-05"],
)
def test_start_after_at_an_instant(boss: Boss, session: Session, q: str, start_after: Any) -> None:
    job = load(session, q, boss.send(q, None, start_after=start_after))
    assert job.start_after == dt.datetime(2031, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)


def test_start_after_in_the_past_is_kept(boss: Boss, session: Session, q: str) -> None:
    yesterday = db_now(session) - dt.timedelta(days=1)
    assert load(session, q, boss.send(q, None, start_after=yesterday)).start_after == yesterday


def test_send_after_is_send_with_start_after(boss: Boss, session: Session, q: str) -> None:
    job = load(session, q, boss.send_after(q, {"later": True}, after=60, priority=3))
    assert (job.data, job.priority) == ({"later": True}, 3)
    assert job.start_after - db_now(session) == dt.timedelta(seconds=60)
    options = {"priority": 1}
    boss.send_after(q, None, after=dt.timedelta(hours=1), **options)
    assert options == {"priority": 1}  # the caller's mapping is not changed


def test_keep_until_is_measured_from_start_after(boss: Boss, session: Session) -> None:
    boss.create_queue("retained", retention_minutes=30)
    now = db_now(session)
    with_retention = load(session, "retained", boss.send("retained", None, start_after="90 minutes", retention_days=3))
    assert with_retention.keep_until == now + dt.timedelta(minutes=90) + dt.timedelta(days=3)
    from_queue = load(session, "retained", boss.send("retained", None, start_after=dt.timedelta(hours=2)))
    assert from_queue.keep_until == now + dt.timedelta(hours=2, minutes=30)


# ---------------------------------------------------------------------------------------- throttling


def _slot(epoch: float, seconds: int, offset: int = 0) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds * math.floor((epoch + offset) / seconds))


@pytest.mark.parametrize(
    ("options", "seconds"),
    [
        ({"singleton_seconds": 300}, 300),
        ({"singleton_minutes": 5}, 300),
        ({"singleton_hours": 24}, 86400),
        ({"singleton_hours": 1, "singleton_minutes": 2, "singleton_seconds": 10}, 3600),
        ({"singleton_hours": 0, "singleton_minutes": 2}, 120),
        ({"singleton_seconds": 1}, 1),
    ],
)
def test_singleton_on_is_the_naive_utc_start_of_the_slot(
    boss: Boss, session: Session, q: str, options: dict[str, Any], seconds: int
) -> None:
    job = load(session, q, boss.send(q, None, **options))
    assert job.singleton_on is not None
    assert job.singleton_on.tzinfo is None
    assert job.singleton_on == _slot(db_epoch(session), seconds)
    assert job.start_after == db_now(session)


def test_a_singleton_key_alone_does_not_throttle_a_standard_queue(boss: Boss, session: Session, q: str) -> None:
    first = boss.send(q, None, singleton_key="k")
    second = boss.send(q, None, singleton_key="k")
    assert None not in (first, second)
    assert first != second
    assert load(session, q, first).singleton_key == "k"
    assert load(session, q, first).singleton_on is None


def test_send_throttled_keeps_one_job_per_slot_and_key(boss: Boss, session: Session, q: str) -> None:
    first = boss.send_throttled(q, {"n": 1}, seconds=60)
    assert first is not None
    assert boss.send_throttled(q, {"n": 2}, seconds=60) is None
    assert_usable(boss, q)
    keyed = boss.send_throttled(q, {"n": 3}, seconds=60, key="k", priority=4)
    assert keyed is not None
    assert boss.send_throttled(q, {"n": 4}, seconds=60, key="k") is None
    assert (load(session, q, keyed).singleton_key, load(session, q, keyed).priority) == ("k", 4)
    # Slots are told apart by their start only: a 120 s slot that starts with the 60 s one is the same slot.
    epoch = db_epoch(session)
    same_start = _slot(epoch, 120) == _slot(epoch, 60)
    assert (boss.send_throttled(q, {"n": 5}, seconds=120, key="k") is None) is same_start


def test_a_completed_or_failed_job_still_holds_its_slot(boss: Boss, session: Session, q: str) -> None:
    completed = boss.send_throttled(q, None, seconds=60, key="done")
    failed = boss.send_throttled(q, None, seconds=60, key="failed", retry_limit=0)
    assert None not in (completed, failed)
    assert {job.id for job in boss.fetch(q, batch_size=5)} == {completed, failed}
    assert boss.complete(q, completed) == 1
    assert boss.fail(q, failed) == 1
    assert load(session, q, failed).state is JobState.failed
    assert boss.send_throttled(q, None, seconds=60, key="done") is None
    assert boss.send_throttled(q, None, seconds=60, key="failed") is None
    assert_usable(boss, q)


def test_cancelling_or_deleting_frees_the_slot(boss: Boss, session: Session, q: str) -> None:
    cancelled = boss.send_throttled(q, None, seconds=60, key="c")
    deleted = boss.send_throttled(q, None, seconds=60, key="d")
    assert boss.cancel(q, cancelled) == 1
    assert boss.delete_job(q, deleted) == 1
    again_c = boss.send_throttled(q, None, seconds=60, key="c")
    again_d = boss.send_throttled(q, None, seconds=60, key="d")
    assert again_c is not None
    assert again_c != cancelled
    assert again_d is not None
    assert again_d != deleted
    assert load(session, q, again_c).singleton_on == load(session, q, cancelled).singleton_on


def test_send_debounced_moves_to_the_next_slot_once(boss: Boss, session: Session, q: str) -> None:
    epoch, now = db_epoch(session), db_now(session)
    first = boss.send_debounced(q, {"n": 1}, seconds=60, key="k")
    second = boss.send_debounced(q, {"n": 2}, seconds=60, key="k")
    assert None not in (first, second)
    assert boss.send_debounced(q, {"n": 3}, seconds=60, key="k") is None
    assert_usable(boss, q)

    one, two = load(session, q, first), load(session, q, second)
    assert (one.singleton_on, one.start_after) == (_slot(epoch, 60), now)
    assert two.singleton_on == _slot(epoch, 60) + dt.timedelta(seconds=60)
    assert two.singleton_on == _slot(epoch, 60, offset=60)
    # §4.4: d = (S - floor(now - slot)) or 1, then + 1 because S > 1.
    elapsed = math.floor(epoch - math.floor(epoch / 60) * 60)
    delay = ((60 - elapsed) or 1) + 1
    assert two.start_after == now + dt.timedelta(seconds=delay)
    assert now < two.start_after <= now + dt.timedelta(seconds=61)
    assert (two.data, two.singleton_key) == ({"n": 2}, "k")
    # Another key debounces on its own.
    assert boss.send_debounced(q, None, seconds=60, key="other") is not None


def test_send_debounced_in_a_free_slot_starts_now(boss: Boss, session: Session, q: str) -> None:
    job = load(session, q, boss.send_debounced(q, None, seconds=300))
    assert job.start_after == db_now(session)
    assert job.singleton_on == _slot(db_epoch(session), 300)


# ------------------------------------------------------------------------------------------ conflicts


def test_a_duplicate_id_returns_none(boss: Boss, session: Session, q: str) -> None:
    job_id = uuid.uuid4()
    assert boss.send(q, {"n": 1}, id=job_id) == job_id
    assert boss.send(q, {"n": 2}, id=str(job_id)) is None
    assert load(session, q, job_id).data == {"n": 1}
    assert_usable(boss, q)
    boss.create_queue("other")
    assert boss.send("other", {"n": 3}, id=job_id) == job_id  # ids are unique per queue only


def test_a_short_queue_refuses_a_second_created_job_per_key(boss: Boss, session: Session) -> None:
    boss.create_queue("short", policy="short")
    a = boss.send("short", None, singleton_key="a")
    assert a is not None
    assert boss.send("short", None, singleton_key="a") is None
    assert_usable(boss, "short")
    assert boss.send("short", None, singleton_key="b") is not None
    # assert_usable sent a key-less job: NULL keys share one "key".
    assert boss.send("short", None) is None
    # Once a is active, a new created job with key a is allowed.
    boss.fetch("short", batch_size=10)
    assert load(session, "short", a).state is JobState.active
    assert boss.send("short", None, singleton_key="a") is not None


def test_a_stately_queue_refuses_a_second_created_job_per_key(boss: Boss, session: Session) -> None:
    boss.create_queue("stately", policy="stately")
    first = boss.send("stately", None, singleton_key="a")
    assert first is not None
    assert boss.send("stately", None, singleton_key="a") is None
    assert_usable(boss, "stately")
    assert first in {job.id for job in boss.fetch("stately", batch_size=10)}
    created_again = boss.send("stately", None, singleton_key="a")
    assert boss.send("stately", None, singleton_key="a") is None
    assert created_again is not None


def test_a_singleton_queue_accepts_any_number_of_queued_jobs(boss: Boss) -> None:
    boss.create_queue("single", policy="singleton")
    ids = [boss.send("single", None, singleton_key="a") for _ in range(3)]
    assert None not in ids
    assert len(set(ids)) == 3


# -------------------------------------------------------------------------------------------- insert


def test_insert_is_one_statement_and_returns_the_inserted_ids(
    boss: Boss, session: Session, q: str, statements: list[str]
) -> None:
    existing = boss.send(q, {"n": 0})
    statements.clear()
    ids = boss.insert(
        [
            {"name": q, "data": {"n": 1}},
            {"name": q, "id": existing, "data": {"n": "conflict"}},
            {"name": q, "data": {"n": 3}, "priority": 5},
        ]
    )
    assert len(statements) == 1
    assert len(ids) == 2
    assert existing not in ids
    assert all(isinstance(job_id, uuid.UUID) for job_id in ids)
    stored = {job.id: job for job in jobs_of(session, q)}
    assert stored[existing].data == {"n": 0}
    assert sorted((stored[job_id].data["n"], stored[job_id].priority) for job_id in ids) == [(1, 0), (3, 5)]


def test_insert_of_nothing_runs_no_statement(boss: Boss, q: str, statements: list[str]) -> None:
    statements.clear()
    assert boss.insert([]) == []
    assert statements == []


def test_insert_honours_pg_boss_insert_fields(boss: Boss, session: Session) -> None:
    boss.create_queue("dlq")
    boss.create_queue("target", retry_limit=4, expire_in_seconds=99, retention_minutes=10)
    keep_until = dt.datetime(2040, 1, 1, tzinfo=UTC)
    wanted = uuid.uuid4()
    ids = boss.insert(
        [
            {
                "name": "target",
                "data": {"x": 1},
                "id": str(wanted),
                "priority": 2,
                "start_after": "2035-06-07T08:09:10Z",
                "singleton_key": "k",
                "singleton_seconds": 600,
                "expire_in_seconds": 30,
                "keep_until": keep_until,
                "retry_limit": 1,
                "retry_delay": 5,
                "retry_backoff": True,
                "dead_letter": "dlq",
            },
            {"name": "target", "start_after": 60},
        ]
    )
    assert len(ids) == 2
    assert wanted in ids  # the ids come in no particular order
    [defaults_id] = [job_id for job_id in ids if job_id != wanted]
    job = load(session, "target", wanted)
    assert (job.data, job.priority, job.singleton_key) == ({"x": 1}, 2, "k")
    assert job.start_after == dt.datetime(2035, 6, 7, 8, 9, 10, tzinfo=UTC)
    assert job.singleton_on == _slot(db_epoch(session), 600)
    assert (job.expire_in, job.keep_until) == (dt.timedelta(seconds=30), keep_until)
    assert (job.retry_limit, job.retry_delay, job.retry_backoff, job.dead_letter) == (1, 5, True, "dlq")

    defaults = load(session, "target", defaults_id)
    assert defaults.start_after == db_now(session) + dt.timedelta(seconds=60)
    assert (defaults.retry_limit, defaults.expire_in) == (4, dt.timedelta(seconds=99))
    assert defaults.keep_until == defaults.start_after + dt.timedelta(minutes=10)
    assert defaults.policy is QueuePolicy.standard


def test_insert_into_a_short_queue_leaves_out_conflicts(boss: Boss, session: Session) -> None:
    boss.create_queue("short", policy="short")
    ids = boss.insert([{"name": "short", "singleton_key": "a", "data": {"n": n}} for n in range(3)])
    assert len(ids) == 1
    assert [job.id for job in jobs_of(session, "short")] == ids


def test_insert_into_an_unknown_queue_inserts_nothing(boss: Boss, session: Session, q: str) -> None:
    with pytest.raises(QueueNotFoundError) as raised:
        boss.insert([{"name": q, "data": {"n": 1}}, {"name": "missing"}, {"name": "gone"}])
    assert type(raised.value) is QueueNotFoundError
    assert raised.value.names == ("gone", "missing")
    assert jobs_of(session, q) == []
    with pytest.raises(DeadLetterQueueNotFoundError) as dead:
        boss.insert([{"name": q}, {"name": q, "dead_letter": "nowhere"}])
    assert dead.value.names == ("nowhere",)
    assert jobs_of(session, q) == []
    assert_usable(boss, q)


def test_send_to_an_unknown_queue_raises_and_writes_nothing(boss: Boss, session: Session, q: str) -> None:
    with pytest.raises(QueueNotFoundError) as raised:
        boss.send("missing", {"n": 1})
    assert raised.value.names == ("missing",)
    with pytest.raises(DeadLetterQueueNotFoundError):
        boss.send(q, None, dead_letter="nowhere")
    assert session.scalar(select(func.count()).select_from(Job)) == 0
    assert_usable(boss, q)
