"""An email's content (its record, large content and uploads in S3) outlives every attempt to send it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from mailqueue import clock
from mailqueue.models import EmailRequest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from tests.conftest import an_email
from tests.unit.test_sender import Sender, receive

RETENTION = timedelta(days=30)


def content_record(stack: Any, email_id: str) -> dict[str, Any]:
    key = {"pk": {"S": email_id}, "sk": {"S": "content"}}
    item: dict[str, Any] = boto3.client("dynamodb").get_item(TableName=stack.names["EmailsTable"], Key=key)["Item"]
    return item


def expires(item: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(item["expires_at"]["N"]), UTC)


def lifecycle_days(stack: Any, prefix: str) -> int:
    rules = stack.template["Resources"]["AttachmentsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    return next(int(rule["ExpirationInDays"]) for rule in rules if rule.get("Prefix") == prefix)


def test_a_send_at_in_the_past_keeps_the_content_from_now(api, stack):
    before = clock.now()

    status, body = api.post("/emails", an_email(send_at=(before - timedelta(days=40)).isoformat()))

    assert status == 202
    assert expires(content_record(stack, body["id"])) >= before + RETENTION - timedelta(seconds=1)


def test_an_upload_named_days_after_it_was_made_outlives_the_email(api, stack):
    # Given an upload made five days ago
    bucket = stack.names["AttachmentsBucket"]
    key = api.post("/attachments", {"filename": "invoice.pdf", "content_type": "application/pdf", "size": 5})[1][
        "s3_key"
    ]
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"%PDF-")
    moto_key = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[bucket].keys[key]
    moto_key.last_modified = (clock.now() - timedelta(days=5)).replace(tzinfo=None)

    # When an email names it, to be sent in seven days (day 12)
    send_at = clock.now() + timedelta(days=7)
    attachment = {"filename": "invoice.pdf", "content_type": "application/pdf", "s3_key": key}
    status, body = api.post("/emails", an_email(send_at=send_at.isoformat(), attachments=[attachment]))

    # Then the lifecycle cannot delete the upload before the email's due time and a day of retries
    assert status == 202, body
    written = boto3.client("s3").head_object(Bucket=bucket, Key=key)["LastModified"]
    assert written + timedelta(days=lifecycle_days(stack, "uploads/")) >= send_at + timedelta(days=1)
    _, email = api.get(f"/emails/{body['id']}")
    status_record = api.module.mailqueue.store.get(body["id"])
    assert status_record.content_until >= send_at + timedelta(days=1)
    assert email["status"] == "scheduled"


def test_an_email_held_past_its_content_s_retention_keeps_its_content(api, stack, context):
    # Given an email whose content expires in thirty days
    request = EmailRequest.model_validate(an_email())
    enqueued = clock.now()
    email_id = api.module.mailqueue.enqueue(request, now=enqueued).id
    first_expiry = expires(content_record(stack, email_id))

    # When, 29 days and 12 hours later, SES says sending is paused for the account, so it is held again
    sender = Sender(stack, context)
    later = enqueued + timedelta(days=29, hours=12)
    sender.module.sender.now = lambda: later
    sender.answer_ses("AccountSendingPausedException", "Sending is paused for this account.")
    try:
        assert sender.invoke(receive(stack)) == {"batchItemFailures": []}
    finally:
        sender.close()

    # Then its content is kept the retention period past the end of the hold, and the record says so
    status_record = api.module.mailqueue.store.get(email_id)
    assert status_record.status == "retrying"
    held_until = status_record.deadline
    assert expires(content_record(stack, email_id)) >= held_until + RETENTION - timedelta(seconds=1)
    assert expires(content_record(stack, email_id)) > first_expiry
    assert status_record.content_until > held_until + timedelta(days=1)
