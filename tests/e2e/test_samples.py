"""The sample events in events/: one for every API route, each taken by the API function, and the one-line
way to invoke any function with any sample against the running local stack."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import Http, wait_for_status

pytestmark = pytest.mark.e2e

EVENTS = Path(__file__).parents[2] / "events"
API_SAMPLES = sorted((EVENTS / "api").glob("*.json"))
# What each sample gets from a stack that holds none of the emails the samples name.
EXPECTED = {
    "post-email": {202},
    "post-emails-batch": {202},
    "get-email": {404},
    "list-emails": {200},
    "cancel-email": {404},
    "retry-email": {404},
    "post-attachment": {201},
    "list-suppressions": {200},
    "lift-suppression": {204, 404},
    "get-openapi": {200},
    "get-stats": {200},
    # The template samples name one template: saved or not, depending on the order they run in.
    "put-template": {201},
    "get-template": {200, 404},
    "list-templates": {200},
    "preview-template": {200, 404},
    "delete-template": {204, 404},
}


def sample(path: Path) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(path.read_text())
    return event


def test_every_route_of_the_api_has_a_sample(http: Http) -> None:
    code, document = http.get("/openapi.json")
    assert code == 200
    routes = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    covered = set()
    for path in API_SAMPLES:
        event = sample(path)
        assert event["version"] == "2.0"
        method, raw_path = event["requestContext"]["http"]["method"], event["rawPath"]
        for route_method, template in routes:
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if route_method == method and re.match(pattern, raw_path):
                covered.add((route_method, template))
                # the route of the template that API Gateway matches (tests/unit/test_api_permissions.py)
                assert event["routeKey"] == f"{route_method} {template}", path.name

    assert covered == routes


@pytest.mark.parametrize("path", API_SAMPLES, ids=lambda path: path.stem)
def test_each_api_sample_is_answered_by_the_api_function(local: LocalStack, path: Path) -> None:
    answer = local.invoke(local.functions["ApiFunction"], sample(path))

    assert answer["statusCode"] in EXPECTED[path.stem], answer


def test_invoke_runs_a_function_with_a_sample_against_the_running_stack(local: LocalStack, http: Http) -> None:
    assert local.state_dir is not None
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MAILQUEUE_", "AWS_"))}
    command = [sys.executable, "-m", "mailqueue_dev.invoke", "api", str(EVENTS / "api" / "post-email.json")]

    result = subprocess.run(
        command, check=False, cwd=local.state_dir.parent, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["statusCode"] == 202
    # The email is in the running stack's table, and its sender sends it
    wait_for_status(http, json.loads(answer["body"])["id"], "delivered")


def test_invoke_says_when_no_stack_runs(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mailqueue_dev.invoke", "api", str(EVENTS / "api" / "get-email.json")]

    result = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert "no local stack is running from here: start it with `make dev` first" in result.stderr
