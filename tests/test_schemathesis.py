"""schemathesis against ``/openapi.json``: generated requests to every operation of the
document, each answer checked against it (in-process over ASGI, bounded).

WeChat's convention — every answer HTTP 200, an error being an ``{"errcode", "errmsg"}``
body — is declared in the document (each 200 answer is the result or the error
envelope with the errcodes the route can give), so nothing is excluded: no server error,
a documented status and content type, a body matching the schema. Schemathesis's
"negative data is rejected with 4xx" check is not run, since WeChat rejects with 200.
A valid access token replaces the generated one, so requests get past the token checks.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from msgcube.auth.tokens import issue_access_token
from msgcube.settings import Settings
from msgcube.storage.db import Store
from msgcube.web.app import create_app
from support.api import new_account, shanghai

from conftest import fresh_appid

T0 = shanghai(2026, 6, 1, 10)
MAX_EXAMPLES = 30
"""Per operation: 13 operations, a few seconds in all."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def app_schema(sqlite_store: Store) -> tuple[Any, str]:
    """The document loaded over ASGI from a fresh app, and a valid access token."""
    appid = fresh_appid("wxfuzz")
    account = new_account(sqlite_store, appid, "fuzz-secret-0123456789abcdef")
    with sqlite_store.write() as conn:
        grant = issue_access_token(conn, account, int(T0.timestamp()), T0.date(), 10**6)
    app = create_app(Settings(now=T0.isoformat()), sqlite_store)
    return schemathesis.openapi.from_asgi("/openapi.json", app), grant.access_token


def test_every_answer_matches_the_document(app_schema: tuple[Any, str]) -> None:
    schema, token = app_schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            if case.query and "access_token" in case.query:
                case.query["access_token"] = token
            response = case.call()
            case.validate_response(response, checks=CHECKS)

        check()
