"""Schema version 24, pg-boss 10.1.5 to 10.4.x: everything that is particular to this wire format.

A pg-boss schema version is a room of the house (``docs/development.md``): its models, its statements, its
DDL and the rules that differ live together, and everything shared stays outside, written once.

* models: :mod:`sqla_boss.models` (their public home, kept as it always was);
* :mod:`~sqla_boss.v24.statements`: every statement the repository, the workers and maintenance run;
* :mod:`~sqla_boss.v24.ddl` and ``functions.sql``: installing, adopting and removing the schema;
* the rules: :class:`~sqla_boss.operations.Operations` is written for this version, and a later version
  subclasses it with its own statements and the rules that differ;
* migrations: the Alembic revision ``sqla_boss/alembic/versions/pgboss_v24.py``.

Importing this package imports nothing else, so shared modules can name its version without a cycle.
"""

from __future__ import annotations

VERSION = 24
"""The pg-boss schema version of this room (the ``version`` table's value)."""

PGBOSS_RELEASES = "pg-boss 10.1.5 to 10.4.x"
"""The pg-boss releases that install and run this schema version."""

__all__ = ["PGBOSS_RELEASES", "VERSION"]
