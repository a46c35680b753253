"""Shared fixtures: fake AWS credentials, the stack built from template.yaml under moto, handler calls."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

# Before any handler or boto3 import: no real account is ever reachable from the tests.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_SERVICE_NAME": "mailqueue",
        "POWERTOOLS_METRICS_NAMESPACE": "mailqueue",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_DEV": "0",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

import boto3
import botocore.loaders
import botocore.session
from mailqueue import aws
from mailqueue.settings import get_settings
from mailqueue_dev.lambda_events import LambdaContext, http_api_event
from mailqueue_dev.template import Stack, build
from moto import mock_aws

FUNCTIONS = ("ApiFunction", "SenderFunction", "RequeueFunction", "EventsFunction", "NotifyFunction")

# Every test builds sessions afresh (each stack, and each handler import after aws.forget()), and each new
# botocore session would read and decode the service models (JSON of megabytes) again: most of a test's
# set-up. The sessions of this process share what their loaders read instead, as the clients of one session
# (one Lambda container) always do; botocore never changes a loaded model.
_MODELS: dict[str | None, dict[Any, Any]] = {}


def _loader_sharing_models(search_path_string: str | None = None) -> botocore.loaders.Loader:
    loader = botocore.loaders.create_loader(search_path_string)
    loader._cache = _MODELS.setdefault(search_path_string, {})
    return loader


botocore.session.create_loader = _loader_sharing_models  # type: ignore[attr-defined]


def configure(stack: Stack) -> None:
    """Give this process the environment Lambda would give the functions, and fresh clients."""
    for logical_id in FUNCTIONS:
        os.environ.update(stack.function_environment(logical_id))
    get_settings.cache_clear()
    aws.forget()


@pytest.fixture
def stack() -> Iterator[Stack]:
    """The template's tables, queues and bucket in moto (mock_aws), example.com verified in SES."""
    with mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        built = build(session)
        session.client("sesv2").create_email_identity(EmailIdentity="example.com")
        session.client("ses").verify_domain_identity(Domain="example.com")
        configure(built)
        yield built


@pytest.fixture
def context() -> LambdaContext:
    return LambdaContext(function_name="mailqueue-test", timeout_seconds=30)


def load_handler(module_name: str) -> Any:
    """Import a handler module afresh, as a new Lambda container would: its settings and clients
    are built at import, so each test's stack (mock or emulator) gets its own."""
    if module_name in sys.modules:
        return importlib.reload(sys.modules[module_name])
    return importlib.import_module(module_name)


class Verbs:
    """post/get/delete on top of a client's ``request(method, path, body, **kwargs)``."""

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        raise NotImplementedError

    def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return self.request("POST", path, body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return self.request("GET", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return self.request("DELETE", path, **kwargs)


class ApiClient(Verbs):
    """Calls the api handler with HTTP API events, as API Gateway would."""

    def __init__(self, context: LambdaContext) -> None:
        self.module = load_handler("api")
        self._handler = self.module.handler
        self._context = context

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        query: str = "",
        raw: str | None = None,
    ) -> tuple[int, Any]:
        sent_headers = {"content-type": "application/json", **(headers or {})}
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        answer = self._handler(http_api_event(method, path, payload, sent_headers, query), self._context.invocation())
        text = answer.get("body") or ""
        return answer["statusCode"], json.loads(text) if text else None


@pytest.fixture
def api(stack: Stack, context: LambdaContext) -> ApiClient:
    return ApiClient(context)


def an_email(**overrides: Any) -> dict[str, Any]:
    email: dict[str, Any] = {
        "from": "Shop <app@example.com>",
        "to": ["alice@example.org"],
        "subject": "Your receipt",
        "text": "Thanks for your order.",
    }
    email.update(overrides)
    return email
