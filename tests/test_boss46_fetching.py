"""Fetching on schema version 46 (PGBOSS12.md §3.5, §5): order, priority bounds, start_after, blocked jobs,
retry_count, group concurrency with tiers, batch thinning, and each policy's gate."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from boss46_support import (  # noqa: F401  (the module's fixtures)
    fresh_job,
    ids,
    in_state,
    installed_schema_46,
    job_row,
    schema_version_46,
    set_job,
)
from boss_support import assert_usable, db_now, snapshot
from sqlalchemy.orm import Session

from sqla_boss import Boss, JobState
from sqla_boss.errors import InvalidOptionError, QueueNotFoundError
from sqla_boss.v46.models import Job


@pytest.fixture
def q(boss: Boss) -> str:
    boss.create_queue("q")
    return "q"


def _age(session: Session, name: str, minutes: dict[uuid.UUID | None, int]) -> None:
    """Backdate ``created_on`` by the given minutes: jobs sent in one transaction share one ``now()``."""
    now = db_now(session)
    for job_id, ago in minutes.items():
        set_job(session, name, job_id, created_on=now - dt.timedelta(minutes=ago))


def _one(boss: Boss, name: str, **options: Any) -> uuid.UUID | None:
    jobs = boss.fetch(name, **options)
    assert len(jobs) <= 1
    return jobs[0].id if jobs else None


# ----------------------------------------------------------------------------------------------- order


def test_jobs_come_by_priority_then_age(boss: Boss, session: Session, q: str) -> None:
    low = boss.send(q, None, priority=1)
    high = boss.send(q, None, priority=10)
    mid = boss.send(q, None, priority=5)
    negative = boss.send(q, None, priority=-1)
    zero_old, zero_new = boss.send(q), boss.send(q)
    _age(session, q, {zero_old: 10, zero_new: 5, negative: 60})
    assert [_one(boss, q) for _ in range(6)] == [high, mid, low, zero_old, zero_new, negative]
    assert boss.fetch(q) == []


def test_priority_false_is_accepted_and_ignored(boss: Boss, session: Session, q: str) -> None:
    old = boss.send(q, None, priority=0)
    new = boss.send(q, None, priority=9)
    _age(session, q, {old: 10})
    assert _one(boss, q, priority=False) == new  # pg-boss 12.30 and later always order by priority


def test_a_batch_takes_the_best_jobs(boss: Boss, q: str) -> None:
    by_priority = {boss.send(q, None, priority=p): p for p in range(6)}
    batch = boss.fetch(q, batch_size=3)
    assert sorted(by_priority[job.id] for job in batch) == [3, 4, 5]
    assert sorted(by_priority[job.id] for job in boss.fetch(q, batch_size=10)) == [0, 1, 2]


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"min_priority": 5}, [5, 10]),
        ({"max_priority": 5}, [1, 5]),
        ({"min_priority": 5, "max_priority": 5}, [5]),
        ({"min_priority": 11}, []),
        ({"min_priority": -3, "max_priority": 1}, [1]),
    ],
    ids=repr,
)
def test_priority_bounds(boss: Boss, q: str, bounds: dict[str, int], expected: list[int]) -> None:
    by_priority = {boss.send(q, None, priority=p): p for p in (1, 5, 10)}
    assert sorted(by_priority[job.id] for job in boss.fetch(q, batch_size=10, **bounds)) == expected


def test_min_priority_above_max_priority_is_refused(
    boss: Boss, session: Session, installed_schema: str, q: str
) -> None:
    boss.send(q)
    before = snapshot(session, installed_schema)
    with pytest.raises(InvalidOptionError):
        boss.fetch(q, min_priority=5, max_priority=4)
    assert snapshot(session, installed_schema) == before


# --------------------------------------------------------------------------------------- what a fetch does


def test_fetch_activates_and_stamps_the_job(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, {"n": 1}, group={"id": "g", "tier": "t"}, heartbeat_seconds=20)
    [job] = boss.fetch(q, include_metadata=True)
    assert isinstance(job, Job)
    now = db_now(session)
    assert (job.id, job.state, job.retry_count, job.data) == (job_id, JobState.active, 0, {"n": 1})
    assert job_row(session, q, job_id) == fresh_job(
        now,
        data={"n": 1},
        group_id="g",
        group_tier="t",
        heartbeat_seconds=20,
        state=JobState.active,
        started_on=now,
        heartbeat_on=now,
    )


def test_retry_count_rises_at_fetch_once_the_job_has_started(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, None, retry_limit=2)
    counts = []
    for _ in range(3):
        [job] = boss.fetch(q)
        counts.append(job.retry_count)
        assert boss.fail(q, job_id) == 1
    assert counts == [0, 1, 2]
    assert job_row(session, q, job_id)["state"] is JobState.failed
    assert boss.fetch(q) == []


def test_failing_a_job_that_never_started_costs_no_attempt(boss: Boss, session: Session, q: str) -> None:
    job_id = boss.send(q, None, retry_limit=1)
    assert boss.fail(q, job_id) == 1
    row = job_row(session, q, job_id)
    assert (row["state"], row["started_on"], row["retry_count"]) == (JobState.retry, None, 0)
    [job] = boss.fetch(q)
    assert (job.id, job.retry_count) == (job_id, 0)


def test_start_after_is_inclusive_and_deferred_jobs_wait(boss: Boss, session: Session, q: str) -> None:
    deferred = boss.send(q, None, start_after=60, priority=9)
    due_now = boss.send(q, None, start_after=0)
    assert job_row(session, q, due_now)["start_after"] == db_now(session)
    assert ids(boss.fetch(q, batch_size=10)) == {due_now}
    assert ids(boss.fetch(q, batch_size=10, ignore_start_after=True)) == {deferred}


def test_blocked_jobs_are_never_fetched(boss: Boss, session: Session, q: str) -> None:
    blocked = boss.send(q, None, priority=9)
    set_job(session, q, blocked, blocked=True)
    free = boss.send(q)
    assert ids(boss.fetch(q, batch_size=10, ignore_start_after=True)) == {free}
    assert boss.fetch(q, batch_size=10, ignore_start_after=True) == []


def test_fetch_from_a_missing_queue_raises_and_an_empty_one_gives_nothing(
    boss: Boss, session: Session, installed_schema: str, q: str
) -> None:
    assert boss.fetch(q) == []
    before = snapshot(session, installed_schema)
    with pytest.raises(QueueNotFoundError) as raised:
        boss.fetch("nope")
    assert raised.value.names == ("nope",)
    assert snapshot(session, installed_schema) == before
    assert_usable(boss, q)


# -------------------------------------------------------------------------------------- group concurrency


def test_group_concurrency_limits_the_active_jobs_of_each_group(boss: Boss, session: Session, q: str) -> None:
    gold = [boss.send(q, {"g": n}, group={"id": "G", "tier": "gold"}) for n in range(3)]
    other = boss.send(q, None, group={"id": "H"})
    free = boss.send(q)
    first = boss.fetch(q, batch_size=10, group_concurrency=1)
    assert len(first) == 3
    assert ids(first) - set(gold) == {other, free}
    assert boss.fetch(q, batch_size=10, group_concurrency=1) == []  # G has its one active job
    tiers = {"default": 1, "tiers": {"gold": 3}}
    assert ids(boss.fetch(q, batch_size=10, group_concurrency=tiers)) == set(gold) - ids(first)
    assert boss.fetch(q, batch_size=10, group_concurrency=tiers) == []


def test_a_batch_is_thinned_to_each_groups_limit(boss: Boss, session: Session, q: str) -> None:
    grouped = {boss.send(q, None, group={"id": "G"}) for _ in range(5)}
    in_state(boss, q, JobState.active, group={"id": "G"})
    batch = boss.fetch(q, batch_size=10, group_concurrency=3)
    assert len(batch) == 2
    assert ids(batch) <= grouped
    assert boss.fetch(q, batch_size=10, group_concurrency=3) == []
    assert len(boss.fetch(q, batch_size=10)) == 3  # without the option nothing holds them back


def test_a_tier_without_a_limit_of_its_own_takes_the_default(boss: Boss, q: str) -> None:
    for _ in range(3):
        boss.send(q, None, group={"id": "G", "tier": "silver"})
    assert len(boss.fetch(q, batch_size=10, group_concurrency={"default": 2, "tiers": {"gold": 5}})) == 2


@pytest.mark.parametrize(
    "limit",
    [0, -1, 1.5, "2", {"tiers": {"gold": 1}}, {"default": 1, "tiers": {"gold": 0}}, {"default": 1, "max": 2}],
    ids=repr,
)
def test_bad_group_concurrency_is_refused(boss: Boss, q: str, limit: Any) -> None:
    with pytest.raises(InvalidOptionError):
        boss.fetch(q, group_concurrency=limit)


# -------------------------------------------------------------------------------------- policies at fetch


@pytest.mark.parametrize("policy", ["singleton", "stately"])
def test_singleton_and_stately_skip_busy_keys_and_take_one_job_per_key(
    boss: Boss, session: Session, policy: str
) -> None:
    boss.create_queue("p", policy=policy)
    active = in_state(boss, "p", JobState.active, singleton_key="a")
    waiting = boss.send("p", None, singleton_key="a", priority=10)
    other = boss.send("p", None, singleton_key="b")
    # Key-less jobs share the key '': two on a singleton queue, one on a stately one (one created job per key).
    no_key = {boss.send("p", None, priority=n) for n in ((1, 2) if policy == "singleton" else (1,))}
    batch = boss.fetch("p", batch_size=10)
    assert other in ids(batch)
    assert waiting not in ids(batch)  # no head-of-line blocking: a busy key is passed over
    assert len(batch) == 2
    assert len(ids(batch) & no_key) == 1
    assert boss.fetch("p", batch_size=10) == []
    assert boss.complete("p", active) == 1
    assert ids(boss.fetch("p", batch_size=10)) == {waiting}


def test_a_standard_queue_fetches_many_jobs_of_one_key(boss: Boss, q: str) -> None:
    same = {boss.send(q, None, singleton_key="a") for _ in range(3)}
    assert ids(boss.fetch(q, batch_size=10)) == same


@pytest.fixture
def fifo(boss: Boss) -> str:
    boss.create_queue("fifo", policy="key_strict_fifo")
    return "fifo"


def test_key_strict_fifo_hands_out_each_keys_oldest_job_alone(boss: Boss, session: Session, fifo: str) -> None:
    first = boss.send(fifo, {"k1": 1}, singleton_key="k1")
    second = boss.send(fifo, {"k1": 2}, singleton_key="k1", priority=10)  # priority does not jump the key's queue
    other = boss.send(fifo, {"k2": 1}, singleton_key="k2")
    _age(session, fifo, {first: 10, second: 5, other: 1})
    assert ids(boss.fetch(fifo, batch_size=10)) == {first, other}
    assert boss.fetch(fifo, batch_size=10) == []  # k1 and k2 are busy
    assert boss.complete(fifo, first) == 1
    assert ids(boss.fetch(fifo, batch_size=10)) == {second}


def test_key_strict_fifo_orders_keys_by_priority(boss: Boss, session: Session, fifo: str) -> None:
    low = boss.send(fifo, None, singleton_key="k1", priority=1)
    high = boss.send(fifo, None, singleton_key="k2", priority=5)
    _age(session, fifo, {low: 10})
    assert _one(boss, fifo) == high
    assert _one(boss, fifo) == low


def test_key_strict_fifo_a_retry_job_heads_its_key(boss: Boss, session: Session, fifo: str) -> None:
    retried = boss.send(fifo, {"n": "retried"}, singleton_key="k", retry_limit=1)
    assert _one(boss, fifo) == retried
    older = boss.send(fifo, {"n": "older"}, singleton_key="k")
    _age(session, fifo, {older: 60, retried: 30})
    assert boss.fail(fifo, retried) == 1
    assert job_row(session, fifo, retried)["state"] is JobState.retry
    assert _one(boss, fifo) == retried  # state DESC before created_on
    assert _one(boss, fifo) is None


def test_key_strict_fifo_a_deferred_retry_job_holds_its_key(boss: Boss, session: Session, fifo: str) -> None:
    retried = boss.send(fifo, None, singleton_key="k", retry_limit=1, retry_delay=60)
    assert _one(boss, fifo) == retried
    boss.send(fifo, None, singleton_key="k")
    assert boss.fail(fifo, retried) == 1
    assert boss.fetch(fifo, batch_size=10) == []
    assert _one(boss, fifo, ignore_start_after=True) == retried


@pytest.mark.parametrize("release", ["retry", "delete_job"])
def test_key_strict_fifo_a_failed_job_blocks_its_key_until_retried_or_deleted(
    boss: Boss, session: Session, fifo: str, release: str
) -> None:
    failed = in_state(boss, fifo, JobState.failed, singleton_key="k")
    behind = boss.send(fifo, None, singleton_key="k")
    free = boss.send(fifo, None, singleton_key="other")
    assert ids(boss.fetch(fifo, batch_size=10)) == {free}
    assert boss.fetch(fifo, batch_size=10) == []
    assert getattr(boss, release)(fifo, failed) == 1
    expected = failed if release == "retry" else behind
    assert ids(boss.fetch(fifo, batch_size=10)) == {expected}


def test_key_strict_fifo_heads_are_among_unblocked_jobs(boss: Boss, session: Session, fifo: str) -> None:
    head = boss.send(fifo, None, singleton_key="k")
    behind = boss.send(fifo, None, singleton_key="k")
    _age(session, fifo, {head: 10})
    set_job(session, fifo, head, blocked=True)
    # The blocked job is no head (heads are among unblocked jobs), so the next one of the key is.
    assert ids(boss.fetch(fifo, batch_size=10)) == {behind}


def test_a_queue_made_again_with_another_policy_is_fetched_by_its_new_rules(boss: Boss, session: Session) -> None:
    """The plain fetch of standard queues checks the queue's policy itself: a queue fetched as standard, then
    deleted and made again as key_strict_fifo, still hands out each key's oldest job, not the likeliest."""
    boss.create_queue("again")
    assert boss.fetch("again") == []  # fetched once as a standard queue
    boss.delete_queue("again")
    boss.create_queue("again", policy="key_strict_fifo")
    oldest = boss.send("again", {"n": 1}, singleton_key="k")
    newer = boss.send("again", {"n": 2}, singleton_key="k", priority=10)
    _age(session, "again", {oldest: 2, newer: 1})
    assert _one(boss, "again") == oldest
    assert boss.fetch("again") == []
