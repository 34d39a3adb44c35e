"""Alembic environment: runs on the connection given by storage.db.upgrade (or DATABASE_URL)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, text

from storage.tables import metadata

config = context.config
target_metadata = metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = os.environ["DATABASE_URL"]
    schema = os.environ.get("SESSION_TALLY_DB_SCHEMA", "public")
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        conn.commit()
        _run(conn)
