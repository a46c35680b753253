"""The sender against moto in server mode: every DynamoDB, S3 and SES call over real HTTP and serialization."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy
from typing import Any

import pytest
from mailqueue_dev.lambda_events import sqs_event
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from tests.conftest import an_email, load_handler

pytestmark = pytest.mark.integration


def received(emulator, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = (
        emulator.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    )
    return messages


def status_record(emulator, stack, email_id: str) -> dict[str, Any]:
    item: dict[str, Any] = emulator.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": email_id}, "sk": {"S": "status"}}, ConsistentRead=True
    )["Item"]
    return item


def test_an_email_goes_out_once_over_http(server_api, server_stack, emulator, context):
    # The server runs in this process: its SES backend is the one the sent messages land in.
    outbox = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    outbox.clear()
    attachment = base64.b64encode("Zoë's receipt".encode()).decode()
    status, body = server_api.post(
        "/emails",
        an_email(
            to=["Åsa <asa@example.org>"],
            bcc=["audit@example.org"],
            subject="Reçu",
            html="<p>Merci</p>",
            attachments=[{"filename": "reçu.txt", "content_type": "text/plain", "content": attachment}],
        ),
    )
    assert status == 202, body
    sender = load_handler("sender")
    sender.sender.pacer.sleep = lambda _: None
    event = sqs_event(received(emulator, server_stack.names["SendQueue"]), server_stack.arns["SendQueue"])

    assert sender.handler(event, context.invocation()) == {"batchItemFailures": []}
    assert sender.handler(event, context.invocation()) == {"batchItemFailures": []}

    assert len(outbox) == 1
    assert "audit@example.org" in outbox[0].destinations
    message = message_from_bytes(outbox[0].raw_data.encode(), policy=policy.default)
    assert message["Subject"] == "Reçu"
    assert message["To"] == "Åsa <asa@example.org>"
    assert message["Bcc"] is None
    assert [part.get_filename() for part in message.iter_attachments()] == ["reçu.txt"]
    record = status_record(emulator, server_stack, body["id"])
    assert record["status"]["S"] == "sent"
    assert record["ses_message_id"]["S"] == outbox[0].id
    assert record["attempts"]["N"] == "1"
    assert [entry["M"]["status"]["S"] for entry in record["history"]["L"]] == ["queued", "sending", "sent"]


def test_a_rejected_sender_fails_over_http(server_api, server_stack, emulator, context):
    """moto refuses a From it has not verified, as SES does: the email fails with SES's code."""
    status, body = server_api.post("/emails", an_email())
    assert status == 202, body
    emulator.client("sesv2").delete_email_identity(EmailIdentity="example.com")
    emulator.client("ses").delete_identity(Identity="example.com")
    sender = load_handler("sender")
    event = sqs_event(received(emulator, server_stack.names["SendQueue"]), server_stack.arns["SendQueue"])

    assert sender.handler(event, context.invocation()) == {"batchItemFailures": []}

    record = status_record(emulator, server_stack, body["id"])
    assert record["status"]["S"] == "failed"
    assert record["last_error"]["M"]["code"]["S"] == "MessageRejected"
    assert record["history"]["L"][-1]["M"]["reason"]["S"] == "failed: MessageRejected"
