"""Upstream URLs: what the operator may set, how it is shown, and what the relay calls.

The URL is checked once, when it is set (CLI, admin API); the relay trusts what is
stored. A query in the URL is allowed: WeChat's query string is appended after it with
``&``. A password in the URL (``https://user:pass@bot.example/wx``) is accepted but
never printed.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import httpx

from msgcube.domain.urls import http_url_parts

_REQUEST_LINE_SAFE = re.compile(rb"[\x21-\x7e]*")


def check_upstream_url(url: str) -> str:
    """``url`` (stripped) if it can be an upstream — ``domain.urls``' rule, no
    ``#fragment``, and what httpx accepts — else ``ValueError`` saying what is wrong."""
    url = url.strip()
    if http_url_parts(url, "upstream URL").fragment:
        raise ValueError(f"the upstream URL must not have a #fragment (got {url!r})")
    try:
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"invalid upstream URL {url!r}: {exc}") from None
    return url


def upstream_or_none(text: str) -> str | None:
    """An upstream setting as stored: ``None`` for ``""`` (no relay), else a checked URL."""
    return check_upstream_url(text) if text.strip() else None


def shown_upstream(url: str | None) -> str | None:
    """``url`` for listings and logs: a password replaced by ``***``, and a user name
    that comes alone too (``https://TOKEN@bot.example/``: some services take a token
    there, and it is sent as Basic credentials just the same)."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    shown = "***" if parts.password is None else f"{parts.username}:***"
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


def escaped_query(query_string: bytes) -> str:
    """WeChat's raw query string as sent on: byte for byte, except bytes that cannot
    appear in a request line (never seen in WeChat's ASCII parameters), percent-encoded."""
    if _REQUEST_LINE_SAFE.fullmatch(query_string):  # every push: skip the byte loop
        return query_string.decode("ascii")
    return "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in query_string)


def upstream_target(upstream_url: str, query_string: bytes) -> str:
    """The URL to call: the upstream URL with WeChat's raw query string appended."""
    query = escaped_query(query_string)
    if not query:
        return upstream_url
    return upstream_url + ("&" if "?" in upstream_url else "?") + query
