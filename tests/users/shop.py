"""A tiny shop, written as an application that uses sqla_boss would be: orders, and the e-mails and shipments
they lead to, sent as jobs in the transaction that writes the order (the outbox).

The suite beside it (``test_shop*.py``) tests this module the way such an application's own suite would:
with ``sqla_boss.testing`` and its pytest fixtures only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.schema import CreateSchema

from sqla_boss import AsyncBoss, AsyncWorker, Boss, Job, Worker

JOBS_SCHEMA = "shop_jobs"
"""The shop's pg-boss schema (its tests name it in the ini option ``sqla_boss_schema``)."""


class Base(DeclarativeBase):
    metadata = MetaData(schema="shop")


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str]
    email: Mapped[str]
    total_cents: Mapped[int]
    shipped: Mapped[bool] = mapped_column(default=False)


class InvalidOrder(ValueError):
    """The order cannot be placed."""


class MailerDown(RuntimeError):
    """The mail server refused the message."""


@dataclass
class Mailer:
    """Stands in for an SMTP client: remembers what it delivered."""

    outbox: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False

    def deliver(self, to: str, template: str) -> None:
        if self.down:
            raise MailerDown(f"cannot reach the mail server to send {template!r} to {to}")
        self.outbox.append((to, template))


mailer = Mailer()


def install(session: Session) -> None:
    """Create the shop's tables and queues, in the caller's transaction."""
    session.execute(CreateSchema("shop", if_not_exists=True))
    Base.metadata.create_all(session.connection())
    boss = Boss(session, JOBS_SCHEMA)
    boss.create_queue("emails_dead")
    boss.create_queue("emails", retry_limit=2, dead_letter="emails_dead")
    boss.create_queue("shipments", retry_limit=1)


def place_order(session: Session, customer: str, email: str, total_cents: int) -> Order:
    """Write the order and send its confirmation e-mail job, in the caller's transaction."""
    if total_cents <= 0:
        raise InvalidOrder(f"an order must cost something, not {total_cents} cents")
    order = Order(customer=customer, email=email, total_cents=total_cents)
    session.add(order)
    session.flush()
    data = {"order_id": order.id, "to": email, "template": "confirmation"}
    Boss(session, JOBS_SCHEMA).send("emails", data, singleton_key=f"order-{order.id}")
    return order


def ship_order(session: Session, order: Order) -> None:
    """Ask the warehouse to ship the order (a job)."""
    Boss(session, JOBS_SCHEMA).send("shipments", {"order_id": order.id})


def send_confirmation(jobs: list[Job]) -> dict[str, Any]:
    """Handler of ``emails``: deliver each message."""
    for job in jobs:
        mailer.deliver(job.data["to"], job.data["template"])
    return {"delivered": len(jobs)}


def mark_shipped(jobs: list[Job], session: Session) -> None:
    """Transactional handler of ``shipments``: mark the order shipped and tell the customer, in the
    transaction that completes the job."""
    for job in jobs:
        order = session.get(Order, job.data["order_id"])
        if order is None:
            raise InvalidOrder(f"no order {job.data['order_id']}")
        order.shipped = True
        Boss(session, JOBS_SCHEMA).send("emails", {"order_id": order.id, "to": order.email, "template": "shipped"})


def build_worker(engine: Engine) -> Worker:
    """The shop's worker, as its ``main()`` would start it."""
    worker = Worker(engine, JOBS_SCHEMA)

    @worker.work("emails", batch_size=5)
    def emails(jobs: list[Job]) -> dict[str, Any]:
        return send_confirmation(jobs)

    @worker.work("shipments", transactional=True)
    def shipments(jobs: list[Job], session: Session) -> None:
        mark_shipped(jobs, session)

    return worker


# ------------------------------------------------------------------------------------------ the async side


async def place_order_async(session: AsyncSession, customer: str, email: str, total_cents: int) -> Order:
    """:func:`place_order` for an async web handler."""
    if total_cents <= 0:
        raise InvalidOrder(f"an order must cost something, not {total_cents} cents")
    order = Order(customer=customer, email=email, total_cents=total_cents)
    session.add(order)
    await session.flush()
    data = {"order_id": order.id, "to": email, "template": "confirmation"}
    await AsyncBoss(session, JOBS_SCHEMA).send("emails", data, singleton_key=f"order-{order.id}")
    return order


async def send_confirmation_async(jobs: list[Job]) -> dict[str, Any]:
    """Coroutine handler of ``emails``."""
    return send_confirmation(jobs)


async def mark_shipped_async(jobs: list[Job], session: AsyncSession) -> None:
    """Transactional coroutine handler of ``shipments``."""
    for job in jobs:
        order = await session.get(Order, job.data["order_id"])
        if order is None:
            raise InvalidOrder(f"no order {job.data['order_id']}")
        order.shipped = True
        await AsyncBoss(session, JOBS_SCHEMA).send(
            "emails", {"order_id": order.id, "to": order.email, "template": "shipped"}
        )


def build_async_worker(engine: AsyncEngine) -> AsyncWorker:
    """The shop's asyncio worker."""
    worker = AsyncWorker(engine, JOBS_SCHEMA)

    @worker.work("emails", batch_size=5)
    async def emails(jobs: list[Job]) -> dict[str, Any]:
        return await send_confirmation_async(jobs)

    @worker.work("shipments", transactional=True)
    async def shipments(jobs: list[Job], session: AsyncSession) -> None:
        await mark_shipped_async(jobs, session)

    return worker
