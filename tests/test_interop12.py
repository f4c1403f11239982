"""sqla_boss and the real pg-boss 12.38.0 on schema version 46: the same rows, and each works the other's jobs,
queues, schedules and subscriptions.

The model is tests/test_interop.py (pg-boss 10.4.2). Every schema here is installed by sqla_boss
(:func:`sqla_boss.v46.ddl.install`), and pg-boss 12 starts on it with :data:`QUIET`: no migration, no
supervisor, no timekeeper, no instance row, so it only does what the test asks. Each part runs its Node calls
in one or two driver runs, in a module-scoped fixture; the parametrised tests then compare what was recorded.

1. **Same rows.** Every send option, every policy, shared and partitioned queues, ``insert`` batches,
   ``send_after`` / ``send_throttled`` / ``send_debounced``, sent by Python to one schema and by Node to another
   with the same queues: the rows agree in every column but ``id``, clock readings compared as offsets
   (:func:`sent_row`); the queues made by ``createQueue`` and ``create_queue`` with every option agree, and
   sends to notify-enabled queues NOTIFY on pg-boss 12's channel alike.
2. **Both directions.** Jobs sent by one side are fetched, completed, failed, cancelled, resumed, retried and
   deleted by the other: outputs, retry counts, backoff bounds under ``retry_delay_max``, fences on
   ``(id, retry_count)``, and dead-letter copies.
3. **Groups and heartbeats.** ``group_concurrency`` counts the active jobs of a group whichever side fetched
   them; each side touches the jobs the other holds, and a stale attempt settles nothing.
4. **Queues, schedules and subscriptions** made by either side are read, used, updated and deleted by the
   other; each side publishes to the other's subscribers.
5. **Refusals.** What both sides refuse, and where sqla_boss refuses on purpose what pg-boss takes (a zone-less
   ``start_after``, an ISO 8601 duration, an option it does not know, ``update_queue`` of a missing queue) or
   takes what pg-boss fails on (a schedule's string or array data).

sqla_boss's side runs on both repository APIs (``python_side``, parametrised ``sync`` / ``async``); the Node
runs of parts 1 and 5 run once for both.
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

import psycopg
import pytest
from apis import APIS, AwaitingBoss
from pgboss import (  # noqa: F401  (the fixtures pgboss12 and pgboss_install)
    PgBoss,
    call,
    node_connection_string,
    partition_name,
    pgboss12_fixture,
    pgboss_install_fixture,
    ref,
    start,
)
from sqlalchemy import URL, Engine, inspect, text
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
from sqla_boss.errors import (
    DeadLetterQueueNotFoundError,
    InvalidOptionError,
    InvalidQueueNameError,
    QueueInUseError,
    QueueNotFoundError,
    UnsupportedOperationError,
)
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map
from sqla_boss.v46 import ddl
from sqla_boss.v46 import models as v46
from sqla_boss.v46.operations import notify_channel

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
def python_side(request: pytest.FixtureRequest, engine: Engine, database_url: URL) -> Iterator[PythonSide]:
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
    case("start-after-iso-lower-z", send(None, start_after=ISO_START.lower())),
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
    # pg-boss 12's names take periods and slashes; a partition's table is named from the name's hash.
    case("odd/queue.name", send({"odd": True}), queue={"partition": True, "policy": "short"}),
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
    notified: dict[str, list[str]]
    """The payloads (queue names) on each side's schema channel while it sent (§10), by side."""


@contextlib.contextmanager
def notifications(database_url: URL, schema: str) -> Iterator[list[str]]:
    """The payloads pg-boss 12's NOTIFY channel of ``schema`` carries while the block runs (read at its end)."""
    payloads: list[str] = []
    with psycopg.connect(node_connection_string(database_url), autocommit=True) as connection:
        connection.add_notify_handler(lambda notify: payloads.append(notify.payload))
        connection.execute(f"LISTEN {quote_identifier(notify_channel(schema))}")
        yield payloads
        connection.execute("SELECT 1")  # delivers what the commits before it notified


@pytest.fixture(scope="module")
def sent_by_node(
    engine: Engine, database_url: URL, pgboss12: PgBoss, new_schema: Callable[[str], str]
) -> tuple[str, dict[str, Outcome], list[str]]:
    """Every case sent by pg-boss 12 in one run, once for both Python APIs."""
    theirs = new_schema("t12_send_js")
    script = Script()
    for name in DEAD_LETTER_QUEUES:
        script.add("createQueue", name)
    for item in CASES:
        script.add("createQueue", item.id, js_options(item.queue))
    indexes = {item.id: [call_.node(script, item.id) for call_ in item.calls] for item in CASES}
    with notifications(database_url, theirs) as notified:
        results = script.run(pgboss12, theirs)
    outcomes = {
        item.id: collect(engine, theirs, item, [results[index] for index in indexes[item.id]], "node") for item in CASES
    }
    return theirs, outcomes, notified


@pytest.fixture(scope="module")
def sent(
    engine: Engine,
    database_url: URL,
    python_side: PythonSide,
    sent_by_node: tuple[str, dict[str, Outcome], list[str]],
    new_schema: Callable[[str], str],
) -> SendRun:
    """Every case sent by sqla_boss (on ``python_side``'s API), next to pg-boss's."""
    theirs, node_outcomes, node_notified = sent_by_node
    ours = new_schema("t12_send_py")

    def send_all() -> SendRun:
        outcomes: dict[str, dict[str, Outcome]] = {}
        with python_side.transaction(ours) as boss:
            for name in DEAD_LETTER_QUEUES:
                boss.create_queue(name)
            for item in CASES:
                boss.create_queue(item.id, **item.queue)
        with notifications(database_url, ours) as notified:
            for item in CASES:
                with python_side.transaction(ours) as boss:
                    results = [call_.python(boss, item.id) for call_ in item.calls]
                outcomes[item.id] = {
                    "python": collect(engine, ours, item, results, "python"),
                    "node": node_outcomes[item.id],
                }
        return SendRun(ours, theirs, outcomes, {"python": notified, "node": node_notified})

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


def test_sends_to_notify_queues_notify_on_pgboss_12s_channel(sent: SendRun) -> None:
    # One notification per committed statement that inserted a due job into a notify-enabled queue; PostgreSQL
    # folds equal ones of one transaction, and sqla_boss sends each case in one.
    expected = {item.id for item in CASES if item.queue.get("notify")}
    assert expected
    assert set(sent.notified["node"]) == set(sent.notified["python"]) == expected


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
    "lifecycle": {"retry_limit": 0},
}
"""The queues of part 2, once per direction (``<name>.<direction>``); the dead letter queues follow suit."""

FAIL_LOOP_OPTIONS = {"priority": 4, "singleton_key": "fk", "singleton_seconds": 3600, "group": {"id": "g", "tier": "t"}}
"""What the dead-letter copy copies from the failed job (all but the throttling slot)."""

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

LIFECYCLE = {"cancel": {}, "retry": {"priority": 9}, "delete": {}, "queued": {}}
"""Jobs of ``lifecycle``: cancelled then resumed; fetched (first, by priority), failed for good, then retried;
deleted; completed while still queued (``include_queued``)."""


def send_work_python(boss: Any, worked: Worked) -> None:
    """The ``py`` direction's sends, but for the stately part (it needs transactions of its own)."""
    for label in COMPLETIONS:
        worked.ids[f"complete:{label}"] = boss.send(queue_in("complete", "py"), {"complete": label})
    worked.ids["fail-loop"] = boss.send(queue_in("fail-loop", "py"), {"scenario": "fail-loop"}, **FAIL_LOOP_OPTIONS)
    for scenario in SCENARIOS:
        worked.ids[scenario] = boss.send(queue_in(scenario, "py"), {"scenario": scenario})
    for label, options in LIFECYCLE.items():
        worked.ids[f"life:{label}"] = boss.send(queue_in("lifecycle", "py"), {"life": label}, **options)


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

    life, ids = queue("lifecycle"), worked.ids
    with python_side.transaction(schema) as boss:
        affected = [boss.cancel(life, ids["life:cancel"]), boss.resume(life, ids["life:cancel"])]
        assert [job.id for job in boss.fetch(life)] == [ids["life:retry"]]
    with python_side.transaction(schema) as boss:
        affected += [boss.fail(life, ids["life:retry"]), boss.retry(life, ids["life:retry"])]
        affected += [boss.delete_job(life, ids["life:delete"])]
        affected += [boss.complete(life, ids["life:queued"], include_queued=True)]
    worked.affected["lifecycle"] = affected


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
    for label, options in LIFECYCLE.items():
        indexes[f"life:{label}"] = script.add("send", queue_in("lifecycle", "js"), {"life": label}, js_options(options))
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
    life = queue("lifecycle")
    lifecycle = [
        script.add("cancel", life, ids["life:cancel"]),
        script.add("resume", life, ids["life:cancel"]),
        script.add("fetch", life),
        script.add("fail", life, ids["life:retry"]),
        script.add("retry", life, ids["life:retry"]),
        script.add("deleteJob", life, ids["life:delete"]),
        script.add("complete", life, ids["life:queued"], None, {"includeQueued": True}),
    ]

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
        fetched = results[lifecycle.pop(2)]
        assert [job["id"] for job in fetched] == [ids["life:retry"]]
        worked.affected["lifecycle"] = [results[index]["affected"] for index in lifecycle]

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
    labels = (*(f"complete:{label}" for label in COMPLETIONS), *(f"life:{label}" for label in LIFECYCLE))
    for label in (*labels, "fail-loop", *SCENARIOS, "stately:j1", "stately:j2"):
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


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_cancel_resume_retry_delete_and_complete_queued_across_runtimes(work: WorkRun, direction: str) -> None:
    worked = work.worked[direction]
    assert worked.affected["lifecycle"] == [1] * 6
    rows = {row["data"]["life"]: row for row in rows_in(work, "lifecycle", direction)}
    assert set(rows) == {"cancel", "retry", "queued"}
    resumed, retried, queued = rows["cancel"], rows["retry"], rows["queued"]
    # Resuming starts the job no earlier than now.
    assert (resumed["state"], resumed["completed_on"]) == ("created", None)
    assert resumed["start_after"] > resumed["created_on"]
    # A retried job gets one more try and loses completed_on; the failure's output (none here) stays.
    assert (retried["state"], retried["retry_limit"], retried["retry_count"]) == ("retry", 1, 0)
    assert (retried["completed_on"], retried["output"]) == (None, None)
    assert retried["started_on"] is not None
    assert (queued["state"], queued["started_on"], queued["output"]) == ("completed", None, None)
    assert queued["completed_on"] is not None


def worked_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row without its ids and direction; clock readings reduced to what both directions share."""
    normalised = {key: value for key, value in row.items() if key not in ("id", "created_on", "source_created_on")}
    for key in ("name", "dead_letter", "source_name"):
        normalised[key] = row[key] and row[key].rpartition(".")[0]
    normalised["source_id"] = normalised["source_root_id"] = row["source_id"] is not None
    normalised["start_after"] = "at creation" if row["start_after"] == row["created_on"] else "later"
    for moment in ("started_on", "completed_on", "heartbeat_on", "singleton_on"):
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


# ============================================================= 4. queues, schedules and subscriptions

QUEUE_SET: dict[str, dict[str, Any]] = {
    "dlq": {},
    "every": {
        "policy": "exclusive",
        "retry_limit": 3,
        "retry_delay": 4,
        "retry_backoff": True,
        "retry_delay_max": 40,
        "expire_in_seconds": 50,
        "retention_seconds": 3600,
        "delete_after_seconds": 60,
        "dead_letter": "dlq",
        "partition": True,
        "heartbeat_seconds": 12,
        "notify": True,
        "warning_queue_size": 5,
    },
    **{policy: {"policy": policy} for policy in POLICIES},
    "fifo-partitioned": {"policy": "key_strict_fifo", "partition": True},
    "update": {"retry_limit": 1, "partition": True},
    "clear": {"retry_backoff": True, "retry_delay_max": 9, "heartbeat_seconds": 10, "dead_letter": "dlq"},
    "empty": {"partition": True},
    "empty-shared": {},
    "full": {},
    "full-partitioned": {"partition": True},
}
"""The queues of part 4, made once by each side: ``py-<name>`` by sqla_boss, ``js-<name>`` by pg-boss."""

UPDATE_ALL = {
    "retry_limit": 5,
    "retry_delay": 6,
    "retry_backoff": True,
    "retry_delay_max": 60,
    "expire_in_seconds": 70,
    "retention_seconds": 80,
    "delete_after_seconds": 90,
    "dead_letter": "dlq",
    "heartbeat_seconds": 11,
    "notify": True,
    "warning_queue_size": 7,
}
"""Every setting ``update_queue`` changes, for ``update``."""

CLEAR = {"retry_delay_max": None, "heartbeat_seconds": None, "dead_letter": None}
"""What ``update_queue`` clears with ``None`` (pg-boss 12: ``null``), for ``clear``."""

USED_SENDS = {
    "standard": (2, [True, True]),
    "short": (1, [True, False]),
    "singleton": (1, [True, True]),
    "stately": (1, [True, False]),
    "exclusive": (1, [True, False]),
    "key_strict_fifo": (1, [True, True]),
}
"""Policy queues the other side sends two jobs of key ``k`` to and then fetches a batch of two from: how many
the batch holds, and which sends return an id."""

DELETED = ("empty", "empty-shared", "full", "full-partitioned")
"""Queues each side deletes of the other's; the ``full`` ones hold a job (pg-boss 12 deletes them too)."""
FULL = ("full", "full-partitioned")

QUEUE_TIMES_AND_NAMES = ("name", "table_name", "dead_letter", "created_on", "updated_on")


def made_by(side: str, name: str) -> str:
    return f"{side}-{name}"


def settings_for(side: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Queue settings with the dead letter queue renamed for ``side``."""
    renamed = dict(settings)
    if renamed.get("dead_letter") is not None:
        renamed["dead_letter"] = made_by(side, renamed["dead_letter"])
    return renamed


@dataclass(frozen=True)
class CronCase:
    id: str
    cron: str
    data: Any = None
    tz: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    """Send options, and ``key`` / ``missed``."""
    before: CronCase | None = None
    """A schedule stored first on the same queue: replaced if it has the same key, kept beside if not."""

    def python(self, boss: Any, queue: str) -> None:
        boss.schedule(queue, self.cron, self.data, tz=self.tz, **self.options)

    def node(self, script: Script, queue: str) -> int:
        options = js_options(self.options)
        if self.tz is not None:
            options["tz"] = self.tz
        return script.add("schedule", queue, self.cron, js_value(self.data), options)


CRON_OPTIONS = {
    "priority": 2,
    "retry_limit": 3,
    "retry_delay": 10,
    "retry_backoff": True,
    "retry_delay_max": 100,
    "singleton_key": "k",
    "singleton_seconds": 300,
    "expire_in_seconds": 180,
    "retention_seconds": 7200,
    "delete_after_seconds": 60,
    "heartbeat_seconds": 30,
    "group": {"id": "g", "tier": "t"},
    "start_after": 30,
    "dead_letter": "cron-dlq",
}

CRON_CASES = [
    CronCase("every-minute", "* * * * *"),
    CronCase("data", "0 * * * *", data={"a": 1, "b": [True, None]}),
    CronCase("tz", "30 8 * * 1-5", tz="Europe/Paris"),
    CronCase("options", "*/5 * * * *", data={"b": 1}, options=CRON_OPTIONS),
    CronCase("key", "0 0 1 * *", tz="America/New_York", options={"key": "monthly", "expire_in_seconds": 77}),
    CronCase("missed", "0 6 * * *", options={"missed": "once", "key": "k-1"}),
    CronCase("missed-skip", "0 7 * * *", options={"missed": "skip"}),
    CronCase("seconds-field", "*/30 * * * * *", data=7),
    CronCase("rrule", "FREQ=DAILY;BYHOUR=9;BYMINUTE=0", tz="Europe/Paris"),
    CronCase("rrule-dtstart", "DTSTART:20250101T090000Z\nRRULE:FREQ=WEEKLY;BYDAY=MO", data={"weekly": True}),
    CronCase(
        "python-values",
        "0 12 * * *",
        options={
            "retry_delay": dt.timedelta(seconds=30),
            "start_after": DATETIME_START,
            "id": FIXED_ID,
        },
    ),
    CronCase(
        "replaced",
        "0 6 * * *",
        data={"new": True},
        options={"priority": 1},
        before=CronCase("replaced", "* * * * *", data={"old": True}, tz="Asia/Tokyo", options={"retry_limit": 1}),
    ),
    CronCase(
        "second-key",
        "0 6 * * *",
        data={"second": True},
        options={"key": "b"},
        before=CronCase("second-key", "0 5 * * *", data={"first": True}, options={"key": "a"}),
    ),
]

PUBLISH_OPTIONS = {"priority": 2, "retry_limit": 4, "expire_in_seconds": 60, "group": {"id": "pub"}}
SUBSCRIBERS = ("sub-1", "sub-2", "sub-short")
"""Each side's queues subscribed to its event ``<side>-event``; ``sub-short`` is a short queue."""


@dataclass
class Crossed:
    schema: str
    node: dict[str, Any] = field(default_factory=dict)
    """Results of pg-boss's calls, by label."""
    python: dict[str, Any] = field(default_factory=dict)
    """Results of sqla_boss's calls, by label."""


def queue_attributes(found: Any) -> dict[str, Any] | None:
    """An ORM ``Queue`` as a mapping of its columns."""
    if found is None:
        return None
    return {column.key: getattr(found, column.key) for column in inspect(v46.Queue).column_attrs}


@pytest.fixture(scope="module")
def crossed(engine: Engine, pgboss12: PgBoss, python_side: PythonSide, new_schema: Callable[[str], str]) -> Crossed:
    """Part 4: queues, schedules and subscriptions made by each side, read, used, updated and deleted by the other."""
    run = Crossed(new_schema("t12_crossed"))
    schema = run.schema

    def make_python() -> None:
        with python_side.transaction(schema) as boss:
            for name, settings in QUEUE_SET.items():
                boss.create_queue(made_by("py", name), **settings_for("py", settings))
            boss.create_queue("cron-dlq")
            for item in CRON_CASES:
                for side in ("py", "js"):
                    boss.create_queue(f"cron-{item.id}.{side}")
            for side in ("py", "js"):
                for name in SUBSCRIBERS:
                    boss.create_queue(made_by(side, name), policy="short" if name == "sub-short" else "standard")
        for item in CRON_CASES:
            if item.before is not None:
                with python_side.transaction(schema) as boss:
                    item.before.python(boss, f"cron-{item.id}.py")
            with python_side.transaction(schema) as boss:
                item.python(boss, f"cron-{item.id}.py")
        with python_side.transaction(schema) as boss:
            for name in SUBSCRIBERS:
                boss.subscribe("py-event", made_by("py", name))
            for name in FULL:
                boss.send(made_by("py", name), {"full": name})

    python_side.run(make_python)

    # pg-boss makes its queues, schedules and subscriptions, reads sqla_boss's, uses, updates and deletes some,
    # and publishes to sqla_boss's subscriptions.
    script, labels = Script(), {}
    for name, settings in QUEUE_SET.items():
        script.add("createQueue", made_by("js", name), js_options(settings_for("js", settings)))
    for side in ("py", "js"):
        for name in QUEUE_SET:
            labels[f"get:{side}-{name}"] = script.add("getQueue", made_by(side, name))
    labels["get:missing"] = script.add("getQueue", "py-missing")
    labels["get-all"] = script.add("getQueues")
    for name in USED_SENDS:
        queue = made_by("py", name)
        labels[f"send:{name}"] = [script.add("send", queue, {"n": n}, {"singletonKey": "k"}) for n in range(2)]
        labels[f"fetch:{name}"] = script.add("fetch", queue, {"batchSize": 2})
    script.add("updateQueue", made_by("py", "update"), js_options(settings_for("py", UPDATE_ALL)))
    script.add("updateQueue", made_by("py", "clear"), js_options(CLEAR))
    for name in FULL:
        script.add("send", made_by("js", name), {"full": name})
    for name in DELETED:
        script.add("deleteQueue", made_by("py", name))
    for item in CRON_CASES:
        if item.before is not None:
            item.before.node(script, f"cron-{item.id}.js")
        item.node(script, f"cron-{item.id}.js")
    labels["schedules"] = script.add("getSchedules")
    labels["schedule:key"] = script.add("getSchedule", "cron-key.py", "monthly")
    labels["schedule:second-key"] = script.add("getSchedules", "cron-second-key.py")
    for name in SUBSCRIBERS:
        script.add("subscribe", "js-event", made_by("js", name))
    labels["publish:1"] = script.add("publish", "py-event", {"n": 1}, js_options(PUBLISH_OPTIONS))
    labels["publish:2"] = script.add("publish", "py-event", {"n": 2}, js_options(PUBLISH_OPTIONS))
    labels["publish:unheard"] = script.add("publish", "nobody-listens", {"n": 0})
    script.add("unsubscribe", "py-event", made_by("py", "sub-2"))
    labels["publish:3"] = script.add("publish", "py-event", {"n": 3}, js_options(PUBLISH_OPTIONS))
    results = script.run(pgboss12, schema)
    run.node.update(
        {
            label: results[index] if isinstance(index, int) else [results[i] for i in index]
            for label, index in labels.items()
        }
    )

    def use_node_side() -> None:
        # sqla_boss reads, uses, updates and deletes pg-boss's queues, reads its schedules, publishes to its
        # subscriptions.
        py = run.python
        with python_side.transaction(schema) as boss:
            for side in ("py", "js"):
                for name in QUEUE_SET:
                    py[f"get:{side}-{name}"] = queue_attributes(boss.get_queue(made_by(side, name)))
            py["get:missing"] = boss.get_queue("js-missing")
            py["get-all"] = [queue.name for queue in boss.get_queues()]
            py["schedules"] = [
                {column.key: getattr(found, column.key) for column in inspect(v46.Schedule).column_attrs}
                for found in boss.get_schedules()
            ]
            found = boss.get_schedule("cron-key.js", "monthly")
            py["schedule:key"] = (found.name, found.key, found.timezone)
            py["schedule:second-key"] = [(found.key, found.data) for found in boss.get_schedules("cron-second-key.js")]
        for name in USED_SENDS:
            with python_side.transaction(schema) as boss:
                py[f"send:{name}"] = [boss.send(made_by("js", name), {"n": n}, singleton_key="k") for n in range(2)]
            with python_side.transaction(schema) as boss:
                py[f"fetch:{name}"] = [job.id for job in boss.fetch(made_by("js", name), batch_size=2)]
        with python_side.transaction(schema) as boss:
            boss.update_queue(made_by("js", "update"), **settings_for("js", UPDATE_ALL))
            boss.update_queue(made_by("js", "clear"), **CLEAR)
        with python_side.transaction(schema) as boss:
            py["deleted"] = [boss.delete_queue(made_by("js", name)) for name in DELETED]
        for n in (1, 2):
            with python_side.transaction(schema) as boss:
                py[f"publish:{n}"] = boss.publish("js-event", {"n": n}, **PUBLISH_OPTIONS)
        with python_side.transaction(schema) as boss:
            py["publish:unheard"] = boss.publish("nobody-listens", {"n": 0})
            py["unsubscribe"] = boss.unsubscribe("js-event", made_by("js", "sub-2"))
        with python_side.transaction(schema) as boss:
            py["publish:3"] = boss.publish("js-event", {"n": 3}, **PUBLISH_OPTIONS)

    python_side.run(use_node_side)
    return run


def node_queue(crossed: Crossed, side: str, name: str) -> dict[str, Any]:
    """pg-boss's ``getQueue`` of ``<side>-<name>``, without what tells the sides apart (the dead letter queue's
    side is kept as the name it stands for)."""
    found = dict(crossed.node[f"get:{side}-{name}"])
    assert found.pop("name") == made_by(side, name)
    assert isinstance(found.pop("createdOn"), str)
    assert isinstance(found.pop("updatedOn"), str)
    table = found.pop("table")
    assert table == (partition_name(made_by(side, name)) if found["partition"] else "job_common")
    found["deadLetter"] = found["deadLetter"] and found["deadLetter"].partition("-")[2]
    return found


@pytest.mark.parametrize("name", list(QUEUE_SET))
def test_each_side_makes_the_queue_row_the_other_makes(engine: Engine, crossed: Crossed, name: str) -> None:
    if name in DELETED:
        return  # see test_each_side_deletes_the_other_sides_queues_with_their_jobs
    ours = queue_row(engine, crossed.schema, made_by("py", name))
    theirs = queue_row(engine, crossed.schema, made_by("js", name))
    assert ours is not None
    assert theirs is not None
    for row, side in ((ours, "py"), (theirs, "js")):
        assert row["table_name"] == (partition_name(made_by(side, name)) if row["partition"] else "job_common")
        assert relation_exists(engine, crossed.schema, row["table_name"])
        assert (
            (row["updated_on"] > row["created_on"])
            if name in ("update", "clear")
            else row["updated_on"] == row["created_on"]
        )
        row["dead_letter"] = row["dead_letter"] and row["dead_letter"].partition("-")[2]
    assert without(ours, "name", "table_name", *QUEUE_TIMES) == without(theirs, "name", "table_name", *QUEUE_TIMES)


def test_each_side_reads_the_other_sides_queues(crossed: Crossed) -> None:
    for name in QUEUE_SET:
        if name in DELETED:
            continue
        # pg-boss reads sqla_boss's queues as its own, and sqla_boss reads pg-boss's as its own.
        assert node_queue(crossed, "py", name) == node_queue(crossed, "js", name), name
        if name in ("update", "clear"):
            continue  # sqla_boss read them after pg-boss updated its own, before it updated pg-boss's
        ours, theirs = crossed.python[f"get:py-{name}"], crossed.python[f"get:js-{name}"]
        for found, side in ((ours, "py"), (theirs, "js")):
            assert found["name"] == made_by(side, name)
            found["dead_letter"] = found["dead_letter"] and found["dead_letter"].partition("-")[2]
        assert without(ours, *QUEUE_TIMES_AND_NAMES) == without(theirs, *QUEUE_TIMES_AND_NAMES), name
    every = node_queue(crossed, "py", "every")
    assert {key: every[key] for key in ("policy", "retryDelayMax", "partition", "heartbeatSeconds", "notify")} == {
        "policy": "exclusive",
        "retryDelayMax": 40,
        "partition": True,
        "heartbeatSeconds": 12,
        "notify": True,
    }
    assert (every["deleteAfterSeconds"], every["retentionSeconds"], every["warningQueueSize"]) == (60, 3600, 5)
    assert crossed.node["get:missing"] is None
    assert crossed.python["get:missing"] is None
    node_names = {queue["name"] for queue in crossed.node["get-all"]}
    assert node_names >= {made_by(side, name) for side in ("py", "js") for name in QUEUE_SET}
    assert set(crossed.python["get-all"]) >= {made_by("js", name) for name in QUEUE_SET if name not in DELETED}


def test_each_side_updates_the_other_sides_queues_alike(engine: Engine, crossed: Crossed) -> None:
    for side in ("py", "js"):
        updated = queue_row(engine, crossed.schema, made_by(side, "update"))
        assert updated is not None
        assert {
            key: updated[key]
            for key in (
                "retry_limit",
                "retry_delay",
                "retry_backoff",
                "retry_delay_max",
                "expire_seconds",
                "retention_seconds",
                "deletion_seconds",
                "dead_letter",
                "heartbeat_seconds",
                "notify",
                "warning_queued",
                "policy",
                "partition",
            )
        } == {
            "retry_limit": 5,
            "retry_delay": 6,
            "retry_backoff": True,
            "retry_delay_max": 60,
            "expire_seconds": 70,
            "retention_seconds": 80,
            "deletion_seconds": 90,
            "dead_letter": made_by(side, "dlq"),
            "heartbeat_seconds": 11,
            "notify": True,
            "warning_queued": 7,
            "policy": "standard",
            "partition": True,
        }
        cleared = queue_row(engine, crossed.schema, made_by(side, "clear"))
        assert cleared is not None
        assert (cleared["retry_delay_max"], cleared["heartbeat_seconds"], cleared["dead_letter"]) == (None, None, None)
        assert cleared["retry_backoff"] is True


def test_each_side_deletes_the_other_sides_queues_with_their_jobs(engine: Engine, crossed: Crossed) -> None:
    assert crossed.python["deleted"] == [True] * len(DELETED)
    for side in ("py", "js"):
        for name in DELETED:
            assert queue_row(engine, crossed.schema, made_by(side, name)) is None
            assert job_rows(engine, crossed.schema, "name = :name", name=made_by(side, name)) == []
        for name in ("empty", "full-partitioned"):
            assert not relation_exists(engine, crossed.schema, partition_name(made_by(side, name)))


def used_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row sent to and fetched from a queue, without what tells the two sides apart."""
    normalised = without(row, "id", "data", "created_on", "started_on", "heartbeat_on")
    normalised["name"] = row["name"].partition("-")[2]
    normalised["start_after"] = row["start_after"] - row["created_on"]
    normalised["keep_until"] = row["keep_until"] - row["start_after"]
    normalised["started"] = row["started_on"] is not None
    return normalised


@pytest.mark.parametrize("name", list(USED_SENDS))
def test_each_side_sends_to_and_fetches_from_the_other_sides_policy_queues(
    engine: Engine, crossed: Crossed, name: str
) -> None:
    fetched, sends = USED_SENDS[name]
    for results in (crossed.node, crossed.python):
        assert [job_id is not None for job_id in results[f"send:{name}"]] == sends
        assert len(results[f"fetch:{name}"]) == fetched
    node_sent = job_rows(engine, crossed.schema, "name = :name", name=made_by("py", name))
    python_sent = job_rows(engine, crossed.schema, "name = :name", name=made_by("js", name))
    # Which of two jobs of one key a gated batch takes is not defined, so compare without data.
    assert sorted(map(used_row, python_sent), key=repr) == sorted(map(used_row, node_sent), key=repr)
    assert [row["data"] for row in python_sent] == [row["data"] for row in node_sent]
    assert {row["policy"] for row in node_sent} == {name}


def stored_json(value: dict[str, Any]) -> Any:
    """A driver placeholder as pg-boss stores it: a JavaScript ``Date`` becomes its ISO text."""
    return value["$date"] if set(value) == {"$date"} else value


def schedule_rows(engine: Engine, schema: str) -> dict[tuple[str, str], dict[str, Any]]:
    statement = text(f"SELECT *, jsonb_typeof(data) AS data_type FROM {quote_identifier(schema)}.schedule")
    with engine.connect() as connection:
        return {(row["name"], row["key"]): dict(row) for row in connection.execute(statement).mappings()}


def schedule_keys(item: CronCase) -> list[str]:
    return sorted({case_.options.get("key", "") for case_ in (item, item.before) if case_ is not None})


@pytest.mark.parametrize("item", CRON_CASES, ids=[item.id for item in CRON_CASES])
def test_schedule_stores_the_row_pgboss_stores(engine: Engine, crossed: Crossed, item: CronCase) -> None:
    rows = schedule_rows(engine, crossed.schema)
    for key in schedule_keys(item):
        ours, theirs = rows[(f"cron-{item.id}.py", key)], rows[(f"cron-{item.id}.js", key)]
        replaced = item.before is not None and item.before.options.get("key", "") == item.options.get("key", "")
        for row in (ours, theirs):
            created, updated = row.pop("created_on"), row.pop("updated_on")
            assert (updated > created) if replaced else (updated == created)
            row["name"] = row["name"].rpartition(".")[0]
        assert ours == theirs
    # The options are stored as given, in camelCase, with the time zone, key and missed when given.
    last = rows[(f"cron-{item.id}.js", item.options.get("key", ""))]
    expected_options = json.loads(json.dumps(js_options(item.options)), object_hook=stored_json)
    if item.tz is not None:
        expected_options["tz"] = item.tz
    assert last["options"] == expected_options
    assert last["timezone"] == (item.tz or "UTC")
    assert last["kind"] == ("rrule" if item.id.startswith("rrule") else "cron")


def test_each_side_lists_the_other_sides_schedules(crossed: Crossed) -> None:
    def comparable(found: Mapping[str, Any], name_key: str) -> tuple[tuple[str, str], dict[str, Any]]:
        name = found[name_key]
        rest = {key: value for key, value in found.items() if key not in (name_key, "createdOn", "updatedOn")}
        rest = {key: value for key, value in rest.items() if key not in ("created_on", "updated_on")}
        return (name.rpartition(".")[0], name.rpartition(".")[2]), rest

    for listed, name_key in ((crossed.node["schedules"], "name"), (crossed.python["schedules"], "name")):
        by_side: dict[str, dict[Any, Any]] = {"py": {}, "js": {}}
        for found in listed:
            (name, side), rest = comparable(found, name_key)
            by_side[side][(name, rest.get("key"))] = rest
        assert by_side["py"] == by_side["js"]
        assert len(by_side["py"]) == sum(len(schedule_keys(item)) for item in CRON_CASES)
    key = crossed.node["schedule:key"]
    assert (key["name"], key["key"], key["timezone"]) == ("cron-key.py", "monthly", "America/New_York")
    assert crossed.python["schedule:key"] == ("cron-key.js", "monthly", "America/New_York")
    assert [(row["key"], row["data"]) for row in crossed.node["schedule:second-key"]] == crossed.python[
        "schedule:second-key"
    ]
    assert crossed.python["schedule:second-key"] == [("a", {"first": True}), ("b", {"second": True})]


def test_each_side_publishes_to_the_other_sides_subscriptions(engine: Engine, crossed: Crossed) -> None:
    # pg-boss published to sqla_boss's subscribers (py-*), sqla_boss to pg-boss's (js-*): twice to all three
    # (the short queue takes one), then, sub-2 unsubscribed, once more.
    assert [crossed.node[f"publish:{n}"] for n in (1, 2, "unheard", 3)] == [None] * 4
    assert [len(crossed.python[f"publish:{n}"]) for n in (1, 2, 3)] == [3, 2, 1]
    assert crossed.python["publish:unheard"] == []
    assert crossed.python["unsubscribe"] is True
    expected = {"sub-1": [1, 2, 3], "sub-2": [1, 2], "sub-short": [1]}
    for side in ("py", "js"):
        for name, numbers in expected.items():
            rows = job_rows(engine, crossed.schema, "name = :name", name=made_by(side, name))
            assert [row["data"] for row in rows] == [{"n": n} for n in numbers], (side, name)
    node_rows, python_rows = (
        [
            {**sent_row(row, None, side), "name": row["name"].partition("-")[2]}
            for name in expected
            for row in job_rows(engine, crossed.schema, "name = :name", name=made_by(side, name))
        ]
        for side in ("py", "js")
    )
    assert python_rows == node_rows
    assert {(row["priority"], row["retry_limit"], row["expire_seconds"], row["group_id"]) for row in node_rows} == {
        (2, 4, 60, "pub")
    }
    with engine.connect() as connection:
        subscriptions = connection.execute(
            text(f"SELECT event, name FROM {quote_identifier(crossed.schema)}.subscription ORDER BY event, name")
        ).all()
    assert [tuple(row) for row in subscriptions] == [
        ("js-event", "js-sub-1"),
        ("js-event", "js-sub-short"),
        ("py-event", "py-sub-1"),
        ("py-event", "py-sub-short"),
    ]


# ================================================================================ 5. refusals


@dataclass(frozen=True)
class Refusal:
    """One call both sides make with the same mistake (or a value only one side takes)."""

    id: str
    node: tuple[Any, ...]
    """pg-boss's call: method, then arguments."""
    python: Callable[[Any], Any]
    """sqla_boss's call, on a repository."""
    error: type[Exception] | None
    """What sqla_boss raises (``None``: it accepts the call)."""
    node_refuses: bool = True
    """Whether pg-boss throws."""


REFUSAL_QUEUES = {
    "plain": {},
    "fifo": {"policy": "key_strict_fifo"},
    "dlq": {},
    "uses-dlq": {"dead_letter": "dlq"},
    "job-dlq": {},
}
"""The queues of part 5; a job of ``plain`` names ``job-dlq`` as its dead letter queue (:data:`REFUSAL_JOB`)."""

REFUSAL_JOB = {"dead_letter": "job-dlq"}

BOTH_REFUSE = [
    Refusal(
        "send-missing-queue", ("send", "missing", {"n": 1}), lambda b: b.send("missing", {"n": 1}), QueueNotFoundError
    ),
    Refusal(
        "insert-missing-queue",
        ("insert", "missing", [{"data": 1}]),
        lambda b: b.insert([{"name": "missing", "data": 1}]),
        QueueNotFoundError,
    ),
    Refusal("fetch-missing-queue", ("fetch", "missing"), lambda b: b.fetch("missing"), QueueNotFoundError),
    Refusal(
        "send-missing-dead-letter",
        ("send", "plain", None, {"deadLetter": "missing"}),
        lambda b: b.send("plain", None, dead_letter="missing"),
        DeadLetterQueueNotFoundError,
    ),
    Refusal(
        "fifo-send-without-key", ("send", "fifo", {"n": 1}), lambda b: b.send("fifo", {"n": 1}), InvalidOptionError
    ),
    Refusal(
        "fifo-insert-without-key",
        ("insert", "fifo", [{"data": 1}, {"data": 2, "singletonKey": "k"}]),
        lambda b: b.insert([{"name": "fifo", "data": 1}, {"name": "fifo", "data": 2, "singleton_key": "k"}]),
        InvalidOptionError,
    ),
    Refusal(
        "create-queue-missing-dead-letter",
        ("createQueue", "new-q", {"deadLetter": "missing"}),
        lambda b: b.create_queue("new-q", dead_letter="missing"),
        DeadLetterQueueNotFoundError,
    ),
    Refusal(
        "create-queue-own-dead-letter",
        ("createQueue", "self-q", {"deadLetter": "self-q"}),
        lambda b: b.create_queue("self-q", dead_letter="self-q"),
        InvalidOptionError,
    ),
    Refusal(
        "create-queue-bad-policy",
        ("createQueue", "bad-q", {"policy": "nope"}),
        lambda b: b.create_queue("bad-q", policy="nope"),
        InvalidOptionError,
    ),
    Refusal(
        "create-queue-bad-name", ("createQueue", "sp ace"), lambda b: b.create_queue("sp ace"), InvalidQueueNameError
    ),
    Refusal(
        "update-queue-policy",
        ("updateQueue", "plain", {"policy": "short"}),
        lambda b: b.update_queue("plain", policy="short"),
        InvalidOptionError,
    ),
    Refusal(
        "update-queue-nothing", ("updateQueue", "plain", {}), lambda b: b.update_queue("plain"), InvalidOptionError
    ),
    Refusal(
        "update-retry-delay-max-without-backoff",
        ("updateQueue", "plain", {"retryDelayMax": 5}),
        lambda b: b.update_queue("plain", retry_delay_max=5),
        InvalidOptionError,
    ),
    Refusal(
        "delete-dead-letter-queue-in-use", ("deleteQueue", "dlq"), lambda b: b.delete_queue("dlq"), QueueInUseError
    ),
    Refusal(
        "delete-dead-letter-queue-of-a-job",
        ("deleteQueue", "job-dlq"),
        lambda b: b.delete_queue("job-dlq"),
        QueueInUseError,
    ),
    Refusal(
        "retry-delay-max-without-backoff",
        ("send", "plain", None, {"retryDelayMax": 5}),
        lambda b: b.send("plain", None, retry_delay_max=5),
        InvalidOptionError,
    ),
    Refusal(
        "expire-over-a-day",
        ("send", "plain", None, {"expireInSeconds": 86401}),
        lambda b: b.send("plain", None, expire_in_seconds=86401),
        InvalidOptionError,
    ),
    Refusal(
        "heartbeat-under-ten",
        ("send", "plain", None, {"heartbeatSeconds": 5}),
        lambda b: b.send("plain", None, heartbeat_seconds=5),
        InvalidOptionError,
    ),
    Refusal(
        "fractional-slot",
        ("send", "plain", None, {"singletonSeconds": 1.5}),
        lambda b: b.send("plain", None, singleton_seconds=1.5),
        InvalidOptionError,
    ),
    Refusal(
        "fractional-expiry",
        ("send", "plain", None, {"expireInSeconds": 1.5}),
        lambda b: b.send("plain", None, expire_in_seconds=1.5),
        InvalidOptionError,
    ),
    Refusal(
        "fractional-retention",
        ("send", "plain", None, {"retentionSeconds": 1.5}),
        lambda b: b.send("plain", None, retention_seconds=1.5),
        InvalidOptionError,
    ),
    Refusal(
        "fractional-retry-delay",
        ("send", "plain", None, {"retryDelay": 1.5}),
        lambda b: b.send("plain", None, retry_delay=1.5),
        InvalidOptionError,
    ),
    Refusal(
        "fractional-priority",
        ("send", "plain", None, {"priority": 1.5}),
        lambda b: b.send("plain", None, priority=1.5),
        InvalidOptionError,
    ),
    Refusal(
        "group-without-id",
        ("send", "plain", None, {"group": {"tier": "t"}}),
        lambda b: b.send("plain", None, group={"tier": "t"}),
        InvalidOptionError,
    ),
    Refusal(
        "schedule-bad-missed",
        ("schedule", "plain", "* * * * *", None, {"missed": "twice"}),
        lambda b: b.schedule("plain", "* * * * *", missed="twice"),
        InvalidOptionError,
    ),
    Refusal(
        "schedule-bad-zone",
        ("schedule", "plain", "* * * * *", None, {"tz": "Mars/Base"}),
        lambda b: b.schedule("plain", "* * * * *", tz="Mars/Base"),
        InvalidOptionError,
    ),
    Refusal(
        "schedule-bad-cron",
        ("schedule", "plain", "every minute", None, {}),
        lambda b: b.schedule("plain", "every minute"),
        InvalidOptionError,
    ),
    Refusal(
        "schedule-missing-queue",
        ("schedule", "missing", "* * * * *", None, {}),
        lambda b: b.schedule("missing", "* * * * *"),
        QueueNotFoundError,
    ),
]

DEVIATIONS = [
    # pg-boss takes a zone-less timestamp as UTC and an ISO 8601 duration as interval text; sqla_boss asks for
    # an offset and for PostgreSQL's interval words (timing.start_after_text).
    Refusal(
        "start-after-zoneless",
        ("send", "plain", None, {"startAfter": "2041-01-02T03:04:05"}),
        lambda b: b.send("plain", None, start_after="2041-01-02T03:04:05"),
        InvalidOptionError,
        node_refuses=False,
    ),
    Refusal(
        "start-after-date",
        ("send", "plain", None, {"startAfter": "2041-01-02"}),
        lambda b: b.send("plain", None, start_after="2041-01-02"),
        InvalidOptionError,
        node_refuses=False,
    ),
    Refusal(
        "start-after-iso-duration",
        ("send", "plain", None, {"startAfter": "PT1H"}),
        lambda b: b.send("plain", None, start_after="PT1H"),
        InvalidOptionError,
        node_refuses=False,
    ),
    # pg-boss ignores options it does not know, pg-boss 10's spellings among them; sqla_boss names them.
    Refusal(
        "send-v10-spelling",
        ("send", "plain", None, {"singletonMinutes": 5}),
        lambda b: b.send("plain", None, singleton_minutes=5),
        UnsupportedOperationError,
        node_refuses=False,
    ),
    Refusal(
        "send-unknown-option",
        ("send", "plain", None, {"colour": "red"}),
        lambda b: b.send("plain", None, colour="red"),
        InvalidOptionError,
        node_refuses=False,
    ),
    Refusal(
        "create-queue-unknown-option",
        ("createQueue", "extra-q", {"colour": "red"}),
        lambda b: b.create_queue("extra-q", colour="red"),
        TypeError,  # not even a keyword of create_queue
        node_refuses=False,
    ),
    # pg-boss's insert checks next to nothing; sqla_boss checks each job as it checks a send.
    Refusal(
        "insert-retry-delay-max-without-backoff",
        ("insert", "plain", [{"retryDelayMax": 5}]),
        lambda b: b.insert([{"name": "plain", "retry_delay_max": 5}]),
        InvalidOptionError,
        node_refuses=False,
    ),
    Refusal(
        "insert-expiry-over-a-day",
        ("insert", "plain", [{"expireInSeconds": 86401}]),
        lambda b: b.insert([{"name": "plain", "expire_in_seconds": 86401}]),
        InvalidOptionError,
        node_refuses=False,
    ),
    # pg-boss's updateQueue of a missing queue does nothing; sqla_boss says so.
    Refusal(
        "update-missing-queue",
        ("updateQueue", "missing", {"retryLimit": 1}),
        lambda b: b.update_queue("missing", retry_limit=1),
        QueueNotFoundError,
        node_refuses=False,
    ),
    # pg-boss hands a schedule's string or array data to node-pg as is, which PostgreSQL refuses as JSON;
    # sqla_boss stores it as JSON, as pg-boss stores a job's (and its send-it worker sends it on).
    Refusal(
        "schedule-string-data",
        ("schedule", "plain", "0 * * * *", "text", {"key": "string"}),
        lambda b: b.schedule("plain", "0 * * * *", "text", key="string"),
        None,
    ),
    Refusal(
        "schedule-array-data",
        ("schedule", "plain", "0 * * * *", [1, 2], {"key": "array"}),
        lambda b: b.schedule("plain", "0 * * * *", [1, 2], key="array"),
        None,
    ),
]

REFUSALS = BOTH_REFUSE + DEVIATIONS


@pytest.fixture(scope="module")
def refused_by_node(engine: Engine, pgboss12: PgBoss, new_schema: Callable[[str], str]) -> dict[str, Any]:
    """pg-boss's outcome of each refusal, in one run (each call is an ``attempt``): once for both APIs."""
    schema = new_schema("t12_refused_js")
    script = Script()
    for name, settings in REFUSAL_QUEUES.items():
        script.add("createQueue", name, js_options(settings))
    script.add("send", "plain", None, js_options(REFUSAL_JOB))
    indexes = {item.id: script.add("attempt", *item.node) for item in REFUSALS}
    results = script.run(pgboss12, schema)
    return {label: results[index] for label, index in indexes.items()}


@pytest.mark.parametrize("item", REFUSALS, ids=[item.id for item in REFUSALS])
def test_what_pgboss_refuses(refused_by_node: dict[str, Any], item: Refusal) -> None:
    outcome = refused_by_node[item.id]
    assert outcome["ok"] is not item.node_refuses, outcome
    if not outcome["ok"]:
        assert outcome["error"]["message"]


@pytest.fixture(scope="module")
def refused_by_python(python_side: PythonSide, new_schema: Callable[[str], str]) -> dict[str, Exception | None]:
    """sqla_boss's outcome of each refusal, each in a transaction of its own."""
    schema = new_schema("t12_refused_py")
    outcomes: dict[str, Exception | None] = {}

    def refuse_all() -> None:
        with python_side.transaction(schema) as boss:
            for name, settings in REFUSAL_QUEUES.items():
                boss.create_queue(name, **settings)
            boss.send("plain", None, **REFUSAL_JOB)
        for item in REFUSALS:
            try:
                with python_side.transaction(schema) as boss:
                    item.python(boss)
            except Exception as exc:  # recorded, then checked by the test
                outcomes[item.id] = exc
            else:
                outcomes[item.id] = None

    python_side.run(refuse_all)
    return outcomes


@pytest.mark.parametrize("item", REFUSALS, ids=[item.id for item in REFUSALS])
def test_what_sqla_boss_refuses(refused_by_python: dict[str, Exception | None], item: Refusal) -> None:
    outcome = refused_by_python[item.id]
    if item.error is None:
        assert outcome is None
    else:
        assert isinstance(outcome, item.error), repr(outcome)
