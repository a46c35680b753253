"""The API fuzzed from its own OpenAPI document (schemathesis), over HTTP against the local stack.

For every route, requests generated from ``/openapi.json``, valid and invalid: no answer is a
5xx, every answer is documented (status code, content type, body schema), invalid requests are
refused, and every 4xx carries mailqueue's one error shape
``{"error": {"code", "message", "details": [{"field", "message"}]}}``.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from mailqueue_dev.local import LocalStack
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

ROUTES = (
    "POST /emails",
    "POST /emails/batch",
    "GET /emails",
    "GET /emails/{email_id}",
    "DELETE /emails/{email_id}",
    "POST /emails/{email_id}/retry",
    "POST /attachments",
    "GET /suppressions",
    "DELETE /suppressions/{address}",
    "GET /stats",
    "PUT /templates/{name}",
    "GET /templates/{name}",
    "GET /templates",
    "DELETE /templates/{name}",
    "POST /templates/{name}/preview",
)
# Routes whose only input is a path parameter that may be any string, or that take none: no request to them is
# invalid.
ANY_PATH_ONLY = frozenset(
    {
        "GET /emails/{email_id}",
        "DELETE /emails/{email_id}",
        "POST /emails/{email_id}/retry",
        "DELETE /suppressions/{address}",
        "GET /stats",
    }
)
CASES = [
    *(pytest.param(route, GenerationMode.POSITIVE, id=f"{route} valid") for route in ROUTES),
    *(
        pytest.param(route, GenerationMode.NEGATIVE, id=f"{route} invalid")
        for route in ROUTES
        if route not in ANY_PATH_ONLY
    ),
]
# Examples per route and mode: enough to reach every field, bounded so that the file runs in well under a minute.
EXAMPLES = 30


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx answer is mailqueue's error: a code, a message and field details."""
    if not 400 <= response.status_code < 500:
        return None
    body = response.json()
    assert isinstance(body, dict), f"a {response.status_code} answered {body!r}"
    assert set(body) == {"error"}, f"a {response.status_code} answered {body!r}"
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) == {"code", "message", "details"}, body
    assert isinstance(error["code"], str), body
    assert error["code"], body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert isinstance(error["details"], list), body
    for detail in error["details"]:
        assert isinstance(detail, dict), body
        assert set(detail) == {"field", "message", "code"}, body
        assert isinstance(detail["field"], str), body
        assert isinstance(detail["message"], str), body
        assert isinstance(detail["code"], str) and detail["code"], body
    # The error's code is its first detail's: one code per kind of mistake
    assert not error["details"] or error["code"] == error["details"][0]["code"], body
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    error_shape,
]


@pytest.fixture(scope="module")
def api_schema(local: LocalStack) -> Any:
    schema = schemathesis.openapi.from_url(f"{local.api_url}/openapi.json")
    # An invalid body too large to reach the function is refused before it runs: 413, documented.
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    return schema


def operations(api_schema: Any) -> dict[str, Any]:
    found = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


def test_the_document_lists_every_route(api_schema: Any) -> None:
    assert sorted(operations(api_schema)) == sorted(ROUTES)


@pytest.mark.parametrize(("route", "mode"), CASES)
def test_every_answer_is_documented_and_no_request_breaks_the_api(
    api_schema: Any, local: LocalStack, route: str, mode: GenerationMode
) -> None:
    operation = operations(api_schema)[route]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def answers_by_the_document(case: Any) -> None:
        response = case.call(base_url=local.api_url, timeout=30)
        case.validate_response(response, checks=CHECKS)

    answers_by_the_document()
