"""Bad input: every public ``Boss`` method refuses it with the precise error, before anything is written.

Each case proves three things: the exact :class:`SqlaBossError` subclass, an unchanged digest of every
pg-boss table (and of the schema's tables, so no partition appeared), and a transaction that still works
(a job is sent and read back afterwards). The schema is installed once for this module, with committed
queues and jobs; every case runs in its own transaction, rolled back. Every case runs on ``Boss`` and on
``AsyncBoss`` (the ``boss`` and ``make_boss`` fixtures), the constructor's included, and on schema versions 24
and 46 but for the rules of version 24 alone (:data:`_VERSION_24_ONLY`); tests/test_boss46_bad_input.py has
version 46's own.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from boss_support import BOTH_VERSIONS, assert_usable, one_schema_per_module, snapshot
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sqla_boss import Boss
from sqla_boss.errors import (
    DeadLetterQueueNotFoundError,
    InvalidCronError,
    InvalidOptionError,
    InvalidQueueNameError,
    InvalidSchemaNameError,
    InvalidTimezoneError,
    PayloadError,
    QueueNotFoundError,
    SqlaBossError,
)
from sqla_boss.options.payloads import MAX_JSON_DEPTH
from sqla_boss.schema import schema_translate_map

NAN = math.nan
INF = math.inf
NAIVE = dt.datetime(2030, 1, 1, 12, 0)


@dataclass(frozen=True)
class Jobs:
    """Committed jobs of queue ``q`` the cases can aim at."""

    created: uuid.UUID
    active: uuid.UUID
    cancelled: uuid.UUID
    failed: uuid.UUID


installed_schema = pytest.fixture(scope="module", name="installed_schema")(one_schema_per_module)
"""One schema for the module (the cases only write in transactions that are rolled back)."""


@pytest.fixture(scope="module")
def jobs(engine: Engine, installed_schema: str) -> Jobs:
    translated = engine.execution_options(schema_translate_map=schema_translate_map(installed_schema))
    with Session(translated) as session, session.begin():
        boss = Boss(session, schema=installed_schema)
        boss.create_queue("dlq")
        boss.create_queue("q", dead_letter="dlq")
        boss.subscribe("event", "q")
        boss.schedule("q", "0 * * * *")
        active = boss.send("q", {"job": "active"})
        failed = boss.send("q", {"job": "failed"}, retry_limit=0, priority=-1)
        assert {job.id for job in boss.fetch("q", batch_size=2)} == {active, failed}
        boss.fail("q", failed)
        cancelled = boss.send("q", {"job": "cancelled"})
        boss.cancel("q", cancelled)
        created = boss.send("q", {"job": "created"})
    assert None not in (created, active, cancelled, failed)
    return Jobs(created=created, active=active, cancelled=cancelled, failed=failed)  # type: ignore[arg-type]


Call = Callable[[Boss, Jobs], Any]


class Construct:
    """A constructor case: ``make_boss(session, *args, **kwargs)``, so ``Boss(...)`` or ``AsyncBoss(...)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def on(self, make_boss: Callable[..., Any]) -> Call:
        """The call that constructs a repository of the API under test on the test's session."""
        return lambda b, j: make_boss(b.session, *self.args, **self.kwargs)


def _refused(boss: Boss, session: Session, schema: str, jobs: Jobs, call: Call, error: type[SqlaBossError]) -> None:
    before = snapshot(session, schema)
    try:
        call(boss, jobs)
    except SqlaBossError as exc:
        raised: SqlaBossError = exc
    except Exception as exc:  # pytrace=False: the (xfailed) failures stay cheap to report
        first_line = (str(exc).splitlines() or [""])[0][:200]
        pytest.fail(
            f"expected {error.__name__}, got {type(exc).__module__}.{type(exc).__name__}: {first_line}", pytrace=False
        )
    else:
        pytest.fail(f"expected {error.__name__}, nothing was raised", pytrace=False)
    assert type(raised) is error, f"expected {error.__name__}, got {type(raised).__name__}: {raised}"
    assert str(raised)
    assert snapshot(session, schema) == before
    assert session.in_transaction()
    assert_usable(boss, "q")


# ------------------------------------------------------------------------------------- queue names

_BAD_NAMES: list[Any] = [None, 123, "!!!", "a\x00b", "a\\b"]
"""One name of each kind of refusal: not a string, no word character, NUL, backslash."""
_MORE_BAD_NAMES: list[Any] = [b"q", "", " . ", "\\x41"]

_NAME_CALLS: dict[str, Callable[[Boss, Any, Jobs], Any]] = {
    "create_queue": lambda boss, name, jobs: boss.create_queue(name),
    "update_queue": lambda boss, name, jobs: boss.update_queue(name, retry_limit=1),
    "delete_queue": lambda boss, name, jobs: boss.delete_queue(name),
    "purge_queue": lambda boss, name, jobs: boss.purge_queue(name),
    "get_queue": lambda boss, name, jobs: boss.get_queue(name),
    "get_queue_size": lambda boss, name, jobs: boss.get_queue_size(name),
    "send": lambda boss, name, jobs: boss.send(name, {"x": 1}),
    "send_after": lambda boss, name, jobs: boss.send_after(name, None, after=5),
    "send_throttled": lambda boss, name, jobs: boss.send_throttled(name, None, seconds=60),
    "send_debounced": lambda boss, name, jobs: boss.send_debounced(name, None, seconds=60),
    "insert": lambda boss, name, jobs: boss.insert([{"name": "q"}, {"name": name}]),
    "fetch": lambda boss, name, jobs: boss.fetch(name),
    "complete": lambda boss, name, jobs: boss.complete(name, jobs.active),
    "fail": lambda boss, name, jobs: boss.fail(name, jobs.active),
    "cancel": lambda boss, name, jobs: boss.cancel(name, jobs.created),
    "resume": lambda boss, name, jobs: boss.resume(name, jobs.cancelled),
    "retry": lambda boss, name, jobs: boss.retry(name, jobs.failed),
    "delete_job": lambda boss, name, jobs: boss.delete_job(name, jobs.created),
    "get_job_by_id": lambda boss, name, jobs: boss.get_job_by_id(name, jobs.created),
    "subscribe": lambda boss, name, jobs: boss.subscribe("event", name),
    "unsubscribe": lambda boss, name, jobs: boss.unsubscribe("event", name),
    "schedule": lambda boss, name, jobs: boss.schedule(name, "0 * * * *"),
    "unschedule": lambda boss, name, jobs: boss.unschedule(name),
}

# ``dead_letter=None`` means "not given", so ``None`` is left out of these.
_DEAD_LETTER_CALLS: dict[str, Callable[[Boss, Any, Jobs], Any]] = {
    "create_queue(dead_letter)": lambda boss, name, jobs: boss.create_queue("fresh", dead_letter=name),
    "update_queue(dead_letter)": lambda boss, name, jobs: boss.update_queue("q", dead_letter=name),
    "send(dead_letter)": lambda boss, name, jobs: boss.send("q", None, dead_letter=name),
    "insert(dead_letter)": lambda boss, name, jobs: boss.insert([{"name": "q", "dead_letter": name}]),
    "publish(dead_letter)": lambda boss, name, jobs: boss.publish("event", None, dead_letter=name),
    "schedule(dead_letter)": lambda boss, name, jobs: boss.schedule("q", "0 * * * *", dead_letter=name),
}


@BOTH_VERSIONS
@pytest.mark.parametrize("name", _BAD_NAMES, ids=repr)
@pytest.mark.parametrize("method", [method for method in _NAME_CALLS if method != "get_queue_size"])
def test_bad_queue_names_are_refused(
    boss: Boss, session: Session, installed_schema: str, jobs: Jobs, method: str, name: Any
) -> None:
    call = _NAME_CALLS[method]
    _refused(boss, session, installed_schema, jobs, lambda b, j: call(b, name, j), InvalidQueueNameError)


@pytest.mark.parametrize("name", _BAD_NAMES, ids=repr)
def test_bad_queue_names_are_refused_by_get_queue_size(
    boss: Boss, session: Session, installed_schema: str, jobs: Jobs, name: Any
) -> None:
    """Version 24 alone: on 46 get_queue_size is an UnsupportedOperationError, whatever the name."""
    _refused(boss, session, installed_schema, jobs, lambda b, j: b.get_queue_size(name), InvalidQueueNameError)


@BOTH_VERSIONS
@pytest.mark.parametrize("name", [*_BAD_NAMES, *_MORE_BAD_NAMES], ids=repr)
@pytest.mark.parametrize("method", ["create_queue", "send", "get_queue"])
def test_more_bad_queue_names_are_refused(
    boss: Boss, session: Session, installed_schema: str, jobs: Jobs, method: str, name: Any
) -> None:
    call = _NAME_CALLS[method]
    _refused(boss, session, installed_schema, jobs, lambda b, j: call(b, name, j), InvalidQueueNameError)


@BOTH_VERSIONS
@pytest.mark.parametrize("name", [name for name in _BAD_NAMES if name is not None], ids=repr)
@pytest.mark.parametrize("method", list(_DEAD_LETTER_CALLS))
def test_bad_dead_letter_names_are_refused(
    boss: Boss, session: Session, installed_schema: str, jobs: Jobs, method: str, name: Any
) -> None:
    call = _DEAD_LETTER_CALLS[method]
    _refused(boss, session, installed_schema, jobs, lambda b, j: call(b, name, j), InvalidQueueNameError)


@BOTH_VERSIONS
@pytest.mark.parametrize("method", ["create_queue", "send", "fetch", "complete", "subscribe"])
def test_queue_names_that_are_not_utf8_are_refused(
    boss: Boss, session: Session, installed_schema: str, jobs: Jobs, method: str
) -> None:
    call = _NAME_CALLS[method]
    _refused(boss, session, installed_schema, jobs, lambda b, j: call(b, "q\ud800", j), InvalidQueueNameError)


# ---------------------------------------------------------------------------------- everything else


def _case(call: Call | Construct, error: type[SqlaBossError], id: str) -> Any:
    return pytest.param(call, error, id=id)


def _nested(depth: int) -> Any:
    return functools.reduce(lambda inner, _: [inner], range(depth), 0)


_CASES = [
    # ---- the constructor
    _case(Construct(schema="Bad"), InvalidSchemaNameError, "Boss-schema-upper"),
    _case(Construct(schema="pg_x"), InvalidSchemaNameError, "Boss-schema-pg_"),
    _case(Construct(schema=5), InvalidSchemaNameError, "Boss-schema-int"),
    _case(Construct(schema="x" * 51), InvalidSchemaNameError, "Boss-schema-long"),
    _case(Construct(schema="select"), InvalidSchemaNameError, "Boss-schema-reserved"),
    _case(Construct(foo=1), InvalidOptionError, "Boss-unknown-default"),
    _case(Construct(retryLimit=1), InvalidOptionError, "Boss-camel-case-default"),
    _case(Construct(retry_limit=-1), InvalidOptionError, "Boss-retry_limit-negative"),
    _case(Construct(retry_delay="5"), InvalidOptionError, "Boss-retry_delay-str"),
    _case(Construct(retry_backoff="yes"), InvalidOptionError, "Boss-retry_backoff-str"),
    _case(Construct(expire_in_hours=24), InvalidOptionError, "Boss-expire-24h"),
    _case(Construct(expire_in_seconds=NAN), InvalidOptionError, "Boss-expire-nan"),
    _case(Construct(retention_days=0), InvalidOptionError, "Boss-retention-0"),
    # ---- create_queue
    _case(lambda b, j: b.create_queue("fresh", policy="fifo"), InvalidOptionError, "create_queue-policy-unknown"),
    _case(lambda b, j: b.create_queue("fresh", policy=3), InvalidOptionError, "create_queue-policy-int"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", policy="STANDARD"), InvalidOptionError, "create_queue-policy-case"),
    _case(lambda b, j: b.create_queue("fresh", retry_limit=-1), InvalidOptionError, "create_queue-retry_limit-neg"),
    _case(lambda b, j: b.create_queue("fresh", retry_limit="3"), InvalidOptionError, "create_queue-retry_limit-str"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", retry_limit=2.5), InvalidOptionError, "create_queue-retry_limit-frac"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", retry_limit=True), InvalidOptionError, "create_queue-retry_limit-bool"),
    _case(lambda b, j: b.create_queue("fresh", retry_limit=2**31), InvalidOptionError, "create_queue-retry_limit-huge"),
    _case(lambda b, j: b.create_queue("fresh", retry_limit=NAN), InvalidOptionError, "create_queue-retry_limit-nan"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", retry_delay=-1), InvalidOptionError, "create_queue-retry_delay-neg"),
    _case(lambda b, j: b.create_queue("fresh", retry_delay=1.5), InvalidOptionError, "create_queue-retry_delay-frac"),  # type: ignore[arg-type]
    _case(
        lambda b, j: b.create_queue("fresh", retry_delay=dt.timedelta(milliseconds=1500)),
        InvalidOptionError,
        "create_queue-retry_delay-td-frac",
    ),
    _case(lambda b, j: b.create_queue("fresh", retry_backoff="yes"), InvalidOptionError, "create_queue-backoff-str"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", retry_backoff=1), InvalidOptionError, "create_queue-backoff-int"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", expire_in_seconds=0), InvalidOptionError, "create_queue-expire-0"),
    _case(lambda b, j: b.create_queue("fresh", expire_in_seconds=86400), InvalidOptionError, "create_queue-expire-24h"),
    _case(lambda b, j: b.create_queue("fresh", expire_in_seconds=NAN), InvalidOptionError, "create_queue-expire-nan"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", expire_in_seconds=INF), InvalidOptionError, "create_queue-expire-inf"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", expire_in_seconds=1.5), InvalidOptionError, "create_queue-expire-frac"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", expire_in_seconds="60"), InvalidOptionError, "create_queue-expire-str"),  # type: ignore[arg-type]
    _case(lambda b, j: b.create_queue("fresh", retention_minutes=0), InvalidOptionError, "create_queue-retention-0"),
    _case(
        lambda b, j: b.create_queue("fresh", retention_minutes=1.5), InvalidOptionError, "create_queue-retention-frac"
    ),  # type: ignore[arg-type]
    _case(
        lambda b, j: b.create_queue("fresh", dead_letter="missing"),
        DeadLetterQueueNotFoundError,
        "create_queue-dead_letter-missing",
    ),
    # ---- update_queue
    _case(lambda b, j: b.update_queue("missing", retry_limit=1), QueueNotFoundError, "update_queue-missing"),
    _case(lambda b, j: b.update_queue("missing"), QueueNotFoundError, "update_queue-missing-no-options"),
    _case(lambda b, j: b.update_queue("q", policy="bad"), InvalidOptionError, "update_queue-policy"),
    _case(lambda b, j: b.update_queue("q", retry_limit=-1), InvalidOptionError, "update_queue-retry_limit"),
    _case(lambda b, j: b.update_queue("q", expire_in_seconds=0), InvalidOptionError, "update_queue-expire"),
    _case(lambda b, j: b.update_queue("q", retention_minutes=-5), InvalidOptionError, "update_queue-retention"),
    _case(
        lambda b, j: b.update_queue("q", dead_letter="missing", retry_limit=9),
        DeadLetterQueueNotFoundError,
        "update_queue-dead_letter-missing",
    ),
    # ---- get_queue_size
    _case(lambda b, j: b.get_queue_size("q", before="bogus"), InvalidOptionError, "get_queue_size-before-str"),
    _case(lambda b, j: b.get_queue_size("q", before=5), InvalidOptionError, "get_queue_size-before-int"),  # type: ignore[arg-type]
    _case(lambda b, j: b.get_queue_size("q", before=None), InvalidOptionError, "get_queue_size-before-none"),  # type: ignore[arg-type]
    # ---- send: the queue and the payload
    _case(lambda b, j: b.send("missing", {"x": 1}), QueueNotFoundError, "send-queue-missing"),
    _case(lambda b, j: b.send("q", None, dead_letter="missing"), DeadLetterQueueNotFoundError, "send-dlq-missing"),
    _case(lambda b, j: b.send("q", {1, 2}), PayloadError, "send-data-set"),
    _case(lambda b, j: b.send("q", NAN), PayloadError, "send-data-nan"),
    _case(lambda b, j: b.send("q", {"x": INF}), PayloadError, "send-data-inf"),
    _case(lambda b, j: b.send("q", [1, -INF]), PayloadError, "send-data-neg-inf"),
    _case(lambda b, j: b.send("q", object()), PayloadError, "send-data-object"),
    _case(lambda b, j: b.send("q", b"bytes"), PayloadError, "send-data-bytes"),
    _case(lambda b, j: b.send("q", {"when": NAIVE}), PayloadError, "send-data-datetime"),
    _case(lambda b, j: b.send("q", decimal.Decimal("1.5")), PayloadError, "send-data-decimal"),
    _case(lambda b, j: b.send("q", lambda: None), PayloadError, "send-data-function"),
    _case(lambda b, j: b.send("q", {"deep": {"set": {1}}}), PayloadError, "send-data-nested-set"),
    _case(lambda b, j: b.send("q", {("a", "b"): 1}), PayloadError, "send-data-tuple-key"),
    _case(lambda b, j: b.send("q", {"s": "a\x00b"}), PayloadError, "send-data-nul"),
    _case(lambda b, j: b.send("q", {"a\x00": 1}), PayloadError, "send-data-nul-key"),
    _case(lambda b, j: b.send("q", "\ud800"), PayloadError, "send-data-surrogate"),
    _case(
        lambda b, j: b.send("q", _nested(5000)),
        PayloadError,
        "send-data-too-deep",
    ),
    # ---- send: options
    _case(lambda b, j: b.send("q", None, foo=1), InvalidOptionError, "send-unknown-option"),
    _case(lambda b, j: b.send("q", None, retryLimit=1), InvalidOptionError, "send-camel-case-option"),
    _case(
        lambda b, j: b.send("q", None, keep_until=dt.datetime.now(dt.timezone.utc)),
        InvalidOptionError,
        "send-keep_until",
    ),
    _case(lambda b, j: b.send("q", None, priority="high"), InvalidOptionError, "send-priority-str"),
    _case(lambda b, j: b.send("q", None, priority=1.5), InvalidOptionError, "send-priority-frac"),
    _case(lambda b, j: b.send("q", None, priority=NAN), InvalidOptionError, "send-priority-nan"),
    _case(lambda b, j: b.send("q", None, priority=True), InvalidOptionError, "send-priority-bool"),
    _case(lambda b, j: b.send("q", None, priority=2**31), InvalidOptionError, "send-priority-huge"),
    _case(
        lambda b, j: b.send("q", None, priority=-(2**31) - 1),
        InvalidOptionError,
        "send-priority-very-negative",
    ),
    _case(lambda b, j: b.send("q", None, start_after=NAIVE), InvalidOptionError, "send-start_after-naive"),
    _case(lambda b, j: b.send("q", None, start_after="tomorrow"), InvalidOptionError, "send-start_after-word"),
    _case(lambda b, j: b.send("q", None, start_after=""), InvalidOptionError, "send-start_after-empty"),
    _case(
        lambda b, j: b.send("q", None, start_after="2030-01-01T00:00:00"),
        InvalidOptionError,
        "send-start_after-iso-naive",
    ),
    _case(
        lambda b, j: b.send("q", None, start_after="2030-13-01T00:00:00Z"),
        InvalidOptionError,
        "send-start_after-month-13",
    ),
    _case(lambda b, j: b.send("q", None, start_after="5 minutes; DROP"), InvalidOptionError, "send-start_after-junk"),
    _case(lambda b, j: b.send("q", None, start_after=[5]), InvalidOptionError, "send-start_after-list"),
    _case(lambda b, j: b.send("q", None, start_after=True), InvalidOptionError, "send-start_after-bool"),
    _case(lambda b, j: b.send("q", None, start_after=NAN), InvalidOptionError, "send-start_after-nan"),
    _case(lambda b, j: b.send("q", None, start_after=INF), InvalidOptionError, "send-start_after-inf"),
    _case(lambda b, j: b.send("q", None, start_after=NAIVE.date()), InvalidOptionError, "send-start_after-date"),
    _case(lambda b, j: b.send("q", None, start_after=1e20), InvalidOptionError, "send-start_after-huge"),
    _case(
        lambda b, j: b.send("q", None, start_after=dt.timedelta.max),
        InvalidOptionError,
        "send-start_after-timedelta-max",
    ),
    _case(
        lambda b, j: b.send("q", None, start_after="99999999999 years"),
        InvalidOptionError,
        "send-start_after-huge-interval",
    ),
    _case(lambda b, j: b.send("q", None, retention_days=10**9), InvalidOptionError, "send-retention-huge"),
    _case(lambda b, j: b.send("q", None, singleton_seconds=43201), InvalidOptionError, "send-singleton-over-archive"),
    _case(lambda b, j: b.send("q", None, singleton_seconds=1.5), InvalidOptionError, "send-singleton-frac"),
    _case(lambda b, j: b.send("q", None, singleton_seconds=NAN), InvalidOptionError, "send-singleton-nan"),
    _case(lambda b, j: b.send("q", None, singleton_seconds="60"), InvalidOptionError, "send-singleton-str"),
    _case(lambda b, j: b.send("q", None, singleton_minutes=0.01), InvalidOptionError, "send-singleton-minutes-frac"),
    _case(lambda b, j: b.send("q", None, singleton_hours=10**9), InvalidOptionError, "send-singleton-hours-huge"),
    _case(lambda b, j: b.send("q", None, singleton_key=5), InvalidOptionError, "send-singleton_key-int"),
    _case(lambda b, j: b.send("q", None, singleton_key=["a"]), InvalidOptionError, "send-singleton_key-list"),
    _case(lambda b, j: b.send("q", None, singleton_key="a\x00"), InvalidOptionError, "send-singleton_key-nul"),
    _case(lambda b, j: b.send("q", None, singleton_next_slot="yes"), InvalidOptionError, "send-next_slot-str"),
    _case(lambda b, j: b.send("q", None, id="not-a-uuid"), InvalidOptionError, "send-id-text"),
    _case(lambda b, j: b.send("q", None, id=5), InvalidOptionError, "send-id-int"),
    _case(lambda b, j: b.send("q", None, id=""), InvalidOptionError, "send-id-empty"),
    _case(lambda b, j: b.send("q", None, retry_limit=-1), InvalidOptionError, "send-retry_limit-neg"),
    _case(lambda b, j: b.send("q", None, retry_limit=2**31), InvalidOptionError, "send-retry_limit-huge"),
    _case(lambda b, j: b.send("q", None, retry_delay=-1), InvalidOptionError, "send-retry_delay-neg"),
    _case(lambda b, j: b.send("q", None, retry_delay=NAN), InvalidOptionError, "send-retry_delay-nan"),
    _case(lambda b, j: b.send("q", None, retry_backoff="true"), InvalidOptionError, "send-retry_backoff-str"),
    _case(lambda b, j: b.send("q", None, expire_in_seconds=0), InvalidOptionError, "send-expire-0"),
    _case(lambda b, j: b.send("q", None, expire_in_seconds=-1), InvalidOptionError, "send-expire-neg"),
    _case(lambda b, j: b.send("q", None, expire_in_seconds=NAN), InvalidOptionError, "send-expire-nan"),
    _case(lambda b, j: b.send("q", None, expire_in_hours=24), InvalidOptionError, "send-expire-24h"),
    _case(lambda b, j: b.send("q", None, expire_in_minutes=1440), InvalidOptionError, "send-expire-1440min"),
    _case(lambda b, j: b.send("q", None, expire_in_seconds=1, expire_in_hours=0), InvalidOptionError, "send-expire-0h"),
    _case(lambda b, j: b.send("q", None, retention_days=0), InvalidOptionError, "send-retention-0"),
    _case(lambda b, j: b.send("q", None, retention_seconds=-1), InvalidOptionError, "send-retention-neg"),
    _case(lambda b, j: b.send("q", None, retention_hours="2"), InvalidOptionError, "send-retention-str"),
    _case(lambda b, j: b.send("q", None, retention_minutes=INF), InvalidOptionError, "send-retention-inf"),
    # ---- send_after / send_throttled / send_debounced
    _case(lambda b, j: b.send_after("q", None, after=NAIVE), InvalidOptionError, "send_after-naive"),
    _case(lambda b, j: b.send_after("q", None, after="soon"), InvalidOptionError, "send_after-word"),
    _case(lambda b, j: b.send_after("q", None, after=5, foo=1), InvalidOptionError, "send_after-unknown-option"),
    _case(lambda b, j: b.send_after("q", {1}, after=5), PayloadError, "send_after-data-set"),
    _case(lambda b, j: b.send_throttled("q", None, seconds="60"), InvalidOptionError, "send_throttled-seconds-str"),  # type: ignore[arg-type]
    _case(lambda b, j: b.send_throttled("q", None, seconds=NAN), InvalidOptionError, "send_throttled-seconds-nan"),  # type: ignore[arg-type]
    _case(lambda b, j: b.send_throttled("q", None, seconds=43201), InvalidOptionError, "send_throttled-seconds-huge"),
    _case(lambda b, j: b.send_throttled("q", None, seconds=60, key=5), InvalidOptionError, "send_throttled-key-int"),  # type: ignore[arg-type]
    _case(lambda b, j: b.send_throttled("missing", None, seconds=60), QueueNotFoundError, "send_throttled-missing"),
    _case(lambda b, j: b.send_debounced("q", None, seconds=1.5), InvalidOptionError, "send_debounced-seconds-frac"),  # type: ignore[arg-type]
    _case(lambda b, j: b.send_debounced("q", NAN, seconds=60), PayloadError, "send_debounced-data-nan"),
    _case(lambda b, j: b.send_debounced("missing", None, seconds=60), QueueNotFoundError, "send_debounced-missing"),
    # ---- insert
    _case(lambda b, j: b.insert({"name": "q"}), InvalidOptionError, "insert-a-mapping"),  # type: ignore[arg-type]
    _case(lambda b, j: b.insert("q"), InvalidOptionError, "insert-a-string"),  # type: ignore[arg-type]
    _case(
        lambda b, j: b.insert(5),  # type: ignore[arg-type]
        InvalidOptionError,
        "insert-an-int",
    ),
    _case(lambda b, j: b.insert([5]), InvalidOptionError, "insert-item-int"),  # type: ignore[list-item]
    _case(lambda b, j: b.insert([{"data": 1}]), InvalidOptionError, "insert-no-name"),
    _case(lambda b, j: b.insert([{"name": "q", "foo": 1}]), InvalidOptionError, "insert-unknown-field"),
    _case(lambda b, j: b.insert([{"name": "q", "singleton_minutes": 5}]), InvalidOptionError, "insert-send-only-field"),
    _case(lambda b, j: b.insert([{"name": "q", "keep_until": NAIVE}]), InvalidOptionError, "insert-keep_until-naive"),
    _case(
        lambda b, j: b.insert([{"name": "q", "keep_until": "2030-01-01"}]), InvalidOptionError, "insert-keep_until-str"
    ),
    _case(lambda b, j: b.insert([{"name": "q", "start_after": NAIVE}]), InvalidOptionError, "insert-start_after-naive"),
    _case(lambda b, j: b.insert([{"name": "q", "id": "x"}]), InvalidOptionError, "insert-id"),
    _case(lambda b, j: b.insert([{"name": "q", "priority": "1"}]), InvalidOptionError, "insert-priority"),
    _case(lambda b, j: b.insert([{"name": "q", "expire_in_seconds": 0}]), InvalidOptionError, "insert-expire"),
    _case(lambda b, j: b.insert([{"name": "q", "singleton_seconds": 43201}]), InvalidOptionError, "insert-singleton"),
    _case(lambda b, j: b.insert([{"name": "q", "singleton_key": 5}]), InvalidOptionError, "insert-singleton_key"),
    _case(lambda b, j: b.insert([{"name": "q", "retry_backoff": "no"}]), InvalidOptionError, "insert-retry_backoff"),
    _case(lambda b, j: b.insert([{"name": "q", "data": {1}}]), PayloadError, "insert-data-set"),
    _case(lambda b, j: b.insert([{"name": "q"}, {"name": "q", "data": NAN}]), PayloadError, "insert-second-data-nan"),
    _case(
        lambda b, j: b.insert([{"name": "q"}, {"name": "q", "retry_limit": -1}]),
        InvalidOptionError,
        "insert-second-bad",
    ),
    _case(lambda b, j: b.insert([{"name": "q"}, {"name": "missing"}]), QueueNotFoundError, "insert-queue-missing"),
    _case(
        lambda b, j: b.insert([{"name": "q"}, {"name": "q", "dead_letter": "missing"}]),
        DeadLetterQueueNotFoundError,
        "insert-dlq-missing",
    ),
    _case(lambda b, j: b.insert([{"name": "q", "data": "\x00"}]), PayloadError, "insert-data-nul"),
    _case(
        lambda b, j: b.insert([{"name": "q", "start_after": 1e20}]),
        InvalidOptionError,
        "insert-start_after-huge",
    ),
    # ---- fetch
    _case(lambda b, j: b.fetch("q", batch_size=0), InvalidOptionError, "fetch-batch-0"),
    _case(lambda b, j: b.fetch("q", batch_size=-1), InvalidOptionError, "fetch-batch-neg"),
    _case(lambda b, j: b.fetch("q", batch_size="5"), InvalidOptionError, "fetch-batch-str"),  # type: ignore[arg-type]
    _case(lambda b, j: b.fetch("q", batch_size=1.5), InvalidOptionError, "fetch-batch-frac"),  # type: ignore[arg-type]
    _case(lambda b, j: b.fetch("q", batch_size=True), InvalidOptionError, "fetch-batch-bool"),
    _case(lambda b, j: b.fetch("q", batch_size=NAN), InvalidOptionError, "fetch-batch-nan"),  # type: ignore[arg-type]
    _case(lambda b, j: b.fetch("q", batch_size=2**31), InvalidOptionError, "fetch-batch-huge"),
    _case(lambda b, j: b.fetch("q", batch_size=None), InvalidOptionError, "fetch-batch-none"),  # type: ignore[arg-type]
    _case(lambda b, j: b.fetch("q", priority="yes"), InvalidOptionError, "fetch-priority-str"),  # type: ignore[arg-type]
    _case(lambda b, j: b.fetch("q", priority=None), InvalidOptionError, "fetch-priority-none"),  # type: ignore[arg-type]
    _case(lambda b, j: b.fetch("q", include_metadata="no"), InvalidOptionError, "fetch-metadata-str"),  # type: ignore[arg-type]
    _case(lambda b, j: b.fetch("q", ignore_start_after=1), InvalidOptionError, "fetch-ignore-int"),  # type: ignore[arg-type]
    # ---- get_job_by_id
    _case(lambda b, j: b.get_job_by_id("q", "x"), InvalidOptionError, "get_job_by_id-text"),
    _case(lambda b, j: b.get_job_by_id("q", None), InvalidOptionError, "get_job_by_id-none"),  # type: ignore[arg-type]
    _case(lambda b, j: b.get_job_by_id("q", 5), InvalidOptionError, "get_job_by_id-int"),  # type: ignore[arg-type]
    _case(lambda b, j: b.get_job_by_id("q", [j.created]), InvalidOptionError, "get_job_by_id-list"),  # type: ignore[arg-type]
    _case(lambda b, j: b.get_job_by_id("q", j.created, "yes"), InvalidOptionError, "get_job_by_id-archive-str"),  # type: ignore[arg-type]
    _case(lambda b, j: b.get_job_by_id("q", j.created, 1), InvalidOptionError, "get_job_by_id-archive-int"),  # type: ignore[arg-type]
    # ---- complete / fail output
    _case(lambda b, j: b.complete("q", j.active, {1, 2}), PayloadError, "complete-output-set"),
    _case(lambda b, j: b.complete("q", j.active, NAN), PayloadError, "complete-output-nan"),
    _case(lambda b, j: b.complete("q", j.active, {"x": INF}), PayloadError, "complete-output-inf"),
    _case(lambda b, j: b.complete("q", j.active, object()), PayloadError, "complete-output-object"),
    _case(lambda b, j: b.complete("q", j.active, b"bytes"), PayloadError, "complete-output-bytes"),
    _case(lambda b, j: b.fail("q", j.active, {1}), PayloadError, "fail-output-set"),
    _case(lambda b, j: b.fail("q", j.active, [NAN]), PayloadError, "fail-output-nan"),
    _case(lambda b, j: b.complete("q", j.active, {"e": "\x00"}), PayloadError, "complete-output-nul"),
    _case(lambda b, j: b.fail("q", j.active, ValueError("a\x00b")), PayloadError, "fail-error-nul"),
    # ---- publish / subscribe / unsubscribe
    _case(lambda b, j: b.publish("", None), InvalidOptionError, "publish-event-empty"),
    _case(lambda b, j: b.publish(5, None), InvalidOptionError, "publish-event-int"),  # type: ignore[arg-type]
    _case(lambda b, j: b.publish(None, None), InvalidOptionError, "publish-event-none"),  # type: ignore[arg-type]
    _case(lambda b, j: b.publish("ev\x00", None), InvalidOptionError, "publish-event-nul"),
    _case(lambda b, j: b.publish("event", {1}), PayloadError, "publish-data-set"),
    _case(lambda b, j: b.publish("nobody", {1}), PayloadError, "publish-data-set-no-subscriber"),
    _case(lambda b, j: b.publish("event", None, foo=1), InvalidOptionError, "publish-unknown-option"),
    _case(lambda b, j: b.publish("event", None, priority="x"), InvalidOptionError, "publish-priority"),
    _case(lambda b, j: b.publish("event", None, start_after=NAIVE), InvalidOptionError, "publish-start_after-naive"),
    _case(lambda b, j: b.publish("event", None, dead_letter="missing"), DeadLetterQueueNotFoundError, "publish-dlq"),
    _case(lambda b, j: b.publish("event", {"x": "\x00"}), PayloadError, "publish-data-nul"),
    _case(lambda b, j: b.subscribe("", "q"), InvalidOptionError, "subscribe-event-empty"),
    _case(lambda b, j: b.subscribe(5, "q"), InvalidOptionError, "subscribe-event-int"),  # type: ignore[arg-type]
    _case(lambda b, j: b.subscribe("ev\x00", "q"), InvalidOptionError, "subscribe-event-nul"),
    _case(lambda b, j: b.subscribe("event", "missing"), QueueNotFoundError, "subscribe-queue-missing"),
    _case(lambda b, j: b.subscribe("ev\ud800", "q"), InvalidOptionError, "subscribe-event-surrogate"),
    _case(lambda b, j: b.unsubscribe("", "q"), InvalidOptionError, "unsubscribe-event-empty"),
    _case(lambda b, j: b.unsubscribe(5, "q"), InvalidOptionError, "unsubscribe-event-int"),  # type: ignore[arg-type]
    # ---- schedule
    _case(lambda b, j: b.schedule("q", 5), InvalidCronError, "schedule-cron-int"),  # type: ignore[arg-type]
    _case(lambda b, j: b.schedule("q", None), InvalidCronError, "schedule-cron-none"),  # type: ignore[arg-type]
    _case(lambda b, j: b.schedule("q", ""), InvalidCronError, "schedule-cron-empty"),
    _case(lambda b, j: b.schedule("q", "* * *"), InvalidCronError, "schedule-cron-3-fields"),
    _case(lambda b, j: b.schedule("q", "61 * * * *"), InvalidCronError, "schedule-cron-61"),
    _case(lambda b, j: b.schedule("q", "* * * * *\x00"), InvalidCronError, "schedule-cron-nul"),
    _case(lambda b, j: b.schedule("q", "0 * * * *", tz=5), InvalidTimezoneError, "schedule-tz-int"),  # type: ignore[arg-type]
    _case(lambda b, j: b.schedule("q", "0 * * * *", tz=""), InvalidTimezoneError, "schedule-tz-empty"),
    _case(lambda b, j: b.schedule("q", "0 * * * *", tz="Nowhere/City"), InvalidTimezoneError, "schedule-tz-unknown"),
    _case(lambda b, j: b.schedule("q", "0 * * * *", foo=1), InvalidOptionError, "schedule-unknown-option"),
    _case(lambda b, j: b.schedule("q", "0 * * * *", priority="x"), InvalidOptionError, "schedule-priority"),
    _case(lambda b, j: b.schedule("q", "0 * * * *", start_after=NAIVE), InvalidOptionError, "schedule-start_after"),
    _case(lambda b, j: b.schedule("q", "0 * * * *", {1}), PayloadError, "schedule-data-set"),
    _case(lambda b, j: b.schedule("q", "0 * * * *", NAN), PayloadError, "schedule-data-nan"),
    _case(lambda b, j: b.schedule("missing", "0 * * * *"), QueueNotFoundError, "schedule-queue-missing"),
    _case(lambda b, j: b.schedule("q", "0 * * * *", {"x": "\x00"}), PayloadError, "schedule-data-nul"),
    _case(
        lambda b, j: b.schedule("q", "0 * * * *", singleton_key="\x00"),
        InvalidOptionError,
        "schedule-singleton_key-nul",
    ),
]


_VERSION_24_ONLY = {
    # pg-boss 10's spellings, which version 46 refuses as UnsupportedOperationError (tests/test_boss46_bad_input.py)
    "create_queue-retention-0",
    "create_queue-retention-frac",
    "update_queue-retention",
    "send-keep_until",
    "send-retention-huge",
    "send-singleton-minutes-frac",
    "send-singleton-hours-huge",
    "send-expire-24h",
    "send-expire-1440min",
    "send-expire-0h",
    "send-retention-0",
    "send-retention-str",
    "send-retention-inf",
    "insert-send-only-field",
    "insert-keep_until-naive",
    "insert-keep_until-str",
    # version 24's limits: expiry below 24 hours (46 takes 86,400 s), a throttling slot within the archive delay
    # (46 has no archive)
    "create_queue-expire-24h",
    "send-singleton-over-archive",
    "send_throttled-seconds-huge",
    "insert-singleton",
    # an operation of version 24 alone
    "get_queue_size-before-str",
    "get_queue_size-before-int",
    "get_queue_size-before-none",
    # version 46 refuses an update without settings before it looks for the queue, as pg-boss 12 does
    "update_queue-missing-no-options",
}
"""The cases of rules of schema version 24 alone."""


@pytest.mark.parametrize(("call", "error"), [case for case in _CASES if case.id in _VERSION_24_ONLY])
def test_bad_input_of_version_24_is_refused_before_anything_is_written(
    boss: Boss,
    make_boss: Callable[..., Any],
    session: Session,
    installed_schema: str,
    jobs: Jobs,
    call: Call | Construct,
    error: type[SqlaBossError],
) -> None:
    if isinstance(call, Construct):
        call = call.on(make_boss)
    _refused(boss, session, installed_schema, jobs, call, error)


@BOTH_VERSIONS
@pytest.mark.parametrize(("call", "error"), [case for case in _CASES if case.id not in _VERSION_24_ONLY])
def test_bad_input_is_refused_before_anything_is_written(
    boss: Boss,
    make_boss: Callable[..., Any],
    session: Session,
    installed_schema: str,
    jobs: Jobs,
    call: Call | Construct,
    error: type[SqlaBossError],
) -> None:
    if isinstance(call, Construct):
        call = call.on(make_boss)
    _refused(boss, session, installed_schema, jobs, call, error)


# ------------------------------------------------------------------------------------------- job ids

_ID_CALLS: dict[str, Callable[[Boss, Any, Any], Any]] = {
    "complete": lambda boss, ids, jobs: boss.complete("q", ids),
    "fail": lambda boss, ids, jobs: boss.fail("q", ids),
    "cancel": lambda boss, ids, jobs: boss.cancel("q", ids),
    "resume": lambda boss, ids, jobs: boss.resume("q", ids),
    "retry": lambda boss, ids, jobs: boss.retry("q", ids),
    "delete_job": lambda boss, ids, jobs: boss.delete_job("q", ids),
}

# A valid id of the right state comes first in the mixed lists: it must not change either.
_VALID_FOR = {"complete": "active", "fail": "active", "cancel": "created", "resume": "cancelled", "retry": "failed"}


@BOTH_VERSIONS
@pytest.mark.parametrize(
    "bad",
    [[], set(), None, "not-a-uuid", 123, b"0" * 16, {"id": 1}, "mixed", "nested"],
    ids=repr,
)
@pytest.mark.parametrize("method", list(_ID_CALLS))
def test_bad_job_ids_are_refused(
    boss: Boss, session: Session, installed_schema: str, jobs: Jobs, method: str, bad: Any
) -> None:
    valid = getattr(jobs, _VALID_FOR.get(method, "created"))
    if bad == "mixed":
        bad = [valid, "not-a-uuid"]
    elif bad == "nested":
        bad = [[valid]]
    call = _ID_CALLS[method]
    _refused(boss, session, installed_schema, jobs, lambda b, j: call(b, bad, j), InvalidOptionError)


# ------------------------------------------------------------------------------ nothing-written proofs


@BOTH_VERSIONS
def test_the_snapshot_sees_a_write(
    boss: Boss, session: Session, installed_schema: str, jobs: Jobs, schema_version: int
) -> None:
    """The digest the cases compare really changes when anything is written."""
    before = snapshot(session, installed_schema)
    boss.update_queue("q", retry_limit=3)
    assert snapshot(session, installed_schema)["queue"] != before["queue"]
    boss.create_queue("fresh", **({"partition": True} if schema_version == 46 else {}))
    assert snapshot(session, installed_schema)["tables"] != before["tables"]
    boss.cancel("q", jobs.created)
    assert snapshot(session, installed_schema)["job"] != before["job"]


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth - 1):
        value = [value] if level % 2 else {"down": value}
    return [value]


@BOTH_VERSIONS
def test_json_deeper_than_the_limit_is_refused_on_every_python(boss: Boss, session: Session) -> None:
    """One depth rule, whatever the Python: 3.11's json gives up near 1,000 levels, 3.13's goes far deeper."""
    boss.create_queue("deep")
    job_id = boss.send("deep", nested(MAX_JSON_DEPTH))
    assert boss.get_job_by_id("deep", job_id).data == nested(MAX_JSON_DEPTH)
    for data in (nested(MAX_JSON_DEPTH + 1), nested(5000)):
        with pytest.raises(PayloadError, match=f"nested more than {MAX_JSON_DEPTH} levels deep"):
            boss.send("deep", data)
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(PayloadError, match="nested more than"):
        boss.send("deep", {"loop": looped})
    assert_usable(boss, "deep")
