"""The local stack refuses what AWS would: a request that cannot reach the function deployed is a 413 here too.

Deployed, API Gateway's HTTP API takes a payload of up to 10 MB, but a function invoked through it takes
an event (the request as JSON) of at most 6 MB; what is larger goes through POST /attachments.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from mailqueue.limits import MAX_ATTACHMENT_BYTES
from mailqueue.web import HTTP_API_MAX_BODY_BYTES, LAMBDA_MAX_EVENT_BYTES, MAX_BODY_BYTES
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import Http, an_email, parse_eml, wait_for_status

pytestmark = pytest.mark.e2e

MB = 1_000_000


def inline(data: bytes) -> dict[str, Any]:
    return {
        "filename": "data.bin",
        "content_type": "application/octet-stream",
        "content": base64.b64encode(data).decode(),
    }


def post_raw(http: Http, body: bytes) -> tuple[int, Any]:
    response = http.session.post(
        f"{http.url}/emails", data=body, headers={"content-type": "application/json"}, timeout=60
    )
    return response.status_code, response.json()


def test_a_7_mb_inline_attachment_is_refused_with_what_to_do_instead(http: Http) -> None:
    # A 9.3 MB body: under HTTP API's 10 MB, over the 6 MB a Lambda invocation takes
    body = json.dumps(an_email(attachments=[inline(os.urandom(7 * MB))])).encode()
    assert LAMBDA_MAX_EVENT_BYTES < len(body) < HTTP_API_MAX_BODY_BYTES

    code, answer = post_raw(http, body)

    assert code == 413, answer
    assert answer["error"]["code"] == "payload_too_large"
    assert "POST /attachments" in answer["error"]["message"]


def test_a_body_over_10_mb_is_refused_as_api_gateway_would(http: Http) -> None:
    code, answer = post_raw(http, b" " * (HTTP_API_MAX_BODY_BYTES + 1))

    assert code == 413, answer
    assert "HTTP APIs take at most" in answer["error"]["message"]


def test_a_body_the_event_could_carry_but_the_api_does_not_take_is_refused_by_the_api(http: Http) -> None:
    # Over the API's own limit (6 MB less room for the rest of the event), under the event's
    email = an_email()
    padding = MAX_BODY_BYTES + 10 - len(json.dumps({**email, "text": ""}).encode())
    body = json.dumps({**email, "text": "x" * padding}).encode()
    assert MAX_BODY_BYTES < len(body) < LAMBDA_MAX_EVENT_BYTES - 16 * 1024

    code, answer = post_raw(http, body)

    assert code == 413, answer
    assert f"the API takes at most {MAX_BODY_BYTES}" in answer["error"]["message"]


def test_4_mb_goes_inline_and_7_mb_through_an_upload(local: LocalStack, http: Http) -> None:
    small, large = os.urandom(4 * MB), os.urandom(7 * MB)
    code, answer = http.post("/emails", an_email(attachments=[inline(small)]))
    assert code == 202, answer
    first = answer["id"]

    code, ticket = http.post(
        "/attachments", {"filename": "large.bin", "content_type": "application/octet-stream", "size": len(large)}
    )
    assert code == 201, ticket
    assert (
        http.session.post(ticket["upload_url"], data=ticket["fields"], files={"file": large}, timeout=60).status_code
        == 204
    )
    uploaded = {"filename": "large.bin", "content_type": "application/octet-stream", "s3_key": ticket["s3_key"]}
    code, answer = http.post("/emails", an_email(attachments=[uploaded]))
    assert code == 202, answer

    for email_id, data in ((first, small), (answer["id"], large)):
        wait_for_status(http, email_id, "delivered", timeout=60)
        [attachment] = list(parse_eml(local, email_id).iter_attachments())
        assert attachment.get_content() == data


def test_attachments_beyond_10_mb_in_all_are_refused(http: Http) -> None:
    tickets = []
    for name in ("a.bin", "b.bin"):
        data = os.urandom(MAX_ATTACHMENT_BYTES // 2 + 1)
        code, ticket = http.post(
            "/attachments", {"filename": name, "content_type": "application/octet-stream", "size": len(data)}
        )
        assert code == 201, ticket
        assert (
            http.session.post(ticket["upload_url"], data=ticket["fields"], files={"file": data}, timeout=60).status_code
            == 204
        )
        tickets.append({"filename": name, "content_type": "application/octet-stream", "s3_key": ticket["s3_key"]})

    code, answer = http.post("/emails", an_email(attachments=tickets))

    assert code == 422, answer
    assert answer["error"]["details"][0]["field"] == "attachments"
