"""Content records: a body compressed when that saves DynamoDB write units, read back the same either way."""

from __future__ import annotations

import base64
import os

import boto3
from mailqueue import aws
from mailqueue.packing import PACKED_BODY, pack, unpack
from mailqueue.render import load_content
from mailqueue.settings import get_settings
from mailqueue.store import CONTENT, EmailStore

from tests.conftest import an_email

HTML = "<p style='font-size:15px;line-height:22px'>Your order has shipped and is on its way.</p>\n" * 40


def test_a_small_body_stays_plain_attributes():
    body = {"subject": "Hi", "text": "Short."}

    assert pack(body) == body


def test_a_body_that_compresses_by_a_kilobyte_or_more_is_stored_compressed():
    body = {"subject": "Shipped", "html": HTML}

    packed = pack(body)

    assert set(packed) == {PACKED_BODY}
    assert len(packed[PACKED_BODY]) < len(HTML) // 4
    assert unpack({"pk": "id", "sk": "content", **packed}) == {"pk": "id", "sk": "content", **body}


def test_a_body_that_hardly_compresses_stays_plain():
    # An inline attachment of random bytes: base64 compresses by a quarter, less than a write unit here.
    body = {"attachments": [{"filename": "noise.bin", "content": base64.b64encode(os.urandom(1800)).decode()}]}

    assert pack(body) == body


def test_an_enqueued_html_email_is_stored_compressed_and_read_back_whole(api, stack):
    status, answer = api.post("/emails", an_email(html=HTML, tags=[{"name": "kind", "value": "shipping"}]))
    assert status == 202, answer

    raw = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": answer["id"]}, "sk": {"S": "content"}}
    )["Item"]
    assert set(raw) == {"pk", "sk", "expires_at", PACKED_BODY}

    item = EmailStore(get_settings(), aws.client("dynamodb")).get(answer["id"], CONTENT)
    assert item is not None
    content = load_content(item, blobs=None)  # type: ignore[arg-type]
    assert content["html"] == HTML
    assert content["text"] == an_email()["text"]
    assert content["to"] == [{"name": "", "address": "alice@example.org"}]
    assert content["tags"] == [{"name": "kind", "value": "shipping"}]
