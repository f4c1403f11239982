"""Run the asyncio outbox example from start to end: ``python examples/async_outbox/run.py [--schema NAME] [--drop]``.

It installs the pg-boss schema, serves the app (shop.py) with ``asyncio.start_server`` on a free port,
places a valid and an invalid order over HTTP, starts the ``AsyncWorker``, waits for the valid order to be
confirmed and prints what happened. The database is ``$DATABASE_URL``, else the embedded PostgreSQL that
``sqla-boss demo`` uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from shop import QUEUE, Base, Order, Shop, make_worker
from sqlalchemy import Connection, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from sqla_boss import AsyncBoss, Job, embedded, migrations, schema_translate_map, validate_schema_name
from sqla_boss.database import url_from_env

CONFIRM_TIMEOUT_SECONDS = 30


class ExampleFailed(Exception):
    """Something the example expects did not happen."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--schema",
        default=os.environ.get("EXAMPLE_SCHEMA", "async_outbox"),
        help="the pg-boss schema; the app's tables go to <schema>_app (default: $EXAMPLE_SCHEMA or async_outbox)",
    )
    parser.add_argument("--drop", action="store_true", help="drop both schemas at the end")
    args = parser.parse_args()
    jobs_schema = validate_schema_name(args.schema)
    app_schema = validate_schema_name(f"{jobs_schema}_app")

    url = url_from_env()  # postgresql+psycopg://: create_async_engine uses psycopg's async driver on it
    server = None
    if url is None:
        server = embedded.start()  # needs: pip install "sqla-boss[embedded]"
        url = server.url
    print(f"Database: {url.render_as_string(hide_password=True)}")
    try:
        asyncio.run(run(create_async_engine(url), jobs_schema, app_schema, drop=args.drop))
    except ExampleFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    return 0


async def run(engine: AsyncEngine, jobs_schema: str, app_schema: str, *, drop: bool) -> None:
    try:
        await place_and_confirm(engine, jobs_schema, app_schema)
    finally:
        if drop:
            async with engine.begin() as connection:
                await connection.run_sync(drop_schemas, jobs_schema, app_schema)
            print(f"Dropped the schemas {jobs_schema} and {app_schema}.")
        await engine.dispose()


async def place_and_confirm(engine: AsyncEngine, jobs_schema: str, app_schema: str) -> None:
    # 1. The pg-boss schema (sqla_boss's Alembic revisions, which are synchronous: run_sync hands them the
    #    connection), the app's tables and the queue.
    async with engine.begin() as connection:
        await connection.run_sync(migrations.upgrade, schema=jobs_schema)
        await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{app_schema}"'))
    # The app's models have no schema: map "no schema" to app_schema, and sqla_boss's models (schema
    # "pgboss") to jobs_schema. One engine, one session, one transaction for both.
    app_engine = engine.execution_options(
        schema_translate_map={None: app_schema, **schema_translate_map(jobs_schema)},
    )
    async with app_engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    sessions = async_sessionmaker(app_engine, expire_on_commit=False)
    async with sessions.begin() as session:
        await AsyncBoss(session, schema=jobs_schema).create_queue(QUEUE)
    print(f"Installed the pg-boss schema {jobs_schema!r}, the app's tables in {app_schema!r} and queue {QUEUE!r}.")

    # 2. Serve the app on a free port, in this event loop.
    shop = Shop(sessions, jobs_schema)
    server = await asyncio.start_server(shop.serve_connection, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    print(f"Serving the app at {base}\n")
    try:
        # 3. A valid order: committed with its job.
        status, created = await request(base, "POST", "/orders", {"customer": "ada", "total_cents": 42_00})
        expect(status == 201, f"the valid order was refused: {status} {created}")
        order_id = created["id"]

        # 4. An invalid order: the request rolls back, and the job it sent goes with it.
        before = await count_rows(sessions)
        status, refused = await request(base, "POST", "/orders", {"customer": "grace", "total_cents": 1_200_00})
        expect(status == 422, f"the invalid order was not refused: {status} {refused}")
        after = await count_rows(sessions)
        expect(after == before, f"the refused request left rows behind: {before} -> {after}")
        print(f"  the refused order left nothing behind: still {after[0]} order(s) and {after[1]} job(s)")

        status, shown = await request(base, "GET", f"/orders/{order_id}")
        expect(shown["status"] == "pending", f"order {order_id} should be pending: {shown}")

        # 5. The worker confirms the order in the transaction that completes its job.
        print("\nStarting the AsyncWorker (transactional mode)")
        worker = make_worker(sessions, jobs_schema)
        started = time.monotonic()
        await worker.start()
        try:
            shown = await wait_until_confirmed(base, order_id)
            elapsed = time.monotonic() - started
        finally:
            await worker.stop()
        print(
            f"  order {order_id} {shown['status']} {elapsed:.2f} s after the worker started, job {shown['job_state']}"
        )
    finally:
        server.close()
        await server.wait_closed()


async def wait_until_confirmed(base: str, order_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        _, shown = await request(base, "GET", f"/orders/{order_id}", quiet=True)
        if shown.get("status") == "confirmed":
            await request(base, "GET", f"/orders/{order_id}")  # once more, for the transcript
            return dict(shown)
        await asyncio.sleep(0.1)
    raise ExampleFailed(f"order {order_id} was not confirmed within {CONFIRM_TIMEOUT_SECONDS} s")


# Straight to 127.0.0.1, never through an HTTP proxy the environment may configure.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def request(base: str, method: str, path: str, body: Any = None, *, quiet: bool = False) -> tuple[int, Any]:
    """Make one HTTP request; print it and the answer; return the status and the JSON answer.

    urllib blocks, so it runs in a thread: the server answering it runs in this event loop.
    """
    status, answer = await asyncio.to_thread(blocking_request, base + path, method, body)
    if not quiet:
        sent = "" if body is None else f" {json.dumps(body)}"
        print(f"{method} {path}{sent} -> {status} {json.dumps(answer)}")
    return status, answer


def blocking_request(url: str, method: str, body: Any) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    http_request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with _opener.open(http_request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:  # 4xx and 5xx answers
        return error.code, json.load(error)


async def count_rows(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    """How many orders, and how many jobs in the queue, exist."""
    async with sessions() as session:
        orders = await session.scalar(select(func.count()).select_from(Order)) or 0
        jobs = await session.scalar(select(func.count()).select_from(Job).where(Job.name == QUEUE)) or 0
    return orders, jobs


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ExampleFailed(message)


def drop_schemas(connection: Connection, jobs_schema: str, app_schema: str) -> None:
    connection.execute(text(f'DROP SCHEMA IF EXISTS "{app_schema}" CASCADE'))
    connection.execute(text(f'DROP SCHEMA IF EXISTS "{jobs_schema}" CASCADE'))
    # sqla_boss's Alembic version table for this schema lives in public (see the README).
    connection.execute(text(f'DROP TABLE IF EXISTS public."{migrations.version_table_name(jobs_schema)}"'))


if __name__ == "__main__":
    sys.exit(main())
