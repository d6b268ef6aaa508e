"""Third-party platforms (开放平台 第三方平台): tickets, tokens, authorizations (contract).

The flow WeChat gives a platform, reproduced:

1. msgcube issues the platform a ``component_verify_ticket``, a new one every 10 minutes,
   each valid 12 hours (so a platform that missed some pushes keeps working with the
   last one it got), and pushes it to the platform's URL when one is set.
2. ticket + appid + secret → ``component_access_token`` (7200 s; kind ``component``).
3. An account authorizes the platform for permission sets (``func_info`` ids), recorded
   by the CLI / admin API in place of the owner's consent; the platform gets an
   ``authorizer_refresh_token``.
4. component token + refresh token → ``authorizer_access_token`` (7200 s; kind
   ``authorizer``) and a new refresh token; the presented one keeps working 5 more
   minutes (WeChat's transition), so a platform whose answer got lost can retry.
5. Re-authorization ends the previous refresh tokens at once; revocation ends the
   refresh tokens and the platform's authorizer tokens for that account (40001).

Tickets are not stored: a ticket is the HMAC of the platform's ``ticket_key`` over its
10-minute slot number, with the slot in clear inside it. Every worker derives the same
ticket without coordination, ``msgcube platform ticket`` prints it without a server,
and checking one is a constant-time comparison plus the slot's age.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection

from msgcube.auth.tokens import OVERLAP, TOKEN_TTL, new_token
from msgcube.errors import ApiError, NotFound, PlatformError, PushRefused
from msgcube.relay import check_upstream_url, shown_upstream
from msgcube.storage.accounts import Account, get_account, secret_hash
from msgcube.storage.platforms import (
    Authorization,
    Platform,
    add_authorization,
    count_platform_accounts,
    creator_of,
    delete_account_rows,
    end_refresh_tokens,
    find_refresh_token,
    get_authorization,
    get_platform,
    insert_platform,
    insert_platform_account,
    insert_refresh_token,
    lock_platform,
    mark_revoked,
    save_authorization,
    update_platform,
)
from msgcube.storage.tokens import insert_token, rotate, supersede
from msgcube.storage.usage import lock_account
from msgcube.wechat import AESKey, build_push_xml, encrypt, msg_signature, signature

TICKET_EVERY = 600
"""A new component_verify_ticket every 10 minutes (WeChat's push interval)."""
TICKET_TTL = 12 * 3600
"""Each ticket is accepted for 12 hours from its issue."""
TICKET_PREFIX = "ticket@@@"
"""WeChat's tickets start so; the rest is base64 of the slot and its MAC."""
REFRESH_PREFIX = "refreshtoken@@@"
COMPONENT_ACCOUNT = 0
"""``access_tokens.account_id`` of component tokens: they belong to a platform, no account."""
DATACUBE_FUNC = 1
"""Permission set 1 (消息管理) holds the seven getupstreammsg* endpoints."""

_SLOT_BYTES = 6
_MAC_BYTES = 32


# --- registration -------------------------------------------------------------------------


APPID = re.compile(r"wx[0-9a-f]{16}")
"""An authorizer appid as WeChat issues them; the platform URL creates no other shape."""
ORIGINAL_ID = re.compile(r"gh_[0-9a-zA-Z_]{1,40}")
"""An account's original id (``ToUserName`` of its pushes)."""
APPID_PLACEHOLDER = "$APPID$"
DEFAULT_ACCOUNT_LIMIT = 10_000


def register_platform(
    conn: Connection,
    *,
    component_appid: str,
    secret: str,
    now: int,
    ticket_url: str = "",
    push_token: str = "",
    aes_key: str | None = None,
    upstream_url: str = "",
    account_limit: int = DEFAULT_ACCOUNT_LIMIT,
) -> Platform:
    """Register a platform; its secret is stored hashed, its ticket key generated.

    The Token and EncodingAESKey are the platform's (WeChat sets one pair per platform):
    they sign and encrypt the ticket pushes and open the pushes on its message URL.
    """
    if not component_appid or len(component_appid) > 64:
        raise PlatformError("component_appid must be 1–64 characters")
    if not secret:
        raise PlatformError("component_appsecret must not be empty")
    values = _checked(
        ticket_url=ticket_url,
        push_token=push_token,
        aes_key=aes_key,
        upstream_url=upstream_url,
        account_limit=account_limit,
    )
    if get_platform(conn, component_appid) is not None:
        raise PlatformError(f"platform {component_appid} already exists")
    return insert_platform(
        conn,
        component_appid=component_appid,
        secret_hash=secret_hash(conn, secret),
        ticket_key=secrets.token_hex(32),
        created_at=now,
        **values,
    )


def change_platform(conn: Connection, platform: Platform, **changes: Any) -> Platform:
    """Change a platform's ``ticket_url``, ``push_token``, ``aes_key``, ``upstream_url``
    or ``account_limit`` (``None`` values are left alone).

    A replaced EncodingAESKey becomes the previous one, so pushes WeChat sealed just
    before the switch still open.
    """
    values = {k: v for k, v in changes.items() if v is not None}
    if not values:
        raise PlatformError("nothing to change")
    merged = {
        "ticket_url": platform.ticket_url,
        "push_token": platform.push_token,
        "aes_key": platform.aes_key,
        "upstream_url": platform.upstream_url,
        "account_limit": platform.account_limit,
        **values,
    }
    _checked(**merged)
    new_key = values.get("aes_key")
    if new_key and platform.aes_key and AESKey(new_key) != AESKey(platform.aes_key):
        values["prev_aes_key"] = platform.aes_key
    updated = update_platform(conn, platform.component_appid, **values)
    assert updated is not None
    return updated


def _checked(
    *,
    ticket_url: str,
    push_token: str,
    aes_key: str | None,
    upstream_url: str,
    account_limit: int,
) -> dict[str, Any]:
    if aes_key is not None:
        try:
            AESKey(aes_key)
        except (TypeError, ValueError) as exc:
            raise PlatformError(f"EncodingAESKey: {exc}") from None
    if ticket_url:
        parts = urlsplit(ticket_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PlatformError("the ticket URL must be an http:// or https:// URL")
    upstream_url = upstream_url.strip()
    if upstream_url:
        try:
            check_upstream_url(upstream_for_appid(upstream_url, "wx0123456789abcdef"))
        except ValueError as exc:
            raise PlatformError(str(exc)) from None
    if ticket_url and (not push_token or aes_key is None):
        raise PlatformError("a ticket URL needs --token and --aes-key to sign and encrypt")
    if len(push_token) > 64:
        raise PlatformError("the token must be at most 64 characters")
    if not 0 <= account_limit <= 10_000_000:
        raise PlatformError("the account limit must be between 0 and 10000000")
    return {
        "ticket_url": ticket_url,
        "push_token": push_token,
        "aes_key": aes_key,
        "upstream_url": upstream_url,
        "account_limit": account_limit,
    }


def upstream_for(platform: Platform, appid: str) -> str:
    """The platform's message URL for one authorizer (``$APPID$`` substituted); '' if none."""
    return upstream_for_appid(platform.upstream_url, appid)


def upstream_for_appid(upstream_url: str, appid: str) -> str:
    return upstream_url.replace(APPID_PLACEHOLDER, appid)


def require_platform(conn: Connection, component_appid: str) -> Platform:
    platform = get_platform(conn, component_appid)
    if platform is None:
        raise NotFound(f"unknown platform {component_appid!r} (add it with `msgcube platform add`)")
    return platform


# --- component_verify_ticket --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ticket:
    ticket: str
    issued_at: int
    expires_at: int

    def body(self, now: int) -> dict[str, object]:
        return {
            "component_verify_ticket": self.ticket,
            "create_time": self.issued_at,
            "expires_in": max(0, self.expires_at - now),
        }


def _mac(platform: Platform, slot: int) -> bytes:
    message = f"{platform.component_appid}|{slot}".encode()
    return hmac.new(platform.ticket_key.encode(), message, hashlib.sha256).digest()


def ticket_for_slot(platform: Platform, slot: int) -> Ticket:
    raw = slot.to_bytes(_SLOT_BYTES, "big") + _mac(platform, slot)
    text = TICKET_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    issued = slot * TICKET_EVERY
    return Ticket(text, issued, issued + TICKET_TTL)


def current_ticket(platform: Platform, now: int) -> Ticket:
    """The ticket of the 10-minute slot ``now`` falls in."""
    return ticket_for_slot(platform, now // TICKET_EVERY)


def check_ticket(platform: Platform, ticket: str, now: int) -> None:
    """61006 for anything not issued to this platform, 61005 once 12 hours have passed."""
    if not ticket.startswith(TICKET_PREFIX):
        raise ApiError(61006, "not a component_verify_ticket")
    encoded = ticket[len(TICKET_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise ApiError(61006, "component_verify_ticket is not base64") from None
    if len(raw) != _SLOT_BYTES + _MAC_BYTES:
        raise ApiError(61006, "component_verify_ticket has the wrong length")
    slot = int.from_bytes(raw[:_SLOT_BYTES], "big")
    if not hmac.compare_digest(raw[_SLOT_BYTES:], _mac(platform, slot)):
        raise ApiError(61006, "component_verify_ticket was not issued to this platform")
    issued = slot * TICKET_EVERY
    if issued > now:
        raise ApiError(61006, "component_verify_ticket from the future")
    if now >= issued + TICKET_TTL:
        raise ApiError(61005, "component_verify_ticket older than 12 hours")


def ticket_push(
    platform: Platform, ticket: Ticket, now: int, nonce: str
) -> tuple[dict[str, str], bytes]:
    """The query parameters and body of the ticket push, sealed the way WeChat seals it.

    The plaintext is ``<xml>`` with AppId, CreateTime, InfoType=component_verify_ticket
    and ComponentVerifyTicket; it is AES-encrypted for the component appid and sent as
    ``<xml><AppId/><Encrypt/></xml>`` with ``signature``, ``timestamp``, ``nonce``,
    ``encrypt_type=aes`` and ``msg_signature`` in the query, so a platform's existing
    handler (wechatpy's ``WeChatComponent.parse_message``, for one) reads it unchanged.
    """
    if platform.aes_key is None:
        raise PlatformError(f"platform {platform.component_appid} has no EncodingAESKey")
    appid = platform.component_appid
    plain = build_push_xml(
        {
            "AppId": appid,
            "CreateTime": now,
            "InfoType": "component_verify_ticket",
            "ComponentVerifyTicket": ticket.ticket,
        }
    )
    sealed = encrypt(AESKey(platform.aes_key), plain, appid)
    timestamp = str(now)
    params = {
        "signature": signature(platform.push_token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": msg_signature(platform.push_token, timestamp, nonce, sealed),
    }
    return params, build_push_xml({"AppId": appid, "Encrypt": sealed})


# --- component_access_token ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComponentGrant:
    component_access_token: str
    expires_in: int

    def body(self) -> dict[str, object]:
        return {
            "component_access_token": self.component_access_token,
            "expires_in": self.expires_in,
        }


def issue_component_token(conn: Connection, platform: Platform, now: int) -> ComponentGrant:
    """A new component token; the platform's previous one lives 5 more minutes."""
    lock_platform(conn, platform.id)
    rotate(conn, COMPONENT_ACCOUNT, "component", now, OVERLAP, platform_id=platform.id)
    token = new_token()
    insert_token(
        conn,
        token,
        account_id=COMPONENT_ACCOUNT,
        kind="component",
        issued_at=now,
        expires_at=now + TOKEN_TTL,
        platform_id=platform.id,
    )
    return ComponentGrant(token, TOKEN_TTL)


# --- authorizations -----------------------------------------------------------------------


def parse_func_ids(value: str | Iterable[object]) -> tuple[int, ...]:
    """Permission-set ids from ``"1,2,3"`` or a list: positive integers, sorted, unique."""
    items = value.split(",") if isinstance(value, str) else list(value)
    ids: set[int] = set()
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise PlatformError(f"not a permission-set id: {item!r}")
        try:
            number = int(item)
        except ValueError:
            raise PlatformError(f"not a permission-set id: {item!r}") from None
        if not 0 < number < 10_000:
            raise PlatformError(f"not a permission-set id: {item!r}")
        ids.add(number)
    if not ids:
        raise PlatformError("at least one permission-set id is needed")
    return tuple(sorted(ids))


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(48)


def authorize_platform(
    conn: Connection, platform: Platform, account: Account, func_ids: Iterable[int], now: int
) -> tuple[Authorization, str]:
    """Record the account's consent; returns it with a fresh ``authorizer_refresh_token``.

    Authorizing again replaces the permission sets and ends every earlier refresh token
    at once, as WeChat does on re-authorization.
    """
    auth = save_authorization(conn, platform.id, account.id, func_ids, now)
    end_refresh_tokens(conn, auth.id, now)
    token = new_refresh_token()
    insert_refresh_token(conn, token, auth.id, now)
    return auth, token


def revoke_authorization(conn: Connection, platform: Platform, account: Account, now: int) -> int:
    """End an authorization: its refresh tokens and authorizer tokens stop working now.

    Returns how many authorizer access tokens were cut short.
    """
    auth = get_authorization(conn, platform.id, account.id)
    if auth is None or not auth.active:
        raise NotFound(f"{account.appid} has not authorized {platform.component_appid}")
    mark_revoked(conn, auth.id, now)
    end_refresh_tokens(conn, auth.id, now)
    return supersede(conn, account.id, "authorizer", now, platform_id=platform.id)


@dataclass(frozen=True, slots=True)
class AuthorizerGrant:
    authorizer_access_token: str
    expires_in: int
    authorizer_refresh_token: str

    def body(self) -> dict[str, object]:
        return {
            "authorizer_access_token": self.authorizer_access_token,
            "expires_in": self.expires_in,
            "authorizer_refresh_token": self.authorizer_refresh_token,
        }


def exchange_refresh_token(
    conn: Connection, platform: Platform, account: Account, refresh_token: str, now: int
) -> AuthorizerGrant:
    """``api_authorizer_token``: 61003 without an active authorization, 61023 bad refresh token.

    The refresh token rotates on every exchange; the presented one (and any other still
    live) keeps working for 5 more minutes. The previous authorizer access token of this
    platform for this account gets the same 5-minute overlap as ``/cgi-bin/token``'s (and
    older ones end). The account's row lock keeps two exchanges from interleaving.
    """
    lock_account(conn, account.id)
    auth = get_authorization(conn, platform.id, account.id)
    if auth is None or not auth.active:
        raise ApiError(61003, f"{account.appid} has not authorized {platform.component_appid}")
    row = find_refresh_token(conn, refresh_token) if refresh_token else None
    if row is None or row.authorization_id != auth.id:
        raise ApiError(61023, "unknown authorizer_refresh_token")
    if row.valid_until is not None and now >= row.valid_until:
        raise ApiError(61023, "authorizer_refresh_token rotated or revoked")
    end_refresh_tokens(conn, auth.id, now + OVERLAP)
    fresh_refresh = new_refresh_token()
    insert_refresh_token(conn, fresh_refresh, auth.id, now)
    rotate(conn, account.id, "authorizer", now, OVERLAP, platform_id=platform.id)
    access = new_token()
    insert_token(
        conn,
        access,
        account_id=account.id,
        kind="authorizer",
        issued_at=now,
        expires_at=now + TOKEN_TTL,
        platform_id=platform.id,
    )
    return AuthorizerGrant(access, TOKEN_TTL, fresh_refresh)


def func_info(func_ids: Iterable[int]) -> list[dict[str, object]]:
    """WeChat's ``func_info`` shape: ``[{"funcscope_category": {"id": N}}, ...]``."""
    return [{"funcscope_category": {"id": f}} for f in func_ids]


# --- accounts fed by a platform's message URL ---------------------------------------------


def admitted_account(
    conn: Connection, platform: Platform, appid: str, original_id: str
) -> Account | None:
    """The account a platform's authentic push for ``appid`` is stored under; ``None``
    when no account has that appid yet (``create_platform_account`` makes it).

    ``PushRefused`` when the platform may not feed it: an account that has not
    authorized the platform (another platform, or an account with its own callback URL,
    must never receive this platform's messages), a revoked authorization (the
    operator's way of stopping one authorizer), or a ``ToUserName`` that is not the
    account's original id.
    """
    account = get_account(conn, appid)
    if account is None:
        return None
    auth = get_authorization(conn, platform.id, account.id)
    if auth is None:
        raise PushRefused(f"{appid} has not authorized {platform.component_appid}")
    if not auth.active:
        raise PushRefused(f"{appid} revoked its authorization of {platform.component_appid}")
    if account.original_id and original_id != account.original_id:
        raise PushRefused(f"ToUserName is not the original id of {appid}")
    return account


def create_platform_account(
    conn: Connection, platform: Platform, appid: str, original_id: str, tz: str, now: int
) -> Account:
    """Create the account of an appid first seen on the platform's message URL, and its
    authorization of the platform for permission set 1 (WeChat only sends a platform
    the messages of an account that granted it message management).

    Only called for a push that passed the platform's signatures and opened with its
    key for its component appid. The appid and original id must have WeChat's shapes,
    and a platform creates at most ``account_limit`` accounts: the platform's row lock
    is taken before counting, so workers racing at the limit cannot pass it (without it,
    on PostgreSQL, each worker's transaction counted before the others' inserts).
    """
    if not APPID.fullmatch(appid):
        raise PushRefused("not an appid (wx and 16 hex digits)")
    if not ORIGINAL_ID.fullmatch(original_id):
        raise PushRefused("ToUserName is not an original id (gh_...)")
    lock_platform(conn, platform.id)
    if get_account(conn, appid) is not None:  # a concurrent copy of this push created it
        found = admitted_account(conn, platform, appid, original_id)
        assert found is not None
        return found
    if count_platform_accounts(conn, platform.id) >= platform.account_limit:
        raise PushRefused(
            f"{platform.component_appid} reached its limit of {platform.account_limit} accounts"
            " (msgcube platform set --account-limit)"
        )
    insert_platform_account(conn, platform.id, appid, original_id, tz, now)
    account = get_account(conn, appid)
    assert account is not None
    if creator_of(conn, account.id) == platform.id:  # ours, or a concurrent push's of this platform
        add_authorization(conn, platform.id, account.id, (DATACUBE_FUNC,), now)
    found = admitted_account(conn, platform, appid, original_id)
    assert found is not None
    return found


def remove_platform_account(conn: Connection, platform: Platform, appid: str) -> None:
    """Delete an account the platform's URL created, with all its data; its next push
    (if the platform keeps sending) creates it afresh. Accounts the operator added are
    not removed here: revoke their authorization instead."""
    account = get_account(conn, appid)
    if account is None or creator_of(conn, account.id) != platform.id:
        raise NotFound(f"{appid} is not an account created by {platform.component_appid}")
    delete_account_rows(conn, account.id, appid)


def describe_platform(platform: Platform) -> dict[str, object]:
    """A platform as listings show it: never its secret, Token or keys, only whether set
    (nor a password in its upstream URL)."""
    return {
        "component_appid": platform.component_appid,
        "ticket_url": platform.ticket_url,
        "token": bool(platform.push_token),
        "aes_key": platform.aes_key is not None,
        "prev_aes_key": platform.prev_aes_key is not None,
        "upstream_url": shown_upstream(platform.upstream_url) or "",
        "account_limit": platform.account_limit,
        "created_at": platform.created_at,
    }


def describe_platform_account(row: dict[str, Any]) -> dict[str, object]:
    """One row of ``platform_accounts`` as listings show it."""
    if row["authorized_at"] is None:
        state = "unauthorized"
    else:
        state = "revoked" if row["revoked_at"] is not None else "active"
    return {
        "appid": row["appid"],
        "original_id": row["original_id"],
        "verified": bool(row["verified"]),
        "created_by": "platform" if row["created_by_platform"] else "operator",
        "created_at": row["created_at"],
        "func_info": [int(f) for f in (row["func_ids"] or "").split(",") if f],
        "authorization": state,
    }
