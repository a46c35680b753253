"""The API against moto in server mode: real HTTP, real serialization of every DynamoDB and SQS call."""

from __future__ import annotations

import json

import pytest

from tests.conftest import an_email

pytestmark = pytest.mark.integration


def received(emulator, queue_url: str) -> list[str]:
    messages = emulator.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"])["id"] for message in messages]


def test_an_email_is_stored_published_and_readable(server_api, server_stack, emulator):
    status, body = server_api.post("/emails", an_email(cc=["Zoë <zoe@example.org>"], metadata={"n": 1.5}))

    assert status == 202, body
    assert received(emulator, server_stack.names["SendQueue"]) == [body["id"]]
    item = emulator.client("dynamodb").get_item(
        TableName=server_stack.names["EmailsTable"], Key={"pk": {"S": body["id"]}, "sk": {"S": "content"}}
    )["Item"]
    assert item["cc"]["L"][0]["M"]["name"]["S"] == "Zoë"
    status, email = server_api.get(f"/emails/{body['id']}")
    assert status == 200
    assert email["metadata"] == {"n": 1.5}


def test_a_batch_is_written_and_published_with_batch_calls(server_api, server_stack, emulator):
    status, body = server_api.post("/emails/batch", {"emails": [an_email(to=[f"u{i}@example.org"]) for i in range(30)]})

    assert status == 202
    assert body["accepted"] == 30
    sqs = emulator.client("sqs")
    attributes = sqs.get_queue_attributes(
        QueueUrl=server_stack.names["SendQueue"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "30"


def test_idempotency_keys_are_kept_in_their_table(server_api, server_stack, emulator):
    first = server_api.post("/emails", an_email(), headers={"Idempotency-Key": "k-1"})
    replay = server_api.post("/emails", an_email(), headers={"Idempotency-Key": "k-1"})
    conflict = server_api.post("/emails", an_email(text="other"), headers={"Idempotency-Key": "k-1"})

    assert first == replay
    assert conflict[0] == 409
    records = emulator.client("dynamodb").scan(TableName=server_stack.names["IdempotencyTable"])["Items"]
    assert len(records) == 1
    assert records[0]["status"]["S"] == "COMPLETED"


def test_listing_and_cancel_through_the_indexes(server_api, server_stack):
    ids = [server_api.post("/emails", an_email())[1]["id"] for _ in range(3)]
    server_api.delete(f"/emails/{ids[1]}")

    _, queued = server_api.get("/emails", query="status=queued")
    _, cancelled = server_api.get("/emails", query="status=cancelled")

    assert [email["id"] for email in queued["emails"]] == [ids[2], ids[0]]
    assert [email["id"] for email in cancelled["emails"]] == [ids[1]]
