"""The suite of an application that uses sqla_boss (``shop.py``), written with the testing kit only.

The kit's pytest plugin is active through its entry point, and this file defines no fixture. It names one of
the kit's own again: this repository's suite has a fixture called ``boss`` for the whole tree
(``tests/apis.py``), which would hide the kit's here; a real application's suite has no such thing.
"""

from __future__ import annotations

from sqla_boss.testing.plugin import boss

__all__ = ["boss"]
