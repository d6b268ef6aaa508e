"""bulk speed: hour-ordered messages index, user_day and user_period kept at ingest

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-30 01:00:00.000000

``user_day`` used to be written by the rollup for closed days only; it is now kept current
at ingest, so it is rebuilt here from ``messages`` for every day (closed or not), and the
new ``user_period`` (per week and month and sender) from it.
"""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

_COUNTS = ("c1", "c2", "c3", "c4", "c6", "total")
_OLD = "ix_messages_account_id_day_user_id_msg_type_hour"
_NEW = "ix_messages_account_id_day_hour_msg_type_user_id"

_BUILD = sa.text(
    """
    INSERT INTO user_day (account_id, day, user_id, week, month, c1, c2, c3, c4, c6, total)
    SELECT :a, :d, user_id, :w, :m,
           SUM(CASE WHEN msg_type = 1 THEN 1 ELSE 0 END),
           SUM(CASE WHEN msg_type = 2 THEN 1 ELSE 0 END),
           SUM(CASE WHEN msg_type = 3 THEN 1 ELSE 0 END),
           SUM(CASE WHEN msg_type = 4 THEN 1 ELSE 0 END),
           SUM(CASE WHEN msg_type = 6 THEN 1 ELSE 0 END),
           COUNT(*)
    FROM messages
    WHERE account_id = :a AND day = :d AND msg_type IS NOT NULL
    GROUP BY user_id
    """
).bindparams(
    sa.bindparam("d", type_=sa.Date),
    sa.bindparam("w", type_=sa.Date),
    sa.bindparam("m", type_=sa.Date),
)


_USER_PERIOD = """
    INSERT INTO user_period (account_id, period, start, user_id, c1, c2, c3, c4, c6, total)
    SELECT account_id, 'PERIOD', PERIOD, user_id,
           SUM(c1), SUM(c2), SUM(c3), SUM(c4), SUM(c6), SUM(total)
    FROM user_day
    GROUP BY account_id, PERIOD, user_id
"""


def upgrade() -> None:
    op.create_table(
        "user_period",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        *[sa.Column(c, sa.Integer(), nullable=False) for c in _COUNTS],
        sa.PrimaryKeyConstraint(
            "account_id", "period", "start", "user_id", name=op.f("pk_user_period")
        ),
    )
    op.drop_index(_OLD, table_name="messages")
    op.create_index(_NEW, "messages", ["account_id", "day", "hour", "msg_type", "user_id"])
    conn = op.get_bind()
    conn.execute(sa.text("DELETE FROM user_day"))
    pairs = conn.execute(
        sa.text("SELECT DISTINCT account_id, day FROM messages WHERE msg_type IS NOT NULL")
    ).all()
    for account_id, raw_day in pairs:
        day = raw_day if isinstance(raw_day, date) else date.fromisoformat(str(raw_day))
        week, month = day - timedelta(days=day.weekday()), day.replace(day=1)
        conn.execute(_BUILD, {"a": account_id, "d": day, "w": week, "m": month})
    for period in ("week", "month"):
        conn.execute(sa.text(_USER_PERIOD.replace("PERIOD", period)))


def downgrade() -> None:
    op.drop_table("user_period")
    # user_day keeps its rows: the old rollup rewrites a day's rows whenever it computes it.
    op.drop_index(_NEW, table_name="messages")
    op.create_index(_OLD, "messages", ["account_id", "day", "user_id", "msg_type", "hour"])
