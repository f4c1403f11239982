"""Run the WSGI outbox example from start to end: ``python examples/wsgi_outbox/run.py [--schema NAME] [--drop]``.

It installs the pg-boss schema, serves the app (shop.py) on a free port, places a valid and an invalid
order over HTTP, starts the worker, waits for the valid order to be confirmed and prints what happened.
The database is ``$DATABASE_URL``, else the embedded PostgreSQL that ``sqla-boss demo`` uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from shop import QUEUE, Base, Order, make_app, make_worker
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from sqla_boss import Boss, Job, embedded, migrations, schema_translate_map, validate_schema_name
from sqla_boss.database import create_sync_engine, url_from_env

CONFIRM_TIMEOUT_SECONDS = 30


class ExampleFailed(Exception):
    """Something the example expects did not happen."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--schema",
        default=os.environ.get("EXAMPLE_SCHEMA", "wsgi_outbox"),
        help="the pg-boss schema; the app's tables go to <schema>_app (default: $EXAMPLE_SCHEMA or wsgi_outbox)",
    )
    parser.add_argument("--drop", action="store_true", help="drop both schemas at the end")
    args = parser.parse_args()
    jobs_schema = validate_schema_name(args.schema)
    app_schema = validate_schema_name(f"{jobs_schema}_app")

    url = url_from_env()
    server = None
    if url is None:
        server = embedded.start()  # needs: pip install "sqla-boss[embedded]"
        url = server.url
    print(f"Database: {url.render_as_string(hide_password=True)}")
    engine = create_sync_engine(url)
    try:
        run(engine, jobs_schema, app_schema)
    except ExampleFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        if args.drop:
            drop(engine, jobs_schema, app_schema)
            print(f"Dropped the schemas {jobs_schema} and {app_schema}.")
        engine.dispose()
        if server is not None:
            server.stop()
    return 0


def run(engine: Engine, jobs_schema: str, app_schema: str) -> None:
    # 1. The pg-boss schema (sqla_boss's Alembic revisions), the app's tables and the queue.
    migrations.upgrade(engine, schema=jobs_schema)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{app_schema}"'))
    # The app's models have no schema: map "no schema" to app_schema, and sqla_boss's models (schema
    # "pgboss") to jobs_schema. One engine, one session, one transaction for both.
    app_engine = engine.execution_options(
        schema_translate_map={None: app_schema, **schema_translate_map(jobs_schema)},
    )
    Base.metadata.create_all(app_engine)
    sessions = sessionmaker(app_engine, expire_on_commit=False)
    with sessions.begin() as session:
        Boss(session, schema=jobs_schema).create_queue(QUEUE)
    print(f"Installed the pg-boss schema {jobs_schema!r}, the app's tables in {app_schema!r} and queue {QUEUE!r}.")

    # 2. Serve the WSGI app on a free port, in a thread.
    server = make_server("127.0.0.1", 0, make_app(sessions, jobs_schema), handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    print(f"Serving the app at {base}\n")
    try:
        # 3. A valid order: committed with its job.
        status, created = request(base, "POST", "/orders", {"customer": "ada", "total_cents": 42_00})
        expect(status == 201, f"the valid order was refused: {status} {created}")
        order_id = created["id"]

        # 4. An invalid order: the request rolls back, and the job it sent goes with it.
        before = count_rows(sessions)
        status, refused = request(base, "POST", "/orders", {"customer": "grace", "total_cents": 1_200_00})
        expect(status == 422, f"the invalid order was not refused: {status} {refused}")
        after = count_rows(sessions)
        expect(after == before, f"the refused request left rows behind: {before} -> {after}")
        print(f"  the refused order left nothing behind: still {after[0]} order(s) and {after[1]} job(s)")

        status, shown = request(base, "GET", f"/orders/{order_id}")
        expect(shown["status"] == "pending", f"order {order_id} should be pending: {shown}")

        # 5. The worker confirms the order in the transaction that completes its job.
        print("\nStarting the worker (transactional mode)")
        worker = make_worker(sessions, jobs_schema)
        started = time.monotonic()
        worker.start()
        try:
            shown = wait_until_confirmed(base, order_id)
            elapsed = time.monotonic() - started
        finally:
            worker.stop()
        print(
            f"  order {order_id} {shown['status']} {elapsed:.2f} s after the worker started, job {shown['job_state']}"
        )
    finally:
        server.shutdown()
        server.server_close()


def wait_until_confirmed(base: str, order_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        _, shown = request(base, "GET", f"/orders/{order_id}", quiet=True)
        if shown.get("status") == "confirmed":
            request(base, "GET", f"/orders/{order_id}")  # once more, for the transcript
            return dict(shown)
        time.sleep(0.1)
    raise ExampleFailed(f"order {order_id} was not confirmed within {CONFIRM_TIMEOUT_SECONDS} s")


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: the transcript prints the requests


# Straight to 127.0.0.1, never through an HTTP proxy the environment may configure.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(base: str, method: str, path: str, body: Any = None, *, quiet: bool = False) -> tuple[int, Any]:
    """Make one HTTP request with urllib; print it and the answer; return the status and the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    http_request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with _opener.open(http_request, timeout=10) as response:
            status, answer = response.status, json.load(response)
    except urllib.error.HTTPError as error:  # 4xx and 5xx answers
        status, answer = error.code, json.load(error)
    if not quiet:
        sent = "" if body is None else f" {json.dumps(body)}"
        print(f"{method} {path}{sent} -> {status} {json.dumps(answer)}")
    return status, answer


def count_rows(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """How many orders, and how many jobs in the queue, exist."""
    with sessions() as session:
        orders = session.scalar(select(func.count()).select_from(Order)) or 0
        jobs = session.scalar(select(func.count()).select_from(Job).where(Job.name == QUEUE)) or 0
    return orders, jobs


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ExampleFailed(message)


def drop(engine: Engine, jobs_schema: str, app_schema: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{app_schema}" CASCADE'))
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{jobs_schema}" CASCADE'))
        # sqla_boss's Alembic version table for this schema lives in public (see the README).
        connection.execute(text(f'DROP TABLE IF EXISTS public."{migrations.version_table_name(jobs_schema)}"'))


if __name__ == "__main__":
    sys.exit(main())
