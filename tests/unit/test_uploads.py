"""Attachments uploaded ahead of their email: bound to their size and to the caller that asked for them, never
read into memory past what an email may carry, kept as long as an email that names them waits."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import boto3
import pytest
from mailqueue import clock
from mailqueue.blobs import BlobStore, ObjectTooLarge
from mailqueue.limits import MAX_ATTACHMENT_BYTES
from mailqueue.models import EmailRequest
from mailqueue_dev.lambda_events import LambdaContext, http_api_event
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from tests.conftest import an_email
from tests.unit.test_api import assert_error_shape
from tests.unit.test_sender import Sender, receive, record

ALICE_JWT = {"jwt": {"claims": {"sub": "alice"}, "scopes": None}}
BOB_JWT = {"jwt": {"claims": {"sub": "bob"}, "scopes": None}}
ALICE_IAM = {"iam": {"userArn": "arn:aws:iam::123456789012:user/alice", "callerId": "AIDAALICE"}}
BOB_IAM = {"iam": {"userArn": "arn:aws:iam::123456789012:user/bob", "callerId": "AIDABOB"}}


def call(api: Any, context: LambdaContext, authorizer: dict[str, Any] | None, path: str, body: Any) -> tuple[int, Any]:
    """POST ``body`` to ``path`` as the caller that API Gateway's authorizer established."""
    event = http_api_event("POST", path, json.dumps(body), {"content-type": "application/json"})
    if authorizer is not None:
        event["requestContext"]["authorizer"] = authorizer
    answer = api.module.handler(event, context)
    return answer["statusCode"], json.loads(answer["body"]) if answer.get("body") else None


def upload(stack: Any, api: Any, context: LambdaContext, authorizer: dict[str, Any] | None, data: bytes) -> str:
    """Ask for a ticket as ``authorizer``'s caller and put the file where it says; its s3_key."""
    status, ticket = call(api, context, authorizer, "/attachments", {"filename": "terms.txt", "size": len(data)})
    assert status == 201, ticket
    boto3.client("s3").put_object(Bucket=stack.names["AttachmentsBucket"], Key=ticket["s3_key"], Body=data)
    key: str = ticket["s3_key"]
    return key


def with_upload(key: str, **overrides: Any) -> dict[str, Any]:
    return an_email(attachments=[{"filename": "terms.txt", "content_type": "text/plain", "s3_key": key}], **overrides)


# --- an upload is its caller's own --------------------------------------------------------------------------------


@pytest.mark.parametrize(("alice", "bob"), [(ALICE_JWT, BOB_JWT), (ALICE_IAM, BOB_IAM)], ids=["jwt", "iam"])
def test_a_caller_cannot_attach_another_caller_s_upload(api, stack, context, alice, bob):
    # Given a file Alice uploaded
    key = upload(stack, api, context, alice, b"terms apply")

    # When Bob names it in his email, alone or in a batch
    status, body = call(api, context, bob, "/emails", with_upload(key))
    batch_status, batch = call(api, context, bob, "/emails/batch", {"emails": [with_upload(key)]})

    # Then it is refused, naming the attachment; Alice herself can attach it
    assert status == 422, body
    error = assert_error_shape(body, "invalid_field")
    assert [detail["field"] for detail in error["details"]] == ["attachments[0].s3_key"]
    assert "not an upload of this caller" in error["message"]
    assert batch_status == 202
    assert batch["rejected"] == 1
    assert batch["results"][0]["error"]["details"][0]["field"] == "attachments[0].s3_key"
    status, body = call(api, context, alice, "/emails", with_upload(key))
    assert status == 202, body


def assumed(role: str, session: str) -> dict[str, Any]:
    arn = f"arn:aws:sts::123456789012:assumed-role/{role}/{session}"
    return {"iam": {"userArn": arn, "callerId": f"AROAEXAMPLE:{session}"}}


def test_the_sessions_of_one_role_are_one_caller_and_another_role_is_not(api, stack, context):
    # Given a file uploaded by one session of a role (one instance or container of an application)
    key = upload(stack, api, context, assumed("billing", "i-0aaa"), b"terms apply")

    # When another session of the same role, and a session of another role, name it
    same_role = call(api, context, assumed("billing", "i-0bbb"), "/emails", with_upload(key))
    other_role = call(api, context, assumed("marketing", "i-0aaa"), "/emails", with_upload(key))

    # Then the role is the caller: its sessions share its uploads, other roles do not
    assert same_role[0] == 202, same_role
    assert other_role[0] == 422, other_role
    assert other_role[1]["error"]["details"][0]["field"] == "attachments[0].s3_key"


def test_an_upload_key_made_up_under_uploads_is_refused(api, stack, context):
    # Given an object under uploads/ that no ticket of this caller named (another caller's, or made up)
    key = "uploads/sha256-0000000000000000000000000000000000000000000000000000000000000000/terms.txt"
    boto3.client("s3").put_object(Bucket=stack.names["AttachmentsBucket"], Key=key, Body=b"terms apply")

    status, body = call(api, context, ALICE_JWT, "/emails", with_upload(key))

    assert status == 422, body
    assert assert_error_shape(body)["details"][0]["field"] == "attachments[0].s3_key"


def test_the_same_file_gets_the_same_key_for_one_caller_and_another_for_the_next(api, context, stack):
    digest = "ab" * 32
    request = {"filename": "q.txt", "size": 3, "sha256": digest}

    keys = [call(api, context, who, "/attachments", request)[1]["s3_key"] for who in (ALICE_JWT, ALICE_JWT, BOB_JWT)]

    assert keys[0] == keys[1] != keys[2]
    assert all(key.startswith("uploads/") and key.endswith(f"/sha256-{digest}/3/q.txt") for key in keys)


def test_a_key_takes_one_size_only_whatever_size_a_later_ticket_declares(api, context, stack):
    # Given a ticket for a 3-byte file, whose key an email may already name
    first = call(api, context, ALICE_JWT, "/attachments", {"filename": "q.txt", "size": 3, "sha256": "ab" * 32})[1]

    # When the same caller asks again for the same file, declaring ten megabytes
    again = call(
        api, context, ALICE_JWT, "/attachments", {"filename": "q.txt", "size": 10_000_000, "sha256": "ab" * 32}
    )[1]

    # Then the second form cannot write the first key: every form for a key binds the same size
    assert again["s3_key"] != first["s3_key"]
    conditions = json.loads(base64.b64decode(again["fields"]["policy"]))["conditions"]
    assert {"key": first["s3_key"]} not in conditions


# --- the upload form binds the declared size -------------------------------------------------------------------


def test_the_upload_is_a_presigned_post_bound_to_its_key_type_and_declared_size(api, stack, context):
    status, ticket = call(
        api, context, ALICE_JWT, "/attachments", {"filename": "big.pdf", "content_type": "application/pdf", "size": 5}
    )

    assert status == 201, ticket
    assert ticket["method"] == "POST"
    fields = ticket["fields"]
    assert fields["key"] == ticket["s3_key"]
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    conditions = json.loads(base64.b64decode(fields["policy"]))["conditions"]
    assert ["content-length-range", 5, 5] in conditions
    assert {"key": ticket["s3_key"]} in conditions
    assert {"Content-Type": "application/pdf"} in conditions
    assert {"bucket": stack.names["AttachmentsBucket"]} in conditions


# --- the sender never reads more than an email may carry ------------------------------------------------------------


class CountingBody:
    """A GetObject body that counts what is read from it."""

    def __init__(self, body: Any, reads: list[int | None], read_bytes: list[int]) -> None:
        self._body = body
        self._reads = reads
        self._read_bytes = read_bytes

    def read(self, amount: int | None = None) -> bytes:
        self._reads.append(amount)
        data: bytes = self._body.read(amount)
        self._read_bytes.append(len(data))
        return data

    def close(self) -> None:
        self._body.close()


def test_an_upload_replaced_by_an_oversized_file_fails_its_email_unread(api, stack, context, monkeypatch):
    # Given an email accepted with a small upload, whose file is then replaced by one over the limit
    key = upload(stack, api, context, None, b"terms apply")
    status, body = call(api, context, None, "/emails", with_upload(key))
    assert status == 202, body
    boto3.client("s3").put_object(
        Bucket=stack.names["AttachmentsBucket"], Key=key, Body=b"x" * (MAX_ATTACHMENT_BYTES + 1)
    )
    sender = Sender(stack, context)
    reads: list[int | None] = []
    read_bytes: list[int] = []
    client = sender.module.sender.blobs._client
    get_object = client.get_object

    def counted(**kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = get_object(**kwargs)
        answer["Body"] = CountingBody(answer["Body"], reads, read_bytes)
        return answer

    monkeypatch.setattr(client, "get_object", counted)

    # When the sender takes it
    try:
        assert sender.invoke(receive(stack)) == {"batchItemFailures": []}
    finally:
        sender.close()

    # Then the email fails for good, saying why, with nothing sent and the file never read whole
    assert sender.calls == 0
    email = record(stack, body["id"])
    assert email["status"] == "failed", email
    assert email["last_error"]["code"] == "AttachmentTooLarge"
    assert key in email["last_error"]["message"]
    assert None not in reads
    assert sum(read_bytes) <= MAX_ATTACHMENT_BYTES + 1


class FakeS3:
    """GetObject answering a ContentLength smaller than what its body holds."""

    class Body:
        def __init__(self, data: bytes) -> None:
            self.data = data
            self.read_amounts: list[int | None] = []

        def read(self, amount: int | None = None) -> bytes:
            self.read_amounts.append(amount)
            return self.data if amount is None else self.data[:amount]

        def close(self) -> None:
            pass

    def __init__(self, data: bytes, length: int) -> None:
        self.body = FakeS3.Body(data)
        self.length = length

    def get_object(self, **_: Any) -> dict[str, Any]:
        return {"Body": self.body, "ContentLength": self.length}


@pytest.mark.parametrize("told", [100, 10], ids=["told-its-size", "told-less"])
def test_reading_an_object_stops_one_byte_past_the_limit(told):
    s3 = FakeS3(b"y" * 100, told)
    blobs = BlobStore.__new__(BlobStore)
    blobs.bucket, blobs._client = "bucket", s3

    with pytest.raises(ObjectTooLarge) as raised:
        blobs.get_bytes("uploads/k/f", limit=10)

    assert raised.value.size > 10
    # Told its size, nothing is read; told less, at most one byte more than the limit
    assert s3.body.read_amounts == ([] if told == 100 else [11])


def test_the_uploads_of_one_email_are_read_within_one_limit(api, stack, context):
    # Given an email with two uploads, each within the limit, whose files are then replaced by files
    # that are each within it too but together over it
    half = MAX_ATTACHMENT_BYTES // 2 + 1
    first = upload(stack, api, context, None, b"a" * 10)
    status, ticket = call(api, context, None, "/attachments", {"filename": "more.txt", "size": 10})
    second = ticket["s3_key"]
    boto3.client("s3").put_object(Bucket=stack.names["AttachmentsBucket"], Key=second, Body=b"b" * 10)
    attachments = [
        {"filename": "terms.txt", "content_type": "text/plain", "s3_key": first},
        {"filename": "more.txt", "content_type": "text/plain", "s3_key": second},
    ]
    status, body = call(api, context, None, "/emails", an_email(attachments=attachments))
    assert status == 202, body
    for key in (first, second):
        boto3.client("s3").put_object(Bucket=stack.names["AttachmentsBucket"], Key=key, Body=b"z" * half)

    # When the sender takes it
    sender = Sender(stack, context)
    try:
        sender.invoke(receive(stack))
    finally:
        sender.close()

    # Then it fails for the second file, unsent
    assert sender.calls == 0
    email = record(stack, body["id"])
    assert (email["status"], email["last_error"]["code"]) == ("failed", "AttachmentTooLarge")
    assert second in email["last_error"]["message"]


# --- an upload lives as long as an email that names it waits ------------------------------------------------------


def test_an_upload_named_by_an_email_held_past_its_lifecycle_is_kept(api, stack, context):
    # Given an email accepted nine days and a half ago with an upload made then: the lifecycle deletes
    # the upload ten days after it was written, so in half a day
    bucket = stack.names["AttachmentsBucket"]
    key = upload(stack, api, context, None, b"terms apply")
    enqueued = clock.now() - timedelta(days=9, hours=12)
    moto_key = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[bucket].keys[key]
    moto_key.last_modified = enqueued.replace(tzinfo=None)
    email_id = api.module.mailqueue.enqueue(EmailRequest.model_validate(with_upload(key)), now=enqueued).id

    # When SES now says sending is paused for the account, so the email waits again
    sender = Sender(stack, context)
    sender.answer_ses("AccountSendingPausedException", "Sending is paused for this account.")
    try:
        assert sender.invoke(receive(stack)) == {"batchItemFailures": []}
    finally:
        sender.close()

    # Then the upload is written again: the lifecycle counts its ten days from now, past the email's wait
    email = record(stack, email_id)
    assert email["status"] == "retrying"
    written = boto3.client("s3").head_object(Bucket=bucket, Key=key)["LastModified"]
    assert written > enqueued + timedelta(days=9)
    assert written + timedelta(days=10) > clock.parse_iso(email["deadline"]) + timedelta(days=1)
    assert clock.parse_iso(email["content_until"]) > clock.parse_iso(email["deadline"])


def test_an_upload_is_found_by_a_listing_of_its_own_key_only(stack):
    # The API role may list only under uploads/, and reads an upload's size and age from a listing:
    # HeadObject of a missing key would answer 403 without ListBucket on the whole bucket.
    from mailqueue import aws
    from mailqueue.settings import get_settings

    blobs = BlobStore(get_settings(), aws.client("s3"))
    s3 = boto3.client("s3")
    bucket = stack.names["AttachmentsBucket"]
    s3.put_object(Bucket=bucket, Key="uploads/o/h/3/a.pdf.bak", Body=b"abcdef")
    calls: list[str] = []
    aws.client("s3").meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))

    assert blobs.size_of("uploads/o/h/3/a.pdf") is None  # a longer key with it as prefix is another object
    s3.put_object(Bucket=bucket, Key="uploads/o/h/3/a.pdf", Body=b"abc")
    assert blobs.size_of("uploads/o/h/3/a.pdf") == 3
    assert blobs.written_at("uploads/o/h/3/a.pdf") is not None
    assert set(calls) == {"ListObjectsV2"}
