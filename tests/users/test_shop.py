"""The shop's tests, as its developers would write them with sqla_boss's testing kit: every test runs in a
transaction that is rolled back afterwards, so nothing here commits and nothing needs cleaning up."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from unittest.mock import ANY

import pytest
import shop
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sqla_boss import Archive, Boss, Job, JobState, QueuePolicy
from sqla_boss.errors import InvalidOptionError, QueueNotFoundError
from sqla_boss.testing import (
    ArchiveFactory,
    JobFactory,
    QueueFactory,
    assert_not_sent,
    assert_sent,
    drain,
    run_jobs,
    sent_jobs,
)


@pytest.fixture(autouse=True)
def installed(boss_session: Session) -> None:
    shop.install(boss_session)  # rolled back with the rest of the test


@pytest.fixture
def mailer(monkeypatch: pytest.MonkeyPatch) -> shop.Mailer:
    fresh = shop.Mailer()
    monkeypatch.setattr(shop, "mailer", fresh)
    return fresh


def confirmation(order: shop.Order) -> dict[str, Any]:
    return {"order_id": order.id, "to": order.email, "template": "confirmation"}


# ---------------------------------------------------------------------------------------- what was sent


def test_placing_an_order_sends_its_confirmation(boss_session: Session) -> None:
    order = shop.place_order(boss_session, "ada", "ada@example.com", 4200)

    (job,) = assert_sent(
        boss_session, "emails", confirmation(order), state="created", singleton_key=f"order-{order.id}"
    )
    assert job.retry_limit == 2  # the queue's setting
    assert sent_jobs(boss_session, "emails") == [job]


def test_mock_any_matches_inside_the_data(boss_session: Session) -> None:
    shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    shop.place_order(boss_session, "bob", "bob@example.com", 990)

    assert_sent(boss_session, "emails", {"order_id": ANY, "to": "bob@example.com", "template": ANY}, count=1)
    assert_sent(boss_session, "emails", {"order_id": ANY, "to": ANY, "template": "confirmation"}, count=2)
    assert_sent(boss_session, "emails", count=2, priority=0, state=JobState.created)


def test_an_invalid_order_sends_nothing(boss_session: Session) -> None:
    with pytest.raises(shop.InvalidOrder):
        shop.place_order(boss_session, "ada", "ada@example.com", 0)

    assert_not_sent(boss_session, "emails")


def test_a_rolled_back_order_takes_its_job_with_it(boss_session: Session) -> None:
    kept = shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    savepoint = boss_session.begin_nested()
    dropped = shop.place_order(boss_session, "bob", "bob@example.com", 990)
    savepoint.rollback()

    assert_sent(boss_session, "emails", confirmation(kept), count=1)
    assert_not_sent(boss_session, "emails", {"order_id": dropped.id, "to": ANY, "template": ANY})


def test_code_that_commits_the_test_session_commits_only_a_savepoint(boss_session: Session) -> None:
    order = shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    boss_session.commit()  # the application's own commit: the fixture's transaction still rolls back at the end

    assert_sent(boss_session, "emails", confirmation(order))


def test_the_boss_fixture_works_in_the_same_transaction(boss: Boss, boss_session: Session) -> None:
    boss.send("shipments", {"order_id": 7}, priority=5)

    assert_sent(boss_session, "shipments", {"order_id": 7}, priority=5)
    assert boss.schema == shop.JOBS_SCHEMA


# -------------------------------------------------------------------------------------- failure messages


def test_a_failed_assert_sent_lists_what_was_sent(boss_session: Session) -> None:
    shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    shop.place_order(boss_session, "bob", "bob@example.com", 990)
    ada, bob = sent_jobs(boss_session, "emails")  # in the order they were sent

    with pytest.raises(AssertionError) as raised:
        assert_sent(boss_session, "emails", {"order_id": -1}, state="created")

    assert str(raised.value).splitlines() == [
        "expected a job in queue 'emails' with data={'order_id': -1}, state='created'; none matches.",
        "2 job(s) were sent to 'emails':",
        f"  - {ada.id} state=created, data={ada.data!r}",
        f"  - {bob.id} state=created, data={bob.data!r}",
    ]


def test_a_failed_assert_sent_on_an_empty_queue_names_the_queues_that_have_jobs(boss_session: Session) -> None:
    shop.place_order(boss_session, "ada", "ada@example.com", 4200)

    with pytest.raises(
        AssertionError, match=r"but no job was sent to 'shipments' at all\.\nQueues that hold jobs: 'emails' \(1\)"
    ):
        assert_sent(boss_session, "shipments")
    with pytest.raises(AssertionError, match=r"There is no queue 'emials' in schema 'shop_jobs'"):
        assert_sent(boss_session, "emials")


def test_a_count_mismatch_marks_the_matching_jobs(boss_session: Session) -> None:
    shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    shop.place_order(boss_session, "bob", "bob@example.com", 990)
    ada, bob = sent_jobs(boss_session, "emails")

    with pytest.raises(AssertionError) as raised:
        assert_sent(boss_session, "emails", {"order_id": ANY, "to": "ada@example.com", "template": ANY}, count=2)

    lines = str(raised.value).splitlines()
    assert lines[0].startswith("expected exactly 2 job(s) in queue 'emails' with data={'order_id': <ANY>")
    assert lines[0].endswith("; 1 match.")
    assert lines[1:] == [
        "2 job(s) were sent to 'emails' (* marks the matching ones):",
        f"  * {ada.id} state=created, data={ada.data!r}",
        f"  - {bob.id} state=created, data={bob.data!r}",
    ]


def test_a_failed_assert_not_sent_lists_the_matching_jobs(boss_session: Session) -> None:
    shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    (job,) = sent_jobs(boss_session, "emails")

    with pytest.raises(AssertionError) as raised:
        assert_not_sent(boss_session, "emails", priority=0)

    assert str(raised.value).splitlines() == [
        "expected no job in queue 'emails' with priority=0; 1 match:",
        f"  - {job.id} state=created, data={job.data!r}, priority=0",
    ]


def test_a_long_listing_is_cut(boss: Boss, boss_session: Session) -> None:
    boss.insert([{"name": "shipments", "data": {"order_id": n}} for n in range(25)])

    with pytest.raises(AssertionError, match=r"25 job\(s\) were sent[\s\S]*\.\.\. and 5 more$"):
        assert_sent(boss_session, "shipments", {"order_id": 99})


def test_filters_are_job_columns(boss_session: Session) -> None:
    with pytest.raises(InvalidOptionError, match=r"no Job column named 'stat'"):
        assert_sent(boss_session, "emails", stat="created")
    with pytest.raises(InvalidOptionError, match=r"the queue is the second argument"):
        sent_jobs(boss_session, "emails", name="emails")


# ------------------------------------------------------------------------------------------- factories


def test_factories_build_rows_in_the_test_session(boss_session: Session) -> None:
    queue = QueueFactory(name="reports", policy=QueuePolicy.singleton, retry_limit=4)
    failed = JobFactory(name="reports", state=JobState.failed, data={"report": "monthly"})
    anywhere = JobFactory()  # in a queue of its own

    assert (queue.policy, queue.retry_limit, queue.partition_name is not None) == (QueuePolicy.singleton, 4, True)
    assert failed.policy == QueuePolicy.singleton  # copied from the queue, as send does
    assert assert_sent(boss_session, "reports", {"report": "monthly"}, state="failed") == [failed]
    assert sent_jobs(boss_session, anywhere.name) == [anywhere]


def test_job_factory_wants_an_existing_queue(boss_session: Session) -> None:
    with pytest.raises(QueueNotFoundError, match="nowhere"):
        JobFactory(name="nowhere")


def test_archive_factory(boss: Boss) -> None:
    archived = ArchiveFactory(name="emails", data={"order_id": 1})

    found = boss.get_job_by_id("emails", archived.id, include_archive=True)
    assert isinstance(found, Archive)
    assert found.data == {"order_id": 1}


# ---------------------------------------------------------------------------------------- running jobs


def test_run_jobs_delivers_and_completes(boss_session: Session, mailer: shop.Mailer) -> None:
    ada = shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    bob = shop.place_order(boss_session, "bob", "bob@example.com", 990)

    result = run_jobs(boss_session, "emails", shop.send_confirmation)

    assert result.counts == {"completed": 2, "failed": 0, "retried": 0}
    assert sorted(mailer.outbox) == [("ada@example.com", "confirmation"), ("bob@example.com", "confirmation")]
    done = assert_sent(boss_session, "emails", state="completed", count=2)
    assert {job.id for job in done} == set(result.completed)
    assert [job.output for job in done] == [{"delivered": 1}] * 2  # one job per batch: its result is the output
    assert {job.data["order_id"] for job in done} == {ada.id, bob.id}


def test_a_batch_stores_no_output(boss_session: Session, mailer: shop.Mailer) -> None:
    for n in range(3):
        shop.place_order(boss_session, f"c{n}", f"c{n}@example.com", 100)

    result = run_jobs(boss_session, "emails", shop.send_confirmation, batch_size=3)

    assert result.counts["completed"] == 3
    assert [job.output for job in sent_jobs(boss_session, "emails")] == [None] * 3  # as pg-boss: batches store none


def test_a_failing_handler_is_retried_then_dead_lettered(boss_session: Session, mailer: shop.Mailer) -> None:
    order = shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    mailer.down = True

    result = run_jobs(boss_session, "emails", shop.send_confirmation)

    (job,) = assert_sent(boss_session, "emails", state="failed", retry_count=2)
    assert result.counts == {"completed": 0, "failed": 1, "retried": 2}  # retry_limit 2, retry_delay 0
    assert result.retried == [job.id, job.id]
    assert result.failed == [job.id]
    assert isinstance(result.errors[job.id], shop.MailerDown)
    assert job.output["name"] == "MailerDown"
    assert_sent(boss_session, "emails_dead", confirmation(order), state="created")


def test_a_retry_delay_leaves_the_retry_for_later(boss: Boss, boss_session: Session, mailer: shop.Mailer) -> None:
    boss.send("emails", {"to": "ada@example.com", "template": "late"}, retry_delay=3600)
    mailer.down = True

    first = run_jobs(boss_session, "emails", shop.send_confirmation)
    mailer.down = False
    later = run_jobs(boss_session, "emails", shop.send_confirmation)
    now = run_jobs(boss_session, "emails", shop.send_confirmation, ignore_start_after=True)

    assert (first.counts, later.counts) == (
        {"completed": 0, "failed": 0, "retried": 1},
        {"completed": 0, "failed": 0, "retried": 0},
    )
    assert now.counts == {"completed": 1, "failed": 0, "retried": 0}
    assert mailer.outbox == [("ada@example.com", "late")]


def test_scheduled_jobs_run_only_when_asked(boss: Boss, boss_session: Session, mailer: shop.Mailer) -> None:
    boss.send_after("emails", {"to": "ada@example.com", "template": "reminder"}, after=dt.timedelta(days=1))

    assert run_jobs(boss_session, "emails", shop.send_confirmation).counts["completed"] == 0
    assert run_jobs(boss_session, "emails", shop.send_confirmation, ignore_start_after=True).counts["completed"] == 1


def test_a_transactional_handler_writes_in_the_test_session(boss_session: Session, mailer: shop.Mailer) -> None:
    order = shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    shop.ship_order(boss_session, order)

    result = run_jobs(boss_session, "shipments", shop.mark_shipped, transactional=True)

    assert result.counts == {"completed": 1, "failed": 0, "retried": 0}
    boss_session.refresh(order)
    assert order.shipped is True
    assert_sent(boss_session, "emails", {"order_id": order.id, "to": order.email, "template": "shipped"})


def test_a_transactional_handler_that_raises_is_rolled_back(boss_session: Session) -> None:
    order = shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    shop.ship_order(boss_session, order)

    def ship_then_fail(jobs: list[Job], session: Session) -> None:
        shop.mark_shipped(jobs, session)
        raise RuntimeError("the warehouse is closed")

    result = run_jobs(boss_session, "shipments", ship_then_fail, transactional=True)

    assert result.counts == {"completed": 0, "failed": 1, "retried": 1}  # the queue's retry_limit is 1
    boss_session.refresh(order)
    assert order.shipped is False
    assert_not_sent(boss_session, "emails", {"order_id": order.id, "to": order.email, "template": "shipped"})


def test_an_output_that_is_no_json_fails_the_job(boss_session: Session) -> None:
    shop.place_order(boss_session, "ada", "ada@example.com", 4200)

    result = run_jobs(boss_session, "emails", lambda jobs: {1: "not a JSON key"}, limit=1)

    assert result.counts == {"completed": 0, "failed": 0, "retried": 1}
    assert type(next(iter(result.errors.values()))).__name__ == "PayloadError"


def test_run_jobs_wants_an_existing_queue(boss_session: Session) -> None:
    with pytest.raises(QueueNotFoundError, match="no queue 'emials'"):
        run_jobs(boss_session, "emials", shop.send_confirmation)


def test_limit_stops_after_that_many_runs(boss: Boss, boss_session: Session) -> None:
    boss.insert([{"name": "shipments", "data": {"order_id": n}} for n in range(5)])
    seen: list[uuid.UUID] = []

    result = run_jobs(
        boss_session, "shipments", lambda jobs: seen.extend(job.id for job in jobs), batch_size=2, limit=3
    )

    assert len(seen) == 3
    assert result.completed == seen
    assert_sent(boss_session, "shipments", state="created", count=2)


def test_drain_runs_the_workers_handlers_until_nothing_is_left(
    boss_session: Session, sqla_boss_engine: Engine, mailer: shop.Mailer
) -> None:
    worker = shop.build_worker(sqla_boss_engine)  # never started: drain only uses its registrations
    order = shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    shop.ship_order(boss_session, order)

    result = drain(boss_session, worker)

    # The shipment's handler sent a second e-mail, which the same drain delivered.
    assert result.counts == {"completed": 3, "failed": 0, "retried": 0}
    assert sorted(mailer.outbox) == [("ada@example.com", "confirmation"), ("ada@example.com", "shipped")]
    assert_sent(boss_session, "emails", state="completed", count=2)
    boss_session.refresh(order)
    assert order.shipped is True


def test_drain_takes_a_mapping_and_a_choice_of_queues(boss_session: Session, mailer: shop.Mailer) -> None:
    order = shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    shop.ship_order(boss_session, order)

    result = drain(boss_session, {"emails": shop.send_confirmation, "shipments": lambda jobs: None}, queues=["emails"])

    assert result.counts["completed"] == 1
    assert_sent(boss_session, "shipments", state="created")
    with pytest.raises(InvalidOptionError, match="no handler is registered for queue"):
        drain(boss_session, {"emails": shop.send_confirmation}, queues=["shipments"])
    with pytest.raises(InvalidOptionError, match=r"takes a Worker \(async_drain takes an AsyncWorker\) or a mapping"):
        drain(boss_session, [shop.send_confirmation])  # type: ignore[arg-type]


def test_drain_with_a_failing_mailer_dead_letters(
    boss_session: Session, sqla_boss_engine: Engine, mailer: shop.Mailer
) -> None:
    order = shop.place_order(boss_session, "ada", "ada@example.com", 4200)
    mailer.down = True

    result = drain(boss_session, shop.build_worker(sqla_boss_engine))

    assert result.counts == {"completed": 0, "failed": 1, "retried": 2}
    assert_sent(boss_session, "emails_dead", confirmation(order))
