"""account ids are never reused on SQLite

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 04:30:00.000000

An account's id keys its rows everywhere, in ``analytics_db`` too, where ``platform
forget`` deletes them by a background mutation. SQLite handed the highest id out again
once its account was deleted, so a new account could see (or keep) a forgotten one's
rows. ``AUTOINCREMENT`` makes SQLite never reuse one, as PostgreSQL's sequences never do.
SQLite declares it only with the table: the table is copied (batch mode), and the
``accounts_auth_gen`` trigger of 0010, dropped with the old table, is created again.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_AUTH_GEN_TRIGGER = (  # as in 0010
    "CREATE TRIGGER accounts_auth_gen AFTER UPDATE ON accounts"
    " WHEN NEW.auth_gen = OLD.auth_gen BEGIN"
    " UPDATE accounts SET auth_gen = OLD.auth_gen + 1 WHERE id = NEW.id; END"
)


def _recreate(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL's sequences never hand an id out twice
    op.execute("PRAGMA legacy_alter_table = ON")  # other tables' triggers name accounts
    with op.batch_alter_table(
        "accounts", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass
    op.execute("PRAGMA legacy_alter_table = OFF")
    op.execute(_AUTH_GEN_TRIGGER)


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
