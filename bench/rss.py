"""``python -m bench.rss``: a sqla_boss worker in a process of its own, for W8 (the memory of a worker).

Reads a command as JSON on stdin (``url``, ``schema``, ``queue``, ``flavour`` "sync" or "async", ``count``,
``batch``, ``concurrency``, ``seconds``), works the queue until ``count`` jobs were handled (or ``seconds``
passed), stops the worker, and prints one line of JSON: ``jobs``, ``seconds``, and the process's RSS in MiB
after the imports and ``start()`` (``rss_start_mib``), at the end (``rss_end_mib``, VmRSS of
/proc/self/status) and at its peak (``rss_peak_mib``, VmHWM). Linux only, as the numbers are.

Not ``getrusage``'s ``ru_maxrss`` for the peak: Linux carries it over a fork and an exec, so a child started
by the harness would report at least the harness's own RSS at the fork (~100 MiB), whatever it used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from sqla_boss import AsyncWorker, Job, Worker


def rss_mib(field: str = "VmRSS") -> float:
    """The resident set size now (``VmRSS``) or its peak (``VmHWM``), from /proc/self/status (its kB are KiB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def work_sync(command: dict[str, Any]) -> dict[str, float]:
    engine = create_engine(command["url"], pool_size=8)
    worker = Worker(engine, command["schema"], supervise=False, schedule=False)
    done = 0
    lock = threading.Lock()
    finished = threading.Event()

    def handle(jobs: list[Job]) -> None:
        nonlocal done
        with lock:
            done += len(jobs)
            if done >= command["count"]:
                finished.set()

    worker.work(command["queue"], handle, batch_size=command["batch"], concurrency=command["concurrency"])
    worker.start()
    start = rss_mib()
    started = time.perf_counter()
    finished.wait(command["seconds"])
    elapsed = time.perf_counter() - started
    worker.stop()
    engine.dispose()
    return {"jobs": done, "seconds": elapsed, "rss_start_mib": start}


async def work_async(command: dict[str, Any]) -> dict[str, float]:
    engine = create_async_engine(command["url"], pool_size=8)
    worker = AsyncWorker(engine, command["schema"], supervise=False, schedule=False)
    done = 0
    finished = asyncio.Event()

    async def handle(jobs: list[Job]) -> None:
        nonlocal done
        done += len(jobs)
        if done >= command["count"]:
            finished.set()

    worker.work(command["queue"], handle, batch_size=command["batch"], concurrency=command["concurrency"])
    await worker.start()
    start = rss_mib()
    started = time.perf_counter()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(finished.wait(), command["seconds"])
    elapsed = time.perf_counter() - started
    await worker.stop()
    await engine.dispose()
    return {"jobs": done, "seconds": elapsed, "rss_start_mib": start}


def main() -> int:
    command = json.load(sys.stdin)
    result = work_sync(command) if command["flavour"] == "sync" else asyncio.run(work_async(command))
    result |= {"rss_end_mib": rss_mib(), "rss_peak_mib": rss_mib("VmHWM")}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
