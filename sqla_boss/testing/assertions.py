"""Assertions on the jobs your code sent: :func:`assert_sent`, :func:`assert_not_sent`, :func:`sent_jobs`.

They read through the session you give them, so they see what your code sent in the test's own,
uncommitted transaction. They run a ``SELECT`` in that transaction, lock nothing and commit nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from unittest.mock import ANY

from sqlalchemy import func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from sqla_boss.binding import bind_session, schema_of
from sqla_boss.driver import Driver
from sqla_boss.errors import InvalidOptionError
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.models import Job, Queue
from sqla_boss.options.names import queue_name
from sqla_boss.schema import REPOSITORY_VERSIONS, schema_translate_map
from sqla_boss.v46.models import Job as Job46

LISTED = 20
"""How many jobs a failure message lists before it says how many more there are."""


def _filters(model: type[Any]) -> tuple[str, ...]:
    return tuple(column.key for column in model.__table__.columns if column.key not in ("name", "data"))


FILTERS = _filters(Job)
"""The ``Job`` columns of schema version 24 the assertions filter on by keyword (``name`` is the queue,
``data`` has its own argument)."""
FILTERS_46 = _filters(Job46)
"""The same on schema version 46 (pg-boss 12), whose jobs have other columns."""


def sent_jobs(session: Session, queue: str, data: Any = ANY, *, schema: str | None = None, **filters: Any) -> list[Job]:
    """The jobs of ``queue`` that ``session`` sees, in any state, whose ``data`` equals ``data`` (omit it to
    take any) and whose columns equal the ``filters`` (``state="created"``, ``priority=5``,
    ``singleton_key="k"``, ...; ``unittest.mock.ANY`` works anywhere, in dicts too).

    Ordered by ``created_on``, then by storage (for the jobs of one transaction, usually the order they were
    sent in). ``schema``: the pg-boss schema; by default the one the session serves (the ``boss_session``
    fixture's, or the one a ``Boss`` on it uses, else ``pgboss``).

    Runs one ``SELECT`` in the session's transaction (so it sees what the test has not committed, and flushes
    pending objects first); locks nothing, commits nothing.

    Raises:
        InvalidOptionError: a filter that is no ``Job`` column.
    """
    _check_filters(filters)
    return [job for job in _jobs_of(session, queue, schema, filters) if _matches(job, data, filters)]


def assert_sent(
    session: Session,
    queue: str,
    data: Any = ANY,
    *,
    schema: str | None = None,
    count: int | None = None,
    **filters: Any,
) -> list[Job]:
    """Assert that ``queue`` holds a job matching ``data`` and ``filters`` (as :func:`sent_jobs` matches
    them), or exactly ``count`` of them; return the matching jobs.

    On failure, the ``AssertionError`` lists what *was* sent to the queue (id, state, data and the filtered
    columns, the first :data:`LISTED` jobs) or, when it holds nothing, the queues that do hold jobs. Runs one
    ``SELECT`` or two in the session's transaction; locks nothing, commits nothing.

    Raises:
        AssertionError: no match, or not exactly ``count``.
        InvalidOptionError: a filter that is no ``Job`` column, or a ``count`` below 1.
    """
    _check_filters(filters)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise InvalidOptionError(f"count must be a whole number of at least 1, not {count!r} (see assert_not_sent)")
    jobs = _jobs_of(session, queue, schema, filters)
    matching = [job for job in jobs if _matches(job, data, filters)]
    if matching and (count is None or len(matching) == count):
        return matching
    wanted = _describe_match(data, filters)
    expected = f"a job in queue {queue!r}" if count is None else f"exactly {count} job(s) in queue {queue!r}"
    raise AssertionError(_failure(session, queue, schema, f"expected {expected}{wanted}", jobs, matching, filters))


def assert_not_sent(
    session: Session, queue: str, data: Any = ANY, *, schema: str | None = None, **filters: Any
) -> None:
    """Assert that ``queue`` holds no job matching ``data`` and ``filters`` (as :func:`sent_jobs` matches
    them); the ``AssertionError`` lists the jobs that do. Runs one ``SELECT`` in the session's transaction;
    locks nothing, commits nothing.

    Raises:
        AssertionError: a job matches.
        InvalidOptionError: a filter that is no ``Job`` column.
    """
    _check_filters(filters)
    matching = [job for job in _jobs_of(session, queue, schema, filters) if _matches(job, data, filters)]
    if matching:
        wanted = _describe_match(data, filters)
        lines = [f"expected no job in queue {queue!r}{wanted}; {len(matching)} match:"]
        lines += _listing(matching, filters)
        raise AssertionError("\n".join(lines))


async def async_sent_jobs(
    session: AsyncSession, queue: str, data: Any = ANY, *, schema: str | None = None, **filters: Any
) -> list[Job]:
    """:func:`sent_jobs` on an ``AsyncSession`` (through ``session.run_sync``). Locks nothing, commits nothing."""
    return await session.run_sync(lambda sync: sent_jobs(sync, queue, data, schema=schema, **filters))


async def async_assert_sent(
    session: AsyncSession,
    queue: str,
    data: Any = ANY,
    *,
    schema: str | None = None,
    count: int | None = None,
    **filters: Any,
) -> list[Job]:
    """:func:`assert_sent` on an ``AsyncSession`` (through ``session.run_sync``). Locks nothing, commits
    nothing."""
    return await session.run_sync(lambda sync: assert_sent(sync, queue, data, schema=schema, count=count, **filters))


async def async_assert_not_sent(
    session: AsyncSession, queue: str, data: Any = ANY, *, schema: str | None = None, **filters: Any
) -> None:
    """:func:`assert_not_sent` on an ``AsyncSession`` (through ``session.run_sync``). Locks nothing, commits
    nothing."""
    await session.run_sync(lambda sync: assert_not_sent(sync, queue, data, schema=schema, **filters))


# ------------------------------------------------------------------------------------------------ helpers


def _check_filters(filters: dict[str, Any], columns: tuple[str, ...] | None = None) -> None:
    """Refuse a filter that is no ``Job`` column: of either schema version, or of the version whose ``columns``
    are given."""
    allowed = set(FILTERS) | set(FILTERS_46) if columns is None else set(columns)
    unknown = sorted(set(filters) - allowed)
    if unknown:
        hint = " (the queue is the second argument)" if "name" in unknown else ""
        names = ", ".join(map(repr, unknown))
        known = ", ".join(columns or FILTERS)
        raise InvalidOptionError(f"no Job column named {names} to filter on{hint}; the columns are {known}")


def _options(session: Session, schema: str | None) -> dict[str, Any]:
    name = schema_of(session) if schema is None else schema
    bind_session(session, name)  # the jobs returned load what they lack (job.queue, ...) from this schema
    return {"schema_translate_map": schema_translate_map(name), "populate_existing": True}


def _jobs_of(session: Session, queue: str, schema: str | None, filters: dict[str, Any]) -> list[Any]:
    """The queue's jobs as the models of the schema's version (read once per connection pool), after checking
    ``filters`` against that version's columns."""
    name = queue_name(queue)
    options = _options(session, schema)
    version = Driver(options["schema_translate_map"][DEFAULT_SCHEMA], runs=REPOSITORY_VERSIONS).version(session)
    model: Any = Job46 if version == 46 else Job
    _check_filters(filters, FILTERS_46 if version == 46 else FILTERS)
    statement = select(model).where(model.name == name).order_by(model.created_on, literal_column("ctid"))
    return list(session.scalars(statement, execution_options=options).all())


def _matches(job: Job, data: Any, filters: dict[str, Any]) -> bool:
    if data is not ANY and data != job.data:  # the expected value's operator decides (mock.ANY, a matcher)
        return False
    return all(value == getattr(job, key) for key, value in filters.items())


def _describe_match(data: Any, filters: dict[str, Any]) -> str:
    parts = [] if data is ANY else [f"data={data!r}"]
    parts += [f"{key}={_show(value)}" for key, value in filters.items()]
    return f" with {', '.join(parts)}" if parts else ""


def _show(value: Any) -> str:
    enum_value = getattr(value, "value", None)
    return repr(enum_value) if isinstance(enum_value, str) else repr(value)


def _listing(jobs: Sequence[Job], filters: dict[str, Any], matching: Sequence[Job] = ()) -> list[str]:
    lines = []
    for job in jobs[:LISTED]:
        mark = "*" if any(job is match for match in matching) else "-"
        columns = "".join(f", {key}={_show(getattr(job, key))}" for key in filters if key != "state")
        lines.append(f"  {mark} {job.id} state={job.state.value}, data={job.data!r}{columns}")
    if len(jobs) > LISTED:
        lines.append(f"  ... and {len(jobs) - LISTED} more")
    return lines


def _failure(
    session: Session,
    queue: str,
    schema: str | None,
    headline: str,
    jobs: Sequence[Job],
    matching: Sequence[Job],
    filters: dict[str, Any],
) -> str:
    if jobs:
        found = f"{len(matching)} match" if matching else "none matches"
        marked = " (* marks the matching ones)" if matching else ""
        listing = _listing(jobs, filters, matching)
        return "\n".join([f"{headline}; {found}.", f"{len(jobs)} job(s) were sent to {queue!r}{marked}:", *listing])
    options = _options(session, schema)
    exists = session.scalar(
        select(func.count()).select_from(Queue).where(Queue.name == queue), execution_options=options
    )
    counts = session.execute(
        select(Job.name, func.count()).group_by(Job.name).order_by(Job.name), execution_options=options
    ).all()
    where = f"schema {schema_of(session) if schema is None else schema!r}"
    lines = [f"{headline}, but no job was sent to {queue!r} at all."]
    if not exists:
        lines.append(f"There is no queue {queue!r} in {where}.")
    if counts:
        shown = ", ".join(f"{name!r} ({number})" for name, number in counts[:LISTED])
        more = f", and {len(counts) - LISTED} more" if len(counts) > LISTED else ""
        lines.append(f"Queues that hold jobs: {shown}{more}.")
    else:
        lines.append(f"No queue in {where} holds any job.")
    return "\n".join(lines)


__all__ = [
    "FILTERS",
    "FILTERS_46",
    "LISTED",
    "assert_not_sent",
    "assert_sent",
    "async_assert_not_sent",
    "async_assert_sent",
    "async_sent_jobs",
]
