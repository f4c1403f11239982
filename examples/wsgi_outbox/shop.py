"""A tiny shop: an ``orders`` table, a WSGI app that takes orders, and a worker that confirms them.

The app sends each order's confirmation job with ``Boss(session).send(...)`` in the request's own
transaction, so an order and its job are committed together or not at all. The worker runs in the
transactional mode: it marks the order confirmed in the same transaction that completes the job.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sqla_boss import Boss, Job, Worker

QUEUE = "order-confirmation"
MAX_TOTAL_CENTS = 500_00  # orders above 500.00 need a human: the app refuses them


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
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def make_app(sessions: sessionmaker[Session], jobs_schema: str) -> WsgiApp:
    """The WSGI application: ``POST /orders`` and ``GET /orders/<id>``.

    ``sessions`` must reach both the app's tables and the pg-boss schema ``jobs_schema`` (see run.py).
    """

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        try:
            # One transaction per request: committed when the view returns, rolled back when it raises.
            # Whatever the view sent with Boss is committed or rolled back with it.
            with sessions.begin() as session:
                status, body = route(session, jobs_schema, method, path, environ)
        except HttpError as error:
            status, body = error.status, {"error": error.message}
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    return app


def route(
    session: Session, jobs_schema: str, method: str, path: str, environ: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    if path == "/orders" and method == "POST":
        return "201 Created", create_order(session, jobs_schema, read_json(environ))
    found = re.fullmatch(r"/orders/(\d+)", path)
    if found and method == "GET":
        return "200 OK", show_order(session, jobs_schema, int(found.group(1)))
    raise HttpError("404 Not Found", f"no route for {method} {path}")


def read_json(environ: dict[str, Any]) -> dict[str, Any]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        payload = json.loads(environ["wsgi.input"].read(length))
    except ValueError:
        raise HttpError("400 Bad Request", "the body must be JSON") from None
    if not isinstance(payload, dict):
        raise HttpError("400 Bad Request", "the body must be a JSON object")
    return payload


def create_order(session: Session, jobs_schema: str, payload: dict[str, Any]) -> dict[str, Any]:
    customer, total_cents = payload.get("customer"), payload.get("total_cents")
    if not isinstance(customer, str) or not customer or not isinstance(total_cents, int):
        raise HttpError("400 Bad Request", "need a customer (text) and total_cents (an integer)")

    order = Order(customer=customer, total_cents=total_cents)
    session.add(order)
    session.flush()  # the order gets its id, which the job carries
    order.job_id = Boss(session, schema=jobs_schema).send(QUEUE, {"order_id": order.id}, retry_limit=3)

    # The business rule runs after send() on purpose, to show the point of the outbox: wherever a request
    # fails (a check, a payment, a bug), its rollback takes the job it sent away too, so no worker ever
    # confirms an order that does not exist.
    if not 0 < total_cents <= MAX_TOTAL_CENTS:
        raise HttpError("422 Unprocessable Entity", f"a total must be between 0.01 and {MAX_TOTAL_CENTS / 100:.2f}")
    return {"id": order.id, "status": order.status, "job_id": str(order.job_id)}


def show_order(session: Session, jobs_schema: str, order_id: int) -> dict[str, Any]:
    order = session.get(Order, order_id)
    if order is None:
        raise HttpError("404 Not Found", f"no order {order_id}")
    job = Boss(session, schema=jobs_schema).get_job_by_id(QUEUE, order.job_id) if order.job_id else None
    return {
        "id": order.id,
        "customer": order.customer,
        "total_cents": order.total_cents,
        "status": order.status,
        "job_state": None if job is None else job.state.value,
    }


def make_worker(sessions: sessionmaker[Session], jobs_schema: str) -> Worker:
    """A worker that confirms orders; call ``start()`` (threads) or ``run()`` (blocks until SIGTERM)."""
    worker = Worker(sessions, jobs_schema, polling_interval_seconds=1)

    # transactional=True: the handler gets a session in the transaction that completes the job, so the
    # order is marked confirmed exactly when its job is completed. If the handler raises, its writes roll
    # back and the job is failed (and retried, up to its retry_limit).
    @worker.work(QUEUE, transactional=True)
    def confirm_order(jobs: list[Job], session: Session) -> dict[str, Any]:
        (job,) = jobs  # batch_size is 1 by default
        order = session.get_one(Order, job.data["order_id"])
        # A real shop would email the customer here.
        order.status = "confirmed"
        order.confirmed_at = dt.datetime.now(dt.timezone.utc)
        return {"confirmed": order.id}  # stored as the job's output

    return worker
