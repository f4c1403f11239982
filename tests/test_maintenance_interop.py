"""sqla_boss's maintenance (``sqla_boss.maintenance.Maintenance``) writes the rows pg-boss 10.4.2's writes, and takes
turns with it (PGBOSS10.md §8, trap 25).

pg-boss runs through tests/pgboss_node/driver.mjs (tests/pgboss.py), each run a short Node process.

1. **Expire.** Twin schemas get the same queues and jobs from sqla_boss, and then the same clock readings by SQL
   (every ``created_on`` / ``start_after`` / ``started_on`` / ``completed_on`` / ``keep_until`` set to fixed
   instants around one base time), so the twins are equal in every column but ``id`` before maintenance.
   ``Maintenance.expire()`` runs on one, pg-boss's ``expire()`` on the other; afterwards the rows still agree in
   every column but ``id``. The readings maintenance takes itself (``now()``, ``now() + retry_delay``) are
   checked to lie within the call and compared as such (:class:`Window`).
2. **Archive and drop**, the same way: ``archive()`` against pg-boss's ``archive()`` with the same
   archiveCompletedAfterSeconds / archiveFailedAfterSeconds, then ``archived_on`` moved back by SQL and
   ``drop()`` against pg-boss's ``drop()`` with the same deleteAfterSeconds.
3. **count_states** equals pg-boss's ``countStates()`` on the same schema, empty and with jobs in every state.
4. **Claims.** With pg-boss supervising the schema (``maintenanceIntervalSeconds``), a claim of ours makes its
   next tick skip, and its claim makes ours fail until the interval has passed.
5. **The schema lock.** Our maintenance waits while another session holds pg-boss's advisory lock on the
   schema, and pg-boss's waits while ours holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from pgboss import (  # noqa: F401  (the fixtures pgboss and pgboss_install)
    PgBoss,
    call,
    pgboss_fixture,
    pgboss_install_fixture,
    start,
)
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session
from support import drop_schema, unique_name

from sqla_boss import Boss, migrations
from sqla_boss.identifiers import quote_identifier
from sqla_boss.maintenance import Maintenance
from sqla_boss.schema import advisory_lock_key, lock_schema, schema_translate_map

pytestmark = pytest.mark.pgboss

T = TypeVar("T")

QUIET = {"supervise": False, "schedule": False}
"""pg-boss without its maintenance timer and timekeeper: nothing runs but the calls we make."""

STOP = call("stop", {"graceful": False})

EXPIRED_OUTPUT = {"value": {"message": "job failed by timeout in active state"}}

JOB_COLUMNS = (
    "id",
    "name",
    "priority",
    "data",
    "state",
    "retry_limit",
    "retry_count",
    "retry_delay",
    "retry_backoff",
    "start_after",
    "started_on",
    "singleton_key",
    "singleton_on",
    "expire_in",
    "created_on",
    "completed_on",
    "keep_until",
    "dead_letter",
    "policy",
    "output",
)
"""Every column of ``job`` (``archive`` adds ``archived_on``)."""

CLOCKS = ("start_after", "started_on", "created_on", "completed_on", "keep_until", "archived_on")
"""The timestamptz columns: set to fixed instants before maintenance, read against the call's window after."""

HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)

PRESETS = {
    "created_on": -3 * HOUR,
    "start_after": -3 * HOUR,
    "started_on": -2 * HOUR,
    "completed_on": -5 * MINUTE,
    "keep_until": 14 * DAY,
}
"""Every job's clock readings, as offsets from the base time, unless its label overrides them (NULLs stay NULL)."""


def deadline_poll(condition: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.02) -> T:
    """Call ``condition`` until it returns something other than ``None``/``False``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


# ------------------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def boss_on(engine: Engine, schema: str) -> Iterator[Boss]:
    """A ``Boss`` on a session of its own, committed at the end of the block (so pg-boss sees the rows)."""
    translated = engine.execution_options(schema_translate_map=schema_translate_map(schema))
    with Session(translated) as session, session.begin():
        yield Boss(session, schema=schema)


def db_now(engine: Engine) -> dt.datetime:
    with engine.connect() as connection:
        value = connection.execute(select(func.now())).scalar_one()
    assert isinstance(value, dt.datetime)
    return value


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), params)


def rows_of(engine: Engine, schema: str, table: str) -> list[dict[str, Any]]:
    """Every row of ``job`` or ``archive``, the state as text."""
    columns = ", ".join("state::text AS state" if name == "state" else name for name in JOB_COLUMNS)
    if table == "archive":
        columns += ", archived_on"
    statement = text(f"SELECT {columns} FROM {quote_identifier(schema)}.{table} ORDER BY name, data::text")
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(statement).mappings()]


def maintained_on(engine: Engine, schema: str) -> dt.datetime | None:
    with engine.connect() as connection:
        value = connection.execute(text(f"SELECT maintained_on FROM {quote_identifier(schema)}.version")).scalar()
    assert value is None or isinstance(value, dt.datetime)
    return value


def set_clocks(
    engine: Engine, schema: str, base: dt.datetime, overrides: Mapping[str, Mapping[str, dt.timedelta]]
) -> None:
    """Give every job of ``schema`` the clock readings :data:`PRESETS` (plus its label's ``overrides``) name."""
    quoted = quote_identifier(schema)
    with engine.begin() as connection:
        labels = connection.execute(text(f"SELECT DISTINCT data->>'label' FROM {quoted}.job")).scalars().all()
        for label in labels:
            offsets = {**PRESETS, **overrides.get(label, {})}
            connection.execute(
                text(
                    f"UPDATE {quoted}.job SET created_on = :created_on, start_after = :start_after, "
                    "started_on = CASE WHEN started_on IS NULL THEN NULL ELSE CAST(:started_on AS timestamptz) END, "
                    "completed_on = CASE WHEN completed_on IS NULL THEN NULL "
                    "ELSE CAST(:completed_on AS timestamptz) END, "
                    "keep_until = :keep_until WHERE data->>'label' = :label"
                ),
                {"label": label, **{column: base + offset for column, offset in offsets.items()}},
            )


@dataclass(frozen=True)
class Window:
    """The database clock just before and just after one maintenance call."""

    start: dt.datetime
    end: dt.datetime

    def reading(self, value: dt.datetime | None, delay: int = 0) -> Any:
        """``"now"`` for a ``now()`` the call took, ``"now + N s"`` for ``now() + retry_delay``; else the value.

        Every value set before the call lies hours or days away from it, so it is kept as it is (and is the
        same instant on both twins).
        """
        if value is None:
            return None
        if self.start <= value <= self.end:
            return "now"
        if delay and self.start <= value - dt.timedelta(seconds=delay) <= self.end:
            return f"now + {delay} s"
        return value


NO_WINDOW = Window(dt.datetime.max.replace(tzinfo=dt.timezone.utc), dt.datetime.max.replace(tzinfo=dt.timezone.utc))


def normalised(row: Mapping[str, Any], window: Window) -> dict[str, Any]:
    """``row`` without its id, its clock readings as :meth:`Window.reading` gives them."""
    result = {key: value for key, value in row.items() if key != "id"}
    for column in CLOCKS:
        if column in result:
            result[column] = window.reading(result[column], row["retry_delay"] if column == "start_after" else 0)
    return result


def keyed(rows: list[dict[str, Any]], window: Window) -> dict[tuple[str, str], dict[str, Any]]:
    """Normalised rows by (queue, label); every job has a label of its own per queue."""
    result: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["name"], row["data"]["label"])
        assert key not in result, f"two rows for {key}"
        result[key] = normalised(row, window)
    return result


@dataclass(frozen=True)
class Twins:
    """Twin schemas: ``py`` maintained by sqla_boss, ``js`` by pg-boss."""

    py: str
    js: str


@pytest.fixture(scope="module")
def new_twins(engine: Engine, pgboss: PgBoss) -> Iterator[Callable[[str], Twins]]:
    """Makes twin schemas, ``py`` installed by our migrations, ``js`` by pg-boss; drops them all at the end."""
    made: list[str] = []

    def make(prefix: str) -> Twins:
        twins = Twins(unique_name(f"{prefix}_py"), unique_name(f"{prefix}_js"))
        made.extend((twins.py, twins.js))
        migrations.upgrade(engine, schema=twins.py)
        pgboss.run(twins.js, [start(**QUIET), STOP])
        return twins

    yield make
    for schema in made:
        drop_schema(engine, schema)


def timed(engine: Engine, action: Callable[[], T]) -> tuple[T, Window]:
    before = db_now(engine)
    result = action()
    return result, Window(before, db_now(engine))


# ============================================================================================ 1. expire

EXPIRE_OVERRIDES = {
    # Started 10 s before the base, 15 minutes to run: not expired.
    "fresh": {"started_on": dt.timedelta(seconds=-10)},
    # Waits in retry for an hour: stately j2's retry slot is taken.
    "stately-j1": {"start_after": HOUR},
}


def make_expire_jobs(boss: Boss) -> None:
    """Active jobs past (and not past) their expire_in, on every path expiry takes (§8.1, §6.2)."""
    boss.create_queue("dlq")
    boss.create_queue("q_fail", retry_limit=0, dead_letter="dlq", expire_in_seconds=60)
    boss.create_queue("q_retry", retry_limit=1, retry_delay=5, dead_letter="dlq", expire_in_seconds=60)
    boss.create_queue("q_other")
    boss.create_queue("q_stately", policy="stately", retry_limit=1, dead_letter="dlq", expire_in_seconds=60)

    boss.send("q_fail", {"label": "fail"})
    boss.send("q_retry", {"label": "retry"})
    boss.send("q_other", {"label": "retry-nodelay"}, expire_in_seconds=60)
    boss.send("q_other", {"label": "fresh"})
    for name in ("q_fail", "q_retry", "q_other", "q_other"):
        assert len(boss.fetch(name)) == 1
    # Second run of a retry_limit 1 job: retry_count 1, so expiry fails it for good.
    final = boss.send("q_retry", {"label": "retry-final"}, retry_delay=0)
    [job] = boss.fetch("q_retry")
    assert job.id == final
    assert boss.fail("q_retry", final, "first run") == 1
    [job] = boss.fetch("q_retry")
    assert (job.id, job.retry_count) == (final, 1)
    # Queued, never started: never expires, however old.
    boss.send("q_other", {"label": "queued-old"})
    # Stately: j1 waits in retry with key k, j2 of key k runs and expires; its retry slot is taken (trap 8).
    first = boss.send("q_stately", {"label": "stately-j1"}, singleton_key="k", retry_delay=3600)
    [job] = boss.fetch("q_stately")
    assert job.id == first
    assert boss.fail("q_stately", first, "j1") == 1
    second = boss.send("q_stately", {"label": "stately-j2"}, singleton_key="k")
    [job] = boss.fetch("q_stately")
    assert job.id == second


@dataclass
class ExpireRun:
    before: dict[str, dict[tuple[str, str], dict[str, Any]]]
    after: dict[str, dict[tuple[str, str], dict[str, Any]]]
    expired: int
    """What ``Maintenance.expire()`` returned."""


@pytest.fixture(scope="module")
def expired(engine: Engine, pgboss: PgBoss, new_twins: Callable[[str], Twins]) -> ExpireRun:
    twins = new_twins("t_mexp")
    base = db_now(engine).replace(microsecond=0)
    for schema in (twins.py, twins.js):
        with boss_on(engine, schema) as boss:
            make_expire_jobs(boss)
        set_clocks(engine, schema, base, EXPIRE_OVERRIDES)
    before = {side: keyed(rows_of(engine, schema, "job"), NO_WINDOW) for side, schema in vars(twins).items()}

    count, py_window = timed(engine, Maintenance(engine, twins.py).expire)
    _, js_window = timed(engine, lambda: pgboss.run(twins.js, [start(**QUIET), call("expire"), STOP]))
    after = {
        "py": keyed(rows_of(engine, twins.py, "job"), py_window),
        "js": keyed(rows_of(engine, twins.js, "job"), js_window),
    }
    return ExpireRun(before, after, count)


def test_expire_twins_start_out_equal(expired: ExpireRun) -> None:
    assert len(expired.before["py"]) == 8
    assert expired.before["py"] == expired.before["js"]


def test_expire_writes_the_rows_pgboss_writes(expired: ExpireRun) -> None:
    assert expired.after["py"] == expired.after["js"]


SUMMARY = ("state", "retry_count", "start_after", "completed_on", "output")


def summary(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[column] for column in SUMMARY)


def test_expire_fails_or_retries_by_the_retry_rules(expired: ExpireRun) -> None:
    rows = expired.after["py"]
    before = expired.before["py"]
    unchanged = [("q_other", "fresh"), ("q_other", "queued-old"), ("q_stately", "stately-j1")]
    preset_start = {key: before[key]["start_after"] for key in before}
    assert {key: summary(row) for key, row in rows.items()} == {
        # retryLimit 0: failed, start_after kept, plus a dead-letter copy.
        ("q_fail", "fail"): ("failed", 0, preset_start["q_fail", "fail"], "now", EXPIRED_OUTPUT),
        # retryLimit 1: retry after the queue's 5 s delay.
        ("q_retry", "retry"): ("retry", 0, "now + 5 s", None, EXPIRED_OUTPUT),
        ("q_other", "retry-nodelay"): ("retry", 0, "now", None, EXPIRED_OUTPUT),
        ("q_retry", "retry-final"): ("failed", 1, preset_start["q_retry", "retry-final"], "now", EXPIRED_OUTPUT),
        # The stately retry slot of key k is taken: failed for good, start_after kept.
        ("q_stately", "stately-j2"): ("failed", 0, preset_start["q_stately", "stately-j2"], "now", EXPIRED_OUTPUT),
        **{key: summary(before[key]) for key in unchanged},
        ("dlq", "fail"): ("created", 0, "now", None, EXPIRED_OUTPUT),
        ("dlq", "retry-final"): ("created", 0, "now", None, EXPIRED_OUTPUT),
        ("dlq", "stately-j2"): ("created", 0, "now", None, EXPIRED_OUTPUT),
    }
    for key in unchanged:
        assert rows[key] == before[key]
    assert expired.expired == 5


def test_expired_jobs_dead_letter_copies(expired: ExpireRun) -> None:
    rows = expired.after["py"]
    for label in ("fail", "retry-final", "stately-j2"):
        [source] = [row for (name, found), row in rows.items() if found == label and name != "dlq"]
        copy = rows["dlq", label]
        # §6.3: keep_until stretched by its source's (keep_until - start_after), both preset instants here.
        assert copy["keep_until"] == source["keep_until"] + (source["keep_until"] - source["start_after"])
        assert (copy["retry_limit"], copy["policy"], copy["dead_letter"], copy["expire_in"]) == (
            source["retry_limit"],
            None,
            None,
            dt.timedelta(minutes=15),
        )


# ===================================================================================== 2. archive and drop

ARCHIVE_SETTINGS = {
    "archive_completed_after_seconds": 3600,
    "archive_failed_after_seconds": 3 * 3600,
    "delete_after_seconds": 86400,
}
NODE_ARCHIVE_SETTINGS = {
    "archiveCompletedAfterSeconds": 3600,
    "archiveFailedAfterSeconds": 3 * 3600,
    "deleteAfterSeconds": 86400,
}

ARCHIVE_OVERRIDES = {
    "completed-old": {"completed_on": -2 * HOUR},
    "completed-recent": {"completed_on": -10 * MINUTE},
    "cancelled-old": {"completed_on": -2 * HOUR},
    "failed-old": {"completed_on": -4 * HOUR},
    # Older than the completed delay, younger than the failed one.
    "failed-mid": {"completed_on": -2 * HOUR},
    "retried-old": {"completed_on": -2 * HOUR},
    "created-expired": {"keep_until": -MINUTE},
    "retry-expired": {"keep_until": -MINUTE},
    "active-expired": {"keep_until": -MINUTE},
    "archived-twice": {"completed_on": -2 * HOUR},
}

ARCHIVED = {
    ("a", "completed-old"),
    ("a", "cancelled-old"),
    ("b", "failed-old"),
    ("b", "retried-old"),
    ("a", "created-expired"),
    ("c", "retry-expired"),
}
"""What archive() moves (``("a", "archived-twice")`` too, but its archive row is the old one)."""

KEPT = {("a", "completed-recent"), ("b", "failed-mid"), ("a", "created-kept"), ("a", "active-expired")}

ARCHIVED_ON = {"completed-old": -2 * DAY, "cancelled-old": -2 * DAY, "failed-old": -23 * HOUR}
"""``archived_on`` moved back before drop(): a day is the delete delay, so the first two go."""

PRE_ARCHIVED = {"value": "archived before"}


def make_archive_jobs(boss: Boss) -> None:
    """Finished jobs of every kind, queued jobs past their keep_until, and controls (§8.2)."""
    boss.create_queue("a")
    boss.create_queue("b", retry_limit=0)
    boss.create_queue("c", retry_limit=1)
    for label in ("completed-old", "completed-recent", "archived-twice"):
        assert boss.send("a", {"label": label}) is not None
        [job] = boss.fetch("a")
        assert boss.complete("a", job.id, {"done": label}) == 1
    cancelled = boss.send("a", {"label": "cancelled-old"})
    assert boss.cancel("a", cancelled) == 1
    boss.send("a", {"label": "active-expired"})
    assert len(boss.fetch("a")) == 1
    boss.send("a", {"label": "created-expired"})
    boss.send("a", {"label": "created-kept"})
    failed = {label: boss.send("b", {"label": label}) for label in ("failed-old", "failed-mid", "retried-old")}
    for label, job_id in failed.items():
        assert boss.fail("b", job_id, label) == 1
    # A failed job given one more try keeps its completed_on (trap 12).
    assert boss.retry("b", failed["retried-old"]) == 1
    boss.send("c", {"label": "retry-expired"})
    [job] = boss.fetch("c")
    assert boss.fail("c", job.id, "once") == 1


def pre_archive(engine: Engine, schema: str, base: dt.datetime) -> None:
    """Archive a copy of "archived-twice" already, with another output: archive() then loses the job."""
    quoted = quote_identifier(schema)
    columns = ", ".join(JOB_COLUMNS)
    execute(
        engine,
        f"INSERT INTO {quoted}.archive ({columns}, archived_on) SELECT {columns}, :archived_on FROM {quoted}.job "
        "WHERE data->>'label' = 'archived-twice'",
        archived_on=base - 30 * MINUTE,
    )
    execute(
        engine,
        f"UPDATE {quoted}.archive SET output = CAST(:output AS jsonb)",
        output=json.dumps(PRE_ARCHIVED),
    )


def move_archived_on(engine: Engine, schema: str, base: dt.datetime) -> None:
    for label, offset in ARCHIVED_ON.items():
        execute(
            engine,
            f"UPDATE {quote_identifier(schema)}.archive SET archived_on = :at WHERE data->>'label' = :label",
            at=base + offset,
            label=label,
        )


@dataclass
class ArchiveRun:
    before: dict[str, dict[tuple[str, str], dict[str, Any]]]
    archived: dict[str, dict[str, dict[tuple[str, str], dict[str, Any]]]]
    """``archived[side]["job" | "archive"]`` after archive()."""
    dropped: dict[str, dict[tuple[str, str], dict[str, Any]]]
    """The archive after drop(), by side."""
    returned: dict[str, int]
    """What our archive() and drop() returned."""
    node_counts: dict[str, int]
    """How many rows pg-boss's archive() added and its drop() removed."""


def archive_count(engine: Engine, schema: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {quote_identifier(schema)}.archive")).scalar_one())


@pytest.fixture(scope="module")
def archived(engine: Engine, pgboss: PgBoss, new_twins: Callable[[str], Twins]) -> ArchiveRun:
    twins = new_twins("t_marc")
    base = db_now(engine).replace(microsecond=0)
    for schema in (twins.py, twins.js):
        with boss_on(engine, schema) as boss:
            make_archive_jobs(boss)
        set_clocks(engine, schema, base, ARCHIVE_OVERRIDES)
        pre_archive(engine, schema, base)
    before = {side: keyed(rows_of(engine, schema, "job"), NO_WINDOW) for side, schema in vars(twins).items()}
    ours = Maintenance(engine, twins.py, **ARCHIVE_SETTINGS)
    node_start = start(**QUIET, **NODE_ARCHIVE_SETTINGS)

    archived_count, py_window = timed(engine, ours.archive)
    node_before = archive_count(engine, twins.js)
    _, js_window = timed(engine, lambda: pgboss.run(twins.js, [node_start, call("archive"), STOP]))
    node_archived = archive_count(engine, twins.js) - node_before
    archived = {
        side: {table: keyed(rows_of(engine, schema, table), window) for table in ("job", "archive")}
        for side, schema, window in (("py", twins.py, py_window), ("js", twins.js, js_window))
    }

    for schema in (twins.py, twins.js):
        move_archived_on(engine, schema, base)
    dropped_count, py_drop_window = timed(engine, ours.drop)
    node_before = archive_count(engine, twins.js)
    _, js_drop_window = timed(engine, lambda: pgboss.run(twins.js, [node_start, call("drop"), STOP]))
    node_dropped = node_before - archive_count(engine, twins.js)
    # archived_on of the rows archive() moved: "now" of the archive call, read across both calls.
    dropped = {
        "py": keyed(rows_of(engine, twins.py, "archive"), Window(py_window.start, py_drop_window.end)),
        "js": keyed(rows_of(engine, twins.js, "archive"), Window(js_window.start, js_drop_window.end)),
    }
    return ArchiveRun(
        before,
        archived,
        dropped,
        {"archive": archived_count, "drop": dropped_count},
        {"archive": node_archived, "drop": node_dropped},
    )


def test_archive_twins_start_out_equal(archived: ArchiveRun) -> None:
    assert len(archived.before["py"]) == 11
    assert archived.before["py"] == archived.before["js"]


@pytest.mark.parametrize("table", ["job", "archive"])
def test_archive_leaves_the_rows_pgboss_leaves(archived: ArchiveRun, table: str) -> None:
    assert archived.archived["py"][table] == archived.archived["js"][table]


def test_archive_moves_what_pgboss_moves(archived: ArchiveRun) -> None:
    jobs, archive = archived.archived["py"]["job"], archived.archived["py"]["archive"]
    before = archived.before["py"]
    assert set(jobs) == KEPT
    assert set(archive) == {*ARCHIVED, ("a", "archived-twice")}
    for key in KEPT:
        assert jobs[key] == before[key]
    for key in ARCHIVED:
        # Moved as it was, in its state (retry_count, output... untouched), archived_on = the call's now().
        assert archive[key] == {**before[key], "archived_on": "now"}
    assert {key: archive[key]["state"] for key in ARCHIVED} == {
        ("a", "completed-old"): "completed",
        ("a", "cancelled-old"): "cancelled",
        ("b", "failed-old"): "failed",
        ("b", "retried-old"): "retry",
        ("a", "created-expired"): "created",
        ("c", "retry-expired"): "retry",
    }
    # Already archived under its (name, id): the job is gone and the archive keeps the old copy.
    twice = archive["a", "archived-twice"]
    assert twice["output"] == PRE_ARCHIVED
    # (created_on is the base - 3 h, the old copy's archived_on the base - 30 min)
    assert twice["archived_on"] - before["a", "archived-twice"]["created_on"] == 3 * HOUR - 30 * MINUTE
    assert archived.returned["archive"] == archived.node_counts["archive"] == len(ARCHIVED)


def test_drop_deletes_what_pgboss_deletes(archived: ArchiveRun) -> None:
    assert archived.dropped["py"] == archived.dropped["js"]
    assert set(archived.dropped["py"]) == {*ARCHIVED, ("a", "archived-twice")} - {
        ("a", "completed-old"),
        ("a", "cancelled-old"),
    }
    assert archived.returned["drop"] == archived.node_counts["drop"] == 2


# ======================================================================================== 3. count_states


def make_counted_jobs(engine: Engine, schema: str) -> None:
    """Jobs in every state over three queues, a queue with none, and an archived job (never counted)."""
    with boss_on(engine, schema) as boss:
        for name in ("a", "b", "c", "d"):
            boss.create_queue(name, retry_limit=0)
        for label in ("a1", "a2", "a3", "a4"):
            boss.send("a", {"label": label})
        [active] = boss.fetch("a")
        [done] = boss.fetch("a")
        assert boss.complete("a", done.id) == 1
        assert active.id != done.id
        for label in ("b1", "b2", "b3", "b4"):
            boss.send("b", {"label": label}, retry_limit=1 if label == "b1" else 0)
        b = {job.data["label"]: job.id for job in boss.fetch("b", batch_size=4)}
        assert boss.fail("b", b["b1"]) == 1  # to retry
        assert boss.cancel("b", b["b2"]) == 1
        assert boss.fail("b", b["b3"]) == 1  # to failed; b4 stays active
        for label in ("c1", "c2"):
            boss.send("c", {"label": label})
    quoted = quote_identifier(schema)
    columns = ", ".join(JOB_COLUMNS)
    execute(
        engine,
        f"WITH moved AS (DELETE FROM {quoted}.job WHERE data->>'label' = 'c2' RETURNING *) "
        f"INSERT INTO {quoted}.archive ({columns}) SELECT {columns} FROM moved",
    )


def test_count_states_equals_pgboss_count_states(engine: Engine, pgboss: PgBoss, schema_name: str) -> None:
    ours = Maintenance(engine, schema_name)
    [_, empty, _] = pgboss.run(schema_name, [start(**QUIET), call("countStates"), STOP])
    assert ours.count_states() == empty
    make_counted_jobs(engine, schema_name)
    [_, counted, _] = pgboss.run(schema_name, [start(**QUIET), call("countStates"), STOP])
    assert ours.count_states() == counted

    zero = {"created": 0, "retry": 0, "active": 0, "completed": 0, "cancelled": 0, "failed": 0}
    assert empty == {**zero, "all": 0, "queues": {}}
    assert counted == {
        **zero,
        "created": 3,
        "retry": 1,
        "active": 2,
        "completed": 1,
        "cancelled": 1,
        "failed": 1,
        "all": 9,
        "queues": {
            "a": {**zero, "created": 2, "active": 1, "completed": 1, "all": 4},
            "b": {**zero, "retry": 1, "active": 1, "cancelled": 1, "failed": 1, "all": 4},
            "c": {**zero, "created": 1, "all": 1},
        },
    }


# ============================================================================================= 4. claims

INTERVAL = 1
"""Seconds between maintenance claims, ours and pg-boss's (its minimum)."""


def test_claims_take_turns_with_a_supervising_pgboss(engine: Engine, pgboss: PgBoss, installed_schema: str) -> None:
    schema = installed_schema
    ours = Maintenance(engine, schema, maintenance_interval_seconds=INTERVAL)
    assert maintained_on(engine, schema) is None
    # pg-boss's timer starts at the end of start(), before it creates "ready"; it ticks every INTERVAL after
    # that. The driver stops it between its second and third tick.
    actions = [
        start(supervise=True, schedule=False, maintenanceIntervalSeconds=INTERVAL),
        call("createQueue", "ready"),
        call("sleep", 2400 * INTERVAL),
        STOP,
    ]
    quoted = quote_identifier(schema)

    def ready() -> bool:
        with engine.connect() as connection:
            found = connection.execute(text(f"SELECT count(*) FROM {quoted}.queue WHERE name = 'ready'")).scalar()
        return found == 1 or node.done()

    with ThreadPoolExecutor(max_workers=1) as pool:
        node: Future[dict[str, Any]] = pool.submit(pgboss.run_raw, schema, actions)
        deadline_poll(ready, timeout=30, what="pg-boss to start")
        assert not node.done(), node.result()
        # A deliberate offset, not a wait for something: claim half an interval into pg-boss's first one, so
        # its first tick finds our claim less than INTERVAL old (and skips) and its second more (and claims).
        time.sleep(INTERVAL / 2)
        assert ours.claim()
        ours_first = maintained_on(engine, schema)
        assert ours_first is not None

        def node_claimed() -> dt.datetime | None:
            value = maintained_on(engine, schema)
            return value if value != ours_first else None

        theirs = deadline_poll(node_claimed, timeout=3 * INTERVAL + 2, what="pg-boss's claim")
        # Its claim holds ours off: the interval has not passed since.
        assert not ours.claim()
        assert maintained_on(engine, schema) == theirs
        output = node.result(timeout=30)

    # pg-boss's first tick came within INTERVAL of our claim and skipped; its second claimed and maintained.
    assert INTERVAL < (theirs - ours_first).total_seconds() < 2 * INTERVAL
    assert [event["event"] for event in output["events"]] == ["maintenance"], output["events"]
    assert set(output["events"][0]["result"]) == {"ms"}

    # pg-boss is stopped; ours claims (and maintains) once more than INTERVAL has passed since its claim.
    result = deadline_poll(ours.maintain_if_due, timeout=INTERVAL + 5, what="our claim")
    assert (result.expired, result.archived, result.dropped) == (0, 0, 0)
    ours_second = maintained_on(engine, schema)
    assert ours_second is not None
    assert INTERVAL < (ours_second - theirs).total_seconds() < INTERVAL + 0.5


# ========================================================================================= 5. schema lock


def lock_key(engine: Engine, schema: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(advisory_lock_key(schema))).scalar_one())


def waiting_for_lock(engine: Engine, key: int) -> bool:
    """Whether some session waits for the advisory lock ``key`` (pg_locks shows a bigint key in two halves)."""
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND classid::text::bigint = :high AND objid::text::bigint = :low AND objsubid = 1"
            ),
            {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF},
        ).scalar()
    return bool(waiting)


def make_lock_jobs(engine: Engine, schema: str) -> None:
    """An expired active job, an old completed one, and an old archived one: one row for each command."""
    with boss_on(engine, schema) as boss:
        boss.create_queue("q")
        for label in ("expired", "completed", "archived"):
            boss.send("q", {"label": label})
        jobs = {job.data["label"]: job.id for job in boss.fetch("q", batch_size=3)}
        assert boss.complete("q", [jobs["completed"], jobs["archived"]]) == 2
    base = db_now(engine)
    set_clocks(engine, schema, base, {"completed": {"completed_on": -2 * DAY}, "archived": {"completed_on": -DAY}})
    quoted = quote_identifier(schema)
    columns = ", ".join(JOB_COLUMNS)
    execute(
        engine,
        f"WITH moved AS (DELETE FROM {quoted}.job WHERE data->>'label' = 'archived' RETURNING *) "
        f"INSERT INTO {quoted}.archive ({columns}, archived_on) SELECT {columns}, :at FROM moved",
        at=base - 30 * DAY,
    )


def table_digest(engine: Engine, schema: str) -> list[Any]:
    return [rows_of(engine, schema, "job"), rows_of(engine, schema, "archive")]


@pytest.mark.parametrize("command", ["expire", "archive", "drop", "maintain"])
def test_our_maintenance_waits_for_the_schema_lock(engine: Engine, installed_schema: str, command: str) -> None:
    schema = installed_schema
    make_lock_jobs(engine, schema)
    key = lock_key(engine, schema)
    ours = Maintenance(engine, schema)
    before = table_digest(engine, schema)
    holder = engine.execution_options(isolation_level="AUTOCOMMIT").connect()
    try:
        # Another instance's maintenance in progress: it holds the schema's advisory lock.
        holder.execute(select(func.pg_advisory_lock(key)))
        with ThreadPoolExecutor(max_workers=1) as pool:
            running = pool.submit(getattr(ours, command))
            deadline_poll(lambda: waiting_for_lock(engine, key) or running.done(), timeout=10, what="the lock wait")
            assert not running.done(), running.result()
            assert table_digest(engine, schema) == before
            holder.execute(select(func.pg_advisory_unlock(key)))
            result = running.result(timeout=10)
    finally:
        holder.execute(select(func.pg_advisory_unlock_all()))
        holder.close()
    expected = {"expire": 1, "archive": 1, "drop": 1}
    if command == "maintain":
        assert (result.expired, result.archived, result.dropped) == (1, 1, 1)
    else:
        assert result == expected[command]
    assert not waiting_for_lock(engine, key)


def test_pgboss_maintenance_waits_for_our_lock(engine: Engine, pgboss: PgBoss, installed_schema: str) -> None:
    schema = installed_schema
    make_lock_jobs(engine, schema)
    key = lock_key(engine, schema)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with engine.begin() as connection:
            # What each of our maintenance transactions takes first.
            lock_schema(connection, schema)
            node = pool.submit(pgboss.run, schema, [start(**QUIET), call("expire"), STOP])
            deadline_poll(lambda: waiting_for_lock(engine, key) or node.done(), timeout=30, what="pg-boss's lock wait")
            assert not node.done(), node.result()
            [expired] = [row for row in rows_of(engine, schema, "job") if row["data"]["label"] == "expired"]
            assert expired["state"] == "active"
        node.result(timeout=30)
    [expired] = [row for row in rows_of(engine, schema, "job") if row["data"]["label"] == "expired"]
    assert (expired["state"], expired["output"]) == ("retry", EXPIRED_OUTPUT)
