"""Status events on the local stack: the table's stream, the notify function and the bus, as deployed.

A user's rule on the status bus sends every event to an SQS queue of the user's, as docs/events.md shows;
the emails go through the whole local stack (API, sender, SES's simulated events), and the events arrive
for what the table holds, each email's in the order of its sequence.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import Http, an_email, wait_for, wait_for_status

pytestmark = pytest.mark.e2e


class Subscriber:
    """An SQS queue subscribed to the status bus by a rule, and the events it received, by email."""

    def __init__(self, local: LocalStack) -> None:
        assert local.emulator is not None and local.stack is not None
        self.sqs, events = local.emulator.client("sqs"), local.emulator.client("events")
        self.url = self.sqs.create_queue(QueueName="e2e-status-subscriber")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bus = local.stack.names["StatusEventBus"]
        events.put_rule(Name="e2e-statuses", EventBusName=bus, EventPattern=json.dumps({"source": ["mailqueue"]}))
        events.put_targets(Rule="e2e-statuses", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
        self.received: list[dict[str, Any]] = []

    def of(self, email_id: str) -> list[dict[str, Any]]:
        """The details received so far for ``email_id``, in the order they arrived."""
        while messages := self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", []):
            self.received += [json.loads(message["Body"]) for message in messages]
            self.sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
        return [event["detail"] for event in self.received if event["detail"]["email_id"] == email_id]


@pytest.fixture
def subscriber(local: LocalStack) -> Subscriber:
    return Subscriber(local)


def test_delivered_bounced_complained_and_failed_emails_produce_their_events_in_order(
    local: LocalStack, http: Http, subscriber: Subscriber, lift: list[str]
) -> None:
    lift += ["bounce@simulator.amazonses.com", "complaint@simulator.amazonses.com"]
    sent = {
        "delivered": an_email(to=["reader@example.org"], metadata={"order": 17}, tags=[{"name": "k", "value": "v"}]),
        "bounced": an_email(to=["bounce@simulator.amazonses.com"]),
        "complained": an_email(to=["complaint@simulator.amazonses.com"]),
        "failed": an_email(to=["reader@reject.mailqueue.example"]),
    }
    ids = {}
    for fate, email in sent.items():
        code, answer = http.post("/emails", email, headers={"Idempotency-Key": f"e2e-events-{fate}"})
        assert code == 202, answer
        ids[fate] = answer["id"]
    for fate, email_id in ids.items():
        wait_for_status(http, email_id, fate)

    # By default delivered, bounced, complained and failed are published: one event per change to them
    expected = {
        "delivered": [("sent", "delivered")],
        "bounced": [("sent", "bounced")],
        "complained": [("sent", "delivered"), ("delivered", "complained")],
        "failed": [("sending", "failed")],
    }
    for fate, email_id in ids.items():
        events = wait_for(
            lambda email_id=email_id, fate=fate: (
                len(subscriber.of(email_id)) >= len(expected[fate]) and subscriber.of(email_id)
            ),
            f"the {fate} email's events",
        )
        assert [(e["previous_status"], e["status"]) for e in events] == expected[fate], fate
        # each email's events are in the order of their sequence, with ids made of it
        assert [e["sequence"] for e in events] == sorted({e["sequence"] for e in events}), fate
        assert all(e["event_id"] == f"{email_id}-{e['sequence']}" for e in events)
        assert all(e["idempotency_key"] == f"e2e-events-{fate}" for e in events)
        # and the last one is what the table holds
        code, body = http.get(f"/emails/{email_id}")
        assert code == 200 and body["status"] == events[-1]["status"]

    delivered = subscriber.of(ids["delivered"])[0]
    assert (delivered["metadata"], delivered["tags"]) == ({"order": 17}, [{"name": "k", "value": "v"}])
    bounce = subscriber.of(ids["bounced"])[0]["reason"]["bounce"]
    assert (bounce["type"], bounce["subtype"]) == ("Permanent", "General")
    error = subscriber.of(ids["failed"])[0]["reason"]["error"]
    assert error["code"] == "MessageRejected"
