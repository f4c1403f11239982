"""Schema version 46, pg-boss 12.38: everything that is particular to this wire format.

The room of the house (``docs/development.md``) beside :mod:`sqla_boss.v24`:

* :mod:`~sqla_boss.v46.models`: declarative models of the version's tables, on a ``MetaData`` of their own;
* :mod:`~sqla_boss.v46.ddl`: installing, adopting and removing the schema (tables from the models, the job
  table's partitions, indexes and plpgsql from one list of rules in :mod:`~sqla_boss.v46.job_table`);
* :mod:`~sqla_boss.v46.from_v24`: the in-place upgrade from version 24 that carries the jobs over;
* migrations: the Alembic revision ``sqla_boss/alembic/versions/pgboss_v46.py``.

Importing this package imports nothing else, so shared modules can name its version without a cycle.
"""

from __future__ import annotations

VERSION = 46
"""The pg-boss schema version of this room (the ``version`` table's value)."""

PGBOSS_RELEASES = "pg-boss 12.38"
"""The pg-boss release that installs and runs this schema version."""

__all__ = ["PGBOSS_RELEASES", "VERSION"]
