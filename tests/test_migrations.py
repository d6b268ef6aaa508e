"""The migrations build exactly the schema that ``storage/schema.py`` declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from msgcube.storage.db import Store, migrate, open_store, table_names
from msgcube.storage.schema import metadata


def _ours(name: str | None, type_: str, parent: object) -> bool:
    # The shared test database also holds other tests' tables (the sync mirror's
    # wechat_* tables): only msgcube's own tables are compared.
    return type_ != "table" or name in metadata.tables


def test_migrated_schema_matches_metadata(store: Store) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": _ours})
        diff = compare_metadata(context, metadata)
    assert diff == []
    assert {t.name for t in metadata.sorted_tables} <= table_names(store)


def test_migrate_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with store.write() as conn:
        conn.execute(text("INSERT INTO followers (account_id, openid) VALUES (1, 'o')"))
    migrate(store)
    with store.read() as conn:
        assert conn.execute(text("SELECT openid FROM followers")).scalars().all() == ["o"]
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0009"
    store.dispose()
