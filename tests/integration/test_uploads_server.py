"""Uploads through the local stack's S3 (moto in server mode, with S3's POST policy checks in front): the
presigned POST that POST /attachments hands out takes only the file it was made for."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
from botocore.config import Config

from tests.conftest import an_email

pytestmark = pytest.mark.integration


def post(ticket: dict[str, Any], data: bytes, **fields: str) -> requests.Response:
    form = {**ticket["fields"], **fields}
    return requests.post(ticket["upload_url"], data=form, files={"file": ("terms.txt", data)}, timeout=30)


def error_code(response: requests.Response) -> str:
    return response.text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in response.text else ""


def test_the_upload_takes_only_a_file_of_the_declared_size_and_it_cannot_be_replaced(
    server_api, server_stack, emulator
):
    # Given a ticket for an 11-byte file
    status, ticket = server_api.post(
        "/attachments", {"filename": "terms.txt", "content_type": "text/plain", "size": 11}
    )
    assert status == 201, ticket
    s3 = emulator.client("s3")
    bucket = server_stack.names["AttachmentsBucket"]

    # When a larger or a smaller file is sent, S3 refuses it; the declared size is taken
    too_large, too_small = post(ticket, b"terms apply, and more"), post(ticket, b"terms")
    taken = post(ticket, b"terms apply")

    assert (too_large.status_code, error_code(too_large)) == (400, "EntityTooLarge")
    assert (too_small.status_code, error_code(too_small)) == (400, "EntityTooSmall")
    assert taken.status_code == 204, taken.text
    status, body = server_api.post(
        "/emails", an_email(attachments=[{"filename": "terms.txt", "s3_key": ticket["s3_key"]}])
    )
    assert status == 202, body

    # And once the email is accepted, the same form cannot put a larger file in its place
    replaced = post(ticket, b"x" * 10_000_000)
    assert (replaced.status_code, error_code(replaced)) == (400, "EntityTooLarge")
    assert s3.get_object(Bucket=bucket, Key=ticket["s3_key"])["Body"].read() == b"terms apply"


@pytest.fixture
def form(server_stack, emulator) -> dict[str, Any]:
    """A presigned POST for an 11-byte file, signed as the emulator's own credentials sign."""
    s3 = emulator.session().client("s3", endpoint_url=emulator.endpoint_url, config=Config(signature_version="s3v4"))
    post = s3.generate_presigned_post(
        server_stack.names["AttachmentsBucket"],
        "uploads/me/terms.txt",
        Fields={"Content-Type": "text/plain"},
        Conditions=[{"Content-Type": "text/plain"}, ["content-length-range", 11, 11]],
        ExpiresIn=60,
    )
    return {"upload_url": post["url"], "fields": post["fields"], "client": s3}


def widened(policy: str) -> str:
    document = json.loads(base64.b64decode(policy))
    document["conditions"] = [c for c in document["conditions"] if not isinstance(c, list)]
    document["conditions"].append(["content-length-range", 0, 10_000_000])
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"key": "uploads/someone-else/terms.txt"}, 403, "AccessDenied"),
        ({"Content-Type": "text/html"}, 403, "AccessDenied"),
        ({"x-amz-meta-note": "not in the policy"}, 403, "AccessDenied"),
        ({"x-amz-signature": "0" * 64}, 403, "SignatureDoesNotMatch"),
        ({"policy": None}, 403, "SignatureDoesNotMatch"),
    ],
    ids=["other-key", "other-type", "extra-field", "bad-signature", "widened-policy"],
)
def test_a_form_that_does_not_match_its_signed_policy_is_refused(form, server_stack, emulator, change, status, code):
    if change == {"policy": None}:
        change = {"policy": widened(form["fields"]["policy"])}

    answer = post(form, b"terms apply", **change)

    assert (answer.status_code, error_code(answer)) == (status, code), answer.text
    listed = form["client"].list_objects_v2(Bucket=server_stack.names["AttachmentsBucket"]).get("Contents", [])
    assert listed == []


def test_an_expired_form_and_a_form_without_a_policy_are_refused(form, server_stack, emulator):
    expired = form["client"].generate_presigned_post(
        server_stack.names["AttachmentsBucket"], "uploads/me/terms.txt", ExpiresIn=-1
    )
    bare = {"key": "uploads/me/terms.txt", "Content-Type": "text/plain"}

    late = requests.post(expired["url"], data=expired["fields"], files={"file": ("t", b"x")}, timeout=30)
    unsigned = requests.post(form["upload_url"], data=bare, files={"file": ("t", b"x")}, timeout=30)

    assert (late.status_code, error_code(late)) == (403, "AccessDenied")
    assert "expired" in late.text
    assert (unsigned.status_code, error_code(unsigned)) == (403, "AccessDenied")
    assert form["client"].list_objects_v2(Bucket=server_stack.names["AttachmentsBucket"]).get("Contents", []) == []


def test_a_form_sent_to_the_bucket_s_virtual_host_is_checked_too(form, server_stack, emulator):
    bucket = server_stack.names["AttachmentsBucket"]
    host = f"{bucket}.localhost:{emulator.port}"

    answer = requests.post(
        f"{emulator.endpoint_url}/",
        data=form["fields"],
        files={"file": ("terms.txt", b"terms apply, and more")},
        headers={"Host": host},
        timeout=30,
    )

    assert (answer.status_code, error_code(answer)) == (400, "EntityTooLarge"), answer.text
    assert form["client"].list_objects_v2(Bucket=bucket).get("Contents", []) == []
