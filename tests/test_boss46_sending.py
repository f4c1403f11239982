"""Sending on schema version 46 (PGBOSS12.md §3.5, §4): the exact rows of ``send``, ``send_after``,
``send_throttled``, ``send_debounced`` and ``insert``, option precedence (job, then queue, then pg-boss's
defaults), ``start_after``'s forms, throttling and debouncing slots, and each policy at send."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any

import pytest
from boss46_support import (  # noqa: F401  (the module's fixtures)
    DAY,
    JOB,
    fresh_job,
    in_state,
    installed_schema_46,
    job_row,
    job_rows,
    schema_version_46,
)
from boss_support import EPOCH, assert_usable, db_epoch, db_now, snapshot
from sqlalchemy import select
from sqlalchemy.orm import Session

from sqla_boss import Boss, JobState
from sqla_boss.errors import (
    DeadLetterQueueNotFoundError,
    InvalidOptionError,
    InvalidQueueNameError,
    QueueNotFoundError,
    SqlaBossError,
)
from sqla_boss.v46.models import QueuePolicy

UTC = dt.timezone.utc
PLUS_TWO = dt.timezone(dt.timedelta(hours=2))
TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


@pytest.fixture
def q(boss: Boss) -> str:
    """A queue with pg-boss 12's default settings."""
    boss.create_queue("q")
    return "q"


@pytest.fixture
def configured(boss: Boss) -> str:
    """Queue ``configured`` with every job setting, dead letter ``dlq``; ``dlq2`` exists too."""
    boss.create_queue("dlq")
    boss.create_queue("dlq2")
    boss.create_queue(
        "configured",
        policy="stately",
        retry_limit=3,
        retry_delay=4,
        retry_backoff=True,
        retry_delay_max=50,
        expire_in_seconds=60,
        retention_seconds=100,
        delete_after_seconds=10,
        dead_letter="dlq",
        heartbeat_seconds=30,
    )
    return "configured"


def _refused(boss: Boss, session: Session, schema: str, call: Any, error: type[SqlaBossError]) -> SqlaBossError:
    before = snapshot(session, schema)
    with pytest.raises(SqlaBossError) as raised:
        call()
    assert type(raised.value) is error, f"{type(raised.value).__name__}: {raised.value}"
    assert snapshot(session, schema) == before
    return raised.value


# ---------------------------------------------------------------------------------- rows and precedence


def test_a_plain_send_writes_pg_boss_12s_row(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, {"a": 1})
    assert isinstance(job_id, uuid.UUID)
    assert job_row(session, q, job_id) == fresh_job(db_now(session), data={"a": 1})


def test_a_job_takes_the_settings_of_its_queue(boss: Boss, session: Session, configured: str) -> None:
    job_id = boss.send(configured, {"n": 1})
    now = db_now(session)
    assert job_row(session, configured, job_id) == fresh_job(
        now,
        data={"n": 1},
        retry_limit=3,
        retry_delay=4,
        retry_backoff=True,
        retry_delay_max=50,
        expire_seconds=60,
        deletion_seconds=10,
        keep_until=now + dt.timedelta(seconds=100),
        dead_letter="dlq",
        heartbeat_seconds=30,
        policy=QueuePolicy.stately,
    )


def test_each_job_option_wins_over_its_queue(boss: Boss, session: Session, configured: str) -> None:
    wanted = uuid.uuid4()
    job_id = boss.send(
        configured,
        [1, 2],
        id=wanted,
        priority=9,
        start_after=60,
        singleton_key="k",
        group={"id": "g", "tier": "gold"},
        retry_limit=1,
        retry_delay=2,
        retry_backoff=True,
        retry_delay_max=7,
        expire_in_seconds=5,
        retention_seconds=6,
        delete_after_seconds=0,
        dead_letter="dlq2",
        heartbeat_seconds=11,
        trace_context=TRACE,
    )
    assert job_id == wanted
    now = db_now(session)
    start = now + dt.timedelta(seconds=60)
    assert job_row(session, configured, job_id) == fresh_job(
        now,
        data=[1, 2],
        priority=9,
        start_after=start,
        singleton_key="k",
        group_id="g",
        group_tier="gold",
        retry_limit=1,
        retry_delay=2,
        retry_backoff=True,
        retry_delay_max=7,
        expire_seconds=5,
        deletion_seconds=0,
        keep_until=start + dt.timedelta(seconds=6),  # retention counts from start_after
        dead_letter="dlq2",
        heartbeat_seconds=11,
        policy=QueuePolicy.stately,
        trace_context=TRACE,
    )


def test_retry_backoff_false_on_the_job_keeps_the_queues_retry_delay_max(
    boss: Boss, session: Session, configured: str
) -> None:
    row = job_row(session, configured, boss.send(configured, None, retry_backoff=False, retry_delay=0))
    assert (row["retry_backoff"], row["retry_delay"], row["retry_delay_max"]) == (False, 0, 50)


@pytest.mark.parametrize(
    "data",
    [{"nested": {"list": [1, 2.5, None, True]}}, [1, "two"], "text", 42, 0, False, True, "é ☃"],
    ids=repr,
)
def test_data_may_be_any_json_value(boss: Boss, session: Session, q: str, data: Any) -> None:
    assert job_row(session, q, boss.send(q, data))["data"] == data


def test_no_data_is_sql_null(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q)
    assert session.scalar(select(JOB.c.data.is_(None)).where(JOB.c.id == job_id)) is True


def test_a_taken_id_sends_nothing_in_that_queue_only(boss: Boss, session: Session, q: str) -> None:
    boss.create_queue("other")
    wanted = uuid.uuid4()
    assert boss.send(q, {"first": True}, id=wanted) == wanted
    assert boss.send(q, {"second": True}, id=str(wanted)) is None
    assert boss.send("other", None, id=wanted) == wanted  # the key is (name, id)
    assert job_row(session, q, wanted)["data"] == {"first": True}


def test_a_key_without_a_slot_does_nothing_on_a_standard_queue(boss: Boss, session: Session, q: str) -> None:
    assert None not in (boss.send(q, None, singleton_key="k"), boss.send(q, None, singleton_key="k"))


def test_a_missing_queue_or_dead_letter_queue_raises_before_writing(
    boss: Boss, session: Session, installed_schema: str, q: str
) -> None:
    raised = _refused(boss, session, installed_schema, lambda: boss.send("nope", {"n": 1}), QueueNotFoundError)
    assert raised.names == ("nope",)  # type: ignore[attr-defined]
    missing = DeadLetterQueueNotFoundError
    raised = _refused(boss, session, installed_schema, lambda: boss.send(q, None, dead_letter="gone"), missing)
    assert raised.names == ("gone",)  # type: ignore[attr-defined]
    _refused(boss, session, installed_schema, lambda: boss.send(q, None, dead_letter="no way"), InvalidQueueNameError)
    assert_usable(boss, q)


@pytest.mark.parametrize(
    "group",
    [{"id": ""}, {"tier": "gold"}, {"id": "g", "tier": ""}, {"id": "g", "level": 1}, "g", {"id": 5}],
    ids=repr,
)
def test_a_bad_group_is_refused(boss: Boss, session: Session, installed_schema: str, q: str, group: Any) -> None:
    _refused(boss, session, installed_schema, lambda: boss.send(q, None, group=group), InvalidOptionError)


@pytest.mark.parametrize("trace", [["traceparent"], {1: "x"}, "00-abc"], ids=repr)
def test_a_bad_trace_context_is_refused(
    boss: Boss, session: Session, installed_schema: str, q: str, trace: Any
) -> None:
    _refused(boss, session, installed_schema, lambda: boss.send(q, None, trace_context=trace), InvalidOptionError)


def test_a_group_without_a_tier(boss: Boss, session: Session, q: str) -> None:
    row = job_row(session, q, boss.send(q, None, group={"id": "g"}))
    assert (row["group_id"], row["group_tier"]) == ("g", None)


# ------------------------------------------------------------------------------------------- start_after


@pytest.mark.parametrize(
    ("start_after", "offset"),
    [
        (5, 5),
        (1.5, 1.5),
        ("90 minutes", 5400),
        ("5", 5),
        ("01:30:00", 5400),
        (dt.timedelta(minutes=2), 120),
        (0, 0),
        (-5, 0),  # send: not in the past, as in pg-boss (a non-positive number is no start_after)
    ],
    ids=repr,
)
def test_start_after_from_now(boss: Boss, session: Session, q: str, start_after: Any, offset: float) -> None:
    now = db_now(session)
    for job_id in (boss.send(q, None, start_after=start_after), boss.send_after(q, None, after=start_after)):
        row = job_row(session, q, job_id)
        assert row["start_after"] == now + dt.timedelta(seconds=offset)
        assert row["keep_until"] == row["start_after"] + dt.timedelta(days=14)


@pytest.mark.parametrize(
    ("start_after", "instant"),
    [
        ("2030-01-01T00:00:00Z", dt.datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T00:00:00z", dt.datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T00:00:00+01:00", dt.datetime(2029, 12, 31, 23, tzinfo=UTC)),
        ("2030-01-01 10:00:00.250-02:30", dt.datetime(2030, 1, 1, 12, 30, 0, 250000, tzinfo=UTC)),
        (
            dt.datetime(2030, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2030, 6, 1, 10, tzinfo=UTC),
        ),
        ("2000-01-01T00:00:00Z", dt.datetime(2000, 1, 1, tzinfo=UTC)),  # in the past: due at once
    ],
    ids=repr,
)
def test_start_after_at_an_instant(
    boss: Boss, session: Session, q: str, start_after: Any, instant: dt.datetime
) -> None:
    row = job_row(session, q, boss.send(q, None, start_after=start_after))
    assert row["start_after"] == instant
    assert row["keep_until"] == instant + dt.timedelta(days=14)


def test_insert_does_not_clamp_a_negative_start_after(boss: Boss, session: Session, q: str) -> None:
    """pg-boss 12's insert passes a negative number through (§4.6): the job starts that long ago."""
    now = db_now(session)
    ago, text_ago, zero = boss.insert(
        [
            {"name": q, "data": 1, "start_after": -30},
            {"name": q, "data": 2, "start_after": "-30"},
            {"name": q, "data": 3, "start_after": 0},
        ]
    )
    by_data = {row["data"]: row for row in job_rows(session, q)}
    assert by_data[1]["start_after"] == by_data[2]["start_after"] == now - dt.timedelta(seconds=30)
    assert by_data[1]["keep_until"] == now - dt.timedelta(seconds=30) + dt.timedelta(days=14)
    assert by_data[3]["start_after"] == now
    assert {ago, text_ago, zero} == {row["id"] for row in by_data.values()}


# ------------------------------------------------------------------------------- throttling, debouncing


def _slot(session: Session, seconds: int, offset: int = 0) -> dt.datetime:
    """The naive UTC start of the ``seconds``-long slot now is in (§4.4), plus ``offset`` seconds."""
    start = seconds * math.floor(db_epoch(session) / seconds) + offset
    return EPOCH + dt.timedelta(seconds=start)


@pytest.mark.parametrize("seconds", [7, 60, 300, 86400])
def test_send_throttled_files_the_job_in_an_epoch_aligned_slot(
    boss: Boss, session: Session, q: str, seconds: int
) -> None:
    job_id = boss.send_throttled(q, {"n": 1}, seconds=seconds, key="k")
    assert job_row(session, q, job_id) == fresh_job(
        db_now(session), data={"n": 1}, singleton_key="k", singleton_on=_slot(session, seconds)
    )
    assert boss.send_throttled(q, {"n": 2}, seconds=seconds, key="k") is None
    assert boss.send(q, {"n": 3}, singleton_seconds=seconds, singleton_key="k") is None
    assert boss.send_throttled(q, {"n": 4}, seconds=seconds, key="other") is not None
    assert boss.send_throttled(q, {"n": 5}, seconds=seconds) is not None  # no key: the key ''
    assert boss.send_throttled(q, {"n": 6}, seconds=seconds) is None
    assert sorted(row["data"]["n"] for row in job_rows(session, q)) == [1, 4, 5]


@pytest.mark.parametrize("finish", [JobState.completed, JobState.failed])
def test_a_finished_job_keeps_its_slot_and_a_cancelled_one_frees_it(
    boss: Boss, session: Session, q: str, finish: JobState
) -> None:
    finished = in_state(boss, q, finish, singleton_seconds=60, singleton_key="k")
    assert boss.send_throttled(q, None, seconds=60, key="k") is None
    cancelled = in_state(boss, q, JobState.cancelled, singleton_seconds=60, singleton_key="c")
    assert boss.send_throttled(q, None, seconds=60, key="c") is not None
    assert job_row(session, q, finished)["singleton_on"] == job_row(session, q, cancelled)["singleton_on"]


@pytest.mark.parametrize("seconds", [1, 60, 3600])
def test_send_debounced_goes_to_the_next_slot_then_gives_up(boss: Boss, session: Session, q: str, seconds: int) -> None:
    now, epoch = db_now(session), db_epoch(session)
    first = boss.send_debounced(q, {"n": 1}, seconds=seconds, key="k")
    second = boss.send_debounced(q, {"n": 2}, seconds=seconds, key="k")
    assert boss.send_debounced(q, {"n": 3}, seconds=seconds, key="k") is None
    assert job_row(session, q, first) == fresh_job(
        now, data={"n": 1}, singleton_key="k", singleton_on=_slot(session, seconds)
    )
    # The next slot, starting when it does: d = (S - whole seconds elapsed in the slot) or 1, plus 1 if S > 1.
    elapsed = math.floor(epoch - math.floor(epoch / seconds) * seconds)
    delay = (seconds - elapsed) or 1
    delay += 1 if seconds > 1 else 0
    assert job_row(session, q, second) == fresh_job(
        now,
        data={"n": 2},
        singleton_key="k",
        singleton_on=_slot(session, seconds, offset=seconds),
        start_after=now + dt.timedelta(seconds=delay),
    )


# -------------------------------------------------------------------------------------- policies at send


def _sends(boss: Boss, name: str, count: int, **options: Any) -> list[uuid.UUID | None]:
    return [boss.send(name, {"n": n}, **options) for n in range(count)]


def test_a_standard_queue_takes_every_job(boss: Boss, session: Session) -> None:
    boss.create_queue("s")
    assert None not in _sends(boss, "s", 3, singleton_key="k")


def test_a_short_queue_holds_one_created_job_per_key(boss: Boss, session: Session) -> None:
    boss.create_queue("short", policy="short")
    first, second = _sends(boss, "short", 2, singleton_key="k")
    assert first is not None
    assert second is None
    assert boss.send("short", None, singleton_key="other") is not None
    no_key = _sends(boss, "short", 2)
    assert no_key[0] is not None
    assert no_key[1] is None
    # A retry job does not count: once the queued one is in retry, a new one is taken.
    [job] = boss.fetch("short", min_priority=0, max_priority=0, batch_size=1)
    assert boss.fail("short", job.id) == 1
    assert job_row(session, "short", job.id)["state"] is JobState.retry
    assert boss.send("short", None, singleton_key=job.singleton_key) is not None


def test_a_singleton_queue_takes_any_number_of_queued_jobs(boss: Boss) -> None:
    boss.create_queue("single", policy="singleton")
    assert None not in _sends(boss, "single", 3, singleton_key="k")


def test_a_stately_queue_holds_one_created_job_per_key(boss: Boss, session: Session) -> None:
    boss.create_queue("stately", policy="stately")
    assert _sends(boss, "stately", 2, singleton_key="k")[1] is None
    active = in_state(boss, "stately", JobState.active, singleton_key="a")
    assert boss.send("stately", None, singleton_key="a") is not None  # an active one does not block
    retry = in_state(boss, "stately", JobState.retry, singleton_key="r")
    assert boss.send("stately", None, singleton_key="r") is not None  # nor does a retry one
    assert (job_row(session, "stately", active)["state"], job_row(session, "stately", retry)["state"]) == (
        JobState.active,
        JobState.retry,
    )


def test_an_exclusive_queue_holds_one_queued_or_active_job_per_key(boss: Boss, session: Session) -> None:
    boss.create_queue("excl", policy="exclusive")
    assert _sends(boss, "excl", 2, singleton_key="k")[1] is None
    active = in_state(boss, "excl", JobState.active, singleton_key="a")
    assert boss.send("excl", None, singleton_key="a") is None
    assert boss.complete("excl", active) == 1
    assert boss.send("excl", None, singleton_key="a") is not None
    in_state(boss, "excl", JobState.retry, singleton_key="r")
    assert boss.send("excl", None, singleton_key="r") is None


def test_a_key_strict_fifo_queue_needs_a_key_on_every_job(boss: Boss, session: Session, installed_schema: str) -> None:
    boss.create_queue("fifo", policy="key_strict_fifo")
    _refused(boss, session, installed_schema, lambda: boss.send("fifo", {"n": 1}), InvalidOptionError)
    insert = lambda: boss.insert([{"name": "fifo", "singleton_key": "k"}, {"name": "fifo"}])  # noqa: E731
    _refused(boss, session, installed_schema, insert, InvalidOptionError)
    assert None not in _sends(boss, "fifo", 3, singleton_key="k")
    failed = in_state(boss, "fifo", JobState.failed, singleton_key="f")
    assert boss.send("fifo", None, singleton_key="f") is not None  # queued behind the failed one
    assert job_row(session, "fifo", failed)["policy"] is QueuePolicy.key_strict_fifo
    assert_usable_fifo(boss)


def assert_usable_fifo(boss: Boss) -> None:
    assert boss.send("fifo", {"usable": True}, singleton_key="u") is not None


# ---------------------------------------------------------------------------------------------- insert


def test_insert_writes_each_row_with_its_own_options(boss: Boss, session: Session, configured: str) -> None:
    wanted = uuid.uuid4()
    ids = boss.insert(
        [
            {"name": configured, "data": {"n": 1}},
            {
                "name": configured,
                "data": {"n": 2},
                "id": wanted,
                "priority": 3,
                "start_after": 60,
                "singleton_key": "k",
                "singleton_seconds": 60,
                "group": {"id": "g", "tier": "t"},
                "retry_limit": 0,
                "retry_delay": 1,
                "retry_backoff": False,
                "expire_in_seconds": 2,
                "retention_seconds": 3,
                "delete_after_seconds": 4,
                "dead_letter": "dlq2",
                "heartbeat_seconds": 12,
                "trace_context": TRACE,
            },
        ]
    )
    assert len(ids) == 2
    assert wanted in ids
    now = db_now(session)
    queue_defaults = {
        "retry_limit": 3,
        "retry_delay": 4,
        "retry_backoff": True,
        "retry_delay_max": 50,
        "expire_seconds": 60,
        "deletion_seconds": 10,
        "dead_letter": "dlq",
        "heartbeat_seconds": 30,
        "policy": QueuePolicy.stately,
    }
    [plain] = [job_id for job_id in ids if job_id != wanted]
    assert job_row(session, configured, plain) == fresh_job(
        now, data={"n": 1}, keep_until=now + dt.timedelta(seconds=100), **queue_defaults
    )
    start = now + dt.timedelta(seconds=60)
    assert job_row(session, configured, wanted) == fresh_job(
        now,
        **{
            **queue_defaults,
            "data": {"n": 2},
            "priority": 3,
            "start_after": start,
            "singleton_key": "k",
            "singleton_on": _slot(session, 60),
            "group_id": "g",
            "group_tier": "t",
            "retry_limit": 0,
            "retry_delay": 1,
            "retry_backoff": False,
            "expire_seconds": 2,
            "keep_until": start + dt.timedelta(seconds=3),
            "deletion_seconds": 4,
            "dead_letter": "dlq2",
            "heartbeat_seconds": 12,
            "trace_context": TRACE,
        },
    )


def test_insert_leaves_out_the_rows_that_conflict(boss: Boss, session: Session) -> None:
    boss.create_queue("short", policy="short")
    taken = uuid.uuid4()
    boss.send("short", None, id=taken, singleton_key="first")
    ids = boss.insert(
        [
            {"name": "short", "singleton_key": "k", "data": 1},
            {"name": "short", "singleton_key": "k", "data": 2},
            {"name": "short", "id": taken, "singleton_key": "x"},
            {"name": "short", "singleton_key": "other", "data": 3},
        ]
    )
    assert len(ids) == 2
    assert sorted(row["data"] for row in job_rows(session, "short") if row["id"] in ids) in ([1, 3], [2, 3])
    assert boss.insert([]) == []


def test_insert_of_a_missing_queue_inserts_nothing(boss: Boss, session: Session, installed_schema: str, q: str) -> None:
    call = lambda: boss.insert([{"name": q}, {"name": "nope"}])  # noqa: E731
    raised = _refused(boss, session, installed_schema, call, QueueNotFoundError)
    assert raised.names == ("nope",)  # type: ignore[attr-defined]
    call = lambda: boss.insert([{"name": q}, {"name": q, "dead_letter": "gone"}])  # noqa: E731
    _refused(boss, session, installed_schema, call, DeadLetterQueueNotFoundError)
    assert_usable(boss, q)


def test_insert_refuses_one_id_twice_in_a_batch(boss: Boss, session: Session, installed_schema: str, q: str) -> None:
    """pg-boss 12 refuses the batch (``duplicate job id in insert batch``) rather than dropping one (§4.6)."""
    twice = uuid.uuid4()
    call = lambda: boss.insert([{"name": q, "id": twice}, {"name": q, "id": str(twice).upper(), "data": 2}])  # noqa: E731
    raised = _refused(boss, session, installed_schema, call, InvalidOptionError)
    assert str(twice) in str(raised)
    assert_usable(boss, q)


def test_one_id_in_two_queues_is_no_duplicate(boss: Boss, session: Session, q: str) -> None:
    boss.create_queue("other")
    shared = uuid.uuid4()
    assert boss.insert([{"name": q, "id": shared}, {"name": "other", "id": shared}]) == [shared, shared]
