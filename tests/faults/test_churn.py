"""Exactly once under churn: 10,000 jobs, eight workers of four kinds, planned failures, timeouts, a dead letter.

Eight workers run at the same time on two queues of one schema:

* four threaded :class:`~sqla_boss.Worker`\\ s, two in pg-boss's completion mode and two ``transactional``;
* three :class:`~sqla_boss.AsyncWorker`\\ s on an event loop of their own (in a background thread): one with a
  coroutine handler and one with a plain function (which the worker runs in a thread), both in the completion
  mode, and one transactional;
* one Node pg-boss 10.4.2 ``work()`` (tests/pgboss_node/driver.mjs, ``workSql``), on the dead-lettered queue.

One threaded and one async worker supervise, with a 1 s maintenance interval, so expired jobs are also failed by
maintenance, taking turns through pg-boss's claim.

**The plan.** Every job carries its fate in its data: ``steps[k]`` says what attempt ``k`` (the job's
``retry_count`` when it is handed out) does: ``ok``, ``fail`` (the handler raises) or ``slow`` (the handler
sleeps well past the job's short ``expire_in``, so the attempt fails by timeout: the worker's handler timeout
or maintenance's expiry, whichever comes first). The steps come from a hash of the job's number, so the
expected end is known before the run: ``completed`` with ``retry_count`` = the first ``ok`` attempt, else
``failed`` with ``retry_count = retry_limit`` (0-3) and, on the dead-lettered queue, exactly one copy of its data
in the dead-letter queue.

The plan, the recorder, the handlers, the worker groups and the final checks are shared with the test on
schema 46 (test_churn46.py) through churn_support.py.

**The record.** Every handler records its run as a row of ``executions(job_id, attempt, worker)``, UNIQUE per
(job, attempt). In the completion mode it records through a connection of its own, committed before the work,
so even a run the worker has given up on is recorded; in the transactional mode an ``ok`` attempt records in
the handler's own session (so the row commits with the completion or not at all), while a failing attempt
records apart (its rollback would take an in-session row with it). Node records through a procedure that
commits the row before failing or sleeping. A second run of the same attempt hits the constraint and is kept in
``duplicates`` instead, which must stay empty: the executions of every job are exactly attempts
``0..retry_count``.

**Why slow jobs have a retry delay.** pg-boss's ``fail`` takes ``created``, ``retry`` and ``active`` jobs, and
job ids carry no attempt. Maintenance may expire a slow attempt a few milliseconds before the worker's own
timeout fails it; the worker's late ``fail`` then lands on the job in ``retry``, which is harmless (it stays in
``retry``, and a ``failed`` job is left alone), unless another worker had already fetched the next attempt,
which the late ``fail`` would then fail. A retry delay of 1 s on the jobs that can time out keeps the next
attempt out of reach for longer than that window, so the expected end stays exact.

**A bug this test found** (sqla_boss at 612416d, fixed since): when a transactional
:class:`~sqla_boss.AsyncWorker` handler outlived its timeout, the worker terminated the handler's backend and
then closed the session, which checked the dead connection back into the pool; its next user failed with
``AdminShutdown``, so a job whose handler succeeded could be failed. The worker now invalidates that connection.
The engines here have no ``pool_pre_ping``, so the bug would fail this test again.

The schema has the opt-in fetch index (without it each fetch sorts its queue's backlog of 5,000 jobs). The run
takes ~60 s on two cores (hence ``slow``), bound by the CPU of the seven Python workers, which share one
interpreter, and of PostgreSQL; waits poll with a deadline, and the only sleeps are the slow steps' own. The wait
for the jobs to settle fails after STALL_SECONDS without progress (a hang) or SETTLE_TIMEOUT in all: a CI
machine under load has taken more than the 80 s this test once allowed, with jobs still being worked.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from churn_support import (
    FAIL,
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
from pgboss import (  # noqa: F401  (the fixtures pgboss and pgboss_install)
    PgBoss,
    SpawnedPgBoss,
    call,
    pgboss_fixture,
    pgboss_install_fixture,
    start,
)
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.orm import Session
from support import drop_schema, query, unique_name

from sqla_boss import Boss, migrations
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map

pytestmark = [pytest.mark.faults, pytest.mark.pgboss, pytest.mark.slow]  # ~60 s on two cores

JOBS = 10_000
DEAD_LETTERED = "churn_dl"
"""Half the jobs; its failed jobs are copied to DEAD_LETTER. The Node worker works this queue."""
PLAIN = "churn_plain"
"""The other half, without a dead letter."""
DEAD_LETTER = "churn_dlq"
"""Nobody works it: it must end up holding one job per failed job of DEAD_LETTERED."""
QUEUES = (DEAD_LETTERED, PLAIN)

SHORT_SHARE = 2
"""Out of 256: the share of jobs (~0.8%, ~80) with a short expire_in and one slow attempt."""
SHORT_EXPIRE_SECONDS = 2
SLOW_SECONDS = 3.5
"""How long a slow attempt sleeps: well past SHORT_EXPIRE_SECONDS, so it fails by timeout, never completes."""
SLOW_RETRY_DELAY = 1
"""The retry delay of the jobs that can time out (see the module documentation)."""

CONCURRENCY = 1
"""Loops (threads or tasks) per queue of each Python worker."""
POLLING_SECONDS = 0.5
SETTLE_TIMEOUT = 150.0
"""Seconds the jobs may take to reach their final states once every worker runs: ~55 s here, and CI under load
has needed more than 80 s (see :func:`churn_support.settle`)."""
STALL_SECONDS = 30.0
"""Seconds without any job settling that mean something is stuck, however slow the machine."""

STOP = call("stop")

EXPECTED_REASONS = {
    FAIL: ("planned failure",),
    SLOW: ("handler execution exceeded", "job failed by timeout in active state"),
}
"""What the output of a job that failed at a step of this kind says (worker timeout, or maintenance expiry)."""


def plan_of(n: int) -> Plan:
    """The fate of job number ``n``: its queue, its retry limit (0-3), and a slow attempt for ~0.8% of jobs."""
    drawn = digest("churn", n)
    retry_limit = drawn[0] % 4
    short = drawn[1] < SHORT_SHARE
    slow_at = drawn[2] % (retry_limit + 1) if short else -1
    options = {"expire_in_seconds": SHORT_EXPIRE_SECONDS, "retry_delay": SLOW_RETRY_DELAY} if short else {}
    queue = DEAD_LETTERED if n % 2 == 0 else PLAIN
    return Plan(n, queue, retry_limit, tuple(drawn_steps(drawn, retry_limit, slow_at)), options)


BEHAVIOUR = Behaviour(slow_seconds=SLOW_SECONDS)


def worker_options(spec: Spec) -> dict[str, Any]:
    return {
        "polling_interval_seconds": POLLING_SECONDS,
        "supervise": spec.supervise,
        "schedule": False,
        "listen": False,
        "maintenance_interval_seconds": 1,
    }


CLUSTER = Cluster(
    specs=(
        Spec("thread-1", supervise=True),
        Spec("thread-2"),
        Spec("thread-tx-1", transactional=True),
        Spec("thread-tx-2", transactional=True),
        Spec("async-1", asynchronous=True, supervise=True),
        Spec("async-plain", asynchronous=True, plain=True),
        Spec("async-tx", asynchronous=True, transactional=True),
    ),
    registrations=tuple((queue, {"concurrency": CONCURRENCY}) for queue in QUEUES),
    worker_options=worker_options,
    behaviour=BEHAVIOUR,
)
LABELS = CLUSTER.labels | {NODE_LABEL}


@pytest.fixture
def churn_schema(engine: Engine) -> Iterator[str]:
    """A pg-boss schema of its own, with the opt-in fetch index, installed by our migrations and dropped afterwards."""
    schema = unique_name("zz_churn")
    try:
        migrations.upgrade(engine, schema=schema)
        migrations.upgrade(engine, schema=schema, fetch_index=True)  # else every fetch sorts a queue's backlog
        yield schema
    finally:
        drop_schema(engine, schema)


def set_up(engine: Engine, schema: str, plans: list[Plan], ids: dict[int, uuid.UUID]) -> None:
    """Queues, the side tables, Node's procedure, and the jobs, committed."""
    quoted = quote_identifier(schema)
    translated = engine.execution_options(schema_translate_map=schema_translate_map(schema))
    with Session(translated) as session, session.begin():
        boss = Boss(session, schema=schema)
        boss.create_queue(DEAD_LETTER)
        boss.create_queue(DEAD_LETTERED, dead_letter=DEAD_LETTER)
        boss.create_queue(PLAIN)
        create_side_tables(session, schema)
        session.execute(text(node_procedure(schema, [DEAD_LETTERED], BEHAVIOUR, attempt_given=False)))
        inserted = boss.insert([plan.job(ids[plan.n]) for plan in plans])
    assert sorted(inserted) == sorted(ids.values())
    [(dead_lettered, plain)] = query(
        engine,
        f"SELECT count(*) FILTER (WHERE name = :dl AND dead_letter = :dlq), count(*) FILTER (WHERE name = :plain "
        f"AND dead_letter IS NULL) FROM {quoted}.job",
        dl=DEAD_LETTERED,
        dlq=DEAD_LETTER,
        plain=PLAIN,
    )
    assert (dead_lettered, plain) == (JOBS // 2, JOBS // 2)


# ----------------------------------------------------------------------------------------------------- test


def test_every_job_ends_as_its_plan_says_each_attempt_run_once(
    pgboss: PgBoss, engine: Engine, database_url: URL, churn_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    schema = churn_schema
    quoted = quote_identifier(schema)
    caplog.set_level(logging.WARNING, logger="sqla_boss")
    plans = [plan_of(n) for n in range(JOBS)]
    ids = {plan.n: uuid.uuid4() for plan in plans}
    # The plan exercises every path: failures on both queues, slow steps, every retry limit.
    assert {plan.retry_limit for plan in plans} == {0, 1, 2, 3}
    assert sum(plan.short for plan in plans) > 40
    assert {plan.queue for plan in plans if plan.expected()[0] == "failed"} == set(QUEUES)
    assert any(plan.expected() == ("failed", plan.retry_limit) and plan.steps[-1] == SLOW for plan in plans)
    set_up(engine, schema, plans, ids)

    records = create_engine(
        database_url, connect_args=connect_args("records"), isolation_level="AUTOCOMMIT", pool_size=10
    )
    recorder = Recorder(records, schema)
    threaded = ThreadedWorkers(database_url, schema, recorder, CLUSTER)
    asynchronous = AsyncWorkers(database_url, schema, recorder, CLUSTER)
    settled_sql = (
        f"SELECT NOT EXISTS (SELECT FROM {quoted}.job WHERE name IN ('{DEAD_LETTERED}', '{PLAIN}') "
        "AND state < 'completed')"
    )
    node_actions = [
        start(supervise=False, schedule=False),
        call(
            "workSql",
            DEAD_LETTERED,
            {"batchSize": 1, "pollingIntervalSeconds": POLLING_SECONDS},
            f"CALL {quoted}.node_handle($1)",
        ),
        call("waitSql", settled_sql, int((SETTLE_TIMEOUT + 30) * 1000)),
        STOP,
    ]
    elapsed, output = run_beside_node(
        lambda: pgboss.spawn(schema, node_actions),
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
    outcome = read_outcome(engine, schema, plans, ids, QUEUES, ("job", "archive"))
    dead = query(
        engine,
        f"SELECT data FROM {quoted}.job WHERE name = :n UNION ALL SELECT data FROM {quoted}.archive WHERE name = :n",
        n=DEAD_LETTER,
    )
    print(
        f"\n{JOBS} jobs settled in {elapsed:.1f} s: {outcome.runs_line()}, {len(dead)} dead-lettered; "
        f"runs per worker: {dict(sorted(outcome.per_worker.items()))}"
    )

    # --- nothing lost, nothing doubled, nothing left behind; every job ended as its plan says, each attempt
    # 0..retry_count ran exactly once, and failed for the reason planned
    outcome.check_exactly_once(EXPECTED_REASONS)

    # --- one dead-letter copy per failed job of the dead-lettered queue, with its data
    expected = {ids[plan.n]: plan.expected() for plan in plans}
    failed_dead_lettered = Counter(
        plan.n for plan in plans if plan.queue == DEAD_LETTERED and expected[ids[plan.n]][0] == "failed"
    )
    assert Counter(data["n"] for (data,) in dead) == failed_dead_lettered
    by_id = outcome.by_id
    assert all(data == by_id[ids[data["n"]]].data for (data,) in dead)

    # --- every worker took part, Node included
    assert set(outcome.per_worker) == LABELS, outcome.per_worker
    assert output["events"] == [], output["events"]
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors
