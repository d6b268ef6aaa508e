"""``/dashboard``: pages, forms and the JSON/CSV the page's script reads.

Pages are rendered on the server (Jinja2, autoescaped): sign-in, and the dashboard with
yesterday's key numbers, the filter form, and the panels the script fills with charts.
The script reads ``/dashboard/api/rows/<endpoint>``, whose ``list`` is exactly the
concatenation of ``served_list`` answers (see ``data.py``), and the CSV export is the same
rows. A signed-in account sees its own data; an administrator (admin token) picks any.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from msgcube.domain.endpoints import BY_NAME, Endpoint, RowKind
from msgcube.domain.messages import COUNT_INTERVALS, COUNTED_TYPES
from msgcube.domain.periods import DATA_FLOOR
from msgcube.errors import BodyTooLarge, NotFound, RequestRefused, SignInRequired
from msgcube.storage.accounts import Account, get_account, list_accounts
from msgcube.storage.server_secrets import server_secret
from msgcube.web.context import AppContext
from msgcube.web.dashboard import data
from msgcube.web.dashboard.assets import asset_response, own_asset, plotly_asset
from msgcube.web.dashboard.i18n import (
    HTML_LANG,
    INTERVAL_LABELS,
    LANGS,
    MSG_TYPE_LABELS,
    pick_language,
    text,
)
from msgcube.web.dashboard.interface import interface_panel
from msgcube.web.dashboard.session import (
    SECRET_NAME,
    Session,
    SessionCodec,
    account_credential,
    admin_credential,
    csrf_ok,
    end_session,
    read_cookie,
    same_origin,
    write_cookie,
)
from msgcube.web.request_checks import read_body

PREFIX = "/dashboard"
PERIODS: tuple[str, ...] = ("day", "week", "month")

_env = Environment(
    loader=PackageLoader("msgcube.web.dashboard", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": True}

# Scripts and styles only from msgcube itself. Plotly writes inline style attributes and a
# <style> element, hence 'unsafe-inline' for styles (never for scripts).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Vary": "Cookie",
}


# --------------------------------------------------------------------------- plumbing


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def _codec(request: Request) -> SessionCodec:
    """The session codec, keyed by the deployment's server secret (read once per app)."""
    codec: SessionCodec | None = getattr(request.app.state, "dashboard_codec", None)
    if codec is None:
        with _ctx(request).store.write() as conn:
            codec = SessionCodec(server_secret(conn, SECRET_NAME))
        request.app.state.dashboard_codec = codec
    return codec


class Visitor:
    """Who is asking: the session (anonymous or signed in) and the account on show."""

    def __init__(self, session: Session, account: Account | None, accounts: list[Account]) -> None:
        self.session = session
        self.account = account
        self.accounts = accounts  # every account, for an administrator; else empty

    @property
    def signed_in(self) -> bool:
        return self.session.signed_in


def _visitor(request: Request) -> Visitor:
    """The request's session, checked against the credential it was opened with."""
    ctx, codec = _ctx(request), _codec(request)
    session = read_cookie(request, codec)
    lang = pick_language(session.lang if session else None, request.headers.get("accept-language"))
    if session is None:
        return Visitor(Session.anonymous(lang), None, [])
    session = session.with_(lang=lang)
    if not session.signed_in:
        return Visitor(session, None, [])
    with ctx.store.read() as conn:
        if session.admin:
            credential = admin_credential(conn, ctx.settings.admin_token)
            if not codec.fingerprint_ok(session, "admin", credential):
                return Visitor(Session.anonymous(lang), None, [])
            accounts = list_accounts(conn)
            chosen = next((a for a in accounts if a.appid == session.appid), None)
            if chosen is None and accounts:
                chosen = accounts[0]
                session = session.with_(appid=chosen.appid)
            return Visitor(session, chosen, accounts)
        account = get_account(conn, session.appid) if session.appid else None
    if account is None or not codec.fingerprint_ok(session, "account", account_credential(account)):
        return Visitor(Session.anonymous(lang), None, [])
    return Visitor(session, account, [])


def _html(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(
        _env.get_template(template).render(**values),
        status_code=status,
        headers=SECURITY_HEADERS,
    )


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _json(content: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind these forms send)."""
    try:
        body = await read_body(request, limit=16 * 1024)
    except BodyTooLarge:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _safe_next(value: str | None) -> str:
    """A local dashboard URL to go back to, never another site (open redirect)."""
    if value and value.startswith(PREFIX) and "//" not in value and "\\" not in value:
        return value
    return PREFIX


def _common(request: Request, visitor: Visitor) -> dict[str, Any]:
    lang = visitor.session.lang or LANGS[0]
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return {
        "t": text(lang),
        "lang": lang,
        "html_lang": HTML_LANG[lang],
        "other_lang": next(x for x in LANGS if x != lang),
        "csrf": visitor.session.csrf,
        "here": path,
        "prefix": PREFIX,
        "css_url": _asset_url("dashboard.css"),
        "visitor": visitor,
    }


def _asset_url(name: str) -> str:
    asset = own_asset(name)
    return f"{PREFIX}/static/{name}?v={asset.etag if asset else 0}"


# --------------------------------------------------------------------------- sign-in


async def login_page(request: Request) -> Response:
    visitor = await run_in_threadpool(_visitor, request)
    if visitor.signed_in:
        return _redirect(PREFIX)
    return _login(request, visitor)


def _login(
    request: Request, visitor: Visitor, *, error: str = "", status: int = 200, appid: str = ""
) -> Response:
    response = _html(
        request,
        "login.html",
        status,
        **_common(request, visitor),
        error=error,
        appid=appid,
        admin_enabled=bool(_ctx(request).settings.admin_token),
    )
    write_cookie(request, response, _codec(request), visitor.session)
    return response


def _forbidden(request: Request, visitor: Visitor) -> Response:
    """A POST without a matching CSRF token or from another origin.

    No cookie is set here: a cross-site POST arrives without the (SameSite) cookie, and
    answering it with a fresh one would sign the victim out.
    """
    return _html(
        request,
        "message.html",
        403,
        **_common(request, visitor),
        message=text(visitor.session.lang or LANGS[0])["session_expired"],
    )


class CsrfRefused(RequestRefused):
    """A dashboard POST without a matching CSRF token or from another origin (403)."""

    def __init__(self) -> None:
        super().__init__(403, "session expired")


async def refused_page(request: Request, exc: RequestRefused) -> Response:
    """The page for a refused form (``web/boundary.py`` answers with it)."""
    visitor = await run_in_threadpool(_visitor, request)
    return _forbidden(request, visitor)


async def _checked_post(request: Request) -> tuple[Visitor, dict[str, str]]:
    """The visitor and the form of a POST; ``CsrfRefused`` when the CSRF rules are not met.

    The token is checked against the cookie as sent, so a form opened before a session
    lapsed (a changed secret, say) can still sign out.
    """
    visitor = await run_in_threadpool(_visitor, request)
    form = await _form(request)
    sent = read_cookie(request, _codec(request))
    if not same_origin(request) or not csrf_ok(sent, form.get("csrf")):
        raise CsrfRefused
    return visitor, form


async def login_submit(request: Request) -> Response:
    visitor, form = await _checked_post(request)
    ctx, codec = _ctx(request), _codec(request)
    t = text(visitor.session.lang or LANGS[0])
    if form.get("kind") == "admin":
        token = form.get("token", "")
        admin_token = ctx.settings.admin_token
        if not admin_token:
            return _login(request, visitor, error=t["admin_disabled"], status=403)
        if not hmac.compare_digest(token.encode(), admin_token.encode()):
            return _login(request, visitor, error=t["bad_admin"], status=401)
        with ctx.store.write() as conn:
            credential = admin_credential(conn, admin_token)
        session = visitor.session.signed_in_as(
            appid=None, admin=True, fingerprint=codec.fingerprint("admin", credential)
        )
    else:
        appid, secret = form.get("appid", "").strip(), form.get("secret", "")
        with ctx.store.read() as conn:
            account = get_account(conn, appid) if appid else None
        # The same work for an unknown appid.
        secret_ok = await ctx.secrets.account_matches(ctx.store, account, secret)
        if account is None or not secret_ok:
            return _login(request, visitor, error=t["bad_login"], status=401, appid=appid)
        session = visitor.session.signed_in_as(
            appid=account.appid,
            admin=False,
            fingerprint=codec.fingerprint("account", account_credential(account)),
        )
    response = _redirect(PREFIX)
    write_cookie(request, response, codec, session)
    return response


async def logout(request: Request) -> Response:
    visitor, _form_values = await _checked_post(request)
    if visitor.signed_in:
        with _ctx(request).store.write() as conn:
            end_session(conn, visitor.session)
    response = _redirect(f"{PREFIX}/login")
    write_cookie(request, response, _codec(request), Session.anonymous(visitor.session.lang))
    return response


async def switch_account(request: Request) -> Response:
    visitor, form = await _checked_post(request)
    if not visitor.signed_in:
        return _redirect(f"{PREFIX}/login")
    if not visitor.session.admin:
        return _html(
            request,
            "message.html",
            403,
            **_common(request, visitor),
            message=text(visitor.session.lang or LANGS[0])["forbidden"],
        )
    wanted = form.get("appid", "")
    if not any(a.appid == wanted for a in visitor.accounts):
        return _redirect(PREFIX)
    response = _redirect(PREFIX)
    write_cookie(request, response, _codec(request), visitor.session.with_(appid=wanted))
    return response


async def switch_language(request: Request) -> Response:
    visitor, form = await _checked_post(request)
    lang = form.get("lang")
    response = _redirect(_safe_next(form.get("next")))
    if lang in LANGS:
        write_cookie(request, response, _codec(request), visitor.session.with_(lang=lang))
    return response


# --------------------------------------------------------------------------- the page


def _query(request: Request, account: Account) -> data.Query:
    ctx = _ctx(request)
    return data.Query(
        store=ctx.store,
        account=account,
        now=ctx.now(),
        span_profile=ctx.settings.span_profile,
        ready_at=ctx.settings.ready_time,
    )


def _date_param(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value and len(value) == 10 else None
    except ValueError:
        return None


def _filters(params: Mapping[str, str], yesterday: date) -> dict[str, Any]:
    """The filter form's state from the query string; anything odd falls back to defaults."""
    period = params.get("period", "day")
    period = period if period in PERIODS else "day"
    msg_type = params.get("msg_type", "")
    msg_type = msg_type if msg_type in {str(c) for c in COUNTED_TYPES} else ""
    metric = params.get("metric", "msg_user")
    metric = metric if metric in data.METRICS else "msg_user"
    begin, end = _date_param(params.get("begin")), _date_param(params.get("end"))
    if begin is None or end is None or begin > end or end > yesterday:
        begin, end = data.default_range(period, yesterday)
    begin = max(begin, DATA_FLOOR, end - timedelta(days=data.MAX_RANGE_DAYS - 1))
    hour_day = _date_param(params.get("day"))
    if hour_day is None or hour_day > yesterday or hour_day < DATA_FLOOR:
        hour_day = yesterday
    return {
        "period": period,
        "msg_type": msg_type,
        "metric": metric,
        "begin": begin,
        "end": end,
        "day": hour_day,
    }


def _format_number(value: float | None, metric: str) -> str:
    if value is None:
        return "—"
    if metric == "per_user":
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _format_change(change: float | None) -> tuple[str, str]:
    """The change as text (sign and percent) and a CSS class (up, down, flat, none)."""
    if change is None:
        return "—", "none"
    if abs(change) < 0.0005:
        return "0.0%", "flat"
    arrow, css = ("▲", "up") if change > 0 else ("▼", "down")
    return f"{arrow} {abs(change) * 100:.1f}%", css


def _key_cards(kn: data.KeyNumbers, t: Mapping[str, str]) -> list[dict[str, Any]]:
    cards = []
    for metric in data.METRICS:
        value = kn.current.value(metric) if kn.current else None
        changes = []
        for against, _days in data.COMPARISONS:
            label, css = _format_change(kn.change(metric, against))
            changes.append(
                {
                    "name": t[f"vs_{against}"],
                    "long": t[f"vs_{against}_long"],
                    "text": label,
                    "css": css,
                }
            )
        cards.append(
            {
                "metric": metric,
                "label": t[metric],
                "value": value,
                "text": _format_number(value, metric),
                "changes": changes,
            }
        )
    return cards


def _client_config(q: data.Query, lang: str) -> dict[str, Any]:
    """What the script needs: its words, the codes' labels, endpoint names, dates."""
    t = text(lang)
    keys = (
        "msg_user",
        "msg_count",
        "per_user",
        "ref_date",
        "msg_type",
        "hour",
        "count_interval",
        "no_data",
        "error",
        "loading",
        "all_types",
        "err_61500",
        "err_61501",
        "err_61503",
        "not_ready",
        "period_day",
        "period_week",
        "period_month",
    )
    return {
        "lang": lang,
        "text": {k: t[k] for k in keys},
        "types": {str(c): MSG_TYPE_LABELS[lang][c] for c in COUNTED_TYPES},
        "intervals": {str(c): INTERVAL_LABELS[lang][c] for c in COUNT_INTERVALS},
        "summary": {p: ep.name for p, ep in data.SUMMARY_BY_PERIOD.items()},
        "dist": {p: ep.name for p, ep in data.DIST_BY_PERIOD.items()},
        "hour": data.HOUR.name,
        "api": f"{PREFIX}/api/rows/",
        "csv": f"{PREFIX}/export/",
        "yesterday": q.yesterday.isoformat(),
        "floor": DATA_FLOOR.isoformat(),
        "defaults": {
            p: [d.isoformat() for d in data.default_range(p, q.yesterday)] for p in PERIODS
        },
        "ready_at": f"{q.ready_at:%H:%M}",
    }


async def dashboard_page(request: Request) -> Response:
    visitor = await run_in_threadpool(_visitor, request)
    if not visitor.signed_in:
        return _redirect(f"{PREFIX}/login")
    common = _common(request, visitor)
    lang: str = common["lang"]
    t = common["t"]
    account = visitor.account
    values: dict[str, Any] = {"account": account, "accounts": visitor.accounts}
    if account is not None:
        q = _query(request, account)
        filters = _filters(request.query_params, q.yesterday)
        has_data = account.stats_since is not None
        kn = await run_in_threadpool(data.key_numbers, q) if has_data else None
        begin, end = filters["begin"], filters["end"]
        panel = await run_in_threadpool(interface_panel, q, begin, end) if has_data else None
        plotly = await run_in_threadpool(plotly_asset)  # read and gzipped once, off the loop
        values.update(
            filters=filters,
            has_data=has_data,
            key=kn,
            cards=_key_cards(kn, t) if kn else [],
            interface=panel,
            yesterday=q.yesterday,
            floor=DATA_FLOOR,
            types=[(c, MSG_TYPE_LABELS[lang][c]) for c in COUNTED_TYPES],
            periods=[(p, t[f"period_{p}"]) for p in PERIODS],
            metrics=[(m, t[m]) for m in data.METRICS],
            callback_url=str(request.base_url).rstrip("/") + f"/wechat/callback/{account.appid}",
            config=_client_config(q, lang),
            ready_at=f"{q.ready_at:%H:%M}",
            js_url=_asset_url("dashboard.js"),
            plotly_url=f"{PREFIX}/vendor/plotly.min.js?v={plotly.etag}",
        )
    response = _html(request, "dashboard.html", **common, **values)
    write_cookie(request, response, _codec(request), visitor.session)  # slides the 12 hours
    return response


# --------------------------------------------------------------------------- data


async def _rows(request: Request) -> tuple[Account, Endpoint, data.Fetched]:
    """The rows of ``{endpoint}`` over ``?begin=&end=`` for the visitor's account.

    Raises ``SignInRequired`` (401), ``ApiError`` (400; the boundary answers both) and
    ``NotFound`` (404) for an unknown endpoint.
    """
    visitor = await run_in_threadpool(_visitor, request)
    if not visitor.signed_in or visitor.account is None:
        raise SignInRequired
    name = request.path_params["endpoint"]
    ep = BY_NAME.get(name)
    if ep is None:
        raise NotFound(f"unknown endpoint {name}")
    begin, end = data.parse_range(
        request.query_params.get("begin"), request.query_params.get("end")
    )
    q = _query(request, visitor.account)
    fetched = await run_in_threadpool(data.fetch_rows, q, ep, begin, end)
    return visitor.account, ep, fetched


async def api_rows(request: Request) -> Response:
    """``{"list": [...], "periods": [...]}``: ``list`` is exactly the rows ``served_list``
    returns over the range; ``periods`` names every period they cover (zero rows are
    omitted from ``list``, as the API omits them), so charts can show zeros as zeros."""
    _account, _ep, fetched = await _rows(request)
    body: dict[str, Any] = {
        "list": fetched.rows,
        "periods": [d.isoformat() for d in fetched.labels],
    }
    if fetched.not_ready:
        body["not_ready"] = True
    return _json(body)


async def export_csv(request: Request) -> Response:
    """The same rows as CSV (optionally of one ``msg_type``), named after account and range."""
    account, ep, fetched = await _rows(request)
    raw_type = request.query_params.get("msg_type", "")
    msg_type = int(raw_type) if raw_type.isdigit() and int(raw_type) in COUNTED_TYPES else None
    if ep.kind is RowKind.DIST:
        msg_type = None
    rows = data.filter_type(ep, fetched.rows, msg_type)
    params = request.query_params
    suffix = f"-type{msg_type}" if msg_type is not None else ""
    filename = f"{account.appid}-{ep.name}-{params['begin']}-{params['end']}{suffix}.csv"
    return Response(
        data.csv_text(ep, rows).encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


# --------------------------------------------------------------------------- assets


async def vendor_plotly(request: Request) -> Response:
    return asset_response(request, await run_in_threadpool(plotly_asset))


async def static_file(request: Request) -> Response:
    asset = own_asset(request.path_params["name"])
    if asset is None:
        return Response(b"not found", status_code=404, media_type="text/plain")
    return asset_response(request, asset)


def _route(path: str, endpoint: Callable[[Request], Awaitable[Response]], *methods: str) -> Route:
    return Route(path, endpoint, methods=list(methods))


async def root(request: Request) -> Response:
    query = urlencode(list(request.query_params.multi_items()))
    return _redirect(f"{PREFIX}?{query}" if query else PREFIX)


routes: list[BaseRoute] = [
    Route(PREFIX, dashboard_page, methods=["GET", "HEAD"]),
    Mount(
        PREFIX,
        routes=[
            _route("/", root, "GET", "HEAD"),
            _route("/login", login_page, "GET", "HEAD"),
            _route("/login", login_submit, "POST"),
            _route("/logout", logout, "POST"),
            _route("/switch", switch_account, "POST"),
            _route("/language", switch_language, "POST"),
            _route("/api/rows/{endpoint}", api_rows, "GET"),
            _route("/export/{endpoint}.csv", export_csv, "GET"),
            _route("/vendor/plotly.min.js", vendor_plotly, "GET", "HEAD"),
            _route("/static/{name}", static_file, "GET", "HEAD"),
        ],
    ),
]
