"""What the ``sqla-boss`` commands share: their connections, reading JSON arguments, and printing tables or JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from sqla_boss.database import DATABASE_URL_ENV
from sqla_boss.driver import Driver
from sqla_boss.errors import InvalidOptionError
from sqla_boss.identifiers import DEFAULT_SCHEMA
from sqla_boss.operations import Operations, operations_for
from sqla_boss.schema import REPOSITORY_VERSIONS, check_schema, schema_translate_map

Handler = Callable[[argparse.Namespace, URL], int]
"""A command: it gets the parsed arguments and the database URL, and returns the exit status."""

Commands = Any
"""The subparsers of the ``sqla-boss`` parser (argparse's private ``_SubParsersAction``)."""


def add_command(
    commands: Commands, name: str, help: str, handler: Handler, *, json_output: bool = False
) -> argparse.ArgumentParser:
    """A subcommand with the options every command takes: ``--url``, ``--schema`` (and ``--json``)."""
    sub: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    sub.add_argument("--url", help=f"database URL (default: ${DATABASE_URL_ENV})")
    sub.add_argument("--schema", default=DEFAULT_SCHEMA, help="pg-boss schema (default: %(default)s)")
    if json_output:
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.set_defaults(handler=handler)
    return sub


@contextmanager
def engine_for(url: URL) -> Iterator[Engine]:
    """An engine for one command, disposed afterwards."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def session_for(url: URL, schema: str) -> Iterator[Session]:
    """A session on the pg-boss schema, once the schema is checked to hold a version the repository runs (24
    or 46).

    Raises:
        SchemaNotInstalledError, SchemaVersionError: the schema is not one to work on.
    """
    with engine_for(url) as engine:
        with engine.connect() as connection:
            check_schema(connection, schema, REPOSITORY_VERSIONS)
        with Session(engine.execution_options(schema_translate_map=schema_translate_map(schema))) as session:
            yield session


def repository(session: Session, schema: str) -> tuple[Driver, Operations]:
    """The driver and the operations of the schema's version, for the commands that read what ``Boss`` does
    not offer (a job by id alone, the newest jobs). Reads the version once; commits nothing."""
    driver = Driver(schema, runs=REPOSITORY_VERSIONS)
    return driver, operations_for(schema, {}, driver.version(session))


def json_argument(text: str, what: str) -> Any:
    """A command-line argument as JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidOptionError(f"{what} is not JSON: {exc}") from None


def json_file(path: str, what: str) -> Any:
    """The JSON in the file at ``path``, or on standard input for ``-`` (for payloads too large for an argument)."""
    if path == "-":
        return json_argument(sys.stdin.read(), f"{what} on standard input")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidOptionError(f"cannot read {what} from {path}: {exc.strerror or exc}") from None
    return json_argument(text, f"{what} in {path}")


def number_or_text(value: str | None) -> float | str | None:
    """A ``--start-after``: seconds when it is a number, else text (interval text or a timestamp)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def dumps(value: Any) -> str:
    """JSON of what the commands print: ids, times and enums as text."""
    return json.dumps(value, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, dt.timedelta)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def age(seconds: float | None) -> str:
    """A duration as ``h:mm:ss``, or ``-``."""
    return "-" if seconds is None else str(dt.timedelta(seconds=round(seconds)))


def short(text: str, width: int = 40) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis."""
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: the headers, a rule, the rows, columns padded to their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [list(headers), ["-" * width for width in widths], *rows]
    ]
    return "\n".join(lines)


__all__ = [
    "Commands",
    "Handler",
    "add_command",
    "age",
    "dumps",
    "engine_for",
    "json_argument",
    "json_file",
    "number_or_text",
    "repository",
    "session_for",
    "short",
    "table",
]
