"""Content records: a body compressed when that saves DynamoDB write units, read back the same either way."""

from __future__ import annotations

import base64
import json
import os
import zlib

import boto3
from boto3.dynamodb.types import TypeSerializer
from mailqueue import aws
from mailqueue.models import EmailRequest
from mailqueue.packing import PACKED_BODY, pack, unpack
from mailqueue.render import load_content
from mailqueue.service import content_body
from mailqueue.settings import get_settings
from mailqueue.store import EmailStore

from bench import units
from bench.emails import typical_email
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


def test_a_typical_transactional_email_takes_one_write_unit():
    # Given the bench's shipping notice (0.9 KB of text, 2.5 KB of HTML), as the API stores it
    body = content_body(EmailRequest.model_validate(typical_email(7)))
    item = {"pk": "01KBENCHEMAIL0000000000000", "sk": "content", "expires_at": 1800000000, **pack(body)}

    # Then its content record is under a kilobyte: one write unit, not two
    serialize = TypeSerializer().serialize
    size = units.item_size({name: serialize(value) for name, value in item.items()})
    assert size <= 1024, size
    assert units.write_units(size) == 1
    assert unpack(item)["html"] == body["html"]


def test_a_record_compressed_before_the_shared_dictionary_is_still_read():
    body = {"subject": "Shipped", "html": HTML}
    written_before = {"pk": "id", "sk": "content", PACKED_BODY: zlib.compress(json.dumps(body).encode(), 6)}

    assert unpack(written_before) == {"pk": "id", "sk": "content", **body}


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

    item = EmailStore(get_settings(), aws.client("dynamodb")).get_content(answer["id"])
    assert item is not None
    content = load_content(item, blobs=None)  # type: ignore[arg-type]
    assert content["html"] == HTML
    assert content["text"] == an_email()["text"]
    assert content["to"] == [{"name": "", "address": "alice@example.org"}]
    assert content["tags"] == [{"name": "kind", "value": "shipping"}]
