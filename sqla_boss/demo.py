"""``sqla-boss demo``: orders and their jobs committed together, then worked off by a ``Worker``.

It shows the transactional outbox: each order and its confirmation job are written in one transaction,
so a rolled-back order leaves no job behind. With ``DATABASE_URL`` unset it runs on an embedded
PostgreSQL whose data directory lives under the user's data directory and is reused next time; with
``DATABASE_URL`` set it uses that server and drops everything it created when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import URL, DateTime, Engine, MetaData, String, create_engine, delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from sqla_boss import embedded, migrations
from sqla_boss.async_boss import AsyncBoss
from sqla_boss.async_worker import AsyncWorker
from sqla_boss.boss import Boss
from sqla_boss.database import DATABASE_URL_ENV, normalize_url
from sqla_boss.identifiers import quote_identifier, validate_schema_name
from sqla_boss.models import Job as Job24
from sqla_boss.models import JobState
from sqla_boss.schema import schema_translate_map
from sqla_boss.v46.models import Job as Job46
from sqla_boss.worker import Worker

BOSS_SCHEMA = "sqla_boss_demo"
"""The pg-boss schema the demo installs on its embedded server (never your ``pgboss``); on a server of yours,
each run takes one of its own (``sqla_boss_demo_<random>``), so that two runs never collide."""
BOSS_SCHEMA_12 = "sqla_boss_demo12"
"""The pg-boss schema of ``sqla-boss demo --pgboss 12`` on the embedded server: version 46, beside the other."""
APP_SCHEMA = "sqla_boss_demo_app"
"""The schema the ``orders`` model names; each run translates it to ``<its pg-boss schema>_app``."""
QUEUE = "order-confirmation"
WORK_OFF_SECONDS = 60

ORDERS = [
    ("ada", 42_00, "ok"),
    ("grace", 17_50, "ok"),
    ("linus", 99_99, "declined"),  # the payment fails: the order and its job roll back together
    ("barbara", 8_25, "flaky"),  # the confirmation fails once, then succeeds on its retry
    ("edsger", 64_00, "ok"),
]


AnyEngine = TypeVar("AnyEngine", Engine, AsyncEngine)


class _Base(DeclarativeBase):
    metadata = MetaData(schema=APP_SCHEMA)


class Order(_Base):
    """The demo application's own table: the business row each job belongs to."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(40))
    total_cents: Mapped[int]
    confirmed_on: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    job_id: Mapped[uuid.UUID | None]


class PaymentDeclined(Exception):
    """The demo's stand-in for a business rule that aborts the order."""


@dataclass(frozen=True)
class Schemas:
    """The schemas of one run: pg-boss's, and the application's."""

    boss: str
    app: str

    def translated(self, engine: AnyEngine) -> AnyEngine:
        """``engine`` with the models of both pointed at this run's schemas."""
        return engine.execution_options(schema_translate_map={**schema_translate_map(self.boss), APP_SCHEMA: self.app})


@dataclass
class Summary:
    placed: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    confirmations: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)


def run(
    *, say: Callable[[str], None] = print, use_async: bool = False, schema: str | None = None, pgboss: int = 10
) -> Summary:
    """Run the demo and print what happens; returns the summary it printed.

    ``pgboss``: the release whose schema the demo installs, 10 (version 24) or 12 (version 46, in a schema of
    its own on the embedded server: :data:`BOSS_SCHEMA_12`). The same worker works the queue off on both.

    With ``use_async`` the orders are placed and worked off through :class:`~sqla_boss.AsyncBoss` on an
    ``AsyncSession`` (psycopg's async driver); the rows are the same. ``schema``: the pg-boss schema to use
    (its orders go to ``<schema>_app``); by default :data:`BOSS_SCHEMA` on the embedded server, and a schema of
    this run's own on a server of yours. On a server of yours, both are dropped at the end.

    Raises:
        InvalidSchemaNameError: ``schema`` is no name pg-boss can use.
        EmbeddedPostgresUnavailableError: no ``DATABASE_URL``, and no embedded PostgreSQL installed.
    """
    if schema is not None:
        validate_schema_name(schema)
    with _database(say) as (engine, server_mode):
        base = BOSS_SCHEMA_12 if pgboss == 12 else BOSS_SCHEMA
        if schema is None:
            schema = f"{base}_{uuid.uuid4().hex[:8]}" if server_mode else base
        schemas = Schemas(schema, validate_schema_name(f"{schema}_app"))
        try:
            return _run(engine, say, use_async, schemas, pgboss)
        finally:
            if server_mode:
                _clean_up(engine, schemas)
                say(f"Cleaned up: dropped schemas {schemas.boss} and {schemas.app}.")


@contextlib.contextmanager
def _database(say: Callable[[str], None]) -> Iterator[tuple[Engine, bool]]:
    configured = os.environ.get(DATABASE_URL_ENV)
    if configured:
        url = normalize_url(configured)
        say(f"Using the PostgreSQL at {url.render_as_string(hide_password=True)} ({DATABASE_URL_ENV}).")
        engine = create_engine(url, poolclass=NullPool)
        try:
            yield engine, True
        finally:
            engine.dispose()
        return
    started = time.perf_counter()
    server = embedded.start()
    say(
        f"Started an embedded PostgreSQL ({embedded.provider_name()}) in {time.perf_counter() - started:.1f} s; "
        f"its data lives in {server.data_dir}."
    )
    engine = create_engine(server.url, poolclass=NullPool)
    try:
        yield engine, False
    finally:
        engine.dispose()
        server.stop()


def _run(engine: Engine, say: Callable[[str], None], use_async: bool, schemas: Schemas, pgboss: int) -> Summary:
    summary = Summary()
    migrations.upgrade(engine, schema=schemas.boss, pgboss=pgboss)
    Job: Any = Job46 if pgboss == 12 else Job24
    jobs_engine = schemas.translated(engine)
    with jobs_engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schemas.app)}"))
        _Base.metadata.drop_all(connection)
        _Base.metadata.create_all(connection)
    version = 46 if pgboss == 12 else 24
    say(
        f"Installed the pg-boss schema {schemas.boss!r} (version {version}, pg-boss {pgboss}) and created the table "
        f"{schemas.app}.orders.\n"
    )

    with Session(jobs_engine) as session, session.begin():
        boss = Boss(session, schema=schemas.boss)
        boss.create_queue(QUEUE, retry_limit=1)
        boss.purge_queue(QUEUE)
        # Jobs of earlier runs (the embedded cluster is kept between runs).
        session.execute(delete(Job).where(Job.name == QUEUE, Job.state >= JobState.completed))

    say("Placing orders; each order and its confirmation job commit in one transaction:")
    if use_async:
        asyncio.run(_place_and_work_async(engine.url, schemas, summary, say))
    else:
        _place_and_work(jobs_engine, schemas.boss, summary, say)

    with Session(jobs_engine) as session:
        rows = session.execute(
            select(Job.state, func.count()).where(Job.name == QUEUE).group_by(Job.state).order_by(Job.state)
        ).all()
        summary.states = {state.value: count for state, count in rows}
        orders = session.scalar(select(func.count()).select_from(Order))
        confirmed = session.scalar(select(func.count()).select_from(Order).where(Order.confirmed_on.is_not(None)))

    say("\nSummary")
    say(f"  orders committed : {orders} ({confirmed} confirmed)")
    say(f"  rolled back      : {', '.join(summary.rolled_back) or 'none'} (no order row and no job were left behind)")
    say(f"  retried          : {', '.join(summary.failures) or 'none'}")
    say("  jobs by state    : " + ", ".join(f"{state} {count}" for state, count in summary.states.items()))
    return summary


def _place_and_work(jobs_engine: Engine, schema: str, summary: Summary, say: Callable[[str], None]) -> None:
    for customer, cents, behaviour in ORDERS:
        try:
            with Session(jobs_engine, expire_on_commit=False) as session, session.begin():
                order = Order(customer=customer, total_cents=cents)
                session.add(order)
                session.flush()
                order.job_id = Boss(session, schema=schema).send(QUEUE, _payload(order, behaviour))
                _check_payment(order, behaviour)
            _placed(order, summary, say)
        except PaymentDeclined as exc:
            _declined(customer, cents, exc, summary, say)

    say("\nWorking off the queue with a Worker (transactional: each confirmation commits with its job):")
    worker = Worker(jobs_engine, schema, supervise=False, schedule=False, polling_interval_seconds=0.5)

    @worker.work(QUEUE, concurrency=2, transactional=True)
    def confirm(jobs: list[Job24 | Job46], session: Session) -> dict[str, str]:
        (job,) = jobs
        failure = _outcome(job, summary, say)
        if failure is not None:
            raise failure
        session.get_one(Order, job.data["order_id"]).confirmed_on = dt.datetime.now(dt.timezone.utc)
        return {"emailed": job.data["customer"]}

    worker.start()
    try:
        _wait_until_worked_off(lambda: _pending(jobs_engine))
    finally:
        worker.stop()


async def _place_and_work_async(url: URL, schemas: Schemas, summary: Summary, say: Callable[[str], None]) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    jobs_engine = schemas.translated(engine)
    try:
        for customer, cents, behaviour in ORDERS:
            try:
                async with AsyncSession(jobs_engine, expire_on_commit=False) as session, session.begin():
                    order = Order(customer=customer, total_cents=cents)
                    session.add(order)
                    await session.flush()
                    order.job_id = await AsyncBoss(session, schema=schemas.boss).send(QUEUE, _payload(order, behaviour))
                    _check_payment(order, behaviour)
                _placed(order, summary, say)
            except PaymentDeclined as exc:
                _declined(customer, cents, exc, summary, say)

        say("\nWorking off the queue with an AsyncWorker (transactional: each confirmation commits with its job):")
        worker = AsyncWorker(jobs_engine, schemas.boss, supervise=False, schedule=False, polling_interval_seconds=0.5)

        @worker.work(QUEUE, concurrency=2, transactional=True)
        async def confirm(jobs: list[Job24 | Job46], session: AsyncSession) -> dict[str, str]:
            (job,) = jobs
            failure = _outcome(job, summary, say)
            if failure is not None:
                raise failure
            (await session.get_one(Order, job.data["order_id"])).confirmed_on = dt.datetime.now(dt.timezone.utc)
            return {"emailed": job.data["customer"]}

        await worker.start()
        try:
            deadline = time.monotonic() + WORK_OFF_SECONDS
            while await _pending_async(jobs_engine):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the demo's jobs were not worked off in {WORK_OFF_SECONDS} s")
                await asyncio.sleep(0.05)
        finally:
            await worker.stop()
    finally:
        await engine.dispose()


def _pending(jobs_engine: Engine) -> int:
    """The demo's queued and active jobs (the queue's ``job`` table is the same of both versions for this)."""
    with Session(jobs_engine) as session:
        return session.scalar(select(func.count()).where(Job24.name == QUEUE, Job24.state < JobState.completed)) or 0


async def _pending_async(jobs_engine: AsyncEngine) -> int:
    async with AsyncSession(jobs_engine) as session:
        found = await session.scalar(select(func.count()).where(Job24.name == QUEUE, Job24.state < JobState.completed))
        return found or 0


def _wait_until_worked_off(pending: Callable[[], int]) -> None:
    deadline = time.monotonic() + WORK_OFF_SECONDS
    while pending():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo's jobs were not worked off in {WORK_OFF_SECONDS} s")
        time.sleep(0.05)


def _payload(order: Order, behaviour: str) -> dict[str, object]:
    return {"order_id": order.id, "customer": order.customer, "behaviour": behaviour}


def _check_payment(order: Order, behaviour: str) -> None:
    if behaviour == "declined":
        raise PaymentDeclined(f"payment of {order.total_cents / 100:.2f} declined")


def _placed(order: Order, summary: Summary, say: Callable[[str], None]) -> None:
    summary.placed.append(order.customer)
    amount = f"{order.total_cents / 100:>7.2f}"
    say(f"  {'order #' + str(order.id):<9} for {order.customer:<8} {amount}  committed with job {order.job_id}")


def _declined(customer: str, cents: int, exc: Exception, summary: Summary, say: Callable[[str], None]) -> None:
    summary.rolled_back.append(customer)
    say(f"  {'order':<9} for {customer:<8} {cents / 100:>7.2f}  ROLLED BACK ({exc}): no order, no job")


def _outcome(job: Job24 | Job46, summary: Summary, say: Callable[[str], None]) -> Exception | None:
    """What working ``job`` does: ``None`` to complete it, or the exception to fail it with."""
    data = job.data
    if data["behaviour"] == "flaky" and job.retry_count == 0:
        summary.failures.append(data["customer"])
        say(f"  job for order #{data['order_id']} ({data['customer']}) failed; it will be retried")
        return ConnectionError("mail server timed out")
    summary.confirmations.append(data["customer"])
    attempt = f" (attempt {job.retry_count + 1})" if job.retry_count else ""
    say(f"  confirmed order #{data['order_id']} for {data['customer']}{attempt}")
    return None


def _clean_up(engine: Engine, schemas: Schemas) -> None:
    with engine.begin() as connection:
        for schema in (schemas.app, schemas.boss):
            connection.execute(text(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE"))
        version_table = quote_identifier(migrations.version_table_name(schemas.boss))
        connection.execute(text(f"DROP TABLE IF EXISTS public.{version_table}"))
