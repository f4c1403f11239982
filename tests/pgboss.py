"""Driving the real Node pg-boss 10.4.2 and 12.38.0 from tests, through our script ``tests/pgboss_node/driver.mjs``.

``tests/pgboss_node/package.json`` installs both: 10.4.2 as ``pg-boss`` and 12.38.0 under the npm alias
``pg-boss-12``. The driver loads the package named by ``$PGBOSS_PACKAGE`` (``pg-boss`` when unset), which
:class:`PgBoss` sets from its ``package`` field for every process it starts.

The first use on a machine installs the locked Node dependencies (``npm ci``, both versions at once) into a
cache directory, ``$SQLA_BOSS_NODE_CACHE`` or ``~/.cache/sqla_boss/pgboss-10.4.2``, under a file lock so
parallel pytest processes install once. Later runs reuse it until ``package.json`` or ``package-lock.json``
change. (pg-boss 12.38 declares Node 22.12+, but runs on Node 20; npm only warns.)

Without ``node`` (20 or later) or ``npm`` the tests that need them are skipped, loudly; with
``SQLA_BOSS_REQUIRE_PGBOSS=1`` (as in CI) they fail instead.

Tests use the ``pgboss`` fixture, imported explicitly by the test module::

    from pgboss import PgBoss, call, pgboss_fixture, pgboss_install_fixture, start  # noqa: F401

(the two ``*_fixture`` functions are the fixtures ``pgboss`` and ``pgboss_install``)

    def test_something(pgboss: PgBoss, schema_name: str) -> None:
        results = pgboss.run(schema_name, [start(schedule=False), call("createQueue", "q")])

For pg-boss 12.38.0, import ``pgboss12_fixture`` too and use the fixture ``pgboss12`` the same way (its
``start`` options are 12.x's: no archive options, for one)::

    from pgboss import PgBoss, call, pgboss12_fixture, pgboss_install_fixture, start, static  # noqa: F401

    def test_something_else(pgboss12: PgBoss, schema_name: str) -> None:
        [sql, _, drift] = pgboss12.run(
            schema_name,
            [static("getConstructionPlans", schema_name), start(supervise=False), call("detectSchemaDrift")],
        )

Instance methods (``detectSchemaDrift``, ``schemaVersion``...) are plain :func:`call` actions after
:func:`start`; :func:`static` calls a named export of the package (12.x: ``getConstructionPlans``,
``getMigrationPlans``...) or else a static of its class (10.x: ``PgBoss.getConstructionPlans``...) and needs
no start; :func:`exports` lists both; :func:`listen` records more events (12.x's ``wip``, ``bam``, ``flow``...);
:func:`attempt` is :func:`call` recording an error as its result instead of ending the run.

``pgboss.spawn(schema, actions)`` runs a list in the background instead, for a pg-boss working alongside the
test (the driver's ``workSql`` and ``waitSql`` actions): see :meth:`PgBoss.spawn`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import URL

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, run one pytest at a time
    fcntl = None  # type: ignore[assignment]

PGBOSS_VERSION = "10.4.2"
PGBOSS12_VERSION = "12.38.0"
PGBOSS_PACKAGE = "pg-boss"
"""The npm name pg-boss 10.4.2 is installed under (``tests/pgboss_node/package.json``)."""
PGBOSS12_PACKAGE = "pg-boss-12"
"""The npm alias pg-boss 12.38.0 is installed under (``"pg-boss-12": "npm:pg-boss@12.38.0"``)."""
PACKAGE_VERSIONS = {PGBOSS_PACKAGE: PGBOSS_VERSION, PGBOSS12_PACKAGE: PGBOSS12_VERSION}
PACKAGE_ENV = "PGBOSS_PACKAGE"
"""The environment variable that tells the driver which package to import."""
NODE_PROJECT = Path(__file__).resolve().parent / "pgboss_node"
PACKAGE_FILES = ("package.json", "package-lock.json")
DRIVER = NODE_PROJECT / "driver.mjs"

CACHE_ENV = "SQLA_BOSS_NODE_CACHE"
REQUIRE_ENV = "SQLA_BOSS_REQUIRE_PGBOSS"
MIN_NODE_MAJOR = 20

DEFAULT_TIMEOUT = 120.0
"""Seconds one driver run may take before it is killed (a start with defaults and a stop take ~1 s)."""

INSTALL_TIMEOUT = 600.0


class PgBossUnavailableError(RuntimeError):
    """Node or npm is missing or too old, so pg-boss cannot run here."""


class PgBossDriverError(RuntimeError):
    """A driver run failed: an action threw, or the process died. Carries its output."""

    def __init__(self, message: str, *, output: dict[str, Any] | None, stderr: str) -> None:
        super().__init__(message)
        self.output = output
        self.stderr = stderr

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object the driver reported (``message``, ``code``, ``stack``...), or ``{}``."""
        return dict((self.output or {}).get("error") or {})


# --- building action lists ---------------------------------------------------------------------------


def start(**options: Any) -> dict[str, Any]:
    """The action that creates ``new PgBoss({connectionString, schema, ...options})`` and starts it; the options
    go through as they are, so they must be the version's own."""
    return {"action": "start", "options": options}


def call(method: str, *args: Any) -> dict[str, Any]:
    """The action that awaits ``boss[method](...args)``; ``createQueue``, ``send``, ``fetch``, ``stop``..."""
    return {"action": method, "args": list(args)}


def attempt(method: str, *args: Any) -> dict[str, Any]:
    """Like :func:`call`, but an error does not end the run: the result is ``{"ok": True, "result": ...}`` or
    ``{"ok": False, "error": {"name", "message", "code"...}}``, so one run can record several refusals."""
    return {"action": "attempt", "args": [method, *args]}


def static(name: str, *args: Any) -> dict[str, Any]:
    """The action that awaits the package's named export ``name(...args)`` (12.x: ``getConstructionPlans``,
    ``getMigrationPlans``...), or else the class's static ``PgBoss[name](...args)`` (10.x); a name that is
    not a function gives its value (``states``, ``policies``). Needs no :func:`start`."""
    return {"action": "static", "args": [name, *args]}


def exports() -> dict[str, Any]:
    """The action that returns ``{"package", "version", "exports": [...], "statics": [...]}``: what the loaded
    pg-boss offers. Needs no :func:`start`."""
    return {"action": "exports", "args": []}


def listen(*events: str) -> dict[str, Any]:
    """The action that records more pg-boss events in the output's ``events`` (``{"event", "at", "result"}``),
    e.g. 12.x's ``wip``, ``bam``, ``flow``, ``stopped``; before :func:`start` it also catches what start emits.
    ``error``, ``warning`` (12.x) and ``maintenance`` (10.x) events are always recorded."""
    return {"action": "listen", "args": list(events)}


def ref(index: int, *path: str | int) -> dict[str, str]:
    """A placeholder for a value from the result of action ``index``: ``ref(3, 0, "id")``."""
    return {"$ref": ".".join(str(part) for part in (index, *path))}


def js_date(iso: str) -> dict[str, str]:
    """A placeholder the driver turns into ``new Date(iso)``, e.g. for ``startAfter``."""
    return {"$date": iso}


def js_error(name: str, message: str, **properties: Any) -> dict[str, Any]:
    """A placeholder the driver turns into ``new <name>(message)`` with extra own ``properties``.

    ``name`` is a built-in JavaScript error class: ``Error``, ``TypeError``, ``RangeError``...
    """
    return {"$error": {"name": name, "message": message, **properties}}


def partition_name(queue: str) -> str:
    """The partition pg-boss gives a queue (for names without backslashes)."""
    return "j" + hashlib.sha224(queue.encode()).hexdigest()


# --- finding Node and installing pg-boss --------------------------------------------------------------


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "sqla_boss" / f"pgboss-{PGBOSS_VERSION}"


def find_node() -> tuple[str, str]:
    """The paths of ``node`` and ``npm``.

    Raises:
        PgBossUnavailableError: one is missing, or node is older than 20.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
    if missing:
        raise PgBossUnavailableError(f"{' and '.join(missing)} not found on PATH")
    assert node is not None
    assert npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        raise PgBossUnavailableError(f"node {version or '(unknown version)'} is too old; need {MIN_NODE_MAJOR}+")
    return node, npm


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def install(npm: str, cache: Path | None = None, *, script: Path = DRIVER) -> Path:
    """Install pg-boss into ``cache`` unless that is done already; return the driver script to run.

    ``script`` is our driver by default; the benchmark (``bench/``) installs its own script the same way.

    Safe to call from several processes at once. The driver is copied beside ``node_modules`` (an ES
    module finds its imports relative to its own file) under a name made from its content, so checkouts
    with different drivers can share one cache.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    stamp = hashlib.sha256(b"".join((NODE_PROJECT / name).read_bytes() for name in PACKAGE_FILES)).hexdigest()
    with _locked(cache / ".install.lock"):
        stamp_file = cache / ".installed"
        if not (stamp_file.exists() and stamp_file.read_text().strip() == stamp and (cache / "node_modules").is_dir()):
            stamp_file.unlink(missing_ok=True)
            for name in PACKAGE_FILES:
                shutil.copyfile(NODE_PROJECT / name, cache / name)
            completed = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=cache,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
            if completed.returncode != 0:
                raise RuntimeError(
                    f"npm ci in {cache} failed with exit code {completed.returncode}:\n"
                    f"{completed.stdout}\n{completed.stderr}"
                )
            stamp_file.write_text(stamp + "\n")
        content = script.read_bytes()
        driver = cache / f"{script.stem}-{hashlib.sha256(content).hexdigest()[:16]}.mjs"
        if not driver.exists():
            temporary = driver.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_bytes(content)
            temporary.replace(driver)
    return driver


# --- running the driver -------------------------------------------------------------------------------


def node_connection_string(url: URL) -> str:
    """``url`` as node-pg wants it: ``postgresql://`` without a SQLAlchemy driver name."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class PgBoss:
    """Runs action lists against pg-boss on one database: one Node process per list.

    ``package`` picks the pg-boss: :data:`PGBOSS_PACKAGE` (10.4.2, the default) or :data:`PGBOSS12_PACKAGE`
    (12.38.0); it becomes ``$PGBOSS_PACKAGE`` in each process's environment.
    """

    node: str
    driver: Path
    connection_string: str
    package: str = PGBOSS_PACKAGE

    @property
    def version(self) -> str:
        """The pg-boss version ``package`` is installed at."""
        return PACKAGE_VERSIONS[self.package]

    def run(self, schema: str, actions: Sequence[dict[str, Any]], *, timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
        """Run ``actions`` in one pg-boss process on ``schema``; return one result per action.

        Raises:
            PgBossDriverError: an action threw (its error is in ``.error``) or the process failed.
        """
        output = self.run_raw(schema, actions, timeout=timeout)
        return list(output["results"])

    def run_raw(
        self, schema: str, actions: Sequence[dict[str, Any]], *, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Like :meth:`run`, but return the driver's whole output (``results`` and ``events``)."""
        try:
            completed = subprocess.run(
                [self.node, str(self.driver)],
                input=self._command(schema, actions),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.driver.parent,
                env=self._environment(),
            )
        except subprocess.TimeoutExpired as exc:
            raise _timed_out(actions, timeout, exc) from None
        return _output(actions, completed.returncode, completed.stdout, completed.stderr)

    def spawn(self, schema: str, actions: Sequence[dict[str, Any]]) -> SpawnedPgBoss:
        """Start running ``actions`` in a pg-boss process on ``schema`` in the background; return at once.

        For a pg-boss that works alongside the test: end the list with an action that waits for something the
        test does (``waitSql``), then ``stop``. Use the handle as a context manager, so the process is killed
        whatever happens::

            with pgboss.spawn(schema, [start(...), call("workSql", ...), call("waitSql", ...), STOP]) as node:
                ...
                output = node.result(timeout=30)
        """
        with tempfile.TemporaryFile("w+") as command:  # the driver reads its command from stdin
            command.write(self._command(schema, actions))
            command.seek(0)
            process = subprocess.Popen(
                [self.node, str(self.driver)],
                stdin=command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=self.driver.parent,
                env=self._environment(),
            )
        return SpawnedPgBoss(process, list(actions))

    def _environment(self) -> dict[str, str]:
        return {**os.environ, PACKAGE_ENV: self.package}

    def _command(self, schema: str, actions: Sequence[dict[str, Any]]) -> str:
        return json.dumps({"connectionString": self.connection_string, "schema": schema, "actions": list(actions)})


class SpawnedPgBoss:
    """A driver process :meth:`PgBoss.spawn` started: wait for its output with :meth:`result`, end it with
    :meth:`kill`. As a context manager, it is killed on leaving the block unless it has finished."""

    def __init__(self, process: subprocess.Popen[str], actions: list[dict[str, Any]]) -> None:
        self.process = process
        self.actions = actions
        self._finished: tuple[str, str] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def done(self) -> bool:
        """Whether the process has exited (its output may still be unread)."""
        return self.process.poll() is not None

    def result(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Wait up to ``timeout`` seconds for the process to finish; return its whole output, as ``run_raw``.

        Raises:
            PgBossDriverError: an action threw, the process failed, or it did not finish in time (it is
                killed then).
        """
        stdout, stderr = self._communicate(timeout)
        return _output(self.actions, self.process.returncode, stdout, stderr)

    def kill(self) -> None:
        """Kill the process if it still runs, and reap it. Safe to call at any time, more than once."""
        if self._finished is None:
            if self.process.poll() is None:
                self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._communicate(30)

    def _communicate(self, timeout: float) -> tuple[str, str]:
        if self._finished is None:
            try:
                stdout, stderr = self.process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                self.process.kill()
                self._finished = self.process.communicate()
                raise _timed_out(self.actions, timeout, exc) from None
            self._finished = (stdout, stderr)
        return self._finished

    def __enter__(self) -> SpawnedPgBoss:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def _timed_out(actions: Sequence[dict[str, Any]], timeout: float, exc: subprocess.TimeoutExpired) -> PgBossDriverError:
    return PgBossDriverError(
        f"pg-boss driver did not finish within {timeout} s; actions: {json.dumps(actions)}\n"
        f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}",
        output=None,
        stderr=str(exc.stderr or ""),
    )


def _output(actions: Sequence[dict[str, Any]], returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The driver's output (its last line on stdout); raises :class:`PgBossDriverError` unless it is ok."""
    try:
        output: dict[str, Any] | None = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        output = None
    if returncode != 0 or output is None or not output.get("ok"):
        if output is not None and output.get("failed") is not None:
            step = output["failed"]
            what = f"action {step} ({output.get('action')}) failed: {output.get('error', {}).get('message')}"
        else:
            what = f"exited with code {returncode}"
        raise PgBossDriverError(
            f"pg-boss driver {what}\nactions: {json.dumps(actions)}\nstdout: {stdout}\nstderr: {stderr}",
            output=output,
            stderr=stderr,
        )
    return output


# --- fixtures -----------------------------------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    message = (
        f"PGBOSS INTEROP TESTS NOT RUN: {reason}. They prove wire-compatibility with the real pg-boss "
        f"{PGBOSS_VERSION} and {PGBOSS12_VERSION}; install Node {MIN_NODE_MAJOR}+ and npm to run them"
    )
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1 makes this an error)", pytrace=False)
    pytest.skip(f"{message}, or set {REQUIRE_ENV}=1 to make this an error")


@pytest.fixture(scope="session", name="pgboss_install")
def pgboss_install_fixture() -> tuple[str, Path]:
    """``node`` and the installed driver script; skips (or fails under $SQLA_BOSS_REQUIRE_PGBOSS=1)."""
    try:
        node, npm = find_node()
    except PgBossUnavailableError as exc:
        _unavailable(str(exc))
    return node, install(npm)


@pytest.fixture(scope="session", name="pgboss")
def pgboss_fixture(pgboss_install: tuple[str, Path], database_url: URL) -> PgBoss:
    """A :class:`PgBoss` runner for pg-boss 10.4.2 on the test database."""
    node, driver = pgboss_install
    return PgBoss(node=node, driver=driver, connection_string=node_connection_string(database_url))


@pytest.fixture(scope="session", name="pgboss12")
def pgboss12_fixture(pgboss_install: tuple[str, Path], database_url: URL) -> PgBoss:
    """A :class:`PgBoss` runner for pg-boss 12.38.0 on the test database."""
    node, driver = pgboss_install
    return PgBoss(
        node=node,
        driver=driver,
        connection_string=node_connection_string(database_url),
        package=PGBOSS12_PACKAGE,
    )
