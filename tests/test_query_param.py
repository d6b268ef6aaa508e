"""``parse_query`` and ``first_param`` read a query string exactly as ``parse_qsl`` and
Starlette's ``query_params`` do.

The API reads its token with a split of its own when the query string needs no
unquoting; any difference from Starlette's reading (which the rest of the app uses)
could make two parts of one request disagree about which token was sent.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from msgcube.ingest.gate import parse_query
from msgcube.web.request_checks import first_param

NAMES = ("component_access_token", "access_token")
PIECES = st.sampled_from(
    ["access_token", "component_access_token", "a", "=", "&", "&&", "x", "%41", "+", "%", ";", "é"]
)


def request_for(query: bytes) -> Request:
    return Request({"type": "http", "method": "POST", "query_string": query, "headers": []})


def starlette_reading(query: bytes) -> str | None:
    params = request_for(query).query_params
    return next((v for v in map(params.get, NAMES) if v), None)


@given(st.lists(PIECES, max_size=12).map("".join))
def test_first_param_matches_starlette(query: str) -> None:
    raw = query.encode("utf-8")
    assert first_param(request_for(raw), NAMES) == starlette_reading(raw)


def test_examples() -> None:
    assert first_param(request_for(b"access_token=abc"), NAMES) == "abc"
    assert first_param(request_for(b"access_token=a&access_token=b"), NAMES) == "b"
    assert first_param(request_for(b"access_token=&component_access_token=c"), NAMES) == "c"
    assert first_param(request_for(b"component_access_token=c&access_token=a"), NAMES) == "c"
    assert first_param(request_for(b"access_token=a%2Bb"), NAMES) == "a+b"
    assert first_param(request_for(b"access_token"), NAMES) is None
    assert first_param(request_for(b""), NAMES) is None


@given(st.lists(PIECES, max_size=12).map("".join))
def test_parse_query_matches_parse_qsl(query: str) -> None:
    assert parse_query(query) == dict(parse_qsl(query, keep_blank_values=True))
