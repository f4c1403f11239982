"""The documentation's own tests: every fenced code block of README.md and docs/*.md runs, or says why not.

**Pages.** Each page runs on its own, top to bottom, in a fresh database of its own (``zz_docs_<uuid8>`` on the
suite's server, dropped afterwards with everything in it), so snippets use the default ``pgboss`` schema and
plain table names exactly as a user would. ``DATABASE_URL`` is set to that database, as a SQLAlchemy URL for
psycopg 3 (``postgresql+psycopg://...``), for the Python blocks and for every command. Pages without runnable
blocks (such as a placeholder) need no database and pass.

**Blocks, by language:**

* ``python``: executed in order in one namespace per page (a module of its own, like a doctest session).
  Top-level ``await`` works, as in ``python -m asyncio``; every coroutine of a page runs on one event loop.
  Tracebacks point at the Markdown file and line.
* ``console`` / ``shell`` / ``sh`` / ``bash``: one command per line (``\\`` continues a line, ``#`` comments
  are fine), each run by bash from the repository root and required to exit 0. No ``$`` prompts.
* ``js`` / ``javascript``: written to an ``.mjs`` file beside a ``node_modules`` that holds pg-boss 10.4.2 (the
  interop tests' install; pg-boss 12.38.0 under ``<!-- node: pg-boss 12.38.0 -->``) and run by Node. Without
  Node the page still runs and is reported as skipped; with ``SQLA_BOSS_REQUIRE_PGBOSS=1`` that is a failure
  instead.
* ``ini`` / ``toml`` / ``json``: parsed.
* anything else (``text``, ``sql``, no language...) needs a ``not run`` or ``not code`` directive.

**Directives** are HTML comments right above a fence (blank lines may separate them), so readers never see
them. A comment of the form ``<!-- word: ... -->`` is a directive, and an unknown word fails the page:

* ``<!-- not run: REASON -->``: the block is not run (``pip install``, the whole test suite, an 18-minute
  benchmark). The reason is required: no block escapes silently.
* ``<!-- not code: REASON -->``: output or an excerpt, not something to run (``not code: output``).
* ``<!-- setup: PYTHON -->`` / ``<!-- then: PYTHON -->``: hidden Python run in the page's namespace before /
  after the block (for a console block too). Multi-line code starts on the line after ``setup:``.
* ``<!-- file: PATH -->``: write the block to PATH in the page's scratch directory instead of running it (Python
  is compiled, ini/toml/json parsed); a later block uses it.
* ``<!-- cwd: scratch -->``: run a console block in the page's scratch directory, not the repository root.
* ``<!-- sigterm when: PYTHON EXPRESSION -->``: a console block of one long-running command (``sqla-boss
  work``): start it, poll the expression (30 s at most), send SIGTERM, and require exit status 0.
* ``<!-- expect exit: N -->``: a console block whose commands must exit N instead of 0.

Hidden code sees ``harness`` (:class:`Harness`): ``wait_for`` (``await harness.until`` while the page's event
loop must keep running), ``count``, ``sql``, ``drop_schema``, ``last`` (the commands of the last console block,
with their output), ``scratch``, ``url``, ``engine``.

**Tests.** Per page: the rules above are checked without a database, the relative links and their anchors must
resolve, and the page runs; a failure names the file and line. The README must link every page of ``docs/``.
"""

from __future__ import annotations

import ast
import asyncio
import configparser
import contextlib
import inspect
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import traceback
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool
from support import ROOT, drop_schema

from sqla_boss import AsyncWorker, Worker
from sqla_boss.identifiers import quote_identifier

try:
    import tomllib
except ImportError:  # Python 3.10: TOML blocks are written out, not parsed
    tomllib = None  # type: ignore[assignment]

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
PYTHON = {"python", "py"}
CONSOLE = {"console", "shell", "sh", "bash"}
NODE = {"js", "javascript", "mjs"}
PARSED = {"ini", "toml", "json"}
DIRECTIVES = {"not run", "not code", "setup", "then", "file", "cwd", "sigterm when", "expect exit", "node"}
NODE_PACKAGES = {"pg-boss 10.4.2": "pg-boss", "pg-boss 12.38.0": "pg-boss-12"}
"""``<!-- node: pg-boss 12.38.0 -->``: which pg-boss a JavaScript block's ``import ... from "pg-boss"`` gets (the
npm alias it is installed under in ``tests/pgboss_node``); 10.4.2 without the directive."""
COMMAND_TIMEOUT = 180.0
"""Seconds one command may take (a few commands start Python, Alembic or Node)."""
WAIT_TIMEOUT = 30.0
"""Seconds :meth:`Harness.wait_for` and ``sigterm when`` wait before they fail."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"\s*(?P<word>[a-z][a-z ]*?)\s*:(?P<value>.*)\Z", re.S)


# ------------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class Directive:
    word: str
    value: str
    line: int
    """The line of the comment's ``<!--`` (1-based)."""
    code_line: int
    """The line the value starts on (1-based): the same line, or the next for a multi-line value."""


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    """The line of the opening fence (1-based)."""
    language: str
    source: str
    directives: tuple[Directive, ...]

    @property
    def where(self) -> str:
        return f"{_shown(self.page)}:{self.line}"

    def get(self, word: str) -> str | None:
        values = [d.value for d in self.directives if d.word == word]
        return values[-1] if values else None

    def all(self, word: str) -> list[Directive]:
        return [d for d in self.directives if d.word == word]

    @property
    def runs(self) -> bool:
        return self.get("not run") is None and self.get("not code") is None


def _shown(page: Path) -> str:
    """``page`` relative to the repository, as failures name it."""
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def parse(page: Path) -> list[Block]:
    """Every fenced block of ``page``, with the directives above it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = index + 1
        while end < len(lines) and closing.match(lines[end]) is None:
            end += 1
        if end == len(lines):
            raise AssertionError(f"{_shown(page)}:{index + 1}: a code fence that is never closed")
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[index + 1 : end]]
        info = opening["info"].strip()
        blocks.append(
            Block(
                page=page,
                line=index + 1,
                language=info.split()[0].lower() if info else "",
                source="\n".join(body) + "\n",
                directives=_directives_above(lines, index),
            )
        )
        index = end + 1
    return blocks


def _directives_above(lines: list[str], fence: int) -> tuple[Directive, ...]:
    found: list[Directive] = []
    index = fence - 1
    while index >= 0:
        if not lines[index].strip():
            index -= 1
            continue
        if not lines[index].rstrip().endswith("-->"):
            break
        start = index
        while start >= 0 and "<!--" not in lines[start]:
            start -= 1
        if start < 0:
            break
        comment = "\n".join(lines[start : index + 1])
        inner = comment[comment.index("<!--") + 4 : comment.rindex("-->")]
        match = _DIRECTIVE.match(inner)
        if match is None:
            break
        value = match["value"]
        first, _, rest = value.partition("\n")
        multiline = not first.strip() and bool(rest.strip())
        value = textwrap.dedent(rest).strip() if multiline else value.strip()
        found.append(Directive(match["word"], value, start + 1, start + 2 if multiline else start + 1))
        index = start - 1
    return tuple(reversed(found))


def commands(block: Block) -> list[tuple[int, str]]:
    """The commands of a console block, with their line numbers: continuations joined, comments kept."""
    result: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for offset, line in enumerate(block.source.splitlines(), start=block.line + 1):
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = offset
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        pending.append(line)
        result.append((start, " ".join(part.strip() for part in pending)))
        pending = []
    if pending:
        result.append((start, " ".join(part.strip() for part in pending)))
    return result


def problems(block: Block) -> list[str]:
    """Why ``block`` breaks the rules (see the module documentation); empty when it follows them."""
    found: list[str] = []
    for directive in block.directives:
        if directive.word not in DIRECTIVES:
            found.append(f"unknown directive {directive.word!r} on line {directive.line}")
    for word in ("not run", "not code"):
        if any(not d.value for d in block.all(word)):
            found.append(f"'{word}:' needs a reason")
    if not block.runs:
        extra = {d.word for d in block.directives} - {"not run", "not code"}
        if extra:
            found.append(f"a block that is not run cannot also have {sorted(extra)}")
        return found
    node = block.get("node")
    if node is not None and (block.language not in NODE or node.strip() not in NODE_PACKAGES):
        found.append(f"'node:' goes on a JavaScript block and names one of {sorted(NODE_PACKAGES)}, not {node!r}")
    if block.get("file") is None and block.language not in PYTHON | CONSOLE | NODE | PARSED:
        found.append(
            f"```{block.language or '(no language)'} is not run: mark it <!-- not code: ... --> or "
            "<!-- not run: ... --> with the reason"
        )
    path = block.get("file")
    if path is not None and (not path or Path(path).is_absolute() or ".." in Path(path).parts):
        found.append(f"'file:' needs a relative path inside the scratch directory, not {path!r}")
    if block.language in CONSOLE:
        for _, command in commands(block):
            if command.startswith("$ "):
                found.append(f"write commands without a '$ ' prompt: {command!r}")
        if block.get("sigterm when") is not None and len(commands(block)) != 1:
            found.append("'sigterm when:' needs a block of exactly one command")
    else:
        for word in ("cwd", "sigterm when", "expect exit"):
            if block.get(word) is not None:
                found.append(f"'{word}:' is for console blocks")
    if block.get("cwd") not in (None, "scratch", "root"):
        found.append(f"'cwd:' is 'scratch' or 'root', not {block.get('cwd')!r}")
    expected = block.get("expect exit")
    if expected is not None and not expected.isdigit():
        found.append(f"'expect exit:' needs a number, not {expected!r}")
    for word, mode in (("setup", "exec"), ("then", "exec"), ("sigterm when", "eval")):
        for directive in block.all(word):
            try:
                compile(directive.value, block.where, mode, flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
            except SyntaxError as exc:
                found.append(f"'{word}:' on line {directive.line} is not Python: {exc}")
    if block.language in PYTHON and block.get("file") is None:
        try:
            _compile(block)
        except SyntaxError as exc:
            found.append(f"not Python: {exc}")
    return found


def _compile(block: Block) -> types.CodeType:
    """The block as code whose line numbers are the Markdown file's (tracebacks show the page's lines)."""
    padded = "\n" * block.line + block.source
    return compile(padded, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


PAGE_PARAMS = [pytest.param(page, id=str(page.relative_to(ROOT))) for page in PAGES]


# ------------------------------------------------------------------------------------------------ running


@dataclass
class Harness:
    """What a page runs against, and the helpers its hidden code may use."""

    url: URL
    """The page's database, for psycopg 3."""
    engine: Engine
    scratch: Path
    """The page's scratch directory: ``file:`` blocks go here, ``cwd: scratch`` commands run here."""
    namespace: dict[str, Any]
    last: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    """The commands of the last console block that ran, with their output."""
    loop: asyncio.AbstractEventLoop | None = None
    skipped: list[str] = field(default_factory=list)

    def wait_for(self, predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT, what: str = "") -> None:
        """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout} s for {what or 'a condition'} in vain")
            time.sleep(0.05)

    async def until(self, predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT, what: str = "") -> None:
        """:meth:`wait_for` for pages with an event loop: the page's tasks (an ``AsyncWorker``) run meanwhile."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout} s for {what or 'a condition'} in vain")
            await asyncio.sleep(0.05)

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """Rows of ``statement``, read on a connection of the harness's own."""
        with self.engine.connect() as connection:
            return list(connection.execute(text(statement), params))

    def count(self, queue: str, state: str | None = None, schema: str = "pgboss") -> int:
        """How many jobs ``queue`` holds (in ``state``), committed."""
        where = "name = :queue" + ("" if state is None else " AND state::text = :state")
        rows = self.sql(f"SELECT count(*) FROM {quote_identifier(schema)}.job WHERE {where}", queue=queue, state=state)
        return int(rows[0][0])

    def drop_schema(self, schema: str) -> None:
        """Drop ``schema`` and the version tables of our revisions for it."""
        drop_schema(self.engine, schema)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DATABASE_URL"] = self.url.render_as_string(hide_password=False)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


@contextlib.contextmanager
def page_database(engine: Engine, database_url: URL) -> Iterator[URL]:
    """A new database for one page, dropped afterwards (connections left open are terminated)."""
    name = f"zz_docs_{uuid.uuid4().hex[:8]}"
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {quote_identifier(name)}"))
    try:
        yield database_url.set(drivername="postgresql+psycopg", database=name)
    finally:
        with autocommit.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)"))


class BlockFailedError(Exception):
    """A block did not do what it should; the message names the page and line."""


def run_block(block: Block, harness: Harness) -> None:
    """Run one block with its hidden ``setup`` and ``then`` code (see the module documentation)."""
    for directive in block.all("setup"):
        _exec_hidden(directive, block, harness)
    path = block.get("file")
    if path is not None:
        _write_file(block, harness.scratch / path)
    elif block.language in PYTHON:
        _run_python(_compile(block), harness)
    elif block.language in CONSOLE:
        _run_console(block, harness)
    elif block.language in NODE:
        if not _run_node(block, harness):
            return  # skipped, and so are its checks
    else:
        _check_parsed(block.language, block.source)
    for directive in block.all("then"):
        _exec_hidden(directive, block, harness)


def _exec_hidden(directive: Directive, block: Block, harness: Harness) -> None:
    code = compile(
        "\n" * (directive.code_line - 1) + directive.value,
        str(block.page),
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    _run_python(code, harness)


def _run_python(code: types.CodeType, harness: Harness) -> None:
    if code.co_flags & inspect.CO_COROUTINE:
        if harness.loop is None:
            harness.loop = asyncio.new_event_loop()
        harness.loop.run_until_complete(eval(code, harness.namespace))
    else:
        exec(code, harness.namespace)


def _write_file(block: Block, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.source, encoding="utf-8")
    if block.language in PYTHON:
        compile(block.source, str(path), "exec", dont_inherit=True)
    elif block.language in PARSED:
        _check_parsed(block.language, block.source)


def _check_parsed(language: str, source: str) -> None:
    if language == "toml":
        if tomllib is not None:
            tomllib.loads(source)
    elif language == "json":
        json.loads(source)
    else:
        configparser.ConfigParser(interpolation=None).read_string(source)


def _run_console(block: Block, harness: Harness) -> None:
    cwd = harness.scratch if block.get("cwd") == "scratch" else ROOT
    expected = int(block.get("expect exit") or 0)
    harness.last = []
    condition = block.get("sigterm when")
    for line, command in commands(block):
        if condition is not None:
            harness.last.append(_run_until(command, condition, cwd, harness, f"{_shown(block.page)}:{line}"))
            continue
        completed = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=harness.environment(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        harness.last.append(completed)
        if completed.returncode != expected:
            raise BlockFailedError(
                f"{_shown(block.page)}:{line}: `{command}` exited {completed.returncode}, not {expected}\n"
                f"--- stdout\n{completed.stdout}--- stderr\n{completed.stderr}"
            )


def _run_until(
    command: str, condition: str, cwd: Path, harness: Harness, where: str
) -> subprocess.CompletedProcess[str]:
    """Start ``command``, wait until ``condition`` holds, SIGTERM it; it must exit 0."""
    stem = harness.scratch / f"sigterm-{uuid.uuid4().hex[:8]}"
    out, err = stem.with_suffix(".out"), stem.with_suffix(".err")
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            shlex.split(command), cwd=cwd, env=harness.environment(), stdout=stdout, stderr=stderr
        )
        try:
            deadline = time.monotonic() + WAIT_TIMEOUT
            while not eval(condition, harness.namespace):
                if process.poll() is not None or time.monotonic() > deadline:
                    state = "ran" if process.returncode is None else f"exited {process.returncode}"
                    raise BlockFailedError(
                        f"{where}: `{command}` {state} before `{condition}` held\n"
                        f"--- stdout\n{out.read_text()}--- stderr\n{err.read_text()}"
                    )
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=COMMAND_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    completed = subprocess.CompletedProcess(command, returncode, out.read_text(), err.read_text())
    if returncode != 0:
        raise BlockFailedError(
            f"{where}: `{command}` exited {returncode} after SIGTERM, not 0\n"
            f"--- stdout\n{completed.stdout}--- stderr\n{completed.stderr}"
        )
    return completed


def _node_modules() -> tuple[str, Path] | str:
    """``node`` and the ``node_modules`` holding pg-boss 10.4.2, or why there are none."""
    import pgboss

    try:
        node, npm = pgboss.find_node()
    except pgboss.PgBossUnavailableError as exc:
        return str(exc)
    driver = pgboss.install(npm)
    return node, driver.parent / "node_modules"


def _run_node(block: Block, harness: Harness) -> bool:
    """Run a JavaScript block beside pg-boss 10.4.2; ``False`` when it was skipped for want of Node."""
    found = _node_modules()
    if isinstance(found, str):
        if os.environ.get("SQLA_BOSS_REQUIRE_PGBOSS") == "1":
            raise BlockFailedError(f"{block.where}: Node.js is required (SQLA_BOSS_REQUIRE_PGBOSS=1): {found}")
        harness.skipped.append(f"{block.where} (JavaScript): {found}")
        return False
    node, modules = found
    package = NODE_PACKAGES[(block.get("node") or "pg-boss 10.4.2").strip()]
    # A folder per pg-boss, whose node_modules holds the installed packages with "pg-boss" being that one.
    folder = harness.scratch / f"node-{package}"
    link = folder / "node_modules"
    if not link.exists():
        link.mkdir(parents=True)
        for entry in modules.iterdir():
            if entry.name not in NODE_PACKAGES.values():
                (link / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        (link / "pg-boss").symlink_to(modules / package, target_is_directory=True)
    script = folder / f"block_{block.line}.mjs"
    script.write_text(block.source, encoding="utf-8")
    completed = subprocess.run(
        [node, str(script)],
        cwd=folder,
        env=harness.environment(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    harness.last = [completed]
    if completed.returncode != 0:
        raise BlockFailedError(
            f"{block.where}: the JavaScript block exited {completed.returncode}\n"
            f"--- stdout\n{completed.stdout}--- stderr\n{completed.stderr}"
        )
    return True


def _close(harness: Harness) -> None:
    """Stop what the page left running and close its engines, before its database is dropped."""
    values = list(harness.namespace.values())
    for value in values:
        if isinstance(value, Worker):
            value.stop(graceful=False, timeout=1)
    loop = harness.loop
    if loop is not None:
        for value in values:
            if isinstance(value, AsyncWorker):
                loop.run_until_complete(value.stop(graceful=False, timeout=1))
        for value in values:
            if isinstance(value, AsyncEngine):
                loop.run_until_complete(value.dispose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    for value in values:
        if isinstance(value, Engine):
            value.dispose()


# -------------------------------------------------------------------------------------------------- tests


def test_the_docs_folder_holds_the_pages_the_readme_maps() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    unmapped = [name for name in pages if f"(docs/{name})" not in readme]
    assert not unmapped, f"README.md does not link these pages: {unmapped}"


def test_the_rules_let_no_block_escape(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        textwrap.dedent(
            """\
            ```text
            output nobody marked
            ```

            <!-- not run: -->
            ```console
            pip install nothing
            ```

            <!-- not-run: a typo -->
            ```console
            sqla-boss queues
            ```

            <!-- sigterm when: True -->
            ```console
            sqla-boss work a:b
            sqla-boss work c:d
            ```

            <!-- not code: output -->
            ```text
            fine
            ```

            <!-- setup:
            x = 1
            -->

            ```python
            print(x)
            ```
            """
        ),
        encoding="utf-8",
    )
    found = {block.line: problems(block) for block in parse(page)}
    assert "is not run: mark it" in found[1][0]
    assert found[6] == ["'not run:' needs a reason"]
    assert found[11] == []  # "not-run" is no directive word: the block is a command, and runs
    assert found[16] == ["'sigterm when:' needs a block of exactly one command"]
    assert found[22] == []
    assert found[30] == []
    (setup,) = parse(page)[-1].directives
    assert (setup.word, setup.value, setup.code_line) == ("setup", "x = 1", 27)


def test_a_node_directive_names_a_pg_boss_we_install_on_a_javascript_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        textwrap.dedent(
            """            <!-- node: pg-boss 12.38.0 -->
            ```js
            console.log(1)
            ```

            <!-- node: pg-boss 11 -->
            ```js
            console.log(2)
            ```

            <!-- node: pg-boss 12.38.0 -->
            ```python
            print(3)
            ```
            """
        ),
        encoding="utf-8",
    )
    found = [problems(block) for block in parse(page)]
    assert found[0] == []
    assert all(len(problem) == 1 and "'node:' goes on a JavaScript block" in problem[0] for problem in found[1:])


@pytest.mark.parametrize("page", PAGE_PARAMS)
def test_every_block_runs_or_says_why(page: Path) -> None:
    found = [f"{block.where}: {problem}" for block in parse(page) for problem in problems(block)]
    assert not found, "\n".join(found)


_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page`` (outside code blocks)."""
    anchors: set[str] = set()
    fence = ""
    for line in page.read_text(encoding="utf-8").splitlines():
        opening = _FENCE.match(line)
        if opening is not None:
            if not fence:
                fence = opening["fence"]
            elif line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = ""
            continue
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading and not fence:
            title = re.sub(r"[`*]", "", heading.group(1)).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGE_PARAMS)
def test_links_between_pages_resolve(page: Path) -> None:
    broken = []
    prose = re.sub(r"^(`{3,}|~{3,}).*?^\1", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    for match in _LINK.finditer(prose):
        target = match["target"]
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGE_PARAMS)
def test_page_runs(
    page: Path, engine: Engine, database_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = parse(page)
    broken = [f"{block.where}: {problem}" for block in blocks for problem in problems(block)]
    if broken:
        pytest.fail("the page breaks the rules:\n" + "\n".join(broken), pytrace=False)
    runnable = [block for block in blocks if block.runs]
    if not runnable:
        return
    timings: list[tuple[float, str]] = []
    stem = re.sub(r"\W", "_", page.stem)
    module = types.ModuleType(f"docs_{stem}_{uuid.uuid4().hex[:8]}")
    with page_database(engine, database_url) as url:
        monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
        harness_engine = create_engine(url, poolclass=NullPool)
        harness = Harness(url=url, engine=harness_engine, scratch=tmp_path, namespace=module.__dict__)
        module.__dict__["harness"] = harness
        sys.modules[module.__name__] = module
        try:
            for block in runnable:
                started = time.perf_counter()
                failure = None
                try:
                    run_block(block, harness)
                except BlockFailedError as exc:
                    failure = str(exc)
                except Exception:
                    failure = f"{block.where}: the ```{block.language} block failed\n{traceback.format_exc()}"
                if failure is not None:
                    pytest.fail(failure, pytrace=False)
                timings.append((time.perf_counter() - started, block.where))
        finally:
            sys.modules.pop(module.__name__, None)
            try:
                _close(harness)
            finally:
                harness_engine.dispose()
    print("slowest blocks:", ", ".join(f"{where} {seconds:.1f} s" for seconds, where in sorted(timings)[::-1][:5]))
    if harness.skipped:
        pytest.skip("the page ran, but without these blocks: " + "; ".join(harness.skipped))
