"""The README's ORM queries on rows ``Boss`` wrote: by state, by ``data``, joined to the application's
own table, the archive, and another schema through ``schema_translate_map``. On schema versions 24 and 46
(with each version's models), but for the archive, which version 46 does not have."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from boss_support import BOTH_VERSIONS, assert_usable, jobs_of, plain_connection
from sqlalchemy import Engine, ForeignKey, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from support import drop_schema, install_schema, unique_name

from sqla_boss import Archive, Boss, Job, JobState, Queue, schema_translate_map
from sqla_boss.errors import SchemaMismatchError
from sqla_boss.testing import ArchiveFactory, bind_factories


class AppBase(DeclarativeBase):
    """The application's own declarative base, separate from sqla_boss's."""


class Customer(AppBase):
    __tablename__ = "customers"
    __table_args__ = {"prefixes": ["TEMPORARY"]}  # noqa: RUF012 - per connection, gone at rollback

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Order(AppBase):
    __tablename__ = "orders"
    __table_args__ = {"prefixes": ["TEMPORARY"]}  # noqa: RUF012

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    item: Mapped[str]


@pytest.fixture
def shop(session: Session, boss: Boss) -> dict[int, uuid.UUID]:
    """Customers, orders and one ``invoices`` job per paid order; returns the job id by order id."""
    AppBase.metadata.create_all(session.connection())
    session.add_all([Customer(id=1, name="ada"), Customer(id=2, name="bob")])
    session.flush()
    session.add_all(
        [
            Order(id=10, customer_id=1, item="book"),
            Order(id=11, customer_id=1, item="pen"),
            Order(id=12, customer_id=2, item="ink"),
            Order(id=13, customer_id=2, item="unpaid"),
        ]
    )
    session.flush()
    boss.create_queue("invoices")
    boss.create_queue("emails")
    ids = {}
    for order_id, customer_id in ((10, 1), (11, 1), (12, 2)):
        job_id = boss.send("invoices", {"order_id": order_id, "customer_id": customer_id, "kind": "invoice"})
        assert job_id is not None
        ids[order_id] = job_id
    boss.send("emails", {"customer_id": 1, "kind": "welcome"})
    [first] = boss.fetch("invoices", priority=False, batch_size=1)
    boss.complete("invoices", first.id, {"pdf": f"{first.data['order_id']}.pdf"})
    return ids


@BOTH_VERSIONS
def test_jobs_by_state(session: Session, shop: dict[int, uuid.UUID], models: ModuleType) -> None:
    Job = models.Job
    completed = session.scalars(select(Job).where(Job.state == JobState.completed)).all()
    assert len(completed) == 1
    assert completed[0].output == {"pdf": f"{completed[0].data['order_id']}.pdf"}
    queued = session.scalar(
        select(func.count()).select_from(Job).where(Job.name == "invoices", Job.state < JobState.active)
    )
    assert queued == 2
    by_state = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    assert by_state == {JobState.created: 3, JobState.completed: 1}


@BOTH_VERSIONS
def test_jobs_by_data_content(session: Session, shop: dict[int, uuid.UUID], models: ModuleType) -> None:
    Job = models.Job
    for_ada = session.scalars(
        select(Job).where(Job.data["customer_id"].as_integer() == 1).order_by(Job.name, Job.created_on)
    ).all()
    assert sorted(job.name for job in for_ada) == ["emails", "invoices", "invoices"]
    invoices = session.scalars(select(Job.id).where(Job.data.contains({"kind": "invoice"}))).all()
    assert set(invoices) == set(shop.values())
    order_11 = session.scalars(select(Job).where(Job.data["order_id"].as_integer() == 11)).one()
    assert order_11.id == shop[11]
    welcome = session.scalars(select(Job.name).where(Job.data["kind"].as_string() == "welcome")).one()
    assert welcome == "emails"


@BOTH_VERSIONS
def test_a_join_from_the_application_tables_to_jobs(
    session: Session, shop: dict[int, uuid.UUID], models: ModuleType
) -> None:
    Job = models.Job
    rows = session.execute(
        select(Customer.name, Order.id, Order.item, Job.id, Job.state)
        .join(Order, Order.customer_id == Customer.id)
        .outerjoin(Job, (Job.name == "invoices") & (Job.data["order_id"].as_integer() == Order.id))
        .order_by(Order.id)
    ).all()
    assert [(name, order_id, item, job_id) for name, order_id, item, job_id, _ in rows] == [
        ("ada", 10, "book", shop[10]),
        ("ada", 11, "pen", shop[11]),
        ("bob", 12, "ink", shop[12]),
        ("bob", 13, "unpaid", None),
    ]
    assert sorted(state for *_, state in rows if state is not None) == [
        JobState.created,
        JobState.created,
        JobState.completed,
    ]
    unpaid = session.scalars(
        select(Order.item).where(~select(Job.id).where(Job.data["order_id"].as_integer() == Order.id).exists())
    ).all()
    assert unpaid == ["unpaid"]
    # The other way round: from a job to its order, with the job's queue through the relationship.
    job, order = session.execute(
        select(Job, Order).join(Order, Job.data["order_id"].as_integer() == Order.id).where(Order.id == 12)
    ).one()
    assert (job.id, order.item, job.queue.name) == (shop[12], "ink", "invoices")


def test_the_archive_and_queues(session: Session, boss: Boss, shop: dict[int, uuid.UUID]) -> None:
    bind_factories(session)
    old = ArchiveFactory(name="invoices", data={"order_id": 1, "kind": "invoice"})
    older = ArchiveFactory(name="invoices", data={"order_id": 2, "kind": "invoice"}, state=JobState.failed)
    session.flush()
    session.execute(
        Archive.__table__.update()
        .where(Archive.id == older.id)
        .values(archived_on=func.now() - func.make_interval(0, 0, 0, 1))
    )
    session.expire_all()
    recent = session.scalars(select(Archive).order_by(Archive.archived_on.desc()).limit(10)).all()
    assert [archived.id for archived in recent] == [old.id, older.id]
    failed = session.scalars(select(Archive.id).where(Archive.state == JobState.failed)).all()
    assert failed == [older.id]
    every_invoice = session.execute(
        select(Job.id)
        .where(Job.data.contains({"kind": "invoice"}))
        .union_all(select(Archive.id).where(Archive.data.contains({"kind": "invoice"})))
    ).scalars()
    assert set(every_invoice) == {*shop.values(), old.id, older.id}

    boss.create_queue("dead")
    boss.update_queue("invoices", dead_letter="dead")
    dead_letters = session.scalars(select(Queue.name).where(Queue.dead_letter.is_not(None))).all()
    assert dead_letters == ["invoices"]


@pytest.fixture
def other_schema(engine: Engine, schema_version: int) -> Iterator[str]:
    """A second pg-boss schema of the test's version, committed, dropped afterwards."""
    name = unique_name("other")
    install_schema(engine, name, schema_version)
    try:
        yield name
    finally:
        drop_schema(engine, name)


@BOTH_VERSIONS
def test_another_schema_through_schema_translate_map(
    other_schema: str,
    session: Session,
    boss: Boss,
    make_boss: Callable[..., Any],
    engine: Engine,
    async_engine: AsyncEngine | None,
    models: ModuleType,
) -> None:
    # other_schema comes first, so that it is dropped after the test's transaction has been rolled back.
    boss.create_queue("q")
    here = boss.send("q", {"schema": "here"})
    translated = {"schema_translate_map": schema_translate_map(other_schema)}
    with plain_connection(engine, async_engine, **translated) as plain, plain.connection.begin() as transaction:
        other_session = plain.session()
        other = make_boss(other_session, schema=other_schema)
        assert other.schema == other_schema
        other.create_queue("q")
        there = other.send("q", {"schema": "there"})
        assert [(job.id, job.data) for job in other_session.scalars(select(models.Job))] == [
            (there, {"schema": "there"})
        ]
        assert other.get_job_by_id("q", here) is None
        [fetched] = other.fetch("q")
        assert fetched.id == there
        assert fetched.queue.name == "q"  # a lazy load, in the other schema too
        transaction.rollback()
    # the session maps pgboss to installed_schema
    assert [job.id for job in jobs_of(session, "q", models.Job)] == [here]
    assert boss.get_job_by_id("q", there) is None
    if models.Job is Job:
        assert boss.get_queue_size("q") == 1
    else:
        assert boss.get_queue_stats("q").queued == 1


@BOTH_VERSIONS
@pytest.mark.parametrize("bind", ["connection", "session"])
def test_jobs_from_a_boss_on_an_untranslated_bind_still_load(
    engine: Engine, async_engine: AsyncEngine | None, make_boss: Callable[..., Any], installed_schema: str, bind: str
) -> None:
    # On the async API: AsyncBoss on an AsyncConnection, or on an AsyncSession bound to it.
    with plain_connection(engine, async_engine) as plain:  # no schema_translate_map on this connection
        connection = plain.connection
        transaction = connection.begin()
        try:
            if bind == "connection":
                boss = plain.boss(schema=installed_schema)
            else:
                boss = make_boss(plain.session(), schema=installed_schema)
            boss.create_queue("q")
            job_id = boss.send("q", {"n": 1})
            [job] = boss.fetch("q")
            assert boss.complete("q", job_id, {"ok": True}) == 1
            try:
                loaded = (job.state, job.output, job.queue.name)
            except DBAPIError as exc:
                pytest.fail(f"reloading the job failed: {type(exc.orig).__name__}: {exc.orig}", pytrace=False)
            assert loaded == (JobState.completed, {"ok": True}, "q")
        finally:
            transaction.rollback()


@BOTH_VERSIONS
def test_one_session_serves_one_schema(
    other_schema: str, session: Session, boss: Boss, make_boss: Callable[..., Any]
) -> None:
    """Jobs are keyed by (queue, id) in the identity map, so two schemas in one session would mix them up."""
    boss.create_queue("q")
    with pytest.raises(SchemaMismatchError, match=other_schema):
        make_boss(session, schema=other_schema)
    assert_usable(boss, "q")
