"""The one home of validation: every option sqla_boss takes is checked here, before anything reaches the
database, and turned into the value pg-boss's own JavaScript would have produced (seconds, interval text, ISO
timestamps ending in ``Z``), so that the SQL applying it writes the same rows. Bad input raises a precise
:class:`~sqla_boss.errors.InvalidOptionError` instead of an SQL error that would abort the caller's
transaction.

By topic:

* :mod:`~sqla_boss.options.values`: the primitive validators all the others use (whole numbers, flags,
  durations, texts, unknown keys);
* :mod:`~sqla_boss.options.names`: queue names, event names, job ids;
* :mod:`~sqla_boss.options.timing`: ``start_after``, ``keep_until`` and the durations;
* :mod:`~sqla_boss.options.payloads`: job data and outputs as JSON;
* :mod:`~sqla_boss.options.jobs`: send and insert options, and the constructor's job defaults;
* :mod:`~sqla_boss.options.queues`: queue options, job states, fetch options;
* :mod:`~sqla_boss.options.schedules`: cron expressions, time zones, stored schedule options;
* :mod:`~sqla_boss.options.workers` and :mod:`~sqla_boss.options.maintenance`: the settings of workers and
  maintenance.

Schema names are SQL identifiers, checked and quoted by :mod:`sqla_boss.identifiers`.
"""

from __future__ import annotations
