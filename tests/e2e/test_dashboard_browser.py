"""The dashboard in a real headless Chromium, against a real ``msgcube serve``.

Debian's ``chromium`` (``/usr/bin/chromium``) driven by Playwright for Python; Playwright's
own browser downloads are never used. Locally the module is skipped when Chromium (or
Playwright) is missing; in CI (``CI`` set) that is a failure, so a broken setup cannot
pass as green. ``.ci/run`` installs Chromium.

The server runs over a seeded SQLite file with the clock pinned (``MSGCUBE_NOW``); the
numbers on the page are compared with ``served_list`` asked one day at a time, and the
CSV download with the ``/datacube`` API's rows. Every test also fails on any console error,
uncaught exception or request to another origin. A screenshot of the dashboard is saved
as ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from msgcube.domain.endpoints import BY_NAME
from msgcube.storage.accounts import Account
from msgcube.storage.db import Store, open_store
from support.dashboard import NOW, YESTERDAY, day_totals, seed_account, truth
from support.server import ServerProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
APPID = "wxe2edashboard01"
SECRET = "e2e-secret-0123456789abcdef01234"
ADMIN = "e2e-admin-token-0123456789"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} — CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason, allow_module_level=True)


if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    _unavailable("playwright is not installed (pip install -e '.[test]')")
    raise


@dataclass
class Site:
    base_url: str
    store: Store
    account: Account


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("e2e")
    db = workdir / "msgcube.db"
    store = open_store(f"sqlite:///{db}")
    account = seed_account(store, APPID, SECRET)
    server = ServerProcess(db, workdir, now=NOW.isoformat(), admin_token=ADMIN)
    with server:
        yield Site(server.base_url, store, account)
    store.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Watch:
    """What the page said that it should not have: console errors, exceptions, foreign requests."""

    problems: list[str] = field(default_factory=list)


def open_page(browser: Browser, site: Site, watch: Watch, **context: Any) -> Page:
    ctx = browser.new_context(accept_downloads=True, **context)
    page = ctx.new_page()
    page.on(
        "console",
        lambda m: (
            watch.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: watch.problems.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: watch.problems.append(f"failed: {r.url} {r.failure}"))

    def check_origin(request: Any) -> None:
        if not request.url.startswith((site.base_url + "/", "data:", "blob:")):
            watch.problems.append(f"request to another origin: {request.url}")

    page.on("request", check_origin)
    return page


@pytest.fixture
def watch() -> Iterator[Watch]:
    found = Watch()
    yield found
    assert found.problems == [], found.problems


@pytest.fixture
def page(browser: Browser, site: Site, watch: Watch) -> Iterator[Page]:
    page = open_page(
        browser,
        site,
        watch,
        locale="zh-CN",
        extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"},
        viewport={"width": 1280, "height": 900},
    )
    yield page
    page.context.close()


def sign_in(page: Page, site: Site) -> None:
    page.goto(site.base_url + "/dashboard")
    expect(page).to_have_url(site.base_url + "/dashboard/login")
    page.get_by_label("AppID（公众号开发者ID）").fill(APPID)
    page.get_by_label("AppSecret（开发者密码）").fill(SECRET)
    page.locator("#account-login").get_by_role("button", name="登录").click()
    wait_ready(page)


def wait_ready(page: Page) -> None:
    for panel in ("trend", "hour", "dist"):
        page.wait_for_selector(f"#{panel}-panel[data-state=ready]", timeout=30_000)


def wait_until(page: Page, expression: str, timeout: float = 20.0) -> None:
    """Poll a JavaScript expression until it is true.

    ``page.wait_for_function`` evaluates strings with ``eval``, which the dashboard's
    Content-Security-Policy forbids (as it should); ``page.evaluate`` is not subject to it.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(
        f"() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }}"
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        page.wait_for_timeout(50)


def chart_data(page: Page, chart: str) -> list[dict[str, Any]]:
    """The traces plotly.js drew (``gd.data``), as plain JSON."""
    result: list[dict[str, Any]] = page.evaluate(
        "id => JSON.parse(JSON.stringify(document.getElementById(id).data))", chart
    )
    return result


def table_rows(page: Page, table: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate(
        "id => Array.from(document.querySelectorAll('#' + id + ' tbody tr'))"
        ".map(tr => JSON.parse(tr.dataset.row))",
        table,
    )
    return result


def visible_cells(page: Page, table: str) -> list[list[str]]:
    result: list[list[str]] = page.evaluate(
        "id => Array.from(document.querySelectorAll('#' + id + ' tbody tr'))"
        ".map(tr => Array.from(tr.children).map(c => c.textContent))",
        table,
    )
    return result


def daily_senders(site: Site, begin: Any, end: Any) -> dict[str, int]:
    dist = truth(site.store, site.account, BY_NAME["getupstreammsgdist"], begin, end)
    out: dict[str, int] = {}
    for row in dist:
        if row["count_interval"]:
            out[row["ref_date"]] = out.get(row["ref_date"], 0) + row["msg_user"]
    return out


# --------------------------------------------------------------------------- tests


def test_sign_in_and_see_the_right_numbers(page: Page, site: Site) -> None:
    sign_in(page, site)
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#current-appid")).to_have_text(APPID)

    # Key numbers: the day's distinct senders and messages.
    senders, messages = day_totals(site.store, site.account, YESTERDAY)
    users_card = page.locator('[data-metric="msg_user"] .value')
    expect(users_card).to_have_attribute("data-value", str(float(senders)))
    expect(users_card).to_have_text(f"{senders:,}")
    expect(page.locator('[data-metric="msg_count"] .value')).to_have_text(f"{messages:,}")

    # The trend chart (default: 30 days, all types, senders) is drawn with the served numbers.
    begin = YESTERDAY - timedelta(days=29)
    assert page.locator("#trend-chart .main-svg").count() > 0
    assert page.locator("#trend-chart .scatterlayer .trace").count() == 1
    trace = chart_data(page, "trend-chart")[0]
    expected = daily_senders(site, begin, YESTERDAY)
    assert dict(zip(trace["x"], trace["y"], strict=True)) == expected

    # The tables hold exactly the served rows, and show them formatted.
    summary = truth(site.store, site.account, BY_NAME["getupstreammsg"], begin, YESTERDAY)
    assert table_rows(page, "trend-table") == summary
    first = visible_cells(page, "trend-table")[0]
    assert first[0] == summary[0]["ref_date"]
    assert first[2] == f"{summary[0]['msg_user']:,}"
    hours = truth(site.store, site.account, BY_NAME["getupstreammsghour"], YESTERDAY, YESTERDAY)
    assert table_rows(page, "hour-table") == hours
    dist = truth(site.store, site.account, BY_NAME["getupstreammsgdist"], begin, YESTERDAY)
    assert table_rows(page, "dist-table") == dist
    assert page.locator("#hour-chart .barlayer .trace").count() == 5
    assert page.locator("#dist-chart .barlayer .trace").count() >= 3


def test_interface_panel_shows_the_served_timings(page: Page, site: Site) -> None:
    sign_in(page, site)
    expect(page.locator("#interface-h")).to_have_text("接口分析")
    shown = page.evaluate(
        "() => Array.from(document.querySelectorAll('#interface-table tbody tr'))"
        ".map(tr => [tr.dataset.day, +tr.dataset.callbackCount, +tr.dataset.failCount,"
        " +tr.dataset.totalTimeCost, +tr.dataset.maxTimeCost])"
    )
    begin = YESTERDAY - timedelta(days=29)
    served = truth(site.store, site.account, BY_NAME["getinterfacesummary"], begin, YESTERDAY)
    assert sorted(map(tuple, shown)) == [tuple(r.values()) for r in served]
    newest = visible_cells(page, "interface-table")[0]
    last = served[-1]
    assert newest[:3] == [
        last["ref_date"],
        f"{last['callback_count']:,}",
        f"{last['fail_count']:,}",
    ]
    assert newest[4] == f"{last['total_time_cost'] / last['callback_count']:,.1f}"


def test_type_filter_range_and_period(page: Page, site: Site) -> None:
    sign_in(page, site)
    page.get_by_label("消息类型").select_option(label="图片")
    wait_until(page, "document.getElementById('trend-chart').data[0].name.includes('图片')")
    begin = YESTERDAY - timedelta(days=29)
    image = [
        r
        for r in truth(site.store, site.account, BY_NAME["getupstreammsg"], begin, YESTERDAY)
        if r["msg_type"] == 2
    ]
    trace = chart_data(page, "trend-chart")[0]
    drawn = {x: y for x, y in zip(trace["x"], trace["y"], strict=True) if y}
    assert drawn == {r["ref_date"]: r["msg_user"] for r in image}
    assert table_rows(page, "trend-table") == image
    assert "msg_type=2" in page.url

    # Messages, then weeks over a custom range.
    page.locator("label[for=m-msg_count]").click()
    wait_until(page, "document.getElementById('trend-chart').data[0].name.includes('消息发送次数')")
    trace = chart_data(page, "trend-chart")[0]
    assert {x: y for x, y in zip(trace["x"], trace["y"], strict=True) if y} == {
        r["ref_date"]: r["msg_count"] for r in image
    }
    page.get_by_label("时间粒度").select_option("week")
    page.get_by_label("开始日期").fill("2026-01-05")
    page.get_by_label("结束日期").fill("2026-03-08")
    page.get_by_role("button", name="查询").click()
    wait_until(page, "document.getElementById('trend-chart').data[0].x.length === 9")
    wait_ready(page)
    weeks = [
        r
        for r in truth(
            site.store,
            site.account,
            BY_NAME["getupstreammsgweek"],
            YESTERDAY - timedelta(days=70),
            YESTERDAY,
        )
        if "2026-01-05" <= r["ref_date"] <= "2026-03-08"
    ]
    trace = chart_data(page, "trend-chart")[0]
    assert trace["x"][0] == "2026-01-05" and trace["x"][-1] == "2026-03-02"
    assert dict(zip(trace["x"], trace["y"], strict=True)) == {
        r["ref_date"]: r["msg_count"] for r in weeks if r["msg_type"] == 2
    }
    assert table_rows(page, "trend-table") == [r for r in weeks if r["msg_type"] == 2]
    dist_weeks = [
        r
        for r in truth(
            site.store,
            site.account,
            BY_NAME["getupstreammsgdistweek"],
            YESTERDAY - timedelta(days=70),
            YESTERDAY,
        )
        if "2026-01-05" <= r["ref_date"] <= "2026-03-08"
    ]
    assert table_rows(page, "dist-table") == dist_weeks
    assert "period=week" in page.url and "begin=2026-01-05" in page.url

    # The URL keeps the state: a reload shows the same thing.
    page.reload()
    wait_ready(page)
    expect(page.get_by_label("时间粒度")).to_have_value("week")
    expect(page.get_by_label("消息类型")).to_have_value("2")

    # Another day's 24-hour profile.
    day = YESTERDAY - timedelta(days=3)
    page.get_by_label("日期", exact=True).fill(day.isoformat())
    wait_until(
        page,
        f"Array.from(document.querySelectorAll('#hour-table tbody tr'))"
        f".every(tr => JSON.parse(tr.dataset.row).ref_date === '{day}')"
        f" && document.querySelectorAll('#hour-table tbody tr').length > 0",
    )
    hours = truth(site.store, site.account, BY_NAME["getupstreammsghour"], day, day)
    assert table_rows(page, "hour-table") == [r for r in hours if r["msg_type"] == 2]


def test_csv_export_matches_the_api(page: Page, site: Site, tmp_path: Path) -> None:
    sign_in(page, site)
    with page.expect_download() as info:
        page.locator("#trend-csv").click()
    download = info.value
    assert download.suggested_filename.startswith(f"{APPID}-getupstreammsg-")
    text = Path(download.path()).read_text(encoding="utf-8").splitlines()
    assert text[0] == "ref_date,msg_type,msg_user,msg_count"
    exported = [
        dict(
            zip(
                ("ref_date", "msg_type", "msg_user", "msg_count"),
                (v if i == 0 else int(v) for i, v in enumerate(line.split(","))),
                strict=True,
            )
        )
        for line in text[1:]
    ]

    # The same range from the wire-compatible API, in windows of its max span (7 days).
    api = httpx.Client(base_url=site.base_url, timeout=30)
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    token = api.get("/cgi-bin/token", params=params).json()
    rows: list[dict[str, Any]] = []
    start = YESTERDAY - timedelta(days=29)
    while start <= YESTERDAY:
        end = min(start + timedelta(days=6), YESTERDAY)
        body = api.post(
            "/datacube/getupstreammsg",
            params={"access_token": token["access_token"]},
            content=json.dumps({"begin_date": str(start), "end_date": str(end)}),
        )
        rows += body.json()["list"]
        start = end + timedelta(days=1)
    api.close()
    assert exported == rows


def test_keyboard_only(page: Page, site: Site) -> None:
    """Sign in and operate the filters with the keyboard alone; focus is always visible."""
    page.goto(site.base_url + "/dashboard/login")
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    focused = page.locator("#appid")
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "appid":
            break
    expect(focused).to_be_focused()
    page.keyboard.type(APPID)
    page.keyboard.press("Tab")
    expect(page.locator("#secret")).to_be_focused()
    page.keyboard.type(SECRET)
    page.keyboard.press("Enter")
    wait_ready(page)

    # Tab to the type filter; its focus ring is drawn; arrow keys change it.
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "f-type":
            break
    expect(page.locator("#f-type")).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.press("ArrowDown")
    expect(page.locator("#f-type")).to_have_value("1")
    wait_until(page, "document.getElementById('trend-chart').data[0].name.includes('文字')")

    # The metric is a radio group: Tab into it, arrows move the choice.
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.name") == "metric":
            break
    assert page.evaluate("document.activeElement.name") == "metric"
    page.keyboard.press("ArrowRight")
    expect(page.locator("#m-msg_count")).to_be_checked()
    wait_until(page, "document.getElementById('trend-chart').data[0].name.includes('消息发送次数')")
    ring = page.evaluate(
        "getComputedStyle(document.querySelector('label[for=m-msg_count]')).outlineStyle"
    )
    assert ring != "none"

    # The data table opens from the keyboard.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.tagName") == "SUMMARY":
            break
    page.keyboard.press("Enter")
    expect(page.locator("#trend-table")).to_be_visible()


CONTRAST_JS = """
() => {
  function rgb(c) { const m = c.match(/[\\d.]+/g).map(Number); return m; }
  function lum(c) {
    const [r, g, b] = rgb(c).slice(0, 3).map(v => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  function background(el) {
    for (let e = el; e; e = e.parentElement) {
      const c = getComputedStyle(e).backgroundColor;
      const v = rgb(c);
      if (v.length < 4 || v[3] > 0.5) return c;
    }
    return 'rgb(255, 255, 255)';
  }
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let checked = 0;
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const el = node.parentElement;
    if (!node.textContent.trim() || !el) continue;
    if (el.closest('svg, script, .visually-hidden, .skip')) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none') continue;
    if (!el.offsetParent && style.position !== 'fixed') continue;
    const a = lum(style.color), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const need = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    checked++;
    if (ratio < need) bad.push(`${node.textContent.trim().slice(0, 30)}: ${ratio.toFixed(2)}`);
  }
  return {checked, bad};
}
"""

LABELS_JS = """
() => Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter(el => el.type !== 'hidden' && !el.hidden)
  .filter(el => {
    if (el.tagName === 'BUTTON') return !el.textContent.trim() && !el.getAttribute('aria-label');
    return !(el.labels && el.labels.length) && !el.getAttribute('aria-label');
  })
  .map(el => el.id || el.name || el.outerHTML.slice(0, 60))
"""


def test_accessibility_basics(page: Page, site: Site) -> None:
    page.goto(site.base_url + "/dashboard/login")
    assert page.evaluate(LABELS_JS) == []
    assert page.evaluate(CONTRAST_JS)["bad"] == []
    sign_in(page, site)
    page.locator("#trend-panel details summary").click()
    assert page.evaluate(LABELS_JS) == []
    contrast = page.evaluate(CONTRAST_JS)
    assert contrast["checked"] > 50
    assert contrast["bad"] == []
    for panel in ("trend", "hour", "dist"):
        expect(page.locator(f"#{panel}-chart")).to_have_attribute("role", "img")
    assert page.locator("h1").count() == 1
    assert page.locator("main#main").count() == 1


def test_language_switch(page: Page, site: Site) -> None:
    sign_in(page, site)
    page.get_by_label("消息类型").select_option("3")
    page.get_by_role("button", name="语言: English").click()
    wait_ready(page)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#key-h")).to_have_text("Yesterday's key numbers")
    expect(page.get_by_label("Message type")).to_have_value("3")  # the filters survive
    expect(page.locator("#trend-h")).to_have_text("Trend")
    page.get_by_role("button", name="Language: 中文").click()
    wait_ready(page)
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")


def test_admin_switches_accounts(browser: Browser, site: Site, watch: Watch) -> None:
    page = open_page(browser, site, watch, locale="en-US")
    page.goto(site.base_url + "/dashboard/login")
    page.get_by_label("Admin token").fill(ADMIN)
    page.locator("#admin-login").get_by_role("button", name="Sign in").click()
    wait_ready(page)
    expect(page.locator(".badge")).to_have_text("Admin")
    expect(page.get_by_label("Account")).to_have_value(APPID)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(site.base_url + "/dashboard/login")
    page.context.close()


def test_phone_width_and_screenshots(browser: Browser, site: Site, watch: Watch) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(
        browser,
        site,
        watch,
        locale="zh-CN",
        viewport={"width": 1280, "height": 900},
        extra_http_headers={"Accept-Language": "zh-CN"},
    )
    sign_in(page, site)
    page.wait_for_timeout(300)  # let plotly finish its transitions
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.context.close()

    phone = open_page(
        browser,
        site,
        watch,
        viewport={"width": 375, "height": 812},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
        locale="zh-CN",
        extra_http_headers={"Accept-Language": "zh-CN"},
    )
    sign_in(phone, site)
    overflow = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
    for selector in ("#f-period", "#f-type", "#f-begin", "#f-end", "#f-apply", "#logout"):
        box = phone.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, selector
        assert box["height"] >= 30, selector  # big enough to tap
    chart = phone.locator("#trend-chart .main-svg").first.bounding_box()
    assert chart is not None and chart["width"] <= 375
    phone.get_by_label("消息类型").select_option("1")
    wait_until(phone, "document.getElementById('trend-chart').data[0].name.includes('文字')")
    phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    phone.context.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_a_cross_site_form_cannot_sign_out(page: Page, site: Site) -> None:
    """A page of another origin posting to the dashboard is refused (no cookie, no token)."""
    sign_in(page, site)
    attacker = page.context.new_page()  # unwatched: the refusal is what we expect to see
    attacker.set_content(
        f'<form method="post" action="{site.base_url}/dashboard/logout">'
        '<input name="csrf" value="guessed"><button>go</button></form>'
    )
    with attacker.expect_navigation():
        attacker.click("button")
    assert "页面已过期" in attacker.content() or "expired" in attacker.content()
    attacker.close()
    page.reload()
    wait_ready(page)
    expect(page.locator("#logout")).to_be_visible()


def test_no_cdn_in_the_page(page: Page, site: Site) -> None:
    """Everything the page loads comes from msgcube (the watch fails on any other origin)."""
    sign_in(page, site)
    sources = page.evaluate(
        "Array.from(document.querySelectorAll('script[src], link[href]')).map(e => e.src || e.href)"
    )
    assert sources and all(s.startswith((site.base_url, "data:")) for s in sources), sources
    assert page.evaluate("typeof Plotly.newPlot") == "function"


def test_artifacts_folder_is_ignored() -> None:
    gitignore = (Path(__file__).resolve().parents[2] / ".gitignore").read_text()
    assert "test-artifacts/" in gitignore
    assert shutil.which("chromium") or os.path.exists(CHROMIUM)
