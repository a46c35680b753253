"""GET /stats: the stack's SendRate, its dead letters and the emails held by an account error, through the API
handler against moto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from mailqueue_dev.lambda_events import LambdaContext

from tests.conftest import an_email
from tests.unit.test_api import assert_error_shape
from tests.unit.test_sender import SES_URL, Sender, receive

NOT_VERIFIED = "Email address is not verified. The following identities failed the check: app@example.com"


@pytest.fixture
def sender(stack: Any, context: LambdaContext) -> Iterator[Sender]:
    handler = Sender(stack, context)
    yield handler
    handler.close()


def ses_answers(sender: Sender, code: str, message: str, status: int = 400) -> None:
    """SES answers each SendEmail with this error from now on, in place of what it answered before."""
    event = "before-call.sesv2.SendEmail"

    def respond(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return AWSResponse(SES_URL, status, {"x-amzn-ErrorType": code}, None), parsed

    sender.ses.meta.events.unregister(event, unique_id="stats-ses-answer")
    sender.ses.meta.events.register(event, respond, unique_id="stats-ses-answer")


def enqueue(api: Any, **overrides: Any) -> str:
    status, body = api.post("/emails", an_email(**overrides))
    assert status == 202, body
    email_id: str = body["id"]
    return email_id


def test_stats_show_the_send_rate_the_stack_is_configured_with(api, stack):
    status, body = api.get("/stats")

    assert status == 200, body
    assert body["send_rate"] == float(stack.function_environment("ApiFunction")["SEND_RATE"])
    assert body["at"].endswith("Z")


def test_dead_letters_are_counted_on_each_dead_letter_queue(api, stack):
    sqs = boto3.client("sqs")
    for _ in range(2):
        sqs.send_message(QueueUrl=stack.names["SendDeadLetterQueue"], MessageBody='{"id": "01JA"}')
    sqs.send_message(QueueUrl=stack.names["EventsDeadLetterQueue"], MessageBody="{}")
    # A message someone is reading (in flight) is a dead letter still.
    sqs.receive_message(QueueUrl=stack.names["EventsDeadLetterQueue"], VisibilityTimeout=60)

    status, body = api.get("/stats")

    assert status == 200, body
    assert body["dead_letters"] == 3
    assert body["dead_letter_queues"] == [
        {"queue": "send", "messages": 2},
        {"queue": "high_priority", "messages": 0},
        {"queue": "events", "messages": 1},
    ]


def test_held_emails_are_those_an_account_error_holds_and_no_other_retrying_email(api, stack, sender):
    # Given one email held because SES says its identity is not verified
    held = enqueue(api)
    ses_answers(sender, "MessageRejected", NOT_VERIFIED)
    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}
    # And one retrying after a transient error, one queued and one failed for good
    transient = enqueue(api)
    ses_answers(sender, "ServiceUnavailable", "Service is unavailable.", 503)
    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}
    rejected = enqueue(api)
    ses_answers(sender, "MessageRejected", "Illegal address")
    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}
    enqueue(api)
    assert [api.get(f"/emails/{i}")[1]["status"] for i in (held, transient, rejected)] == [
        "retrying",
        "retrying",
        "failed",
    ]

    status, body = api.get("/stats")

    assert status == 200, body
    assert body["held"] == {
        "count": 1,
        "read": 2,
        "capped": False,
        "by_code": {"MessageRejected": 1},
        "emails": [{"id": held, "to": "alice@example.org", "code": "MessageRejected"}],
    }


def test_held_emails_are_read_up_to_a_bound(api, stack, sender, monkeypatch):
    monkeypatch.setattr(api.module.stats, "held_read_limit", 2)
    ids = [enqueue(api) for _ in range(3)]
    ses_answers(sender, "AccountSendingPausedException", "Sending is paused for this account.")
    assert sender.invoke(receive(stack)) == {"batchItemFailures": []}

    status, body = api.get("/stats")

    assert status == 200, body
    held = body["held"]
    assert (held["count"], held["read"], held["capped"]) == (2, 2, True)
    # The next to be tried first, as the list of retrying emails shows them
    deadlines = {email_id: api.get(f"/emails/{email_id}")[1]["deadline"] for email_id in ids}
    assert [email["id"] for email in held["emails"]] == sorted(ids, key=lambda i: (deadlines[i], i))[:2]


def test_a_dead_letter_queue_out_of_reach_is_a_503_in_the_error_shape(api, stack):
    from botocore.exceptions import EndpointConnectionError

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com")

    api.module.stats.dead_letters._client.meta.events.register("before-send.sqs.GetQueueAttributes", unreachable)

    status, body = api.get("/stats")

    assert status == 503
    assert_error_shape(body, "unavailable")


def test_the_openapi_document_describes_the_stats_route(api, stack):
    _, document = api.get("/openapi.json")

    route = document["paths"]["/stats"]["get"]
    assert set(route["responses"]) >= {"200", "503"}
    schema = document["components"]["schemas"]["QueueStats"]
    assert {"send_rate", "dead_letters", "dead_letter_queues", "held"} <= set(schema["properties"])
