"""The in-place upgrade of a pg-boss 10 schema (version 24) to pg-boss 12.38's (version 46), at scale.

    python -m bench.upgrade --jobs 100000 1000000

For each size: a version-24 schema in a new database, with ``jobs`` jobs spread over 10 queues (80 % queued,
10 % completed, 5 % failed, 5 % active) and as many again archived (completed); then ``sqla-boss migrate
--pgboss 12``'s upgrade in one transaction. It prints, per size, the time of the whole transaction (which is
how long pg-boss's advisory lock, and the ``ACCESS EXCLUSIVE`` locks on the schema's tables, are held: the
rename takes them first) and the time to the first statement that a pg-boss 10 instance would block on.
Set ``DATABASE_URL`` to the server (default: the local one).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from sqla_boss import migrations
from sqla_boss.identifiers import quote_identifier
from sqla_boss.v46 import from_v24

QUEUES = 10


def fill(url: str, jobs: int) -> None:
    engine = create_engine(url, poolclass=NullPool)
    migrations.upgrade(engine)
    with engine.begin() as connection:
        for n in range(QUEUES):
            connection.execute(text("SELECT pgboss.create_queue(:n, '{}'::json)"), {"n": f"q{n}"})
        connection.execute(
            text(
                """
                INSERT INTO pgboss.job (name, data, state, started_on, completed_on, output)
                SELECT 'q' || (g % :queues), jsonb_build_object('n', g, 'text', repeat('x', 40)),
                       s.state::pgboss.job_state,
                       CASE WHEN s.state <> 'created' THEN now() END,
                       CASE WHEN s.state IN ('completed', 'failed') THEN now() END,
                       CASE WHEN s.state = 'completed' THEN '{"ok": true}'::jsonb END
                FROM generate_series(1, :jobs) g,
                     LATERAL (SELECT CASE WHEN g % 20 < 16 THEN 'created' WHEN g % 20 < 18 THEN 'completed'
                                          WHEN g % 20 = 18 THEN 'failed' ELSE 'active' END AS state) s
                """
            ),
            {"queues": QUEUES, "jobs": jobs},
        )
        connection.execute(
            text(
                """
                INSERT INTO pgboss.archive (id, name, priority, data, state, retry_limit, retry_count, retry_delay,
                                            retry_backoff, start_after, expire_in, created_on, completed_on,
                                            keep_until, output, archived_on)
                SELECT gen_random_uuid(), 'q' || (g % :queues), 0, jsonb_build_object('n', g), 'completed', 2, 0, 0,
                       false, now(), interval '15 minutes', now(), now(), now() + interval '14 days',
                       '{"ok": true}', now()
                FROM generate_series(1, :jobs) g
                """
            ),
            {"queues": QUEUES, "jobs": jobs},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def measure(url: str) -> dict[str, float | int | str]:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        transaction = connection.begin()
        started = time.perf_counter()
        carried = from_v24.upgrade(connection, "pgboss")
        upgraded = time.perf_counter()
        transaction.commit()
        committed = time.perf_counter()
    engine.dispose()
    return {
        "jobs_carried": carried.jobs,
        "archived_carried": carried.archived,
        "upgrade_seconds": round(upgraded - started, 2),
        "lock_held_seconds": round(committed - started, 2),
        "what": carried.describe(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    server = server.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    results = []
    for jobs in args.jobs:
        name = f"sqla_boss_upgrade_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {quote_identifier(name)}"))
        url = server.rsplit("/", 1)[0] + f"/{name}"
        try:
            fill(url, jobs)
            result = {"jobs": jobs, **measure(url)}
            print(json.dumps(result), flush=True)
            results.append(result)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)"))
    admin.dispose()


if __name__ == "__main__":
    main()
