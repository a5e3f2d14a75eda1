"""Database URLs, engines and schema migrations.

The URL is, in order: the one given, ``$PIANO_GPT_DATABASE_URL``, or the SQLite file
``tmp/piano_gpt.sqlite`` under the current directory. ``postgresql://`` URLs use psycopg 3.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event, make_url

DATABASE_URL_ENV = "PIANO_GPT_DATABASE_URL"
DEFAULT_SQLITE_PATH = Path("tmp") / "piano_gpt.sqlite"
STORE_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = STORE_DIR / "alembic.ini"
MIGRATIONS_DIR = STORE_DIR / "migrations"


def resolve_url(url: str | URL | None = None) -> URL:
    """The database URL to use (see the module docstring), with the psycopg driver for PostgreSQL."""
    if url is None:
        url = os.environ.get(DATABASE_URL_ENV) or None
    if url is None:
        url = URL.create("sqlite", database=str((Path.cwd() / DEFAULT_SQLITE_PATH).resolve()))
    url = make_url(url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # URI form: leave it to SQLite
        return None
    return Path(database)


def _enable_sqlite_foreign_keys(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_engine(url: str | URL | None = None, **kwargs) -> Engine:
    """An engine for ``url`` (see :func:`resolve_url`); creates the folder of a SQLite file."""
    url = resolve_url(url)
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
    return engine


def alembic_config(connection=None):
    """Alembic configuration for the shipped migrations; ``connection`` is what env.py migrates."""
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {heads}")
    return heads[0]


def current_revision(url: str | URL | Engine | None = None) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    engine = url if isinstance(url, Engine) else get_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if engine is not url:
            engine.dispose()


def upgrade_database(url: str | URL | Engine | None = None, revision: str = "head") -> str | None:
    """Run the migrations up to ``revision`` (default: head); a no-op when already there.

    Works on an empty database. Returns the revision the database is at afterwards.
    """
    from alembic import command

    engine = url if isinstance(url, Engine) else get_engine(url)
    try:
        # Migrating is a detail of opening the store: alembic's INFO lines stay out of the user's output.
        alembic_log = logging.getLogger("alembic")
        level = alembic_log.level
        alembic_log.setLevel(max(level, logging.WARNING))
        try:
            with engine.begin() as connection:
                command.upgrade(alembic_config(connection), revision)
        finally:
            alembic_log.setLevel(level)
        return current_revision(engine)
    finally:
        if engine is not url:
            engine.dispose()
