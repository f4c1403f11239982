"""sqla_boss and the real pg-boss 12.38.0 on one version-46 schema: update and upsert, redrive, and flows made by
either side are seen, edited, moved and released by the other, and both sides write the same rows.

Each test interleaves the two sides in one schema: Python commits, one Node run (tests/pgboss.py) acts, Python
acts again, then the rows both made are compared column by column (ids, queue names and the moments of each
side's own transactions aside: a clock reading is compared as an offset from the row's ``created_on``). Python's
side runs on both repository APIs (the ``api`` fixture); Node runs once per test.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pgboss import PgBoss, call, pgboss12_fixture, pgboss_install_fixture, start  # noqa: F401
from sqlalchemy import Engine, text

from sqla_boss import migrations
from sqla_boss.identifiers import quote_identifier
from sqla_boss.v46.operations import JobRef, RedrivePreview, UpdateResult

pytestmark = pytest.mark.pgboss

UTC = dt.timezone.utc
AT = dt.datetime(2031, 1, 1, tzinfo=UTC)
AT_ISO = "2031-01-01T00:00:00.000Z"
FAR = dt.datetime(2030, 1, 1, tzinfo=UTC)
"""Clock readings before this are this test run's ``job_now()``: compared as offsets from ``created_on``."""
QUIET = start(supervise=False, schedule=False)

COLUMNS = (
    "name, id, priority, data, jsonb_typeof(data) AS data_type, state::text AS state, retry_limit, retry_count, "
    "retry_delay, retry_backoff, retry_delay_max, expire_seconds, deletion_seconds, singleton_key, singleton_on, "
    "group_id, group_tier, start_after, created_on, started_on, completed_on, keep_until, output, dead_letter, "
    "policy, heartbeat_on, heartbeat_seconds, blocked, blocking, pending_dependencies, source_name, source_id, "
    "source_created_on, source_retry_count, source_output, source_root_id, trace_context, upsert_by_key"
)
SETTINGS: dict[str, Any] = {
    "retry_limit": 3,
    "retry_delay": 2,
    "expire_in_seconds": 50,
    "retention_seconds": 1000,
    "delete_after_seconds": 60,
    "heartbeat_seconds": 30,
}


@pytest.fixture
def installed_schema(engine: Engine, schema_name: str) -> str:
    """A version-46 schema of the test's own, installed by sqla_boss (Node starts on it as it is)."""
    migrations.upgrade(engine, schema=schema_name, pgboss=12)
    return schema_name


@pytest.fixture
def python_side(
    make_boss: Callable[..., Any], committing_session_factory: Any, installed_schema: str
) -> Callable[[], Any]:
    """``with python_side() as boss``: a ``Boss`` (or ``AsyncBoss``) in a transaction committed at the end."""

    @contextmanager
    def transaction() -> Iterator[Any]:
        with committing_session_factory.begin() as session:
            yield make_boss(session, schema=installed_schema)

    return transaction


def rows(engine: Engine, schema: str, where: str = "true", **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        found = connection.execute(
            text(f"SELECT {COLUMNS} FROM {quote_identifier(schema)}.job WHERE {where} ORDER BY name, created_on, id"),
            params,
        )
        return [dict(row._mapping) for row in found]


def one(engine: Engine, schema: str, where: str, **params: Any) -> dict[str, Any]:
    [found] = rows(engine, schema, where, **params)
    return found


def comparable(row: dict[str, Any], *ignored: str) -> dict[str, Any]:
    """The row without its id, queue name and ``created_on``: this run's clock readings as offsets from it."""
    created = row["created_on"]
    kept = {key: value for key, value in row.items() if key not in {"id", "name", "created_on", *ignored}}
    return {
        key: value - created if isinstance(value, dt.datetime) and value < FAR else value for key, value in kept.items()
    }


def js_result(result: dict[str, Any]) -> tuple[list[uuid.UUID], int, int]:
    return [uuid.UUID(job_id) for job_id in result["jobs"]], result["updated"], result.get("inserted", 0)


def py_result(result: UpdateResult) -> tuple[list[uuid.UUID], int, int]:
    return result.jobs, result.updated, result.inserted


# ---------------------------------------------------------------------------------- update and upsert


def test_updates_and_upserts_of_either_side(
    engine: Engine, pgboss12: PgBoss, installed_schema: str, python_side: Callable[[], Any]
) -> None:
    """Each side upserts and updates in its own queue (Node ``na``, Python ``pa``), the same calls: the rows
    agree. Each updates the job the other sent, and upserts the key the other upserted (and finds it)."""
    schema = installed_schema
    by_id = {"na": uuid.uuid4(), "pa": uuid.uuid4()}
    edit = {
        "priority": 5,
        "start_after": AT,
        "retention_seconds": 100,
        "retry_limit": 7,
        "retry_backoff": True,
        "retry_delay_max": 30,
        "dead_letter": "dlq",
        "heartbeat_seconds": 20,
        "group": {"id": "g2"},
        "expire_in_seconds": 60,
        "delete_after_seconds": 5,
    }
    node_edit = {
        "priority": 5,
        "startAfter": AT_ISO,
        "retentionSeconds": 100,
        "retryLimit": 7,
        "retryBackoff": True,
        "retryDelayMax": 30,
        "deadLetter": "dlq",
        "heartbeatSeconds": 20,
        "group": {"id": "g2"},
        "expireInSeconds": 60,
        "deleteAfterSeconds": 5,
    }
    python: list[UpdateResult] = []
    with python_side() as boss:
        boss.create_queue("dlq")
        for name in ("na", "pa"):
            boss.create_queue(name, **SETTINGS)
        boss.send("na", {"v": 0}, singleton_key="k", group={"id": "g", "tier": "t"})  # for Node to update
        python.append(
            boss.upsert(
                "pa",
                {"u": 1},
                singleton_key="u",
                priority=2,
                retry_limit=9,
                start_after=AT,
                group={"id": "g", "tier": "t"},
                retention_seconds=100,
            )
        )
        python.append(boss.upsert("pa", {"u": 2}, singleton_key="u", priority=3))
        python.append(boss.upsert("pa", {"i": 1}, id=by_id["pa"], retention_seconds=50, start_after=AT))
        python.append(boss.update("pa", None, id=by_id["pa"]))
        python.append(boss.upsert("pa", {"by": "python"}, singleton_key="shared"))
    node = pgboss12.run(
        schema,
        [
            QUIET,
            call("send", "pa", {"v": 0}, {"singletonKey": "k", "group": {"id": "g", "tier": "t"}}),
            call(
                "upsert",
                "na",
                {"u": 1},
                {
                    "singletonKey": "u",
                    "priority": 2,
                    "retryLimit": 9,
                    "startAfter": AT_ISO,
                    "group": {"id": "g", "tier": "t"},
                    "retentionSeconds": 100,
                },
            ),
            call("upsert", "na", {"u": 2}, {"singletonKey": "u", "priority": 3}),
            call("upsert", "na", {"i": 1}, {"id": str(by_id["na"]), "retentionSeconds": 50, "startAfter": AT_ISO}),
            call("update", "na", None, {"id": str(by_id["na"])}),
            call("upsert", "na", {"by": "node"}, {"singletonKey": "shared"}),
            call("update", "na", {"v": 1}, {"singletonKey": "k", **node_edit}),  # the job Python sent
            call("upsert", "pa", {"by": "node"}, {"singletonKey": "shared"}),  # the job Python upserted
            call("stop", {"graceful": False}),
        ],
    )
    with python_side() as boss:
        python.append(boss.update("pa", {"v": 1}, singleton_key="k", **edit))  # the job Node sent
        python.append(boss.upsert("na", {"by": "python"}, singleton_key="shared"))  # the job Node upserted
    python_upserted = one(engine, schema, "name = 'pa' AND singleton_key = 'shared'")
    node_upserted = one(engine, schema, "name = 'na' AND singleton_key = 'shared'")
    # What each call reported: the same counts on both sides; the cross-side calls found the other's jobs.
    counts = [result[1:] for result in map(js_result, node[2:9])]
    assert counts == [(0, 1), (1, 0), (0, 1), (1, 0), (0, 1), (1, 0), (1, 0)]
    assert [py_result(result)[1:] for result in python] == counts
    assert js_result(node[8])[0] == [python_upserted["id"]]
    assert python[-1].jobs == [node_upserted["id"]]
    assert (python_upserted["data"], node_upserted["data"]) == ({"by": "node"}, {"by": "python"})
    # The rows: Node's in na, Python's in pa, the same in every column but the ones of who sent them when.
    node_rows = sorted(rows(engine, schema, "name = 'na'"), key=lambda r: str(r["singleton_key"]))
    python_rows = sorted(rows(engine, schema, "name = 'pa'"), key=lambda r: str(r["singleton_key"]))
    assert [r["singleton_key"] for r in node_rows] == [r["singleton_key"] for r in python_rows]
    assert len(node_rows) == 4
    for ours, theirs in zip(python_rows, node_rows, strict=True):
        ignored = ("data",) if ours["singleton_key"] == "shared" else ()  # each holds the other side's data
        assert comparable(ours, *ignored) == comparable(theirs, *ignored), ours["singleton_key"]
    edited = one(engine, schema, "name = 'pa' AND singleton_key = 'k'")
    assert (edited["data"], edited["start_after"], edited["keep_until"], edited["group_tier"]) == (
        {"v": 1},
        AT,
        AT + dt.timedelta(seconds=100),
        "t",
    )
    assert one(engine, schema, "name = 'pa' AND id = :id", id=by_id["pa"])["data_type"] == "null"
    assert {r["upsert_by_key"] for r in python_rows if r["singleton_key"] in ("u", "shared")} == {True}


# ------------------------------------------------------------------------------------------- redrive


def test_redrive_of_jobs_dead_lettered_by_either_side(
    engine: Engine, pgboss12: PgBoss, installed_schema: str, python_side: Callable[[], Any]
) -> None:
    """Python dead-letters two jobs, Node redrives them (one into a conflict); Node dead-letters two, Python
    redrives them the same way: the moved jobs and the failed conflicts agree."""
    schema = installed_schema
    with python_side() as boss:
        boss.create_queue("dlq", retention_seconds=300)
        boss.create_queue("src", dead_letter="dlq", **{**SETTINGS, "retry_limit": 0})
        boss.create_queue("shorty", policy="short", dead_letter="dlq", retry_limit=0)
        for name, key in (("src", "p"), ("shorty", "c")):
            job_id = boss.send(name, {"by": "python"}, singleton_key=key, priority=4, group={"id": "g"})
            boss.fetch(name)
            boss.fail(name, job_id, {"why": "python"})
        boss.send("shorty", {"blocks": "c"}, singleton_key="c")
    copies = {r["singleton_key"]: r["id"] for r in rows(engine, schema, "name = 'dlq'")}
    roots = {r["singleton_key"]: r["source_id"] for r in rows(engine, schema, "name = 'dlq'")}
    node = pgboss12.run(
        schema,
        [
            QUIET,
            call("send", "src", {"by": "node"}, {"singletonKey": "n", "priority": 4, "group": {"id": "g"}}),
            call("fetch", "src"),
            call("fail", "src", {"$ref": "1"}, {"why": "node"}),
            call("send", "shorty", {"by": "node"}, {"singletonKey": "d", "priority": 4, "group": {"id": "g"}}),
            call("fetch", "shorty"),
            call("fail", "shorty", {"$ref": "4"}, {"why": "node"}),
            call("send", "shorty", {"blocks": "d"}, {"singletonKey": "d"}),
            call("previewRedrive", "dlq"),
            call("redrive", "dlq", {"ids": [str(copies["p"]), str(copies["c"])]}),
            call("stop", {"graceful": False}),
        ],
    )
    assert node[8] == {
        "total": 4,
        "destinations": [{"name": "shorty", "count": 2}, {"name": "src", "count": 2}],
        "unroutable": 0,
    }
    assert node[9] == 1
    left = {r["singleton_key"]: r for r in rows(engine, schema, "name = 'dlq' AND state = 'created'")}
    assert set(left) == {"n", "d"}
    roots.update({key: r["source_id"] for key, r in left.items()})
    with python_side() as boss:
        assert boss.preview_redrive("dlq") == RedrivePreview(
            total=2, destinations={"shorty": 1, "src": 1}, unroutable=0
        )
        assert boss.redrive("dlq", ids=[left["n"]["id"], left["d"]["id"]]) == 1
    # Moved: a new job in src for each, the dead-letter row gone.
    moved = {r["singleton_key"]: r for r in rows(engine, schema, "name = 'src' AND state = 'created'")}
    assert set(moved) == {"p", "n"}
    assert (moved["p"]["source_root_id"], moved["n"]["source_root_id"]) == (roots["p"], roots["n"])
    assert comparable(moved["n"], "data", "singleton_key", "source_root_id") == comparable(
        moved["p"], "data", "singleton_key", "source_root_id"
    )
    assert (moved["n"]["retry_limit"], moved["n"]["priority"]) == (0, 4)
    # Refused by shorty's policy: failed in place, the same reason whichever side redrove it.
    failed = {r["singleton_key"]: r for r in rows(engine, schema, "name = 'dlq'")}
    assert set(failed) == {"c", "d"}
    for key, by in (("c", "node"), ("d", "python")):
        assert failed[key]["state"] == "failed", by
        assert failed[key]["output"] == {
            "message": f"Not redriven: queue shorty already has a job with singletonKey {key} under its short policy",
            "reason": "redrive_conflict",
            "destination": "shorty",
            "policy": "short",
            "singletonKey": key,
        }, by
    ignored = (
        "data",
        "singleton_key",
        "source_id",
        "source_root_id",
        "source_created_on",
        "source_output",
        "output",
        "completed_on",
    )
    assert comparable(failed["c"], *ignored) == comparable(failed["d"], *ignored)
    assert (failed["c"]["source_output"], failed["d"]["source_output"]) == ({"why": "python"}, {"why": "node"})


# --------------------------------------------------------------------------------------------- flows


def test_a_flow_made_on_one_side_is_released_on_the_other(
    engine: Engine, pgboss12: PgBoss, installed_schema: str, python_side: Callable[[], Any]
) -> None:
    """Python sends a flow (fp -> fc), Node one of the same shape (gp -> gc): the rows and edges agree; Node
    completes Python's parents and its resolver releases Python's child, and the other way round."""
    schema = installed_schema

    def shape(parents: str, child: str) -> list[dict[str, Any]]:
        return [
            {"ref": "p", "name": parents, "data": {"s": 1}},
            {"ref": "q", "name": parents},
            {"ref": "c", "name": child, "depends_on": ["p", "q"], "options": {"priority": 2}},
        ]

    with python_side() as boss:
        for name in ("fp", "fc", "gp", "gc"):
            boss.create_queue(name, **SETTINGS)
        ours = boss.flow(shape("fp", "fc"))
    python_flow = {ref: one(engine, schema, "id = :id", id=job_id) for ref, job_id in ours.items()}
    node_shape = [
        {key.replace("depends_on", "dependsOn"): value for key, value in job.items()} for job in shape("gp", "gc")
    ]
    node = pgboss12.run(
        schema,
        [
            QUIET,
            call("flow", node_shape),
            call("getDependencies", "fc", str(ours["c"])),
            call("getDependents", "fp", str(ours["p"])),
            call("fetch", "fp", {"batchSize": 5}),
            call("complete", "fp", [str(ours["p"]), str(ours["q"])]),
            call("fetch", "fc"),
            call("resolveFlow"),
            call("fetch", "fc"),
            call("stop", {"graceful": False}),
        ],
    )
    theirs = {ref: uuid.UUID(job_id) for ref, job_id in node[1].items()}
    node_flow = {ref: one(engine, schema, "id = :id", id=job_id) for ref, job_id in theirs.items()}
    for ref in ("p", "q", "c"):
        assert comparable(python_flow[ref]) == comparable(node_flow[ref]), ref
    assert [(r["blocked"], r["blocking"], r["pending_dependencies"]) for r in node_flow.values()] == [
        (False, True, 0),
        (False, True, 0),
        (True, False, 2),
    ]
    # Node reads Python's edges, completes Python's parents, and only its resolver releases the child.
    assert node[2] == sorted(({"name": "fp", "id": str(ours[ref])} for ref in "pq"), key=lambda e: e["id"])
    assert node[3] == [{"name": "fc", "id": str(ours["c"])}]
    assert sorted(job["id"] for job in node[4]) == sorted(str(ours[ref]) for ref in "pq")
    assert node[5]["affected"] == 2
    assert node[6] == []
    assert [job["id"] for job in node[8]] == [str(ours["c"])]
    with python_side() as boss:
        expected = sorted((JobRef("gp", theirs[ref]) for ref in "pq"), key=lambda r: r.id)
        assert boss.get_dependencies("gc", theirs["c"]) == expected
        assert boss.get_dependents("gp", theirs["q"]) == [JobRef("gc", theirs["c"])]
        assert {job.id for job in boss.fetch("gp", batch_size=5)} == {theirs["p"], theirs["q"]}
        assert boss.complete("gp", [theirs["p"], theirs["q"]]) == 2
        assert boss.fetch("gc") == []
        assert boss.resolve_flow() == 2
        assert [job.id for job in boss.fetch("gc")] == [theirs["c"]]
    with engine.connect() as connection:
        found = connection.execute(
            text(f"SELECT child_name, child_id, parent_name, parent_id FROM {quote_identifier(schema)}.job_dependency")
        )
        edges = {tuple(edge) for edge in found}
    assert edges == {
        ("fc", ours["c"], "fp", ours["p"]),
        ("fc", ours["c"], "fp", ours["q"]),
        ("gc", theirs["c"], "gp", theirs["p"]),
        ("gc", theirs["c"], "gp", theirs["q"]),
    }
    released = rows(engine, schema, "name IN ('fc', 'gc')")
    assert [(r["state"], r["blocked"], r["pending_dependencies"]) for r in released] == [("active", False, 0)] * 2
