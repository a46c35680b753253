"""Signed webhooks on the local stack: the status bus's events reach a real receiver on 127.0.0.1, signed,
again after a 500, all of them after the receiver was down, and a bad signature shows.

The webhook timings are shortened (tests/e2e/conftest.py: 1 s, then 2 s between attempts). Most tests put
events on the stack's status bus as the notify function puts them, to choose what the receiver gets;
``test_status_events_of_emails_sent_through_the_api_...`` takes the whole path, from the API through the
emails table's stream and the notify function.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from mailqueue.webhooks import SIGNATURE_HEADER, InvalidSignature, sign, verify
from mailqueue_dev.listen import WebhookReceiver
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import Http, an_email, status_of, wait_for
from tests.e2e_webhooks.conftest import WEBHOOK_SECRET

# One worker runs them all (pytest-xdist): one stack with webhooks for the package, started once.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("webhooks")]


def put_event(local: LocalStack, email_id: str, sequence: int, status: str) -> dict[str, Any]:
    """Put a status event on the stack's bus, as the notify function does; its detail."""
    assert local.emulator is not None and local.stack is not None
    detail = {
        "schema_version": "1",
        "event_id": f"{email_id}-{sequence}",
        "email_id": email_id,
        "sequence": sequence,
        "status": status,
        "previous_status": None,
        "reason": None,
        "metadata": {"test": "webhooks"},
        "tags": [],
        "idempotency_key": None,
        "time": "2026-11-30T19:20:00.000Z",
    }
    answer = local.emulator.client("events").put_events(
        Entries=[
            {
                "Source": "mailqueue",
                "DetailType": "Email Status Changed",
                "Detail": json.dumps(detail),
                "EventBusName": local.stack.names["StatusEventBus"],
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0
    return detail


def new_id() -> str:
    return f"01WEBHOOK{uuid.uuid4().hex[:16].upper()}"


def events_for(receiver: WebhookReceiver, email_id: str) -> list[dict[str, Any]]:
    return [event for event in receiver.events() if event.get("email_id") == email_id]


@pytest.fixture
def receiver(webhook_receiver: WebhookReceiver) -> Iterator[WebhookReceiver]:
    """The package's receiver, answering 204 again (and listening) after the test."""
    yield webhook_receiver
    webhook_receiver.answer = lambda _event: 204
    if not webhook_receiver.running:
        webhook_receiver.start()


class Attempts:
    """Every POST the webhook function makes, answered or not (a down receiver sees none of them)."""

    def __init__(self, local: LocalStack) -> None:
        function = local.functions["WebhookFunction"]
        assert function.handler is not None, function.missing
        self.courier = sys.modules[function.module_name].courier
        self.original: Callable[..., int] = self.courier._send
        self.urls: list[tuple[str, str]] = []

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        self.urls.append((json.loads(body)["event_id"], url))
        return self.original(url, body, headers, timeout)

    def of(self, event_id: str) -> int:
        return sum(1 for seen, _ in self.urls if seen == event_id)


@pytest.fixture
def attempts(local: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Attempts:
    recorder = Attempts(local)
    monkeypatch.setattr(recorder.courier, "_send", recorder)
    return recorder


def test_each_status_event_arrives_signed_with_its_event_id(local: LocalStack, receiver: WebhookReceiver) -> None:
    ids = {status: new_id() for status in ("delivered", "bounced", "failed")}
    sent = {status: put_event(local, email_id, 1, status) for status, email_id in ids.items()}
    for status, email_id in ids.items():
        [event] = wait_for(lambda email_id=email_id: events_for(receiver, email_id), f"the {status} event")
        assert event == sent[status]
    requests = [r for r in receiver.received if r.event and r.event["email_id"] in ids.values()]
    assert len(requests) == 3
    for request in requests:
        # the receiver verified each one; so does anyone holding the secret, and no one without it
        assert request.verified
        header = request.headers[SIGNATURE_HEADER.lower()]
        assert verify(WEBHOOK_SECRET, header, request.body, now=time.time())
        with pytest.raises(InvalidSignature):
            verify("not the secret", header, request.body, now=time.time())
        assert request.headers["mailqueue-event-id"] == request.event["event_id"]  # type: ignore[index]


def test_one_emails_events_arrive_in_sequence_order(local: LocalStack, receiver: WebhookReceiver) -> None:
    email_id = new_id()
    for sequence, status in enumerate(("sent", "delivered", "complained"), start=1):
        put_event(local, email_id, sequence, status)
    events = wait_for(lambda: len(events_for(receiver, email_id)) == 3 and events_for(receiver, email_id), "3 events")
    assert [event["sequence"] for event in events] == [1, 2, 3]


def test_a_receiver_answering_500_gets_the_event_again(
    local: LocalStack, receiver: WebhookReceiver, attempts: Attempts
) -> None:
    email_id = new_id()
    failures = {"left": 2}

    def answer(event: dict[str, Any]) -> int:
        if event["email_id"] == email_id and failures["left"] > 0:
            failures["left"] -= 1
            return 500
        return 204

    receiver.answer = answer
    detail = put_event(local, email_id, 1, "delivered")
    wait_for(lambda: failures["left"] == 0 and events_for(receiver, email_id)[2:], "the third delivery", timeout=30)
    deliveries = [r for r in receiver.received if r.event and r.event["email_id"] == email_id]
    assert [r.answered for r in deliveries] == [500, 500, 204]
    # the same event each time: the same body and event id, signed afresh
    assert {r.body for r in deliveries} == {deliveries[0].body}
    assert all(r.event == detail for r in deliveries)
    assert attempts.of(detail["event_id"]) == 3


def test_a_receiver_down_for_several_retries_gets_everything_afterwards(
    local: LocalStack, receiver: WebhookReceiver, attempts: Attempts
) -> None:
    receiver.stop()
    ids = [new_id() for _ in range(3)]
    details = [put_event(local, email_id, 1, "delivered") for email_id in ids]
    # each event is tried, and tried again, while nothing listens
    wait_for(lambda: all(attempts.of(d["event_id"]) >= 3 for d in details), "three attempts of each event", timeout=30)
    assert not [event for event in receiver.events() if event["email_id"] in ids]
    receiver.start()  # on the same port
    for email_id, detail in zip(ids, details, strict=True):
        [event] = wait_for(lambda email_id=email_id: events_for(receiver, email_id), f"{email_id} after the outage")
        assert event == detail


def test_a_refused_delivery_is_dead_lettered_not_retried(
    local: LocalStack, receiver: WebhookReceiver, attempts: Attempts
) -> None:
    assert local.emulator is not None and local.stack is not None
    email_id = new_id()
    receiver.answer = lambda event: 410 if event["email_id"] == email_id else 204
    detail = put_event(local, email_id, 1, "bounced")
    sqs = local.emulator.client("sqs")
    queue = local.stack.names["WebhookDeadLetterQueue"]

    def dead_letter() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        return [m for m in messages.get("Messages", []) if json.loads(m["Body"])["detail"]["email_id"] == email_id]

    [message] = wait_for(dead_letter, "the refused delivery in the dead-letter queue")
    assert json.loads(message["Body"]) == {"url": receiver.url("/hooks"), "detail": detail}
    assert "410" in message["MessageAttributes"]["reason"]["StringValue"]
    assert attempts.of(detail["event_id"]) == 1


def test_a_bad_signature_is_answered_401(receiver: WebhookReceiver) -> None:
    body = json.dumps({"event_id": "x-1", "email_id": "x", "sequence": 1, "status": "delivered"}).encode()
    now = int(time.time())

    def post(signature: str, data: bytes = body) -> int:
        request = urllib.request.Request(
            receiver.url("/hooks"),
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    assert post(sign(WEBHOOK_SECRET, body, now)) == 204
    assert post(sign("another secret", body, now)) == 401
    assert post(sign(WEBHOOK_SECRET, body, now), data=body.replace(b"delivered", b"bounced")) == 401
    assert post(sign(WEBHOOK_SECRET, body, now - 600)) == 401  # a replay
    assert post("t=1,v1=nothex") == 401


# --- the whole path: the API, the table's stream, the bus, the webhook ------------------------------------------


def test_status_events_of_emails_sent_through_the_api_arrive_signed_and_in_order(
    local: LocalStack, http: Http, receiver: WebhookReceiver
) -> None:
    addresses = {
        "delivered": "alice@example.org",
        "bounced": "bounce@simulator.amazonses.com",
        "failed": "reader@reject.mailqueue.example",
    }
    ids: dict[str, str] = {}
    for status, address in addresses.items():
        code, body = http.post("/emails", an_email(to=[address]))
        assert code == 202, body
        ids[status] = body["id"]
    for status, email_id in ids.items():
        events = wait_for(
            lambda email_id=email_id, status=status: [
                e for e in events_for(receiver, email_id) if e["status"] == status
            ],
            f"the {status} event of {email_id}",
        )
        assert len(events) == 1, events
        [event] = events
        assert event["event_id"] == f"{email_id}-{event['sequence']}"
        # the webhook reports only what the table holds
        assert status_of(http, email_id) == status
    for email_id in ids.values():
        requests = [r for r in receiver.received if r.event and r.event["email_id"] == email_id]
        assert all(r.verified for r in requests)
        sequences = [r.event["sequence"] for r in requests if r.event]  # type: ignore[index]
        assert sequences == sorted(sequences)
