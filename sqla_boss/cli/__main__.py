"""``python -m sqla_boss.cli``: the ``sqla-boss`` command."""

from __future__ import annotations

import sys

from sqla_boss.cli import main

sys.exit(main())
