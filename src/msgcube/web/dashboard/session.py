"""The dashboard's session: a signed cookie, and the CSRF rules.

The session lives in one cookie signed with itsdangerous (HMAC-SHA256, timestamped,
12 hours at most) — nothing on the server, so any number of workers and nodes serve it.
The signing key is the deployment's ``dashboard_session`` server secret (a random value
created in the database on first use and shared by every node).

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Lax`` (browsers do not send it
with cross-site POSTs, frames or fetches), ``Path=/dashboard`` (the API and callback never
see it) and ``Secure`` when the request came over https.

A signed-in session also carries a *fingerprint* of what it was opened with, checked on
every request: an HMAC of the account's session generation (``accounts.session_gen``), or
of the admin token and the ``dashboard_admin_session`` server secret. Signing out moves
the generation on (or replaces that secret), and so does a new AppSecret: a cookie copied
before is worthless afterwards, on every worker and node, even though it is still within
its 12 hours. Signing out therefore ends every session of that account (or every
administrator session) — the cookie holds no per-browser identity to end one alone.

CSRF. Every state-changing request is a POST that must carry the session's random
``csrf`` token in a hidden form field (synchroniser-token pattern) — including the sign-in
form, whose token comes from the anonymous session set when the form was shown, so a
third-party page cannot sign a browser into an account of its choosing either. On top of
that, a POST whose ``Origin`` header names another host is refused outright. SameSite=Lax
alone would already keep the cookie off cross-site POSTs in current browsers; the token
makes the protection independent of browser support for it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from msgcube.storage.accounts import Account, end_sessions, get_account
from msgcube.storage.server_secrets import replace_server_secret, server_secret
from msgcube.web.request_checks import via_https

COOKIE = "msgcube_dashboard"
COOKIE_PATH = "/dashboard"
MAX_AGE = 12 * 3600
SECRET_NAME = "dashboard_session"  # noqa: S105 - the name of a server secret, not one
ADMIN_SESSIONS = "dashboard_admin_session"


@dataclass(frozen=True, slots=True)
class Session:
    """What the cookie says. ``appid`` is the account shown; ``admin`` may switch it."""

    csrf: str
    lang: str | None = None
    appid: str | None = None
    admin: bool = False
    fingerprint: str = ""

    @property
    def signed_in(self) -> bool:
        return bool(self.fingerprint)

    @classmethod
    def anonymous(cls, lang: str | None = None) -> Session:
        return cls(csrf=secrets.token_urlsafe(24), lang=lang)

    def signed_in_as(self, *, appid: str | None, admin: bool, fingerprint: str) -> Session:
        """A new session (new CSRF token) for a successful sign-in: no fixation."""
        return Session(
            csrf=secrets.token_urlsafe(24),
            lang=self.lang,
            appid=appid,
            admin=admin,
            fingerprint=fingerprint,
        )

    def with_(self, **changes: Any) -> Session:
        return replace(self, **changes)


class SessionCodec:
    """Turns sessions into cookie values and back; fingerprints credentials."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self._serializer = URLSafeTimedSerializer(
            key, salt="msgcube.dashboard.session", signer_kwargs={"digest_method": hashlib.sha256}
        )

    def dumps(self, session: Session) -> str:
        payload = {
            "c": session.csrf,
            "l": session.lang,
            "a": session.appid,
            "x": session.admin,
            "f": session.fingerprint,
        }
        return str(self._serializer.dumps(payload))

    def loads(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=MAX_AGE)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        lang, appid, fingerprint = data.get("l"), data.get("a"), data.get("f")
        return Session(
            csrf=data["c"],
            lang=lang if isinstance(lang, str) else None,
            appid=appid if isinstance(appid, str) else None,
            admin=data.get("x") is True,
            fingerprint=fingerprint if isinstance(fingerprint, str) else "",
        )

    def fingerprint(self, kind: str, credential: str) -> str:
        """An HMAC of a credential (never the credential itself) for the cookie."""
        return hmac.new(self._key, f"{kind}:{credential}".encode(), hashlib.sha256).hexdigest()

    def fingerprint_ok(self, session: Session, kind: str, credential: str) -> bool:
        return bool(credential) and hmac.compare_digest(
            session.fingerprint, self.fingerprint(kind, credential)
        )


def account_credential(account: Account) -> str:
    """What an account session is bound to: the account and its session generation."""
    return f"{account.appid}:{account.session_gen}"


def admin_credential(conn: Connection, admin_token: str) -> str:
    """What an administrator session is bound to ("" when the admin token is unset)."""
    return f"{admin_token}:{server_secret(conn, ADMIN_SESSIONS)}" if admin_token else ""


def end_session(conn: Connection, session: Session) -> None:
    """Sign out for good: the sessions opened like ``session`` stop being accepted."""
    if session.admin:
        replace_server_secret(conn, ADMIN_SESSIONS)
        return
    account = get_account(conn, session.appid) if session.appid else None
    if account is not None:
        end_sessions(conn, account.id)


def read_cookie(request: Request, codec: SessionCodec) -> Session | None:
    return codec.loads(request.cookies.get(COOKIE))


def write_cookie(request: Request, response: Response, codec: SessionCodec, s: Session) -> None:
    """The session cookie; ``Secure`` whenever the browser used https, behind a trusted
    TLS-terminating proxy too (there the app itself sees http)."""
    response.set_cookie(
        COOKIE,
        codec.dumps(s),
        max_age=MAX_AGE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=via_https(request, request.app.state.ctx),
    )


def same_origin(request: Request) -> bool:
    """False when the request says it comes from another site (``Origin`` header).

    The origin's host[:port] must be the ``Host`` the request was sent to (or the
    ``X-Forwarded-Host`` a reverse proxy names); the scheme is not compared, so a proxy
    that terminates TLS does not break sign-in. Browsers send ``Origin`` with every POST;
    when it is absent (an old browser, a script) the CSRF token alone decides.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    _scheme, sep, netloc = origin.partition("://")
    if not sep or not netloc:
        return False  # "null" (sandboxed frames, some redirects) or garbage
    hosts = {request.headers.get("host", ""), request.url.netloc}
    forwarded = request.headers.get("x-forwarded-host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip())
    return netloc.lower() in {h.lower() for h in hosts if h}


def csrf_ok(session: Session | None, submitted: object) -> bool:
    return (
        session is not None
        and isinstance(submitted, str)
        and hmac.compare_digest(session.csrf.encode(), submitted.encode())
    )
