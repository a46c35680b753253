"""Templates on the local stack, over HTTP and through the CLI: save one, personalise a batch, preview."""

from __future__ import annotations

import io
import json
import uuid
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from mailqueue_dev import cli
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import BULK_DELIVERY_TIMEOUT, Http, all_in, outbox_file, parse_eml, wait_for, wait_for_status

pytestmark = pytest.mark.e2e

WELCOME = {
    "subject": "Welcome, {{ name }}",
    "text": "Hello {{ name }},\nyour account {{ account }} is ready.\n",
    "html": '<p>Hello <b>{{ name }}</b>,</p><p><a href="https://example.com/a/{{ account }}">Open your account</a></p>',
}


def mailqueue(local: LocalStack, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--url", local.api_url, *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def body_of(message: Any, subtype: str) -> str:
    return str(message.get_body((subtype,)).get_content()).replace("\r\n", "\n")


def test_one_batch_call_personalises_a_template_for_100_recipients(
    local: LocalStack, http: Http, dynamodb: Any, table: str
) -> None:
    name = f"welcome-{uuid.uuid4().hex[:8]}"
    code, saved = http.request("PUT", f"/templates/{name}", WELCOME)
    assert code == 201, saved
    names = [f"Reader {i} <O'Brien & Co>" for i in range(100)]
    emails = [
        {"from": "app@example.com", "to": [f"reader{i}@example.org"], "template": name,
         "data": {"name": names[i], "account": f"A{i}"}}
        for i in range(100)
    ]  # fmt: skip

    code, answer = http.post("/emails/batch", {"emails": emails})

    assert code == 202, answer
    assert (answer["accepted"], answer["rejected"]) == (100, 0)
    ids = [result["id"] for result in answer["results"]]
    wait_for(
        lambda: all_in(dynamodb, table, ids, "delivered"),
        "all 100 templated emails to be delivered",
        timeout=BULK_DELIVERY_TIMEOUT,
    )
    for index, email_id in enumerate(ids):
        message = parse_eml(local, email_id)
        assert message["To"] == f"reader{index}@example.org"
        assert message["Subject"] == f"Welcome, {names[index]}"
        assert body_of(message, "plain") == f"Hello {names[index]},\nyour account A{index} is ready.\n"
        html = body_of(message, "html")
        assert f"<b>Reader {index} &lt;O&#39;Brien &amp; Co&gt;</b>" in html
        assert f'href="https://example.com/a/A{index}"' in html
    code, email = http.get(f"/emails/{ids[0]}")
    assert (email["template"], email["template_version"]) == (name, 1)


def test_a_missing_variable_is_a_422_naming_it(http: Http) -> None:
    http.request("PUT", "/templates/welcome-strict", WELCOME)

    code, answer = http.post(
        "/emails",
        {"from": "app@example.com", "to": ["a@example.org"], "template": "welcome-strict", "data": {"name": "Ann"}},
    )

    assert code == 422
    assert answer["error"]["details"][0]["field"] == "data.account"
    assert "account" in answer["error"]["message"]


def test_a_preview_renders_without_sending(local: LocalStack, http: Http) -> None:
    http.request("PUT", "/templates/welcome-preview", WELCOME)
    marker = uuid.uuid4().hex

    code, preview = http.post("/templates/welcome-preview/preview", {"data": {"name": marker, "account": "P1"}})

    assert code == 200, preview
    assert preview["subject"] == f"Welcome, {marker}"
    assert preview["template_version"] == 1
    # An email sent after the preview goes out; nothing the preview rendered does.
    code, sent = http.post(
        "/emails",
        {"from": "app@example.com", "to": ["b@example.org"], "template": "welcome-preview",
         "data": {"name": "After", "account": "P2"}},
    )  # fmt: skip
    assert code == 202, sent
    wait_for_status(http, sent["id"], "delivered")
    assert not [path for path in Path(local.outbox_dir).glob("*.eml") if marker.encode() in path.read_bytes()]


def test_the_cli_saves_sends_shows_and_previews_a_template(local: LocalStack, http: Http, tmp_path: Path) -> None:
    (tmp_path / "receipt.txt").write_text("Order {{ order }}: {{ total }}\n")
    (tmp_path / "receipt.html").write_text("<p>Order <b>{{ order }}</b>: {{ total }}</p>\n")

    code, out, err = mailqueue(
        local, "templates", "put", "receipt", "--subject", "Receipt {{ order }}",
        "--text-file", str(tmp_path / "receipt.txt"), "--html-file", str(tmp_path / "receipt.html"),
    )  # fmt: skip
    assert code == cli.EXIT_OK, err
    version = int(out.split()[-1])

    code, out, err = mailqueue(
        local, "--json", "send", "--from", "app@example.com", "--to", "c@example.org",
        "--template", "receipt", "--data", json.dumps({"order": "<42>", "total": "9.50"}),
    )  # fmt: skip
    assert code == cli.EXIT_OK, err
    email_id = json.loads(out)["id"]
    wait_for_status(http, email_id, "delivered")
    code, out, _ = mailqueue(local, "status", email_id)
    assert f"template        receipt version {version}" in out.splitlines()
    message = parse_eml(local, email_id)
    assert message["Subject"] == "Receipt <42>"
    assert body_of(message, "html") == "<p>Order <b>&lt;42&gt;</b>: 9.50</p>\n"

    code, out, _ = mailqueue(local, "templates", "list", "--limit", "100")
    assert "receipt" in out
    eml = tmp_path / "preview.eml"
    code, _, err = mailqueue(local, "templates", "preview", "receipt", "--data", '{"order": "7", "total": "1"}',
                             "--eml", str(eml))  # fmt: skip
    assert code == cli.EXIT_OK, err
    preview = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert preview["Subject"] == "Receipt 7"
    code, _, err = mailqueue(local, "templates", "preview", "receipt", "--data", '{"order": "7"}')
    assert code == cli.EXIT_REFUSED
    assert "data.total" in err

    code, _, _ = mailqueue(local, "templates", "delete", "receipt")
    assert code == cli.EXIT_OK
    code, _, err = mailqueue(local, "templates", "get", "receipt")
    assert code == cli.EXIT_REFUSED
    assert outbox_file(local, email_id).exists()
