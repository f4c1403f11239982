"""sqla_boss and the real pg-boss 12.38.0 on schema version 46: the same rows, and each works the other's jobs,
queues, schedules and subscriptions.

The model is tests/test_interop.py (pg-boss 10.4.2). Every schema here is installed by sqla_boss
(:func:`sqla_boss.v46.ddl.install`), and pg-boss 12 starts on it with :data:`QUIET`: no migration, no
supervisor, no timekeeper, no instance row, so it only does what the test asks. Each part runs its Node calls
in one or two driver runs, in a module-scoped fixture; the parametrised tests then compare what was recorded.

1. **Same rows.** Every send option, every policy, shared and partitioned queues, ``insert`` batches,
   ``send_after`` / ``send_throttled`` / ``send_debounced``, sent by Python to one schema and by Node to another
   with the same queues: the rows agree in every column but ``id``, clock readings compared as offsets
   (:func:`sent_row`); the queues made by ``createQueue`` and ``create_queue`` with every option agree too.
2. **Both directions.** Jobs sent by one side are fetched, completed and failed by the other: outputs, retry
   counts, backoff bounds under ``retry_delay_max``, fences on ``(id, retry_count)``, and dead-letter copies.
3. **Groups and heartbeats.** ``group_concurrency`` counts the active jobs of a group whichever side fetched
   them; each side touches the other's jobs.
4. **Queues and schedules** made by either side are read by the other, and updated alike.
5. **Pub/sub** across the runtimes.

sqla_boss's side runs on both repository APIs (``python_side``, parametrised ``sync`` / ``async``); part 1's
Node sends run once for both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from apis import APIS, AwaitingBoss
from pgboss import (  # noqa: F401  (the fixtures pgboss12 and pgboss_install)
    PgBoss,
    PgBossDriverError,
    call,
    partition_name,
    pgboss12_fixture,
    pgboss_install_fixture,
    ref,
    start,
)
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from support import drop_schema, unique_name
from test_interop import (
    FAR_FUTURE,
    JS_MS,
    UTC,
    PythonSide,
    camel,
    js_error,
    js_time,
    js_value,
    slot_start,
)

from sqla_boss import AsyncBoss, Boss
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map
from sqla_boss.v46 import ddl
from sqla_boss.v46 import models as v46

pytestmark = pytest.mark.pgboss

QUIET = {"migrate": False, "supervise": False, "schedule": False, "registerInstance": False}
"""pg-boss 12 on a schema sqla_boss installed, doing nothing but the calls the test makes."""

JOB_COLUMNS = ", ".join(
    f"{column.name}::text AS {column.name}" if column.name == "state" else column.name
    for column in v46.Job.__table__.columns
)
"""Every column of version 46's ``job``, the enum as text."""

QUEUE_TIMES = ("created_on", "updated_on")


def js_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """sqla_boss's snake_case options as pg-boss's camelCase ones (values converted, not renamed)."""
    return {camel(key): js_value(value) for key, value in options.items()}


class Script:
    """A list of driver actions that remembers where each one is, to find its result afterwards."""

    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = [start(**QUIET)]

    def add(self, method: str, *args: Any) -> int:
        self.actions.append(call(method, *args))
        return len(self.actions) - 1

    def run(self, pgboss: PgBoss, schema: str) -> list[Any]:
        self.add("stop", {"graceful": False})
        return pgboss.run(schema, self.actions)


@pytest.fixture(scope="module", params=APIS)
def python_side(request: pytest.FixtureRequest, engine: Engine, database_url: Any) -> Iterator[PythonSide]:
    """sqla_boss's side on ``Boss`` or ``AsyncBoss``: what uses it runs once per API."""
    side = PythonSide(request.param, engine, database_url)
    try:
        yield side
    finally:
        side.close()


@pytest.fixture(scope="module")
def new_schema(engine: Engine) -> Iterator[Callable[[str], str]]:
    """Fresh version-46 schemas installed by sqla_boss; every one made is dropped at the end."""
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(unique_name(prefix))
        with engine.begin() as connection:
            ddl.install(connection, made[-1])
        return made[-1]

    yield make
    for schema in made:
        drop_schema(engine, schema)


def job_rows(engine: Engine, schema: str, where: str, **params: Any) -> list[dict[str, Any]]:
    """The jobs matching ``where``, in the order of their data (as JSON text), then of their ids."""
    statement = text(f"SELECT {JOB_COLUMNS} FROM {quote_identifier(schema)}.job WHERE {where} ORDER BY data::text, id")
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(statement, params).mappings()]


def queue_row(engine: Engine, schema: str, name: str) -> dict[str, Any] | None:
    statement = text(f"SELECT * FROM {quote_identifier(schema)}.queue WHERE name = :name")
    with engine.connect() as connection:
        row = connection.execute(statement, {"name": name}).mappings().one_or_none()
    return None if row is None else dict(row)


def without(row: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    assert row is not None
    return {key: value for key, value in row.items() if key not in keys}


def relation_exists(engine: Engine, schema: str, name: str) -> bool:
    with engine.connect() as connection:
        found = connection.execute(text("SELECT to_regclass(:name)"), {"name": f"{schema}.{name}"}).scalar()
    return found is not None


# =================================================================================== 1. same rows

FIXED_ID = uuid.UUID("11111111-2222-3333-4444-555555555555")
OTHER_ID = uuid.UUID("66666666-7777-8888-9999-000000000000")
ISO_START = "2041-01-02T03:04:05.678Z"
OFFSET_START = "2041-01-02T03:04:05+01:00"
DATETIME_START = dt.datetime(2042, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)

DEAD_LETTER_QUEUES = ("dlq", "dlq2")
"""Queues every part-1 schema has, for the ``dead_letter`` options."""

CONFIGURED = {
    "retry_limit": 5,
    "retry_delay": 9,
    "retry_backoff": True,
    "retry_delay_max": 100,
    "expire_in_seconds": 33,
    "retention_seconds": 600,
    "delete_after_seconds": 120,
    "dead_letter": "dlq",
    "heartbeat_seconds": 30,
    "notify": True,
    "warning_queue_size": 50,
}
"""A queue with every setting a queue has."""

JOB_OVERRIDES = {
    "retry_limit": 1,
    "retry_delay": 0,
    "retry_backoff": False,
    "expire_in_seconds": 5,
    "retention_seconds": 60,
    "delete_after_seconds": 0,
    "dead_letter": "dlq2",
    "heartbeat_seconds": 15,
}
"""Job options over every setting of :data:`CONFIGURED` but ``retry_delay_max`` (which needs a backoff)."""


@dataclass(frozen=True)
class Send:
    """One call of ``send`` / ``send_after`` / ``send_throttled`` / ``send_debounced``, for both sides."""

    method: str = "send"
    data: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)
    after: Any = None
    seconds: int | None = None
    key: str | None = None

    @property
    def slot(self) -> int | None:
        """The throttling slot length the call asks for, if any."""
        return self.seconds if self.seconds is not None else self.options.get("singleton_seconds")

    def python(self, boss: Any, queue: str) -> uuid.UUID | None:
        options = dict(self.options)
        if self.method == "send":
            return boss.send(queue, self.data, **options)
        if self.method == "send_after":
            return boss.send_after(queue, self.data, after=self.after, **options)
        assert self.seconds is not None
        method = boss.send_throttled if self.method == "send_throttled" else boss.send_debounced
        return method(queue, self.data, seconds=self.seconds, key=self.key, **options)

    def node(self, script: Script, queue: str) -> int:
        options = js_options(self.options)
        if self.method == "send":
            return script.add("send", queue, js_value(self.data), options)
        if self.method == "send_after":
            return script.add("sendAfter", queue, js_value(self.data), options or None, js_value(self.after))
        return script.add(camel(self.method), queue, js_value(self.data), options or None, self.seconds, self.key)


@dataclass(frozen=True)
class Insert:
    """One batch ``insert``; each job's ``data`` must be unique in its case (it identifies the row)."""

    jobs: tuple[Mapping[str, Any], ...]

    def python(self, boss: Any, queue: str) -> list[uuid.UUID]:
        return boss.insert([{"name": queue, **job} for job in self.jobs])

    def node(self, script: Script, queue: str) -> int:
        return script.add("insert", queue, [js_options(job) for job in self.jobs], {"returnId": True})

    def job_for(self, data: Any) -> Mapping[str, Any] | None:
        return next((job for job in self.jobs if job.get("data") == data), None)


@dataclass(frozen=True)
class SendCase:
    """Calls made on a queue of their own, created with ``queue`` settings."""

    id: str
    calls: tuple[Send | Insert, ...]
    returns: tuple[bool, ...] | None = None
    """Which of the :class:`Send` calls return an id (``False``: ``None``); all of them by default."""
    queue: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sends(self) -> list[Send]:
        return [item for item in self.calls if isinstance(item, Send)]

    @property
    def expected_returns(self) -> list[bool]:
        return list(self.returns) if self.returns is not None else [True] * len(self.sends)


def case(
    id: str, *calls: Send | Insert, returns: tuple[bool, ...] | None = None, queue: Mapping[str, Any] | None = None
) -> SendCase:
    return SendCase(id, calls, returns, queue or {})


def send(data: Any = None, **options: Any) -> Send:
    return Send("send", data, options)


def insert(*jobs: Mapping[str, Any]) -> Insert:
    return Insert(tuple(jobs))


EVERYTHING = {
    "id": FIXED_ID,
    "priority": 3,
    "start_after": "2 hours",
    "singleton_key": "all",
    "singleton_seconds": 1200,
    "group": {"id": "g", "tier": "gold"},
    "dead_letter": "dlq",
    "retry_limit": 6,
    "retry_delay": 7,
    "retry_backoff": True,
    "retry_delay_max": 70,
    "expire_in_seconds": 80,
    "retention_seconds": 9000,
    "delete_after_seconds": 10,
    "heartbeat_seconds": 11,
}
"""Every send option at once."""

POLICY_SENDS: dict[str, tuple[tuple[Send, ...], tuple[bool, ...]]] = {
    "standard": ((send(1), send(2), send(3, singleton_key="a"), send(4, singleton_key="a")), (True,) * 4),
    # One created job (per key) at a time; key-less jobs share the key ''.
    "short": (
        (send(1), send(2), send(3, singleton_key="a"), send(4, singleton_key="a"), send(5, singleton_key="b")),
        (True, False, True, False, True),
    ),
    # Any number queued: the rule is at fetch.
    "singleton": ((send(1), send(2), send(3, singleton_key="a"), send(4, singleton_key="a")), (True,) * 4),
    "stately": (
        (send(1), send(2), send(3, singleton_key="a"), send(4, singleton_key="a"), send(5, singleton_key="b")),
        (True, False, True, False, True),
    ),
    "exclusive": (
        (send(1), send(2), send(3, singleton_key="a"), send(4, singleton_key="a"), send(5, singleton_key="b")),
        (True, False, True, False, True),
    ),
    # A key is required; any number of a key's jobs may wait (the rule is on active, retry and failed ones).
    "key_strict_fifo": (
        (send(1, singleton_key="a"), send(2, singleton_key="a"), send(3, singleton_key="b", priority=4)),
        (True,) * 3,
    ),
}

POLICIES = tuple(POLICY_SENDS)

CASES: list[SendCase] = [
    # Data: any JSON value.
    case("no-data", send()),
    case("data-object", send({"a": [1, {"b": None}], "s": "é ✓", "f": 1.5})),
    case("data-number", send(42)),
    case("data-boolean", send(False)),
    case("data-string", send("quoted")),
    case("data-array", send([1, "two", None])),
    # Priority.
    case("priority", send(None, priority=5)),
    case("priority-negative", send(None, priority=-3)),
    case("priority-zero", send(None, priority=0)),
    # start_after (§4.3): seconds, interval text, ISO text, a datetime against a JavaScript Date.
    case("start-after-seconds", send(None, start_after=5)),
    case("start-after-fraction", send(None, start_after=1.5)),
    case("start-after-zero", send(None, start_after=0)),
    case("start-after-negative", send(None, start_after=-5)),
    case("start-after-number-text", send(None, start_after="5")),
    case("start-after-interval", send(None, start_after="90 minutes")),
    case("start-after-iso-z", send(None, start_after=ISO_START)),
    case("start-after-iso-offset", send(None, start_after=OFFSET_START)),
    case("start-after-datetime", send(None, start_after=DATETIME_START)),
    case("start-after-timedelta", send(None, start_after=dt.timedelta(minutes=2))),
    # Singleton keys and throttling slots (§4.4); a taken slot answers None.
    case("singleton-key-alone", send(1, singleton_key="k"), send(2, singleton_key="k")),
    case("singleton-seconds", send(1, singleton_seconds=3600), send(2, singleton_seconds=3600), returns=(True, False)),
    case(
        "singleton-seconds-keys",
        send(1, singleton_seconds=3600, singleton_key="a"),
        send(2, singleton_seconds=3600, singleton_key="a"),
        send(3, singleton_seconds=3600, singleton_key="b"),
        returns=(True, False, True),
    ),
    case("singleton-seconds-odd", send(None, singleton_seconds=7)),
    case("singleton-seconds-day", send(None, singleton_seconds=86400)),
    case("singleton-seconds-timedelta", send(None, singleton_seconds=dt.timedelta(hours=1))),
    case(
        "singleton-next-slot",
        *[send(n, singleton_seconds=3600, singleton_next_slot=True, singleton_key="n") for n in range(3)],
        returns=(True, True, False),
    ),
    case(
        "send-debounced",
        *[Send("send_debounced", n, {"priority": 1}, seconds=3600, key="d") for n in range(3)],
        returns=(True, True, False),
    ),
    case(
        "send-debounced-no-key",
        *[Send("send_debounced", n, seconds=3600) for n in range(3)],
        returns=(True, True, False),
    ),
    case(
        "send-throttled",
        Send("send_throttled", 1, {"retry_limit": 1}, seconds=3600, key="t"),
        Send("send_throttled", 2, seconds=3600, key="t"),
        Send("send_throttled", 3, seconds=3600, key="u"),
        returns=(True, False, True),
    ),
    case(
        "send-throttled-no-key",
        Send("send_throttled", 1, seconds=3600),
        Send("send_throttled", 2, seconds=3600),
        returns=(True, False),
    ),
    # send_after.
    case("send-after-seconds", Send("send_after", 1, {"priority": 2}, after=30)),
    case("send-after-interval", Send("send_after", 1, after="2 hours")),
    case("send-after-iso-z", Send("send_after", 1, after=ISO_START)),
    case("send-after-datetime", Send("send_after", 1, {"retention_seconds": 86400}, after=DATETIME_START)),
    # Groups.
    case("group-id", send(None, group={"id": "g1"})),
    case("group-tier", send(None, group={"id": "g1", "tier": "gold"})),
    # Retries.
    case("retry-limit-zero", send(None, retry_limit=0)),
    case("retry-limit-delay", send(None, retry_limit=7, retry_delay=4)),
    case("retry-delay-timedelta", send(None, retry_delay=dt.timedelta(seconds=30))),
    case("retry-backoff", send(None, retry_backoff=True, retry_delay=3)),
    case("retry-backoff-no-delay", send(None, retry_backoff=True)),
    case("retry-backoff-max", send(None, retry_backoff=True, retry_delay=5, retry_delay_max=60)),
    case("retry-backoff-max-zero", send(None, retry_backoff=True, retry_delay_max=0)),
    case("retry-no-backoff", send(None, retry_backoff=False, retry_delay=0)),
    # Expiry, retention (counted from start_after), deletion and heartbeats.
    case("expire-seconds", send(None, expire_in_seconds=5)),
    case("expire-a-day", send(None, expire_in_seconds=86400)),
    case("expire-timedelta", send(None, expire_in_seconds=dt.timedelta(minutes=3))),
    case("retention-seconds", send(None, retention_seconds=60)),
    case("retention-after-start", send(None, start_after="90 minutes", retention_seconds=3 * 86400)),
    case("delete-after-zero", send(None, delete_after_seconds=0)),
    case("delete-after-seconds", send(None, delete_after_seconds=3600)),
    case("heartbeat-seconds", send(None, heartbeat_seconds=10)),
    case("heartbeat-timedelta", send(None, heartbeat_seconds=dt.timedelta(minutes=1))),
    # Dead letter and ids.
    case("dead-letter", send(None, dead_letter="dlq")),
    case("id", send(None, id=FIXED_ID)),
    case("id-duplicate", send(1, id=FIXED_ID), send(2, id=FIXED_ID), returns=(True, False)),
    case("everything", send({"all": True}, **EVERYTHING)),
    case("everything-partitioned", send({"all": True}, **EVERYTHING), queue={"partition": True}),
    # Queue settings, and job options over them.
    case("queue-settings", send(), queue=CONFIGURED),
    case("queue-settings-partitioned", send(), queue={**CONFIGURED, "partition": True}),
    case("job-over-queue", send(None, **JOB_OVERRIDES), queue=CONFIGURED),
    case(
        "job-backoff-over-queue",
        send(None, retry_backoff=True, retry_delay=2, retry_delay_max=7),
        queue={**CONFIGURED, "retry_backoff": False, "retry_delay_max": None},
    ),
    case("queue-backoff-job-delay", send(None, retry_delay=0), queue={"retry_backoff": True}),
    # Policies (§3.5), on the shared table and on a partition of their own: conflicts answer None.
    *[
        case(f"policy-{policy}{suffix}", *sends, returns=returns, queue={"policy": policy, **extra})
        for policy, (sends, returns) in POLICY_SENDS.items()
        for suffix, extra in (("", {}), ("-partitioned", {"partition": True}))
    ],
    case(
        "policy-stately-throttled",
        send(1, singleton_seconds=3600),
        send(2, singleton_seconds=3600, singleton_key="x"),
        send(3, singleton_seconds=3600, singleton_key="x"),
        returns=(True, True, False),
        queue={"policy": "stately"},
    ),
    case(
        "policy-exclusive-settings",
        send(1, singleton_key="k"),
        send(2, singleton_key="k", retry_limit=9),
        returns=(True, False),
        queue={"policy": "exclusive", **CONFIGURED},
    ),
    # Batch inserts (§4.6): conflicting rows are left out.
    case(
        "insert-fields",
        insert(
            {"data": {"n": 0}},
            {"data": {"n": 1}, "priority": 3, "start_after": 45},
            {"data": {"n": 2}, "start_after": "30 seconds", "singleton_seconds": 60, "singleton_key": "ins"},
            {"data": {"n": 3}, "start_after": ISO_START},
            {"data": {"n": 4}, "start_after": DATETIME_START},
            {"data": {"n": 5}, "expire_in_seconds": 77, "retry_limit": 1, "retry_delay": 5, "retry_backoff": True},
            {"data": {"n": 6}, "retry_backoff": True, "retry_delay_max": 9},
            {"data": {"n": 7}, "retention_seconds": 300, "delete_after_seconds": 30, "heartbeat_seconds": 20},
            {"data": {"n": 8}, "dead_letter": "dlq"},
            {"data": {"n": 9}, "id": OTHER_ID, "singleton_key": "plain"},
            {"data": {"n": 10}, "group": {"id": "g", "tier": "t"}},
            {"data": {"n": 11}, "group": {"id": "h"}},
            {"data": {"n": 12}, "start_after": -30},
            {"data": {"n": 13}, "start_after": 0},
            {"data": {"n": 14}, "start_after": "2041-01-02T03:04:05+01:00"},
        ),
    ),
    case(
        "insert-into-configured-queue",
        insert({"data": {"n": 0}}, {"data": {"n": 1}, "retry_limit": 0, "start_after": "1 day"}),
        queue=CONFIGURED,
    ),
    case(
        "insert-conflicts",
        send({"n": 0}, id=FIXED_ID),
        insert(
            {"data": {"n": 1}, "id": FIXED_ID},
            {"data": {"n": 2}, "singleton_seconds": 3600},
            {"data": {"n": 3}, "singleton_seconds": 3600},
            {"data": {"n": 4}},
        ),
    ),
    case(
        "insert-short",
        insert({"data": {"n": 0}}, {"data": {"n": 1}}, {"data": {"n": 2}, "singleton_key": "a"}),
        queue={"policy": "short"},
    ),
    case(
        "insert-key-strict-fifo-partitioned",
        insert({"data": {"n": 0}, "singleton_key": "a"}, {"data": {"n": 1}, "singleton_key": "a"}),
        queue={"policy": "key_strict_fifo", "partition": True},
    ),
]


def sent_row(row: Mapping[str, Any], slot: int | None, side: str) -> dict[str, Any]:
    """A freshly sent row without its id, its clock readings as offsets (``side`` is ``python`` or ``node``).

    ``start_after`` is relative to ``created_on`` (absolute when given as a far-future timestamp),
    ``keep_until`` to ``start_after``, and ``singleton_on`` to the start of the slot holding ``created_on``. A
    debounced job in the next slot starts 1-2 s after that slot begins; pg-boss computes that delay from the
    client clock, so its lead is checked with slack and then left out (as in tests/test_interop.py).
    """
    created, start_after = row["created_on"], row["start_after"]
    normalised = {key: value for key, value in row.items() if key not in ("id", "created_on")}
    normalised["start_after"] = start_after if start_after >= FAR_FUTURE else start_after - created
    normalised["keep_until"] = row["keep_until"] - start_after
    for moment in ("started_on", "completed_on", "heartbeat_on", "source_created_on"):
        normalised[moment] = row[moment] is not None
    if row["singleton_on"] is not None:
        assert slot is not None, f"a row has singleton_on {row['singleton_on']} but its call asked for no slot"
        offset = row["singleton_on"] - slot_start(created, slot)
        normalised["singleton_on"] = offset
        if offset == dt.timedelta(seconds=slot):
            lead = (start_after - row["singleton_on"].replace(tzinfo=UTC)).total_seconds()
            low, high = (1.0, 2.0) if side == "python" else (0.5, 3.0)
            assert low <= lead < high, f"{side}: a debounced job starts {lead} s after its slot"
            normalised["start_after"] = "next slot + 1-2 s"
    return normalised


def slot_of(options: Mapping[str, Any]) -> int | None:
    value = options.get("singleton_seconds")
    return int(value.total_seconds()) if isinstance(value, dt.timedelta) else value


@dataclass
class Outcome:
    """What one side's calls of one case returned, and the rows they left (in call order, then inserts)."""

    results: list[Any]
    returns: list[Any]
    """What each :class:`Send` call returned."""
    rows: list[dict[str, Any] | None]
    """One normalised row per :class:`Send` (``None`` where it returned ``None``), then the inserted rows."""
    inserted_ids: list[uuid.UUID]


def collect(engine: Engine, schema: str, item: SendCase, results: list[Any], side: str) -> Outcome:
    rows = {row["id"]: row for row in job_rows(engine, schema, "name = :name", name=item.id)}
    collected: list[dict[str, Any] | None] = []
    send_returns = [result for call_, result in zip(item.calls, results, strict=True) if isinstance(call_, Send)]
    for call_, result in zip(item.sends, send_returns, strict=True):
        slot = call_.seconds if call_.seconds is not None else slot_of(call_.options)
        collected.append(None if result is None else sent_row(rows.pop(uuid.UUID(str(result))), slot, side))
    inserts = [call_ for call_ in item.calls if isinstance(call_, Insert)]
    for row in sorted(rows.values(), key=lambda row: json.dumps(row["data"], sort_keys=True)):
        job = next((found for batch in inserts if (found := batch.job_for(row["data"])) is not None), None)
        assert job is not None, f"{side}: a row nobody sent: {row}"
        collected.append(sent_row(row, slot_of(job), side))
    return Outcome(results, send_returns, collected, sorted(rows))


@dataclass
class SendRun:
    python_schema: str
    node_schema: str
    outcomes: dict[str, dict[str, Outcome]]
    """``outcomes[case id]["python" | "node"]``."""


@pytest.fixture(scope="module")
def sent_by_node(engine: Engine, pgboss12: PgBoss, new_schema: Callable[[str], str]) -> tuple[str, dict[str, Outcome]]:
    """Every case sent by pg-boss 12 in one run, once for both Python APIs."""
    theirs = new_schema("t12_send_js")
    script = Script()
    for name in DEAD_LETTER_QUEUES:
        script.add("createQueue", name)
    for item in CASES:
        script.add("createQueue", item.id, js_options(item.queue))
    indexes = {item.id: [call_.node(script, item.id) for call_ in item.calls] for item in CASES}
    results = script.run(pgboss12, theirs)
    outcomes = {
        item.id: collect(engine, theirs, item, [results[index] for index in indexes[item.id]], "node") for item in CASES
    }
    return theirs, outcomes


@pytest.fixture(scope="module")
def sent(
    engine: Engine,
    python_side: PythonSide,
    sent_by_node: tuple[str, dict[str, Outcome]],
    new_schema: Callable[[str], str],
) -> SendRun:
    """Every case sent by sqla_boss (on ``python_side``'s API), next to pg-boss's."""
    theirs, node_outcomes = sent_by_node
    ours = new_schema("t12_send_py")

    def send_all() -> SendRun:
        outcomes: dict[str, dict[str, Outcome]] = {}
        with python_side.transaction(ours) as boss:
            for name in DEAD_LETTER_QUEUES:
                boss.create_queue(name)
            for item in CASES:
                boss.create_queue(item.id, **item.queue)
        for item in CASES:
            with python_side.transaction(ours) as boss:
                results = [call_.python(boss, item.id) for call_ in item.calls]
            outcomes[item.id] = {
                "python": collect(engine, ours, item, results, "python"),
                "node": node_outcomes[item.id],
            }
        return SendRun(ours, theirs, outcomes)

    return python_side.run(send_all)


@pytest.mark.parametrize("item", CASES, ids=[item.id for item in CASES])
def test_send_writes_the_rows_pgboss_writes(sent: SendRun, item: SendCase) -> None:
    python, node = (sent.outcomes[item.id][side] for side in ("python", "node"))
    expected = item.expected_returns
    assert [result is not None for result in node.returns] == expected, "pg-boss does not behave as the case says"
    assert [result is not None for result in python.returns] == expected
    assert python.rows == node.rows
    assert len([row for row in python.rows if row is not None]) == sum(expected) + len(python.inserted_ids)
    for send_, python_id, node_id in zip(item.sends, python.returns, node.returns, strict=True):
        assert python_id is None or isinstance(python_id, uuid.UUID)
        if send_.options.get("id") is not None and python_id is not None:
            assert python_id == send_.options["id"]
            assert node_id == str(send_.options["id"])


def test_insert_returns_the_ids_inserted_as_pgboss_does_with_return_id(sent: SendRun) -> None:
    for item in CASES:
        outcome = sent.outcomes[item.id]
        for position, call_ in enumerate(item.calls):
            if isinstance(call_, Insert):
                node_ids = sorted(uuid.UUID(job_id) for job_id in outcome["node"].results[position])
                python_ids = sorted(outcome["python"].results[position])
                assert len(node_ids) == len(python_ids)
                assert python_ids == sorted(outcome["python"].inserted_ids)
                assert node_ids == sorted(outcome["node"].inserted_ids)
    conflicts = sent.outcomes["insert-conflicts"]["python"]
    assert len(conflicts.results[1]) == 2  # the duplicate id and the second job of the slot are left out
    assert OTHER_ID in sent.outcomes["insert-fields"]["python"].inserted_ids


def test_create_queue_makes_the_queue_rows_create_queue_makes(engine: Engine, sent: SendRun) -> None:
    names = [*DEAD_LETTER_QUEUES, *(item.id for item in CASES)]
    for name in names:
        ours = queue_row(engine, sent.python_schema, name)
        theirs = queue_row(engine, sent.node_schema, name)
        assert without(ours, *QUEUE_TIMES) == without(theirs, *QUEUE_TIMES), name
        assert ours is not None
        assert ours["created_on"] == ours["updated_on"]
        if ours["partition"]:
            assert ours["table_name"] == partition_name(name)
            assert relation_exists(engine, sent.python_schema, ours["table_name"])
    configured = queue_row(engine, sent.python_schema, "queue-settings")
    assert configured is not None
    assert {
        key: configured[key]
        for key in (
            "policy",
            "retry_limit",
            "retry_delay",
            "retry_backoff",
            "retry_delay_max",
            "expire_seconds",
            "retention_seconds",
            "deletion_seconds",
            "dead_letter",
            "partition",
            "table_name",
            "heartbeat_seconds",
            "notify",
            "warning_queued",
        )
    } == {
        "policy": "standard",
        "retry_limit": 5,
        "retry_delay": 9,
        "retry_backoff": True,
        "retry_delay_max": 100,
        "expire_seconds": 33,
        "retention_seconds": 600,
        "deletion_seconds": 120,
        "dead_letter": "dlq",
        "partition": False,
        "table_name": "job_common",
        "heartbeat_seconds": 30,
        "notify": True,
        "warning_queued": 50,
    }


def rows_of(sent: SendRun, case_id: str, side: str) -> list[dict[str, Any]]:
    return [row for row in sent.outcomes[case_id][side].rows if row is not None]


SETTINGS = (
    "retry_limit",
    "retry_delay",
    "retry_backoff",
    "retry_delay_max",
    "expire_seconds",
    "keep_until",
    "deletion_seconds",
    "dead_letter",
    "heartbeat_seconds",
    "policy",
)


@pytest.mark.parametrize("side", ["python", "node"])
def test_precedence_is_job_then_queue_then_builtin(sent: SendRun, side: str) -> None:
    def settings(case_id: str) -> list[tuple[Any, ...]]:
        return [tuple(row[key] for key in SETTINGS) for row in rows_of(sent, case_id, side)]

    seconds = dt.timedelta(seconds=1)
    # Built-in: the queue's defaults (retry_limit 2, no delay, 15 minutes, 14 days, 7 days).
    assert settings("no-data") == [(2, 0, False, None, 900, 14 * 86400 * seconds, 604800, None, None, "standard")]
    assert settings("queue-settings") == [(5, 9, True, 100, 33, 600 * seconds, 120, "dlq", 30, "standard")]
    assert settings("job-over-queue") == [(1, 0, False, 100, 5, 60 * seconds, 0, "dlq2", 15, "standard")]
    assert settings("job-backoff-over-queue") == [(5, 2, True, 7, 33, 600 * seconds, 120, "dlq", 30, "standard")]
    # retry_delay is stored as given: the backoff's floor of 1 s applies at fail time.
    assert settings("retry-backoff-no-delay")[0][:4] == (2, 0, True, None)
    assert rows_of(sent, "everything", side)[0]["policy"] == "standard"
    assert rows_of(sent, "everything-partitioned", side)[0]["group_tier"] == "gold"


@pytest.mark.parametrize("side", ["python", "node"])
def test_start_after_and_slots_follow_pgboss_12s_rules(sent: SendRun, side: str) -> None:
    def start_of(case_id: str) -> Any:
        return rows_of(sent, case_id, side)[0]["start_after"]

    seconds = dt.timedelta(seconds=1)
    assert start_of("start-after-seconds") == 5 * seconds
    assert start_of("start-after-fraction") == 1.5 * seconds
    assert start_of("start-after-negative") == start_of("start-after-zero") == start_of("no-data") == 0 * seconds
    assert start_of("start-after-interval") == 90 * 60 * seconds
    assert start_of("start-after-iso-z") == dt.datetime(2041, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert start_of("start-after-iso-offset") == dt.datetime(2041, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert start_of("start-after-datetime") == start_of("send-after-datetime") == DATETIME_START
    assert start_of("start-after-timedelta") == 120 * seconds
    assert rows_of(sent, "retention-after-start", side)[0]["keep_until"] == dt.timedelta(days=3)
    assert [row["singleton_on"] for row in rows_of(sent, "send-debounced", side)] == [
        dt.timedelta(0),
        dt.timedelta(hours=1),
    ]
    assert [row["singleton_on"] for row in rows_of(sent, "singleton-seconds-odd", side)] == [dt.timedelta(0)]


# ============================================================================== 2. both directions

DIRECTIONS = ("py", "js")
"""``py``: sqla_boss sends and pg-boss works the jobs; ``js``: pg-boss sends and sqla_boss works them."""

DEAD_SETTINGS = {
    "policy": "short",
    "retry_limit": 7,
    "expire_in_seconds": 11,
    "retention_seconds": 100,
    "delete_after_seconds": 50,
    "heartbeat_seconds": 20,
}
"""The dead letter queue's settings: its copies take them (§6.4); short, yet it takes any number of copies."""

WORK_QUEUES: dict[str, dict[str, Any]] = {
    "dead": DEAD_SETTINGS,
    "complete": {"partition": True},
    "fail-loop": {"retry_limit": 2, "retry_delay": 0, "dead_letter": "dead", "partition": True},
    "backoff": {"retry_limit": 3, "retry_delay": 10, "retry_backoff": True, "retry_delay_max": 35},
    "stately": {"policy": "stately", "retry_limit": 1, "dead_letter": "dead"},
    "unstarted": {"retry_limit": 1},
    "fence": {"retry_limit": 1},
}
"""The queues of part 2, once per direction (``<name>.<direction>``); the dead letter queues follow suit."""

FAIL_LOOP_OPTIONS = {"priority": 4, "singleton_key": "fk", "group": {"id": "g", "tier": "t"}}
"""What the dead-letter copy copies from the failed job."""

BACKOFF_DELAY, BACKOFF_MAX = 10, 35
STATELY_DELAY = 3600
"""The first stately job's retry delay: long enough that it never becomes due during the test."""

COMPLETIONS: dict[str, Any] = {
    "object": {"ok": True, "n": 1},
    "string": "done",
    "none": None,
    "list": [1, 2],
    "zero": 0,
    "false": False,
    "error": "error",
}
"""What each completed job is completed with, by label (``error``: an exception, see :func:`completion`)."""

STORED_OUTPUTS: dict[str, Any] = {
    "object": {"ok": True, "n": 1},
    "string": {"value": "done"},
    "none": None,
    "list": {"value": [1, 2]},
    "zero": {"value": 0},
    "false": {"value": False},
}
"""What both sides store as ``output`` for :data:`COMPLETIONS` (§6.2); ``error`` is checked apart."""


def completion(label: str, side: str) -> Any:
    if label == "error":
        return python_error("done badly") if side == "python" else node_error("done badly")
    return COMPLETIONS[label]


def queue_in(name: str, direction: str) -> str:
    return f"{name}.{direction}"


def queue_settings(settings: Mapping[str, Any], direction: str) -> dict[str, Any]:
    renamed = dict(settings)
    if renamed.get("dead_letter") is not None:
        renamed["dead_letter"] = queue_in(renamed["dead_letter"], direction)
    return renamed


def python_error(message: str) -> TypeError:
    """A raised and caught Python exception with an extra attribute, as a worker would fail a job with."""
    try:
        raise TypeError(message)
    except TypeError as error:
        error.code = "E_BOOM"  # type: ignore[attr-defined]
        return error


def node_error(message: str) -> dict[str, Any]:
    """The JavaScript counterpart of :func:`python_error`."""
    return js_error("TypeError", message, code="E_BOOM")


def error_output(output: Any, message: str) -> dict[str, Any]:
    """``output`` stored from a failure with a ``TypeError(message)`` carrying ``code``, its stack elided."""
    assert isinstance(output, dict), output
    assert set(output) == {"name", "message", "stack", "code"}, output
    assert f"TypeError: {message}" in output["stack"]
    assert {**output, "stack": "..."} == {"name": "TypeError", "message": message, "code": "E_BOOM", "stack": "..."}
    return {**output, "stack": "..."}


@dataclass
class Worked:
    """What happened to one direction's jobs, as seen by the side that worked them."""

    ids: dict[str, uuid.UUID] = field(default_factory=dict)
    """Job ids by label: ``complete:<label>``, ``fail-loop``, ``backoff``, ``unstarted``, ``fence``,
    ``stately:j1/j2``."""
    retry_counts: dict[str, list[int]] = field(default_factory=dict)
    """Scenario: the ``retry_count`` of the job at each fetch."""
    affected: dict[str, list[int]] = field(default_factory=dict)
    """Scenario: what each complete or fail call reported as affected."""
    backoff_bounds: list[tuple[float, float]] = field(default_factory=list)
    """For retry_count 0, 1, 2: bounds (low, high) of start_after minus the time of the failing call."""
    backoff_starts: list[dt.datetime] = field(default_factory=list)
    leftover: list[Any] = field(default_factory=list)
    """What a fetch after the last failure of the fail loop returned."""
    stately_fetched: list[uuid.UUID] = field(default_factory=list)
    """The ids the stately fetches returned: j1 by the sender, then j2 by the worker."""


@dataclass
class WorkRun:
    schema: str
    worked: dict[str, Worked]
    """By direction."""
    rows: dict[str, list[dict[str, Any]]]
    """Every job, by queue name, after everything ran."""


SCENARIOS = ("backoff", "unstarted", "fence")
"""The scenarios whose one job is sent without options (``fail-loop`` has :data:`FAIL_LOOP_OPTIONS`)."""


def send_work_python(boss: Any, worked: Worked) -> None:
    """The ``py`` direction's sends, but for the stately part (it needs transactions of its own)."""
    for label in COMPLETIONS:
        worked.ids[f"complete:{label}"] = boss.send(queue_in("complete", "py"), {"complete": label})
    worked.ids["fail-loop"] = boss.send(queue_in("fail-loop", "py"), {"scenario": "fail-loop"}, **FAIL_LOOP_OPTIONS)
    for scenario in SCENARIOS:
        worked.ids[scenario] = boss.send(queue_in(scenario, "py"), {"scenario": scenario})


def work_python(python_side: PythonSide, schema: str, worked: Worked) -> None:
    """sqla_boss works the ``js`` direction's jobs, one transaction per attempt, as a worker would; it settles
    with the fetched ``Job`` objects (fenced on their retry count) but for the stately and unstarted jobs."""

    def queue(name: str) -> str:
        return queue_in(name, "js")

    with python_side.transaction(schema) as boss:
        fetched = boss.fetch(queue("complete"), batch_size=len(COMPLETIONS))
        assert sorted(job.id for job in fetched) == sorted(worked.ids[f"complete:{label}"] for label in COMPLETIONS)
        worked.affected["complete"] = [
            boss.complete(queue("complete"), worked.ids[f"complete:{label}"], completion(label, "python"))
            for label in COMPLETIONS
        ]

    for scenario, attempts in (("fail-loop", 3), ("backoff", 4)):
        worked.retry_counts[scenario], worked.affected[scenario] = [], []
        for attempt in range(attempts):
            with python_side.transaction(schema) as boss:
                [job] = boss.fetch(queue(scenario), ignore_start_after=True)
                assert job.id == worked.ids[scenario]
                worked.retry_counts[scenario].append(job.retry_count)
                failing = python_error(f"{scenario} {attempt}")
                worked.affected[scenario].append(boss.fail(queue(scenario), job, failing))
                if scenario == "backoff" and attempt < 3:
                    now = boss.session.execute(text("SELECT now()")).scalar_one()
                    failed = boss.get_job_by_id(queue(scenario), job.id)
                    delay = (failed.start_after - now).total_seconds()
                    worked.backoff_bounds.append((delay, delay))
                    worked.backoff_starts.append(failed.start_after)
    with python_side.transaction(schema) as boss:
        worked.leftover = boss.fetch(queue("fail-loop"), ignore_start_after=True)

    with python_side.transaction(schema) as boss:
        worked.stately_fetched += [job.id for job in boss.fetch(queue("stately"))]
    with python_side.transaction(schema) as boss:
        worked.affected["stately"] = [boss.fail(queue("stately"), worked.ids["stately:j2"], python_error("stately j2"))]

    with python_side.transaction(schema) as boss:
        worked.affected["unstarted"] = [boss.fail(queue("unstarted"), worked.ids["unstarted"], "not started")]
    with python_side.transaction(schema) as boss:
        worked.retry_counts["unstarted"] = [job.retry_count for job in boss.fetch(queue("unstarted"))]

    # The fence (§6.1): a stale attempt's job object settles nothing; the current one does.
    with python_side.transaction(schema) as boss:
        [job] = boss.fetch(queue("fence"))
        worked.affected["fence"] = [boss.fail(queue("fence"), job, "first attempt")]
    with python_side.transaction(schema) as boss:
        [job] = boss.fetch(queue("fence"))
        stale = v46.Job(name=job.name, id=job.id, retry_count=job.retry_count - 1)
        worked.retry_counts["fence"] = [job.retry_count]
        worked.affected["fence"] += [
            boss.complete(queue("fence"), stale, {"attempt": "stale"}),
            boss.complete(queue("fence"), job, {"attempt": "current"}),
        ]


def attempt_of(index: int) -> dict[str, Any]:
    """The job object ``{id, retryCount}`` of the first job fetched by action ``index``, for a fenced call."""
    return {"id": ref(index, 0, "id"), "retryCount": ref(index, 0, "retryCount")}


def script_node_sends(script: Script) -> dict[str, int]:
    """pg-boss's sends for the ``js`` direction, including its half of the stately scenario."""
    indexes: dict[str, int] = {}
    for label in COMPLETIONS:
        indexes[f"complete:{label}"] = script.add("send", queue_in("complete", "js"), {"complete": label})
    indexes["fail-loop"] = script.add(
        "send", queue_in("fail-loop", "js"), {"scenario": "fail-loop"}, js_options(FAIL_LOOP_OPTIONS)
    )
    for scenario in SCENARIOS:
        indexes[scenario] = script.add("send", queue_in(scenario, "js"), {"scenario": scenario})
    stately = queue_in("stately", "js")
    indexes["stately:j1"] = script.add(
        "send", stately, {"stately": "j1"}, {"singletonKey": "k", "retryDelay": STATELY_DELAY}
    )
    indexes["stately-fetch"] = script.add("fetch", stately)
    indexes["stately-fail"] = script.add(
        "fail", stately, attempt_of(indexes["stately-fetch"]), node_error("stately j1")
    )
    indexes["stately:j2"] = script.add("send", stately, {"stately": "j2"}, {"singletonKey": "k"})
    return indexes


def script_node_work(script: Script, worked: Worked) -> Callable[[list[Any]], None]:
    """pg-boss works the ``py`` direction's jobs (settling with job objects, as its worker does, but for the
    stately and unstarted jobs); returns what reads the results into ``worked``."""

    def queue(name: str) -> str:
        return queue_in(name, "py")

    ids = {label: str(job_id) for label, job_id in worked.ids.items()}
    complete_fetch = script.add("fetch", queue("complete"), {"batchSize": len(COMPLETIONS)})
    completes = [
        script.add("complete", queue("complete"), ids[f"complete:{label}"], completion(label, "node"))
        for label in COMPLETIONS
    ]
    loops: dict[str, list[tuple[int, int]]] = {}
    for scenario, attempts in (("fail-loop", 3), ("backoff", 4)):
        loops[scenario] = []
        for attempt in range(attempts):
            fetch = script.add("fetch", queue(scenario), {"includeMetadata": True, "ignoreStartAfter": True})
            fail = script.add("fail", queue(scenario), attempt_of(fetch), node_error(f"{scenario} {attempt}"))
            loops[scenario].append((fetch, fail))
    leftover = script.add("fetch", queue("fail-loop"), {"ignoreStartAfter": True})
    stately_fetch = script.add("fetch", queue("stately"))
    stately_fail = script.add("fail", queue("stately"), ids["stately:j2"], node_error("stately j2"))
    unstarted_fail = script.add("fail", queue("unstarted"), ids["unstarted"], "not started")
    unstarted_fetch = script.add("fetch", queue("unstarted"))
    fence_fetch = script.add("fetch", queue("fence"))
    fence_fail = script.add("fail", queue("fence"), attempt_of(fence_fetch), "first attempt")
    fence_refetch = script.add("fetch", queue("fence"))
    fence_stale = script.add("complete", queue("fence"), {"id": ids["fence"], "retryCount": 0}, {"attempt": "stale"})
    fence_current = script.add("complete", queue("fence"), attempt_of(fence_refetch), {"attempt": "current"})

    def read(results: list[Any]) -> None:
        assert sorted(job["id"] for job in results[complete_fetch]) == sorted(
            ids[f"complete:{label}"] for label in COMPLETIONS
        )
        worked.affected["complete"] = [results[index]["affected"] for index in completes]
        for scenario, pairs in loops.items():
            jobs = [results[fetch][0] for fetch, _ in pairs]
            assert [job["id"] for job in jobs] == [ids[scenario]] * len(pairs)
            worked.retry_counts[scenario] = [job["retryCount"] for job in jobs]
            worked.affected[scenario] = [results[fail]["affected"] for _, fail in pairs]
        worked.leftover = results[leftover]
        # Each backoff failure happened between its fetch and the next one, whose metadata shows the start_after
        # it set; both readings are cut to milliseconds, hence the slack.
        jobs = [results[fetch][0] for fetch, _ in loops["backoff"]]
        for before, after in itertools.pairwise(jobs):
            start_after, started, started_before = (
                js_time(after["startAfter"]),
                js_time(after["startedOn"]),
                js_time(before["startedOn"]),
            )
            assert start_after is not None
            assert started is not None
            assert started_before is not None
            slack = JS_MS.total_seconds()
            worked.backoff_bounds.append(
                (
                    (start_after - started).total_seconds() - slack,
                    (start_after - started_before).total_seconds() + slack,
                )
            )
            worked.backoff_starts.append(start_after)
        worked.stately_fetched.extend(uuid.UUID(job["id"]) for job in results[stately_fetch])
        worked.affected["stately"] = [results[stately_fail]["affected"]]
        worked.affected["unstarted"] = [results[unstarted_fail]["affected"]]
        worked.retry_counts["unstarted"] = [job["retryCount"] for job in results[unstarted_fetch]]
        worked.retry_counts["fence"] = [results[fence_refetch][0]["retryCount"]]
        worked.affected["fence"] = [results[index]["affected"] for index in (fence_fail, fence_stale, fence_current)]

    return read


@pytest.fixture(scope="module")
def work(engine: Engine, pgboss12: PgBoss, python_side: PythonSide, new_schema: Callable[[str], str]) -> WorkRun:
    """Part 2 in one schema: sqla_boss sends, pg-boss works; then the other way round."""
    schema = new_schema("t12_work")
    py, js = Worked(), Worked()

    def send_python() -> None:
        # sqla_boss makes the queues and sends the py direction's jobs, with its half of the stately case.
        with python_side.transaction(schema) as boss:
            for direction in DIRECTIONS:
                for name, settings in WORK_QUEUES.items():
                    boss.create_queue(queue_in(name, direction), **queue_settings(settings, direction))
        with python_side.transaction(schema) as boss:
            send_work_python(boss, py)
            stately = queue_in("stately", "py")
            py.ids["stately:j1"] = boss.send(stately, {"stately": "j1"}, singleton_key="k", retry_delay=STATELY_DELAY)
        with python_side.transaction(schema) as boss:
            [job] = boss.fetch(stately)
            py.stately_fetched.append(job.id)
            assert boss.fail(stately, job, python_error("stately j1")) == 1
        with python_side.transaction(schema) as boss:
            py.ids["stately:j2"] = boss.send(stately, {"stately": "j2"}, singleton_key="k")

    python_side.run(send_python)

    # pg-boss sends the js direction's jobs and works the py direction's, in one process.
    script = Script()
    sends = script_node_sends(script)
    read = script_node_work(script, py)
    results = script.run(pgboss12, schema)
    read(results)
    for label in (*(f"complete:{label}" for label in COMPLETIONS), "fail-loop", *SCENARIOS, "stately:j1", "stately:j2"):
        js.ids[label] = uuid.UUID(results[sends[label]])
    js.stately_fetched += [uuid.UUID(job["id"]) for job in results[sends["stately-fetch"]]]
    assert results[sends["stately-fail"]]["affected"] == 1

    # sqla_boss works the js direction's jobs.
    python_side.run(work_python, python_side, schema, js)

    rows: dict[str, list[dict[str, Any]]] = {}
    for row in job_rows(engine, schema, "true"):
        rows.setdefault(row["name"], []).append(row)
    return WorkRun(schema, {"py": py, "js": js}, rows)


def rows_in(work: WorkRun, name: str, direction: str) -> list[dict[str, Any]]:
    return work.rows.get(queue_in(name, direction), [])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_completions_store_the_same_output(work: WorkRun, direction: str) -> None:
    worked = work.worked[direction]
    assert worked.affected["complete"] == [1] * len(COMPLETIONS)
    rows = {row["data"]["complete"]: row for row in rows_in(work, "complete", direction)}
    error_output(rows.pop("error")["output"], "done badly")
    assert {label: row["output"] for label, row in rows.items()} == STORED_OUTPUTS
    for row in rows.values():
        assert (row["state"], row["retry_count"]) == ("completed", 0)
        assert row["started_on"] is not None
        assert row["completed_on"] is not None
        assert row["heartbeat_on"] == row["started_on"]


def assert_dead_letter_copy(copy: Mapping[str, Any], source: Mapping[str, Any]) -> None:
    """§6.4: name, data, priority, key, group copied; the settings of the dead letter queue; provenance."""
    assert copy["name"] == source["dead_letter"]
    assert copy["id"] != source["id"]
    copied = ("priority", "data", "singleton_key", "group_id", "group_tier", "trace_context")
    assert {key: copy[key] for key in copied} == {key: source[key] for key in copied}
    assert {
        key: copy[key]
        for key in (
            "retry_limit",
            "retry_delay",
            "retry_backoff",
            "expire_seconds",
            "deletion_seconds",
            "heartbeat_seconds",
        )
    } == {
        "retry_limit": 7,
        "retry_delay": 0,
        "retry_backoff": False,
        "expire_seconds": 11,
        "deletion_seconds": 50,
        "heartbeat_seconds": 20,
    }
    assert copy["start_after"] == copy["created_on"]
    assert copy["keep_until"] == copy["created_on"] + dt.timedelta(seconds=100)
    assert (copy["source_name"], copy["source_id"], copy["source_created_on"]) == (
        source["name"],
        source["id"],
        source["created_on"],
    )
    assert (copy["source_retry_count"], copy["source_output"], copy["source_root_id"]) == (
        source["retry_count"],
        source["output"],
        source["id"],
    )
    assert {key: copy[key] for key in DEAD_LETTER_DEFAULTS} == DEAD_LETTER_DEFAULTS


DEAD_LETTER_DEFAULTS = {
    "state": "created",
    "retry_count": 0,
    "retry_delay_max": None,
    "singleton_on": None,
    "started_on": None,
    "completed_on": None,
    "output": None,
    "dead_letter": None,
    "policy": None,
    "heartbeat_on": None,
    "blocked": False,
    "blocking": False,
    "pending_dependencies": 0,
    "upsert_by_key": None,
}


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_fail_loop_retries_then_fails_and_dead_letters(work: WorkRun, direction: str) -> None:
    worked = work.worked[direction]
    assert worked.retry_counts["fail-loop"] == [0, 1, 2]
    assert worked.affected["fail-loop"] == [1, 1, 1]
    assert worked.leftover == []
    [row] = rows_in(work, "fail-loop", direction)
    assert (row["state"], row["retry_count"], row["retry_limit"]) == ("failed", 2, 2)
    assert row["completed_on"] is not None
    assert row["heartbeat_on"] is None
    error_output(row["output"], "fail-loop 2")
    [copy] = [copy for copy in rows_in(work, "dead", direction) if copy["data"] == row["data"]]
    assert_dead_letter_copy(copy, row)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_backoff_doubles_within_bounds_and_stops_at_retry_delay_max(work: WorkRun, direction: str) -> None:
    worked = work.worked[direction]
    assert worked.retry_counts["backoff"] == [0, 1, 2, 3]
    assert worked.affected["backoff"] == [1, 1, 1, 1]
    assert len(worked.backoff_bounds) == 3
    for count, (low, high) in enumerate(worked.backoff_bounds):
        # start_after - now lies in [d * 2^c, d * 2^(c+1)), capped at the maximum; the bounds hold it.
        floor, ceiling = min(BACKOFF_DELAY * 2**count, BACKOFF_MAX), min(BACKOFF_DELAY * 2 ** (count + 1), BACKOFF_MAX)
        assert high >= floor, (count, low, high)
        assert low <= ceiling, (count, low, high)
        if direction == "js":
            assert low == high
            assert low < ceiling or ceiling == BACKOFF_MAX
    if direction == "js":
        assert worked.backoff_bounds[2] == (BACKOFF_MAX, BACKOFF_MAX)  # 40-80 s, capped
    [row] = rows_in(work, "backoff", direction)
    assert (row["state"], row["retry_count"], row["retry_delay"], row["retry_backoff"], row["retry_delay_max"]) == (
        "failed",
        3,
        BACKOFF_DELAY,
        True,
        BACKOFF_MAX,
    )
    # The last failure left start_after as the previous one set it.
    assert abs(row["start_after"] - worked.backoff_starts[-1]) < JS_MS
    error_output(row["output"], "backoff 3")


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_stately_failure_with_a_taken_retry_slot_fails_for_good(work: WorkRun, direction: str) -> None:
    # j1 of key k waits in retry, so failing j2 of the same key cannot re-insert it as retry: it goes straight
    # to failed, with its original start_after, and to the dead letter queue (§3.5).
    worked = work.worked[direction]
    assert worked.stately_fetched == [worked.ids["stately:j1"], worked.ids["stately:j2"]]
    assert worked.affected["stately"] == [1]
    first, second = rows_in(work, "stately", direction)
    assert (first["id"], first["state"], first["retry_count"]) == (worked.ids["stately:j1"], "retry", 0)
    assert first["start_after"] - first["created_on"] >= dt.timedelta(seconds=STATELY_DELAY)
    assert first["completed_on"] is None
    error_output(first["output"], "stately j1")
    assert (second["id"], second["state"], second["retry_count"]) == (worked.ids["stately:j2"], "failed", 0)
    assert second["start_after"] == second["created_on"]
    assert second["completed_on"] is not None
    error_output(second["output"], "stately j2")
    [copy] = [copy for copy in rows_in(work, "dead", direction) if "stately" in copy["data"]]
    assert_dead_letter_copy(copy, second)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_failing_an_unstarted_job_uses_no_retry(work: WorkRun, direction: str) -> None:
    worked = work.worked[direction]
    assert worked.affected["unstarted"] == [1]
    assert worked.retry_counts["unstarted"] == [0]
    [row] = rows_in(work, "unstarted", direction)
    assert (row["state"], row["retry_count"], row["output"]) == ("active", 0, {"value": "not started"})


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_stale_attempt_settles_nothing_across_runtimes(work: WorkRun, direction: str) -> None:
    worked = work.worked[direction]
    assert worked.retry_counts["fence"] == [1]
    assert worked.affected["fence"] == [1, 0, 1]  # fail (current), complete (stale), complete (current)
    [row] = rows_in(work, "fence", direction)
    assert (row["state"], row["retry_count"], row["output"]) == ("completed", 1, {"attempt": "current"})


def worked_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row without its ids and direction; clock readings reduced to what both directions share."""
    normalised = {key: value for key, value in row.items() if key not in ("id", "created_on", "source_created_on")}
    for key in ("name", "dead_letter", "source_name"):
        normalised[key] = row[key] and row[key].rpartition(".")[0]
    normalised["source_id"] = normalised["source_root_id"] = row["source_id"] is not None
    normalised["start_after"] = "at creation" if row["start_after"] == row["created_on"] else "later"
    for moment in ("started_on", "completed_on", "heartbeat_on"):
        normalised[moment] = row[moment] is not None
    normalised["keep_until"] = row["keep_until"] - row["created_on"]
    for key in ("output", "source_output"):
        value = row[key]
        if isinstance(value, dict) and "stack" in value:
            normalised[key] = error_output(value, value["message"])
    return normalised


@pytest.mark.parametrize("name", list(WORK_QUEUES))
def test_both_directions_leave_the_same_rows(work: WorkRun, name: str) -> None:
    py, js = (
        sorted((worked_row(row) for row in rows_in(work, name, direction)), key=lambda row: json.dumps(row["data"]))
        for direction in DIRECTIONS
    )
    assert py
    assert py == js


# ========================================================================== 3. groups and heartbeats

GROUP_JOBS = [
    *({"data": {"g": n}, "group": {"id": "G", "tier": "gold"}} for n in range(4)),
    *({"data": {"h": n}, "group": {"id": "H"}} for n in range(2)),
    {"data": {"none": 0}},
]
"""Seven jobs: four of group G (tier gold), two of group H (no tier), one without a group."""

GROUP_ROUNDS: list[tuple[Any, int]] = [
    (1, 3),  # one G, one H, the group-less job
    ({"default": 2, "tiers": {"gold": 3}}, 3),  # G has 1 active of 3: two more; H has 1 of 2: one more
    ({"default": 2}, 0),  # G has 3 active, H 2: none
    ({"default": 1, "tiers": {"gold": 4}}, 1),  # G has 3 of 4: the last one
]
"""Fetches of batch 10 with ``group_concurrency``, taken in turn by the two sides, and how many each gets."""

BEAT_SECONDS = 30


class HeldSession:
    """One session over several transactions whose objects are not expired at commit: a worker holding the jobs
    it fetched across the other side's calls. Use inside :meth:`PythonSide.run`."""

    def __init__(self, side: PythonSide, schema: str) -> None:
        translate = {"schema_translate_map": schema_translate_map(schema)}
        if side.async_engine is None:
            self.session = Session(side.engine.execution_options(**translate), expire_on_commit=False)
            self.boss: Any = Boss(self.session, schema=schema)
        else:
            owner = AsyncSession(side.async_engine.execution_options(**translate), expire_on_commit=False)
            self.session = owner.sync_session
            self.boss = AwaitingBoss(AsyncBoss(owner, schema=schema))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.session.begin():
            yield self.boss


@dataclass
class Shared:
    """Part 3's record: what each side's calls returned, by label, and heartbeat readings from the rows."""

    schema: str
    python: dict[str, Any] = field(default_factory=dict)
    node: dict[str, Any] = field(default_factory=dict)
    beats: dict[str, list[dt.datetime]] = field(default_factory=dict)
    """By direction: the job's ``heartbeat_on`` after each step, read from the row."""
    started: dict[str, list[dt.datetime]] = field(default_factory=dict)
    """By direction: the job's ``started_on`` at the same readings."""


def beat_reading(engine: Engine, shared: Shared, direction: str, job_id: Any) -> None:
    [row] = job_rows(engine, shared.schema, "id = :id", id=job_id)
    shared.beats.setdefault(direction, []).append(row["heartbeat_on"])
    shared.started.setdefault(direction, []).append(row["started_on"])


@pytest.fixture(scope="module")
def shared(engine: Engine, pgboss12: PgBoss, python_side: PythonSide, new_schema: Callable[[str], str]) -> Shared:
    """Groups fetched in turn by both sides, and heartbeats of jobs one side holds touched by the other:
    ``py``: sqla_boss fetches first and holds the job; ``js``: pg-boss does."""
    run = Shared(new_schema("t12_shared"))
    schema, py, js = run.schema, run.python, run.node
    holder: list[HeldSession] = []
    held: list[Any] = []

    def groups(side: dict[str, Any], direction: str, round_: int, result: Any) -> None:
        side[f"groups.{direction}:{round_}"] = result

    def prepare() -> None:
        with python_side.transaction(schema) as boss:
            for direction in DIRECTIONS:
                boss.create_queue(queue_in("groups", direction), partition=direction == "js")
                boss.create_queue(queue_in("beat", direction), heartbeat_seconds=BEAT_SECONDS, retry_delay=0)
                boss.insert([{"name": queue_in("groups", direction), **job} for job in GROUP_JOBS])
                py[f"beat.{direction}"] = boss.send(queue_in("beat", direction), {"beat": direction})
                # Never due: the touches of a job that is not active.
                py[f"idle.{direction}"] = boss.send(queue_in("beat", direction), {"idle": direction}, start_after=3600)
        with python_side.transaction(schema) as boss:
            jobs = boss.fetch(queue_in("groups", "py"), batch_size=10, group_concurrency=GROUP_ROUNDS[0][0])
            groups(py, "py", 0, len(jobs))
        holder.append(HeldSession(python_side, schema))
        with holder[0].transaction() as boss:
            [job] = boss.fetch(queue_in("beat", "py"))
            held.append(job)
            py["beat.py:fetched"] = (job.retry_count, job.heartbeat_seconds)
        beat_reading(engine, run, "py", py["beat.py"])

    python_side.run(prepare)
    beat_py, beat_js = str(py["beat.py"]), str(py["beat.js"])

    def node_round(script: Script, direction: str, round_: int) -> tuple[str, int]:
        options = {"batchSize": 10, "groupConcurrency": GROUP_ROUNDS[round_][0]}
        return f"groups.{direction}:{round_}", script.add("fetch", queue_in("groups", direction), options)

    # pg-boss: group rounds 2 (py) and 1 (js); touches the job sqla_boss holds, fails it and fetches it again;
    # fetches and holds the js job.
    script = Script()
    labels = dict([node_round(script, "py", 1), node_round(script, "js", 0)])
    beat = queue_in("beat", "py")
    labels["beat.py:touch-id"] = script.add("touch", beat, beat_py)
    labels["beat.py:touch-current"] = script.add("touch", beat, {"id": beat_py, "retryCount": 0})
    labels["beat.py:touch-stale"] = script.add("touch", beat, {"id": beat_py, "retryCount": 1})
    labels["beat.py:touch-idle"] = script.add("touch", beat, str(py["idle.py"]))
    labels["beat.py:read"] = script.add("getJobById", beat, beat_py)
    labels["beat.py:fail"] = script.add("fail", beat, {"id": beat_py, "retryCount": 0}, "heartbeat lost")
    labels["beat.py:refetch"] = script.add("fetch", beat)
    labels["beat.js:fetch"] = script.add("fetch", queue_in("beat", "js"))
    results = script.run(pgboss12, schema)
    js.update({label: results[index] for label, index in labels.items()})
    js["groups.py:1"], js["groups.js:0"] = len(js["groups.py:1"]), len(js["groups.js:0"])

    def middle() -> None:
        beat_reading(engine, run, "py", py["beat.py"])
        beat_reading(engine, run, "js", py["beat.js"])
        with python_side.transaction(schema) as boss:
            groups(
                py, "py", 2, len(boss.fetch(queue_in("groups", "py"), batch_size=10, group_concurrency={"default": 2}))
            )
            rounds = boss.fetch(queue_in("groups", "js"), batch_size=10, group_concurrency=GROUP_ROUNDS[1][0])
            groups(py, "js", 1, len(rounds))
        # The job sqla_boss holds was failed and fetched again by pg-boss: its stale attempt settles nothing.
        with holder[0].transaction() as boss:
            py["beat.py:touch-stale"] = boss.touch(queue_in("beat", "py"), held[0])
            py["beat.py:complete-stale"] = boss.complete(queue_in("beat", "py"), held[0], {"stale": True})
            py["beat.py:touch-id"] = boss.touch(queue_in("beat", "py"), py["beat.py"])
        beat_reading(engine, run, "py", py["beat.py"])
        # sqla_boss touches the job pg-boss holds, by id and as a Job object, then fails it and fetches it again.
        beat = queue_in("beat", "js")
        with python_side.transaction(schema) as boss:
            py["beat.js:touch-id"] = boss.touch(beat, py["beat.js"])
            py["beat.js:touch-job"] = boss.touch(beat, boss.get_job_by_id(beat, py["beat.js"]))
            py["beat.js:touch-idle"] = boss.touch(beat, py["idle.js"])
        beat_reading(engine, run, "js", py["beat.js"])
        with python_side.transaction(schema) as boss:
            py["beat.js:fail"] = boss.fail(beat, boss.get_job_by_id(beat, py["beat.js"]), "heartbeat lost")
        with python_side.transaction(schema) as boss:
            [job] = boss.fetch(beat)
            py["beat.js:refetched"] = (job.retry_count, job.heartbeat_seconds)
        beat_reading(engine, run, "js", py["beat.js"])

    python_side.run(middle)

    # pg-boss: group rounds 4 (py) and 3 (js); its stale attempt of the js job settles nothing; it touches the
    # attempt sqla_boss holds.
    script = Script()
    labels = dict([node_round(script, "py", 3), node_round(script, "js", 2)])
    beat = queue_in("beat", "js")
    labels["beat.js:touch-stale"] = script.add("touch", beat, {"id": beat_js, "retryCount": 0})
    labels["beat.js:complete-stale"] = script.add("complete", beat, {"id": beat_js, "retryCount": 0}, {"stale": 1})
    labels["beat.js:touch-id"] = script.add("touch", beat, beat_js)
    results = script.run(pgboss12, schema)
    js.update({label: results[index] for label, index in labels.items()})
    js["groups.py:3"], js["groups.js:2"] = len(js["groups.py:3"]), len(js["groups.js:2"])

    def finish() -> None:
        beat_reading(engine, run, "js", py["beat.js"])
        with python_side.transaction(schema) as boss:
            rounds = boss.fetch(queue_in("groups", "js"), batch_size=10, group_concurrency=GROUP_ROUNDS[3][0])
            groups(py, "js", 3, len(rounds))
        holder[0].session.close()

    python_side.run(finish)
    return run


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_group_concurrency_counts_the_groups_active_jobs_whichever_side_fetched_them(
    engine: Engine, shared: Shared, direction: str
) -> None:
    # py: sqla_boss takes rounds 1 and 3, pg-boss 2 and 4; js: the other way round.
    first, second = (shared.python, shared.node) if direction == "py" else (shared.node, shared.python)
    got = [(first if round_ % 2 == 0 else second)[f"groups.{direction}:{round_}"] for round_ in range(4)]
    assert got == [count for _, count in GROUP_ROUNDS]
    rows = job_rows(engine, shared.schema, "name = :name", name=queue_in("groups", direction))
    assert [row["state"] for row in rows] == ["active"] * len(GROUP_JOBS)
    assert sorted((row["group_id"] or "", row["group_tier"] or "") for row in rows) == sorted(
        (job.get("group", {}).get("id", ""), job.get("group", {}).get("tier", "")) for job in GROUP_JOBS
    )


def test_each_side_touches_the_job_the_other_holds(shared: Shared) -> None:
    py, js = shared.python, shared.node
    # py: sqla_boss fetched (retry 0); pg-boss touched it by id and by its attempt, not by a stale one.
    assert py["beat.py:fetched"] == (0, BEAT_SECONDS)
    assert [js[f"beat.py:{how}"]["affected"] for how in ("touch-id", "touch-current", "touch-stale", "touch-idle")] == [
        1,
        1,
        0,
        0,
    ]
    assert js["beat.py:read"]["heartbeatSeconds"] == BEAT_SECONDS
    # pg-boss failed it and fetched it again (retry 1): the attempt sqla_boss still holds settles nothing.
    assert js["beat.py:fail"]["affected"] == 1
    assert [job["retryCount"] for job in js["beat.py:refetch"]] == [1]
    assert (py["beat.py:touch-stale"], py["beat.py:complete-stale"], py["beat.py:touch-id"]) == (0, 0, 1)
    # js: pg-boss fetched it; sqla_boss touched it by id and as a Job object, failed it and fetched it again.
    assert [(job["retryCount"], job["heartbeatSeconds"]) for job in js["beat.js:fetch"]] == [(0, BEAT_SECONDS)]
    assert (py["beat.js:touch-id"], py["beat.js:touch-job"], py["beat.js:touch-idle"]) == (1, 1, 0)
    assert (py["beat.js:fail"], py["beat.js:refetched"]) == (1, (1, BEAT_SECONDS))
    assert [js[f"beat.js:{how}"]["affected"] for how in ("touch-stale", "complete-stale", "touch-id")] == [0, 0, 1]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_fetch_starts_the_heartbeat_and_a_touch_moves_it(shared: Shared, direction: str) -> None:
    beats, started = shared.beats[direction], shared.started[direction]
    touched, fetched = "touched", "fetched"
    # Readings of the row: heartbeat_on against started_on.
    steps = {
        # fetched by sqla_boss; touched, failed and fetched again by pg-boss; touched by sqla_boss.
        "py": [fetched, fetched, touched],
        # fetched by pg-boss; touched by sqla_boss; fetched again by sqla_boss; touched by pg-boss.
        "js": [fetched, touched, fetched, touched],
    }[direction]
    assert len(beats) == len(steps)
    for step, beat, began in zip(steps, beats, started, strict=True):
        assert beat == began if step == fetched else beat > began, (step, beat, began)
    assert all(later > earlier for earlier, later in itertools.pairwise(beats))
    if direction == "py":
        # pg-boss's own reading after its touches, before it failed the job.
        read = shared.node["beat.py:read"]
        node_beat, node_start = js_time(read["heartbeatOn"]), js_time(read["startedOn"])
        assert node_beat is not None
        assert node_start is not None
        assert node_beat > node_start
        assert abs(node_start - started[0]) < JS_MS
