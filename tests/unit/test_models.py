"""The email model refuses what SES would refuse, or what could forge or break a message."""

from __future__ import annotations

import base64

import pytest
from mailqueue.limits import MAX_ATTACHMENT_BYTES
from mailqueue.models import EmailRequest, Mailbox
from mailqueue.problems import field_path
from pydantic import ValidationError

from tests.conftest import an_email


def errors_of(**overrides) -> dict[str, str]:
    with pytest.raises(ValidationError) as failure:
        EmailRequest.model_validate(an_email(**overrides))
    return {field_path(error["loc"]): error["msg"] for error in failure.value.errors()}


def test_a_plain_email_is_valid():
    email = EmailRequest.model_validate(an_email(cc=["Bob <bob@example.org>"], html="<p>hi</p>"))
    assert email.sender == Mailbox(name="Shop", address="app@example.com")
    assert [box.address for box in email.recipients()] == ["alice@example.org", "bob@example.org"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject": "Hello\r\nBcc: victim@example.net"}, "subject"),
        ({"subject": "x" * 999}, "subject"),
        ({"to": ["alice@example.org\r\nBcc: victim@example.net"]}, "to"),
        ({"from": "Shop\n <app@example.com>"}, "from"),
        ({"headers": {"X-Campaign": "a\r\nBcc: victim@example.net"}}, "headers"),
        ({"headers": {"Bcc": "victim@example.net"}}, "headers"),
        ({"headers": {"Message-ID": "<forged@example.com>"}}, "headers"),
        ({"headers": {"Bad Name": "x"}}, "headers"),
        ({"to": ["not-an-address"]}, "to"),
        ({"to": [f"user{index}@example.org" for index in range(51)]}, ""),
        ({"to": ["alice@example.org", "ALICE@example.org"]}, ""),
        ({"to": [], "cc": [], "bcc": []}, ""),
        ({"text": None}, ""),
        ({"surprise": True}, "surprise"),
        ({"priority": "urgent"}, "priority"),
        ({"send_at": "2026-12-01T10:00:00"}, "send_at"),
        ({"tags": [{"name": "email_id", "value": "x"}]}, "tags"),
        ({"tags": [{"name": "campaign", "value": "spring sale!"}]}, "tags[0].value"),
        ({"metadata": {"note": "x" * 300}}, "metadata"),
        ({"metadata": {"ratio": float("nan")}}, "metadata"),
        ({"metadata": {"tiny": 1e-200}}, "metadata"),
        ({"metadata": {"huge": 10**40}}, "metadata"),
        ({"text": "x" * 2_000_000}, "text"),
        ({"to": ["josé@example.org"]}, "to"),
    ],
)
def test_bad_input_names_the_field(overrides, field):
    errors = errors_of(**overrides)
    assert field in errors, errors


def attachment(**overrides):
    return {"filename": "receipt.pdf", "content_type": "application/pdf", "content": "JVBERi0=", **overrides}


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (attachment(filename="../../etc/passwd"), "attachments[0].filename"),
        (attachment(filename="a\x00b.pdf"), "attachments[0].filename"),
        (attachment(filename="dir\\file.pdf"), "attachments[0].filename"),
        (attachment(content="not base64!!"), "attachments[0]"),
        (attachment(content_type="pdf"), "attachments[0].content_type"),
        (attachment(content=None), "attachments[0]"),
        (attachment(s3_key="uploads/01J/receipt.pdf"), "attachments[0]"),
        ({"filename": "x.pdf", "s3_key": "content/01J.json"}, "attachments[0].s3_key"),
        ({"filename": "x.pdf", "s3_key": "uploads/../content/01J.json"}, "attachments[0].s3_key"),
    ],
)
def test_bad_attachments_name_the_field(item, field):
    errors = errors_of(attachments=[item])
    assert field in errors, errors


def test_attachments_over_ten_megabytes_are_refused_by_one_byte():
    at_limit = base64.b64encode(b"x" * MAX_ATTACHMENT_BYTES).decode()
    over = base64.b64encode(b"x" * (MAX_ATTACHMENT_BYTES + 1)).decode()

    EmailRequest.model_validate(an_email(attachments=[attachment(content=at_limit)]))
    errors = errors_of(attachments=[attachment(content=over)])

    assert any("limit" in message for message in errors.values()), errors


def test_display_names_with_quotes_and_idn_domains_are_normalised():
    box = Mailbox.parse('"Smith, \\"Ann\\"" <ann@bücher.example>')
    assert box.name == 'Smith, "Ann"'
    assert box.address == "ann@xn--bcher-kva.example"


def test_the_largest_email_the_api_takes_renders_within_what_ses_sends() -> None:
    from mailqueue.limits import (
        MAX_ATTACHMENT_BYTES,
        MAX_BODY_CHARS,
        MAX_RECIPIENTS,
        MAX_SUBJECT,
        SES_MAX_MESSAGE_BYTES,
    )

    def base64_lines(size: float) -> float:  # base64 in 76-character lines, each ending in CRLF
        return size * 4 / 3 * 78 / 76

    attachments = base64_lines(MAX_ATTACHMENT_BYTES) + 20 * 1024  # and each part's headers
    bodies = 2 * base64_lines(MAX_BODY_CHARS * 4)  # text and html, 4 UTF-8 bytes a character at worst
    headers = MAX_RECIPIENTS * 600 + MAX_SUBJECT * 4 * 2 + 64 * 1024  # addresses, an encoded subject, the rest

    assert attachments + bodies + headers < SES_MAX_MESSAGE_BYTES
