"""Who may call which route: the table in docs/deploy.md, the template's routes and the API's code agree.

The table ("Who may call it") names each route's JWT scopes. API Gateway enforces what
``template.yaml`` declares, so every route of the code must be a route of ``HttpApi``'s definition
with the table's scopes, and an event of ``ApiFunction``; a route added without its line falls to
``/{proxy+}``, which only admin may call. The example IAM policies of the same page must allow each
role exactly the routes of its scope.
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from mailqueue_dev.local import Function, Route
from mailqueue_dev.template import TEMPLATE, load_template

from tests.conftest import ApiClient

DEPLOY_GUIDE = Path(TEMPLATE).parent / "docs" / "deploy.md"
DOC = load_template()
SCOPES = ("mailqueue/send", "mailqueue/read", "mailqueue/admin")
# The example IAM policy of each kind of caller, and the scope it stands for.
ROLES = {"sender-app": "mailqueue/send", "reader": "mailqueue/read", "admin": "mailqueue/admin"}
CATCH_ALL = ("ANY", "/{proxy+}")
# A route's method in OpenAPI (the template's definition) and in the table.
OPENAPI_METHODS = {"x-amazon-apigateway-any-method": "ANY"}


def guide() -> str:
    return DEPLOY_GUIDE.read_text()


def documented_scopes() -> dict[tuple[str, str], set[str]]:
    """The table of routes and their scopes in docs/deploy.md."""
    section = guide().split("### Who may call it", 1)[1]
    table: dict[tuple[str, str], set[str]] = {}
    for row in re.finditer(r"^\| `([A-Z]+) (/[^`]*)` \|[^|]*\| ([^|]+) \|$", section, re.MULTILINE):
        method, path, scopes = row.groups()
        table[(method, path)] = set(re.findall(r"`([^`]+)`", scopes))
    return table


def template_scopes() -> dict[tuple[str, str], set[str]]:
    """Each route of HttpApi's definition, and the JWT scopes its security names."""
    paths = DOC["Resources"]["HttpApi"]["Properties"]["DefinitionBody"]["paths"]
    routes: dict[tuple[str, str], set[str]] = {}
    for path, methods in paths.items():
        for method, operation in methods.items():
            condition, with_jwt, with_iam = operation["security"]["Fn::If"]
            assert condition == "UseJwtAuthorizer", (method, path)
            assert with_iam == [{"AWS_IAM": []}], (method, path)
            [requirement] = with_jwt
            routes[(OPENAPI_METHODS.get(method, method.upper()), path)] = set(requirement["JwtAuthorizer"])
    return routes


def function_events() -> set[tuple[str, str]]:
    events = DOC["Resources"]["ApiFunction"]["Properties"]["Events"].values()
    assert all(event["Type"] == "HttpApi" for event in events)
    assert all(event["Properties"]["ApiId"] == {"Ref": "HttpApi"} for event in events)
    return {(event["Properties"]["Method"].upper(), event["Properties"]["Path"]) for event in events}


def code_routes(api: ApiClient) -> set[tuple[str, str]]:
    """The routes the API function serves, from the OpenAPI document it generates."""
    schema = api.module.app.get_openapi_schema()
    verbs = ("get", "put", "post", "delete", "patch", "head", "options")
    routes = {
        (verb.upper(), path) for path, item in schema.paths.items() for verb in verbs if getattr(item, verb) is not None
    }
    return routes | {("GET", "/openapi.json")}  # left out of its own document


def test_the_documented_table_lists_every_route_with_known_scopes() -> None:
    table = documented_scopes()
    assert len(table) >= 15
    for route, scopes in table.items():
        assert scopes, route
        assert scopes <= set(SCOPES), route
    # anything not listed is admin's only
    assert table[CATCH_ALL] == {"mailqueue/admin"}


def test_every_route_of_the_template_has_the_scopes_of_the_table() -> None:
    assert template_scopes() == documented_scopes()


def test_every_route_of_the_template_reaches_the_function_and_no_event_bypasses_it() -> None:
    # an event without its route in the definition would be a route SAM adds with no authorization
    assert function_events() == set(template_scopes())


def test_every_route_of_the_code_is_a_route_of_the_table(api: ApiClient) -> None:
    served = code_routes(api)
    table = set(documented_scopes())
    assert served - table == set(), "a route of the code needs its line in docs/deploy.md and template.yaml"
    assert table - {CATCH_ALL} - served == set(), "the table lists a route the code does not serve"


def test_the_separable_permissions_are_what_the_table_promises() -> None:
    table = documented_scopes()
    # sending applications cannot read mail, lift suppressions or cancel
    send_only = {route for route, scopes in table.items() if "mailqueue/send" in scopes}
    assert ("GET", "/emails/{email_id}") not in send_only
    assert ("DELETE", "/suppressions/{address}") not in send_only
    assert ("DELETE", "/emails/{email_id}") not in send_only
    # readers change nothing
    assert all(method == "GET" for method, _ in (r for r, s in table.items() if "mailqueue/read" in s))
    for route in [
        ("DELETE", "/emails/{email_id}"),
        ("POST", "/emails/{email_id}/retry"),
        ("DELETE", "/suppressions/{address}"),
        ("PUT", "/templates/{name}"),
        ("DELETE", "/templates/{name}"),
    ]:
        assert table[route] == {"mailqueue/admin"}, route


# --- the example IAM policies ------------------------------------------------------------------------------

SAMPLE_VALUES = {"email_id": "01JD7YQ3N4V8X2K5M6P9R0S1T2", "address": "alice@example.org", "name": "receipt"}
API_ARN = "arn:aws:execute-api:eu-west-1:111122223333:abc123/$default"


def example_policies() -> dict[str, list[dict[str, Any]]]:
    """Each role's policy: the JSON block after its bold name in "With IAM"."""
    section = guide().split("#### With IAM", 1)[1].split("\n### ", 1)[0]
    policies: dict[str, list[dict[str, Any]]] = {}
    for role, block in re.findall(r"^\*\*([a-z-]+)\*\*:.*?```json\n(.*?)```", section, re.MULTILINE | re.DOTALL):
        policies[role] = json.loads(block)["Statement"]
    return policies


def allows(statements: list[dict[str, Any]], resource: str) -> bool:
    """IAM's evaluation for these allow-only statements: ``*`` matches any characters, ``/`` included."""
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert statement["Action"] == "execute-api:Invoke"
        patterns = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if any(fnmatchcase(resource, pattern) for pattern in patterns):
            return True
    return False


def request_arn(method: str, path: str) -> str:
    concrete = re.sub(r"\{(\w+)\}", lambda match: SAMPLE_VALUES[match.group(1)], path)
    return f"{API_ARN}/{method}{concrete}"


@pytest.mark.parametrize(("method", "path"), sorted(set(documented_scopes()) - {CATCH_ALL}))
def test_each_example_policy_allows_exactly_the_routes_of_its_scope(method: str, path: str) -> None:
    policies = example_policies()
    assert set(policies) == set(ROLES)
    scopes = documented_scopes()[(method, path)]
    for role, scope in ROLES.items():
        assert allows(policies[role], request_arn(method, path)) == (scope in scopes), (role, method, path)


def test_the_example_policies_allow_nothing_outside_the_table() -> None:
    policies = example_policies()
    outside = [("GET", "/nowhere"), ("POST", "/emails/01JD7YQ3N4V8X2K5M6P9R0S1T2"), ("PATCH", "/emails")]
    for role in ROLES:
        for method, path in outside:
            assert not allows(policies[role], request_arn(method, path)), (role, method, path)


# --- the sample events -------------------------------------------------------------------------------------

API_SAMPLES = sorted((Path(TEMPLATE).parent / "events" / "api").glob("*.json"))


@pytest.mark.parametrize("sample", API_SAMPLES, ids=[path.stem for path in API_SAMPLES])
def test_each_sample_api_event_names_the_route_api_gateway_would_match(sample: Path) -> None:
    # Given the routes of the template, as the local stack matches them
    function = Function("ApiFunction", Path("functions/api"), "api", "handler", 30.0)
    routes = [Route.of(method, path, function) for method, path in function_events()]
    event = json.loads(sample.read_text())
    method, path = event["requestContext"]["http"]["method"], event["rawPath"]

    # Then the sample carries that route's key and variables, as API Gateway would send them
    route = min((r for r in routes if r.matches(method, path)), key=lambda r: r.specificity)
    assert route.key != "ANY /{proxy+}", "every sample is a request to a route of the API"
    assert event["routeKey"] == event["requestContext"]["routeKey"] == route.key
    assert event.get("pathParameters", {}) == route.parameters(path)
