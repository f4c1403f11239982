"""A real PgBouncer in transaction pooling in front of the test server, for the listener's fallback tests.

``run_pgbouncer(database_url)`` starts ``pgbouncer`` on a free port with an ini of a temporary directory of its
own (trust authentication, ``pool_mode = transaction``), pointed at the server of ``database_url``, and yields
the URL through it. PgBouncer refuses to run as root: as root it is started with ``-u nobody``. Missing
``pgbouncer`` skips the test, or fails it when ``SQLA_BOSS_REQUIRE_PGBOUNCER=1`` (as ``.ci/run`` sets).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import URL

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def find_pgbouncer() -> str:
    """The ``pgbouncer`` executable; skips (or fails, when it is required) without one."""
    found = shutil.which("pgbouncer", path=SEARCH_PATH)
    if found is None:
        message = "pgbouncer is not installed (apt-get install -y pgbouncer)"
        if os.environ.get("SQLA_BOSS_REQUIRE_PGBOUNCER") == "1":
            pytest.fail(f"{message}, and SQLA_BOSS_REQUIRE_PGBOUNCER=1 requires it")
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def run_pgbouncer(database_url: URL, *, pool_mode: str = "transaction") -> Iterator[URL]:
    """PgBouncer in ``pool_mode`` in front of ``database_url``'s server while the block runs; the URL through it."""
    executable = find_pgbouncer()
    if not database_url.host:
        pytest.skip("the PgBouncer fixture needs a server on TCP (DATABASE_URL with a host), not a socket")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="sqla-boss-pgbouncer-") as directory:
        home = Path(directory)
        home.chmod(0o777)  # PgBouncer, run as nobody, writes its log and pid file here
        users = home / "users.txt"
        users.write_text(f'"{database_url.username or "postgres"}" ""\n')
        ini = home / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={database_url.host} port={database_url.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            f"pool_mode = {pool_mode}\n"
            "unix_socket_dir =\n"
            f"logfile = {home / 'pgbouncer.log'}\n"
            f"pidfile = {home / 'pgbouncer.pid'}\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        for path in (users, ini):
            path.chmod(0o644)
        command = [executable, *(["-u", "nobody"] if os.geteuid() == 0 else []), str(ini)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        url = database_url.set(host="127.0.0.1", port=port)
        try:
            _wait_accepting(url, process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _wait_accepting(url: URL, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"pgbouncer exited with {process.returncode}: {output}")
        try:
            with psycopg.connect(conninfo, connect_timeout=2, prepare_threshold=None) as connection:
                connection.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
