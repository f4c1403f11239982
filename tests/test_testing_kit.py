"""The testing kit's packaging and the outcome rule it shares with the workers (tests/users/ uses the kit)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from importlib.metadata import entry_points
from typing import Any

import pytest

from sqla_boss import Job
from sqla_boss.errors import PayloadError
from sqla_boss.handling import settle


def test_the_plugin_is_registered_for_pytest() -> None:
    (plugin,) = [point for point in entry_points(group="pytest11") if point.name == "sqla_boss"]
    assert plugin.value == "sqla_boss.testing.plugin"


@pytest.mark.parametrize("module", ["sqla_boss", "sqla_boss.testing", "sqla_boss.testing.plugin"])
def test_importing_needs_no_factory_boy(module: str) -> None:
    """``import sqla_boss`` needs neither factory-boy nor pytest, and the plugin, loaded in every test run of
    a project that installs sqla_boss, needs no factory-boy: it is imported when a factory is first used."""
    checks = "import sys; " + f"import {module}; " + "print(sorted({'factory', 'pytest'} & set(sys.modules)))"
    printed = subprocess.run([sys.executable, "-c", checks], capture_output=True, text=True, check=True).stdout
    expected = "['pytest']" if module.endswith("plugin") else "[]"
    assert printed.strip() == expected


def jobs(count: int) -> list[Job]:
    return [Job(id=uuid.uuid4(), name="q") for _ in range(count)]


@pytest.mark.parametrize(
    ("count", "result", "error", "failed", "output"),
    [
        (1, {"a": 1}, None, False, {"a": 1}),
        (2, {"a": 1}, None, False, None),  # a batch stores no output, as pg-boss
        (1, None, ValueError("boom"), True, "boom"),
        (1, {1: "key"}, None, True, PayloadError),  # no JSON: failed with the reason, not raised
        (2, {1: "key"}, None, False, None),  # a batch's result is not stored, so it is not checked
    ],
    ids=["single", "batch", "raised", "no_json", "batch_no_json"],
)
def test_settle_follows_the_workers_rules(
    count: int, result: Any, error: BaseException | None, failed: bool, output: Any
) -> None:
    batch = jobs(count)
    completion = settle(batch, result, error)

    assert completion.ids == [job.id for job in batch]
    assert completion.failed is failed
    if isinstance(output, type):
        assert isinstance(completion.output, output)
    elif isinstance(completion.output, BaseException):
        assert str(completion.output) == output
    else:
        assert completion.output == output
