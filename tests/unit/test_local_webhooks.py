"""The local stack's side of the webhooks: switched on from the shell, and a function that sets its failed
messages' visibility itself (the webhook function's backoff) keeps it, as on Lambda."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mailqueue.webhooks import LOCAL_SECRET
from mailqueue_dev.local import Function, LocalStack, Poller, from_environment, tuned_settings


class FakeSqs:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def delete_message_batch(self, **kwargs: Any) -> None:
        self.calls.append(("delete", kwargs))

    def change_message_visibility_batch(self, **kwargs: Any) -> None:
        self.calls.append(("visibility", kwargs))


MESSAGES = [
    {"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}", "Attributes": {}},
    {"MessageId": "m2", "ReceiptHandle": "r2", "Body": "{}", "Attributes": {}},
]


def poller(sets_visibility: bool, answer: Any) -> Poller:
    def handler(event: dict[str, Any], context: Any) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    function = Function("WebhookFunction", Path("functions/webhook"), "webhook", "handler", 30.0, handler=handler)
    return Poller(function, "http://queue", "arn:aws:sqs:us-east-1:123456789012:q", 10, True, sets_visibility)


@pytest.mark.parametrize(("sets_visibility", "made_visible"), [(True, False), (False, True)])
def test_a_reported_failure_keeps_the_visibility_its_function_set(sets_visibility: bool, made_visible: bool) -> None:
    sqs = FakeSqs()
    LocalStack()._deliver(sqs, poller(sets_visibility, {"batchItemFailures": [{"itemIdentifier": "m2"}]}), MESSAGES)
    assert [kind for kind, _ in sqs.calls] == ["delete", *(["visibility"] if made_visible else [])]
    assert sqs.calls[0][1]["Entries"] == [{"Id": "0", "ReceiptHandle": "r1"}]


def test_a_function_that_failed_whole_has_its_batch_back_soon_even_when_it_sets_visibility() -> None:
    # it set nothing: it never got that far
    sqs = FakeSqs()
    LocalStack()._deliver(sqs, poller(True, RuntimeError("crashed")), MESSAGES)
    assert [kind for kind, _ in sqs.calls] == ["visibility"]


def test_the_webhook_url_and_secret_come_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILQUEUE_WEBHOOK_URL", "http://127.0.0.1:8765/hooks")
    monkeypatch.setenv("MAILQUEUE_WEBHOOK_SECRET", "shh")
    local = from_environment()
    assert (local.webhook_url, local.webhook_secret) == ("http://127.0.0.1:8765/hooks", "shh")
    monkeypatch.delenv("MAILQUEUE_WEBHOOK_URL")
    monkeypatch.delenv("MAILQUEUE_WEBHOOK_SECRET")
    local = from_environment()
    assert local.webhook_url is None
    assert "webhooks   off" in " ".join(local._describe_webhooks())
    assert LOCAL_SECRET == "mailqueue-local-webhook-secret"  # the default docs/webhooks.md and README name


def test_the_webhook_timings_can_be_shortened_from_the_shell() -> None:
    env = {"WEBHOOK_BACKOFF_BASE_SECONDS": "1", "WEBHOOK_ATTEMPTS": "4", "WEBHOOK_URLS": "http://x"}
    assert tuned_settings(env) == {"WEBHOOK_BACKOFF_BASE_SECONDS": "1", "WEBHOOK_ATTEMPTS": "4"}
