"""Alembic environment: the URL comes from Settings, the schema from shared.models.

`tabpfn-api migrate` passes configure_logger=False: its lines then go through the
project's logging (LOG_LEVEL, LOG_FORMAT) rather than alembic.ini's.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from shared.core.config import get_settings
from shared.core.schema_version import MIGRATION_LOCK
from shared.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)
log = logging.getLogger("alembic.env")

target_metadata = Base.metadata


def _url() -> str:
    return (
        config.attributes.get("database_url") or get_settings().require("DATABASE_URL").database_url
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _take_migration_lock(connection: Connection) -> None:
    """Wait for any other migration of this database to end. The lock is the session's:
    it outlives the commits below and goes with the connection, even if this process dies."""
    lock = {"key": MIGRATION_LOCK}
    if not connection.execute(text("select pg_try_advisory_lock(:key)"), lock).scalar():
        log.info("another migration of this database is running; waiting for it to end")
        connection.execute(text("select pg_advisory_lock(:key)"), lock)
    # The revision is read after this, so a migration that waited finds the other's work.
    connection.commit()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _take_migration_lock(connection)
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
