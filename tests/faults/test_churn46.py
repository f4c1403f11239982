"""Exactly once under churn on schema version 46: 10,000 jobs, six Python workers and one Node pg-boss 12.38,
planned failures, timeouts, heartbeat loss, a dead letter, and groups whose concurrency is limited.

The version-46 counterpart of test_churn.py (whose plan, recorder, handlers and worker groups it shares through
churn_support.py). They run at the same time on four queues of one schema at version 46:

* three threaded :class:`~sqla_boss.Worker`\\ s, two in pg-boss's completion mode and one ``transactional``;
* three :class:`~sqla_boss.AsyncWorker`\\ s on an event loop of their own (in a background thread): a coroutine
  handler, a plain function (run in a thread by the worker), and a transactional one;
* one Node pg-boss 12.38 ``work()`` per non-group queue (tests/pgboss_node/driver.mjs, ``workSql``).

Every Python worker works every queue: one loop per queue, two on the group queue. One threaded and one async
worker run version 46's supervisor (:class:`~sqla_boss.AsyncSupervisor`, spawned by the worker), and so does
pg-boss (``supervise: true``), all with 1 s supervise and monitor intervals and a 5 s maintenance interval: the
expiry by timeout, the expiry by heartbeat loss and the retention sweep are taken in turns by the mixed cluster
through pg-boss 12's per-queue claims, which a trigger records (both runtimes must have won some).

**The queues.**

* ``churn_dl`` (40 %), dead-lettered to ``churn_dlq``, which nobody works: it must end up holding one copy per
  failed job, naming the job as its ``source_id``;
* ``churn_plain`` (40 %);
* ``churn_group`` (15 %): every job in one of four groups, one of them of the tier ``wide``; the Python workers
  register it with ``group_concurrency={"default": 2, "tiers": {"wide": 3}}``, and every run of it records when
  it started and ended, so the runs that overlapped in each group are counted in SQL, from the ``executions``
  table: never more than the group's limit (and the limit is reached, so the check is not idle). pg-boss stays
  off this queue: its fetch counts a group's active jobs without a lock, so two of its fetches can both take a
  group's last slot (docs/differences.md), while sqla_boss serialises its group fetches with an advisory lock
  of its own that pg-boss does not take;
* ``churn_beat`` (5 %), with ``heartbeat_seconds`` 10 (pg-boss's least). Before any worker starts, a *crasher*
  fetches its first few jobs (their priority sets them apart), records their attempt 0 and vanishes: it never
  completes them and never touches their heartbeat, so the supervisors fail them by heartbeat loss ("job
  heartbeat timeout") ten seconds on, and their next attempts go to the workers. A few other jobs of the queue
  have a ``long`` first attempt, longer than ``heartbeat_seconds``: their workers' touches must keep them alive.

**The plan, the record** are test_churn.py's: every attempt's fate is in the job's data (``ok``, ``fail``,
``slow``: past a short ``expire_in_seconds``; ``long``; ``crash``), every run is a row of ``executions``, UNIQUE
per (job, attempt), a second run lands in ``duplicates``, which must stay empty. Node's procedure records the
attempt pg-boss handed it (12's job carries ``retryCount``).

**No retry delay.** On version 24 the jobs that can time out need a retry delay (see test_churn.py); on 46 every
settling by a worker is fenced on the attempt it holds (PGBOSS12.md §6.1), Python's and Node's alike, so a late
failure of an attempt the supervisor expired already touches nothing, even when the next attempt has been
fetched at once. A retry delay of 0 lets the test prove it.

The run takes ~70 s on two cores (hence ``slow``); waits poll with deadlines (the settle wait fails on a stall
of STALL_SECONDS as well as after SETTLE_TIMEOUT), and the only sleeps are the handlers' planned ones.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from churn_support import (
    CRASH,
    FAIL,
    LONG,
    NODE_LABEL,
    SLOW,
    AsyncWorkers,
    Behaviour,
    Cluster,
    Plan,
    Recorder,
    Spec,
    ThreadedWorkers,
    connect_args,
    create_side_tables,
    digest,
    drawn_steps,
    node_procedure,
    read_outcome,
    run_beside_node,
)
from pgboss import (  # noqa: F401  (the fixtures pgboss12 and pgboss_install)
    PgBoss,
    SpawnedPgBoss,
    call,
    pgboss12_fixture,
    pgboss_install_fixture,
    start,
)
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.orm import Session
from support import drop_schema, query, unique_name

from sqla_boss import Boss, migrations
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map

pytestmark = [pytest.mark.faults, pytest.mark.pgboss, pytest.mark.slow]  # ~70 s on two cores

JOBS = 10_000
DEAD_LETTERED = "churn_dl"
PLAIN = "churn_plain"
GROUPED = "churn_group"
BEAT = "churn_beat"
DEAD_LETTER = "churn_dlq"
QUEUES = (DEAD_LETTERED, PLAIN, GROUPED, BEAT)
NODE_QUEUES = (DEAD_LETTERED, PLAIN, BEAT)
"""The queues pg-boss works: all but the group queue (see the module documentation)."""

SHORT_SHARE = 2
"""Out of 256: the share of the jobs but the group's with a short expire_in and one slow attempt."""
SHORT_EXPIRE_SECONDS = 2
SLOW_SECONDS = 3.5
"""How long a slow attempt sleeps: well past SHORT_EXPIRE_SECONDS, so it fails by timeout, never completes."""

GROUPS = {"g0": None, "g1": None, "g2": None, "g3": "wide"}
"""The groups of the group queue and their tiers."""
GROUP_LIMIT, TIER_LIMITS = 2, {"wide": 3}
GROUP_CONCURRENCY = {"default": GROUP_LIMIT, "tiers": TIER_LIMITS}
LIMITS = {group: GROUP_LIMIT if tier is None else TIER_LIMITS[tier] for group, tier in GROUPS.items()}
"""The most jobs of each group that may be active at once."""
GROUP_LOOPS = 2
"""Loops per Python worker on the group queue: 12 in all, for 9 slots, so the limit is pressed."""
GROUP_WORK_SECONDS = 0.05
"""What each run of a group job sleeps, so that runs overlap."""

HEARTBEAT_SECONDS = 10
CRASH_JOBS = 6
"""Jobs of the heartbeat queue whose attempt 0 the crasher takes and abandons."""
CRASH_PRIORITY = 1
LONG_JOBS = 3
"""Jobs of the heartbeat queue whose attempt 0 runs LONG_SECONDS, past HEARTBEAT_SECONDS, kept alive by touches."""
LONG_SECONDS = 12.0
CRASHER = "crasher"

POLLING_SECONDS = 0.5
SUPERVISE_SECONDS = 1
MAINTAIN_SECONDS = 5
SETTLE_TIMEOUT = 150.0
"""Seconds the jobs may take to reach their final states once every worker runs (~60 s here)."""
STALL_SECONDS = 30.0
"""Seconds without any job settling that mean something is stuck, however slow the machine."""

STOP = call("stop")

EXPECTED_REASONS = {
    FAIL: ("planned failure",),
    SLOW: ("handler execution exceeded", "job timed out"),
    CRASH: ("job heartbeat timeout",),
}
"""What the output of a job that failed at a step of this kind says (worker timeout or supervisor expiry; the
supervisor's heartbeat expiry)."""


def plan_of(n: int) -> Plan:
    """The fate of job number ``n``: its queue (by ``n % 20``), retry limit (0-3), steps and job fields."""
    drawn = digest("churn46", n)
    slot = n % 20
    queue = DEAD_LETTERED if slot < 8 else PLAIN if slot < 16 else GROUPED if slot < 19 else BEAT
    retry_limit = drawn[0] % 4
    options: dict[str, Any] = {}
    if queue == GROUPED:  # no timeouts here: an abandoned run would outlive its job's activity
        group = sorted(GROUPS)[drawn[8] % len(GROUPS)]
        options["group"] = {"id": group} if GROUPS[group] is None else {"id": group, "tier": GROUPS[group]}
        return Plan(n, queue, retry_limit, tuple(drawn_steps(drawn, retry_limit)), options)
    short = drawn[1] < SHORT_SHARE
    steps = drawn_steps(drawn, retry_limit, drawn[2] % (retry_limit + 1) if short else -1)
    if short:
        options["expire_in_seconds"] = SHORT_EXPIRE_SECONDS
    index = n // 20  # among the heartbeat queue's jobs
    if queue == BEAT and index < CRASH_JOBS:
        retry_limit = index % 4  # every retry limit, 0 included: a crash that ends the job
        steps = [CRASH, *drawn_steps(drawn, retry_limit)[1:]]
        options = {"priority": CRASH_PRIORITY}
    elif queue == BEAT and index < CRASH_JOBS + LONG_JOBS:
        steps[0] = LONG
        options = {}
    return Plan(n, queue, retry_limit, tuple(steps), options)


BEHAVIOUR = Behaviour(
    slow_seconds=SLOW_SECONDS, long_seconds=LONG_SECONDS, timed=frozenset({GROUPED}), work_seconds=GROUP_WORK_SECONDS
)


def worker_options(spec: Spec) -> dict[str, Any]:
    return {
        "polling_interval_seconds": POLLING_SECONDS,
        "supervise": spec.supervise,
        "schedule": False,
        "listen": False,
        "supervise_interval_seconds": SUPERVISE_SECONDS,
        "monitor_interval_seconds": SUPERVISE_SECONDS,
        "maintenance_interval_seconds": MAINTAIN_SECONDS,
    }


CLUSTER = Cluster(
    specs=(
        Spec("thread-1", supervise=True),
        Spec("thread-2"),
        Spec("thread-tx", transactional=True),
        Spec("async-1", asynchronous=True, supervise=True),
        Spec("async-plain", asynchronous=True, plain=True),
        Spec("async-tx", asynchronous=True, transactional=True),
    ),
    registrations=(
        (DEAD_LETTERED, {"concurrency": 1}),
        (PLAIN, {"concurrency": 1}),
        (BEAT, {"concurrency": 1}),
        (GROUPED, {"concurrency": GROUP_LOOPS, "group_concurrency": GROUP_CONCURRENCY}),
    ),
    worker_options=worker_options,
    behaviour=BEHAVIOUR,
)
LABELS = CLUSTER.labels | {NODE_LABEL, CRASHER}

CLAIMS = """
CREATE TABLE {s}.claims (
    task text NOT NULL, item text NOT NULL, app text NOT NULL DEFAULT current_setting('application_name'),
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION {s}.record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.monitor_claim_on IS DISTINCT FROM OLD.monitor_claim_on AND NEW.monitor_claim_on IS NOT NULL THEN
    INSERT INTO {s}.claims (task, item) VALUES ('monitor', NEW.name);
  END IF;
  IF NEW.maintain_on IS DISTINCT FROM OLD.maintain_on AND NEW.maintain_on IS NOT NULL THEN
    INSERT INTO {s}.claims (task, item) VALUES ('maintain', NEW.name);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER record_claim AFTER UPDATE ON {s}.queue FOR EACH ROW EXECUTE FUNCTION {s}.record_claim();
"""
"""Who won each supervisor claim of a queue (by the connection's application_name)."""

GROUP_OVERLAPS = """
WITH runs AS (
    SELECT j.group_id, e.at, e.ended FROM {s}.executions e JOIN {s}.job j ON j.name = :grouped AND j.id = e.job_id
), edges AS (
    SELECT group_id, at AS t, 1 AS d FROM runs UNION ALL SELECT group_id, ended, -1 FROM runs
), running AS (
    SELECT group_id, sum(d) OVER (PARTITION BY group_id ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS n FROM edges
)
SELECT group_id, max(n) FROM running GROUP BY group_id
"""
"""The most runs of each group that were running at once: each run is +1 at its start and -1 at its end, an end
sorted before a start at the same instant."""


@pytest.fixture
def churn_schema(engine: Engine) -> Iterator[str]:
    """A version-46 schema of its own, installed by our migrations and dropped afterwards."""
    schema = unique_name("zz_churn46")
    try:
        migrations.upgrade(engine, schema=schema, pgboss=12)
        yield schema
    finally:
        drop_schema(engine, schema)


def sessions_on(engine: Engine, schema: str) -> Session:
    return Session(engine.execution_options(schema_translate_map=schema_translate_map(schema)))


def set_up(engine: Engine, schema: str, plans: list[Plan], ids: dict[int, uuid.UUID]) -> None:
    """Queues, the side tables, the claims trigger, Node's procedure, and the jobs, committed."""
    quoted = quote_identifier(schema)
    with sessions_on(engine, schema) as session, session.begin():
        boss = Boss(session, schema=schema)
        boss.create_queue(DEAD_LETTER)
        boss.create_queue(DEAD_LETTERED, dead_letter=DEAD_LETTER)
        boss.create_queue(PLAIN)
        boss.create_queue(GROUPED)
        boss.create_queue(BEAT, heartbeat_seconds=HEARTBEAT_SECONDS)
        create_side_tables(session, schema)
        session.connection().exec_driver_sql(CLAIMS.format(s=quoted))
        session.execute(text(node_procedure(schema, NODE_QUEUES, BEHAVIOUR, attempt_given=True)))
        inserted = boss.insert([plan.job(ids[plan.n]) for plan in plans])
    assert sorted(inserted) == sorted(ids.values())
    counts = dict(query(engine, f"SELECT name, count(*) FROM {quoted}.job GROUP BY name"))
    assert counts == Counter(plan.queue for plan in plans)
    [(beating, grouped)] = query(
        engine,
        f"SELECT count(*) FILTER (WHERE name = :beat AND heartbeat_seconds = :hb), "
        f"count(*) FILTER (WHERE name = :grouped AND group_id IS NOT NULL) FROM {quoted}.job",
        beat=BEAT,
        hb=HEARTBEAT_SECONDS,
        grouped=GROUPED,
    )
    assert (beating, grouped) == (counts[BEAT], counts[GROUPED])


def crash(engine: Engine, schema: str, recorder: Recorder, expected: set[uuid.UUID]) -> None:
    """The crasher: fetch the crash jobs' attempt 0 and record it, in one transaction; then nothing, ever."""
    with sessions_on(engine, schema) as session, session.begin():
        jobs = Boss(session, schema=schema).fetch(BEAT, batch_size=CRASH_JOBS + 1, min_priority=CRASH_PRIORITY)
        for job in jobs:
            recorder.within(session, job, CRASHER)
        taken = {(job.id, job.retry_count) for job in jobs}
    assert taken == {(job_id, 0) for job_id in expected}


# ----------------------------------------------------------------------------------------------------- test


def test_every_job_ends_as_its_plan_says_each_attempt_run_once_groups_within_their_limit(
    pgboss12: PgBoss, engine: Engine, database_url: URL, churn_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = churn_schema
    quoted = quote_identifier(schema)
    caplog.set_level(logging.WARNING, logger="sqla_boss")
    plans = [plan_of(n) for n in range(JOBS)]
    ids = {plan.n: uuid.uuid4() for plan in plans}
    # The plan exercises every path: failures on every queue, slow steps, crashes that end a job and crashes that
    # are retried, every retry limit, every group.
    assert {plan.retry_limit for plan in plans} == {0, 1, 2, 3}
    assert sum(plan.short for plan in plans) > 40
    assert {plan.queue for plan in plans if plan.expected()[0] == "failed"} == set(QUEUES)
    assert any(plan.expected() == ("failed", plan.retry_limit) and plan.steps[-1] == SLOW for plan in plans)
    crashed = [plan for plan in plans if CRASH in plan.steps]
    assert len(crashed) == CRASH_JOBS
    assert {plan.expected() for plan in crashed} >= {("failed", 0), ("completed", 1)}
    assert sum(LONG in plan.steps for plan in plans) == LONG_JOBS
    assert {plan.options["group"]["id"] for plan in plans if plan.queue == GROUPED} == set(GROUPS)
    set_up(engine, schema, plans, ids)

    records = create_engine(
        database_url, connect_args=connect_args("records"), isolation_level="AUTOCOMMIT", pool_size=10
    )
    recorder = Recorder(records, schema)
    crash(engine, schema, recorder, {ids[plan.n] for plan in crashed})
    threaded = ThreadedWorkers(database_url, schema, recorder, CLUSTER)
    asynchronous = AsyncWorkers(database_url, schema, recorder, CLUSTER)
    names = ", ".join(f"'{name}'" for name in QUEUES)
    settled_sql = f"SELECT NOT EXISTS (SELECT FROM {quoted}.job WHERE name IN ({names}) AND state < 'completed')"
    node_actions = [
        start(
            supervise=True,
            schedule=False,
            migrate=False,
            superviseIntervalSeconds=SUPERVISE_SECONDS,
            monitorIntervalSeconds=SUPERVISE_SECONDS,
            maintenanceIntervalSeconds=MAINTAIN_SECONDS,
        ),
        *(
            call(
                "workSql",
                queue,
                {"batchSize": 1, "pollingIntervalSeconds": POLLING_SECONDS},
                f"CALL {quoted}.node_handle($1, $2)",
                ["id", "retryCount"],
            )
            for queue in NODE_QUEUES
        ),
        call("waitSql", settled_sql, int((SETTLE_TIMEOUT + 30) * 1000)),
        STOP,
    ]
    elapsed, output = run_beside_node(
        lambda: pgboss12.spawn(schema, node_actions),
        engine,
        schema,
        QUEUES,
        [asynchronous, threaded],
        records,
        timeout=SETTLE_TIMEOUT,
        stall=STALL_SECONDS,
        slow_seconds=SLOW_SECONDS,
    )

    # --- what happened
    outcome = read_outcome(engine, schema, plans, ids, QUEUES, ("job",))
    dead = query(engine, f"SELECT data, source_id FROM {quoted}.job WHERE name = :n", n=DEAD_LETTER)
    overlaps = dict(query(engine, GROUP_OVERLAPS.format(s=quoted), grouped=GROUPED))
    unfinished = query(
        engine,
        f"SELECT e.job_id, e.attempt, e.worker FROM {quoted}.executions e JOIN {quoted}.job j "
        "ON j.name = :grouped AND j.id = e.job_id WHERE e.ended IS NULL",
        grouped=GROUPED,
    )
    claims = query(engine, f"SELECT task, app, count(*) FROM {quoted}.claims GROUP BY 1, 2")
    maintained = {
        item for (item,) in query(engine, f"SELECT DISTINCT item FROM {quoted}.claims WHERE task = 'maintain'")
    }
    claimed: dict[str, Counter[str]] = {}
    for task, app, count in claims:
        side = NODE_LABEL if app.startswith("pgboss") else app.removeprefix("churn-")
        claimed.setdefault(task, Counter())[side] += count
    by_reason = Counter(
        reason
        for output_ in outcome.outputs.values()
        for reason in ("handler execution exceeded", "job timed out", "job heartbeat timeout")
        if reason in str(output_)
    )
    print(
        f"\n{JOBS} jobs settled in {elapsed:.1f} s: {outcome.runs_line()}, {len(dead)} dead-lettered; "
        f"most runs at once per group {dict(sorted(overlaps.items()))} (limits {LIMITS}); failed by "
        f"{dict(by_reason)}; claims { ({task: dict(sides) for task, sides in sorted(claimed.items())}) }; "
        f"runs per worker: {dict(sorted(outcome.per_worker.items()))}"
    )

    # --- nothing lost, nothing doubled, nothing left behind; every job ended as its plan says, each attempt
    # 0..retry_count ran exactly once, and failed for the reason planned (crashes by heartbeat loss)
    outcome.check_exactly_once(EXPECTED_REASONS)

    # --- each group's runs never overlapped beyond its limit, and did reach it
    assert unfinished == [], f"runs of the group queue that never recorded their end: {unfinished[:10]}"
    assert set(overlaps) == set(GROUPS)
    over = {group: most for group, most in overlaps.items() if most > LIMITS[group]}
    assert over == {}, f"groups that ran more jobs at once than their limit {LIMITS}: {over}"
    assert all(overlaps[group] == LIMITS[group] for group in GROUPS), (overlaps, LIMITS)

    # --- one dead-letter copy per failed job of the dead-lettered queue, with its data
    by_id = outcome.by_id
    failed_dead_lettered = Counter(
        ids[plan.n] for plan in plans if plan.queue == DEAD_LETTERED and plan.expected()[0] == "failed"
    )
    assert Counter(source_id for _, source_id in dead) == failed_dead_lettered
    assert all(data == by_id[source_id].data for data, source_id in dead)

    # --- every worker took part, Node and the crasher included; both runtimes supervised
    assert set(outcome.per_worker) == LABELS, outcome.per_worker
    assert NODE_LABEL in claimed["monitor"], claimed
    assert set(claimed["monitor"]) - {NODE_LABEL}, claimed
    assert maintained >= set(QUEUES), maintained  # the retention sweep ran on every queue
    errors = [event for event in output["events"] if event.get("event") == "error"]
    assert errors == [], errors
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged == [], logged
