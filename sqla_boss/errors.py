"""The exceptions sqla_boss raises: one root, one subclass per way things go wrong."""

from __future__ import annotations


class SqlaBossError(Exception):
    """Something sqla_boss refused or could not do.

    Errors raised by SQLAlchemy or the driver are let through unwrapped: when one reaches you, the
    transaction may be aborted and is yours to roll back.
    """


class InvalidSchemaNameError(SqlaBossError, ValueError):
    """The schema name is not one pg-boss can use unquoted.

    pg-boss pastes the schema name into SQL without quotes, so a name only works on both sides when it is
    lower case ASCII letters, digits and underscores, does not start with a digit, and has at most 50
    characters.
    """


class InvalidDatabaseUrlError(SqlaBossError, ValueError):
    """The database URL does not name a PostgreSQL database."""


class SchemaVersionError(SqlaBossError):
    """The pg-boss schema is at a version this release of sqla_boss does not run (it runs 24).

    A Node pg-boss 11 or 12 sharing the schema migrates it past 24 when it starts; sqla_boss then refuses to
    touch it rather than write rows that the new version reads differently.
    """

    def __init__(self, message: str, found: int | None = None, supported: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.found = found
        """The version the schema holds, when one was read."""
        self.supported = supported
        """The versions this release runs."""


class SchemaNotInstalledError(SqlaBossError):
    """The schema holds no pg-boss tables (it does not exist, or holds something else): run ``sqla-boss
    migrate`` (or :func:`sqla_boss.migrations.upgrade`) first."""


class DatabaseUnavailableError(SqlaBossError):
    """The database could not be reached, or refused what a worker checks at start."""


class MigrationError(SqlaBossError):
    """Alembic cannot run the revision asked for (an unknown revision, a revision of another branch)."""


class SchemaConflictError(SqlaBossError):
    """The schema already holds objects but no pg-boss ``version`` table, so installing would clash."""


class EmbeddedPostgresUnavailableError(SqlaBossError):
    """No embedded PostgreSQL package is installed (``pip install "sqla-boss[embedded]"``)."""


class InvalidOptionError(SqlaBossError, ValueError):
    """An argument or option has the wrong type or an out-of-range value. Nothing was written."""


class InvalidQueueNameError(InvalidOptionError):
    """A queue name pg-boss would refuse, or one PostgreSQL cannot hold (NUL, backslash)."""


class PayloadError(InvalidOptionError):
    """The job data or output cannot be stored as JSON (not serialisable, NaN or infinity)."""


class InvalidCronError(InvalidOptionError):
    """A cron expression croniter (and so pg-boss's cron-parser) cannot evaluate."""


class InvalidTimezoneError(InvalidOptionError):
    """A time zone name the IANA database does not know."""


class QueueNotFoundError(SqlaBossError, LookupError):
    """The queue does not exist. pg-boss silently does nothing here; sqla_boss says so instead."""

    def __init__(self, message: str, names: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.names = names
        """The queue names that were not found."""


class JobNotFoundError(SqlaBossError, LookupError):
    """No job has the id given (in the queue given, or in the schema)."""


class DeadLetterQueueNotFoundError(QueueNotFoundError):
    """The dead-letter queue named for a job or queue does not exist."""


class UnsupportedOperationError(SqlaBossError):
    """The operation exists in one pg-boss schema version only, and the schema is at the other (for example
    ``get_queue_size`` on version 46, ``get_queue_stats`` on 24), or it needs an option of the other version.
    Nothing was written."""


class QueueNotEmptyError(SqlaBossError):
    """The queue still holds jobs, which pg-boss's ``delete_queue`` cannot drop (purge or delete them)."""


class QueueInUseError(SqlaBossError):
    """Another queue, or a job, names this queue as its dead letter, so it cannot be deleted."""


class JobConflictError(SqlaBossError):
    """A state change would break a queue's policy or throttling slot (a unique index); nothing changed."""


class SchemaMismatchError(SqlaBossError):
    """The session already serves another pg-boss schema: use one session per schema.

    Jobs of two schemas would share the session's identity map (their keys are the queue name and id), and
    lazy loads could not tell which schema to read.
    """


class HandlerTimeoutError(SqlaBossError, TimeoutError):
    """A worker's handler ran past its jobs' ``expire_in`` (at least 1 s); the jobs were failed with this.

    The message is pg-boss's own, ``handler execution exceeded <ms>ms``, so both record the same output.
    """


class ClaimLostError(SqlaBossError):
    """A transactional handler's jobs were no longer the worker's when it completed them (expired, failed by
    a lapsed heartbeat, deleted meanwhile): the handler's writes were rolled back, and the jobs left to whoever
    holds them now."""


class FactoryNotBoundError(SqlaBossError, RuntimeError):
    """A factory of :mod:`sqla_boss.testing` was used before :func:`~sqla_boss.testing.bind_factories` gave it
    a session (the ``boss_session`` fixture binds them)."""
