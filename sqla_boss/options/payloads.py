"""Payloads: job data and outputs as the JSON pg-boss stores, refusing what JSON cannot carry faithfully."""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Mapping
from typing import Any

from sqla_boss.errors import PayloadError

# json.dumps writes NUL as \u0000; an escaped backslash before "u0000" is an even run of backslashes.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


MAX_JSON_DEPTH = 500
"""The deepest nesting of arrays and objects sqla_boss stores: one rule on every Python (whose ``json`` gives up
at different depths) and well inside what PostgreSQL's ``jsonb`` parses with its default stack."""


def json_text(value: Any, *, what: str = "data", wrapping: int = 0, structure_checked: bool = False) -> str:
    """``value`` as JSON text; refuses what JSON cannot carry faithfully: NaN, infinities, objects JSON does not
    know, keys that are not strings, NUL characters, lone surrogates, and nesting deeper than
    :data:`MAX_JSON_DEPTH` (plus ``wrapping`` levels that ``value`` puts around the payloads it holds).

    ``structure_checked``: the payloads ``value`` holds passed :func:`check_structure` already, and what wraps
    them is sqla_boss's own, so the nesting and the keys are not walked again."""
    if not structure_checked and isinstance(value, (dict, list, tuple)):
        _check_structure(value, what, MAX_JSON_DEPTH + wrapping)
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} cannot be stored as JSON: {exc}") from exc
    except RecursionError:  # pragma: no cover - _check_structure refuses such depths first
        raise PayloadError(f"{what} is nested too deeply to be stored as JSON") from None
    if "\\u0000" in text and _JSON_NUL.search(text):  # the substring test first: it runs at C speed
        raise PayloadError(f"{what} contains a NUL character (\\u0000), which PostgreSQL's jsonb cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{what} contains a lone surrogate, which is not valid UTF-8") from None
    return text


def check_structure(value: Any, *, what: str = "data") -> None:
    """Refuse keys that are not strings and nesting deeper than :data:`MAX_JSON_DEPTH` in ``value``; the rest
    of :func:`json_text`'s rules are checked on the text it writes."""
    if isinstance(value, (dict, list, tuple)):
        _check_structure(value, what, MAX_JSON_DEPTH)


def _check_structure(value: Any, what: str, limit: int) -> None:
    """Refuse nesting deeper than :data:`MAX_JSON_DEPTH`, and mapping keys that are not strings: JSON would turn
    ``1`` and ``None`` into ``"1"`` and ``"null"`` silently (and keep one value of ``{1: a, "1": b}``), so the job
    would not read back as it was sent. Iterative, so no depth exhausts Python's stack here."""
    containers = (dict, list, tuple)
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise PayloadError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep; sqla_boss stores up to that")
        if isinstance(item, dict):
            try:
                "".join(item)  # every key a str: checked at C speed (this runs per job of large batches)
            except TypeError:
                key = next(key for key in item if not isinstance(key, str))
                raise PayloadError(
                    f"{what} has a {type(key).__name__} key {key!r}; JSON object keys are strings"
                ) from None
            item = item.values()
        stack.extend([(member, depth + 1) for member in item if isinstance(member, containers)])


def check_json(value: Any, *, what: str = "data") -> Any:
    json_text(value, what=what)
    return value


def output_value(value: Any) -> Any:
    """What pg-boss stores as ``output`` for a completion or failure value (PGBOSS10.md §6.1).

    ``None`` stays NULL; an exception becomes ``{name, message, stack, ...its attributes}``; a mapping
    is stored as it is; anything else (string, number, boolean, list) is wrapped as ``{"value": ...}``.
    """
    if value is None or (callable(value) and not isinstance(value, BaseException)):
        return None
    if isinstance(value, BaseException):
        stored: dict[str, Any] = {
            "name": type(value).__name__,
            "message": str(value),
            "stack": "".join(traceback.format_exception(type(value), value, value.__traceback__)).rstrip(),
        }
        for key, attribute in vars(value).items():
            if key.startswith("_") or callable(attribute):
                continue
            try:
                json_text(attribute)
            except PayloadError:
                attribute = _safe_repr(attribute)
            stored.setdefault(key, attribute)
        return stored
    if isinstance(value, Mapping):
        return check_json(dict(value), what="output")
    return check_json({"value": value}, what="output")


def _safe_repr(value: object) -> str:
    """``repr(value)``, or a placeholder when that fails (nested too deeply, or a ``__repr__`` that raises)."""
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    except Exception as exc:
        return f"<{type(value).__name__}: repr() raised {type(exc).__name__}>"


__all__ = ["MAX_JSON_DEPTH", "check_json", "check_structure", "json_text", "output_value"]
