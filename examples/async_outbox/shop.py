"""The async shop: an ``orders`` table, a minimal asyncio HTTP server that takes orders, and an
``AsyncWorker`` that confirms them.

Each request runs in one ``AsyncSession`` transaction; the order's confirmation job is sent with
``AsyncBoss(session).send(...)`` in it, so the order and its job are committed together or not at all. The
worker runs in the transactional mode: it marks the order confirmed in the transaction that completes the
job. The HTTP server is deliberately tiny (no framework): one request per connection, JSON in and out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import uuid
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_boss import AsyncBoss, AsyncWorker, Job

QUEUE = "order-confirmation"
MAX_TOTAL_CENTS = 500_00  # orders above 500.00 need a human: the app refuses them

REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 422: "Unprocessable Entity"}


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    total_cents: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), default="pending")
    job_id: Mapped[uuid.UUID | None]
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Shop:
    """The web application: ``POST /orders`` and ``GET /orders/<id>``.

    ``sessions`` must reach both the app's tables and the pg-boss schema ``jobs_schema`` (see run.py).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], jobs_schema: str) -> None:
        self.sessions = sessions
        self.jobs_schema = jobs_schema

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            # One transaction per request: committed when the view returns, rolled back when it raises.
            # Whatever the view sent with AsyncBoss is committed or rolled back with it.
            async with self.sessions.begin() as session:
                return await self.route(session, method, path, body)
        except HttpError as error:
            return error.status, {"error": error.message}

    async def route(self, session: AsyncSession, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path == "/orders" and method == "POST":
            return 201, await self.create_order(session, read_json(body))
        found = re.fullmatch(r"/orders/(\d+)", path)
        if found and method == "GET":
            return 200, await self.show_order(session, int(found.group(1)))
        raise HttpError(404, f"no route for {method} {path}")

    async def create_order(self, session: AsyncSession, payload: dict[str, Any]) -> dict[str, Any]:
        customer, total_cents = payload.get("customer"), payload.get("total_cents")
        if not isinstance(customer, str) or not customer or not isinstance(total_cents, int):
            raise HttpError(400, "need a customer (text) and total_cents (an integer)")

        order = Order(customer=customer, total_cents=total_cents)
        session.add(order)
        await session.flush()  # the order gets its id, which the job carries
        boss = AsyncBoss(session, schema=self.jobs_schema)
        order.job_id = await boss.send(QUEUE, {"order_id": order.id}, retry_limit=3)

        # The business rule runs after send() on purpose, to show the point of the outbox: wherever a request
        # fails (a check, a payment, a bug), its rollback takes the job it sent away too, so no worker ever
        # confirms an order that does not exist.
        if not 0 < total_cents <= MAX_TOTAL_CENTS:
            raise HttpError(422, f"a total must be between 0.01 and {MAX_TOTAL_CENTS / 100:.2f}")
        return {"id": order.id, "status": order.status, "job_id": str(order.job_id)}

    async def show_order(self, session: AsyncSession, order_id: int) -> dict[str, Any]:
        order = await session.get(Order, order_id)
        if order is None:
            raise HttpError(404, f"no order {order_id}")
        job = None
        if order.job_id is not None:
            job = await AsyncBoss(session, schema=self.jobs_schema).get_job_by_id(QUEUE, order.job_id)
        return {
            "id": order.id,
            "customer": order.customer,
            "total_cents": order.total_cents,
            "status": order.status,
            "job_state": None if job is None else job.state.value,
        }

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The HTTP/1.1 part, for ``asyncio.start_server``: read one request, answer it, close."""
        try:
            request_line = (await reader.readline()).decode("latin-1")
            method, target, _version = request_line.split(" ", 2)
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status, answer = await self.handle(method, target.split("?", 1)[0], body)
            payload = json.dumps(answer).encode()
            head = (
                f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + payload)
            await writer.drain()
        except (ValueError, asyncio.IncompleteReadError):
            pass  # not HTTP, or the client went away: just close
        finally:
            writer.close()
            await writer.wait_closed()


def read_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise HttpError(400, "the body must be JSON") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "the body must be a JSON object")
    return payload


def make_worker(sessions: async_sessionmaker[AsyncSession], jobs_schema: str) -> AsyncWorker:
    """A worker that confirms orders; ``await worker.start()`` (tasks) or ``await worker.run()`` (until SIGTERM)."""
    worker = AsyncWorker(sessions, jobs_schema, polling_interval_seconds=1)

    # transactional=True: the handler gets a session in the transaction that completes the job, so the
    # order is marked confirmed exactly when its job is completed. If the handler raises, its writes roll
    # back and the job is failed (and retried, up to its retry_limit).
    @worker.work(QUEUE, transactional=True)
    async def confirm_order(jobs: list[Job], session: AsyncSession) -> dict[str, Any]:
        (job,) = jobs  # batch_size is 1 by default
        order = await session.get_one(Order, job.data["order_id"])
        # A real shop would email the customer here.
        order.status = "confirmed"
        order.confirmed_at = dt.datetime.now(dt.timezone.utc)
        return {"confirmed": order.id}  # stored as the job's output

    return worker
