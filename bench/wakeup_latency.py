"""Wake-up latency: the time from the commit of a ``send`` to the start of its handler.

Usage: ``python -m bench.wakeup_latency [--jobs N] [--gap SECONDS]`` with ``DATABASE_URL`` set (otherwise
an embedded PostgreSQL is started). Each job is sent in its own committed transaction while the worker
is idle in its 2 s polling wait, so only the NOTIFY wake-up can make it start early. It measures the
threaded ``Worker`` and the ``AsyncWorker`` with ``listen=True``, and the ``Worker`` with ``listen=False``
(pure polling) for comparison, and prints median, p90, p99 and max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from sqla_boss import AsyncWorker, Boss, Job, Worker, embedded, migrations
from sqla_boss.database import DATABASE_URL_ENV, normalize_url

SCHEMA = "bench_wakeup"
QUEUE = "latency"
POLLING_SECONDS = 2.0


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


def prepare(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        connection.execute(text(f"DROP TABLE IF EXISTS public.{migrations.version_table_name(SCHEMA)}"))
    migrations.upgrade(engine, schema=SCHEMA)
    with Session(engine) as session, session.begin():
        Boss(session, SCHEMA).create_queue(QUEUE)


def send_all(engine: Engine, count: int, gap: float, sent: dict[int, float], started: dict[int, float]) -> None:
    for n in range(count):
        time.sleep(gap)
        with Session(engine) as session:
            Boss(session, SCHEMA).send(QUEUE, {"n": n})
            session.commit()
            sent[n] = time.perf_counter()
        deadline = time.monotonic() + 2 * POLLING_SECONDS + 5
        while n not in started and time.monotonic() < deadline:
            time.sleep(0.001)


def summary(label: str, sent: dict[int, float], started: dict[int, float]) -> dict[str, Any]:
    latencies = sorted((started[n] - sent[n]) * 1000 for n in sent if n in started)
    missing = len(sent) - len(latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, round(p * (len(latencies) - 1)))]

    result = {
        "label": label,
        "jobs": len(latencies),
        "median_ms": statistics.median(latencies),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1],
        "missing": missing,
    }
    print(
        f"{label:<34} jobs {result['jobs']:>4}  median {result['median_ms']:7.1f} ms  p90 {result['p90_ms']:7.1f}"
        f"  p99 {result['p99_ms']:7.1f}  max {result['max_ms']:7.1f}  missing {missing}"
    )
    return result


def measure_threaded(url: URL, count: int, gap: float, *, listen: bool) -> dict[str, Any]:
    engine = create_engine(url)
    prepare(engine)
    sent: dict[int, float] = {}
    started: dict[int, float] = {}
    worker = Worker(
        engine, SCHEMA, polling_interval_seconds=POLLING_SECONDS, listen=listen, supervise=False, schedule=False
    )

    @worker.work(QUEUE)
    def handle(jobs: list[Job]) -> None:
        started[jobs[0].data["n"]] = time.perf_counter()

    worker.start()
    try:
        time.sleep(0.5)  # the listener is listening, the loop is waiting
        send_all(engine, count, gap, sent, started)
    finally:
        worker.stop()
        engine.dispose()
    return summary(f"Worker, listen={listen}", sent, started)


def measure_async(url: URL, count: int, gap: float) -> dict[str, Any]:
    engine = create_engine(url)
    prepare(engine)
    sent: dict[int, float] = {}
    started: dict[int, float] = {}
    ready = threading.Event()
    done = threading.Event()

    async def run_worker() -> None:
        async_engine = create_async_engine(url)
        worker = AsyncWorker(
            async_engine, SCHEMA, polling_interval_seconds=POLLING_SECONDS, supervise=False, schedule=False
        )

        @worker.work(QUEUE)
        async def handle(jobs: list[Job]) -> None:
            started[jobs[0].data["n"]] = time.perf_counter()

        await worker.start()
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        await worker.stop()
        await async_engine.dispose()

    thread = threading.Thread(target=asyncio.run, args=(run_worker(),))
    thread.start()
    ready.wait(30)
    time.sleep(0.5)
    try:
        send_all(engine, count, gap, sent, started)
    finally:
        done.set()
        thread.join(30)
        engine.dispose()
    return summary("AsyncWorker, listen=True", sent, started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300, help="jobs per worker (default: %(default)s)")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between sends (default: %(default)s)")
    parser.add_argument("--polling-jobs", type=int, default=20, help="jobs for the polling-only run")
    args = parser.parse_args()
    with database() as url:
        print(f"polling interval {POLLING_SECONDS} s; PostgreSQL at {url.render_as_string(hide_password=True)}")
        measure_threaded(url, args.jobs, args.gap, listen=True)
        measure_async(url, args.jobs, args.gap)
        measure_threaded(url, args.polling_jobs, 0.3, listen=False)
        with create_engine(url).begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            connection.execute(text(f"DROP TABLE IF EXISTS public.{migrations.version_table_name(SCHEMA)}"))


if __name__ == "__main__":
    main()
