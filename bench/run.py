"""``python -m bench``: the same workloads for sqla_boss (sync, async), raw psycopg and pg-boss 10.4.2, side by side.

Every run starts from an emptied queue, is repeated (``--repeat``, 3 by default) and is verified against the
database afterwards, so a fast wrong answer fails the run instead of winning it. Prints a table of medians
with min-max and the ratio sqla_boss / pg-boss, and writes the whole result as JSON (``--json``).

The database is ``$DATABASE_URL``, or an embedded PostgreSQL when it is unset. pg-boss comes from npm (the
lock file of the interop tests), so Node 20 and npm are needed; ``--no-pgboss`` runs without them. The Python
peers, procrastinate and pgqueuer (:mod:`bench.peers`), run when they are installed (the ``bench`` extra);
``--no-peers`` runs without them.
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

from bench.clients import (
    AsyncClient,
    PgBossClient,
    RawClient,
    SyncClient,
    Target,
    Timing,
    effects_table,
    percentile,
    rss_worker,
)
from bench.peers import peer_clients, peer_versions
from sqla_boss import Boss, embedded, migrations
from sqla_boss.database import DATABASE_URL_ENV, normalize_url

SCHEMA = "bench_sqla_boss"
QUEUE = "bench"
PGBOSS = "pg-boss 10.4.2"
PGBOSS12 = "pg-boss 12.38.0"
PGBOSS_COLUMNS = {10: PGBOSS, 12: PGBOSS12}
"""The pg-boss of ``--pgboss 10`` (schema version 24, every workload) and ``--pgboss 12`` (version 46: the
repository's workloads W1-W4 and W7, sqla_boss's workers running version 24 only)."""
PYTHON = ("sqla_boss sync", "sqla_boss async")
COLUMNS = (*PYTHON, "raw psycopg", PGBOSS, PGBOSS12)
"""The table's first columns, in this order; the peers' columns (named with their versions) follow."""
TUNED = {"batch": 100, "registrations": 4, "polling_interval": 0.5}
"""pg-boss's tuned ``work()`` (W5, W8): batchSize 100, pollingIntervalSeconds 0.5, four ``work()`` calls."""


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
    pgboss: int = 10
    """The pg-boss major release, and so the schema version, of this run."""

    @property
    def pgboss_name(self) -> str:
        return PGBOSS_COLUMNS[self.pgboss]

    def count(self, full: int) -> int:
        return max(1, int(full * self.scale))

    # ------------------------------------------------------------------------------------------ the queue

    def reset(self, backlog: int = 0) -> None:
        with self.engine.begin() as connection:
            archive = f", {SCHEMA}.archive" if self.pgboss == 10 else ""
            connection.execute(text(f"TRUNCATE {SCHEMA}.job{archive}, {SCHEMA}.bench_effects"))
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

    def effects(self) -> int:
        """The rows transactional handlers wrote (W5 transactional)."""
        with self.engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {SCHEMA}.bench_effects")).scalar_one())

    def peers(self) -> list[str]:
        """The names of the peer clients present (procrastinate, pgqueuer, with their versions)."""
        return [name for name in self.clients if name not in COLUMNS]

    def set_index(self, present: bool) -> None:
        """Install or remove the opt-in fetch index through its Alembic revision, as a user would, then give
        every client fresh connections: a prepared fetch keeps the plan it was made with (see README). Version
        46 has no such index (its own indexes serve the fetch): nothing to do there."""
        if self.pgboss == 12:
            return
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
        reset: Callable[[Any], None] | None = None,
        value: Callable[[Timing], float] | None = None,
        repeat: int | None = None,
        note: str | None = None,
    ) -> Row | None:
        """Run a workload ``repeat`` times (``--repeat`` by default), each from a reset queue (``reset(client)``
        for a client with tables of its own, e.g. a peer), verify each run, and keep the row: of jobs/s, of the
        median latency when the run has latencies, or of ``value(timing)``. ``note`` goes into the row's extra."""
        client = self.clients.get(client_name)
        if client is None:
            return None
        row = Row(workload, client_name, unit)
        if note:
            row.extra["note"] = note
        for _ in range(self.repeat if repeat is None else repeat):
            if reset is None:
                self.reset(backlog)
            else:
                reset(client)
            timing = run(client)
            verify(timing)
            if value is not None:
                row.runs.append(value(timing))
            elif timing.latencies_ms is not None:
                row.runs.append(statistics.median(timing.latencies_ms))
                row.extra.setdefault("p99_ms", []).append(percentile(timing.latencies_ms, 0.99))
            else:
                row.runs.append(timing.jobs / timing.seconds)
            row.extra.setdefault("jobs", []).append(timing.jobs)
            for key, number in timing.extra.items():
                row.extra.setdefault(key, []).append(number)
        self.rows.append(row)
        self.say(
            f"  {workload:<52} {client_name:<20} {row.median:>10.1f} {unit}"
            f"  ({min(row.runs):.1f}-{max(row.runs):.1f}){_extras(row, _plain)}"
        )
        return row


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"verification failed: {message}")


def run_workloads(bench: Bench, only: set[str] | None, indexes: tuple[bool, ...] = (False, True)) -> None:
    def wanted(name: str) -> bool:
        return only is None or name in only

    python = list(PYTHON)
    every = [*python, bench.pgboss_name]
    if bench.pgboss == 12:  # the repository's workloads alone, without the version-24 fetch index
        only = {"W1", "W2", "W3", "W4", "W7"} & (only or {"W1", "W2", "W3", "W4", "W7"})
        indexes = (False,)
    peers = bench.peers()

    if wanted("W1"):
        count = bench.count(5000)

        def sent(timing: Timing) -> None:
            expect(bench.states() == {"created": count}, f"{count} created jobs, found {bench.states()}")

        for name in every:
            bench.measure("W1 single sends, own transaction", name, lambda c: c.send(count), sent)
        for name in python:
            bench.measure("W1 single sends, autocommit", name, lambda c: c.send_autocommit(count), sent)
        if bench.pgboss == 10:  # the raw client's statement is version 24's
            bench.measure("W1 raw prepared, own transaction", "raw psycopg", lambda c: c.send(count), sent)
            bench.measure("W1 raw prepared, autocommit", "raw psycopg", lambda c: c.send(count, autocommit=True), sent)
        for name in peers:
            peer = bench.clients[name]
            bench.measure(
                f"W1 single sends, {peer.send_mode}",
                name,
                lambda c: c.send(count),
                _peer_queued(peer, count),
                reset=lambda c: c.reset(),
                note=peer.send_note,
            )

    if wanted("W2"):
        count = bench.count(50_000)

        def inserted(timing: Timing) -> None:
            expect(bench.states() == {"created": count}, f"{count} created jobs, found {bench.states()}")

        for name in every:
            bench.measure("W2 batch insert (1,000 per batch)", name, lambda c: c.insert(count, 1000), inserted)
        for name in peers:
            bench.measure(
                "W2 batch insert (1,000 per batch)",
                name,
                lambda c: c.insert(count, 1000),
                _peer_queued(bench.clients[name], count),
                reset=lambda c: c.reset(),
                note=bench.clients[name].insert_note,
            )

    def drained(count: int, backlog: int) -> Callable[[Timing], None]:
        def verify(timing: Timing) -> None:
            states = bench.states()
            expect(timing.jobs >= count, f"{count} jobs processed, reported {timing.jobs}")
            expect(states.get("completed", 0) == timing.jobs, f"completed {states} != {timing.jobs}")
            expect(sum(states.values()) == backlog, f"{backlog} jobs in all, found {states}")

        return verify

    def worked(backlog: int, *, everything: bool = False, effects: bool = False) -> Callable[[Timing], None]:
        """A worker's run: what it handled is completed (but for the batches in flight when it stopped), nothing
        failed; ``everything``: it handled the whole backlog; ``effects``: one effect row per completed job."""

        def verify(timing: Timing) -> None:
            states = bench.states()
            expect(timing.jobs > 0, "no job was worked")
            expect(not everything or timing.jobs >= backlog, f"{backlog} jobs to handle, handled {timing.jobs}")
            completed = states.get("completed", 0)
            expect(completed <= timing.jobs <= completed + 400, f"handled {timing.jobs}, {states}")
            expect("failed" not in states, f"failures: {states}")
            expect(sum(states.values()) == backlog, f"{backlog} jobs in all, found {states}")
            if effects:
                written = bench.effects()
                expect(written == completed, f"{written} effect rows for {completed} completed jobs")

        return verify

    for index in indexes:
        bench.set_index(index)
        label = " +index" if index else ""
        for consumers, workload in ((1, "W3"), (4, "W4")):
            if not wanted(workload):
                continue
            for backlog in (bench.count(2000), bench.count(20_000)):
                for batch in (1, 100):
                    count = backlog if batch == 100 else min(backlog, bench.count(1000))
                    base = f"{workload} fetch {batch} x{consumers}, backlog {backlog:,}"
                    title = f"{base}{label}"
                    for name in every:
                        bench.measure(
                            title,
                            name,
                            lambda c, b=batch, n=count, k=consumers: c.drain(n, b, k),
                            drained(count, backlog),
                            backlog=backlog,
                        )
                    for name in python:  # fetch and complete each its own statement, as pg-boss's two calls
                        bench.measure(
                            f"{base}, autocommit{label}",
                            name,
                            lambda c, b=batch, n=count, k=consumers: c.drain(n, b, k, autocommit=True),
                            drained(count, backlog),
                            backlog=backlog,
                        )
        if wanted("W5"):
            backlog = bench.count(20_000)
            for batch in (1, 100):
                count = backlog if batch == 100 else min(backlog, bench.count(5000))
                title = f"W5 worker, batch {batch}, concurrency 4{label}"
                for name in python:
                    bench.measure(
                        title,
                        name,
                        lambda c, b=batch, n=count: c.work(n, b, 4, 120.0),
                        worked(backlog),
                        backlog=backlog,
                    )
                if batch == 1:
                    bench.measure(
                        f"W5 pg-boss work() defaults{label}",
                        PGBOSS,
                        lambda c, n=count: c.work(n, 1, 1, 10.0),
                        worked(backlog),
                        backlog=backlog,
                    )
                else:
                    bench.measure(
                        f"W5 pg-boss work() tuned{label}",
                        PGBOSS,
                        lambda c, n=count: c.work_tuned(n, seconds=120.0, **TUNED),
                        worked(backlog),
                        backlog=backlog,
                        note="batchSize 100, pollingIntervalSeconds 0.5, 4 work() calls on the queue",
                    )
            for name in python:
                bench.measure(
                    f"W5 transactional worker, batch 100, concurrency 4{label}",
                    name,
                    lambda c, n=backlog: c.work(n, 100, 4, 120.0, transactional=True),
                    worked(backlog, effects=True),
                    backlog=backlog,
                    note="the handler inserts a row per job into bench_effects, in the transaction that completes them",
                )
            if index == indexes[0]:  # the index is on sqla_boss's table: the peers run once, under no label
                for name in peers:
                    peer = bench.clients[name]
                    bench.measure(
                        f"W5 worker, batch {peer.work_batch}, concurrency 4",
                        name,
                        lambda c, n=backlog: c.work(n, 300.0),
                        _peer_worked(peer, backlog),
                        reset=lambda c, n=backlog: c.reset(n),
                        note=peer.work_note,
                    )
        if wanted("W7"):
            # Fetch cost as the backlog grows: one consumer, fetch 1 + complete, a fixed number of fetches.
            # Without the index each fetch sorts the backlog (~0.2 s at 200,000), hence fewer fetches.
            fetches = bench.count(500 if index else 50)
            for backlog in (bench.count(2000), bench.count(20_000), bench.count(200_000)):
                count = min(backlog, fetches)
                title = f"W7 fetch 1 x1, {count:,} fetches, backlog {backlog:,}{label}"
                for name in every:
                    bench.measure(
                        title, name, lambda c, n=count: c.drain(n, 1, 1), drained(count, backlog), backlog=backlog
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
            PGBOSS,
            lambda c: c.latency(max(1, count // 10), 0.1),
            timed,
            unit="ms",
        )

    if wanted("W8"):
        # The memory of a worker process that drained a backlog with batches of 100: its RSS at the end, and its
        # peak. One run each (the numbers hardly move, and pg-boss's tuned work() takes ~2 minutes for 100,000).
        backlog = bench.count(100_000)
        title = f"W8 worker RSS after draining {backlog:,} jobs"
        for name, flavour in zip(python, ("sync", "async"), strict=True):
            bench.measure(
                title,
                name,
                lambda c, f=flavour: rss_worker(bench.target, f, backlog, 100, 4, 600.0),
                worked(backlog, everything=True),
                backlog=backlog,
                unit="MiB",
                value=lambda timing: timing.extra["rss_end_mib"],
                repeat=1,
                note="a Worker in a process of its own (bench.rss), batch 100, concurrency 4",
            )
        bench.measure(
            title,
            PGBOSS,
            lambda c: c.work_tuned(backlog, seconds=600.0, rss=True, **TUNED),
            worked(backlog, everything=True),
            backlog=backlog,
            unit="MiB",
            value=lambda timing: timing.extra["rss_end_mib"],
            repeat=1,
            note="work() tuned as in W5, in the Node process of pgboss_bench.mjs",
        )


def _peer_queued(peer: Any, count: int) -> Callable[[Timing], None]:
    def verify(timing: Timing) -> None:
        states = peer.states()
        expect(states == {peer.queued_state: count}, f"{count} {peer.queued_state} jobs, found {states}")

    return verify


def _peer_worked(peer: Any, backlog: int) -> Callable[[Timing], None]:
    def verify(timing: Timing) -> None:
        finished, waiting = peer.finished(), peer.waiting()
        expect(timing.jobs == backlog, f"{backlog} jobs to handle, handled {timing.jobs}")
        expect(finished == backlog and waiting == 0, f"{finished} finished, {waiting} not: {peer.states()}")

    return verify


def table(rows: list[Row]) -> str:
    """Markdown: one line per workload, the median (min-max) of each client, and sqla_boss / pg-boss.

    The columns: ours, raw psycopg, pg-boss, then each peer present (procrastinate, pgqueuer). In the ratio
    columns higher is better: for "ms" (latency) and "MiB" (memory) rows they say how many times faster or
    smaller ours is."""
    present = list(dict.fromkeys(row.client for row in rows))
    clients = [name for name in COLUMNS if name in present] + [name for name in present if name not in COLUMNS]
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
            span = f"{_number(min(row.runs))}-{_number(max(row.runs))}"
            cells.append(f"{_number(row.median)} {row.unit} ({span}{_extras(row, _number)})")
        reference = found.get(PGBOSS) or found.get(PGBOSS12) or _reference(rows, workload)
        ratios = []
        for name in PYTHON:
            row = found.get(name)
            if row is None or reference is None:
                ratios.append("")
            elif row.unit == "ms":
                ratios.append(f"{_ratio(reference.median / row.median)} faster")
            elif row.unit == "MiB":
                ratios.append(f"{_ratio(reference.median / row.median)} smaller")
            else:
                ratios.append(_ratio(row.median / reference.median))
        lines.append(f"| {workload} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def _extras(row: Row, number: Callable[[float], str]) -> str:
    """What a cell shows after the min-max: the p99 of a latency row, the peak of a memory row."""
    shown = (("p99_ms", "p99"), ("rss_peak_mib", "peak"))
    return "".join(f", {name} {number(statistics.median(row.extra[key]))}" for key, name in shown if key in row.extra)


def _plain(value: float) -> str:
    return f"{value:.1f}"


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
    """Our worker rows compare with pg-boss's work() row of the same index setting: those fetching 100 jobs at
    a time (the transactional worker's too) with work() tuned (batchSize 100), the others with its defaults."""
    if workload.startswith(("W3", "W4")) and ", autocommit" in workload:
        return next(
            (
                row
                for row in rows
                if row.workload == workload.replace(", autocommit", "") and row.client in (PGBOSS, PGBOSS12)
            ),
            None,
        )
    if workload.startswith("W1 single sends, autocommit"):
        return next(
            (
                row
                for row in rows
                if row.workload == "W1 single sends, own transaction" and row.client in (PGBOSS, PGBOSS12)
            ),
            None,
        )
    if workload.startswith(("W5 worker", "W5 transactional worker")):
        label = " +index" if workload.endswith("+index") else ""
        flavour = "tuned" if "batch 100" in workload else "defaults"
        for row in rows:
            if row.workload == f"W5 pg-boss work() {flavour}{label}":
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
        "--pgboss",
        type=int,
        choices=[10, 12],
        default=10,
        help="10: schema version 24 beside pg-boss 10.4.2 (default); 12: version 46 beside pg-boss 12.38.0, "
        "the repository's workloads (W1-W4, W7)",
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="skip the Python peers, procrastinate and pgqueuer (the bench extra)"
    )
    parser.add_argument(
        "--index",
        choices=["both", "off", "on"],
        default="both",
        help="run W3-W5 and W7 without and/or with the opt-in fetch index (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    only = None if args.only is None else {name.strip().upper() for name in args.only.split(",")}

    with database() as url:
        engine = create_engine(url)
        drop_bench_schema(engine)
        migrations.upgrade(engine, schema=SCHEMA, pgboss=args.pgboss)
        with Session(engine) as session, session.begin():
            Boss(session, SCHEMA).create_queue(QUEUE)
        effects_table(SCHEMA).create(engine)
        target = Target(url, SCHEMA, QUEUE)
        clients: dict[str, Any] = {
            "sqla_boss sync": SyncClient(target),
            "sqla_boss async": AsyncClient(target),
        }
        if args.pgboss == 10:
            clients["raw psycopg"] = RawClient(target)
        if not args.no_pgboss:
            clients[PGBOSS_COLUMNS[args.pgboss]] = PgBossClient(target, args.pgboss)
        if not args.no_peers and args.pgboss == 10:
            clients |= peer_clients(target)
        bench = Bench(engine, target, args.repeat, args.scale, clients, pgboss=args.pgboss)
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
            "pgboss": PGBOSS_COLUMNS[args.pgboss],
            "peers": peer_versions() if bench.peers() else {},
            "seconds": round(time.perf_counter() - started, 1),
            "rows": [asdict(row) | {"median": row.median} for row in bench.rows],
        }
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"\nwritten {args.json} ({result['seconds']} s)")
    return 0
