"""Hostile input: every public ``Boss`` method, fed what a careless or malicious caller could pass.

``tests/test_boss_bad_input.py`` pins one hand-picked value per kind of mistake. This module complements it:

1. **Property tests** (hypothesis, derandomized) draw invalid arguments for every public method, one parameter
   at a time, and prove three things for each: the exact :class:`SqlaBossError` subclass is raised *before any
   SQL runs* (a cursor listener sees no statement), nothing is written (the rows of every pg-boss table and the
   schema's relations, counted before and after in the same transaction, and no transaction id assigned, which
   PostgreSQL does at a transaction's first write anywhere), and the caller's transaction still works: a valid
   send in the same session follows, commits, and is read back from another connection.
2. **Identifiers** (queue, dead-letter, event, schema names, singleton keys, cron and time zone) with quotes,
   semicolons, backslashes, NUL, emoji, RTL marks, combining marks, whitespace, newlines and 1,000 characters:
   each is refused before any SQL or stored verbatim (read back through ``get_queue``, ``get_job_by_id`` and
   the raw tables), and SQL injection payloads through every identifier parameter leave a canary table and
   everything else alone.
3. **Payloads**: NaN and infinities anywhere, 10,000 levels of nesting, 10 MB, non-string keys, NUL and its
   escaped look-alikes, lone surrogates, big integers.
4. **Batch sizes**: ``fetch`` batch sizes and ``insert`` batches from empty to 10,000 jobs.

The last section holds inputs that once got past validation and failed inside PostgreSQL (or escaped as a
non-sqla_boss exception): each is now refused, or stored as meant.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import hashlib
import math
import random
import re
import reprlib
import string
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from boss_support import snapshot
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, text
from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS
from sqlalchemy.orm import Session

from sqla_boss import Boss, Job
from sqla_boss.errors import (
    InvalidCronError,
    InvalidOptionError,
    InvalidQueueNameError,
    InvalidSchemaNameError,
    InvalidTimezoneError,
    PayloadError,
    SqlaBossError,
    UnsupportedOperationError,
)
from sqla_boss.identifiers import quote_identifier
from sqla_boss.options import v46 as options46
from sqla_boss.schema import schema_translate_map

pytestmark = pytest.mark.faults

SETTINGS = settings(
    derandomize=True,
    database=None,
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
"""Deterministic runs: the same examples every time, no example database, no timing-dependent failures."""

NAN = math.nan
INF = math.inf
UTC = dt.timezone.utc
MAX_DURATION_SECONDS = 1000 * 365.25 * 86400
"""The longest delay or retention sqla_boss documents (1000 years)."""
INT32_MAX = 2**31 - 1
PLUS_ONE_HOUR = dt.timezone(dt.timedelta(hours=1))

# ------------------------------------------------------------------------------------------- the world


class Ref:
    """A placeholder for one of the world's committed jobs, resolved when a case runs."""

    def __init__(self, state: str) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.state} job>"


CREATED, ACTIVE, CANCELLED, FAILED = Ref("created"), Ref("active"), Ref("cancelled"), Ref("failed")


@dataclass
class World:
    """A schema of the test's own with committed queues and jobs the cases aim at.

    Queues: ``q`` (standard, dead letter ``dlq``), ``dlq``, ``sq`` (short policy). ``q`` is subscribed to
    ``event`` and has a schedule; it holds one job in each of created, active, cancelled and failed.
    """

    base: Engine
    engine: Engine
    schema: str
    created: uuid.UUID
    active: uuid.UUID
    cancelled: uuid.UUID
    failed: uuid.UUID

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Ref):
            return getattr(self, value.state)
        if isinstance(value, list):  # one level: lists of job ids (payloads may nest 10,000 levels)
            return [getattr(self, item.state) if isinstance(item, Ref) else item for item in value]
        return value

    @property
    def quoted(self) -> str:
        return quote_identifier(self.schema)


@pytest.fixture
def world(engine: Engine, installed_schema: str) -> World:
    bound = engine.execution_options(schema_translate_map=schema_translate_map(installed_schema))
    with Session(bound) as session, session.begin():
        boss = Boss(session, schema=installed_schema)
        boss.create_queue("dlq")
        boss.create_queue("q", dead_letter="dlq")
        boss.create_queue("sq", policy="short")
        boss.subscribe("event", "q")
        boss.schedule("q", "0 * * * *")
        active = boss.send("q", {"job": "active"}, priority=10)
        failed = boss.send("q", {"job": "failed"}, retry_limit=0, priority=9)
        assert {job.id for job in boss.fetch("q", batch_size=2)} == {active, failed}
        boss.fail("q", failed)
        cancelled = boss.send("q", {"job": "cancelled"})
        boss.cancel("q", cancelled)
        created = boss.send("q", {"job": "created"})
    assert None not in (created, active, cancelled, failed)
    return World(engine, bound, installed_schema, created, active, cancelled, failed)  # type: ignore[arg-type]


@contextmanager
def sql_statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement sent to the server through ``engine`` (and its option engines) meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


_REPR = reprlib.Repr()
_REPR.maxlevel = 4
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


@dataclass(frozen=True)
class Case:
    """One call of a public method with one invalid argument, and the error it must raise."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    error: type[SqlaBossError]

    def __repr__(self) -> str:  # safe on 10,000-level payloads and cycles
        arguments = [_REPR.repr(arg) for arg in self.args]
        arguments += [f"{key}={_REPR.repr(value)}" for key, value in self.kwargs.items()]
        return f"{self.method}({', '.join(arguments)}) -> {self.error.__name__}"

    def run(self, boss: Boss, world: World) -> Any:
        args = tuple(world.resolve(arg) for arg in self.args)
        if self.method == "Boss":
            return Boss(boss.session, *args, **{"schema": world.schema, **self.kwargs})
        return getattr(boss, self.method)(*args, **self.kwargs)


def committed_marker(world: World, job_id: uuid.UUID) -> Any:
    """The ``marker`` of job ``job_id`` of queue ``q``, as another connection sees it (so: committed)."""
    with world.base.connect() as connection:
        return connection.execute(
            text(f"SELECT data ->> 'marker' FROM {world.quoted}.job WHERE name = 'q' AND id = :id"), {"id": job_id}
        ).scalar_one_or_none()


TABLES = ("job", "queue", "schedule", "subscription", "archive")
"""The pg-boss tables that hold rows (``version`` is only written by migrations and maintenance)."""


def row_counts(session: Session, world: World) -> dict[str, Any]:
    """The rows of every pg-boss table, the relations in the schema (partitions, indexes), and whether this
    transaction has written anything at all: PostgreSQL gives a transaction an id at its first write, DDL
    included, anywhere in the database."""
    counts = ", ".join(f"(SELECT count(*) FROM {world.quoted}.{table}) AS {table}" for table in TABLES)
    row = session.execute(
        text(
            f"SELECT {counts}, (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema) AS relations, pg_current_xact_id_if_assigned() IS NOT NULL AS wrote"
        ),
        {"schema": world.schema},
    ).one()
    return dict(row._mapping)


def refused_here(
    session: Session,
    world: World,
    call: Callable[[], Any],
    error: type[SqlaBossError],
    *,
    what: object = "the call",
    digest: bool = True,
) -> dict[str, Any]:
    """Inside the caller's transaction: ``call`` raises exactly ``error``, runs no SQL and writes nothing.

    ``digest`` also compares an md5 of every row of the pg-boss tables (``boss_support.snapshot``): the row
    counts and the schema's relation count are always compared. Returns the counts after the call.
    """
    before = row_counts(session, world), snapshot(session, world.schema) if digest else None
    with sql_statements(world.base) as statements, pytest.raises(SqlaBossError) as raised:
        call()
    assert type(raised.value) is error, (
        f"{what}: expected {error.__name__}, got {type(raised.value).__name__}: {raised.value}"
    )
    assert str(raised.value), f"{what}: an error without a message"
    assert statements == [], f"{what}: refused only after running SQL: {statements}"
    after = row_counts(session, world), snapshot(session, world.schema) if digest else None
    assert after == before, what
    assert session.in_transaction()
    return after[0]


def assert_refused(world: World, case: Case) -> None:
    """``case`` is refused as it must be, before any SQL, in a transaction that has written nothing, not even
    a transaction id; then the same transaction sends a job, commits, and another connection reads it."""
    marker = uuid.uuid4().hex
    with Session(world.engine) as session:
        with session.begin():
            boss = Boss(session, schema=world.schema)
            call = functools.partial(case.run, boss, world)
            after = refused_here(session, world, call, case.error, what=case, digest=False)
            assert after["wrote"] is False, f"{case!r} wrote something"
            job_id = boss.send("q", {"marker": marker})
            assert job_id is not None
        assert committed_marker(world, job_id) == marker, f"{case!r}: the transaction did not commit its send"


# ------------------------------------------------------------------------------------ invalid values

NON_NUMBERS = st.one_of(
    st.text(max_size=6),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.dates(),
    st.sampled_from([object(), decimal.Decimal("1"), decimal.Decimal("NaN"), 1j, frozenset({1}), Ellipsis]),
)
"""Values of no numeric type (never ``None``, which means "not given" for most options)."""
NON_FINITE = st.sampled_from([NAN, INF, -INF])
NON_INTEGRAL = st.one_of(
    st.tuples(st.integers(-(10**6), 10**6), st.floats(0.001, 0.999)).map(sum),
    st.sampled_from([0.5, -0.5, 1e-300, -2.5, 2**31 - 0.5]),
)
"""Finite floats with a fractional part (built, not filtered: most large floats are whole)."""


def bad_int(minimum: int | None = None) -> st.SearchStrategy[Any]:
    """Never a valid PostgreSQL ``integer`` of at least ``minimum``: wrong types, bools, fractions, NaN, infinities,
    values past int32 (as ints and as integral floats), and values below ``minimum``."""
    parts = [
        NON_NUMBERS,
        st.booleans(),
        NON_FINITE,
        NON_INTEGRAL,
        st.integers(min_value=INT32_MAX + 1),
        st.integers(max_value=-(2**31) - 1),
        st.floats(min_value=2.0**31, allow_infinity=False),
        st.floats(max_value=-(2.0**31) - 1, allow_infinity=False),
    ]
    if minimum is not None:
        parts.append(st.integers(max_value=minimum - 1))
        parts.append(st.integers(min_value=-(2**31), max_value=minimum - 1).map(float))
    return st.one_of(parts)


BAD_BOOL = st.one_of(NON_NUMBERS, st.integers(), st.floats())
"""Anything but ``True`` / ``False`` (and ``None``, which means "not given" for options)."""


def bad_duration(*, below: float, at_or_above: float, timedeltas: bool = True) -> st.SearchStrategy[Any]:
    """A duration outside ``[below, at_or_above)`` seconds, or of the wrong type."""
    parts = [
        NON_NUMBERS,
        st.booleans(),
        NON_FINITE,
        st.floats(max_value=below, exclude_max=True, allow_nan=False, allow_infinity=False),
        st.integers(max_value=math.ceil(below) - 1),
        st.floats(min_value=at_or_above, allow_infinity=False),
        st.integers(min_value=math.ceil(at_or_above)),
    ]
    if timedeltas:
        parts.append(st.timedeltas(max_value=dt.timedelta(seconds=below) - dt.timedelta(microseconds=1)))
    return st.one_of(parts)


def bad_expire(factor: int) -> st.SearchStrategy[Any]:
    """``expire_in_<unit>``: at least 1 of the unit and less than 24 hours in all."""
    return bad_duration(below=1, at_or_above=86400 / factor, timedeltas=factor == 1)


def bad_retention(factor: int) -> st.SearchStrategy[Any]:
    """``retention_<unit>``: at least 1 of the unit and at most 1000 years."""
    return bad_duration(below=1, at_or_above=MAX_DURATION_SECONDS / factor * 1.000001)


BAD_DELAY = st.one_of(
    bad_int(0),
    st.timedeltas(max_value=-dt.timedelta(microseconds=1)),
    st.builds(dt.timedelta, seconds=st.integers(0, 10**6), microseconds=st.integers(1, 999_999)),
    st.timedeltas(min_value=dt.timedelta(seconds=INT32_MAX + 1)),
)
"""``retry_delay``: whole seconds in ``[0, 2**31)``, as an int or a timedelta."""

BAD_SINGLETON_SECONDS = st.one_of(
    NON_NUMBERS,
    st.booleans(),
    NON_FINITE,
    st.integers(min_value=43201),
    st.floats(min_value=43200.5, allow_infinity=False),
    st.tuples(st.integers(0, 43199), st.floats(0.001, 0.999)).map(sum),
)
"""``singleton_seconds``: at most pg-boss's 43,200 and whole (negative values are ignored, as in pg-boss)."""


def bad_singleton_unit(factor: int) -> st.SearchStrategy[Any]:
    """``singleton_minutes`` / ``_hours``: a positive value must make whole seconds that fit an int32."""
    return st.one_of(
        NON_NUMBERS,
        st.booleans(),
        NON_FINITE,
        st.tuples(st.integers(0, 1000), st.integers(1, factor - 1)).map(lambda t: t[0] + t[1] / factor + 1e-9),
        st.integers(min_value=INT32_MAX // factor + 1, max_value=10**12),
        st.floats(min_value=MAX_DURATION_SECONDS * 1.01, allow_infinity=False),
    )


QUEUE_NAME_CHARACTER = set(string.ascii_letters + string.digits + "_-")
SURROGATES = st.characters(categories=["Cs"])


def _with(character: st.SearchStrategy[str], prefix: str = "q") -> st.SearchStrategy[str]:
    """A text with ``character`` somewhere in it, after ``prefix``."""
    return st.tuples(st.text(max_size=6), character, st.text(max_size=6)).map(lambda t: prefix + "".join(t))


SOME_NON_STRINGS = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.binary(max_size=4),
    st.lists(st.text(max_size=3), max_size=2),
    st.tuples(st.text(max_size=2)),
    st.sampled_from([object(), uuid.UUID(int=7), dt.date(2030, 1, 1)]),
)
NON_STRINGS = st.one_of(st.none(), SOME_NON_STRINGS)
BAD_QUEUE_NAME = st.one_of(
    NON_STRINGS,
    st.text(alphabet=st.characters(exclude_characters=QUEUE_NAME_CHARACTER), max_size=12),
    _with(st.just("\x00")),
    _with(st.just("\\")),
    _with(SURROGATES),
)
"""pg-boss's rule plus what PostgreSQL cannot hold: not a string, no ``[A-Za-z0-9_-]``, NUL, backslash, lone
surrogate. Every one is an :class:`InvalidQueueNameError`."""
BAD_DEAD_LETTER = st.one_of(
    SOME_NON_STRINGS,
    st.text(alphabet=st.characters(exclude_characters=QUEUE_NAME_CHARACTER), max_size=12),
    _with(st.just("\x00")),
    _with(st.just("\\")),
    _with(SURROGATES),
)
""":data:`BAD_QUEUE_NAME` but ``None``, which means "no dead letter queue"."""
BAD_EVENT = st.one_of(st.just(""), NON_STRINGS, _with(st.just("\x00"), ""), _with(SURROGATES, ""))
BAD_SINGLETON_KEY = st.one_of(SOME_NON_STRINGS, _with(st.just("\x00"), ""), _with(SURROGATES, ""))
BAD_SCHEMA = st.one_of(
    NON_STRINGS,
    st.just(""),
    st.from_regex(r"[a-z_][a-z0-9_]{50,70}", fullmatch=True),
    st.from_regex(r"[a-z_]{0,5}[A-Z][A-Za-z0-9_]{0,10}", fullmatch=True),
    st.from_regex(r"[0-9][a-z0-9_]{0,10}", fullmatch=True),
    st.text(min_size=1, max_size=20).filter(lambda s: re.fullmatch(r"[a-z_][a-z0-9_]*", s) is None),
    st.sampled_from(sorted(RESERVED_WORDS)),
    st.from_regex(r"pg_[a-z0-9_]{0,10}", fullmatch=True),
)
"""Nothing pg-boss can paste unquoted: every one is an :class:`InvalidSchemaNameError`."""

POLICIES = {"standard", "short", "singleton", "stately"}
ZONES = frozenset(zoneinfo.available_timezones() | {"UTC"})
NOT_ZONES = {"Factory", "localtime", "posixrules"}
"""Files of the system's time zone database that JavaScript's Intl (and so pg-boss's cron) does not know."""
BAD_POLICY = st.one_of(
    st.text(max_size=10).filter(lambda s: s not in POLICIES),
    st.sampled_from(["STANDARD", "Short", " singleton", "stately\n", "standard\x00"]),
    st.integers(),
    st.lists(st.integers(), max_size=1),
    st.binary(max_size=3),
)
STATES = {"created", "retry", "active", "completed", "cancelled", "failed"}
BAD_STATE = st.one_of(
    st.text(max_size=10).filter(lambda s: s not in STATES),
    st.sampled_from(["ACTIVE", "queued", " created"]),
    st.none(),
    st.integers(),
    st.lists(st.integers(), max_size=1),
)


def _not_uuid(text_value: str) -> bool:
    try:
        uuid.UUID(text_value)
    except ValueError:
        return True
    return False


BAD_SCALAR_ID = st.one_of(
    st.text(max_size=40).filter(_not_uuid),
    st.uuids().map(lambda u: str(u)[:-1] + "g"),
    st.uuids().map(lambda u: str(u) + "0"),
    st.uuids().map(lambda u: f"{u}'; DROP TABLE job; --"),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.binary(min_size=16, max_size=16),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
"""A single job id of the wrong type or not a UUID (never ``None``)."""
BAD_ID = st.one_of(BAD_SCALAR_ID, st.lists(st.uuids(), max_size=2))
"""A job id where exactly one is expected."""
BAD_JOB_IDS = st.one_of(
    st.sampled_from([[], (), set(), frozenset()]),
    BAD_SCALAR_ID,
    st.none(),
    st.lists(st.one_of(BAD_SCALAR_ID, st.none()), min_size=1, max_size=2).map(lambda bad: [CREATED, *bad]),
    st.lists(st.uuids(), min_size=1, max_size=2).map(lambda ids: [ids]),
)
"""One id or many, of which at least one is not a UUID (valid ids first, so a partial write would show)."""

_JUNK = "';\")(*&^%$#@!~`<>?,|=[]{}"
BAD_START_AFTER = st.one_of(
    st.datetimes(),  # naive
    st.datetimes().map(lambda d: d.isoformat()),  # naive ISO text
    st.booleans(),
    NON_FINITE,
    st.floats(min_value=MAX_DURATION_SECONDS * 1.001, allow_infinity=False),
    st.floats(max_value=-MAX_DURATION_SECONDS * 1.001, allow_infinity=False),
    st.timedeltas(min_value=dt.timedelta(days=365251)),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dates(),
    st.times(),
    st.sampled_from([object(), decimal.Decimal("5")]),
    st.text(alphabet=st.characters(exclude_categories=["Nd", "Cs"], exclude_characters="TZ"), min_size=0, max_size=12),
    st.tuples(
        st.integers(1, 100), st.sampled_from(["", " s", " minutes", " days"]), st.text(alphabet=_JUNK, min_size=1)
    ).map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
    st.integers(13, 99).map(lambda month: f"2030-{month}-01T00:00:00Z"),
    st.integers(25, 99).map(lambda hour: f"2030-01-01T{hour}:00:00Z"),
)
"""Never a valid ``start_after``: naive datetimes, wrong types, NaN, past 1000 years, junk text."""
BAD_KEEP_UNTIL = st.one_of(
    st.datetimes(), st.dates(), st.text(max_size=10), st.integers(), st.floats(), st.timedeltas(), st.booleans()
)


V46_NAMES = options46.SEND_OPTIONS | options46.INSERT_FIELDS | options46.QUEUE_OPTIONS
"""Options of schema version 46: on this version-24 schema they are UnsupportedOperationError, not unknown."""


def unknown_names(known: set[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=16),
        st.sampled_from(["retryLimit", "singletonKey", "keep_until", "Priority", "priority ", "dead-letter"]),
    ).filter(lambda name: name not in known and name not in V46_NAMES)


SEND_OPTIONS = {
    "id",
    "priority",
    "start_after",
    "singleton_key",
    "singleton_seconds",
    "singleton_minutes",
    "singleton_hours",
    "singleton_next_slot",
    "retry_limit",
    "retry_delay",
    "retry_backoff",
    "expire_in_seconds",
    "expire_in_minutes",
    "expire_in_hours",
    "retention_seconds",
    "retention_minutes",
    "retention_hours",
    "retention_days",
    "dead_letter",
}
INSERT_FIELDS = {
    "name",
    "data",
    "id",
    "priority",
    "start_after",
    "singleton_key",
    "singleton_seconds",
    "expire_in_seconds",
    "keep_until",
    "retry_limit",
    "retry_delay",
    "retry_backoff",
    "dead_letter",
}
DEFAULT_OPTIONS = {"retry_limit", "retry_delay", "retry_backoff"} | {
    "expire_in_seconds",
    "expire_in_minutes",
    "expire_in_hours",
    "retention_seconds",
    "retention_minutes",
    "retention_hours",
    "retention_days",
}
_EXPIRE = {"expire_in_seconds": 1, "expire_in_minutes": 60, "expire_in_hours": 3600}
_RETENTION = {"retention_seconds": 1, "retention_minutes": 60, "retention_hours": 3600, "retention_days": 86400}


def _option(key: str, values: st.SearchStrategy[Any], error: type[SqlaBossError] = InvalidOptionError) -> Any:
    return values.map(lambda value: ({key: value}, error))


def bad_defaults() -> st.SearchStrategy[tuple[dict[str, Any], type[SqlaBossError]]]:
    """Invalid constructor defaults, one at a time, with the error each must raise."""
    return st.one_of(
        unknown_names(DEFAULT_OPTIONS | {"session", "schema"}).map(lambda name: ({name: 1}, InvalidOptionError)),
        _option("retry_limit", bad_int(0)),
        _option("retry_delay", BAD_DELAY),
        _option("retry_backoff", BAD_BOOL),
        *(_option(key, bad_expire(factor)) for key, factor in _EXPIRE.items()),
        *(_option(key, bad_retention(factor)) for key, factor in _RETENTION.items()),
    )


def bad_send_options(
    *, reserved: set[str], overridden: frozenset[str] = frozenset()
) -> st.SearchStrategy[tuple[dict[str, Any], type[SqlaBossError]]]:
    """Invalid send options, one at a time, with the error each must raise. ``reserved`` are the method's own
    parameter names, which Python itself refuses as keywords; ``overridden`` options are replaced by the
    method's own arguments (as in pg-boss), so their values are never looked at."""
    options: dict[str, tuple[st.SearchStrategy[Any], type[SqlaBossError]]] = {
        "id": (BAD_ID, InvalidOptionError),
        "priority": (bad_int(), InvalidOptionError),
        "start_after": (BAD_START_AFTER, InvalidOptionError),
        "singleton_key": (BAD_SINGLETON_KEY, InvalidOptionError),
        "singleton_seconds": (BAD_SINGLETON_SECONDS, InvalidOptionError),
        "singleton_minutes": (bad_singleton_unit(60), InvalidOptionError),
        "singleton_hours": (bad_singleton_unit(3600), InvalidOptionError),
        "singleton_next_slot": (BAD_BOOL, InvalidOptionError),
        "retry_limit": (bad_int(0), InvalidOptionError),
        "retry_delay": (BAD_DELAY, InvalidOptionError),
        "retry_backoff": (BAD_BOOL, InvalidOptionError),
        **{key: (bad_expire(factor), InvalidOptionError) for key, factor in _EXPIRE.items()},
        **{key: (bad_retention(factor), InvalidOptionError) for key, factor in _RETENTION.items()},
        "dead_letter": (BAD_DEAD_LETTER, InvalidQueueNameError),
    }
    assert set(options) == SEND_OPTIONS
    return st.one_of(
        unknown_names(SEND_OPTIONS | reserved).map(lambda name: ({name: 1}, InvalidOptionError)),
        *(_option(key, values, error) for key, (values, error) in options.items() if key not in overridden),
    )


def bad_queue_options() -> st.SearchStrategy[tuple[dict[str, Any], type[SqlaBossError]]]:
    return st.one_of(
        _option("policy", BAD_POLICY),
        _option("retry_limit", bad_int(0)),
        _option("retry_delay", BAD_DELAY),
        _option("retry_backoff", BAD_BOOL),
        _option(
            "expire_in_seconds",
            st.one_of(bad_expire(1), st.floats(min_value=1, max_value=86399).filter(lambda x: not x.is_integer())),
        ),
        _option("retention_minutes", bad_int(1)),
        _option("dead_letter", BAD_DEAD_LETTER, InvalidQueueNameError),
    )


# ------------------------------------------------------------------------------------------- payloads

CLEAN_TEXT = st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=8)
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        CLEAN_TEXT,
    ),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(CLEAN_TEXT, children, max_size=3)),
    max_leaves=8,
)
"""JSON values PostgreSQL's jsonb can hold: no NaN, no infinity, no NUL, no lone surrogate."""


def _circular_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def _circular_dict() -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    mapping["self"] = mapping
    return mapping


NON_FINITE_POISON = st.one_of(NON_FINITE, NON_FINITE.map(lambda x: {x: 1}))
POISON = st.one_of(
    NON_FINITE_POISON,
    st.frozensets(st.integers(), max_size=2),
    st.sets(st.integers(), max_size=2),
    st.binary(max_size=4),
    st.sampled_from(
        [
            object(),
            decimal.Decimal("1.5"),
            1j,
            dt.date(2030, 1, 1),
            dt.datetime(2030, 1, 1, tzinfo=UTC),
            uuid.UUID(int=1),
            range(2),
        ]
    ),
    st.builds(_circular_list),
    st.builds(_circular_dict),
    _with(st.just("\x00"), ""),
    _with(SURROGATES, ""),
    _with(st.just("\x00"), "").map(lambda key: {key: 1}),
    _with(SURROGATES, "").map(lambda key: {key: 1}),
    st.sampled_from([(1, 2), b"k", frozenset()]).map(lambda key: {key: 1}),
)
"""Values no JSON column can store: each one anywhere in a payload makes it a :class:`PayloadError`."""


@st.composite
def poisoned(draw: st.DrawFn, poison: st.SearchStrategy[Any] = POISON) -> Any:
    """A JSON structure with one ``poison`` somewhere inside, up to four levels down, among valid siblings."""
    value = draw(poison)
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            siblings = draw(st.lists(JSON, max_size=3))
            position = draw(st.integers(0, len(siblings)))
            value = [*siblings[:position], value, *siblings[position:]]
        else:
            key = draw(CLEAN_TEXT)
            others = draw(st.dictionaries(CLEAN_TEXT, JSON, max_size=3))
            others.pop(key, None)
            value = {**others, key: value}
    return value


PAYLOAD_ENTRIES: dict[str, Callable[[Any], Case]] = {
    "send": lambda value: Case("send", ("q", value), {}, PayloadError),
    "send_after": lambda value: Case("send_after", ("q", value), {"after": 5}, PayloadError),
    "send_throttled": lambda value: Case("send_throttled", ("q", value), {"seconds": 60, "key": "k"}, PayloadError),
    "send_debounced": lambda value: Case("send_debounced", ("q", value), {"seconds": 60, "key": "k"}, PayloadError),
    "insert": lambda value: Case("insert", ([{"name": "q"}, {"name": "q", "data": value}],), {}, PayloadError),
    "publish": lambda value: Case("publish", ("event", value), {}, PayloadError),
    "schedule": lambda value: Case("schedule", ("q", "0 * * * *", value), {}, PayloadError),
    "complete": lambda value: Case("complete", ("q", ACTIVE, value), {}, PayloadError),
    "fail": lambda value: Case("fail", ("q", ACTIVE, value), {}, PayloadError),
}
"""Every parameter that takes job data or output, as a case carrying ``value`` there."""

# ----------------------------------------------------------------------------------- cases per method


def _case(method: str, error: type[SqlaBossError], *args: Any, **kwargs: Any) -> Case:
    return Case(method, args, kwargs, error)


def _names(method: str, *rest: Any, **keywords: Any) -> st.SearchStrategy[Case]:
    """Bad queue names as the first argument of ``method``."""
    return BAD_QUEUE_NAME.map(lambda name: _case(method, InvalidQueueNameError, name, *rest, **keywords))


def _with_options(method: str, args: tuple[Any, ...], options: st.SearchStrategy[Any]) -> st.SearchStrategy[Case]:
    return options.map(lambda pair: Case(method, args, pair[0], pair[1]))


def _variant_options(method: str, fixed: dict[str, Any]) -> st.SearchStrategy[Case]:
    """Bad send options given to send_after / send_throttled / send_debounced beside their own keywords
    ``fixed``. The options those keywords set are refused too (giving them twice would contradict)."""
    return bad_send_options(reserved={"name", "data", *fixed}).map(
        lambda pair: Case(method, ("q", None), {**fixed, **pair[0]}, pair[1])
    )


def _bad_job() -> st.SearchStrategy[tuple[Any, type[SqlaBossError]]]:
    """One invalid element of an ``insert`` batch, with the error it must raise."""

    def field_value(key: str, values: st.SearchStrategy[Any], error: type[SqlaBossError] = InvalidOptionError) -> Any:
        return values.map(lambda value: ({"name": "q", key: value}, error))

    return st.one_of(
        st.one_of(
            st.none(), st.integers(), st.text(max_size=4), st.lists(st.just("q"), max_size=2), st.just(("name", "q"))
        ).map(lambda job: (job, InvalidOptionError)),
        JSON.map(lambda data: ({"data": data}, InvalidOptionError)),
        unknown_names(INSERT_FIELDS).map(lambda key: ({"name": "q", key: 1}, InvalidOptionError)),
        BAD_QUEUE_NAME.map(lambda name: ({"name": name}, InvalidQueueNameError)),
        BAD_QUEUE_NAME.map(lambda name: ({"name": name, "priority": 1}, InvalidQueueNameError)),
        field_value("id", BAD_SCALAR_ID),
        field_value("priority", bad_int()),
        field_value("start_after", BAD_START_AFTER),
        field_value("singleton_key", BAD_SINGLETON_KEY),
        field_value("singleton_seconds", BAD_SINGLETON_SECONDS),
        field_value("expire_in_seconds", bad_expire(1)),
        field_value("keep_until", BAD_KEEP_UNTIL),
        field_value("retry_limit", bad_int(0)),
        field_value("retry_delay", BAD_DELAY),
        field_value("retry_backoff", BAD_BOOL),
        field_value("dead_letter", BAD_DEAD_LETTER, InvalidQueueNameError),
        field_value("data", poisoned(), PayloadError),
    )


@st.composite
def bad_insert(draw: st.DrawFn) -> Case:
    """An ``insert`` argument that is no list of jobs, or a batch of valid jobs with one invalid among them."""
    if draw(st.integers(0, 4)) == 0:
        jobs = draw(
            st.one_of(
                st.none(),
                st.integers(),
                st.floats(),
                st.booleans(),
                st.text(max_size=5),
                st.binary(max_size=5),
                st.dictionaries(st.sampled_from(["name", "data"]), st.just("q"), max_size=2),
            )
        )
        return _case("insert", InvalidOptionError, jobs)
    good = draw(st.lists(st.fixed_dictionaries({"name": st.just("q"), "data": JSON}), max_size=3))
    bad, error = draw(_bad_job())
    position = draw(st.integers(0, len(good)))
    return _case("insert", error, [*good[:position], bad, *good[position:]])


INVALID: dict[str, st.SearchStrategy[Case]] = {
    "Boss": st.one_of(
        BAD_SCHEMA.map(lambda schema: _case("Boss", InvalidSchemaNameError, schema=schema)),
        bad_defaults().map(lambda pair: Case("Boss", (), pair[0], pair[1])),
    ),
    "create_queue": st.one_of(_names("create_queue"), _with_options("create_queue", ("fresh",), bad_queue_options())),
    "update_queue": st.one_of(_names("update_queue"), _with_options("update_queue", ("q",), bad_queue_options())),
    "delete_queue": _names("delete_queue"),
    "purge_queue": _names("purge_queue"),
    "get_queue": _names("get_queue"),
    "get_queue_size": st.one_of(
        _names("get_queue_size"), BAD_STATE.map(lambda state: _case("get_queue_size", InvalidOptionError, "q", state))
    ),
    "send": st.one_of(
        _names("send", {"x": 1}),
        poisoned().map(PAYLOAD_ENTRIES["send"]),
        _with_options("send", ("q", None), bad_send_options(reserved={"name", "data"})),
    ),
    "send_after": st.one_of(
        _names("send_after", None, after=5),
        poisoned().map(PAYLOAD_ENTRIES["send_after"]),
        BAD_START_AFTER.map(lambda after: _case("send_after", InvalidOptionError, "q", None, after=after)),
        _variant_options("send_after", {"after": 5}),
    ),
    "send_throttled": st.one_of(
        _names("send_throttled", None, seconds=60),
        poisoned().map(PAYLOAD_ENTRIES["send_throttled"]),
        BAD_SINGLETON_SECONDS.map(lambda s: _case("send_throttled", InvalidOptionError, "q", None, seconds=s)),
        BAD_SINGLETON_KEY.map(lambda key: _case("send_throttled", InvalidOptionError, "q", None, seconds=60, key=key)),
        _variant_options("send_throttled", {"seconds": 60}),
    ),
    "send_debounced": st.one_of(
        _names("send_debounced", None, seconds=60),
        poisoned().map(PAYLOAD_ENTRIES["send_debounced"]),
        BAD_SINGLETON_SECONDS.map(lambda s: _case("send_debounced", InvalidOptionError, "q", None, seconds=s)),
        BAD_SINGLETON_KEY.map(lambda key: _case("send_debounced", InvalidOptionError, "q", None, seconds=60, key=key)),
        _variant_options("send_debounced", {"seconds": 60}),
    ),
    "insert": bad_insert(),
    "fetch": st.one_of(
        _names("fetch"),
        st.one_of(bad_int(1), st.none()).map(lambda size: _case("fetch", InvalidOptionError, "q", batch_size=size)),
        st.tuples(
            st.sampled_from(["priority", "include_metadata", "ignore_start_after"]), st.one_of(BAD_BOOL, st.none())
        ).map(lambda pair: _case("fetch", InvalidOptionError, "q", **{pair[0]: pair[1]})),
    ),
    "complete": st.one_of(
        _names("complete", ACTIVE),
        BAD_JOB_IDS.map(lambda ids: _case("complete", InvalidOptionError, "q", ids)),
        poisoned().map(PAYLOAD_ENTRIES["complete"]),
    ),
    "fail": st.one_of(
        _names("fail", ACTIVE),
        BAD_JOB_IDS.map(lambda ids: _case("fail", InvalidOptionError, "q", ids)),
        poisoned().map(PAYLOAD_ENTRIES["fail"]),
    ),
    **{
        method: st.one_of(
            _names(method, job), BAD_JOB_IDS.map(lambda ids, method=method: _case(method, InvalidOptionError, "q", ids))
        )
        for method, job in (("cancel", CREATED), ("resume", CANCELLED), ("retry", FAILED), ("delete_job", CREATED))
    },
    "get_job_by_id": st.one_of(
        _names("get_job_by_id", CREATED),
        BAD_ID.map(lambda job_id: _case("get_job_by_id", InvalidOptionError, "q", job_id)),
        st.one_of(BAD_BOOL, st.none()).map(lambda flag: _case("get_job_by_id", InvalidOptionError, "q", CREATED, flag)),
    ),
    "publish": st.one_of(
        BAD_EVENT.map(lambda name: _case("publish", InvalidOptionError, name, None)),
        poisoned().map(PAYLOAD_ENTRIES["publish"]),
        _with_options("publish", ("event", None), bad_send_options(reserved={"event", "data"})),
        _with_options("publish", ("nobody", None), bad_send_options(reserved={"event", "data"})),
    ),
    "subscribe": st.one_of(
        BAD_EVENT.map(lambda name: _case("subscribe", InvalidOptionError, name, "q")),
        BAD_QUEUE_NAME.map(lambda name: _case("subscribe", InvalidQueueNameError, "event", name)),
    ),
    "unsubscribe": st.one_of(
        BAD_EVENT.map(lambda name: _case("unsubscribe", InvalidOptionError, name, "q")),
        BAD_QUEUE_NAME.map(lambda name: _case("unsubscribe", InvalidQueueNameError, "event", name)),
    ),
    "schedule": st.one_of(
        _names("schedule", "0 * * * *"),
        st.one_of(
            NON_STRINGS,
            st.text(alphabet=" \t\r\n", max_size=4),
            st.one_of(st.integers(1, 4), st.integers(7, 12)).map(lambda n: " ".join("*" * n)),
            st.integers(60, 10**30).map(lambda minute: f"{minute} * * * *"),
            st.integers(24, 10**6).map(lambda hour: f"0 {hour} * * *"),
            st.sampled_from([0, 32, 99]).map(lambda day: f"0 0 {day} * *"),
            st.sampled_from([0, 13, 99]).map(lambda month: f"0 0 * {month} *"),
            st.from_regex(r"[a-z]{4,8}", fullmatch=True).map(lambda word: f"{word} * * * *"),
            st.sampled_from(["*/0 * * * *", "@daily", "0 0 30 2 *", "* * * * *; DROP TABLE job", "0 * * * *\x00"]),
        ).map(lambda cron: _case("schedule", InvalidCronError, "q", cron)),
        st.one_of(
            SOME_NON_STRINGS,
            st.text(max_size=20),
            st.sampled_from(sorted(ZONES)).map(str.lower),
            st.sampled_from(["Factory", "localtime", "posixrules", "posix/Europe/Paris", "UTC\x00", " UTC"]),
        )
        .filter(lambda tz: tz in NOT_ZONES or tz not in ZONES)
        .map(lambda tz: _case("schedule", InvalidTimezoneError, "q", "0 * * * *", tz=tz)),
        poisoned().map(PAYLOAD_ENTRIES["schedule"]),
        _with_options("schedule", ("q", "0 * * * *"), bad_send_options(reserved={"name", "cron", "data", "tz"})),
    ),
    "unschedule": _names("unschedule"),
    # pg-boss 12's operations (schema version 46) on this version-24 schema: refused as such, before any SQL.
    **{
        method: st.just(_case(method, UnsupportedOperationError, *args))
        for method, args in (
            ("touch", ("q", ACTIVE)),
            ("delete_queued_jobs", ("q",)),
            ("delete_stored_jobs", ("q",)),
            ("delete_all_jobs", ()),
            ("get_queue_stats", ("q",)),
            ("find_jobs", ("q",)),
            ("get_schedule", ("q",)),
            ("update", ("q", {"x": 1})),
            ("upsert", ("q", {"x": 1})),
            ("flow", ([{"ref": "a", "name": "q"}, {"ref": "b", "name": "q", "depends_on": ["a"]}],)),
            ("get_dependencies", ("q", CREATED)),
            ("get_dependents", ("q", CREATED)),
            ("resolve_flow", ()),
            ("redrive", ("dlq",)),
            ("preview_redrive", ("dlq",)),
            ("get_blocked_keys", ("q",)),
        )
    },
}
"""For every public method (and the constructor): invalid arguments, one parameter at a time, as cases."""


def test_every_public_method_has_hostile_cases() -> None:
    public = {name for name in dir(Boss) if not name.startswith("_") and callable(getattr(Boss, name))}
    # covered by test_unknown_keywords_are_python_type_errors; version() takes no argument at all
    without_arguments = {"get_queues", "get_schedules", "version"}
    assert "resolve_flow" in INVALID  # no argument either, but version 24 refuses it
    assert public - without_arguments == set(INVALID) - {"Boss"}


# ====================================================================================== 1. properties


@pytest.mark.parametrize("method", sorted(INVALID))
@SETTINGS
@given(data=st.data())
def test_invalid_arguments_are_refused_before_any_sql(world: World, method: str, data: st.DataObject) -> None:
    """Any invalid argument of any public method: the precise error, no SQL, nothing written, usable after."""
    assert_refused(world, data.draw(INVALID[method], label="case"))


UNKNOWN_KEYWORDS: dict[str, Callable[[Boss], Any]] = {
    "create_queue": lambda boss: boss.create_queue("fresh", foo=1),
    "update_queue": lambda boss: boss.update_queue("q", retryLimit=1),
    "fetch": lambda boss: boss.fetch("q", batchSize=5),
    "get_queues": lambda boss: boss.get_queues(schema="x"),
    "get_schedules": lambda boss: boss.get_schedules(queue="q"),
    "get_queue_size": lambda boss: boss.get_queue_size("q", state="active"),
    "subscribe": lambda boss: boss.subscribe("event", "q", priority=1),
}


def test_unknown_keywords_of_fixed_signatures_are_python_type_errors(world: World) -> None:
    """Current behaviour: methods with a fixed signature leave unknown keywords to Python (``TypeError``), which
    still happens before any SQL, writes nothing and leaves the transaction usable."""
    marker = uuid.uuid4().hex
    with Session(world.engine) as session:
        with session.begin():
            boss = Boss(session, schema=world.schema)
            for method, call in UNKNOWN_KEYWORDS.items():
                before = row_counts(session, world)
                with sql_statements(world.base) as statements, pytest.raises(TypeError, match="unexpected keyword"):
                    call(boss)
                assert statements == [], method
                assert row_counts(session, world) == before, method
            assert before["wrote"] is False
            job_id = boss.send("q", {"marker": marker})
        assert job_id is not None
        assert committed_marker(world, job_id) == marker


def failures_of(world: World, cases: list[Case]) -> list[str]:
    """Run :func:`assert_refused` on every case; describe each that was not refused as it must be."""
    failures = []
    for case in cases:
        try:
            assert_refused(world, case)
        except Exception as exc:  # AssertionError included: every case is tried, all failures are listed
            failures.append(f"{case!r}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:150]}")
    return failures


def test_send_variants_refuse_options_their_own_arguments_set(world: World) -> None:
    failures = failures_of(
        world,
        [
            _case("send_after", InvalidOptionError, "q", None, after=5, start_after=10),
            _case("send_throttled", InvalidOptionError, "q", None, seconds=60, singleton_key="other"),
            _case("send_debounced", InvalidOptionError, "q", None, seconds=60, singleton_next_slot=False),
            _case("send_throttled", InvalidOptionError, "q", None, seconds=60, singleton_minutes=1),
        ],
    )
    assert not failures, "\n".join(failures)


# ===================================================================================== 2. identifiers


def _incompressible(length: int, seed: int) -> str:
    """``length`` characters of 4-byte emoji and 3-byte CJK that PostgreSQL cannot compress: ~3.5 kB."""
    rng = random.Random(seed)
    return "q" + "".join(
        chr(rng.choice((rng.randrange(0x1F300, 0x1F5FF), rng.randrange(0x4E00, 0x9FFF)))) for _ in range(length - 1)
    )


LONG_UNICODE = _incompressible(1000, seed=1)

HOSTILE: dict[str, str] = {
    "single-quote": "it's",
    "double-quote": 'say "hi"',
    "semicolon": "a;b",
    "backslash": "a\\b",
    "nul": "a\x00b",
    "emoji": "job-\U0001f680",
    "emoji-only": "\U0001f680",
    "rtl": "orders-\u05d4\u05d6\u05de\u05e0\u05d5\u05ea-\u202ex",
    "combining": "cafe\u0301-\u0336x",
    "zero-width": "a\u200bb\ufeff",
    "whitespace-around": "  q  ",
    "newline": "q\nq",
    "control": "q\r\n\t\x1b[31m\x7f",
    "percent-format": "%I%L%s%%",
    "dollar-quote": "$create_queue$",
    "comment": "q/*x*/--",
    "only-punctuation": "';--",
    "empty": "",
    "blank": "   ",
    "lone-surrogate": "a\ud800",
    "long-ascii": "q" * 1000,
    "long-unicode": LONG_UNICODE,
}
"""Hostile identifiers by name; ``long-unicode`` is 1,000 characters that do not compress (~3.5 kB of UTF-8)."""


MAX_NAME_BYTES = 1024
"""The longest name or key sqla_boss takes, in UTF-8 bytes (so two fit a btree index entry uncompressed)."""


def valid_queue_name(name: str) -> bool:
    """pg-boss's rule (one ``[A-Za-z0-9_-]`` somewhere) plus what sqla_boss refuses for PostgreSQL's sake."""
    return re.search(r"[A-Za-z0-9_-]", name) is not None and "\\" not in name and valid_text(name)


def valid_text(value: str) -> bool:
    """Text a name or key can be: no NUL, no lone surrogate, at most MAX_NAME_BYTES of UTF-8."""
    return (
        "\x00" not in value
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
        and len(value.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
    )


def partition_of(name: str) -> str:
    """pg-boss's partition name: ``j`` and the SHA-224 of the queue name's UTF-8."""
    return "j" + hashlib.sha224(name.encode()).hexdigest()


SHORTER_HOSTILE = {label: value for label, value in HOSTILE.items() if label != "long-unicode"}
"""The hostile identifiers that do not hit the btree size bug (``long-unicode`` has tests of its own)."""


def check_queue_name(world: World, name: str, label: str) -> None:
    """Refused before any SQL in every role a queue name plays, or stored verbatim and usable in all of them."""
    tag = hashlib.md5(label.encode()).hexdigest()[:8]
    with Session(world.engine) as session:
        with session.begin():
            boss = Boss(session, schema=world.schema)
            if not valid_queue_name(name):
                for role, call in {
                    "create_queue": lambda: boss.create_queue(name),
                    "send": lambda: boss.send(name, {"x": 1}),
                    "fetch": lambda: boss.fetch(name),
                    "get_queue": lambda: boss.get_queue(name),
                    "subscribe": lambda: boss.subscribe("event", name),
                    "schedule": lambda: boss.schedule(name, "0 * * * *"),
                    "create_queue(dead_letter)": lambda: boss.create_queue("fresh", dead_letter=name),
                    "update_queue(dead_letter)": lambda: boss.update_queue("q", dead_letter=name),
                    "send(dead_letter)": lambda: boss.send("q", None, dead_letter=name),
                    "insert": lambda: boss.insert([{"name": "q"}, {"name": name}]),
                }.items():
                    refused_here(session, world, call, InvalidQueueNameError, what=f"{label}: {role}")
                assert boss.send("q", {"after": "refusals"}) is not None
                return

            boss.create_queue(name)
            queue = boss.get_queue(name)
            assert queue is not None, label
            assert queue.name == name, label
            raw = session.execute(
                text(f"SELECT name, partition_name FROM {world.quoted}.queue WHERE name = :name"), {"name": name}
            ).one()
            assert tuple(raw) == (name, partition_of(name)), label

            job_id = boss.send(name, {"queue": name})
            assert job_id is not None, label
            job = boss.get_job_by_id(name, job_id)
            assert isinstance(job, Job), label
            assert (job.name, job.data) == (name, {"queue": name}), label
            raw_job = session.execute(
                text(f"SELECT name, data ->> 'queue' FROM {world.quoted}.job WHERE id = :id"), {"id": job_id}
            ).one()
            assert tuple(raw_job) == (name, name), label
            assert boss.get_queue_size(name) == 1, label
            assert [fetched.id for fetched in boss.fetch(name)] == [job_id], label
            assert boss.complete(name, job_id, {"done": name}) == 1, label

            boss.subscribe(f"event-{tag}", name)
            [published] = boss.publish(f"event-{tag}", {"via": "publish"})
            assert boss.get_job_by_id(name, published) is not None, label
            boss.schedule(name, "0 * * * *", {"by": "cron"})
            assert name in {schedule.name for schedule in boss.get_schedules()}, label

            user = f"dl-user-{tag}"
            boss.create_queue(user, dead_letter=name)
            dl_user = boss.get_queue(user)
            assert dl_user is not None, label
            assert dl_user.dead_letter == name, label
            doomed = boss.send(user, {"doomed": True}, retry_limit=0)
            assert [fetched.id for fetched in boss.fetch(user)] == [doomed], label
            assert boss.fail(user, doomed, ValueError("to the dead letter queue")) == 1, label
            assert boss.get_queue_size(name) == 2, label  # the published job and the dead-lettered copy

        with Session(world.engine) as fresh:
            queue = Boss(fresh, schema=world.schema).get_queue(name)
            assert queue is not None, label
            assert queue.name == name, label


def check_singleton_key(world: World, key: str, label: str) -> None:
    """Refused before any SQL wherever a singleton key goes, or stored verbatim and honoured as the key."""
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        if not valid_text(key):
            for role, call in {
                "send": lambda: boss.send("q", None, singleton_key=key),
                "send_throttled": lambda: boss.send_throttled("q", None, seconds=60, key=key),
                "send_debounced": lambda: boss.send_debounced("q", None, seconds=60, key=key),
                "insert": lambda: boss.insert([{"name": "q", "singleton_key": key}]),
                "schedule": lambda: boss.schedule("q", "0 * * * *", singleton_key=key),
            }.items():
                refused_here(session, world, call, InvalidOptionError, what=f"{label}: {role}")
            return

        plain = boss.send("q", None, singleton_key=key)
        job = boss.get_job_by_id("q", plain)  # type: ignore[arg-type]
        assert isinstance(job, Job), label
        assert job.singleton_key == key, label
        raw = session.execute(
            text(f"SELECT singleton_key FROM {world.quoted}.job WHERE id = :id"), {"id": plain}
        ).scalar_one()
        assert raw == key, label
        # It really is the throttling key and the short policy's key: a second send in the slot is refused.
        assert boss.send_throttled("q", None, seconds=60, key=key) is not None, label
        assert boss.send_throttled("q", None, seconds=60, key=key) is None, label
        assert boss.send("sq", None, singleton_key=key) is not None, label
        assert boss.send("sq", None, singleton_key=key) is None, label
        [inserted] = boss.insert([{"name": "dlq", "singleton_key": key}])
        assert boss.get_job_by_id("dlq", inserted).singleton_key == key, label  # type: ignore[union-attr]
        boss.schedule("q", "0 * * * *", singleton_key=key)
        [schedule] = [s for s in boss.get_schedules() if s.name == "q"]
        assert schedule.options["singletonKey"] == key, label


def check_event_name(world: World, name: str, label: str) -> None:
    """Refused before any SQL by subscribe, publish and unsubscribe, or stored verbatim and routed by."""
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        if not name or not valid_text(name):
            for role, call in {
                "subscribe": lambda: boss.subscribe(name, "q"),
                "publish": lambda: boss.publish(name, {"x": 1}),
                "unsubscribe": lambda: boss.unsubscribe(name, "q"),
            }.items():
                refused_here(session, world, call, InvalidOptionError, what=f"{label}: {role}")
            return

        boss.subscribe(name, "q")
        raw = session.execute(
            text(f"SELECT event FROM {world.quoted}.subscription WHERE name = 'q' AND event = :event"), {"event": name}
        ).scalar_one()
        assert raw == name, label
        [sent] = boss.publish(name, {"event": name})
        job = boss.get_job_by_id("q", sent)
        assert isinstance(job, Job), label
        assert job.data == {"event": name}, label
        assert boss.unsubscribe(name, "q") is True, label
        assert boss.publish(name, None) == [], label


def test_hostile_queue_names_round_trip_verbatim_or_are_refused_before_any_sql(world: World) -> None:
    for label, name in SHORTER_HOSTILE.items():
        check_queue_name(world, name, label)


def test_hostile_singleton_keys_round_trip_verbatim_or_are_refused_before_any_sql(world: World) -> None:
    for label, key in SHORTER_HOSTILE.items():
        check_singleton_key(world, key, label)


def test_hostile_event_names_round_trip_verbatim_or_are_refused_before_any_sql(world: World) -> None:
    for label, name in SHORTER_HOSTILE.items():
        check_event_name(world, name, label)


def test_a_long_incompressible_queue_name(world: World) -> None:
    check_queue_name(world, LONG_UNICODE, "long-unicode")


def test_a_long_incompressible_singleton_key(world: World) -> None:
    check_singleton_key(world, LONG_UNICODE, "long-unicode")


def test_a_long_incompressible_event_name(world: World) -> None:
    check_event_name(world, LONG_UNICODE, "long-unicode")


def test_hostile_schema_names_cron_expressions_and_time_zones_are_refused_before_any_sql(world: World) -> None:
    """None of the hostile identifiers is a schema pg-boss can paste unquoted, a cron expression or a time zone."""
    with Session(world.engine) as session, session.begin():
        boss = Boss(session, schema=world.schema)
        for label, value in HOSTILE.items():
            for role, call, error in (
                ("Boss(schema)", lambda value=value: Boss(session, schema=value), InvalidSchemaNameError),
                ("schema_translate_map", lambda value=value: schema_translate_map(value), InvalidSchemaNameError),
                ("schedule(cron)", lambda value=value: boss.schedule("q", value), InvalidCronError),
                ("schedule(tz)", lambda value=value: boss.schedule("q", "0 * * * *", tz=value), InvalidTimezoneError),
            ):
                refused_here(session, world, call, error, what=f"{label}: {role}", digest=False)
        assert boss.send("q", None) is not None


HOSTILE_ALPHABET = st.one_of(
    st.sampled_from([*"'\";\\\x00 \n\t\r-_aZ9%$/*()", "\U0001f680", "\u202e", "\u0301", "\u05d0", "\u200d"]),
    st.characters(),
    SURROGATES,
)


@SETTINGS
@given(
    name=st.text(alphabet=HOSTILE_ALPHABET, max_size=40),
    key=st.text(alphabet=HOSTILE_ALPHABET, max_size=40),
    event_name=st.text(alphabet=HOSTILE_ALPHABET, max_size=40),
)
def test_generated_identifiers_round_trip_verbatim_or_are_refused(
    world: World, name: str, key: str, event_name: str
) -> None:
    """Queue names, singleton keys and event names drawn from quotes, NUL, backslashes, emoji, RTL, combining
    marks, whitespace and lone surrogates: refused before any SQL exactly when the documented rule says so,
    else read back unchanged."""
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        if valid_queue_name(name):
            boss.create_queue(name)
            queue = boss.get_queue(name)
            assert queue is not None
            assert (queue.name, queue.partition_name) == (name, partition_of(name))
        else:
            refused_here(session, world, lambda: boss.create_queue(name), InvalidQueueNameError)
            name = "q"

        if valid_text(key):
            job_id = boss.send(name, None, singleton_key=key)
            job = boss.get_job_by_id(name, job_id)  # type: ignore[arg-type]
            assert isinstance(job, Job)
            assert (job.name, job.singleton_key) == (name, key)
        else:
            refused_here(session, world, lambda: boss.send(name, None, singleton_key=key), InvalidOptionError)

        if event_name and valid_text(event_name):
            boss.subscribe(event_name, name)
            stored = session.execute(
                text(f"SELECT event, name FROM {world.quoted}.subscription WHERE event = :event AND name = :name"),
                {"event": event_name, "name": name},
            ).all()
            assert [tuple(row) for row in stored] == [(event_name, name)]
        else:
            refused_here(session, world, lambda: boss.subscribe(event_name, name), InvalidOptionError)


INJECTIONS = [
    "x'; DROP TABLE {canary}; --",
    'x"; DROP TABLE {canary}; --',
    "x$$; DROP TABLE {canary}; --",
    "x$create_queue$; DROP TABLE {canary}; --",
    "x'); DROP TABLE {canary}; SELECT ('",
    "x%L%I%s'; DROP TABLE {canary}; --",
    "x*/; DROP TABLE {canary}; /*",
    "x\\'; DROP TABLE {canary}; --",
]


def _injection_calls(payload: str) -> dict[str, Callable[[Boss, World], Any]]:
    """Every identifier (and identifier-like) parameter of every method, carrying ``payload``."""
    p = payload
    return {
        "create_queue(name)": lambda b, w: b.create_queue(p),
        "create_queue(dead_letter)": lambda b, w: b.create_queue("inj", dead_letter=p),
        "update_queue(name)": lambda b, w: b.update_queue(p, retry_limit=1),
        "update_queue(dead_letter)": lambda b, w: b.update_queue("q", dead_letter=p),
        "update_queue(policy)": lambda b, w: b.update_queue("q", policy=p),
        "get_queue(name)": lambda b, w: b.get_queue(p),
        "get_queue_size(name)": lambda b, w: b.get_queue_size(p),
        "get_queue_size(before)": lambda b, w: b.get_queue_size("q", before=p),
        "purge_queue(name)": lambda b, w: b.purge_queue(p),
        "send(name)": lambda b, w: b.send(p, {"payload": p}),
        "send(data keys)": lambda b, w: b.send("q", {p: p}),
        "send(singleton_key)": lambda b, w: b.send("q", None, singleton_key=p),
        "send(short singleton_key)": lambda b, w: b.send("sq", None, singleton_key=p),
        "send(dead_letter)": lambda b, w: b.send("q", None, dead_letter=p),
        "send(id)": lambda b, w: b.send("q", None, id=p),
        "send(start_after)": lambda b, w: b.send("q", None, start_after=p),
        "send(option name)": lambda b, w: b.send("q", None, **{p: 1}),
        "send_after(after)": lambda b, w: b.send_after("q", None, after=p),
        "send_throttled(key)": lambda b, w: b.send_throttled("q", None, seconds=60, key=p),
        "send_debounced(key)": lambda b, w: b.send_debounced("q", None, seconds=60, key=p),
        "insert(name)": lambda b, w: b.insert([{"name": p, "data": p}]),
        "insert(singleton_key)": lambda b, w: b.insert([{"name": "q", "singleton_key": p}]),
        "insert(dead_letter)": lambda b, w: b.insert([{"name": "q", "dead_letter": p}]),
        "insert(field name)": lambda b, w: b.insert([{"name": "q", p: 1}]),
        "fetch(name)": lambda b, w: b.fetch(p, batch_size=10),
        "complete(name)": lambda b, w: b.complete(p, w.active),
        "complete(ids)": lambda b, w: b.complete("q", p),
        "complete(output)": lambda b, w: b.complete("q", w.active, {p: p}),
        "fail(name)": lambda b, w: b.fail(p, w.active, p),
        "fail(ids)": lambda b, w: b.fail("q", [w.active, p]),
        "cancel(name)": lambda b, w: b.cancel(p, w.created),
        "cancel(ids)": lambda b, w: b.cancel("q", p),
        "resume(name)": lambda b, w: b.resume(p, w.cancelled),
        "retry(name)": lambda b, w: b.retry(p, w.failed),
        "delete_job(name)": lambda b, w: b.delete_job(p, w.created),
        "delete_job(ids)": lambda b, w: b.delete_job("q", p),
        "get_job_by_id(name)": lambda b, w: b.get_job_by_id(p, w.created),
        "get_job_by_id(id)": lambda b, w: b.get_job_by_id("q", p),
        "subscribe(event)": lambda b, w: b.subscribe(p, "q"),
        "subscribe(name)": lambda b, w: b.subscribe("event", p),
        "publish(event)": lambda b, w: b.publish(p, {"payload": p}),
        "unsubscribe(name)": lambda b, w: b.unsubscribe("nothing", p),
        "schedule(name)": lambda b, w: b.schedule(p, "0 * * * *"),
        "schedule(cron)": lambda b, w: b.schedule("q", p),
        "schedule(tz)": lambda b, w: b.schedule("q", "0 * * * *", tz=p),
        "schedule(singleton_key)": lambda b, w: b.schedule("dlq", "0 * * * *", singleton_key=p),
        "schedule(option name)": lambda b, w: b.schedule("q", "0 * * * *", **{p: 1}),
        "unschedule(name)": lambda b, w: b.unschedule(p),
        "delete_queue(name)": lambda b, w: b.delete_queue(p),
        "Boss(schema)": lambda b, w: Boss(b.session, schema=p),
        "Boss(default name)": lambda b, w: Boss(b.session, schema=w.schema, **{p: 1}),
    }


QUEUE_NAME_ROLES = {
    "create_queue(name)",
    "create_queue(dead_letter)",
    "update_queue(name)",
    "update_queue(dead_letter)",
    "get_queue(name)",
    "get_queue_size(name)",
    "purge_queue(name)",
    "send(name)",
    "send(dead_letter)",
    "insert(name)",
    "insert(dead_letter)",
    "fetch(name)",
    "complete(name)",
    "fail(name)",
    "cancel(name)",
    "resume(name)",
    "retry(name)",
    "delete_job(name)",
    "get_job_by_id(name)",
    "subscribe(name)",
    "unsubscribe(name)",
    "schedule(name)",
    "unschedule(name)",
    "delete_queue(name)",
}
NEVER_IDENTIFIERS = {
    "update_queue(policy)": "InvalidOptionError",
    "get_queue_size(before)": "InvalidOptionError",
    "send(id)": "InvalidOptionError",
    "send(start_after)": "InvalidOptionError",
    "send(option name)": "InvalidOptionError",
    "send_after(after)": "InvalidOptionError",
    "insert(field name)": "InvalidOptionError",
    "complete(ids)": "InvalidOptionError",
    "fail(ids)": "InvalidOptionError",
    "cancel(ids)": "InvalidOptionError",
    "delete_job(ids)": "InvalidOptionError",
    "get_job_by_id(id)": "InvalidOptionError",
    "schedule(cron)": "InvalidCronError",
    "schedule(tz)": "InvalidTimezoneError",
    "schedule(option name)": "InvalidOptionError",
    "Boss(schema)": "InvalidSchemaNameError",
    "Boss(default name)": "InvalidOptionError",
}
"""Parameters an injection payload can never be valid for, and the error each must raise."""


def expected_injection_outcomes(payload: str) -> dict[str, str]:
    """What each call of :func:`_injection_calls` must do with ``payload``: text parameters (data, output,
    singleton keys, events) store it; queue-name parameters take it as pg-boss's rule says (only
    ``delete_queue`` then refuses: the queue holds jobs); the rest refuse it."""
    outcomes = dict.fromkeys(_injection_calls(payload), "ok")
    outcomes |= NEVER_IDENTIFIERS
    if valid_queue_name(payload):
        outcomes["delete_queue(name)"] = "QueueNotEmptyError"
    else:
        outcomes |= dict.fromkeys(QUEUE_NAME_ROLES, "InvalidQueueNameError")
    return outcomes


def _catalog(connection: Any, schema: str) -> dict[str, Any]:
    """What an injection could change: the schema's relations and functions, and the canary's rows."""
    return {
        "relations": sorted(
            connection.execute(
                text(
                    "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :schema"
                ),
                {"schema": schema},
            ).all()
        ),
        "functions": sorted(
            connection.execute(
                text(
                    "SELECT p.proname, md5(p.prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = :schema"
                ),
                {"schema": schema},
            ).all()
        ),
        "canary": connection.execute(text(f"SELECT id, note FROM {quote_identifier(schema)}.canary ORDER BY id")).all(),
    }


@pytest.mark.parametrize("template", INJECTIONS)
def test_sql_injection_through_every_identifier_changes_nothing(world: World, template: str) -> None:
    canary = f"{world.quoted}.canary"
    payload = template.format(canary=canary)
    with world.base.begin() as connection:
        connection.execute(text(f"CREATE TABLE {canary} (id int PRIMARY KEY, note text NOT NULL)"))
        connection.execute(text(f"INSERT INTO {canary} VALUES (1, 'alive'), (2, :payload)"), {"payload": payload})
    with world.base.connect() as connection:
        before = _catalog(connection, world.schema)

    outcomes: dict[str, str] = {}
    with Session(world.engine) as session, session.begin():
        boss = Boss(session, schema=world.schema)
        for label, call in _injection_calls(payload).items():
            try:
                call(boss, world)
            except SqlaBossError as exc:
                outcomes[label] = type(exc).__name__
            else:
                outcomes[label] = "ok"
        # Everything accepted was stored verbatim.
        if valid_queue_name(payload):
            queue = boss.get_queue(payload)
            assert queue is not None
            assert queue.name == payload
            assert queue.partition_name == partition_of(payload)
        subscribed = session.execute(
            text(f"SELECT count(*) FROM {world.quoted}.subscription WHERE event = :p"), {"p": payload}
        ).scalar_one()
        assert subscribed == 1
        keyed = session.execute(
            text(f"SELECT count(*) FROM {world.quoted}.job WHERE singleton_key = :p"), {"p": payload}
        ).scalar_one()
        assert keyed >= 3  # send, send_throttled and insert (the short queue's and debounced ones too)
        [schedule] = [s for s in boss.get_schedules() if s.name == "dlq"]
        assert schedule.options["singletonKey"] == payload

    assert outcomes == expected_injection_outcomes(payload)

    with world.base.connect() as connection:
        after = _catalog(connection, world.schema)
    assert after["canary"] == before["canary"] == [(1, "alive"), (2, payload)]
    assert after["functions"] == before["functions"]
    assert set(before["relations"]) <= set(after["relations"])
    new_relations = set(after["relations"]) - set(before["relations"])
    # The only new relations are the partitions of the queues made under the payload's name and "inj" (when the
    # payload is a valid queue name) and their indexes, whose names PostgreSQL may truncate.
    partitions = {partition_of(payload), partition_of("inj")} if valid_queue_name(payload) else set()
    assert {name for name, kind in new_relations if kind == "r"} == partitions
    assert all(any(p.startswith(name[:20]) for p in partitions) for name, kind in new_relations if kind == "i")
    assert {kind for _, kind in new_relations} <= {"r", "i"}


# ======================================================================================== 3. payloads


@settings(SETTINGS, max_examples=60)
@given(entry=st.sampled_from(sorted(PAYLOAD_ENTRIES)), value=poisoned(NON_FINITE_POISON))
def test_nan_and_infinity_anywhere_are_payload_errors(world: World, entry: str, value: Any) -> None:
    """NaN, +inf or -inf as a value or a key, up to four levels down among valid siblings, in every parameter
    that takes data or output."""
    assert_refused(world, PAYLOAD_ENTRIES[entry](value))


def nested(depth: int, kind: str) -> Any:
    if kind == "list":
        return functools.reduce(lambda inner, _: [inner], range(depth), 0)
    return functools.reduce(lambda inner, _: {"a": inner}, range(depth), 0)


def test_ten_thousand_levels_of_nesting_are_payload_errors_not_recursion_errors(world: World) -> None:
    for kind in ("list", "dict"):
        deep = nested(10_000, kind)
        for make in PAYLOAD_ENTRIES.values():
            assert_refused(world, make(deep))


def test_nesting_within_the_limit_round_trips(world: World) -> None:
    value = {"list": nested(200, "list"), "dict": nested(200, "dict")}
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        job_id = boss.send("q", value)
        assert boss.get_job_by_id("q", job_id).data == value  # type: ignore[arg-type,union-attr]


def test_an_exception_with_a_deeply_nested_attribute_is_stored_or_refused(world: World) -> None:
    error = ValueError("deep")
    error.payload = nested(10_000, "list")  # type: ignore[attr-defined]
    for method in ("fail", "complete"):
        with Session(world.engine) as session:  # rolled back when it closes
            boss = Boss(session, schema=world.schema)
            before = row_counts(session, world)
            try:
                changed = getattr(boss, method)("q", world.active, error)
            except PayloadError:
                assert row_counts(session, world) == before
            else:
                assert changed == 1
            assert boss.send("q", None) is not None


def test_a_ten_megabyte_payload_round_trips_exactly(world: World) -> None:
    rng = random.Random(10)
    blob = rng.randbytes(5 * 2**20).hex()  # 10 MiB of text
    unicode_tail = "".join(chr(rng.randrange(0x80, 0xD7FF)) for _ in range(1000))
    value = {"blob": blob, "tail": unicode_tail, "n": 2**70, "list": list(range(1000))}
    with Session(world.engine) as session:
        with session.begin():
            boss = Boss(session, schema=world.schema)
            boss.create_queue("big")
            job_id = boss.send("big", value)
        with session.begin():
            boss = Boss(session, schema=world.schema)
            length = session.execute(
                text(f"SELECT length(data ->> 'blob') FROM {world.quoted}.job WHERE id = :id"), {"id": job_id}
            ).scalar_one()
            assert length == len(blob) == 10 * 2**20
            [job] = boss.fetch("big")
            assert job.id == job_id
            assert job.data == value
            assert boss.complete("big", job_id, value) == 1
            assert boss.get_job_by_id("big", job_id).output == value  # type: ignore[union-attr]


NON_STRING_KEYS: list[Any] = [
    {1: "a", 2: "b"},  # json.dumps would write "1" and "2": the job would not read back as sent
    {None: 1},
    {True: 1, False: 0},
    {1.5: 1, -0.0: 2},
    {1: "int", "1": "str"},  # keys that would collide once converted: one value would be lost
    {"outer": {2: [{3: None}]}},  # at any depth, in lists too
    [{"ok": 1}, {4: "deep"}],
    {(1, 2): 1},
    {b"k": 1},
    {NAN: 1},
    {frozenset(): 1},
]


def test_non_string_keys_are_refused(world: World) -> None:
    """JSON object keys are strings: any other key, at any depth, is a :class:`PayloadError` (``json.dumps``
    would turn ``1`` and ``None`` into ``"1"`` and ``"null"`` silently, and keep one value of colliding keys),
    whether the value is data, an output or an inserted job's data; nothing is written."""
    for data in NON_STRING_KEYS:
        for make in (PAYLOAD_ENTRIES["send"], PAYLOAD_ENTRIES["complete"], PAYLOAD_ENTRIES["insert"]):
            assert_refused(world, make(data))


NUL_ALPHABET = st.sampled_from(["\\", "u", "0", "\x00", "a", '"', "/", "n", "\U0001f680"])


@SETTINGS
@given(value=st.text(alphabet=NUL_ALPHABET, max_size=12))
@example(value="\x00")
@example(value="\\u0000")
@example(value="\\\\u0000")
@example(value="\\\x00")
@example(value='"\\u0000"')
def test_nul_is_refused_and_its_escaped_look_alikes_round_trip(world: World, value: str) -> None:
    """NUL anywhere (value, key, output, error message) is a PayloadError; the six characters ``\\u0000`` and
    any run of backslashes before them are just text, stored and read back unchanged."""
    carriers = [{"v": value}, {value: 1}, [[value]]]
    if "\x00" in value:
        for carrier in carriers:
            assert_refused(world, PAYLOAD_ENTRIES["send"](carrier))
        assert_refused(world, PAYLOAD_ENTRIES["complete"](carriers[0]))
        assert_refused(world, PAYLOAD_ENTRIES["fail"](ValueError(value)))
        return
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        for carrier in carriers:
            job_id = boss.send("q", carrier)
            assert boss.get_job_by_id("q", job_id).data == carrier  # type: ignore[arg-type,union-attr]
        assert boss.complete("q", world.active, carriers[1]) == 1
        assert boss.get_job_by_id("q", world.active).output == carriers[1]  # type: ignore[union-attr]


@settings(SETTINGS, max_examples=20)
@given(value=_with(SURROGATES, ""), where=st.sampled_from(["value", "key", "output", "error message", "insert"]))
def test_lone_surrogates_are_payload_errors(world: World, value: str, where: str) -> None:
    case = {
        "value": PAYLOAD_ENTRIES["send"]({"v": value}),
        "key": PAYLOAD_ENTRIES["send"]({value: 1}),
        "output": PAYLOAD_ENTRIES["complete"]([value]),
        "error message": PAYLOAD_ENTRIES["fail"](RuntimeError(value)),
        "insert": PAYLOAD_ENTRIES["insert"](value),
    }[where]
    assert_refused(world, case)


def test_big_integers_round_trip_exactly_up_to_pythons_digit_limit(world: World) -> None:
    """Integers of any size jsonb holds come back exactly, as ints; past Python's 4,300-digit conversion limit
    ``json.dumps`` (and so ``json.loads``) would fail, and the send is refused instead of truncated."""
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        for number in (2**63, 2**70, -(2**70), 10**400, -(10**4299)):
            job_id = boss.send("q", {"n": number, "list": [number]})
            data = boss.get_job_by_id("q", job_id).data  # type: ignore[arg-type,union-attr]
            assert data == {"n": number, "list": [number]}
            assert type(data["n"]) is int
    assert_refused(world, PAYLOAD_ENTRIES["send"]({"n": 10**4300}))


def json_equal(sent: Any, read: Any) -> bool:
    """Equal as JSON: a float may come back as the int jsonb prints for it (``1e16`` -> ``10000000000000000``)."""
    if isinstance(sent, bool) or sent is None:
        return read is sent
    if isinstance(sent, str):
        return read == sent
    if isinstance(sent, int):
        return type(read) is int and read == sent
    if isinstance(sent, float):
        return isinstance(read, (int, float)) and not isinstance(read, bool) and float(read) == sent
    if isinstance(sent, list):
        return isinstance(read, list) and len(read) == len(sent) and all(map(json_equal, sent, read))
    assert isinstance(sent, dict)
    return isinstance(read, dict) and read.keys() == sent.keys() and all(json_equal(sent[k], read[k]) for k in sent)


@SETTINGS
@given(value=JSON)
@example(value=[1e16, 1.7976931348623157e308, 5e-324, -0.0, 0.1])
@example(value={"\u202e\u0301": ["'; DROP TABLE job; --", "\\", '"', "\\u0000"]})
def test_json_values_round_trip(world: World, value: Any) -> None:
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        job_id = boss.send("q", value)
        data = boss.get_job_by_id("q", job_id).data  # type: ignore[arg-type,union-attr]
        assert json_equal(value, data), (value, data)


def test_integral_floats_in_exponent_form_come_back_as_ints(world: World) -> None:
    """Current behaviour, worth knowing: jsonb prints ``1e16`` as ``10000000000000000``, which reads back as an
    ``int``; the value is the same double for JavaScript, but the Python type changes (``1.0`` stays a float)."""
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        job_id = boss.send("q", [1e16, 1.0, 2.5e20])
        data = boss.get_job_by_id("q", job_id).data  # type: ignore[arg-type,union-attr]
        assert [type(x) for x in data] == [int, float, int]
        assert data == [10**16, 1.0, 250000000000000000000]


# ===================================================================================== 4. batch sizes


@SETTINGS
@given(size=st.one_of(bad_int(1), st.none()))
@example(size=0)
@example(size=-1)
@example(size=True)
@example(size=1.5)
@example(size=NAN)
@example(size=2**31)
@example(size=10**10)
def test_fetch_refuses_invalid_batch_sizes(world: World, size: Any) -> None:
    assert_refused(world, _case("fetch", InvalidOptionError, "q", batch_size=size))


def test_fetch_with_a_huge_batch_size_returns_what_exists(world: World) -> None:
    """Current behaviour: any batch size that fits PostgreSQL's integer is accepted and returns what is queued."""
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        boss.create_queue("many")
        for size in (10**9, INT32_MAX, 10.0**9):
            ids = set(boss.insert([{"name": "many", "data": i} for i in range(5)]))
            assert {job.id for job in boss.fetch("many", batch_size=size)} == ids, size
            assert boss.fetch("many", batch_size=size) == [], size


def test_inserting_no_jobs_returns_an_empty_list_without_sql(world: World) -> None:
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        for jobs in ([], (), iter([]), (job for job in [])):
            with sql_statements(world.base) as statements:
                assert boss.insert(jobs) == []
            assert statements == []


def test_ten_thousand_jobs_in_one_insert(world: World) -> None:
    jobs = [{"name": "bulk", "data": {"i": i}, "priority": i % 3} for i in range(10_000)]
    with Session(world.engine) as session:
        with session.begin():
            Boss(session, schema=world.schema).create_queue("bulk")
        with session.begin():
            boss = Boss(session, schema=world.schema)
            with sql_statements(world.base) as statements:
                ids = boss.insert(jobs)
            assert len(statements) == 1, statements  # one statement for the whole batch
            assert len(ids) == len(set(ids)) == 10_000
    with world.base.connect() as connection:
        count, total, stored_ids = connection.execute(
            text(
                f"SELECT count(*), sum((data ->> 'i')::int), array_agg(id) FROM {world.quoted}.job WHERE name = 'bulk'"
            )
        ).one()
    assert (count, total) == (10_000, sum(range(10_000)))
    assert set(stored_ids) == set(ids)


def test_ten_thousand_jobs_with_one_bad_one_insert_nothing(world: World) -> None:
    jobs: list[Any] = [{"name": "q", "data": {"i": i}} for i in range(9_999)]
    assert_refused(world, _case("insert", InvalidOptionError, [*jobs, {"name": "q", "priority": "high"}]))
    assert_refused(world, _case("insert", PayloadError, [*jobs, {"name": "q", "data": NAN}]))
    assert_refused(world, _case("insert", InvalidQueueNameError, [*jobs, {"name": "a\\b"}]))


def test_insert_refuses_what_is_not_a_list_of_jobs(world: World) -> None:
    """Complements test_boss_bad_input (a mapping, a string, an int, ``[5]``)."""
    not_batches = (None, 1.5, True, b"q", bytearray(b"q"), object(), (n for n in ["q"]), [None], [["q"]], [{"q"}])
    for jobs in not_batches:
        assert_refused(world, _case("insert", InvalidOptionError, jobs))


def test_insert_takes_any_iterable_of_jobs(world: World) -> None:
    """Current behaviour: not only lists; any iterable of mappings is a batch."""
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        for make in (list, tuple, iter, lambda jobs: (job for job in jobs), lambda jobs: map(dict, jobs)):
            assert len(boss.insert(make([{"name": "q", "data": 1}, {"name": "dlq", "data": 2}]))) == 2


# ====================================================================== once bugs, now refused or kept


def test_start_after_text_the_database_refuses(world: World) -> None:
    texts = [
        "1 day 1 day",
        "1 1",
        "1:60",
        "1 s -1 s",
        "\u0663 seconds",  # ARABIC-INDIC DIGIT THREE
        "\uff15 s",  # FULLWIDTH DIGIT FIVE
        "5\u2003minutes",  # EM SPACE
        "2030-W01-1T00:00Z",
        "2030-01-01T00Z",
        "2030-01-01T00:00:00,5Z",
    ]
    cases = [_case("send", InvalidOptionError, "q", None, start_after=after) for after in texts]
    cases += [_case("insert", InvalidOptionError, [{"name": "q", "start_after": after}]) for after in texts]
    failures = failures_of(world, cases)
    assert not failures, "\n".join(failures)


@SETTINGS
@given(
    number=st.integers(0, 10_000),
    unit=st.sampled_from(["", " s", " second", " seconds", " min", " minutes", " h", " hours", " d", " days", " w"]),
)
def test_start_after_interval_text_of_one_number_and_unit_is_accepted(world: World, number: int, unit: str) -> None:
    """The interval grammar sqla_boss lets through works, and PostgreSQL computes the delay meant (the test
    above is what it refuses)."""
    seconds = {"": 1, "s": 1, "second": 1, "seconds": 1, "min": 60, "minutes": 60, "h": 3600, "hours": 3600}
    seconds |= {"d": 86400, "days": 86400, "w": 604800}
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        job_id = boss.send("q", None, start_after=f"{number}{unit}")
        delay = session.execute(
            text(f"SELECT extract(epoch FROM start_after - created_on) FROM {world.quoted}.job WHERE id = :id"),
            {"id": job_id},
        ).scalar_one()
        assert float(delay) == pytest.approx(number * seconds[unit.strip()], abs=1)


def test_aware_datetimes_out_of_range_in_utc_are_refused(world: World) -> None:
    last_instant = dt.datetime.max.replace(tzinfo=dt.timezone(-dt.timedelta(hours=1)))
    failures = failures_of(
        world,
        [
            _case("send", InvalidOptionError, "q", None, start_after="9999-12-31T23:59:59-01:00"),
            _case("send", InvalidOptionError, "q", None, start_after="0001-01-01T00:00:00+01:00"),
            _case("send_after", InvalidOptionError, "q", None, after=dt.datetime(1, 1, 1, tzinfo=PLUS_ONE_HOUR)),
            _case("insert", InvalidOptionError, [{"name": "q", "keep_until": last_instant}]),
        ],
    )
    assert not failures, "\n".join(failures)


def test_timedeltas_for_unit_suffixed_options_mean_what_they_say(world: World) -> None:
    wrong = []
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        durations = {"expire_in_minutes": dt.timedelta(minutes=2), "expire_in_hours": dt.timedelta(seconds=20)}
        for option, value in durations.items():
            try:
                job_id = boss.send("q", None, **{option: value})
            except InvalidOptionError:
                continue  # refusing a timedelta for a unit-suffixed option would do too
            job = boss.get_job_by_id("q", job_id)  # type: ignore[arg-type]
            assert isinstance(job, Job)
            if job.expire_in != value:
                wrong.append(f"{option}={value!r} stored expire_in={job.expire_in!r}")
    assert not wrong, wrong


def test_retry_backoff_never_writes_an_unreadable_start_after(world: World) -> None:
    with Session(world.engine) as session:  # rolled back when it closes
        boss = Boss(session, schema=world.schema)
        try:
            boss.create_queue("slow", retry_delay=INT32_MAX, retry_backoff=True, retry_limit=20)
        except InvalidOptionError:
            return  # refusing such a delay up front would do too
        job_id = boss.send("slow", None)
        for _ in range(10):
            boss.fetch("slow", ignore_start_after=True)
            boss.fail("slow", job_id)  # type: ignore[arg-type]
            job = boss.get_job_by_id("slow", job_id)  # type: ignore[arg-type]
            assert isinstance(job, Job)
