"""sqla_boss and the real pg-boss 10.4.2 write the same rows, and each works the other's jobs, queues and schedules.

pg-boss runs through tests/pgboss_node/driver.mjs, many calls to one process (tests/pgboss.py). Each part
builds its own schemas and runs every Node call it needs in one or a few driver runs, in a module-scoped
fixture; the parametrised tests then only compare what the fixture recorded:

1. **Same rows.** Every send option, every policy (conflicts included), the batch ``insert``,
   ``send_after`` / ``send_throttled`` / ``send_debounced`` and the constructor defaults, sent by Python to
   one schema and by Node to another that has the same queues: the rows agree in every column but ``id``,
   with clock readings compared as offsets (:func:`sent_row`).
2. **Both directions.** Jobs sent by Python are fetched, completed and failed by Node, and the other way
   round; retry counts, backoff bounds, final states, outputs and dead-letter copies agree.
3. **Queues** made by either side are read and used by the other; Python updates, purges and deletes
   queues Node made.
4. **Cron storage.** ``schedule`` stores the row pg-boss stores.

Where sqla_boss differs on purpose (an exception instead of ``null``, ``update_queue`` keeping the policy),
the tests say so and check both behaviours.

sqla_boss's side runs on both repository APIs: the module-scoped ``python_side`` fixture is parametrised
``sync`` (``Boss`` on a ``Session``) / ``async`` (``AsyncBoss`` on an ``AsyncSession`` of psycopg's async
driver), and every fixture and test that makes sqla_boss calls goes through it. pg-boss's sends of part 1
(:func:`sent_by_node`) run once and are compared with the rows of both APIs; parts 2 to 4 interleave the two
sides in one schema, so they run once per API, Node included (about a second each).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from apis import APIS, AwaitingBoss, LoopRunner
from pgboss import (  # noqa: F401  (the fixtures pgboss and pgboss_install)
    PgBoss,
    PgBossDriverError,
    call,
    js_date,
    js_error,
    partition_name,
    pgboss_fixture,
    pgboss_install_fixture,
    ref,
    start,
)
from sqlalchemy import URL, Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from support import drop_schema, unique_name

from sqla_boss import AsyncBoss, Boss, JobState, QueuePolicy, migrations
from sqla_boss.errors import DeadLetterQueueNotFoundError, QueueInUseError, QueueNotEmptyError, QueueNotFoundError
from sqla_boss.identifiers import quote_identifier
from sqla_boss.schema import schema_translate_map

pytestmark = pytest.mark.pgboss

T = TypeVar("T")

QUIET = {"supervise": False, "schedule": False}
"""pg-boss without maintenance and timekeeper: nothing runs but the calls we make."""

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
FAR_FUTURE = dt.datetime(2040, 1, 1, tzinfo=UTC)
"""Absolute ``start_after`` values in the tests lie beyond this; they are compared as they are."""

JOB_COLUMNS = (
    "id, name, priority, data, state::text AS state, retry_limit, retry_count, retry_delay, retry_backoff, "
    "start_after, started_on, singleton_key, singleton_on, expire_in, created_on, completed_on, keep_until, "
    "output, dead_letter, policy"
)
"""Every column of ``job``, the enum as text."""


# --------------------------------------------------------------------------------------- both sides


@dataclass(frozen=True)
class Both:
    """A value given differently to each side: ``py`` to sqla_boss, ``js`` (JSON for the driver) to pg-boss."""

    py: Any
    js: Any


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def py_value(value: Any) -> Any:
    if isinstance(value, Both):
        return value.py
    if isinstance(value, Mapping):
        return {key: py_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [py_value(item) for item in value]
    return value


def iso_z(value: dt.datetime) -> str:
    """An aware datetime as JavaScript's ``toISOString()`` writes it."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def js_value(value: Any) -> Any:
    """``value`` for the driver: a datetime becomes a JavaScript ``Date``, a timedelta its seconds."""
    if isinstance(value, Both):
        return value.js
    if isinstance(value, dt.datetime):
        return js_date(iso_z(value))
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {key: js_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [js_value(item) for item in value]
    return value


def js_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """sqla_boss's snake_case options as pg-boss's camelCase ones (values converted, not renamed)."""
    return {camel(key): js_value(value) for key, value in options.items()}


def js_time(value: str | None) -> dt.datetime | None:
    """A timestamp pg-boss returned (a JavaScript ``Date`` as JSON, in whole milliseconds)."""
    return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


JS_MS = dt.timedelta(milliseconds=2)
"""node-pg cuts timestamps to whole milliseconds: the slack when comparing them with database values."""


class Script:
    """A list of driver actions that remembers where each one is, to find its result afterwards."""

    def __init__(self, **options: Any) -> None:
        self.actions: list[dict[str, Any]] = [start(**QUIET, **options)]

    def add(self, method: str, *args: Any) -> int:
        self.actions.append(call(method, *args))
        return len(self.actions) - 1

    def run(self, pgboss: PgBoss, schema: str) -> list[Any]:
        self.add("stop", {"graceful": False})
        return pgboss.run(schema, self.actions)


class PythonSide:
    """sqla_boss's side of the tests, on ``Boss`` (``sync``) or on ``AsyncBoss`` (``async``).

    Make sqla_boss calls inside :meth:`run`, each transaction in :meth:`transaction`. On ``async``, ``run``
    calls its function inside SQLAlchemy's greenlet bridge, in an event loop of this object's own, and
    ``transaction`` gives an ``AsyncBoss`` (behind an :class:`~apis.AwaitingBoss`, a sync face that awaits
    each call) on an ``AsyncSession`` of an ``AsyncEngine``: every statement goes through the async driver.
    Reading the rows back (:func:`job_rows`...) stays on the sync ``engine``.
    """

    def __init__(self, api: str, engine: Engine, database_url: URL) -> None:
        self.api = api
        self.engine = engine
        self.async_engine: AsyncEngine | None = None
        self._runner: LoopRunner | None = None
        if api == "async":
            self._runner = LoopRunner()
            self.async_engine = create_async_engine(database_url, poolclass=NullPool)

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``; on ``async`` inside the greenlet bridge, where :meth:`transaction` works."""
        if self._runner is None:
            return function(*args)
        return self._runner.call(lambda: function(*args))

    @contextlib.contextmanager
    def transaction(self, schema: str, **defaults: Any) -> Iterator[Any]:
        """A repository on a session of its own, committed at the end of the block (so Node sees the rows)."""
        translate = schema_translate_map(schema)
        if self.async_engine is None:
            with Session(self.engine.execution_options(schema_translate_map=translate)) as session, session.begin():
                yield Boss(session, schema=schema, **defaults)
            return
        owner = AsyncSession(self.async_engine.execution_options(schema_translate_map=translate))
        with owner.sync_session as session, session.begin():
            yield AwaitingBoss(AsyncBoss(owner, schema=schema, **defaults))

    def close(self) -> None:
        if self._runner is not None and self.async_engine is not None:
            self._runner.run(self.async_engine.dispose())
            self._runner.close()


@pytest.fixture(scope="module", params=APIS)
def python_side(request: pytest.FixtureRequest, engine: Engine, database_url: URL) -> Iterator[PythonSide]:
    """sqla_boss's side on ``Boss`` or ``AsyncBoss``: what uses it runs once per API."""
    side = PythonSide(request.param, engine, database_url)
    try:
        yield side
    finally:
        side.close()


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


def relation_exists(engine: Engine, schema: str, name: str) -> bool:
    with engine.connect() as connection:
        found = connection.execute(text("SELECT to_regclass(:name)"), {"name": f"{schema}.{name}"}).scalar()
    return found is not None


def slot_start(moment: dt.datetime, seconds: int) -> dt.datetime:
    """The naive UTC start of the ``seconds``-long throttling slot holding ``moment`` (pg-boss's formula)."""
    slots = (moment - EPOCH) // dt.timedelta(seconds=seconds)
    return (EPOCH + slots * dt.timedelta(seconds=seconds)).replace(tzinfo=None)


@pytest.fixture(scope="module")
def new_schema(engine: Engine) -> Iterator[Callable[[str], str]]:
    """Fresh schema names for the module's fixtures; every schema made is dropped at the end."""
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(unique_name(prefix))
        return made[-1]

    yield make
    for schema in made:
        drop_schema(engine, schema)


# =================================================================================== 1. same rows

FIXED_ID = uuid.UUID("11111111-2222-3333-4444-555555555555")
OTHER_ID = uuid.UUID("66666666-7777-8888-9999-000000000000")
ISO_START = "2041-01-02T03:04:05.678Z"
DATETIME_START = dt.datetime(2042, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
KEEP_UNTIL = dt.datetime(2043, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)

DEAD_LETTER_QUEUES = ("dlq", "dlq2")
"""Queues every part-1 schema has, for the ``dead_letter`` options."""

CONFIGURED = {
    "retry_limit": 5,
    "retry_delay": 9,
    "retry_backoff": True,
    "expire_in_seconds": 33,
    "retention_minutes": 10,
    "dead_letter": "dlq",
}
"""A queue with every setting a queue has."""

JOB_OVERRIDES = {
    "retry_limit": 1,
    "retry_delay": 0,
    "retry_backoff": False,
    "expire_in_seconds": 5,
    "retention_seconds": 60,
    "dead_letter": "dlq2",
}
"""Job options that override every setting of :data:`CONFIGURED`."""

DEFAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "ctor": {"retry_limit": 4, "retry_delay": 6, "expire_in_minutes": 7, "retention_days": 3},
    "ctor-backoff": {"retry_backoff": True, "expire_in_seconds": 45, "retention_hours": 5},
    "ctor-units": {"retry_limit": 0, "expire_in_hours": 2, "retention_minutes": 90},
}
"""Constructor job defaults: ``Boss(session, **defaults)`` (or ``AsyncBoss``) against ``new PgBoss({...camelCase})``."""


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
        if self.seconds is not None:
            return self.seconds
        for unit, factor in (("singleton_hours", 3600), ("singleton_minutes", 60), ("singleton_seconds", 1)):
            value = py_value(self.options.get(unit))
            if value:
                return int(value * factor)
        return None

    def python(self, boss: Boss, queue: str) -> uuid.UUID | None:
        data, options = py_value(self.data), py_value(self.options)
        if self.method == "send":
            return boss.send(queue, data, **options)
        if self.method == "send_after":
            return boss.send_after(queue, data, after=py_value(self.after), **options)
        assert self.seconds is not None
        method = boss.send_throttled if self.method == "send_throttled" else boss.send_debounced
        return method(queue, data, seconds=self.seconds, key=self.key, **options)

    def node(self, script: Script, queue: str) -> int:
        data, options = js_value(self.data), js_options(self.options)
        if self.method == "send":
            return script.add("send", queue, data, options)
        if self.method == "send_after":
            return script.add("sendAfter", queue, data, options or None, js_value(self.after))
        return script.add(camel(self.method), queue, data, options or None, self.seconds, self.key)


@dataclass(frozen=True)
class Insert:
    """One batch ``insert``; each job's ``data`` must be unique in its case (it identifies the row)."""

    jobs: tuple[Mapping[str, Any], ...]

    def python(self, boss: Boss, queue: str) -> list[uuid.UUID]:
        return boss.insert([{"name": queue, **py_value(job)} for job in self.jobs])

    def node(self, script: Script, queue: str) -> int:
        return script.add("insert", [{"name": queue, **js_options(job)} for job in self.jobs])

    def job_for(self, data: Any) -> Mapping[str, Any] | None:
        return next((job for job in self.jobs if py_value(job.get("data")) == data), None)


@dataclass(frozen=True)
class SendCase:
    """Calls made on a queue of their own (with ``queue`` settings) under the constructor ``defaults``."""

    id: str
    calls: tuple[Send | Insert, ...]
    returns: tuple[bool, ...] | None = None
    """Which of the :class:`Send` calls return an id (``False``: ``None``); all of them by default."""
    queue: Mapping[str, Any] = field(default_factory=dict)
    defaults: str = "none"

    @property
    def sends(self) -> list[Send]:
        return [item for item in self.calls if isinstance(item, Send)]

    @property
    def expected_returns(self) -> list[bool]:
        return list(self.returns) if self.returns is not None else [True] * len(self.sends)


def case(
    id: str,
    *calls: Send | Insert,
    returns: tuple[bool, ...] | None = None,
    queue: Mapping[str, Any] | None = None,
    defaults: str = "none",
) -> SendCase:
    return SendCase(id, calls, returns, queue or {}, defaults)


def send(data: Any = None, **options: Any) -> Send:
    return Send("send", data, options)


def insert(*jobs: Mapping[str, Any]) -> Insert:
    return Insert(tuple(jobs))


EVERYTHING = {
    "id": FIXED_ID,
    "priority": 3,
    "start_after": "2 hours",
    "singleton_key": "all",
    "singleton_minutes": 20,
    "retry_limit": 6,
    "retry_delay": 7,
    "retry_backoff": True,
    "expire_in_minutes": 8,
    "retention_hours": 9,
    "dead_letter": "dlq",
}

CASES: list[SendCase] = [
    # Data.
    case("no-data", send()),
    case("data-object", send({"a": [1, {"b": None}], "s": "é ✓", "f": 1.5})),
    case("data-number", send(42)),
    case("data-boolean", send(True)),
    # pg-boss (node-pg) sends a string as JSON text; sqla_boss serialises it (PGBOSS10.md §4.1).
    case("data-string", send(Both(py="quoted", js='"quoted"'))),
    # Priority.
    case("priority", send(None, priority=5)),
    case("priority-negative", send(None, priority=-3)),
    case("priority-zero", send(None, priority=0)),
    # start_after (§4.3): seconds, interval text, ISO 'Z' text, a datetime against a JavaScript Date.
    case("start-after-seconds", send(None, start_after=5)),
    case("start-after-fraction", send(None, start_after=1.5)),
    case("start-after-negative", send(None, start_after=-5)),
    case("start-after-number-text", send(None, start_after="5")),
    case("start-after-interval", send(None, start_after="90 minutes")),
    case("start-after-iso-z", send(None, start_after=ISO_START)),
    case("start-after-datetime", send(None, start_after=DATETIME_START)),
    case("start-after-timedelta", send(None, start_after=Both(py=dt.timedelta(minutes=2), js=120))),
    # Singleton keys and throttling slots (§4.4); a taken slot answers None.
    case("singleton-key-alone", send(1, singleton_key="k"), send(2, singleton_key="k")),
    case("singleton-seconds", send(1, singleton_seconds=600), send(2, singleton_seconds=600), returns=(True, False)),
    case(
        "singleton-minutes-keys",
        send(1, singleton_minutes=30, singleton_key="a"),
        send(2, singleton_minutes=30, singleton_key="a"),
        send(3, singleton_minutes=30, singleton_key="b"),
        returns=(True, False, True),
    ),
    case("singleton-hours", send(None, singleton_hours=2)),
    case("singleton-hours-24", send(None, singleton_hours=24)),
    case("singleton-zero-units", send(None, singleton_hours=0, singleton_minutes=0, singleton_seconds=120)),
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
        *[Send("send_debounced", n, seconds=600) for n in range(3)],
        returns=(True, True, False),
    ),
    case(
        "send-throttled",
        Send("send_throttled", 1, {"retry_limit": 1}, seconds=600, key="t"),
        Send("send_throttled", 2, seconds=600, key="t"),
        Send("send_throttled", 3, seconds=600, key="u"),
        returns=(True, False, True),
    ),
    case(
        "send-throttled-no-key",
        Send("send_throttled", 1, seconds=600),
        Send("send_throttled", 2, seconds=600),
        returns=(True, False),
    ),
    # send_after.
    case("send-after-seconds", Send("send_after", 1, {"priority": 2}, after=30)),
    case("send-after-interval", Send("send_after", 1, after="2 hours")),
    case("send-after-iso-z", Send("send_after", 1, after=ISO_START)),
    case("send-after-datetime", Send("send_after", 1, {"retention_days": 1}, after=DATETIME_START)),
    # Retries.
    case("retry-limit-zero", send(None, retry_limit=0)),
    case("retry-limit-delay", send(None, retry_limit=7, retry_delay=4)),
    case("retry-delay-timedelta", send(None, retry_delay=Both(py=dt.timedelta(seconds=30), js=30))),
    case("retry-backoff", send(None, retry_backoff=True, retry_delay=3)),
    case("retry-backoff-no-delay", send(None, retry_backoff=True)),
    case("retry-backoff-zero-delay", send(None, retry_backoff=True, retry_delay=0)),
    case("retry-no-backoff-zero-delay", send(None, retry_backoff=False, retry_delay=0)),
    # Expiration: hours, then minutes, then seconds, by presence.
    case("expire-seconds", send(None, expire_in_seconds=5)),
    case("expire-fraction", send(None, expire_in_seconds=1.5)),
    case("expire-minutes", send(None, expire_in_minutes=7)),
    case("expire-hours", send(None, expire_in_hours=2)),
    case("expire-almost-a-day", send(None, expire_in_seconds=86399)),
    case("expire-all-units", send(None, expire_in_hours=1, expire_in_minutes=5, expire_in_seconds=9)),
    # Retention: days, then hours, then minutes, then seconds; counted from start_after.
    case("retention-seconds", send(None, retention_seconds=60)),
    case("retention-minutes", send(None, retention_minutes=90)),
    case("retention-hours", send(None, retention_hours=5)),
    case("retention-days", send(None, retention_days=3)),
    case("retention-fraction", send(None, retention_days=1.5)),
    case("retention-all-units", send(None, retention_days=2, retention_hours=1, retention_seconds=7)),
    case("retention-after-start", send(None, start_after="90 minutes", retention_days=3)),
    # Dead letter and ids.
    case("dead-letter", send(None, dead_letter="dlq")),
    case("id", send(None, id=FIXED_ID)),
    case("id-duplicate", send(1, id=FIXED_ID), send(2, id=FIXED_ID), returns=(True, False)),
    case("everything", send({"all": True}, **EVERYTHING)),
    # Queue settings, and job options over them.
    case("queue-settings", send(), queue=CONFIGURED),
    case("job-over-queue", send(None, **JOB_OVERRIDES), queue=CONFIGURED),
    case("queue-backoff-job-delay", send(None, retry_delay=0), queue={"retry_backoff": True}),
    # Policies (§3.5): conflicts answer None.
    case("policy-standard", send(1), send(2), queue={"policy": "standard"}),
    case(
        "policy-short",
        send(1),
        send(2),
        send(3, singleton_key="a"),
        send(4, singleton_key="a"),
        send(5, singleton_key="b"),
        returns=(True, False, True, False, True),
        queue={"policy": "short", "retry_limit": 1},
    ),
    case(
        "policy-singleton",
        send(1, singleton_key="a"),
        send(2, singleton_key="a"),
        send(3),
        queue={"policy": "singleton", "expire_in_seconds": 30},
    ),
    case(
        "policy-stately",
        send(1, singleton_key="a"),
        send(2, singleton_key="a"),
        send(3),
        send(4),
        returns=(True, False, True, False),
        queue={"policy": "stately", "retention_minutes": 5},
    ),
    case(
        "policy-stately-throttled",
        send(1, singleton_seconds=600),
        send(2, singleton_seconds=600, singleton_key="x"),
        send(3, singleton_seconds=600, singleton_key="x"),
        returns=(True, True, False),
        queue={"policy": "stately"},
    ),
    # Batch inserts (§4.6): only the insert fields; conflicting rows are left out.
    case(
        "insert-fields",
        insert(
            {"data": {"n": 0}},
            {"data": {"n": 1}, "priority": 3, "start_after": 45},
            {"data": {"n": 2}, "start_after": "30 seconds", "singleton_seconds": 60, "singleton_key": "ins"},
            {"data": {"n": 3}, "start_after": ISO_START},
            {"data": {"n": 4}, "start_after": DATETIME_START},
            {"data": {"n": 5}, "expire_in_seconds": 77, "retry_limit": 1, "retry_delay": 5, "retry_backoff": True},
            {"data": {"n": 6}, "retry_backoff": True},
            {"data": {"n": 7}, "keep_until": KEEP_UNTIL},
            {"data": {"n": 8}, "dead_letter": "dlq"},
            {"data": {"n": 9}, "id": OTHER_ID, "singleton_key": "plain"},
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
            {"data": {"n": 2}, "singleton_seconds": 600},
            {"data": {"n": 3}, "singleton_seconds": 600},
            {"data": {"n": 4}},
        ),
    ),
    case(
        "insert-short",
        insert({"data": {"n": 0}}, {"data": {"n": 1}}, {"data": {"n": 2}, "singleton_key": "a"}),
        queue={"policy": "short"},
    ),
    # Constructor defaults: job, then queue, then constructor, then pg-boss's own.
    *[
        item
        for name in ("ctor", "ctor-backoff", "ctor-units")
        for item in (
            case(f"{name}-plain", send(), defaults=name),
            case(f"{name}-queue", send(), queue=CONFIGURED, defaults=name),
            case(
                f"{name}-partial-queue",
                send(),
                send(None, expire_in_seconds=5),
                queue={"retry_limit": 3},
                defaults=name,
            ),
            case(f"{name}-job", send(None, **JOB_OVERRIDES), queue=CONFIGURED, defaults=name),
            case(f"{name}-no-backoff", send(None, retry_backoff=False), defaults=name),
            case(f"{name}-start-after", send(None, start_after="90 minutes"), defaults=name),
            case(
                f"{name}-insert",
                insert({"data": {"n": 0}}, {"data": {"n": 1}, "retry_delay": 2, "expire_in_seconds": 9}),
                queue={"retry_limit": 3},
                defaults=name,
            ),
            case(f"{name}-throttled", Send("send_throttled", 1, seconds=60), defaults=name),
        )
    ],
]


def sent_row(row: Mapping[str, Any], slot: int | None, side: str) -> dict[str, Any]:
    """A freshly sent row without its id, its clock readings as offsets (``side`` is ``python`` or ``node``).

    ``start_after`` is relative to ``created_on`` (absolute when given as a far-future timestamp),
    ``keep_until`` to ``start_after`` (absolute when given to ``insert``), and ``singleton_on`` to the start
    of the slot holding ``created_on``. Within one side these readings all come from the same ``now()``,
    so they compare exactly.

    The one genuine clock difference is a debounced job in the next slot: pg-boss computes its start delay
    from the client clock corrected by the skew it measured at start, read before its insert's transaction
    begins, so its whole-second delay may be a second longer than one computed from the database clock.
    Its lead over the slot start is checked (exactly [1, 2) s for sqla_boss; [0.5, 3) s for pg-boss) and
    then left out of the comparison.
    """
    created, start_after = row["created_on"], row["start_after"]
    normalised = {key: value for key, value in row.items() if key not in ("id", "created_on")}
    normalised["start_after"] = start_after if start_after >= FAR_FUTURE else start_after - created
    keep_until = row["keep_until"]
    normalised["keep_until"] = keep_until if start_after < FAR_FUTURE <= keep_until else keep_until - start_after
    normalised["started_on"] = row["started_on"] is not None
    normalised["completed_on"] = row["completed_on"] is not None
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


@dataclass
class Outcome:
    """What one side's calls of one case returned, and the rows they left (in call order, then inserts)."""

    results: list[Any]
    """What each call returned."""
    returns: list[Any]
    """What each :class:`Send` call returned."""
    rows: list[dict[str, Any] | None]
    """One normalised row per :class:`Send` (``None`` where it returned ``None``), then the inserted rows."""
    inserted_ids: list[uuid.UUID]
    """The ids of the inserted rows, sorted."""


def collect(engine: Engine, schema: str, item: SendCase, returns: list[Any], side: str) -> Outcome:
    rows = {row["id"]: row for row in job_rows(engine, schema, "name = :name", name=item.id)}
    collected: list[dict[str, Any] | None] = []
    send_returns = [result for call_, result in zip(item.calls, returns, strict=True) if isinstance(call_, Send)]
    for call_, result in zip(item.sends, send_returns, strict=True):
        collected.append(None if result is None else sent_row(rows.pop(uuid.UUID(str(result))), call_.slot, side))
    inserts = [call_ for call_ in item.calls if isinstance(call_, Insert)]
    for row in sorted(rows.values(), key=lambda row: json.dumps(row["data"], sort_keys=True)):
        job = next((found for batch in inserts if (found := batch.job_for(row["data"])) is not None), None)
        assert job is not None, f"{side}: a row nobody sent: {row}"
        collected.append(sent_row(row, py_value(job.get("singleton_seconds")), side))
    return Outcome(returns, send_returns, collected, sorted(rows))


@dataclass
class SendRun:
    python_schema: str
    node_schema: str
    outcomes: dict[str, dict[str, Outcome]]
    """``outcomes[case id]["python" | "node"]``."""


@dataclass
class NodeSendRun:
    schema: str
    outcomes: dict[str, Outcome]
    """pg-boss's outcome, by case id."""


@pytest.fixture(scope="module")
def sent_by_node(engine: Engine, pgboss: PgBoss, new_schema: Callable[[str], str]) -> dict[str, NodeSendRun]:
    """Every case sent by pg-boss, one schema per constructor configuration: once, for both Python APIs."""
    runs: dict[str, NodeSendRun] = {}
    for defaults_name, defaults in DEFAULTS.items():
        cases = [item for item in CASES if item.defaults == defaults_name]
        theirs = new_schema("t_send_js")
        script = Script(**js_options(defaults))
        for name in DEAD_LETTER_QUEUES:
            script.add("createQueue", name)
        for item in cases:
            script.add("createQueue", item.id, js_options(item.queue))
        indexes = {item.id: [call_.node(script, item.id) for call_ in item.calls] for item in cases}
        results = script.run(pgboss, theirs)
        outcomes: dict[str, Outcome] = {}
        for item in cases:
            returns = [results[index] for index in indexes[item.id]]
            outcomes[item.id] = collect(engine, theirs, item, returns, "node")
        runs[defaults_name] = NodeSendRun(theirs, outcomes)
    return runs


@pytest.fixture(scope="module")
def sent(
    engine: Engine, python_side: PythonSide, sent_by_node: dict[str, NodeSendRun], new_schema: Callable[[str], str]
) -> dict[str, SendRun]:
    """Every case sent by sqla_boss (on ``python_side``'s API) next to pg-boss's, one schema per configuration."""

    def send_all() -> dict[str, SendRun]:
        runs: dict[str, SendRun] = {}
        for defaults_name, defaults in DEFAULTS.items():
            cases = [item for item in CASES if item.defaults == defaults_name]
            ours, theirs = new_schema("t_send_py"), sent_by_node[defaults_name]
            outcomes: dict[str, dict[str, Outcome]] = {item.id: {} for item in cases}

            migrations.upgrade(engine, schema=ours)
            with python_side.transaction(ours) as boss:
                for name in DEAD_LETTER_QUEUES:
                    boss.create_queue(name)
                for item in cases:
                    boss.create_queue(item.id, **item.queue)
            for item in cases:
                with python_side.transaction(ours, **defaults) as boss:
                    returns = [call_.python(boss, item.id) for call_ in item.calls]
                outcomes[item.id]["python"] = collect(engine, ours, item, returns, "python")
                inserted = [ids for call_, ids in zip(item.calls, returns, strict=True) if isinstance(call_, Insert)]
                assert sorted(job_id for ids in inserted for job_id in ids) == outcomes[item.id]["python"].inserted_ids
                outcomes[item.id]["node"] = theirs.outcomes[item.id]
            runs[defaults_name] = SendRun(ours, theirs.schema, outcomes)
        return runs

    return python_side.run(send_all)


@pytest.mark.parametrize("item", CASES, ids=[item.id for item in CASES])
def test_send_writes_the_rows_pgboss_writes(sent: dict[str, SendRun], item: SendCase) -> None:
    python, node = (sent[item.defaults].outcomes[item.id][side] for side in ("python", "node"))
    expected = item.expected_returns
    assert [result is not None for result in node.returns] == expected, "pg-boss does not behave as the case says"
    assert [result is not None for result in python.returns] == expected
    assert python.rows == node.rows
    assert len([row for row in python.rows if row is not None]) == sum(expected) + len(python.inserted_ids)
    for result in python.returns:
        assert result is None or isinstance(result, uuid.UUID)
    for send_, python_id, node_id in zip(item.sends, python.returns, node.returns, strict=True):
        if send_.options.get("id") is not None and python_id is not None:
            assert python_id == send_.options["id"]
            assert node_id == str(send_.options["id"])


def test_insert_returns_the_ids_pgboss_does_not(sent: dict[str, SendRun]) -> None:
    # pg-boss's insert() resolves to null (§4.6); sqla_boss returns the ids of the rows it inserted.
    for item in CASES:
        outcome = sent[item.defaults].outcomes[item.id]
        for position, call_ in enumerate(item.calls):
            if isinstance(call_, Insert):
                assert outcome["node"].results[position] is None
                assert all(isinstance(job_id, uuid.UUID) for job_id in outcome["python"].results[position])
    conflicts = sent["none"].outcomes["insert-conflicts"]["python"]
    assert len(conflicts.results[1]) == len(conflicts.inserted_ids) == 2
    assert OTHER_ID in sent["none"].outcomes["insert-fields"]["python"].inserted_ids


def test_both_sides_made_the_same_queues(engine: Engine, sent: dict[str, SendRun]) -> None:
    ignored = ("created_on", "updated_on")
    for run in sent.values():
        for item in [*DEAD_LETTER_QUEUES, *(case.id for case in CASES if run.outcomes.get(case.id))]:
            ours, theirs = queue_row(engine, run.python_schema, item), queue_row(engine, run.node_schema, item)
            assert ours is not None
            assert theirs is not None
            assert {k: v for k, v in ours.items() if k not in ignored} == {
                k: v for k, v in theirs.items() if k not in ignored
            }


def rows_of(sent: dict[str, SendRun], case_id: str, side: str) -> list[dict[str, Any]]:
    defaults = next(item.defaults for item in CASES if item.id == case_id)
    return [row for row in sent[defaults].outcomes[case_id][side].rows if row is not None]


@pytest.mark.parametrize("side", ["python", "node"])
def test_precedence_is_job_then_queue_then_constructor_then_builtin(sent: dict[str, SendRun], side: str) -> None:
    def settings(row: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            row["retry_limit"],
            row["retry_delay"],
            row["retry_backoff"],
            row["expire_in"],
            row["keep_until"],
            row["dead_letter"],
        )

    minutes, hours, days = (lambda n: dt.timedelta(minutes=n)), (lambda n: dt.timedelta(hours=n)), dt.timedelta
    # Built-in: retry_limit 2 (not 0), no delay, no backoff, 15 minutes, 14 days.
    assert [settings(row) for row in rows_of(sent, "no-data", side)] == [(2, 0, False, minutes(15), days(14), None)]
    assert [settings(row) for row in rows_of(sent, "retry-backoff-no-delay", side)] == [
        (2, 1, True, minutes(15), days(14), None)
    ]
    # Queue over built-in, job over queue.
    queue = (5, 9, True, dt.timedelta(seconds=33), minutes(10), "dlq")
    job = (1, 0, False, dt.timedelta(seconds=5), dt.timedelta(seconds=60), "dlq2")
    assert [settings(row) for row in rows_of(sent, "queue-settings", side)] == [queue]
    assert [settings(row) for row in rows_of(sent, "job-over-queue", side)] == [job]
    # Constructor over built-in, queue over constructor, job over both.
    ctor = (4, 6, False, minutes(7), days(3), None)
    assert [settings(row) for row in rows_of(sent, "ctor-plain", side)] == [ctor]
    assert [settings(row) for row in rows_of(sent, "ctor-queue", side)] == [queue]
    assert [settings(row) for row in rows_of(sent, "ctor-job", side)] == [job]
    assert [settings(row) for row in rows_of(sent, "ctor-partial-queue", side)] == [
        (3, 6, False, minutes(7), days(3), None),
        (3, 6, False, dt.timedelta(seconds=5), days(3), None),
    ]
    assert [settings(row) for row in rows_of(sent, "ctor-insert", side)] == [
        (3, 6, False, minutes(7), days(3), None),
        (3, 2, False, dt.timedelta(seconds=9), days(3), None),
    ]
    # A constructor backoff without any delay still waits at least 1 s; a job can turn it off.
    assert [settings(row) for row in rows_of(sent, "ctor-backoff-plain", side)] == [
        (2, 1, True, dt.timedelta(seconds=45), hours(5), None)
    ]
    assert [settings(row) for row in rows_of(sent, "ctor-backoff-no-backoff", side)] == [
        (2, 0, False, dt.timedelta(seconds=45), hours(5), None)
    ]
    assert [settings(row) for row in rows_of(sent, "ctor-units-plain", side)] == [
        (0, 0, False, hours(2), minutes(90), None)
    ]


@pytest.mark.parametrize("side", ["python", "node"])
def test_start_after_and_slots_follow_pgboss_rules(sent: dict[str, SendRun], side: str) -> None:
    def start(case_id: str) -> Any:
        return rows_of(sent, case_id, side)[0]["start_after"]

    seconds = dt.timedelta(seconds=1)
    assert start("start-after-seconds") == 5 * seconds
    assert start("start-after-fraction") == 1.5 * seconds
    assert start("start-after-negative") == start("no-data") == 0 * seconds
    assert start("start-after-interval") == 90 * 60 * seconds
    assert start("start-after-iso-z") == dt.datetime(2041, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert start("start-after-datetime") == DATETIME_START
    assert start("send-after-datetime") == DATETIME_START
    assert start("start-after-timedelta") == 120 * seconds
    # keep_until counts from start_after, not from creation.
    assert rows_of(sent, "retention-after-start", side)[0]["keep_until"] == dt.timedelta(days=3)
    # Slots: the current one, and the next one for a debounced send whose slot is taken.
    assert [row["singleton_on"] for row in rows_of(sent, "send-debounced", side)] == [
        dt.timedelta(0),
        dt.timedelta(hours=1),
    ]
    assert [row["singleton_on"] for row in rows_of(sent, "singleton-zero-units", side)] == [dt.timedelta(0)]


def test_what_pgboss_answers_with_null_where_sqla_boss_refuses(
    engine: Engine, pgboss: PgBoss, sent_by_node: dict[str, NodeSendRun]
) -> None:
    # pg-boss's half of the next test, run once: its send to a missing queue resolves to null, its insert
    # silently drops such rows, and a missing dead letter queue is a foreign key error.
    node_schema = sent_by_node["none"].schema
    script = Script()
    send_index = script.add("send", "missing-queue", {"n": 1})
    insert_index = script.add("insert", [{"name": "missing-queue"}, {"name": "dlq", "data": {"dropped": False}}])
    results = script.run(pgboss, node_schema)
    assert results[send_index] is None
    assert results[insert_index] is None
    assert len(job_rows(engine, node_schema, "data = '{\"dropped\": false}'")) == 1

    with pytest.raises(PgBossDriverError) as refused:
        pgboss.run(node_schema, [start(**QUIET), call("send", "dlq", None, {"deadLetter": "missing-queue"})])
    assert refused.value.error["code"] == "23503"  # foreign_key_violation


def test_what_sqla_boss_refuses_where_pgboss_answers_null(
    engine: Engine, python_side: PythonSide, sent: dict[str, SendRun]
) -> None:
    # Intended differences (Boss docstrings): pg-boss's send to a missing queue resolves to null and its
    # insert silently drops such rows (previous test); sqla_boss raises QueueNotFoundError and writes nothing.
    # A missing dead letter queue is a foreign key error in pg-boss, and DeadLetterQueueNotFoundError here.
    run = sent["none"]

    def refused() -> None:
        with pytest.raises(QueueNotFoundError), python_side.transaction(run.python_schema) as boss:
            boss.send("missing-queue", {"n": 1})
        with pytest.raises(QueueNotFoundError), python_side.transaction(run.python_schema) as boss:
            boss.insert([{"name": "missing-queue"}, {"name": "dlq", "data": {"dropped": False}}])
        assert job_rows(engine, run.python_schema, "data = '{\"dropped\": false}'") == []

        with pytest.raises(DeadLetterQueueNotFoundError), python_side.transaction(run.python_schema) as boss:
            boss.send("dlq", None, dead_letter="missing-queue")

    python_side.run(refused)


# ============================================================================== 2. both directions

DIRECTIONS = ("py", "js")
"""``py``: sqla_boss sends and pg-boss works the jobs; ``js``: pg-boss sends and sqla_boss works them."""

WORK_QUEUES: dict[str, dict[str, Any]] = {
    "dead": {},
    "complete": {},
    "fail-loop": {"retry_limit": 2, "retry_delay": 0, "dead_letter": "dead"},
    "backoff": {"retry_limit": 3, "retry_delay": 10, "retry_backoff": True},
    "stately": {"policy": "stately", "retry_limit": 1, "dead_letter": "dead"},
    "unstarted": {"retry_limit": 1},
}
"""The queues of part 2, once per direction (``<name>.<direction>``); the dead letter queues follow suit."""

BACKOFF_DELAY = 10
STATELY_DELAY = 3600
"""The first stately job's retry delay: long enough that it never becomes due during the test."""

COMPLETIONS: dict[str, Any] = {
    "object": {"ok": True, "n": 1},
    "string": "done",
    "none": None,
    "list": [1, 2],
    "zero": 0,
}
"""What each completed job is completed with, by label."""

STORED_OUTPUTS: dict[str, Any] = {
    "object": {"ok": True, "n": 1},
    "string": {"value": "done"},
    "none": None,
    "list": {"value": [1, 2]},
    "zero": {"value": 0},
}
"""What both sides store as ``output`` for :data:`COMPLETIONS` (PGBOSS10.md §6.1)."""


def queue_in(name: str, direction: str) -> str:
    return f"{name}.{direction}"


def queue_settings(name: str, direction: str) -> dict[str, Any]:
    settings = dict(WORK_QUEUES[name])
    if "dead_letter" in settings:
        settings["dead_letter"] = queue_in(settings["dead_letter"], direction)
    return settings


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


@dataclass
class Worked:
    """What happened to one direction's jobs, as seen by the side that worked them."""

    ids: dict[str, uuid.UUID] = field(default_factory=dict)
    """Job ids by label: ``complete:<label>``, ``fail-loop``, ``backoff``, ``unstarted``, ``stately:j1/j2``."""
    retry_counts: dict[str, list[int]] = field(default_factory=dict)
    """Scenario: the ``retry_count`` of the job at each fetch."""
    affected: dict[str, list[int]] = field(default_factory=dict)
    """Scenario: what each complete or fail call reported as affected."""
    backoff_bounds: list[tuple[float, float]] = field(default_factory=list)
    """For retry_count 0, 1, 2: bounds (low, high) of start_after minus the time of the failing call."""
    backoff_starts: list[dt.datetime] = field(default_factory=list)
    """The start_after each backoff failure set."""
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


def send_work_python(boss: Boss, worked: Worked) -> None:
    """The ``py`` direction's sends; the stately part needs its own transactions (see caller)."""
    direction = "py"
    for label in COMPLETIONS:
        job_id = boss.send(queue_in("complete", direction), {"complete": label})
        assert job_id is not None
        worked.ids[f"complete:{label}"] = job_id
    for scenario in ("fail-loop", "backoff", "unstarted"):
        job_id = boss.send(queue_in(scenario, direction), {"scenario": scenario})
        assert job_id is not None
        worked.ids[scenario] = job_id


def work_python(python_side: PythonSide, schema: str, worked: Worked) -> None:
    """sqla_boss works the ``js`` direction's jobs, one transaction per call as a worker would."""

    def queue(name: str) -> str:
        return queue_in(name, "js")

    with python_side.transaction(schema) as boss:
        fetched = boss.fetch(queue("complete"), batch_size=len(COMPLETIONS))
        assert sorted(job.id for job in fetched) == sorted(worked.ids[f"complete:{label}"] for label in COMPLETIONS)
        worked.affected["complete"] = [
            boss.complete(queue("complete"), worked.ids[f"complete:{label}"], output)
            for label, output in COMPLETIONS.items()
        ]

    worked.retry_counts["fail-loop"], worked.affected["fail-loop"] = [], []
    for attempt in range(3):
        with python_side.transaction(schema) as boss:
            [job] = boss.fetch(queue("fail-loop"))
            assert job.id == worked.ids["fail-loop"]
            worked.retry_counts["fail-loop"].append(job.retry_count)
        with python_side.transaction(schema) as boss:
            failing = python_error(f"boom {attempt}")
            worked.affected["fail-loop"].append(boss.fail(queue("fail-loop"), worked.ids["fail-loop"], failing))
    with python_side.transaction(schema) as boss:
        worked.leftover = boss.fetch(queue("fail-loop"))

    worked.retry_counts["backoff"], worked.affected["backoff"] = [], []
    for attempt in range(4):
        with python_side.transaction(schema) as boss:
            [job] = boss.fetch(queue("backoff"), ignore_start_after=True)
            assert job.id == worked.ids["backoff"]
            worked.retry_counts["backoff"].append(job.retry_count)
        with python_side.transaction(schema) as boss:
            failing = python_error(f"backoff {attempt}")
            worked.affected["backoff"].append(boss.fail(queue("backoff"), worked.ids["backoff"], failing))
            now = boss.session.execute(text("SELECT now()")).scalar_one()
            failed = boss.get_job_by_id(queue("backoff"), worked.ids["backoff"])
            assert failed is not None
            if attempt < 3:
                delay = (failed.start_after - now).total_seconds()
                worked.backoff_bounds.append((delay, delay))
                worked.backoff_starts.append(failed.start_after)

    with python_side.transaction(schema) as boss:
        worked.stately_fetched += [job.id for job in boss.fetch(queue("stately"))]
    with python_side.transaction(schema) as boss:
        worked.affected["stately"] = [boss.fail(queue("stately"), worked.ids["stately:j2"], python_error("stately j2"))]

    with python_side.transaction(schema) as boss:
        worked.affected["unstarted"] = [boss.fail(queue("unstarted"), worked.ids["unstarted"], "not started")]
    with python_side.transaction(schema) as boss:
        worked.retry_counts["unstarted"] = [job.retry_count for job in boss.fetch(queue("unstarted"))]


def script_node_sends(script: Script) -> dict[str, int]:
    """pg-boss's sends for the ``js`` direction, including its half of the stately scenario."""
    indexes: dict[str, int] = {}
    for label in COMPLETIONS:
        indexes[f"complete:{label}"] = script.add("send", queue_in("complete", "js"), {"complete": label})
    for scenario in ("fail-loop", "backoff", "unstarted"):
        indexes[scenario] = script.add("send", queue_in(scenario, "js"), {"scenario": scenario})
    stately = queue_in("stately", "js")
    indexes["stately:j1"] = script.add(
        "send", stately, {"stately": "j1"}, {"singletonKey": "k", "retryDelay": STATELY_DELAY}
    )
    indexes["stately-fetch"] = script.add("fetch", stately)
    indexes["stately-fail"] = script.add("fail", stately, ref(indexes["stately:j1"]), node_error("stately j1"))
    indexes["stately:j2"] = script.add("send", stately, {"stately": "j2"}, {"singletonKey": "k"})
    return indexes


def script_node_work(script: Script, worked: Worked) -> Callable[[list[Any]], None]:
    """pg-boss works the ``py`` direction's jobs; returns what reads the results into ``worked``."""

    def queue(name: str) -> str:
        return queue_in(name, "py")

    ids = {label: str(job_id) for label, job_id in worked.ids.items()}
    complete_fetch = script.add("fetch", queue("complete"), {"batchSize": len(COMPLETIONS)})
    completes = [
        script.add("complete", queue("complete"), ids[f"complete:{label}"], output)
        for label, output in COMPLETIONS.items()
    ]
    loop = [
        (
            script.add("fetch", queue("fail-loop"), {"includeMetadata": True}),
            script.add("fail", queue("fail-loop"), ids["fail-loop"], node_error(f"boom {attempt}")),
        )
        for attempt in range(3)
    ]
    leftover = script.add("fetch", queue("fail-loop"))
    backoff = [
        (
            script.add("fetch", queue("backoff"), {"includeMetadata": True, "ignoreStartAfter": True}),
            script.add("fail", queue("backoff"), ids["backoff"], node_error(f"backoff {attempt}")),
        )
        for attempt in range(4)
    ]
    stately_fetch = script.add("fetch", queue("stately"))
    stately_fail = script.add("fail", queue("stately"), ids["stately:j2"], node_error("stately j2"))
    unstarted_fail = script.add("fail", queue("unstarted"), ids["unstarted"], "not started")
    unstarted_fetch = script.add("fetch", queue("unstarted"), {"includeMetadata": True})

    def read(results: list[Any]) -> None:
        assert sorted(job["id"] for job in results[complete_fetch]) == sorted(
            ids[f"complete:{label}"] for label in COMPLETIONS
        )
        worked.affected["complete"] = [results[index]["affected"] for index in completes]
        fetches = [results[fetch] for fetch, _ in loop]
        assert [job["id"] for jobs in fetches for job in jobs] == [ids["fail-loop"]] * 3
        worked.retry_counts["fail-loop"] = [jobs[0]["retryCount"] for jobs in fetches]
        worked.affected["fail-loop"] = [results[fail]["affected"] for _, fail in loop]
        worked.leftover = results[leftover]
        jobs = [results[fetch][0] for fetch, _ in backoff]
        assert [job["id"] for job in jobs] == [ids["backoff"]] * 4
        worked.retry_counts["backoff"] = [job["retryCount"] for job in jobs]
        worked.affected["backoff"] = [results[fail]["affected"] for _, fail in backoff]
        # The failure of fetch c happened between that fetch and the next one, whose metadata shows the
        # start_after it set; both readings are cut to milliseconds, hence the slack.
        for before, after in itertools.pairwise(jobs):
            start_after, started = js_time(after["startAfter"]), js_time(after["startedOn"])
            started_before = js_time(before["startedOn"])
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

    return read


@pytest.fixture(scope="module")
def work(engine: Engine, pgboss: PgBoss, python_side: PythonSide, new_schema: Callable[[str], str]) -> WorkRun:
    """Part 2 in one schema that pg-boss installed: sqla_boss sends, pg-boss works; then the other way."""
    schema = new_schema("t_work")
    pgboss.run(schema, [start(**QUIET), call("stop")])
    py, js = Worked(), Worked()

    def send_python() -> None:
        # sqla_boss makes the queues and sends the py direction's jobs, with its half of the stately case.
        with python_side.transaction(schema) as boss:
            for direction in DIRECTIONS:
                for name in WORK_QUEUES:
                    boss.create_queue(queue_in(name, direction), **queue_settings(name, direction))
        with python_side.transaction(schema) as boss:
            send_work_python(boss, py)
            stately = queue_in("stately", "py")
            first = boss.send(stately, {"stately": "j1"}, singleton_key="k", retry_delay=STATELY_DELAY)
            assert first is not None
            py.ids["stately:j1"] = first
        with python_side.transaction(schema) as boss:
            py.stately_fetched += [job.id for job in boss.fetch(stately)]
        with python_side.transaction(schema) as boss:
            assert boss.fail(stately, py.ids["stately:j1"], python_error("stately j1")) == 1
        with python_side.transaction(schema) as boss:
            second = boss.send(stately, {"stately": "j2"}, singleton_key="k")
            assert second is not None
            py.ids["stately:j2"] = second

    python_side.run(send_python)

    # pg-boss sends the js direction's jobs and works the py direction's, in one process.
    script = Script()
    sends = script_node_sends(script)
    read = script_node_work(script, py)
    results = script.run(pgboss, schema)
    read(results)
    for label in (*(f"complete:{label}" for label in COMPLETIONS), "fail-loop", "backoff", "unstarted"):
        js.ids[label] = uuid.UUID(results[sends[label]])
    js.ids["stately:j1"], js.ids["stately:j2"] = (
        uuid.UUID(results[sends[key]]) for key in ("stately:j1", "stately:j2")
    )
    js.stately_fetched += [uuid.UUID(job["id"]) for job in results[sends["stately-fetch"]]]
    assert results[sends["stately-fail"]]["affected"] == 1

    # sqla_boss works the js direction's jobs.
    python_side.run(work_python, python_side, schema, js)

    rows: dict[str, list[dict[str, Any]]] = {}
    for row in job_rows(engine, schema, "true"):
        rows.setdefault(row["name"], []).append(row)
    for queue_rows in rows.values():
        queue_rows.sort(key=lambda row: json.dumps(row["data"], sort_keys=True))
    return WorkRun(schema, {"py": py, "js": js}, rows)


def error_output(output: Any, message: str) -> dict[str, Any]:
    """``output`` stored from a failure with a ``TypeError(message)`` carrying ``code``, its stack elided."""
    assert isinstance(output, dict), output
    assert set(output) == {"name", "message", "stack", "code"}, output
    assert isinstance(output["stack"], str)
    assert f"TypeError: {message}" in output["stack"]
    assert {**output, "stack": "..."} == {"name": "TypeError", "message": message, "code": "E_BOOM", "stack": "..."}
    return {**output, "stack": "..."}


def rows_in(work: WorkRun, name: str, direction: str) -> list[dict[str, Any]]:
    return work.rows.get(queue_in(name, direction), [])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_completions_store_the_same_output(work: WorkRun, direction: str) -> None:
    worked = work.worked[direction]
    assert worked.affected["complete"] == [1] * len(COMPLETIONS)
    rows = {row["data"]["complete"]: row for row in rows_in(work, "complete", direction)}
    assert {label: row["output"] for label, row in rows.items()} == STORED_OUTPUTS
    for row in rows.values():
        assert (row["state"], row["retry_count"]) == ("completed", 0)
        assert row["started_on"] is not None
        assert row["completed_on"] is not None


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_fail_loop_retries_then_fails_and_dead_letters(work: WorkRun, direction: str) -> None:
    worked = work.worked[direction]
    assert worked.retry_counts["fail-loop"] == [0, 1, 2]
    assert worked.affected["fail-loop"] == [1, 1, 1]
    assert worked.leftover == []
    [row] = rows_in(work, "fail-loop", direction)
    assert (row["state"], row["retry_count"], row["retry_limit"]) == ("failed", 2, 2)
    assert row["completed_on"] is not None
    error_output(row["output"], "boom 2")
    [copy] = [copy for copy in rows_in(work, "dead", direction) if copy["data"] == row["data"]]
    assert_dead_letter_copy(copy, row)


def assert_dead_letter_copy(copy: Mapping[str, Any], source: Mapping[str, Any]) -> None:
    """§6.3: name, data, output and retry_limit copied, keep_until stretched, everything else defaults."""
    assert copy["name"] == source["dead_letter"]
    assert (copy["data"], copy["output"], copy["retry_limit"]) == (
        source["data"],
        source["output"],
        source["retry_limit"],
    )
    assert copy["keep_until"] == source["keep_until"] + (source["keep_until"] - source["start_after"])
    assert copy["id"] != source["id"]
    assert copy["start_after"] == copy["created_on"]
    assert {key: copy[key] for key in DEAD_LETTER_DEFAULTS} == DEAD_LETTER_DEFAULTS


DEAD_LETTER_DEFAULTS = {
    "priority": 0,
    "state": "created",
    "retry_count": 0,
    "retry_delay": 0,
    "retry_backoff": False,
    "started_on": None,
    "singleton_key": None,
    "singleton_on": None,
    "expire_in": dt.timedelta(minutes=15),
    "completed_on": None,
    "dead_letter": None,
    "policy": None,
}


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_backoff_doubles_within_bounds(work: WorkRun, direction: str) -> None:
    worked = work.worked[direction]
    assert worked.retry_counts["backoff"] == [0, 1, 2, 3]
    assert worked.affected["backoff"] == [1, 1, 1, 1]
    assert len(worked.backoff_bounds) == 3
    for count, (low, high) in enumerate(worked.backoff_bounds):
        # start_after - now lies in [d * 2^c, d * 2^(c+1)); the bounds hold it.
        assert high >= BACKOFF_DELAY * 2**count, (count, low, high)
        assert low < BACKOFF_DELAY * 2 ** (count + 1), (count, low, high)
        if direction == "js":
            assert low == high
    [row] = rows_in(work, "backoff", direction)
    assert (row["state"], row["retry_count"], row["retry_delay"], row["retry_backoff"]) == ("failed", 3, 10, True)
    # The last failure left start_after as the previous one set it.
    assert abs(row["start_after"] - worked.backoff_starts[-1]) < JS_MS
    error_output(row["output"], "backoff 3")


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_stately_failure_with_a_taken_retry_slot_fails_for_good(work: WorkRun, direction: str) -> None:
    # PGBOSS10.md trap 8: j1 of key k waits in retry, so failing j2 of the same key cannot re-insert it as
    # retry; it goes straight to failed, with its original start_after, and to the dead letter queue.
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


def worked_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row without its id and direction; clock readings reduced to what both directions share."""
    normalised = {key: value for key, value in row.items() if key not in ("id", "created_on")}
    normalised["name"] = row["name"].rpartition(".")[0]
    normalised["dead_letter"] = row["dead_letter"] and row["dead_letter"].rpartition(".")[0]
    normalised["start_after"] = "at creation" if row["start_after"] == row["created_on"] else "later"
    normalised["started_on"] = row["started_on"] is not None
    normalised["completed_on"] = row["completed_on"] is not None
    normalised["singleton_on"] = row["singleton_on"] is not None
    # Dead letter copies stretch their source's keep_until (checked above); the rest keep 14 days.
    normalised["keep_until"] = "stretched" if row["policy"] is None else row["keep_until"] - row["created_on"]
    output = row["output"]
    if isinstance(output, dict) and "stack" in output:
        normalised["output"] = error_output(output, output["message"])
    return normalised


@pytest.mark.parametrize("name", list(WORK_QUEUES))
def test_both_directions_leave_the_same_rows(work: WorkRun, name: str) -> None:
    py, js = ([worked_row(row) for row in rows_in(work, name, direction)] for direction in DIRECTIONS)
    assert py
    assert py == js


# ====================================================================================== 3. queues

QUEUE_SET: dict[str, dict[str, Any]] = {
    "dlq": {},
    "standard": {
        "retry_limit": 3,
        "retry_delay": 4,
        "retry_backoff": True,
        "expire_in_seconds": 50,
        "retention_minutes": 60,
        "dead_letter": "dlq",
    },
    "short": {"policy": "short", "retry_limit": 1, "expire_in_seconds": 20, "dead_letter": "dlq"},
    "singleton": {"policy": "singleton", "retry_delay": 2, "retention_minutes": 5},
    "stately": {"policy": "stately", "retry_limit": 0, "retry_backoff": False, "dead_letter": "dlq"},
    "empty": {},
    "purge": {"retry_limit": 1},
    "update": {"policy": "short", "retry_limit": 1},
    "update-all": {"policy": "singleton"},
}
"""The queues of part 3, made once by each side: ``py-<name>`` by sqla_boss, ``js-<name>`` by pg-boss."""

USED_QUEUES = ("standard", "short", "singleton", "stately")
"""Queues the other side sends two key-less jobs to and then fetches a batch of two from."""

UPDATE_ALL = {
    "policy": "stately",
    "retry_limit": 5,
    "retry_delay": 6,
    "retry_backoff": True,
    "expire_in_seconds": 70,
    "retention_minutes": 80,
    "dead_letter": "dlq",
}
"""Every setting ``update_queue`` changes, for ``update-all``."""

QUEUE_COLUMNS = (
    "name",
    "policy",
    "retry_limit",
    "retry_delay",
    "retry_backoff",
    "expire_seconds",
    "retention_minutes",
    "dead_letter",
)


def made_by(side: str, name: str) -> str:
    return f"{side}-{name}"


def settings_for(side: str, name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Queue settings with the dead letter queue renamed for ``side``."""
    renamed = dict(settings)
    if "dead_letter" in renamed:
        renamed["dead_letter"] = made_by(side, renamed["dead_letter"])
    return renamed


def expected_queue(side: str, name: str, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The queue row ``create_queue`` (then ``update_queue`` with ``settings``) should leave, by column."""
    given = settings_for(side, name, QUEUE_SET[name] if settings is None else settings)
    return {
        "name": made_by(side, name),
        "policy": given.get("policy", "standard"),
        "retry_limit": given.get("retry_limit"),
        "retry_delay": given.get("retry_delay"),
        "retry_backoff": given.get("retry_backoff"),
        "expire_seconds": given.get("expire_in_seconds"),
        "retention_minutes": given.get("retention_minutes"),
        "dead_letter": given.get("dead_letter"),
    }


def as_pgboss_queue(expected: Mapping[str, Any]) -> dict[str, Any]:
    """pg-boss's ``getQueue`` shape (§3.4) of a queue row, without the timestamps."""
    keys = {"expire_seconds": "expireInSeconds"}
    return {keys.get(column, camel(column)): value for column, value in expected.items()}


@dataclass
class QueueRun:
    schema: str
    node: dict[str, Any] = field(default_factory=dict)
    """Results of pg-boss's calls, by label."""
    python: dict[str, Any] = field(default_factory=dict)
    """Results of sqla_boss's calls, by label."""


def queue_attributes(boss: Boss, name: str) -> dict[str, Any] | None:
    found = boss.get_queue(name)
    if found is None:
        return None
    attributes = {column: getattr(found, column) for column in QUEUE_COLUMNS}
    attributes["policy"] = None if found.policy is None else QueuePolicy(found.policy).value
    return attributes


@pytest.fixture(scope="module")
def queues(engine: Engine, pgboss: PgBoss, python_side: PythonSide, new_schema: Callable[[str], str]) -> QueueRun:
    """Part 3 in one schema that our migrations installed; pg-boss adopts it."""
    run = QueueRun(new_schema("t_queues"))
    schema = run.schema
    migrations.upgrade(engine, schema=schema)

    def make_queues() -> None:
        # sqla_boss makes its queues, and leaves created, active and retry jobs in py-purge.
        with python_side.transaction(schema) as boss:
            for name, settings in QUEUE_SET.items():
                boss.create_queue(made_by("py", name), **settings_for("py", name, settings))
        with python_side.transaction(schema) as boss:
            for n in range(4):
                boss.send(made_by("py", "purge"), {"n": n})
        with python_side.transaction(schema) as boss:
            fetched = [job.id for job in boss.fetch(made_by("py", "purge"), batch_size=2)]
        with python_side.transaction(schema) as boss:
            assert boss.fail(made_by("py", "purge"), fetched[0], "again") == 1

    python_side.run(make_queues)

    # pg-boss makes its queues, reads and uses sqla_boss's, and deletes one of them.
    script, labels = Script(), {}
    for name, settings in QUEUE_SET.items():
        script.add("createQueue", made_by("js", name), js_options(settings_for("js", name, settings)))
    for name in QUEUE_SET:
        labels[f"get:{name}"] = script.add("getQueue", made_by("py", name))
    labels["get:missing"] = script.add("getQueue", "py-missing")
    labels["get-all"] = script.add("getQueues")
    for name in USED_QUEUES:
        queue = made_by("py", name)
        labels[f"send:{name}"] = [script.add("send", queue, {"n": n}) for n in range(2)]
        labels[f"fetch:{name}"] = script.add("fetch", queue, {"batchSize": 2})
    labels["purge"] = script.add("purgeQueue", made_by("py", "purge"))
    labels["size"] = script.add("getQueueSize", made_by("py", "purge"))
    labels["size-before-completed"] = script.add("getQueueSize", made_by("py", "purge"), {"before": "completed"})
    for n in range(4):
        script.add("send", made_by("js", "purge"), {"n": n})
    purge_fetch = script.add("fetch", made_by("js", "purge"), {"batchSize": 2})
    script.add("fail", made_by("js", "purge"), ref(purge_fetch, 0, "id"), "again")
    script.add("deleteQueue", made_by("py", "empty"))
    labels["get:deleted"] = script.add("getQueue", made_by("py", "empty"))
    results = script.run(pgboss, schema)
    run.node.update(
        {
            label: results[index] if isinstance(index, int) else [results[i] for i in index]
            for label, index in labels.items()
        }
    )

    def use_node_queues() -> None:
        # sqla_boss reads and uses pg-boss's queues, then purges, deletes and updates some.
        with python_side.transaction(schema) as boss:
            for name in QUEUE_SET:
                run.python[f"get:{name}"] = queue_attributes(boss, made_by("js", name))
            run.python["get:missing"] = boss.get_queue("js-missing")
            run.python["get-all"] = [queue.name for queue in boss.get_queues()]
            run.python["get:deleted"] = boss.get_queue(made_by("py", "empty"))
        for name in USED_QUEUES:
            with python_side.transaction(schema) as boss:
                run.python[f"send:{name}"] = [boss.send(made_by("js", name), {"n": n}) for n in range(2)]
            with python_side.transaction(schema) as boss:
                run.python[f"fetch:{name}"] = [job.id for job in boss.fetch(made_by("js", name), batch_size=2)]
        with python_side.transaction(schema) as boss:
            run.python["purge"] = boss.purge_queue(made_by("js", "purge"))
            run.python["size"] = boss.get_queue_size(made_by("js", "purge"))
            run.python["size-before-completed"] = boss.get_queue_size(made_by("js", "purge"), JobState.completed)
        with python_side.transaction(schema) as boss:
            run.python["delete:empty"] = boss.delete_queue(made_by("js", "empty"))
            run.python["delete:missing"] = boss.delete_queue("js-missing")
        for name, error in (("standard", QueueNotEmptyError), ("dlq", QueueInUseError)):
            with pytest.raises(error), python_side.transaction(schema) as boss:
                boss.delete_queue(made_by("js", name))
        with python_side.transaction(schema) as boss:
            boss.update_queue(made_by("js", "update"), retry_limit=9)
            boss.update_queue(made_by("js", "update-all"), **settings_for("js", "update-all", UPDATE_ALL))

    python_side.run(use_node_queues)

    # pg-boss reads what sqla_boss changed and makes the same updates to sqla_boss's queues.
    script, labels = Script(migrate=False), {}
    labels["get:deleted-by-python"] = script.add("getQueue", made_by("js", "empty"))
    labels["get:updated-by-python"] = script.add("getQueue", made_by("js", "update-all"))
    script.add("updateQueue", made_by("py", "update"), {"retryLimit": 9})
    script.add("updateQueue", made_by("py", "update-all"), js_options(settings_for("py", "update-all", UPDATE_ALL)))
    results = script.run(pgboss, schema)
    run.node.update({label: results[index] for label, index in labels.items()})
    return run


def test_node_reads_python_queues_and_python_reads_node_queues(queues: QueueRun) -> None:
    for name in QUEUE_SET:
        if name == "empty":
            continue
        theirs = queues.node[f"get:{name}"]
        assert isinstance(theirs.pop("createdOn"), str)
        assert isinstance(theirs.pop("updatedOn"), str)
        assert theirs == as_pgboss_queue(expected_queue("py", name)), name
        assert queues.python[f"get:{name}"] == expected_queue("js", name), name
    assert queues.node["get:missing"] is None
    assert queues.python["get:missing"] is None
    assert {queue["name"] for queue in queues.node["get-all"]} >= {made_by("py", name) for name in QUEUE_SET}
    assert set(queues.python["get-all"]) == {made_by(side, name) for side in ("py", "js") for name in QUEUE_SET} - {
        made_by("py", "empty")
    }


def test_both_sides_make_the_same_queue_rows(engine: Engine, queues: QueueRun) -> None:
    for name in QUEUE_SET:
        if name in ("empty", "update", "update-all"):
            continue
        for side in ("py", "js"):
            row = queue_row(engine, queues.schema, made_by(side, name))
            assert row is not None
            assert {column: row[column] for column in QUEUE_COLUMNS} == expected_queue(side, name)
            assert row["partition_name"] == partition_name(made_by(side, name))
            assert relation_exists(engine, queues.schema, row["partition_name"])
            assert row["created_on"] == row["updated_on"]


def test_each_side_sends_to_and_fetches_from_the_other_sides_queues(engine: Engine, queues: QueueRun) -> None:
    expected_sends = {
        "standard": [True, True],
        "short": [True, False],
        "singleton": [True, True],
        "stately": [True, False],
    }
    # A batch holds one job per singleton key on singleton and stately queues (§5.3).
    expected_fetched = {"standard": 2, "short": 1, "singleton": 1, "stately": 1}
    for name in USED_QUEUES:
        assert [job_id is not None for job_id in queues.node[f"send:{name}"]] == expected_sends[name]
        assert [job_id is not None for job_id in queues.python[f"send:{name}"]] == expected_sends[name]
        assert len(queues.node[f"fetch:{name}"]) == len(queues.python[f"fetch:{name}"]) == expected_fetched[name]
        node_sent = job_rows(engine, queues.schema, "name = :name", name=made_by("py", name))
        python_sent = job_rows(engine, queues.schema, "name = :name", name=made_by("js", name))
        # Which of two key-less jobs a gated batch takes is not defined (§5.3), so compare without data.
        assert sorted(map(used_row, python_sent), key=repr) == sorted(map(used_row, node_sent), key=repr)
        assert [row["data"] for row in python_sent] == [row["data"] for row in node_sent]
        settings = expected_queue("py", name)
        for row in node_sent:
            assert row["policy"] == settings["policy"]
            assert row["retry_limit"] == (2 if settings["retry_limit"] is None else settings["retry_limit"])
            assert row["dead_letter"] == settings["dead_letter"]


def used_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row sent to and fetched from a queue, without what tells the two sides apart."""
    normalised = {key: value for key, value in row.items() if key not in ("id", "data", "created_on", "started_on")}
    normalised["name"] = row["name"].partition("-")[2]
    normalised["dead_letter"] = row["dead_letter"] and row["dead_letter"].partition("-")[2]
    normalised["start_after"] = row["start_after"] - row["created_on"]
    normalised["keep_until"] = row["keep_until"] - row["start_after"]
    normalised["started"] = row["started_on"] is not None
    return normalised


def test_purge_removes_queued_jobs_of_the_other_sides_queue(engine: Engine, queues: QueueRun) -> None:
    # Each side left 2 created, 1 active and 1 retry job in its own purge queue; the other purged it.
    assert queues.node["purge"] is None  # pg-boss's purgeQueue resolves to nothing
    assert queues.python["purge"] == 3
    for results in (queues.node, queues.python):
        assert (results["size"], results["size-before-completed"]) == (0, 1)
    for side in ("py", "js"):
        rows = job_rows(engine, queues.schema, "name = :name", name=made_by(side, "purge"))
        assert [row["state"] for row in rows] == ["active"]


def test_python_deletes_node_queues_as_node_deletes_python_queues(engine: Engine, queues: QueueRun) -> None:
    assert queues.python["delete:empty"] is True
    assert queues.python["delete:missing"] is False
    assert queues.node["get:deleted-by-python"] is None
    assert queues.node["get:deleted"] is None
    assert queues.python["get:deleted"] is None
    for side in ("py", "js"):
        assert queue_row(engine, queues.schema, made_by(side, "empty")) is None
        assert not relation_exists(engine, queues.schema, partition_name(made_by(side, "empty")))
    # The refused deletions changed nothing.
    for name in ("standard", "dlq"):
        assert queue_row(engine, queues.schema, made_by("js", name)) is not None


def test_python_updates_node_queues_as_node_updates_python_queues(engine: Engine, queues: QueueRun) -> None:
    for side in ("py", "js"):
        row = queue_row(engine, queues.schema, made_by(side, "update-all"))
        assert row is not None
        assert {column: row[column] for column in QUEUE_COLUMNS} == expected_queue(side, "update-all", UPDATE_ALL)
        assert row["updated_on"] > row["created_on"]
    theirs = queues.node["get:updated-by-python"]
    assert {key: theirs[key] for key in theirs if not key.endswith("On")} == as_pgboss_queue(
        expected_queue("js", "update-all", UPDATE_ALL)
    )
    # Intended difference (Boss.update_queue): sqla_boss keeps the policy when none is given, where
    # pg-boss's updateQueue resets it to standard (PGBOSS10.md trap 13).
    ours = queue_row(engine, queues.schema, made_by("js", "update"))
    theirs = queue_row(engine, queues.schema, made_by("py", "update"))
    assert ours is not None
    assert theirs is not None
    assert (ours["policy"], ours["retry_limit"]) == ("short", 9)
    assert (theirs["policy"], theirs["retry_limit"]) == ("standard", 9)


# ================================================================================= 4. cron storage


@dataclass(frozen=True)
class CronCase:
    id: str
    cron: str
    data: Any = None
    tz: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    before: CronCase | None = None
    """A schedule stored first, that this one replaces."""

    def python(self, boss: Boss, queue: str) -> None:
        boss.schedule(queue, self.cron, py_value(self.data), tz=self.tz, **py_value(self.options))

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
    "singleton_key": "k",
    "singleton_minutes": 5,
    "expire_in_minutes": 3,
    "retention_days": 2,
    "start_after": 30,
    "dead_letter": "cron-dlq",
}

CRON_CASES = [
    CronCase("every-minute", "* * * * *"),
    CronCase("data", "0 * * * *", data={"a": 1, "b": [True, None]}),
    CronCase("tz", "30 8 * * 1-5", tz="Europe/Paris"),
    CronCase("options", "*/5 * * * *", data={"b": 1}, options=CRON_OPTIONS),
    CronCase("tz-options", "0 0 1 * *", tz="America/New_York", options={"expire_in_seconds": 77}),
    CronCase("seconds-field", "*/30 * * * * *", data=7),
    CronCase(
        "python-values",
        "0 12 * * *",
        options={
            "retry_delay": Both(py=dt.timedelta(seconds=30), js=30),
            "start_after": Both(py=dt.datetime(2041, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), js=ISO_START),
            "id": Both(py=FIXED_ID, js=str(FIXED_ID)),
        },
    ),
    CronCase(
        "replaced",
        "0 6 * * *",
        data={"new": True},
        options={"priority": 1},
        before=CronCase("replaced", "* * * * *", data={"old": True}, tz="Asia/Tokyo", options={"retry_limit": 1}),
    ),
]


@pytest.fixture(scope="module")
def schedules(
    engine: Engine, pgboss: PgBoss, python_side: PythonSide, new_schema: Callable[[str], str]
) -> tuple[str, list[Any]]:
    """Each case scheduled by sqla_boss on ``cron-<id>.py`` and by pg-boss on ``cron-<id>.js``."""
    schema = new_schema("t_cron")
    migrations.upgrade(engine, schema=schema)

    def schedule_python() -> None:
        with python_side.transaction(schema) as boss:
            for item in CRON_CASES:
                for side in ("py", "js"):
                    boss.create_queue(f"cron-{item.id}.{side}")
        for item in CRON_CASES:
            if item.before is not None:
                with python_side.transaction(schema) as boss:
                    item.before.python(boss, f"cron-{item.id}.py")
            with python_side.transaction(schema) as boss:
                item.python(boss, f"cron-{item.id}.py")

    python_side.run(schedule_python)
    script = Script(migrate=False)
    for item in CRON_CASES:
        if item.before is not None:
            item.before.node(script, f"cron-{item.id}.js")
        item.node(script, f"cron-{item.id}.js")
    read = script.add("getSchedules")
    return schema, script.run(pgboss, schema)[read]


def schedule_rows(engine: Engine, schema: str) -> dict[str, dict[str, Any]]:
    statement = text(
        "SELECT name, cron, timezone, data, jsonb_typeof(data) AS data_type, options, created_on, updated_on "
        f"FROM {quote_identifier(schema)}.schedule"
    )
    with engine.connect() as connection:
        return {row["name"]: dict(row) for row in connection.execute(statement).mappings()}


@pytest.mark.parametrize("item", CRON_CASES, ids=[item.id for item in CRON_CASES])
def test_schedule_stores_the_row_pgboss_stores(
    engine: Engine, schedules: tuple[str, list[Any]], item: CronCase
) -> None:
    schema, _ = schedules
    rows = schedule_rows(engine, schema)
    ours, theirs = rows[f"cron-{item.id}.py"], rows[f"cron-{item.id}.js"]
    for row in (ours, theirs):
        created, updated = row.pop("created_on"), row.pop("updated_on")
        assert (updated > created) if item.before is not None else (updated == created)
        row["name"] = row["name"].rpartition(".")[0]
    assert ours == theirs
    # The options are stored raw, in camelCase, with the time zone when one was given.
    expected_options = js_options(item.options)
    if item.tz is not None:
        expected_options["tz"] = item.tz
    assert theirs["options"] == expected_options
    assert theirs["timezone"] == (item.tz or "UTC")


def test_node_lists_python_schedules(schedules: tuple[str, list[Any]]) -> None:
    _, listed = schedules
    by_name = {row["name"]: row for row in listed}
    for item in CRON_CASES:
        ours, theirs = by_name[f"cron-{item.id}.py"], by_name[f"cron-{item.id}.js"]
        assert {key: value for key, value in ours.items() if not key.endswith("_on") and key != "name"} == {
            key: value for key, value in theirs.items() if not key.endswith("_on") and key != "name"
        }


def test_python_lists_node_schedules(python_side: PythonSide, schedules: tuple[str, list[Any]]) -> None:
    schema, _ = schedules

    def list_schedules() -> None:
        with python_side.transaction(schema) as boss:
            listed = {schedule.name: schedule for schedule in boss.get_schedules()}
            for item in CRON_CASES:
                theirs = listed[f"cron-{item.id}.js"]
                assert (theirs.cron, theirs.timezone) == (item.cron, item.tz or "UTC")
                assert theirs.data == js_value(item.data)

    python_side.run(list_schedules)
