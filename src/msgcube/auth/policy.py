"""Who may call the data API: client address, IP whitelist, access policy (contract).

The checks after a token is known to be valid, in the order ``web/datacube.authorize``
runs them:

* the kind of token: a ``component_access_token`` only works on platform APIs (48001);
* the IP whitelist (40164) — for the account's own tokens. A platform calling for an
  account calls from the platform's servers, whose addresses the account owner never
  listed; WeChat checks those against the platform's own whitelist instead (61004).
* the account (unverified: 48001) and the access policy (``third_party_only``: the
  account's own tokens get 48001, as in WeChat's 2015 invitation beta);
* an authorizer token's permission sets: message analysis needs set 1,
  interface analysis set 3 (61007).

The client address is the direct peer, unless that peer is one of the configured
``trusted_proxies``: then ``X-Forwarded-For`` is read from the right, skipping trusted
hops, and the first untrusted address is the client. A client can put anything in the
header, so it is never believed from an untrusted peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache

from sqlalchemy import Connection

from msgcube.auth.platforms import COMPONENT_ACCOUNT, DATACUBE_FUNC
from msgcube.errors import ApiError
from msgcube.settings import Network, parse_networks
from msgcube.storage.accounts import Account, get_account_by_id
from msgcube.storage.platforms import Authorization
from msgcube.storage.tokens import TokenKind, TokenRow

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

OWN_KINDS = frozenset({TokenKind.TOKEN, TokenKind.STABLE})
"""Token kinds an account gets for itself (``/cgi-bin/token``, ``/cgi-bin/stable_token``)."""


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # ::ffff:1.2.3.4 is the IPv4 client 1.2.3.4
    return addr


networks = lru_cache(maxsize=1024)(parse_networks)
"""Comma-separated addresses or CIDR networks (``ValueError`` when one is malformed)."""


def normalize_whitelist(value: str | list[str] | tuple[str, ...]) -> str:
    """A whitelist as stored (``"1.2.3.4,10.0.0.0/8"``); ``ValueError`` names a bad entry."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    kept: list[str] = []
    for part in parts:
        text = part.strip()
        if not text:
            continue
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or network: {text!r}") from None
        kept.append(str(network.network_address) if network.num_addresses == 1 else str(network))
    return ",".join(kept)


def _within(addr: Address, nets: tuple[Network, ...]) -> bool:
    return any(addr in net for net in nets)


def trusted_peer(peer: str | None, trusted: str | tuple[Network, ...]) -> bool:
    """Whether the direct peer is one of ``trusted_proxies`` (whose headers count)."""
    addr = _address(peer)
    return addr is not None and _within(addr, _networks(trusted))


def _networks(trusted: str | tuple[Network, ...]) -> tuple[Network, ...]:
    """``trusted_proxies`` as the setting's text or already parsed."""
    return networks(trusted) if isinstance(trusted, str) else trusted


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: str | tuple[Network, ...]
) -> str | None:
    """The caller's address as text (see the module docstring for the proxy rule)."""
    peer_addr = _address(peer)
    if peer_addr is None:
        return peer
    trusted_nets = _networks(trusted)
    if not forwarded_for or not _within(peer_addr, trusted_nets):
        return str(peer_addr)
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        addr = _address(hop)
        if addr is None:
            return hop[:64]  # what the proxy saw; it matches no whitelist entry
        if not _within(addr, trusted_nets):
            return str(addr)
    return str(_address(hops[0])) if hops else str(peer_addr)


def check_whitelist(account: Account, row: TokenRow, ip: str | None) -> None:
    """40164 when the account has a whitelist, the token is its own, and ``ip`` is not in it."""
    if row.kind in OWN_KINDS:
        check_account_ip(account, ip)


def check_account_ip(account: Account, ip: str | None) -> None:
    """40164 when the account has a whitelist and ``ip`` is not in it (token APIs too)."""
    if not account.ip_whitelist:
        return
    addr = _address(ip)
    if addr is None or not _within(addr, networks(",".join(account.ip_whitelist))):
        raise ApiError(40164, f"{account.appid} whitelist", ip=str(addr or ip or "unknown"))


def token_account(conn: Connection, row: TokenRow) -> Account:
    """The account a token acts for: 48001 for component tokens, 40001 if it is gone."""
    if row.kind == "component" or row.account_id == COMPONENT_ACCOUNT:
        raise ApiError(48001, "a component_access_token cannot call account APIs")
    return acting_account(row, get_account_by_id(conn, row.account_id))


def acting_account(row: TokenRow, account: Account | None) -> Account:
    """As ``token_account``, with the account already read (see check_token_checks)."""
    if row.kind == "component" or row.account_id == COMPONENT_ACCOUNT:
        raise ApiError(48001, "a component_access_token cannot call account APIs")
    if account is None:
        raise ApiError(40001, "token of a deleted account")
    return account


def check_datacube_access(
    grant_of: Callable[[int], Authorization | None],
    row: TokenRow,
    account: Account,
    policy: str,
    func_id: int = DATACUBE_FUNC,
) -> None:
    """48001 (unverified, or own token under ``third_party_only``) and 61007 (an authorizer
    token without the endpoint's permission set: 1 for messages, 3 for interface analysis).

    ``grant_of(platform_id)`` is the platform's authorization of ``account`` as it stands
    now (``CallerCache.grant``)."""
    if not account.verified:
        raise ApiError(48001, "the account is not verified")
    if row.kind in OWN_KINDS:
        if policy == "third_party_only":
            raise ApiError(48001, "access_policy third_party_only: use an authorizer token")
        return
    if row.kind != TokenKind.AUTHORIZER or row.platform_id is None:
        raise ApiError(48001, f"a {row.kind} token cannot call datacube")
    auth = grant_of(row.platform_id)
    if auth is None or not auth.active:
        raise ApiError(40001, "the authorization was revoked")
    if func_id not in auth.func_ids:
        raise ApiError(61007, f"permission set {func_id} was not granted")
