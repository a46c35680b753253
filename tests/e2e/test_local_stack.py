"""The whole queue through real HTTP: enqueue, send, deliver, schedule, cancel, retry after a throttle, refuse."""

from __future__ import annotations

import base64
import json
import shlex
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from mailqueue import aws
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import (
    BULK_DELIVERY_TIMEOUT,
    Http,
    all_in,
    an_email,
    outbox_file,
    parse_eml,
    status_item,
    status_of,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4\n% a tiny test document\n%%EOF\n"


def test_the_printed_curl_sends_an_email(local: LocalStack, http: Http) -> None:
    # Given the command `make dev` prints for a first email
    words = shlex.split(local.first_curl())
    url, body = words[2], json.loads(words[words.index("-d") + 1])
    assert url == f"{local.api_url}/emails"

    # When it is sent
    code, answer = http.post("/emails", body)

    # Then the email is accepted, sent, delivered, and in the outbox
    assert code == 202, answer
    wait_for_status(http, answer["id"], "delivered")
    assert parse_eml(local, answer["id"])["From"] == "app@example.com"


def test_one_email_is_delivered_and_its_eml_reads_back(
    local: LocalStack, http: Http, dynamodb: Any, table: str
) -> None:
    email = an_email(
        to=["Alice <alice@example.org>"],
        cc=["bob@example.org"],
        html="<p>Thanks for your <b>order</b>.</p>",
        attachments=[
            {"filename": "receipt.pdf", "content_type": "application/pdf", "content": base64.b64encode(PDF).decode()}
        ],
    )
    code, answer = http.post("/emails", email)
    assert code == 202, answer
    assert answer["status"] == "queued"
    email_id = answer["id"]

    # SES accepts it, then its Delivery event arrives
    delivered = wait_for_status(http, email_id, "delivered")
    assert delivered["attempts"] == 1
    assert [entry["status"] for entry in delivered["history"]] == ["queued", "sending", "sent", "delivered"]

    message = parse_eml(local, email_id)
    assert message["From"] == "Shop <app@example.com>"
    assert message["To"] == "Alice <alice@example.org>"
    assert message["Cc"] == "bob@example.org"
    assert message["Subject"] == email["subject"]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and text.get_content().strip() == "Thanks for your order."
    assert html is not None and "<b>order</b>" in html.get_content()
    attachments = list(message.iter_attachments())
    assert [part.get_filename() for part in attachments] == ["receipt.pdf"]
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_content() == PDF

    # The table, read as a user would with boto3
    item = status_item(dynamodb, table, email_id)
    assert item is not None
    assert item["status"] == {"S": "delivered"}
    assert item["ses_message_id"]["S"] == delivered["ses_message_id"]
    assert "deadline" not in item  # terminal emails leave the deadline index


def test_a_batch_of_100_is_all_delivered(local: LocalStack, http: Http, dynamodb: Any, table: str) -> None:
    emails = [an_email(to=[f"customer{i}@example.org"], subject=f"Batch {i}") for i in range(100)]
    code, answer = http.post("/emails/batch", {"emails": emails})
    assert code == 202, answer
    assert (answer["accepted"], answer["rejected"]) == (100, 0)
    ids = [result["id"] for result in answer["results"]]

    wait_for(
        lambda: all_in(dynamodb, table, ids, "delivered"),
        "all 100 emails to be delivered",
        timeout=BULK_DELIVERY_TIMEOUT,
    )
    for index, email_id in enumerate(ids):
        message = parse_eml(local, email_id)
        assert message["To"] == f"customer{index}@example.org"
        assert message["Subject"] == f"Batch {index}"


def test_an_email_for_later_is_sent_only_after_its_time(local: LocalStack, http: Http) -> None:
    # Within 15 minutes, send_at is an SQS delay: the message is invisible until then.
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    code, answer = http.post("/emails", an_email(send_at=send_at.isoformat()))
    assert code == 202, answer
    assert answer["status"] == "queued"

    delivered = wait_for_status(http, answer["id"], "delivered")
    claimed = next(entry for entry in delivered["history"] if entry["status"] == "sending")
    assert datetime.fromisoformat(claimed["at"].replace("Z", "+00:00")) >= send_at.replace(microsecond=0)
    message = parse_eml(local, answer["id"])
    assert message["Date"].datetime >= send_at.replace(microsecond=0)


def test_a_cancelled_scheduled_email_is_never_sent(local: LocalStack, http: Http, dynamodb: Any, table: str) -> None:
    send_at = datetime.now(UTC) + timedelta(hours=1)
    code, answer = http.post("/emails", an_email(send_at=send_at.isoformat()))
    assert code == 202, answer
    assert answer["status"] == "scheduled"

    code, cancelled = http.delete(f"/emails/{answer['id']}")
    assert code == 200, cancelled
    assert cancelled["status"] == "cancelled"

    # The requeue function runs over it a few times and leaves it alone.
    assert local.wait_for_runs("RequeueFunction", 2)
    assert status_of(http, answer["id"]) == "cancelled"
    assert not outbox_file(local, answer["id"]).exists()
    item = status_item(dynamodb, table, answer["id"])
    assert item is not None
    assert item["status"] == {"S": "cancelled"}
    assert "deadline" not in item


def test_a_cancelled_email_whose_message_is_delivered_is_not_sent(local: LocalStack, http: Http) -> None:
    # A short delay keeps the message in SQS while the email is cancelled; the sender then gets it.
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    code, answer = http.post("/emails", an_email(send_at=send_at.isoformat()))
    assert code == 202, answer
    code, cancelled = http.delete(f"/emails/{answer['id']}")
    assert code == 200, cancelled

    assert local.emulator is not None and local.stack is not None
    sqs = local.emulator.client("sqs")
    queue_url = local.stack.names["SendQueue"]

    def queue_drained() -> bool:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        waiting = (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
        return all(attributes[name] == "0" for name in waiting)

    wait_for(queue_drained, "the sender to take the cancelled email's message")
    assert status_of(http, answer["id"]) == "cancelled"
    assert not outbox_file(local, answer["id"]).exists()


def test_a_throttled_send_is_retried_and_sent(local: LocalStack, http: Http) -> None:
    subject = f"Throttled {uuid.uuid4().hex[:8]}"
    throttled = threading.Event()

    def throttle_once(params: dict[str, Any], **_: Any) -> None:
        raw = params.get("Content", {}).get("Raw", {}).get("Data", b"")
        if subject.encode() in (raw if isinstance(raw, bytes) else str(raw).encode()) and not throttled.is_set():
            throttled.set()
            raise ClientError(
                {"Error": {"Code": "TooManyRequestsException", "Message": "Maximum sending rate exceeded."}},
                "SendEmail",
            )

    events = aws.client("sesv2").meta.events
    events.register("before-parameter-build.sesv2.SendEmail", throttle_once, unique_id="e2e-throttle")
    try:
        code, answer = http.post("/emails", an_email(subject=subject))
        assert code == 202, answer
        delivered = wait_for_status(http, answer["id"], "delivered")
    finally:
        events.unregister("before-parameter-build.sesv2.SendEmail", unique_id="e2e-throttle")

    assert throttled.is_set()
    assert delivered["attempts"] == 1  # a throttle says nothing about the email: it spends no attempt
    statuses = [entry["status"] for entry in delivered["history"]]
    # Tried again under the same claim: no release, no write between the throttle and the send.
    assert statuses == ["queued", "sending", "sent", "delivered"]
    assert parse_eml(local, answer["id"])["Subject"] == subject


def test_an_invalid_email_is_refused_and_nothing_is_stored(http: Http, dynamodb: Any, table: str) -> None:
    marker = f"Invalid {uuid.uuid4().hex[:8]}"
    code, answer = http.post("/emails", an_email(subject=marker, to=["not-an-address"]))

    assert code == 422
    assert answer["error"]["code"]
    assert [detail["field"] for detail in answer["error"]["details"]] == ["to"]
    stored = dynamodb.scan(
        TableName=table,
        FilterExpression="subject = :marker",
        ExpressionAttributeValues={":marker": {"S": marker}},
        ConsistentRead=True,
    )
    assert stored["Items"] == []


def test_unknown_routes_and_oversize_bodies_are_refused_like_api_gateway(local: LocalStack, http: Http) -> None:
    code, answer = http.get("/nowhere")
    assert code == 404
    assert answer["error"]["code"] == "not_found"

    oversize = b"x" * (10 * 1024 * 1024 + 1)
    response = http.session.post(
        f"{local.api_url}/emails", data=oversize, headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_the_openapi_document_is_served(http: Http) -> None:
    code, document = http.get("/openapi.json")
    assert code == 200
    assert {"/emails", "/emails/batch", "/emails/{email_id}", "/emails/{email_id}/retry", "/attachments"} <= set(
        document["paths"]
    )
