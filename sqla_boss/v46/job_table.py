"""The rules of a version-46 job table, written once: its keys, checks and indexes.

``job_common`` (made at install) and each partitioned queue's own table (made by the ``create_queue``
function, for Node's calls as for ours) get their objects from these lists, so both always agree with each
other and with pg-boss 12.38. A job table's index is named after the table: ``job_common_i11``,
``j<sha224 of the queue name>_i11``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqla_boss.identifiers import quote_identifier, quote_literal

COMMON_TABLE = "job_common"
"""The default partition of ``job``: the jobs of every queue created without ``partition: true``."""


@dataclass(frozen=True)
class JobIndex:
    """One index of a job table: ``<table>_<suffix>``, on ``body`` (columns, then an optional ``WHERE``)."""

    suffix: str
    body: str
    unique: bool = False
    policy: str | None = None
    """Only on the tables of queues of this policy (``job_common`` has them all); ``None``: on every table."""

    def create(self, schema: str, table: str) -> str:
        """``CREATE INDEX`` of this index on ``schema.table``."""
        name = quote_identifier(f"{table}_{self.suffix}")
        kind = "UNIQUE INDEX" if self.unique else "INDEX"
        return f"CREATE {kind} {name} ON {schema}.{quote_identifier(table)} {self.body}"


_QUEUED = "state < 'active'"

JOB_INDEXES: tuple[JobIndex, ...] = (
    # every job table, in the order a partitioned queue's table gets them
    JobIndex("i11", f"(name, priority DESC, created_on, start_after) WHERE {_QUEUED} AND NOT blocked"),
    JobIndex(
        "i4",
        "(name, singleton_on, COALESCE(singleton_key, '')) WHERE state <> 'cancelled' AND singleton_on IS NOT NULL",
        unique=True,
    ),
    JobIndex("i7", "(name, group_id) WHERE state = 'active' AND group_id IS NOT NULL"),
    JobIndex("i9", "(name, id) WHERE blocking AND state = 'completed'"),
    JobIndex("i12", "(source_root_id) WHERE source_root_id IS NOT NULL"),
    JobIndex("i13", "(name, singleton_key) WHERE state = 'created' AND upsert_by_key", unique=True),
    JobIndex("i14", "(name, state, blocked, start_after) WHERE state IN ('created', 'retry', 'active', 'failed')"),
    JobIndex("i15", "(name, created_on)"),
    JobIndex("i16", "(name, completed_on) WHERE completed_on IS NOT NULL"),
    JobIndex("i17", f"(name, singleton_key, created_on) WHERE {_QUEUED} AND singleton_key IS NOT NULL"),
    # the policies' own
    JobIndex("i1", "(name, COALESCE(singleton_key, '')) WHERE state = 'created' AND policy = 'short'", True, "short"),
    JobIndex(
        "i2",
        "(name, COALESCE(singleton_key, '')) WHERE state = 'active' AND policy = 'singleton'",
        True,
        "singleton",
    ),
    JobIndex(
        "i3",
        "(name, state, COALESCE(singleton_key, '')) WHERE state <= 'active' AND policy = 'stately'",
        True,
        "stately",
    ),
    JobIndex(
        "i6",
        "(name, COALESCE(singleton_key, '')) WHERE state <= 'active' AND policy = 'exclusive'",
        True,
        "exclusive",
    ),
    JobIndex(
        "i8",
        "(name, singleton_key) WHERE state IN ('active', 'retry', 'failed') AND policy = 'key_strict_fifo'",
        True,
        "key_strict_fifo",
    ),
    JobIndex(
        "i10",
        f"(name, singleton_key, state DESC, created_on, id) INCLUDE (start_after) "
        f"WHERE {_QUEUED} AND NOT blocked AND policy = 'key_strict_fifo'",
        policy="key_strict_fifo",
    ),
)
"""Every index of a job table. There is no ``i5``: pg-boss retired the number."""

KEY_REQUIRED = (
    "job_key_strict_fifo_singleton_key_check",
    "CHECK (NOT (policy = 'key_strict_fifo' AND singleton_key IS NULL))",
    "key_strict_fifo",
)
"""A ``key_strict_fifo`` job has a singleton key: on ``job_common`` and on that policy's tables."""


def _foreign_keys(schema: str) -> tuple[tuple[str, str], ...]:
    deferred = f"REFERENCES {schema}.queue (name) ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED"
    return (("q_fkey", f"FOREIGN KEY (name) {deferred}"), ("dlq_fkey", f"FOREIGN KEY (dead_letter) {deferred}"))


def common_table_ddl(schema: str) -> list[str]:
    """The statements that make ``job_common`` and attach it as ``job``'s default partition (``schema``
    already quoted)."""
    table = f"{schema}.{COMMON_TABLE}"
    name, check, _policy = KEY_REQUIRED
    return [
        f"CREATE TABLE {table} (LIKE {schema}.job INCLUDING GENERATED INCLUDING DEFAULTS)",
        f"ALTER TABLE {table} ADD PRIMARY KEY (name, id)",
        *(f"ALTER TABLE {table} ADD CONSTRAINT {fk} {definition}" for fk, definition in _foreign_keys(schema)),
        f"ALTER TABLE {table} ADD CONSTRAINT {name} {check}",
        *(index.create(schema, COMMON_TABLE) for index in JOB_INDEXES),
        f"ALTER TABLE {schema}.job ATTACH PARTITION {table} DEFAULT",
    ]


def partition_plpgsql(schema: str) -> str:
    """plpgsql statements that make a partitioned queue's table and attach it, for ``create_queue``'s body.

    They read the variables ``tbl`` (the table's name), ``queue_name`` and ``queue_policy``.
    """

    def run(template: str, *arguments: str) -> str:
        return f"EXECUTE format({quote_literal(template)}, {', '.join(arguments)});"

    target = f"{schema}.%I"
    lines = [
        run(f"CREATE TABLE {target} (LIKE {schema}.job INCLUDING DEFAULTS)", "tbl"),
        run(f"ALTER TABLE {target} ADD PRIMARY KEY (name, id)", "tbl"),
        *(run(f"ALTER TABLE {target} ADD CONSTRAINT {fk} {fk_sql}", "tbl") for fk, fk_sql in _foreign_keys(schema)),
    ]
    for index in JOB_INDEXES:
        template = f"CREATE {'UNIQUE ' if index.unique else ''}INDEX %I ON {target} {index.body}"
        statement = run(template, f"tbl || '_{index.suffix}'", "tbl")
        if index.policy is not None:
            statement = f"IF queue_policy = {quote_literal(index.policy)} THEN {statement} END IF;"
        lines.append(statement)
    name, check, policy = KEY_REQUIRED
    lines.append(
        f"IF queue_policy = {quote_literal(policy)} THEN "
        f"{run(f'ALTER TABLE {target} ADD CONSTRAINT {name} {check}', 'tbl')} END IF;"
    )
    lines.append(run(f"ALTER TABLE {target} ADD CONSTRAINT cjc CHECK (name = %L)", "tbl", "queue_name"))
    lines.append(run(f"ALTER TABLE {schema}.job ATTACH PARTITION {target} FOR VALUES IN (%L)", "tbl", "queue_name"))
    return "\n    ".join(lines)


__all__ = ["COMMON_TABLE", "JOB_INDEXES", "KEY_REQUIRED", "JobIndex", "common_table_ddl", "partition_plpgsql"]
