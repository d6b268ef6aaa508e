"""The migrations build exactly the schema that ``storage/schema.py`` declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from msgcube.storage.accounts import add_account, get_account
from msgcube.storage.db import (
    SCHEMA_REVISION,
    Store,
    _alembic_config,
    migrate,
    open_store,
    table_names,
)
from msgcube.storage.platforms import delete_account_rows
from msgcube.storage.schema import metadata

from conftest import fresh_appid


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
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0013"
    store.dispose()


def test_schema_revision_is_the_newest_migration(tmp_path: Path) -> None:
    """``open_store`` skips alembic for a database at SCHEMA_REVISION: were it behind the
    newest migration, a database one migration short would never get it."""
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with store.engine.connect() as conn:
        head = ScriptDirectory.from_config(_alembic_config(conn)).get_current_head()
    store.dispose()
    assert head == SCHEMA_REVISION


def test_a_database_one_migration_short_is_migrated_on_open(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'x.db'}"
    store = open_store(url, migrate_schema=False)
    with store.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0012")
    store.dispose()
    store = open_store(url)
    with store.read() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        tables = set(conn.execute(text("SELECT name FROM sqlite_master")).scalars())
    store.dispose()
    assert version == SCHEMA_REVISION
    assert {t.name for t in metadata.sorted_tables} <= tables


def test_0009_builds_user_layers_from_stored_messages(tmp_path: Path) -> None:
    """user_day and user_period are kept at ingest from 0009 on: the migration builds
    them from the messages already stored, every day (open or closed) included."""
    from alembic import command

    from msgcube.storage.db import _alembic_config

    store = open_store(f"sqlite:///{tmp_path / 'old.db'}", migrate_schema=False)
    with store.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0007")
        rows = [  # (msg_id, user_id, day, msg_type): Sun 2026-03-01 and Mon 2026-03-02
            (1, 7, "2026-03-01", 1),
            (2, 7, "2026-03-01", 2),
            (3, 7, "2026-03-02", 1),
            (4, 8, "2026-03-02", 6),
            (5, 8, "2026-03-02", None),
        ]
        for msg_id, user_id, day, msg_type in rows:
            conn.execute(
                text(
                    "INSERT INTO messages (account_id, msg_id, user_id, create_time,"
                    " msg_type_name, msg_type, day, hour, received_at)"
                    " VALUES (1, :m, :u, 1772000000, 'x', :t, :d, 3, 0)"
                ),
                {"m": msg_id, "u": user_id, "t": msg_type, "d": day},
            )
    migrate(store)
    with store.read() as conn:
        days = conn.execute(
            text("SELECT day, user_id, week, month, c1, c2, c6, total FROM user_day ORDER BY 1, 2")
        ).all()
        periods = conn.execute(
            text(
                "SELECT period, start, user_id, c1, c2, c6, total FROM user_period ORDER BY 1, 2, 3"
            )
        ).all()
    store.dispose()
    assert [tuple(r) for r in days] == [
        ("2026-03-01", 7, "2026-02-23", "2026-03-01", 1, 1, 0, 2),
        ("2026-03-02", 7, "2026-03-02", "2026-03-01", 1, 0, 0, 1),
        ("2026-03-02", 8, "2026-03-02", "2026-03-01", 0, 0, 1, 1),
    ]
    assert [tuple(r) for r in periods] == [
        ("month", "2026-03-01", 7, 2, 1, 0, 3),
        ("month", "2026-03-01", 8, 0, 0, 1, 1),
        ("week", "2026-02-23", 7, 1, 1, 0, 2),
        ("week", "2026-03-02", 7, 1, 0, 0, 1),
        ("week", "2026-03-02", 8, 0, 0, 1, 1),
    ]


def _add(store: Store, appid: str) -> int:
    with store.write() as conn:
        return add_account(conn, appid=appid, secret="s" * 32, tz="UTC", now=0).id


def test_a_forgotten_accounts_id_is_never_handed_out_again(store: Store) -> None:
    """Rows keyed by a forgotten id may outlive it (a ClickHouse mutation runs in the
    background): a new account must never get that id, even when it was the highest."""
    first = _add(store, fresh_appid("wxforget"))
    newest = _add(store, fresh_appid("wxforget"))
    with store.write() as conn:
        delete_account_rows(conn, newest, "")
    assert _add(store, fresh_appid("wxforget")) > newest > first


def test_0012_keeps_accounts_and_their_auth_gen_trigger(tmp_path: Path) -> None:
    """0012 copies the SQLite table (AUTOINCREMENT is declared with it): the rows, the
    unique appid and the trigger that moves auth_gen must all survive the copy."""
    from alembic import command

    store = open_store(f"sqlite:///{tmp_path / 'old.db'}", migrate_schema=False)
    with store.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0011")
    old = [_add(store, f"wxold{i}") for i in range(3)]
    migrate(store)
    with store.write() as conn:
        delete_account_rows(conn, old[-1], "wxold2")  # the highest: SQLite reused it before
    assert _add(store, "wxnew") > old[-1]
    with store.write() as conn:
        before = get_account(conn, "wxold1")
        assert before is not None and before.id == old[1]
        conn.execute(
            text("UPDATE accounts SET ip_whitelist = '1.2.3.4' WHERE id = :i"), {"i": old[1]}
        )
        gen = conn.execute(text("SELECT auth_gen FROM accounts WHERE id = :i"), {"i": old[1]})
        assert gen.scalar_one() == 1  # the trigger moved it
        sql = conn.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'accounts'")
        ).scalar_one()
        assert "AUTOINCREMENT" in sql
    store.dispose()


def test_0013_recognises_platform_entries_kept_before_it(tmp_path: Path) -> None:
    """Entries the platform URL quarantined before 0013 said so only in their reason."""
    from alembic import command

    store = open_store(f"sqlite:///{tmp_path / 'old.db'}", migrate_schema=False)
    reasons = ["platform wx0123456789abcdef: decrypt: bad padding", "decrypt: bad padding"]
    with store.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0012")
        for reason in reasons:
            conn.execute(
                text(
                    "INSERT INTO quarantine (appid, received_at, reason, query, body)"
                    " VALUES ('wxa', 0, :r, '', x'00')"
                ),
                {"r": reason},
            )
    migrate(store)
    with store.read() as conn:
        found = conn.execute(text("SELECT component_appid FROM quarantine ORDER BY id")).scalars()
        assert list(found) == ["wx0123456789abcdef", ""]
    store.dispose()
