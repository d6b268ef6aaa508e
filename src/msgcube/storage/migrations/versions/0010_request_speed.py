"""request speed: accounts.auth_gen, moved by triggers

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-30 00:40:00.000000

Every API call checks its token, the token's account, an authorizer's grant and the
account's quota override. Each worker keeps those answers in memory under the account's
``auth_gen`` (``auth/caller_cache.py``) and re-reads only that generation per call. The
database itself moves it: a trigger on every table the checks read bumps the account's
``auth_gen`` on any change, so no writer (a CLI command, an admin call, another server,
a hand-written SQL statement) can forget to, and a revoked token or a narrowed grant
fails on the very next call in every worker.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Tables whose rows name an account and feed the API checks, and the changes that matter.
# A new access token needs no bump: nobody holds its hash in a cache yet.
_WATCHED = {
    "access_tokens": ("UPDATE", "DELETE"),
    "authorizations": ("INSERT", "UPDATE", "DELETE"),
    "account_quotas": ("INSERT", "UPDATE", "DELETE"),
}


def _sqlite_upgrade() -> None:
    # The inner UPDATE moves auth_gen itself, so the WHEN clause stops it firing again.
    op.execute(
        "CREATE TRIGGER accounts_auth_gen AFTER UPDATE ON accounts"
        " WHEN NEW.auth_gen = OLD.auth_gen BEGIN"
        " UPDATE accounts SET auth_gen = OLD.auth_gen + 1 WHERE id = NEW.id; END"
    )
    for table, operations in _WATCHED.items():
        for operation in operations:
            row = "OLD" if operation == "DELETE" else "NEW"
            bump = f"UPDATE accounts SET auth_gen = auth_gen + 1 WHERE id = {row}.account_id"  # noqa: S608 - no input
            op.execute(
                f"CREATE TRIGGER {table}_auth_gen_{operation.lower()}"
                f" AFTER {operation} ON {table} BEGIN {bump}; END"
            )


def _postgresql_upgrade() -> None:
    op.execute(
        "CREATE FUNCTION msgcube_account_auth_gen() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN NEW.auth_gen := OLD.auth_gen + 1; RETURN NEW; END $$"
    )
    op.execute(
        "CREATE TRIGGER accounts_auth_gen BEFORE UPDATE ON accounts FOR EACH ROW"
        " WHEN (NEW.auth_gen = OLD.auth_gen) EXECUTE FUNCTION msgcube_account_auth_gen()"
    )
    op.execute(
        "CREATE FUNCTION msgcube_bump_auth_gen() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN"
        " IF TG_OP = 'DELETE' THEN"
        "  UPDATE accounts SET auth_gen = auth_gen + 1 WHERE id = OLD.account_id;"
        " ELSE"
        "  UPDATE accounts SET auth_gen = auth_gen + 1 WHERE id = NEW.account_id;"
        " END IF;"
        " RETURN NULL; END $$"
    )
    for table, operations in _WATCHED.items():
        op.execute(
            f"CREATE TRIGGER {table}_auth_gen AFTER {' OR '.join(operations)} ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION msgcube_bump_auth_gen()"
        )


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy on SQLite): recreating the table would drop triggers.
    op.add_column(
        "accounts", sa.Column("auth_gen", sa.Integer(), server_default="0", nullable=False)
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _sqlite_upgrade()
    elif dialect == "postgresql":
        _postgresql_upgrade()
    else:  # pragma: no cover - msgcube's stores are SQLite and PostgreSQL
        raise NotImplementedError(f"auth_gen triggers for {dialect}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER accounts_auth_gen ON accounts")
        for table in _WATCHED:
            op.execute(f"DROP TRIGGER {table}_auth_gen ON {table}")
        op.execute("DROP FUNCTION msgcube_bump_auth_gen()")
        op.execute("DROP FUNCTION msgcube_account_auth_gen()")
    else:
        op.execute("DROP TRIGGER accounts_auth_gen")
        for table, operations in _WATCHED.items():
            for operation in operations:
                op.execute(f"DROP TRIGGER {table}_auth_gen_{operation.lower()}")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("auth_gen")
