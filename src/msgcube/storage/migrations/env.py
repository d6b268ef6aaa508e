"""Alembic environment: msgcube always passes an open connection (see storage/db.py)."""

from __future__ import annotations

from alembic import context

from msgcube.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the alembic CLI would get here
    raise RuntimeError("run migrations through msgcube.storage.db.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
