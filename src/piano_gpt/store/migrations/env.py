"""Alembic environment of the generation store.

Programmatic use (``piano_gpt.store.upgrade_database``) hands a connection in
``config.attributes["connection"]``; the command line migrates ``-x url=...``, else
``$PIANO_GPT_DATABASE_URL``, else the default SQLite file (see ``piano_gpt.store.engine``).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from piano_gpt.store.engine import get_engine, resolve_url
from piano_gpt.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _command_line_url():
    return resolve_url(context.get_x_argument(as_dictionary=True).get("url"))


def run_offline() -> None:
    context.configure(url=_command_line_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    engine = get_engine(_command_line_url())
    try:
        with engine.begin() as connection:
            _configure(connection)
    finally:
        engine.dispose()


if config.attributes.get("connection") is None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)  # command line only

if context.is_offline_mode():
    run_offline()
else:
    run_online()
