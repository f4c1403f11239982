"""A soak run: minutes of mixed load on one ``sqla-boss work`` process, watching its memory.

**The load.** A sender thread in the test sends continuously, one transaction every ``PACE_SECONDS``, to a
schema of its own (``zz_soak_<uuid8>``, dropped afterwards): plain jobs, jobs held back by ``start_after``,
jobs that fail once and then succeed on their retry, jobs that always fail and end ``failed`` by their retry
rules, throttled sends (``send_throttled``: most are refused by their taken slot), jobs on a ``singleton``-policy
queue keyed by four singleton keys, batches of ten through ``insert``, and jobs for a transactional handler.
A cron schedule fires every minute (``* * * * *``).

**The worker.** ``sqla-boss work soak_app:make`` runs a module written to ``tmp_path``, as a user runs it: one
``Worker`` with supervision and cron on, maintenance every second, cron evaluated every second, and the
shortest archive delays cron allows (60 s), with archived jobs dropped 30 s later, so expiry, archiving and
dropping all run during a long enough soak. Its log goes to a file (a pipe nobody reads would fill and block it).
Handlers record each run as a row of ``executions(job_id, attempt)``, UNIQUE per attempt, with whether the
attempt was planned to succeed and the time of the run; a pair recorded twice goes to ``duplicates``, and two
jobs of one singleton key in handlers at once go to ``violations``. Archived and dropped jobs leave the job
table, so the executions are the record of what happened.

**The checks.** Once a second the test reads the worker's ``VmRSS`` and ``VmHWM`` from ``/proc/<pid>/status``
(the only fixed waits here are that sampling and the sender's pace). After ``SQLA_BOSS_SOAK_SECONDS`` (default
180) the sender stops and the queues drain. Then: the worker is still alive and stops cleanly on SIGTERM; it
logged no error; jobs were handled in every third of the run; no attempt ran twice and no singleton key ran
twice at once; every job sent ended as planned (succeeded, or failed after exactly its retries); cron fired once
per minute the worker ran; archiving and dropping ran (when the run is long enough for them); and memory does not
keep growing: the peak RSS of the last window is within a bound of the peak of the first window after warm-up
(see ``memory_bound``). A one-line ``[soak]`` summary is printed for ``-s`` and the CI log.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, text
from sqlalchemy.orm import Session
from support import drop_schema, query, wait_until

from sqla_boss import Boss, migrations

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DURATION_SECONDS = float(os.environ.get("SQLA_BOSS_SOAK_SECONDS", "180"))
PACE_SECONDS = 0.1
"""The sender's pause between transactions: about 30 jobs a second, which the worker keeps up with on a small
machine, so the queues stay short and the run measures the worker, not a growing backlog."""
DRAIN_SECONDS = 90.0
MIB = 1024 * 1024
WORK_QUEUES = ("plain", "single", "bulk", "booked", "cron_tick")
SINGLETON_KEYS = 4
ALWAYS = 99
"""``data.fail`` of a job that fails on every attempt."""
ALWAYS_RETRY_LIMIT = 1

WORKER_MODULE = """
    from __future__ import annotations

    import collections
    import os
    import threading
    import time

    from sqlalchemy import create_engine, text

    from sqla_boss import Worker


    def make(url, schema):
        engine = create_engine(url, connect_args={"application_name": os.environ.get("APP", "soak")})
        side = create_engine(url)  # the recording connections, outside the worker's transactions
        worker = Worker(
            engine,
            schema,
            polling_interval_seconds=0.5,
            supervise=True,
            schedule=True,
            maintenance_interval_seconds=1,
            cron_monitor_interval_seconds=1,
            cron_worker_interval_seconds=1,
            archive_completed_after_seconds=60,  # the shortest delays with which pg-boss (and we) run cron
            archive_failed_after_seconds=60,
            delete_after_seconds=30,
        )
        insert = text(
            f"INSERT INTO {schema}.executions (job_id, attempt, queue, ok) VALUES (:id, :attempt, :queue, :ok) "
            "ON CONFLICT (job_id, attempt) DO NOTHING RETURNING job_id"
        )
        running = collections.Counter()
        lock = threading.Lock()

        def note(table, job):
            with side.begin() as connection:
                connection.execute(
                    text(f"INSERT INTO {schema}.{table} (job_id, attempt) VALUES (:id, :attempt)"),
                    {"id": job.id, "attempt": job.retry_count},
                )

        def run(job, queue, connection=None):
            ok = job.retry_count >= (job.data or {}).get("fail", 0)
            values = {"id": job.id, "attempt": job.retry_count, "queue": queue, "ok": ok}
            if connection is None:
                with side.begin() as own:
                    inserted = own.execute(insert, values).first()
            else:
                inserted = connection.execute(insert, values).first()
            if inserted is None:
                note("duplicates", job)
            time.sleep(0.005)
            if not ok:
                raise RuntimeError(f"planned failure of attempt {job.retry_count}")

        @worker.work("plain", concurrency=2)
        def plain(jobs):
            run(jobs[0], "plain")
            return {"attempt": jobs[0].retry_count}

        @worker.work("single", concurrency=2)
        def single(jobs):
            (job,) = jobs
            with lock:
                running[job.singleton_key] += 1
                clash = running[job.singleton_key] > 1
            try:
                if clash:
                    note("violations", job)
                run(job, "single")
            finally:
                with lock:
                    running[job.singleton_key] -= 1

        @worker.work("bulk", batch_size=10)
        def bulk(jobs):
            for job in jobs:
                run(job, "bulk")

        @worker.work("booked", transactional=True)
        def booked(jobs, session):
            run(jobs[0], "booked", session)

        @worker.work("cron_tick")
        def cron_tick(jobs):
            (job,) = jobs
            run(job, "cron_tick")
            with side.begin() as connection:
                connection.execute(
                    text(f"INSERT INTO {schema}.cron_fires (job_id, created_on) VALUES (:id, :created_on)"),
                    {"id": job.id, "created_on": job.created_on},
                )

        return worker
"""

# ------------------------------------------------------------------------------------------------- helpers


def memory(pid: int) -> tuple[int, int]:
    """``VmRSS`` and ``VmHWM`` of ``pid``, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024  # reported in kB
    return found["VmRSS"], found["VmHWM"]


def memory_bound(first_peak: int) -> int:
    """The highest peak RSS the last window may reach: 25 % and 10 MiB over the first window's peak.

    After warm-up a healthy worker's RSS can still creep up by a bounded amount: SQLAlchemy's compiled-statement
    cache (at most 500 entries), psycopg's prepared statements (at most 100 per connection), the pool reaching
    its full size, and the allocator's arenas settling. A few MiB, once (measured: under 1 MiB). A leak grows
    with the jobs handled instead: over a 3-minute run of about 5,500 jobs this bound (about 28 MiB over a worker
    of 74 MiB) catches a leak of some 5 KiB per job, and any leak that doubles the worker.
    """
    return int(first_peak * 1.25 + 10 * MIB)


@dataclass
class Sent:
    """What the sender got back: the ids by plan, and the throttled sends its slot refused."""

    ids: dict[str, list[uuid.UUID]] = field(default_factory=lambda: {"ok": [], "fail_once": [], "always": []})
    refused: int = 0
    transactions: int = 0
    error: BaseException | None = None

    def count(self) -> int:
        return sum(len(ids) for ids in self.ids.values())


def send_round(boss: Boss, index: int, sent: Sent) -> None:
    """One transaction's worth of mixed jobs."""
    ok = sent.ids["ok"]
    ok.append(_sent(boss.send("plain", {"n": index})))
    ok.append(_sent(boss.send("single", {"n": index}, singleton_key=f"k{index % SINGLETON_KEYS}")))
    if index % 3 == 0:
        ok.append(_sent(boss.send("plain", {"n": index}, start_after=dt.timedelta(seconds=1 + index % 3))))
    if index % 4 == 0:
        ok.append(_sent(boss.send("booked", {"n": index})))
    if index % 5 == 0:
        throttled = boss.send_throttled("plain", {"n": index}, seconds=2, key="throttled")
        if throttled is None:
            sent.refused += 1
        else:
            ok.append(throttled)
    if index % 7 == 0:
        sent.ids["fail_once"].append(_sent(boss.send("plain", {"fail": 1}, retry_limit=2, retry_delay=1)))
    if index % 11 == 0:
        always = boss.send("plain", {"fail": ALWAYS}, retry_limit=ALWAYS_RETRY_LIMIT, retry_delay=0)
        sent.ids["always"].append(_sent(always))
    if index % 10 == 0:
        ok += boss.insert([{"name": "bulk", "data": {"n": index, "i": i}} for i in range(10)])


def _sent(job_id: uuid.UUID | None) -> uuid.UUID:
    assert job_id is not None
    return job_id


def sender(engine: Engine, schema: str, sent: Sent, stop: threading.Event) -> None:
    try:
        index = 0
        while not stop.is_set():
            index += 1
            with Session(engine) as session, session.begin():
                send_round(Boss(session, schema), index, sent)
            sent.transactions += 1
            stop.wait(PACE_SECONDS)
    except BaseException as error:
        sent.error = error


def pending(engine: Engine, schema: str) -> int:
    names = ", ".join(f"'{name}'" for name in (*WORK_QUEUES, "__pgboss__send-it"))
    rows = query(engine, f"SELECT count(*) FROM {schema}.job WHERE name IN ({names}) AND state < 'completed'")
    return int(rows[0][0])


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def soak_schema(engine: Engine) -> Iterator[str]:
    schema = f"zz_soak_{uuid.uuid4().hex[:8]}"
    try:
        migrations.upgrade(engine, schema=schema)
        with Session(engine) as session, session.begin():
            boss = Boss(session, schema)
            for name in WORK_QUEUES:
                boss.create_queue(name, policy="singleton" if name == "single" else "standard")
            boss.schedule("cron_tick", "* * * * *", {"cron": True})
            session.execute(
                text(
                    f"CREATE TABLE {schema}.executions (job_id uuid NOT NULL, attempt int NOT NULL, queue text, "
                    "ok bool NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(), UNIQUE (job_id, attempt))"
                )
            )
            for table in ("duplicates", "violations"):
                session.execute(text(f"CREATE TABLE {schema}.{table} (job_id uuid, attempt int)"))
            session.execute(text(f"CREATE TABLE {schema}.cron_fires (job_id uuid, created_on timestamptz)"))
        yield schema
    finally:
        drop_schema(engine, schema)


@pytest.fixture
def worker_process(tmp_path: Path, database_url: URL, soak_schema: str) -> Iterator[subprocess.Popen[str]]:
    (tmp_path / "soak_app.py").write_text(textwrap.dedent(WORKER_MODULE))
    environment = {
        **os.environ,
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "APP": f"soak_{uuid.uuid4().hex[:8]}",
    }
    command = [sys.executable, "-c", "from sqla_boss.cli import main; raise SystemExit(main())"]
    with (tmp_path / "worker.log").open("w") as log:
        process = subprocess.Popen(
            [*command, "work", "soak_app:make", "--schema", soak_schema],
            cwd=tmp_path,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


# ----------------------------------------------------------------------------------------------------- test


def test_a_worker_under_mixed_load_keeps_going_and_its_memory_stays_flat(
    engine: Engine, soak_schema: str, worker_process: subprocess.Popen[str], tmp_path: Path
) -> None:
    schema = soak_schema
    process = worker_process
    log = tmp_path / "worker.log"
    wait_until(lambda: "started on schema" in log.read_text() or process.poll() is not None, 30, "start")
    assert process.poll() is None, log.read_text()

    sent, stop = Sent(), threading.Event()
    worker_started = dt.datetime.now(dt.timezone.utc)
    (db_start,) = query(engine, "SELECT clock_timestamp()")[0]
    thread = threading.Thread(target=sender, args=(engine, schema, sent, stop), name="soak-sender", daemon=True)
    samples: list[tuple[float, int, int]] = []  # (seconds into the run, VmRSS, VmHWM)
    started = time.monotonic()
    thread.start()
    try:
        while (elapsed := time.monotonic() - started) < DURATION_SECONDS:
            assert process.poll() is None, f"the worker died after {elapsed:.0f} s:\n{log.read_text()[-5000:]}"
            assert sent.error is None, repr(sent.error)
            samples.append((elapsed, *memory(process.pid)))
            time.sleep(1.0)  # the sampling interval
    finally:
        stop.set()
        thread.join(30)
    assert sent.error is None, repr(sent.error)
    sending = time.monotonic() - started
    wait_until(lambda: pending(engine, schema) == 0, DRAIN_SECONDS, "the queues drained")
    drained = time.monotonic() - started - sending
    assert process.poll() is None, f"the worker died while draining:\n{log.read_text()[-5000:]}"
    rss_end, hwm_end = memory(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log.read_text()[-5000:]
    worker_stopped = dt.datetime.now(dt.timezone.utc)
    output = log.read_text()

    # The worker logged no error in all that time (planned failures are INFO records).
    errors = [line for line in output.splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert errors == [], "\n".join(errors[:20])
    assert "sqla-boss: stopped" in output

    # No attempt twice, no singleton key twice at once.
    assert query(engine, f"SELECT * FROM {schema}.duplicates") == []
    assert query(engine, f"SELECT * FROM {schema}.violations") == []

    # Every job ended as planned: the executions outlive the archive and its drop.
    runs: dict[uuid.UUID, list[tuple[int, bool]]] = {}
    for job_id, attempt, ok in query(engine, f"SELECT job_id, attempt, ok FROM {schema}.executions ORDER BY attempt"):
        runs.setdefault(job_id, []).append((attempt, ok))
    for job_id in sent.ids["ok"]:
        assert runs.get(job_id) == [(0, True)], (job_id, runs.get(job_id))
    for job_id in sent.ids["fail_once"]:
        assert runs.get(job_id) == [(0, False), (1, True)], (job_id, runs.get(job_id))
    for job_id in sent.ids["always"]:
        assert runs.get(job_id) == [(n, False) for n in range(ALWAYS_RETRY_LIMIT + 1)], (job_id, runs.get(job_id))
    states = dict(
        query(
            engine,
            f"SELECT id, state::text FROM {schema}.job UNION ALL SELECT id, state::text FROM {schema}.archive",
        )
    )
    for plan, ids in sent.ids.items():
        wanted = "failed" if plan == "always" else "completed"
        wrong = [(job_id, states[job_id]) for job_id in ids if job_id in states and states[job_id] != wanted]
        assert wrong == [], wrong[:10]

    # Jobs flowed throughout: handled in every third of the sending time.
    by_third = dict(
        query(
            engine,
            f"SELECT floor(extract(epoch FROM at - :start) / :third)::int, count(*) FROM {schema}.executions "
            "WHERE at >= :start AND at < :start + :sending * interval '1 second' GROUP BY 1",
            start=db_start,
            third=sending / 3,
            sending=sending,
        )
    )
    thirds = [int(by_third.get(k, 0)) for k in range(3)]
    assert all(count > 0 for count in thirds), thirds

    # Cron fired once per minute the worker ran through (the last one may not have come yet at the stop).
    fires = [row[0] for row in query(engine, f"SELECT created_on FROM {schema}.cron_fires ORDER BY created_on")]
    minutes = {fire.replace(second=0, microsecond=0) for fire in fires}
    assert len(minutes) == len(fires), f"two fires in one minute: {fires}"
    spanned = int(worker_stopped.timestamp() // 60 - worker_started.timestamp() // 60) + 1
    assert spanned - 1 <= len(fires) <= spanned, (fires, spanned)

    # Maintenance ran all along; archiving (60 s after completion) and dropping (30 s later) once they could.
    passes = [
        tuple(map(int, found))
        for found in re.findall(r"maintenance: (\d+) expired, (\d+) archived, (\d+) dropped", output)
    ]
    assert len(passes) >= sending / 4, len(passes)
    archived = sum(archived for _, archived, _ in passes)
    dropped = sum(dropped for _, _, dropped in passes)
    if sending >= 120:
        assert archived > 0
        assert dropped > 0

    # Memory: the last window's peak within the bound of the first window's (after warm-up).
    window = min(30.0, sending / 3)
    warm_up = min(20.0, sending / 6)
    first = [rss for at, rss, _ in samples if warm_up <= at < warm_up + window]
    last = [rss for at, rss, _ in samples if at >= sending - window]
    assert first, samples
    assert last, samples
    first_peak, last_peak = max(first), max(last)

    completed = len(sent.ids["ok"]) + len(sent.ids["fail_once"])
    print(
        f"\n[soak] {sending:.0f} s (+{drained:.1f} s drain), jobs sent {sent.count()} in {sent.transactions} "
        f"transactions ({sent.refused} throttled away), completed {completed}, failed {len(sent.ids['always'])}, "
        f"handled per third {thirds}, RSS start peak {first_peak / MIB:.1f} MiB / end peak {last_peak / MIB:.1f} MiB "
        f"(bound {memory_bound(first_peak) / MIB:.1f}, at the end {rss_end / MIB:.1f}, VmHWM {hwm_end / MIB:.1f}), "
        f"cron fires {len(fires)}, maintenance passes {len(passes)} ({archived} archived, {dropped} dropped)"
    )
    assert last_peak <= memory_bound(first_peak), (first_peak / MIB, last_peak / MIB)
