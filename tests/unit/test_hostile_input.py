"""Hostile input through the API: each gets a clear 4xx in the error shape, and nothing is stored."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from tests.conftest import an_email

INJECTION = "x\r\nBcc: victim@example.net"


def nothing_stored(stack) -> bool:
    items = boto3.client("dynamodb").scan(TableName=stack.names["EmailsTable"])["Items"]
    messages = boto3.client("sqs").receive_message(QueueUrl=stack.names["SendQueue"]).get("Messages", [])
    return items == [] and messages == []


def refused(api, stack, body: Any = None, raw: str | None = None, headers: dict[str, str] | None = None) -> dict:
    status, answer = api.post("/emails", body, raw=raw, headers=headers)
    assert 400 <= status < 500, (status, answer)
    assert set(answer["error"]) == {"code", "message", "details"}
    assert nothing_stored(stack)
    return answer["error"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"from": f"Shop{INJECTION} <app@example.com>"},
        {"from": f"app@example.com{INJECTION}"},
        {"to": [f"alice@example.org{INJECTION}"]},
        {"cc": [f"Bob{INJECTION} <bob@example.org>"]},
        {"bcc": [f"carol@example.org{INJECTION}"]},
        {"reply_to": [f"help@example.com{INJECTION}"]},
        {"subject": f"Hello{INJECTION}"},
        {"subject": "Hello\nBcc: victim@example.net"},
        {"subject": "Hello\rBcc: victim@example.net"},
        {"headers": {"X-Campaign": f"spring{INJECTION}"}},
        {"headers": {"X-Campaign\r\nBcc": "victim@example.net"}},
        {"headers": {"X-Campaign": "spring\x00"}},
        {"attachments": [{"filename": f"a{INJECTION}.pdf", "content": "eA=="}]},
        {"attachments": [{"filename": "a.pdf", "content_type": f"text/plain{INJECTION}", "content": "eA=="}]},
        {"tags": [{"name": "campaign", "value": f"spring{INJECTION}"}]},
    ],
    ids=lambda overrides: next(iter(overrides)),
)
def test_header_injection_through_every_field_that_reaches_a_header(api, stack, overrides):
    refused(api, stack, an_email(**overrides))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"to": [f"u{index}@example.org" for index in range(51)]}, "body"),
        ({"to": ["alice@example.org"], "cc": ["Alice@Example.org"]}, "body"),
        ({"attachments": [{"filename": "../../etc/passwd", "content": "eA=="}]}, "attachments[0].filename"),
        ({"attachments": [{"filename": "C:\\boot.ini", "content": "eA=="}]}, "attachments[0].filename"),
        ({"attachments": [{"filename": "bell\x07.pdf", "content": "eA=="}]}, "attachments[0].filename"),
        ({"attachments": [{"filename": "a.pdf", "s3_key": "content/01JABC.json"}]}, "attachments[0].s3_key"),
        ({"attachments": [{"filename": "a.pdf", "s3_key": "uploads/../content/x"}]}, "attachments[0].s3_key"),
        ({"text": "a" * (2 * 1024 * 1024)}, "text"),
        ({"to": ["ünïcödé@example.org"]}, "to"),
    ],
)
def test_hostile_emails_name_the_field(api, stack, overrides, field):
    error = refused(api, stack, an_email(**overrides))
    assert field in [detail["field"] for detail in error["details"]], error


def test_a_from_outside_the_allowed_identities(api, stack):
    error = refused(api, stack, an_email(**{"from": "Shop <app@example.com.evil.example>"}))
    assert error["details"][0]["field"] == "from"


def test_an_attachment_of_ten_megabytes_and_one_byte(api, stack):
    content = base64.b64encode(b"\0" * (10 * 1024 * 1024 + 1)).decode()
    # Over API Gateway's 10 MB payload once base64-encoded: refused as too large before parsing.
    error = refused(api, stack, an_email(attachments=[{"filename": "big.bin", "content": content}]))
    assert error["code"] in {"payload_too_large", "invalid_field"}


def test_deeply_nested_json(api, stack):
    refused(api, stack, raw='{"metadata": ' + "[" * 50_000 + "]" * 50_000 + "}")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x", ""])
def test_wrong_content_types(api, stack, content_type):
    error = refused(api, stack, raw=json.dumps(an_email()), headers={"content-type": content_type})
    assert error["code"] == "unsupported_media_type"


def test_display_names_with_quotes_are_kept_as_text(api, stack):
    status, body = api.post("/emails", an_email(**{"from": '"Shop \\"Deals\\"; Inc." <app@example.com>'}))

    assert status == 202
    content = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": body["id"]}, "sk": {"S": "content"}}
    )["Item"]
    assert content["from"]["M"]["name"]["S"] == 'Shop "Deals"; Inc.'


# RFC 2047 encoded words decode, in the email package and in mail readers, into whatever they hold:
# line breaks, headers, whole MIME parts. Every field that reaches a header or a MIME parameter
# refuses their syntax, naming the field.
ATTACK_FILENAME = "=?utf-8?q?invoice.pdf=0D=0AContent-Type:_text=2Fhtml=0D=0A=0D=0A<h1>Pay_here<=2Fh1>?="
ATTACK = "=?utf-8?q?x=0D=0ABcc:_victim@example.net?="


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"attachments": [{"filename": ATTACK_FILENAME, "content": "eA=="}]}, "attachments[0].filename"),
        ({"subject": ATTACK}, "subject"),
        ({"subject": f"Sale {ATTACK} today"}, "subject"),
        ({"headers": {"X-Campaign": ATTACK}}, "headers"),
        ({"from": f"{ATTACK} <app@example.com>"}, "from"),
        ({"to": [f'"{ATTACK}" <alice@example.org>']}, "to"),
        ({"cc": [f"{ATTACK} <bob@example.org>"]}, "cc"),
        ({"bcc": [f"{ATTACK} <carol@example.org>"]}, "bcc"),
        ({"reply_to": [f"{ATTACK} <help@example.com>"]}, "reply_to"),
        ({"to": ["=?utf-8?q?a=0D=0ABcc:_v@example.net?=@example.org"]}, "to"),
        ({"subject": "=?utf-8?b?DQpCY2M6IHZpY3RpbUBleGFtcGxlLm5ldA==?="}, "subject"),
        ({"subject": "unterminated =?utf-8?q?a=0D=0ABcc:_v@example.net"}, "subject"),
    ],
    ids=lambda value: value if isinstance(value, str) else next(iter(value)),
)
def test_encoded_words_are_refused_in_every_field_that_reaches_a_header(api, stack, overrides, field):
    error = refused(api, stack, an_email(**overrides))

    assert error["code"] == "invalid_field"
    detail = next(detail for detail in error["details"] if detail["field"].startswith(field))
    assert "=?" in detail["message"]


# What the API accepts must be sendable: each of these was accepted and then failed as unrenderable
# (or refused by SES), so each is refused at the door, naming the field.
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject": "Hello\u2028Bcc: victim@example.net"}, "subject"),
        ({"subject": "Hello\u2029world"}, "subject"),
        ({"subject": "Hello\x85world"}, "subject"),
        ({"headers": {"X-Campaign": "spring\u2028summer"}}, "headers"),
        ({"headers": {"X-Campaign": "spring\x85summer"}}, "headers"),
        ({"from": "Shop\u2029 <app@example.com>"}, "from"),
        ({"attachments": [{"filename": "a.eml", "content_type": "message/rfc822", "content": "eA=="}]}, "attachments"),
        ({"attachments": [{"filename": "a", "content_type": "multipart/mixed", "content": "eA=="}]}, "attachments"),
        (
            {"attachments": [{"filename": "a", "content_type": "Multipart/Alternative", "content": "eA=="}]},
            "attachments",
        ),
        ({"text": "null\x00byte"}, "text"),
        ({"html": "<p>null\x00byte</p>"}, "html"),
        ({"attachments": [{"filename": "setup.exe", "content": "eA=="}]}, "attachments[0].filename"),
        ({"attachments": [{"filename": "Report.PDF.JS", "content": "eA=="}]}, "attachments[0].filename"),
        ({"attachments": [{"filename": "run.bat ", "content": "eA=="}]}, "attachments[0].filename"),
        ({"attachments": [{"filename": "x.vbs", "s3_key": "uploads/01JABC/x.vbs"}]}, "attachments[0].filename"),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, dict) else value,
)
def test_what_cannot_be_sent_is_refused_at_the_door(api, stack, overrides, field):
    error = refused(api, stack, an_email(**overrides))

    assert error["code"] == "invalid_field"
    assert any(detail["field"].startswith(field) for detail in error["details"]), error


def test_an_upload_named_as_ses_refuses_is_refused_too(api, stack):
    status, answer = api.post("/attachments", {"filename": "setup.exe", "size": 10})

    assert status == 422
    assert answer["error"]["details"][0]["field"] == "filename"


def test_internationalised_domains_are_stored_in_ascii(api, stack):
    status, body = api.post("/emails", an_email(to=["Jürgen <jurgen@münchen.example>"]))

    assert status == 202
    assert api.get(f"/emails/{body['id']}")[1]["to"] == "jurgen@xn--mnchen-3ya.example"
