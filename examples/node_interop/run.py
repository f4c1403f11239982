"""Run a Python sqla_boss worker beside a Node pg-boss 10.4.2 worker on the same queues.

``python examples/node_interop/run.py [--schema NAME] [--jobs N] [--drop] [--node-script PATH]``

Python owns the schema: it runs sqla_boss's migrations and creates the queues ``py-tasks`` and
``node-tasks``. Then a ``Worker`` works ``py-tasks`` and, for each job, sends one to ``node-tasks`` in the
transaction that completes it; the Node script (worker.mjs, started with ``migrate: false``) sends jobs to
``py-tasks`` and works ``node-tasks``. Each side waits until the jobs it sent are completed by the other.
The database is ``$DATABASE_URL``, else the embedded PostgreSQL that ``sqla-boss demo`` uses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, text
from sqlalchemy.orm import Session

from sqla_boss import Boss, Job, JobState, Worker, embedded, migrations, schema_translate_map, validate_schema_name
from sqla_boss.database import create_sync_engine, url_from_env

HERE = Path(__file__).resolve().parent
PGBOSS_VERSION = "10.4.2"
PY_QUEUE = "py-tasks"  # Node sends, Python works
NODE_QUEUE = "node-tasks"  # Python sends, Node works
TIMEOUT_SECONDS = 60


class ExampleFailed(Exception):
    """Something the example expects did not happen."""


def say(line: str) -> None:
    print(f"[python] {line}")


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # keep our lines in order with Node's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default=os.environ.get("EXAMPLE_SCHEMA", "node_interop"), help="the pg-boss schema")
    parser.add_argument("--jobs", type=int, default=3, help="how many jobs Node sends (default 3)")
    parser.add_argument("--drop", action="store_true", help="drop the schema at the end")
    parser.add_argument(
        "--node-script",
        type=Path,
        help="a copy of worker.mjs that sits beside a node_modules holding pg-boss 10.4.2 "
        "(default: worker.mjs here, after npm ci here)",
    )
    args = parser.parse_args()
    schema = validate_schema_name(args.schema)

    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        print("This example needs Node.js 20 or later, with npm, on PATH.", file=sys.stderr)
        return 2
    script = args.node_script or install_pgboss(npm)

    url = url_from_env()
    server = None
    if url is None:
        server = embedded.start()  # needs: pip install "sqla-boss[embedded]"
        url = server.url
    print(f"Database: {url.render_as_string(hide_password=True)}")
    engine = create_sync_engine(url)
    try:
        run(engine, url, schema, node, script, args.jobs)
    except ExampleFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        if args.drop:
            drop(engine, schema)
            print(f"Dropped the schema {schema}.")
        engine.dispose()
        if server is not None:
            server.stop()
    return 0


def install_pgboss(npm: str) -> Path:
    """``npm ci`` here (pg-boss as package-lock.json pins it) unless node_modules holds it already."""
    installed = HERE / "node_modules" / "pg-boss" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != PGBOSS_VERSION:
        print(f"Installing pg-boss {PGBOSS_VERSION} into {HERE / 'node_modules'} (npm ci)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True)
    return HERE / "worker.mjs"


def run(engine: Engine, url: URL, schema: str, node: str, script: Path, count: int) -> None:
    # 1. Python owns the schema: sqla_boss's migrations install it, and Python creates both queues.
    migrations.upgrade(engine, schema=schema)
    jobs_engine = engine.execution_options(schema_translate_map=schema_translate_map(schema))
    with Session(jobs_engine) as session, session.begin():
        boss = Boss(session, schema=schema)
        boss.create_queue(PY_QUEUE)
        boss.create_queue(NODE_QUEUE)
    say(f"installed the pg-boss schema {schema!r} and created the queues {PY_QUEUE!r} and {NODE_QUEUE!r}")

    # 2. The Python worker. Jobs Node sends are found by polling (pg-boss sends no notification sqla_boss
    #    listens to), hence the short polling interval.
    worker = Worker(engine, schema, polling_interval_seconds=0.5)
    sent_to_node: list[uuid.UUID] = []
    lock = threading.Lock()

    @worker.work(PY_QUEUE, transactional=True)
    def handle(jobs: list[Job], session: Session) -> dict[str, Any]:
        (job,) = jobs
        n = job.data["n"]
        # Sent in the transaction that completes this job: Node gets the job exactly when this one is done.
        reply = Boss(session, schema=schema).send(NODE_QUEUE, {"n": n, "from": "python"})
        assert reply is not None  # None only for a policy or throttling conflict, which this queue cannot have
        with lock:
            sent_to_node.append(reply)
        say(f"handled {PY_QUEUE} job {job.id} from Node: {json.dumps(job.data)}; sent {NODE_QUEUE} job {reply}")
        return {"handledBy": "python", "double": 2 * n}  # the job's output, which Node reads

    worker.start()
    say("worker started")

    # 3. The Node worker, in a process of its own; its lines go straight to our stdout.
    node_env = {
        **os.environ,
        "DATABASE_URL": url.set(drivername="postgresql").render_as_string(hide_password=False),
        "PGBOSS_SCHEMA": schema,
        "JOB_COUNT": str(count),
    }
    process = subprocess.Popen([node, str(script)], cwd=script.parent, env=node_env)
    try:
        wait_for_node(jobs_engine, schema, process, sent_to_node, lock, count)
    finally:
        worker.stop()
        if process.poll() is None:
            process.kill()
        process.wait()
    say("worker stopped")


def wait_for_node(
    jobs_engine: Engine,
    schema: str,
    process: subprocess.Popen[bytes],
    sent_to_node: list[uuid.UUID],
    lock: threading.Lock,
    count: int,
) -> None:
    """Wait until Node completed every job Python sent it, and the Node script exited 0."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    seen: set[uuid.UUID] = set()
    while len(seen) < count or process.poll() is None:
        if time.monotonic() > deadline:
            raise ExampleFailed(f"not done in {TIMEOUT_SECONDS} s: {len(seen)}/{count} {NODE_QUEUE} jobs completed")
        if process.poll() not in (None, 0):
            raise ExampleFailed(f"the Node worker exited with code {process.returncode}")
        with lock:
            pending = [job_id for job_id in sent_to_node if job_id not in seen]
        with Session(jobs_engine) as session:
            boss = Boss(session, schema=schema)
            for job_id in pending:
                job = boss.get_job_by_id(NODE_QUEUE, job_id)
                if job is not None and job.state == JobState.completed:
                    seen.add(job_id)
                    say(f"sees {NODE_QUEUE} job {job_id} completed by Node, output {json.dumps(job.output)}")
        time.sleep(0.1)
    say(f"done: Node completed all {count} jobs Python sent, and Python all {count} jobs Node sent")


def drop(engine: Engine, schema: str) -> None:
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        # sqla_boss's Alembic version table for this schema lives in public (see the README).
        connection.execute(text(f'DROP TABLE IF EXISTS public."{migrations.version_table_name(schema)}"'))


if __name__ == "__main__":
    sys.exit(main())
