"""``python -m bench``: see :mod:`bench.run`; ``python -m bench wakeup``: see :mod:`bench.wakeup`."""

from __future__ import annotations

import sys

if sys.argv[1:2] == ["wakeup"]:
    from bench.wakeup import main as wakeup

    raise SystemExit(wakeup(sys.argv[2:]))

from bench.run import main

raise SystemExit(main())
