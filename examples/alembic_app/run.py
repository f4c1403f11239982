"""Run the Alembic example: ``python examples/alembic_app/run.py [--database NAME] [--drop]``.

It creates the database (``alembic_app`` by default) on the server of ``$DATABASE_URL`` (else on the
embedded PostgreSQL that ``sqla-boss demo`` uses), runs ``alembic upgrade head`` there (sqla_boss's
revisions and the app's own), creates a pg-boss queue, then runs ``alembic revision --autogenerate`` and
checks that the generated revision is empty: autogenerate sees none of pg-boss's tables. The generated
file is removed again; the exit status is 1 if it was not empty.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import URL, Engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from sqla_boss import Boss, embedded
from sqla_boss.database import create_sync_engine, url_from_env

HERE = Path(__file__).resolve().parent
VERSIONS = HERE / "migrations" / "versions"


class ExampleFailed(Exception):
    """Something the example expects did not happen."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database",
        default=os.environ.get("EXAMPLE_DATABASE", "alembic_app"),
        help="the database to create and migrate (default: $EXAMPLE_DATABASE or alembic_app)",
    )
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    args = parser.parse_args()
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.database):
        parser.error("--database: lower-case letters, digits and underscores only")

    server_url = url_from_env()
    server = None
    if server_url is None:
        server = embedded.start()  # needs: pip install "sqla-boss[embedded]"
        server_url = server.url
    # CREATE DATABASE and DROP DATABASE cannot run in a transaction.
    admin = create_sync_engine(server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        create_database(admin, args.database)
        run(server_url.set(database=args.database))
    except ExampleFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        if args.drop:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
            print(f"Dropped the database {args.database}.")
        admin.dispose()
        if server is not None:
            server.stop()
    return 0


def create_database(admin: Engine, name: str) -> None:
    with admin.connect() as connection:
        exists = connection.scalar(
            text("SELECT EXISTS (SELECT FROM pg_database WHERE datname = :name)"), {"name": name}
        )
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
            print(f"Created the database {name}.")


def run(url: URL) -> None:
    print(f"Database: {url.render_as_string(hide_password=True)}\n")
    alembic(url, "upgrade", "head")

    engine = create_sync_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            pgboss_version = connection.scalar(text("SELECT version FROM pgboss.version"))
            ours = connection.scalar(text("SELECT version_num FROM public.alembic_version"))
            theirs = connection.scalar(text("SELECT version_num FROM public.alembic_pgboss"))
        print(f"The app's revision: {ours} (public.alembic_version)")
        print(f"sqla_boss's revision: {theirs} (public.alembic_pgboss), pg-boss schema version {pgboss_version}")

        # What the app does at run time: create its queues. Each one is a new partition of pgboss.job
        # (a table named j<sha224 of the name>), which autogenerate must not see either.
        with Session(engine) as session, session.begin():
            Boss(session).create_queue("emails")
            Boss(session).send("emails", {"to": "ada@example.com"})
        print("Created the queue 'emails' and sent it a job.\n")
    finally:
        engine.dispose()

    before = set(VERSIONS.glob("*.py"))
    alembic(url, "revision", "--autogenerate", "-m", "check")
    generated = set(VERSIONS.glob("*.py")) - before
    if len(generated) != 1:
        raise ExampleFailed(f"expected one new revision file in {VERSIONS}, found {sorted(generated)}")
    (path,) = generated
    try:
        source = path.read_text(encoding="utf-8")
    finally:
        path.unlink()  # the check revision is not meant to be kept
    upgrade, downgrade = function_body(source, "upgrade"), function_body(source, "downgrade")
    if upgrade != ["pass"] or downgrade != ["pass"]:
        raise ExampleFailed(f"autogenerate proposed changes:\n{source}")
    print(f"\nThe generated revision {path.name} is empty: upgrade() and downgrade() are just `pass`.")
    print("Autogenerate sees none of pg-boss's tables. Removed the file again.")


def alembic(url: URL, *args: str) -> None:
    """Run the ``alembic`` command line on this folder's alembic.ini, with ``$DATABASE_URL`` set to ``url``."""
    print(f"$ alembic {' '.join(args)}")
    env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
    completed = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(HERE / "alembic.ini"), *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
    )
    for line in (completed.stdout + completed.stderr).splitlines():
        print(f"  | {line}")
    if completed.returncode != 0:
        raise ExampleFailed(f"alembic {' '.join(args)} exited with code {completed.returncode}")


def function_body(source: str, name: str) -> list[str]:
    """The statements of the revision's ``upgrade()`` or ``downgrade()``, without comments and blank lines."""
    body = source.split(f"def {name}()", 1)[1].split(":", 1)[1].split("\ndef ", 1)[0]
    return [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]


if __name__ == "__main__":
    sys.exit(main())
