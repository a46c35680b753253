"""The local runner's translation between HTTP and Lambda, without starting it (the e2e tests do)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from mailqueue_dev.local import Function, LocalStack, Route, _http_answer, tuned_settings

FUNCTION = Function("ApiFunction", Path("functions/api"), "api", "handler", 30.0)


@pytest.mark.parametrize(
    ("method", "template", "path", "matches"),
    [
        ("ANY", "/{proxy+}", "/emails/01J/retry", True),
        ("ANY", "/{proxy+}", "/", False),
        ("GET", "/emails/{id}", "/emails/01J", True),
        ("GET", "/emails/{id}", "/emails/01J/retry", False),
        ("GET", "/emails/{id}/retry", "/emails/01J/retry", True),
        ("POST", "/emails/{id}", "/emails/01J", True),
    ],
)
def test_routes_match_as_api_gateway_path_templates(method: str, template: str, path: str, matches: bool) -> None:
    assert Route.of(method, template, FUNCTION).matches(method, path) is matches


def test_a_route_for_one_method_ignores_the_others() -> None:
    assert not Route.of("GET", "/emails", FUNCTION).matches("DELETE", "/emails")


def test_a_lambda_answer_becomes_status_headers_and_bytes() -> None:
    status, headers, body = _http_answer(
        {"statusCode": 202, "headers": {"Content-Type": "application/json"}, "body": '{"id":"x"}', "cookies": ["a=1"]}
    )
    assert (status, body) == (202, b'{"id":"x"}')
    assert headers == {"content-type": "application/json", "set-cookie": "a=1"}


def test_a_base64_answer_is_decoded() -> None:
    encoded = base64.b64encode(b"\x89PNG").decode()
    assert _http_answer({"statusCode": 200, "body": encoded, "isBase64Encoded": True})[2] == b"\x89PNG"


def test_a_bare_value_is_a_200_json_answer_as_http_api_treats_it() -> None:
    assert _http_answer({"ok": True}) == (200, {"content-type": "application/json"}, b'{"ok": true}')


def test_settings_from_the_shell_override_the_template_but_never_resource_names() -> None:
    shell = {"BACKOFF_BASE_SECONDS": "2", "TABLE_NAME": "elsewhere", "SENDING_IDENTITIES": "x.org", "HOME": "/root"}
    assert tuned_settings(shell) == {"BACKOFF_BASE_SECONDS": "2"}


def test_the_first_curl_sends_from_the_first_identity() -> None:
    assert LocalStack(identities=("mail.example.net",)).example_sender() == "app@mail.example.net"
    assert LocalStack(identities=("news@example.net",)).example_sender() == "news@example.net"
