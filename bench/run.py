"""``python -m bench``: the same workloads for sqla_boss (sync, async), raw psycopg and pg-boss 10.4.2, side by side.

Every run starts from an emptied queue, is repeated (``--repeat``, 3 by default) and is verified against the
database afterwards, so a fast wrong answer fails the run instead of winning it. Prints a table of medians
with min-max and the ratio sqla_boss / pg-boss, and writes the whole result as JSON (``--json``).

The database is ``$DATABASE_URL``, or an embedded PostgreSQL when it is unset. pg-boss comes from npm (the
lock file of the interop tests), so Node 20 and npm are needed; ``--no-pgboss`` runs without them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.orm import Session

from bench.clients import AsyncClient, PgBossClient, RawClient, SyncClient, Target, Timing, percentile
from sqla_boss import Boss, embedded, migrations
from sqla_boss.database import DATABASE_URL_ENV, normalize_url

SCHEMA = "bench_sqla_boss"
QUEUE = "bench"


@dataclass
class Row:
    workload: str
    client: str
    unit: str
    runs: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


@dataclass
class Bench:
    engine: Engine
    target: Target
    repeat: int
    scale: float
    clients: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    say: Callable[[str], None] = print

    def count(self, full: int) -> int:
        return max(1, int(full * self.scale))

    # ------------------------------------------------------------------------------------------ the queue

    def reset(self, backlog: int = 0) -> None:
        with self.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {SCHEMA}.job, {SCHEMA}.archive"))
        if backlog:
            with Session(self.engine) as session, session.begin():
                boss = Boss(session, SCHEMA)
                for first in range(0, backlog, 5000):
                    boss.insert([{"name": QUEUE, "data": {"n": n}} for n in range(first, min(backlog, first + 5000))])
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text(f"ANALYZE {SCHEMA}.job"))

    def states(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(f"SELECT state::text, count(*) FROM {SCHEMA}.job WHERE name = :q GROUP BY 1"), {"q": QUEUE}
            )
            return {state: count for state, count in rows}

    def set_index(self, present: bool) -> None:
        """Install or remove the opt-in fetch index through its Alembic revision, as a user would, then give
        every client fresh connections: a prepared fetch keeps the plan it was made with (see README)."""
        if present:
            migrations.upgrade(self.engine, schema=SCHEMA, fetch_index=True)
        else:
            migrations.downgrade(self.engine, schema=SCHEMA, fetch_index=True)
        for client in self.clients.values():
            client.reconnect()

    # ----------------------------------------------------------------------------------------- running

    def measure(
        self,
        workload: str,
        client_name: str,
        run: Callable[[Any], Timing],
        verify: Callable[[Timing], None],
        *,
        backlog: int = 0,
        unit: str = "jobs/s",
    ) -> Row | None:
        client = self.clients.get(client_name)
        if client is None:
            return None
        row = Row(workload, client_name, unit)
        for _ in range(self.repeat):
            self.reset(backlog)
            timing = run(client)
            verify(timing)
            if timing.latencies_ms is not None:
                row.runs.append(statistics.median(timing.latencies_ms))
                row.extra.setdefault("p99_ms", []).append(percentile(timing.latencies_ms, 0.99))
            else:
                row.runs.append(timing.jobs / timing.seconds)
        self.rows.append(row)
        extra = f"  p99 {statistics.median(row.extra['p99_ms']):.1f} ms" if "p99_ms" in row.extra else ""
        self.say(
            f"  {workload:<34} {client_name:<18} {row.median:>10.1f} {unit}"
            f"  ({min(row.runs):.1f}-{max(row.runs):.1f}){extra}"
        )
        return row


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"verification failed: {message}")


def run_workloads(bench: Bench, only: set[str] | None, indexes: tuple[bool, ...] = (False, True)) -> None:
    def wanted(name: str) -> bool:
        return only is None or name in only

    python = ["sqla_boss sync", "sqla_boss async"]
    every = [*python, "pg-boss 10.4.2"]

    if wanted("W1"):
        count = bench.count(5000)

        def sent(timing: Timing) -> None:
            expect(bench.states() == {"created": count}, f"{count} created jobs, found {bench.states()}")

        for name in every:
            bench.measure("W1 single sends, own transaction", name, lambda c: c.send(count), sent)
        for name in python:
            bench.measure("W1 single sends, autocommit", name, lambda c: c.send_autocommit(count), sent)
        bench.measure("W1 raw prepared, own transaction", "raw psycopg", lambda c: c.send(count), sent)
        bench.measure("W1 raw prepared, autocommit", "raw psycopg", lambda c: c.send(count, autocommit=True), sent)

    if wanted("W2"):
        count = bench.count(50_000)

        def inserted(timing: Timing) -> None:
            expect(bench.states() == {"created": count}, f"{count} created jobs, found {bench.states()}")

        for name in every:
            bench.measure("W2 batch insert (1,000 per batch)", name, lambda c: c.insert(count, 1000), inserted)

    for index in indexes:
        bench.set_index(index)
        label = " +index" if index else ""
        for consumers, workload in ((1, "W3"), (4, "W4")):
            if not wanted(workload):
                continue
            for backlog in (bench.count(2000), bench.count(20_000)):
                for batch in (1, 100):
                    count = backlog if batch == 100 else min(backlog, bench.count(1000))

                    def drained(timing: Timing, count: int = count, backlog: int = backlog) -> None:
                        states = bench.states()
                        expect(timing.jobs >= count, f"{count} jobs processed, reported {timing.jobs}")
                        expect(states.get("completed", 0) == timing.jobs, f"completed {states} != {timing.jobs}")
                        expect(sum(states.values()) == backlog, f"{backlog} jobs in all, found {states}")

                    title = f"{workload} fetch {batch} x{consumers}, backlog {backlog:,}{label}"
                    for name in every:
                        bench.measure(
                            title,
                            name,
                            lambda c, b=batch, n=count, k=consumers: c.drain(n, b, k),
                            drained,
                            backlog=backlog,
                        )
        if wanted("W5"):
            backlog = bench.count(20_000)
            for batch in (1, 100):
                count = backlog if batch == 100 else min(backlog, bench.count(5000))

                def worked(timing: Timing, backlog: int = backlog) -> None:
                    states = bench.states()
                    expect(timing.jobs > 0, "no job was worked")
                    completed = states.get("completed", 0)
                    expect(completed <= timing.jobs <= completed + 400, f"handled {timing.jobs}, {states}")
                    expect("failed" not in states, f"failures: {states}")
                    expect(sum(states.values()) == backlog, f"{backlog} jobs in all, found {states}")

                title = f"W5 worker, batch {batch}, concurrency 4{label}"
                for name in python:
                    bench.measure(
                        title, name, lambda c, b=batch, n=count: c.work(n, b, 4, 120.0), worked, backlog=backlog
                    )
                if batch == 1:
                    bench.measure(
                        f"W5 pg-boss work() defaults{label}",
                        "pg-boss 10.4.2",
                        lambda c, n=count: c.work(n, 1, 1, 10.0),
                        worked,
                        backlog=backlog,
                    )
    bench.set_index(False)

    if wanted("W6"):
        count = bench.count(200)

        def timed(timing: Timing) -> None:
            expect(timing.jobs > 0.95 * timing_count(timing), "latencies missing")
            expect(bench.states().get("completed", 0) >= timing.jobs - 1, f"not completed: {bench.states()}")

        def timing_count(timing: Timing) -> int:
            return len(timing.latencies_ms or [])

        for name in python:
            bench.measure("W6 commit-to-handler latency", name, lambda c: c.latency(count, 0.02), timed, unit="ms")
        bench.measure(
            "W6 commit-to-handler latency",
            "pg-boss 10.4.2",
            lambda c: c.latency(max(1, count // 10), 0.1),
            timed,
            unit="ms",
        )


def table(rows: list[Row]) -> str:
    """Markdown: one line per workload, the median (min-max) of each client, and sqla_boss / pg-boss."""
    clients = [name for name in ("sqla_boss sync", "sqla_boss async", "raw psycopg", "pg-boss 10.4.2")]
    clients = [name for name in clients if any(row.client == name for row in rows)]
    workloads = list(dict.fromkeys(row.workload for row in rows))
    lines = [
        "| workload | " + " | ".join(clients) + " | sync / pg-boss | async / pg-boss |",
        "|---|" + "---|" * (len(clients) + 2),
    ]
    for workload in workloads:
        found = {row.client: row for row in rows if row.workload == workload}
        cells = []
        for name in clients:
            row = found.get(name)
            if row is None:
                cells.append("")
                continue
            extra = f", p99 {_number(statistics.median(row.extra['p99_ms']))}" if "p99_ms" in row.extra else ""
            cells.append(f"{_number(row.median)} {row.unit} ({_number(min(row.runs))}-{_number(max(row.runs))}{extra})")
        reference = found.get("pg-boss 10.4.2") or _reference(rows, workload)
        ratios = []
        for name in ("sqla_boss sync", "sqla_boss async"):
            row = found.get(name)
            if row is None or reference is None:
                ratios.append("")
            elif row.unit == "ms":
                ratios.append(f"{_ratio(reference.median / row.median)} faster")
            else:
                ratios.append(_ratio(row.median / reference.median))
        lines.append(f"| {workload} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:,.0f}x"


def _number(value: float) -> str:
    return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"


def table_from_json(path: str) -> str:
    """The table of a results file written earlier."""
    with open(path) as handle:
        result = json.load(handle)
    rows = [Row(row["workload"], row["client"], row["unit"], row["runs"], row["extra"]) for row in result["rows"]]
    return table(rows)


def _reference(rows: list[Row], workload: str) -> Row | None:
    """Our worker rows compare with pg-boss's work() row of the same index setting."""
    if workload.startswith("W1 single sends, autocommit"):
        return next(
            (
                row
                for row in rows
                if row.workload == "W1 single sends, own transaction" and row.client == "pg-boss 10.4.2"
            ),
            None,
        )
    if workload.startswith("W5 worker"):
        label = " +index" if workload.endswith("+index") else ""
        for row in rows:
            if row.workload == f"W5 pg-boss work() defaults{label}":
                return row
    return None


def drop_bench_schema(engine: Engine) -> None:
    """Drop the bench's pg-boss schema and the version tables of its revisions."""
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        for version_table in (migrations.version_table_name(SCHEMA), migrations.fetch_index_version_table_name(SCHEMA)):
            connection.execute(text(f"DROP TABLE IF EXISTS public.{version_table}"))


@contextmanager
def database() -> Iterator[URL]:
    configured = os.environ.get(DATABASE_URL_ENV)
    if configured:
        yield normalize_url(configured)
        return
    server = embedded.start()
    try:
        yield server.url
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each workload (default: %(default)s)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every job count (default: 1)")
    parser.add_argument("--only", help="comma-separated workloads, e.g. W1,W3 (default: all)")
    parser.add_argument("--json", default="bench-results.json", help="where to write the results")
    parser.add_argument("--no-pgboss", action="store_true", help="skip pg-boss (no Node needed)")
    parser.add_argument(
        "--index",
        choices=["both", "off", "on"],
        default="both",
        help="run W3-W5 without and/or with the opt-in fetch index (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    only = None if args.only is None else {name.strip().upper() for name in args.only.split(",")}

    with database() as url:
        engine = create_engine(url)
        drop_bench_schema(engine)
        migrations.upgrade(engine, schema=SCHEMA)
        with Session(engine) as session, session.begin():
            Boss(session, SCHEMA).create_queue(QUEUE)
        target = Target(url, SCHEMA, QUEUE)
        clients: dict[str, Any] = {
            "sqla_boss sync": SyncClient(target),
            "sqla_boss async": AsyncClient(target),
            "raw psycopg": RawClient(target),
        }
        if not args.no_pgboss:
            clients["pg-boss 10.4.2"] = PgBossClient(target)
        bench = Bench(engine, target, args.repeat, args.scale, clients)
        with engine.connect() as connection:
            server = connection.execute(text("SHOW server_version")).scalar_one()
        print(f"PostgreSQL {server} at {url.render_as_string(hide_password=True)}; {args.repeat} runs each")
        started = time.perf_counter()
        try:
            indexes = {"both": (False, True), "off": (False,), "on": (True,)}[args.index]
            run_workloads(bench, only, indexes)
        finally:
            for client in clients.values():
                client.close()
            drop_bench_schema(engine)
            engine.dispose()
        print()
        print(table(bench.rows))
        result = {
            "postgresql": server,
            "python": sys.version.split()[0],
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "repeat": args.repeat,
            "scale": args.scale,
            "seconds": round(time.perf_counter() - started, 1),
            "rows": [asdict(row) | {"median": row.median} for row in bench.rows],
        }
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"\nwritten {args.json} ({result['seconds']} s)")
    return 0
