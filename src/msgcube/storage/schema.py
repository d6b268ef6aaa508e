"""The schema, one definition for SQLite and PostgreSQL (SQLAlchemy Core).

Layers (DESIGN.md "The statistics, layered"):

1. ``messages`` — one row per message, deduplicated on (account, MsgId), with the local
   ``day`` and ``hour`` computed once at ingest so rollups are plain GROUP BYs;
2. ``user_day`` — per day and sender, messages per msg_type, kept current at ingest (each
   batch adds its new messages in the same transaction): far smaller than ``messages``,
   the input of daily statistics; ``user_period`` the same per week and month (also kept
   at ingest), so a rollup never regroups messages or user-day rows by sender;
3. ``stat_summary`` / ``stat_dist`` — the finished rows the API reads by index;
4. ``rollup_state`` — per period, a dirty sequence and the sequence last computed.

Senders are interned (``senders``) so that the big tables carry a small integer instead
of a 28-character openid, which halves their size and makes distinct counts cheaper.

This module is the truth for the *current* schema; ``storage/migrations`` holds the
history, and a test checks that migrating an empty database yields exactly this.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only aliases a primary key to its rowid when it is declared INTEGER.
RowId = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("appid", String(64), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("original_id", String(64), nullable=False, server_default=""),
    Column("callback_token", String(64), nullable=False, server_default=""),
    Column("aes_key", String(43), nullable=True),
    Column("prev_aes_key", String(43), nullable=True),
    Column("tz", String(64), nullable=False),
    Column("verified", Boolean, nullable=False, server_default="1"),
    Column("follower_base", Boolean, nullable=False, server_default="0"),
    Column("ip_whitelist", Text, nullable=False, server_default=""),
    Column("stats_since", Date, nullable=True),
    # Bumped whenever a *closed* period becomes dirty: cached API answers carry the
    # generation they were computed at and are void once it moves.
    Column("stats_gen", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    # Dashboard sessions carry the generation they were opened at; signing out and a new
    # AppSecret move it on, ending every session opened before (storage/accounts.py).
    Column("session_gen", Integer, nullable=False, server_default="0"),
    # The account's own server (its bot): pushes are stored and forwarded there (relay).
    Column("upstream_url", Text, nullable=True),
    # The third-party platform whose message URL created this account (NULL: added by
    # the operator). See web/platform_callback.py.
    Column("created_by_platform", Integer, nullable=True),
    # Moved by database triggers (migration 0010) on any change to the account's row, its
    # tokens, grants or quota override: the API's per-process cache of those checks is
    # valid while it stands still (auth/caller_cache.py).
    Column("auth_gen", Integer, nullable=False, server_default="0"),
    sqlite_autoincrement=True,  # ids are never reused (migration 0012)
)

senders = Table(
    "senders",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("account_id", Integer, nullable=False),
    Column("openid", String(128), nullable=False),
    UniqueConstraint("account_id", "openid"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("account_id", Integer, nullable=False),
    Column("msg_id", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("msg_type_name", String(32), nullable=False),
    Column("msg_type", SmallInteger, nullable=True),  # NULL: stored, not counted
    Column("day", Date, nullable=False),
    Column("hour", SmallInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    UniqueConstraint("account_id", "msg_id"),
    # Covering index of the hourly rollup, in its GROUP BY order: each hour's distinct
    # senders per type arrive sorted, so COUNT(DISTINCT) is a stream, not a sort.
    Index(None, "account_id", "day", "hour", "msg_type", "user_id"),
)

events = Table(
    "events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("account_id", Integer, nullable=False),
    Column("openid", String(128), nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("event", String(64), nullable=False),
    Column("day", Date, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    UniqueConstraint("account_id", "openid", "create_time", "event"),
)

followers = Table(
    "followers",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("openid", String(128), nullable=False),
    PrimaryKeyConstraint("account_id", "openid"),
)


def _sender_counts() -> list[Column[int]]:
    """Messages per counted msg_type (c1 text … c6 link) and in all, of one sender."""
    return [Column(n, Integer, nullable=False) for n in ("c1", "c2", "c3", "c4", "c6", "total")]


user_day = Table(
    "user_day",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("day", Date, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("week", Date, nullable=False),
    Column("month", Date, nullable=False),
    *_sender_counts(),
    PrimaryKeyConstraint("account_id", "day", "user_id"),
)

user_period = Table(
    "user_period",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("period", String(8), nullable=False),  # week | month
    Column("start", Date, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    *_sender_counts(),
    PrimaryKeyConstraint("account_id", "period", "start", "user_id"),
)

stat_summary = Table(
    "stat_summary",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("period", String(8), nullable=False),  # day | hour | week | month
    Column("ref_date", Date, nullable=False),
    Column("ref_hour", SmallInteger, nullable=False),  # hour*100 for hour rows, else 0
    Column("msg_type", SmallInteger, nullable=False),
    Column("msg_user", Integer, nullable=False),
    Column("msg_count", Integer, nullable=False),
    PrimaryKeyConstraint("account_id", "period", "ref_date", "ref_hour", "msg_type"),
)

stat_dist = Table(
    "stat_dist",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("period", String(8), nullable=False),  # day | week | month
    Column("ref_date", Date, nullable=False),
    Column("count_interval", SmallInteger, nullable=False),
    Column("msg_user", Integer, nullable=False),
    PrimaryKeyConstraint("account_id", "period", "ref_date", "count_interval"),
)

rollup_state = Table(
    "rollup_state",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("period", String(8), nullable=False),  # day (incl. its hours) | week | month
    Column("start", Date, nullable=False),
    Column("dirty_seq", Integer, nullable=False),
    Column("done_seq", Integer, nullable=False, server_default="0"),
    Column("computed_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("account_id", "period", "start"),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("appid", String(64), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("query", Text, nullable=False, server_default=""),
    Column("body", LargeBinary, nullable=False),
    Column("replayed_at", BigInteger, nullable=True),
    # The platform whose message URL received it ('' for the account's own URL): its
    # Token and keys, not the account's, open it again (migration 0013).
    Column("component_appid", String(64), nullable=False, server_default=""),
)

access_tokens = Table(
    "access_tokens",
    metadata,
    # Only the SHA-256 of a token is stored; the token itself is shown once, to its caller.
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # token | stable | authorizer
    Column("platform_id", Integer, nullable=True),  # set for authorizer tokens
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("valid_until", BigInteger, nullable=True),  # set when superseded or revoked
    Column("forced", Boolean, nullable=False, server_default="0"),
    Column("nonce", String(32), nullable=True),  # stable tokens: re-derivable, see auth/tokens.py
    Index(None, "account_id", "kind", "issued_at"),
)

quota_usage = Table(
    "quota_usage",
    metadata,
    Column("account_id", Integer, nullable=False),
    Column("api", String(64), nullable=False),
    Column("day", Date, nullable=False),
    Column("used", Integer, nullable=False),
    PrimaryKeyConstraint("account_id", "api", "day"),
)

server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", String(128), nullable=False),
)

# --- third-party platforms and quotas -------------------------------------

platforms = Table(
    "platforms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("component_appid", String(64), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    # Where component_verify_ticket is pushed (empty: not pushed), signed with push_token
    # and encrypted with aes_key the way WeChat seals its pushes.
    Column("ticket_url", Text, nullable=False, server_default=""),
    Column("push_token", String(64), nullable=False, server_default=""),
    Column("aes_key", String(43), nullable=True),
    # Tickets are derived (HMAC) from this key and their 10-minute slot: nothing to store
    # per ticket, and every worker derives the same one. See auth/platforms.py.
    Column("ticket_key", String(64), nullable=False),
    # The last slot whose ticket was pushed: workers claim a push by moving it forward.
    Column("pushed_slot", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # The message URL (web/platform_callback.py): push_token and aes_key above are the
    # platform's Token and EncodingAESKey; the previous key is tried for rotation.
    Column("prev_aes_key", String(43), nullable=True),
    # The platform's own message URL, "$APPID$" substituted per push (empty: no relay).
    Column("upstream_url", Text, nullable=False, server_default=""),
    # How many accounts its message URL may create (0: none).
    Column("account_limit", Integer, nullable=False, server_default="10000"),
)

authorizations = Table(
    "authorizations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("platform_id", Integer, nullable=False),
    Column("account_id", Integer, nullable=False),
    Column("func_ids", String(512), nullable=False),  # permission-set ids, "1,2,3"
    Column("authorized_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    UniqueConstraint("platform_id", "account_id"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    # authorizer_refresh_token, stored as a SHA-256 hash like access tokens.
    Column("token_hash", String(64), primary_key=True),
    Column("authorization_id", Integer, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("valid_until", BigInteger, nullable=True),  # set when rotated or revoked
    Index(None, "authorization_id"),
)

quota_clears = Table(
    "quota_clears",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("account_id", Integer, nullable=False),
    Column("cleared_at", BigInteger, nullable=False),
    Index(None, "account_id", "cleared_at"),
)

account_quotas = Table(
    "account_quotas",
    metadata,
    # A per-account daily limit for each datacube API, overriding the quota_datacube setting.
    Column("account_id", Integer, primary_key=True, autoincrement=False),
    Column("daily_limit", Integer, nullable=False),
)

# --- the relay's timings (interface analysis, 接口分析) ----------------------------------------

relay_calls = Table(
    "relay_calls",
    metadata,
    # One row per push forwarded to an account's upstream: what WeChat's interface
    # analysis measures about the developer's server, summed by the interface rollup.
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("account_id", Integer, nullable=False),
    Column("received_at", BigInteger, nullable=False),  # unix seconds, when the push arrived
    Column("day", Date, nullable=False),  # local day in the account's tz
    Column("hour", SmallInteger, nullable=False),  # local hour
    Column("cost_ms", Integer, nullable=False),  # push received → upstream's answer or failure
    Column("failed", Boolean, nullable=False),
    Index(None, "account_id", "day", "hour"),
)

# --- interface analysis (接口分析), rolled up from the relay's timings -----------------------

stat_interface = Table(
    "stat_interface",
    metadata,
    # Finished rows of getinterfacesummary (period "day") and …hour (period "hour"),
    # written by the day rollup from relay_calls; only periods with at least one call.
    Column("account_id", Integer, nullable=False),
    Column("period", String(8), nullable=False),  # day | hour
    Column("ref_date", Date, nullable=False),
    Column("ref_hour", SmallInteger, nullable=False),  # hour*100 for hour rows, else 0
    Column("callback_count", Integer, nullable=False),
    Column("fail_count", Integer, nullable=False),
    Column("total_time_cost", BigInteger, nullable=False),  # milliseconds
    Column("max_time_cost", Integer, nullable=False),  # milliseconds
    PrimaryKeyConstraint("account_id", "period", "ref_date", "ref_hour"),
)
