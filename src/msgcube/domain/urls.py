"""The rule for a URL msgcube itself calls over HTTP: the relay's upstream, the client's
base URL, ``replay``'s callback URL.

Checked where the URL is given, so a typo is refused with its reason instead of failing
at the first call (for the client: as a network error retried with backoff, though no
retry can succeed). Callers add what their HTTP library refuses on top.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def http_url_parts(url: str, what: str) -> SplitResult:
    """``url``'s parts if it is http or https with a host and a valid port, else
    ``ValueError`` saying why, naming the URL as ``what`` (e.g. "upstream URL")."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # a broken [IPv6] host
        raise ValueError(f"invalid {what} {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the {what} must start with http:// or https:// (got {url!r})")
    if not parts.hostname:
        raise ValueError(f"the {what} has no host (got {url!r})")
    try:
        _ = parts.port  # a port that is not a number or out of range
    except ValueError as exc:
        raise ValueError(f"invalid {what} {url!r}: {exc}") from None
    return parts
