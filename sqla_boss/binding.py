"""What the driver needs of a session, in either flavour: tying it to its schema, expiring, reading results."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Result, event, inspect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.orm.util import identity_key

from sqla_boss.errors import SchemaMismatchError
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.models import Base
from sqla_boss.operations import Expire, Step
from sqla_boss.schema import schema_translate_map
from sqla_boss.v46.models import Base as Base46

_SESSION_KEY = "sqla_boss_schema"
_MODEL_BASES = (Base, Base46)
"""The declarative bases of every schema version's models."""
_HOOK_KEY = "sqla_boss_orm_hook"


def sync_session(session: Session | AsyncSession) -> Session:
    """The ``Session`` itself, or the one an ``AsyncSession`` runs on (where its events and state live)."""
    return session.sync_session if isinstance(session, AsyncSession) else session


def bind_session(session: Session | AsyncSession, schema: str, *, orm: bool = True) -> None:
    """Make every ORM execution of sqla_boss's models on ``session`` read and write ``schema``.

    Statements the repository runs carry the ``schema_translate_map`` themselves; this covers what the
    ORM runs on its own later: refreshing an expired job, lazy-loading ``job.queue``, a flush. It is a
    ``do_orm_execute`` hook on this session only, and only for statements on sqla_boss's models that
    carry no translation for ``pgboss`` already. With ``orm=False`` it only ties the session to the schema;
    the hook is added by the first call with ``orm=True`` (the repository makes it when it first returns
    ORM objects: a single send never pays for it).

    Raises:
        SchemaMismatchError: the session, or the engine or connection it is bound to, already serves
            another pg-boss schema.
    """
    session = sync_session(session)
    bound = session.info.get(_SESSION_KEY)
    if bound is not None and bound != schema:
        raise SchemaMismatchError(
            f"this session already works on pg-boss schema {bound!r}; use another session for {schema!r}"
        )
    if bound is None:
        translated = _bind_translation(session.bind)
        if translated is not None and translated != schema:
            raise SchemaMismatchError(
                f"the session's bind translates the pg-boss models to schema {translated!r}, not {schema!r}"
            )
        session.info[_SESSION_KEY] = schema
        session.info[_HOOK_KEY] = schema == DEFAULT_SCHEMA or translated == schema  # nothing to translate
    if not orm or session.info[_HOOK_KEY]:
        return
    session.info[_HOOK_KEY] = True
    translate = schema_translate_map(schema)

    def add_translation(state: ORMExecuteState) -> None:
        current = state.execution_options.get("schema_translate_map") or {}
        if DEFAULT_SCHEMA in current:
            return
        if any(issubclass(mapper.class_, _MODEL_BASES) for mapper in state.all_mappers):
            state.update_execution_options(schema_translate_map={**current, **translate})

    event.listen(session, "do_orm_execute", add_translation)


def schema_of(session: Session) -> str:
    """The pg-boss schema ``session`` serves: the one a ``Boss`` tied it to, else the one its connection's
    ``schema_translate_map`` points the models at, else ``pgboss``. Begins the session's transaction if none
    is open (it asks the connection); runs no statement, commits nothing."""
    bound = session.info.get(_SESSION_KEY)
    if bound is not None:
        return str(bound)
    translated = _bind_translation(session.connection())
    return DEFAULT_SCHEMA if translated is None else translated


def _bind_translation(bind: Engine | Connection | Any) -> str | None:
    if not isinstance(bind, (Engine, Connection)):
        return None
    translate = bind.get_execution_options().get("schema_translate_map") or {}
    value = translate.get(DEFAULT_SCHEMA)
    return None if value is None else str(value)


def expire_stale(session: Session | AsyncSession, step: Expire) -> None:
    """Expire the objects ``step`` names that the session holds, so they reload on next access."""
    session = sync_session(session)
    for model, key in step.keys:
        stale = session.identity_map.get(identity_key(model, key))
        if stale is not None:
            if step.keep:
                attributes = inspect(stale).mapper.attrs
                session.expire(stale, [prop.key for prop in attributes if prop.key not in step.keep])
            else:
                session.expire(stale)


def pool_of(bind: Session | AsyncSession | Connection | AsyncConnection) -> object:
    """The connection pool behind ``bind``: what an engine, the engines made from it with other execution
    options, and their sessions and connections all share. No I/O."""
    if isinstance(bind, AsyncSession):
        bind = bind.sync_session
    if isinstance(bind, AsyncConnection):
        return bind.sync_engine.pool
    if isinstance(bind, Session):
        found = bind.get_bind()
        return found.engine.pool if isinstance(found, Connection) else found.pool
    return bind.engine.pool


def driver_backend_pid(connection: Connection | AsyncConnection) -> int | None:
    """The backend process of ``connection``, as its driver knows it (psycopg does), or ``None``. No I/O."""
    sync = connection.sync_connection if isinstance(connection, AsyncConnection) else connection
    assert sync is not None
    pid = getattr(getattr(sync.connection.driver_connection, "info", None), "backend_pid", None)
    return pid if isinstance(pid, int) else None


def read_result(result: Result[Any], step: Step) -> Any:
    """What a (non-entity) step asked for, read from the buffered ``result``."""
    if step.result == "rowcount":
        return result.rowcount  # type: ignore[attr-defined]
    if step.result == "scalar":
        return result.scalar()
    return result.all()
