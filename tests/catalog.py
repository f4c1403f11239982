"""A comparable picture of one schema, read from PostgreSQL's system catalogs.

:func:`snapshot` describes every relation, column, constraint, index, type, enum, function and trigger of
a schema, plus the rows of its ``version`` table, in plain dicts. Every definition string has the schema
name replaced by ``<S>`` and nothing else changed, so two schemas built the same way give equal
snapshots whatever they are called. Function bodies are left out on purpose: ours are written
differently from pg-boss's; their signatures, language and volatility are compared.

:func:`differences` turns two snapshots into one line per differing entry, for assertions that say
what differs: ``assert differences(ours, theirs) == []``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, text

SCHEMA_PLACEHOLDER = "<S>"

Snapshot = dict[str, Any]

_RELATIONS = """
SELECT c.relname,
       c.relkind::text AS relkind,
       c.relpersistence::text AS relpersistence,
       c.relispartition,
       c.relreplident::text AS replica_identity,
       c.relrowsecurity AS row_security,
       c.relforcerowsecurity AS force_row_security,
       am.amname AS access_method,
       c.reloptions::text[] AS reloptions,
       pg_get_partkeydef(c.oid) AS partition_key,
       pg_get_expr(c.relpartbound, c.oid) AS partition_bound,
       ARRAY(
           SELECT quote_ident(pn.nspname) || '.' || quote_ident(p.relname)
           FROM pg_inherits i
           JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_namespace pn ON pn.oid = p.relnamespace
           WHERE i.inhrelid = c.oid
           ORDER BY i.inhseqno
       ) AS parents,
       obj_description(c.oid, 'pg_class') AS comment
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_am am ON am.oid = c.relam
WHERE n.nspname = :schema
ORDER BY c.relname
"""

_COLUMNS = """
SELECT c.relname,
       a.attnum,
       a.attname,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS "default",
       a.attidentity::text AS identity,
       a.attgenerated::text AS generated,
       CASE WHEN a.attcollation = 0 THEN NULL
            ELSE quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END AS collation,
       a.attstorage::text AS storage,
       a.attislocal AS is_local,
       a.attinhcount AS inherited_count,
       col_description(c.oid, a.attnum) AS comment
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE n.nspname = :schema
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""

_CONSTRAINTS = """
SELECT coalesce(rel.relname, typ.typname) AS owner,
       con.conname,
       con.contype::text AS type,
       pg_get_constraintdef(con.oid) AS definition,
       con.condeferrable AS deferrable,
       con.condeferred AS deferred,
       con.convalidated AS validated,
       con.conislocal AS is_local,
       con.coninhcount AS inherited_count,
       con.connoinherit AS no_inherit,
       CASE WHEN con.conrelid <> 0 THEN 'table' ELSE 'type' END AS owner_kind,
       ind.relname AS index,
       CASE WHEN con.confrelid = 0 THEN NULL
            ELSE quote_ident(fn.nspname) || '.' || quote_ident(frel.relname) END AS references,
       CASE WHEN con.conparentid = 0 THEN NULL
            ELSE quote_ident(pn.nspname) || '.' || quote_ident(prel.relname) || '.' || quote_ident(par.conname)
       END AS parent
FROM pg_constraint con
JOIN pg_namespace n ON n.oid = con.connamespace
LEFT JOIN pg_class rel ON rel.oid = con.conrelid
LEFT JOIN pg_type typ ON typ.oid = con.contypid
LEFT JOIN pg_class ind ON ind.oid = con.conindid
LEFT JOIN pg_class frel ON frel.oid = con.confrelid
LEFT JOIN pg_namespace fn ON fn.oid = frel.relnamespace
LEFT JOIN pg_constraint par ON par.oid = con.conparentid
LEFT JOIN pg_class prel ON prel.oid = par.conrelid
LEFT JOIN pg_namespace pn ON pn.oid = par.connamespace
WHERE n.nspname = :schema
ORDER BY owner, con.conname
"""

_INDEXES = """
SELECT ic.relname,
       tc.relname AS "table",
       pg_get_indexdef(ic.oid) AS definition,
       i.indisunique AS is_unique,
       i.indisprimary AS is_primary,
       i.indisexclusion AS is_exclusion,
       i.indimmediate AS is_immediate,
       i.indisvalid AS is_valid,
       ARRAY(
           SELECT quote_ident(pn.nspname) || '.' || quote_ident(p.relname)
           FROM pg_inherits inh
           JOIN pg_class p ON p.oid = inh.inhparent
           JOIN pg_namespace pn ON pn.oid = p.relnamespace
           WHERE inh.inhrelid = ic.oid
           ORDER BY inh.inhseqno
       ) AS parents
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE n.nspname = :schema
ORDER BY ic.relname
"""

_TYPES = """
SELECT t.typname,
       t.typtype::text AS type,
       t.typcategory::text AS category,
       CASE WHEN t.typelem = 0 THEN NULL ELSE format_type(t.typelem, NULL) END AS element,
       coalesce(r.relname, er.relname) AS relation
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class r ON r.oid = t.typrelid
LEFT JOIN pg_type et ON et.oid = t.typelem
LEFT JOIN pg_class er ON er.oid = et.typrelid
WHERE n.nspname = :schema
ORDER BY t.typname
"""

_ENUMS = """
SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
FROM pg_enum e
JOIN pg_type t ON t.oid = e.enumtypid
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = :schema
GROUP BY t.typname
ORDER BY t.typname
"""

_FUNCTIONS = """
SELECT p.proname,
       pg_get_function_identity_arguments(p.oid) AS identity,
       pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result,
       l.lanname AS language,
       p.prokind::text AS kind,
       p.provolatile::text AS volatility,
       p.proisstrict AS strict,
       p.prosecdef AS security_definer,
       p.proleakproof AS leakproof,
       p.proparallel::text AS parallel,
       p.proconfig::text[] AS config,
       obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_language l ON l.oid = p.prolang
WHERE n.nspname = :schema
ORDER BY p.proname, identity
"""

_TRIGGERS = """
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) AS definition, t.tgenabled::text AS enabled
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND NOT t.tgisinternal
ORDER BY c.relname, t.tgname
"""


def snapshot(connection: Connection, schema: str) -> Snapshot:
    """Describe ``schema`` from the system catalogs, with its name replaced by ``<S>``.

    The result maps a section (``relations``, ``columns``, ``constraints``, ``indexes``, ``types``,
    ``enums``, ``functions``, ``triggers``, ``version``) to a dict keyed by the object's name (qualified
    by its table where names are per table), whose values are dicts of the object's properties. The
    ``version`` section holds the rows of ``<schema>.version``, or is ``None`` without such a table.
    """

    def rows(sql: str) -> list[dict[str, Any]]:
        statement = text(sql).bindparams(bindparam("schema", schema))
        return [_normalise(dict(row), schema) for row in connection.execute(statement).mappings()]

    result: Snapshot = {
        "relations": {row.pop("relname"): row for row in rows(_RELATIONS)},
        "columns": {f"{row.pop('relname')}.{row.pop('attname')}": row for row in rows(_COLUMNS)},
        "constraints": {f"{row.pop('owner')}.{row.pop('conname')}": row for row in rows(_CONSTRAINTS)},
        "indexes": {row.pop("relname"): row for row in rows(_INDEXES)},
        "types": {row.pop("typname"): row for row in rows(_TYPES)},
        "enums": {row["typname"]: row["labels"] for row in rows(_ENUMS)},
        "functions": {f"{row.pop('proname')}({row.pop('identity')})": row for row in rows(_FUNCTIONS)},
        "triggers": {f"{row.pop('relname')}.{row.pop('tgname')}": row for row in rows(_TRIGGERS)},
        "version": _version_rows(connection, schema),
    }
    return result


def _version_rows(connection: Connection, schema: str) -> list[dict[str, Any]] | None:
    exists = connection.execute(
        text("SELECT to_regclass(quote_ident(:schema) || '.version') IS NOT NULL").bindparams(schema=schema)
    ).scalar_one()
    if not exists:
        return None
    quoted = '"' + schema.replace('"', '""') + '"'
    statement = text(f"SELECT * FROM {quoted}.version ORDER BY version")
    return [{key: _plain(value) for key, value in row.items()} for row in connection.execute(statement).mappings()]


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID, dt.timedelta)):
        return str(value)
    return value


def _normalise(value: Any, schema: str) -> Any:
    """Replace ``schema`` by ``<S>`` in every string, quoted or not; leave everything else alone."""
    if isinstance(value, str):
        quoted = '"' + schema.replace('"', '""') + '"'
        return value.replace(quoted, SCHEMA_PLACEHOLDER).replace(schema, SCHEMA_PLACEHOLDER)
    if isinstance(value, Mapping):
        return {key: _normalise(item, schema) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(item, schema) for item in value]
    return value


def differences(left: Snapshot, right: Snapshot, *, names: tuple[str, str] = ("left", "right")) -> list[str]:
    """One readable line per entry that differs between two snapshots; ``[]`` when they are equal.

    For example ``columns['job.expire_in']: default: "'00:15:00'::interval" (ours) != "'15 min'" (pg-boss)``.
    """
    left_name, right_name = names
    lines: list[str] = []
    for section in sorted(set(left) | set(right)):
        a, b = left.get(section), right.get(section)
        if a == b:
            continue
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            lines.append(f"{section}: {a!r} ({left_name}) != {b!r} ({right_name})")
            continue
        for key in sorted(set(a) | set(b)):
            if key not in b:
                lines.append(f"{section}[{key!r}]: only in {left_name}: {a[key]!r}")
            elif key not in a:
                lines.append(f"{section}[{key!r}]: only in {right_name}: {b[key]!r}")
            elif a[key] != b[key]:
                lines.extend(_entry_differences(f"{section}[{key!r}]", a[key], b[key], left_name, right_name))
    return lines


def _entry_differences(where: str, a: Any, b: Any, left_name: str, right_name: str) -> Iterable[str]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for field in sorted(set(a) | set(b)):
            if a.get(field, "<missing>") != b.get(field, "<missing>"):
                yield (
                    f"{where}: {field}: {a.get(field, '<missing>')!r} ({left_name}) != "
                    f"{b.get(field, '<missing>')!r} ({right_name})"
                )
    else:
        yield f"{where}: {a!r} ({left_name}) != {b!r} ({right_name})"


def without_relations(snap: Snapshot, relations: Iterable[str]) -> Snapshot:
    """A copy of ``snap`` without the given relations and everything that hangs off them.

    That is their columns, constraints, triggers, indexes, and their row and array types. Handy for
    setting aside the partitions of queues that only one side created.
    """
    dropped = set(relations)
    dropped |= {name for name, index in snap["indexes"].items() if index["table"] in dropped}

    def kept(key: str) -> bool:
        return key.split(".", 1)[0] not in dropped

    return {
        **snap,
        "relations": {k: v for k, v in snap["relations"].items() if k not in dropped},
        "columns": {k: v for k, v in snap["columns"].items() if kept(k)},
        "constraints": {k: v for k, v in snap["constraints"].items() if v["owner_kind"] != "table" or kept(k)},
        "indexes": {k: v for k, v in snap["indexes"].items() if k not in dropped},
        "types": {k: v for k, v in snap["types"].items() if v["relation"] not in dropped},
        "triggers": {k: v for k, v in snap["triggers"].items() if kept(k)},
    }
