"""The dashboard's words, in Chinese (the official platform's terms) and English.

The Chinese labels are the ones of 公众平台 → 统计 → 消息分析: 消息发送人数, 消息发送次数,
人均发送次数, the message types 文字/图片/语音/视频/第三方应用消息（链接） and the
distribution buckets "0", "1-5次", "6-10次", "10次以上". Every msg_type code and
count_interval of the domain has a label in both languages (a test checks it), so a new
code cannot reach the page unnamed.
"""

from __future__ import annotations

from collections.abc import Mapping

from msgcube.domain.messages import COUNT_INTERVALS, COUNTED_TYPES

LANGS: tuple[str, ...] = ("zh", "en")
DEFAULT_LANG = "zh"
HTML_LANG: dict[str, str] = {"zh": "zh-CN", "en": "en"}

MSG_TYPE_LABELS: dict[str, dict[int, str]] = {
    "zh": {1: "文字", 2: "图片", 3: "语音", 4: "视频", 6: "第三方应用消息（链接）"},
    "en": {1: "Text", 2: "Image", 3: "Voice", 4: "Video", 6: "Third-party app message (link)"},
}

INTERVAL_LABELS: dict[str, dict[int, str]] = {
    "zh": {0: "0", 1: "1-5次", 2: "6-10次", 3: "10次以上"},
    "en": {0: "0", 1: "1–5 times", 2: "6–10 times", 3: "More than 10 times"},
}

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "app_title": "消息分析",
        "product": "msgcube",
        "language": "语言",
        "switch_to": "English",
        "sign_in": "登录",
        "sign_in_title": "登录消息分析",
        "account_sign_in": "公众号登录",
        "admin_sign_in": "管理员登录",
        "appid": "AppID（公众号开发者ID）",
        "secret": "AppSecret（开发者密码）",
        "admin_token": "管理员令牌",
        "bad_login": "AppID 或 AppSecret 不正确。",
        "bad_admin": "管理员令牌不正确。",
        "admin_disabled": "未设置管理员令牌（admin_token），管理员登录不可用。",
        "session_expired": "页面已过期，请重新提交。",
        "forbidden": "没有权限。",
        "sign_out": "退出",
        "account": "公众号",
        "switch": "切换",
        "admin_badge": "管理员",
        "no_accounts": "还没有公众号。用 msgcube account add 注册一个。",
        "key_numbers": "昨日关键指标",
        "msg_user": "消息发送人数",
        "msg_count": "消息发送次数",
        "per_user": "人均发送次数",
        "vs_day": "日",
        "vs_week": "周",
        "vs_month": "月",
        "vs_day_long": "较前一日",
        "vs_week_long": "较7天前",
        "vs_month_long": "较30天前",
        "not_ready": "昨日数据将于 {time} 后提供。",
        "filters": "筛选",
        "period": "时间粒度",
        "period_day": "日",
        "period_week": "周",
        "period_month": "月",
        "msg_type": "消息类型",
        "all_types": "全部",
        "begin": "开始日期",
        "end": "结束日期",
        "apply": "查询",
        "metric": "指标",
        "trend": "趋势图",
        "hour_profile": "消息发送分时（24小时）",
        "hour_day": "日期",
        "hour": "时段",
        "distribution": "消息发送分布",
        "count_interval": "发送次数区间",
        "data_table": "数据表",
        "export_csv": "导出 CSV",
        "interface": "接口分析",
        "interface_intro": "公众号服务器（上游）应答转发消息的情况，由 msgcube 转发时测得。",
        "interface_none": (
            "所选日期内没有转发的消息。设置上游后可见："
            "msgcube account set --appid {appid} --upstream URL"
        ),
        "callback_count": "调用次数",
        "fail_count": "失败次数",
        "fail_rate": "失败率",
        "mean_time_cost": "平均耗时（毫秒）",
        "max_time_cost": "最大耗时（毫秒）",
        "ref_date": "日期",
        "loading": "加载中…",
        "no_data": "所选范围内没有数据。",
        "error": "无法加载数据：{msg}",
        "err_61500": "日期格式不正确。",
        "err_61501": "日期范围不正确。",
        "err_61503": "数据尚未就绪。",
        "empty_title": "还没有数据",
        "empty_intro": "公众号 {appid} 还没有任何消息。把数据导入 msgcube 的三种方式：",
        "empty_callback": "实时接收：在公众平台“开发 → 基本配置 → 服务器配置”中"
        "把服务器地址（URL）填为",
        "empty_import": "批量导入（JSON Lines 或 CSV，字段名与微信推送相同）：",
        "empty_generate": "生成模拟数据试用：",
        "empty_then": "统计数据按天汇总，已结束的日/周/月会出现在这里。",
        "skip": "跳到主要内容",
    },
    "en": {
        "app_title": "Message analysis",
        "product": "msgcube",
        "language": "Language",
        "switch_to": "中文",
        "sign_in": "Sign in",
        "sign_in_title": "Sign in to message analysis",
        "account_sign_in": "Official account",
        "admin_sign_in": "Administrator",
        "appid": "AppID",
        "secret": "AppSecret",
        "admin_token": "Admin token",
        "bad_login": "The AppID or AppSecret is not correct.",
        "bad_admin": "The admin token is not correct.",
        "admin_disabled": "No admin token (admin_token) is set, so administrator sign-in is off.",
        "session_expired": "This page has expired; please submit it again.",
        "forbidden": "Not allowed.",
        "sign_out": "Sign out",
        "account": "Account",
        "switch": "Switch",
        "admin_badge": "Admin",
        "no_accounts": "There are no accounts yet. Register one with msgcube account add.",
        "key_numbers": "Yesterday's key numbers",
        "msg_user": "Senders",
        "msg_count": "Messages sent",
        "per_user": "Messages per sender",
        "vs_day": "Day",
        "vs_week": "Week",
        "vs_month": "Month",
        "vs_day_long": "vs. the day before",
        "vs_week_long": "vs. 7 days before",
        "vs_month_long": "vs. 30 days before",
        "not_ready": "Yesterday's data is served after {time}.",
        "filters": "Filters",
        "period": "Period",
        "period_day": "Day",
        "period_week": "Week",
        "period_month": "Month",
        "msg_type": "Message type",
        "all_types": "All",
        "begin": "From",
        "end": "To",
        "apply": "Show",
        "metric": "Metric",
        "trend": "Trend",
        "hour_profile": "Messages by hour (24 hours)",
        "hour_day": "Day",
        "hour": "Hour",
        "distribution": "Senders by number of messages",
        "count_interval": "Messages per sender",
        "data_table": "Data table",
        "export_csv": "Export CSV",
        "interface": "Interface analysis",
        "interface_intro": (
            "How the account's own server (the upstream) answered the pushes msgcube "
            "relayed to it, as timed by the relay."
        ),
        "interface_none": (
            "No relayed pushes in this range. Set an upstream to see them: "
            "msgcube account set --appid {appid} --upstream URL"
        ),
        "callback_count": "Calls",
        "fail_count": "Failures",
        "fail_rate": "Failure rate",
        "mean_time_cost": "Mean time (ms)",
        "max_time_cost": "Max time (ms)",
        "ref_date": "Date",
        "loading": "Loading…",
        "no_data": "No data in the selected range.",
        "error": "Could not load the data: {msg}",
        "err_61500": "A date is not in YYYY-MM-DD form.",
        "err_61501": "The date range is not valid.",
        "err_61503": "The data is not ready yet.",
        "empty_title": "No data yet",
        "empty_intro": "Account {appid} has no messages yet. Three ways to get data into msgcube:",
        "empty_callback": "Live: on the WeChat platform (Development → Basic configuration → "
        "Server configuration) set the server URL to",
        "empty_import": "Bulk import (JSON Lines or CSV with WeChat's push field names):",
        "empty_generate": "Generated traffic, to try things out:",
        "empty_then": "Statistics are rolled up per day; finished days, weeks and months "
        "show here.",
        "skip": "Skip to main content",
    },
}


def pick_language(requested: str | None, accept_language: str | None) -> str:
    """The requested language if known, else the first known one the browser prefers."""
    if requested in LANGS:
        return requested
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        for lang in LANGS:
            if tag == lang or tag.startswith(lang + "-"):
                return lang
    return DEFAULT_LANG


def text(lang: str) -> Mapping[str, str]:
    return TEXT[lang if lang in TEXT else DEFAULT_LANG]


def missing_labels() -> list[str]:
    """Codes or keys without a label in some language (empty when complete)."""
    gaps = [
        f"{lang}: msg_type {code}"
        for lang in LANGS
        for code in COUNTED_TYPES
        if code not in MSG_TYPE_LABELS[lang]
    ]
    gaps += [
        f"{lang}: count_interval {code}"
        for lang in LANGS
        for code in COUNT_INTERVALS
        if code not in INTERVAL_LABELS[lang]
    ]
    keys = set().union(*(TEXT[lang] for lang in LANGS))
    gaps += [f"{lang}: text {key}" for lang in LANGS for key in sorted(keys - TEXT[lang].keys())]
    return gaps
