"""``python -m bench wakeup``: how soon a job sent by one runtime starts on the other, through LISTEN/NOTIFY.

    python -m bench wakeup [--count 50] [--spacing 0.2] [--json wakeup-results.json]

On a version-46 schema (``bench_wakeup``) with a queue that has ``notify``, both workers poll every 30 s, so
what the numbers show is the notification, not the poll:

- **Node → Python**: pg-boss 12.38.0 sends ``count`` jobs, one at a time, ``spacing`` seconds apart after the
  previous one started; a sqla_boss ``Worker`` (threads, ``polling_interval_seconds=30``) runs them.
- **Python → Node**: sqla_boss's ``Boss.send`` sends as many, the same way; a pg-boss 12 ``work()`` with
  ``useListenNotify: true`` and ``pollingIntervalSeconds: 30`` runs them (after one warm-up job that is not
  counted: pg-boss fetches once when its LISTEN is up, and the bench waits for that LISTEN first).

Every handler's first statement inserts ``(job id, clock_timestamp())``; the latency is that time minus the job's
``created_on`` (the start of the sending transaction), both read from the DATABASE's clock, so no two clocks are
compared. Prints median, p90 and max per direction and writes them as JSON. The database is ``$DATABASE_URL``,
or an embedded PostgreSQL; Node 20 and npm are needed (pg-boss comes from the interop tests' lock file).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from bench.clients import ROOT, percentile
from bench.run import database
from sqla_boss import Boss, Worker
from sqla_boss.schema import schema_translate_map
from sqla_boss.v46 import ddl
from sqla_boss.v46.operations import notify_channel

SCHEMA = "bench_wakeup"
QUEUE = "wakeup"
TABLE = f"{SCHEMA}.handled"
POLLING_SECONDS = 30.0
NODE_SCRIPT = ROOT / "bench" / "pgboss_wakeup.mjs"
TIMEOUT_SECONDS = 60.0
"""How long one job may take to start before the run fails (well over the 30 s poll: a lost wake-up shows)."""


class NodeRunner:
    """pg-boss 12.38.0, installed as the interop tests install it, running ``pgboss_wakeup.mjs`` roles."""

    def __init__(self, url: URL) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        import pgboss  # tests/pgboss.py: installs pg-boss from the lock file

        self.package = pgboss.PGBOSS12_PACKAGE
        self.version = pgboss.PACKAGE_VERSIONS[self.package]
        self.node, npm = pgboss.find_node()
        self.script = pgboss.install(npm, script=NODE_SCRIPT)
        self.connection_string = pgboss.node_connection_string(url)

    def start(self, role: str, count: int, spacing: float) -> subprocess.Popen[str]:
        command = {
            "connectionString": self.connection_string,
            "schema": SCHEMA,
            "queue": QUEUE,
            "table": TABLE,
            "role": role,
            "count": count,
            "spacingMs": round(spacing * 1000),
            "timeoutMs": round(TIMEOUT_SECONDS * 1000),
        }
        process = subprocess.Popen(
            [self.node, str(self.script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.script.parent,
            env={**os.environ, "PGBOSS_PACKAGE": self.package},
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(command))
        process.stdin.close()
        return process

    @staticmethod
    def result(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        assert process.stdout is not None
        assert process.stderr is not None
        stdout, stderr = process.stdout.read(), process.stderr.read()
        if process.returncode != 0:
            raise RuntimeError(f"pg-boss wakeup role failed ({process.returncode}):\n{stderr}")
        return dict(json.loads(stdout.strip().splitlines()[-1]))


def prepare(engine: Engine) -> sessionmaker[Session]:
    drop(engine)
    with engine.begin() as connection:
        ddl.install(connection, SCHEMA)
        connection.execute(
            text(f"CREATE TABLE {TABLE} (id uuid PRIMARY KEY, started timestamptz NOT NULL, runtime text NOT NULL)")
        )
    sessions = sessionmaker(bind=engine.execution_options(schema_translate_map=schema_translate_map(SCHEMA)))
    with sessions.begin() as session:
        Boss(session, SCHEMA).create_queue(QUEUE, notify=True)
    return sessions


def drop(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))


def latencies(engine: Engine, runtime: str, ids: list[uuid.UUID]) -> list[float]:
    """Milliseconds from each job's ``created_on`` to its handler's start, by the database's clock."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                f"SELECT extract(epoch FROM h.started - j.created_on) * 1000 FROM {TABLE} h "
                f"JOIN {SCHEMA}.job j ON j.id = h.id WHERE h.runtime = :runtime AND h.id = ANY(:ids)"
            ),
            {"runtime": runtime, "ids": ids},
        ).scalars()
        found = [float(value) for value in rows]
    if len(found) != len(ids):
        raise RuntimeError(f"{len(ids)} jobs sent to {runtime}, {len(found)} handled")
    return found


def wait_for(condition: Any, what: str, timeout: float = TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.002)


def node_to_python(
    engine: Engine, sessions: sessionmaker[Session], node: NodeRunner, count: int, spacing: float
) -> list[float]:
    def handler(jobs: list[Any]) -> None:
        with engine.begin() as connection:
            for job in jobs:
                connection.execute(
                    text(f"INSERT INTO {TABLE} (id, started, runtime) VALUES (:id, clock_timestamp(), 'python')"),
                    {"id": job.id},
                )

    worker = Worker(sessions, SCHEMA, supervise=False, schedule=False, polling_interval_seconds=POLLING_SECONDS)
    worker.work(QUEUE, handler)
    worker.start()
    try:
        listener = worker._listener
        if listener is None or not listener.subscribed.wait(10):
            raise RuntimeError("the Python worker's listener did not subscribe")
        wait_for(
            lambda: all(
                s.last_fetch is not None and s.last_fetch > (listener.subscribed_at or 0) for s in worker._loop_states
            ),
            "the Python loop waiting out its polling interval",
        )
        result = node.result(node.start("send", count, spacing), TIMEOUT_SECONDS * (count + 1))
    finally:
        worker.stop()
    return latencies(engine, "python", [uuid.UUID(job_id) for job_id in result["ids"]])


def python_to_node(
    engine: Engine, sessions: sessionmaker[Session], node: NodeRunner, count: int, spacing: float
) -> list[float]:
    channel = notify_channel(SCHEMA)

    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the pg-boss worker exited: {process.stderr.read() if process.stderr else ''}")
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE :q"), {"q": f"%LISTEN%{channel}%"}
            ).scalar()
        return bool(found)

    def send_and_wait() -> uuid.UUID:
        with sessions.begin() as session:
            job_id = Boss(session, SCHEMA).send(QUEUE, {"from": "python"})
        assert job_id is not None
        with engine.connect() as connection:
            query = text(f"SELECT count(*) FROM {SCHEMA}.job WHERE name = :q AND id = :id AND state = 'completed'")
            wait_for(lambda: connection.execute(query, {"q": QUEUE, "id": job_id}).scalar(), f"job {job_id}")
        return job_id

    process = node.start("work", count + 1, spacing)
    try:
        wait_for(listening, "pg-boss's LISTEN")
        send_and_wait()  # the warm-up: pg-boss fetches once when its LISTEN is up
        ids = []
        for _ in range(count):
            time.sleep(spacing)
            ids.append(send_and_wait())
        node.result(process, TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return latencies(engine, "node", ids)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values), 2),
        "p90_ms": round(percentile(values, 0.9), 2),
        "max_ms": round(max(values), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench wakeup", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="jobs per direction (default: %(default)s)")
    parser.add_argument("--spacing", type=float, default=0.2, help="seconds between sends (default: %(default)s)")
    parser.add_argument("--json", default="wakeup-results.json", help="where to write the results")
    args = parser.parse_args(argv)

    with database() as url:
        engine = create_engine(url)
        try:
            sessions = prepare(engine)
            node = NodeRunner(url)
            started = time.perf_counter()
            measured = {
                "Node -> Python": node_to_python(engine, sessions, node, args.count, args.spacing),
                "Python -> Node": python_to_node(engine, sessions, node, args.count, args.spacing),
            }
            with engine.connect() as connection:
                server = connection.execute(text("SHOW server_version")).scalar_one()
        finally:
            drop(engine)
            engine.dispose()
    print(
        f"PostgreSQL {server}, pg-boss {node.version}; {args.count} jobs per direction, {args.spacing:g} s apart, "
        f"both workers polling every {POLLING_SECONDS:g} s"
    )
    print(f"{'direction':<16}{'median ms':>12}{'p90 ms':>10}{'max ms':>10}")
    rows = {direction: summary(values) for direction, values in measured.items()}
    for direction, row in rows.items():
        print(f"{direction:<16}{row['median_ms']:>12.2f}{row['p90_ms']:>10.2f}{row['max_ms']:>10.2f}")
    result = {
        "postgresql": server,
        "pgboss": node.version,
        "python": sys.version.split()[0],
        "count": args.count,
        "spacing_seconds": args.spacing,
        "polling_interval_seconds": POLLING_SECONDS,
        "seconds": round(time.perf_counter() - started, 1),
        "directions": {direction: {**rows[direction], "latencies_ms": measured[direction]} for direction in rows},
    }
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"\nwritten {args.json} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
