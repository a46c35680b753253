"""The webhook function's handler against moto (its queue, dead-letter queue and secret built from the
template) and a real receiver on 127.0.0.1: signed deliveries, partial batch failures, one secret read."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from mailqueue import aws
from mailqueue.webhooks import DEFAULT_SCHEDULE, SIGNATURE_HEADER, verify
from mailqueue_dev.lambda_events import LambdaContext, sqs_event
from mailqueue_dev.listen import WebhookReceiver
from mailqueue_dev.template import Stack, build
from moto import mock_aws

from tests.conftest import load_handler

SECRET = "a-secret-from-secrets-manager"


@dataclass
class Webhooks:
    stack: Stack
    session: Any
    receiver: WebhookReceiver
    handler: Any
    module: Any

    @property
    def queue_url(self) -> str:
        return self.stack.names["WebhookQueue"]

    def messages(self, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
        """Put each body on the webhook queue and receive them, as the event source mapping would."""
        sqs = self.session.client("sqs")
        for body in bodies:
            sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(body))
        received: list[dict[str, Any]] = []
        while len(received) < len(bodies):
            received += sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"])[
                "Messages"
            ]
        return received

    def invoke(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        event = sqs_event(messages, self.stack.arns["WebhookQueue"])
        answer: dict[str, Any] = self.handler(event, LambdaContext(function_name="mailqueue-webhook"))
        return answer


def bus_message(email_id: str, sequence: int, status: str = "delivered") -> dict[str, Any]:
    detail = {"event_id": f"{email_id}-{sequence}", "email_id": email_id, "sequence": sequence, "status": status}
    return {"version": "0", "source": "mailqueue", "detail-type": "Email Status Changed", "detail": detail}


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    statuses: dict[str, int] = {}
    receiver = WebhookReceiver(secret=SECRET, answer=lambda event: statuses.get(event["email_id"], 204))
    with receiver, mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        stack = build(
            session, overrides={"WebhookUrls": receiver.url("/hooks")}, secret_strings={"WebhookSecret": SECRET}
        )
        saved = dict(os.environ)
        os.environ.update(stack.function_environment("WebhookFunction"))
        aws.forget()
        try:
            module = load_handler("webhook")
            hooks = Webhooks(stack, session, receiver, module.handler, module)
            hooks.statuses = statuses  # type: ignore[attr-defined]
            yield hooks
        finally:
            os.environ.clear()
            os.environ.update(saved)
            aws.forget()


def test_each_event_is_posted_signed_with_the_stacks_secret(webhooks: Webhooks) -> None:
    answer = webhooks.invoke(webhooks.messages(bus_message("01A", 2), bus_message("01B", 4, "bounced")))
    assert answer == {"batchItemFailures": []}
    received = webhooks.receiver.received
    assert sorted((r.event or {}).get("event_id") for r in received) == ["01A-2", "01B-4"]
    for request in received:
        assert request.verified
        assert verify(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body, now=time.time())
        assert request.headers["mailqueue-event-id"] == request.event["event_id"]
        assert request.headers["content-type"] == "application/json"
        assert request.path == "/hooks"


def test_a_failed_delivery_is_reported_for_its_record_only_and_hidden_for_its_backoff(webhooks: Webhooks) -> None:
    webhooks.statuses["01BAD"] = 500  # type: ignore[attr-defined]
    messages = webhooks.messages(bus_message("01GOOD", 1), bus_message("01BAD", 1))
    answer = webhooks.invoke(messages)
    [bad] = [m for m in messages if json.loads(m["Body"])["detail"]["email_id"] == "01BAD"]
    assert answer == {"batchItemFailures": [{"itemIdentifier": bad["MessageId"]}]}
    # the failed message is hidden for the first delay of the schedule (30 s): not received again now
    sqs = webhooks.session.client("sqs")
    assert sqs.receive_message(QueueUrl=webhooks.queue_url, VisibilityTimeout=0).get("Messages", []) == []
    assert DEFAULT_SCHEDULE.least_delay(1) == 30


def test_the_secret_is_read_once_per_container_not_per_event(webhooks: Webhooks) -> None:
    reads: list[str] = []
    client = aws.client("secretsmanager")
    client.meta.events.register(
        "before-parameter-build.secrets-manager.GetSecretValue", lambda params, **_: reads.append(params["SecretId"])
    )
    for n in range(3):
        webhooks.invoke(webhooks.messages(bus_message("01C", n + 1), bus_message("01D", n + 1)))
    assert len(webhooks.receiver.events()) == 6
    assert reads == [webhooks.stack.names["WebhookSecret"]]


def test_one_emails_events_in_a_batch_are_delivered_in_sequence_order(webhooks: Webhooks) -> None:
    messages = webhooks.messages(*(bus_message("01E", n) for n in (3, 1, 2)))
    assert webhooks.invoke(messages) == {"batchItemFailures": []}
    assert [event["sequence"] for event in webhooks.receiver.events()] == [1, 2, 3]


def test_the_sample_event_is_delivered(webhooks: Webhooks) -> None:
    # events/webhook/sqs-batch.json, for `sam local invoke` and `python -m mailqueue_dev.invoke webhook`
    sample = json.loads((Path(__file__).parents[2] / "events" / "webhook" / "sqs-batch.json").read_text())
    answer = webhooks.handler(sample, LambdaContext(function_name="mailqueue-webhook"))
    assert answer == {"batchItemFailures": []}
    [event] = webhooks.receiver.events()
    assert event == json.loads(sample["Records"][0]["body"])["detail"]
    assert event["status"] == "delivered"
