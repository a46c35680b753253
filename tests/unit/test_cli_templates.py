"""``mailqueue templates …`` and ``mailqueue send --template`` against a recorded transport."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from pathlib import Path

from mailqueue_dev import cli

from tests.unit.test_cli import EMAIL_ID, FakeApi, _no_env_url, fake, run, view

__all__ = ["_no_env_url", "fake"]  # the fixtures, shared with test_cli

SAVED = {
    "name": "welcome",
    "version": 2,
    "subject": "Hi {{ name }}",
    "text": "Hello {{ name }}\n",
    "html": "<p>Hello {{ name }}</p>\n",
    "created_at": "2026-01-01T00:00:00Z",
}


def test_put_sends_the_files_as_the_templates_parts(fake: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "welcome.txt").write_text("Hello {{ name }}\n")
    (tmp_path / "welcome.html").write_text("<p>Hello {{ name }}</p>\n")
    fake.on("PUT", "/templates/welcome", 201, SAVED)

    result = run(
        fake, "templates", "put", "welcome", "--subject", "Hi {{ name }}",
        "--text-file", str(tmp_path / "welcome.txt"), "--html-file", str(tmp_path / "welcome.html"),
    )  # fmt: skip

    assert result.code == cli.EXIT_OK, result.err
    assert fake.calls[0].json() == {
        "subject": "Hi {{ name }}",
        "text": "Hello {{ name }}\n",
        "html": "<p>Hello {{ name }}</p>\n",
    }
    assert result.out == "welcome  version 2\n"


def test_put_needs_a_body_file(fake: FakeApi) -> None:
    result = run(fake, "templates", "put", "welcome", "--subject", "Hi")

    assert result.code == cli.EXIT_USAGE
    assert fake.calls == []


def test_get_list_and_delete(fake: FakeApi) -> None:
    fake.on("GET", "/templates/welcome", 200, SAVED)
    fake.on("GET", "/templates", 200, {"templates": [{"name": "welcome", "latest_version": 2,
                                                       "created_at": "x", "updated_at": "2026-01-02"}]})  # fmt: skip
    fake.on("DELETE", "/templates/welcome", 204, None)

    got = run(fake, "templates", "get", "welcome", "--version", "2")
    listed = run(fake, "templates", "list")
    deleted = run(fake, "templates", "delete", "welcome")

    assert fake.calls[0].query == {"version": ["2"]}
    assert "subject: Hi {{ name }}" in got.out
    assert "<p>Hello {{ name }}</p>" in got.out
    assert listed.out.splitlines()[1].split() == ["welcome", "2", "2026-01-02"]
    assert (deleted.code, deleted.out) == (cli.EXIT_OK, "welcome  deleted\n")


def test_preview_writes_an_eml_with_both_parts(fake: FakeApi, tmp_path: Path) -> None:
    preview = {
        "template": "welcome",
        "template_version": 2,
        "subject": "Hi Zoë",
        "text": "Hello Zoë\n",
        "html": "<p>Hello Zoë</p>\n",
    }
    fake.on("POST", "/templates/welcome/preview", 200, preview)
    eml = tmp_path / "preview.eml"

    result = run(
        fake, "templates", "preview", "welcome", "--data", '{"name": "Zoë"}', "--eml", str(eml),
        "--to", "me@example.org",
    )  # fmt: skip

    assert result.code == cli.EXIT_OK, result.err
    assert fake.calls[0].json() == {"data": {"name": "Zoë"}}
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["Subject"] == "Hi Zoë"
    assert message["To"] == "me@example.org"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Hello Zoë\n"


def test_preview_reads_data_from_a_file(fake: FakeApi, tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text(json.dumps({"name": "Ann"}))
    fake.on("POST", "/templates/welcome/preview", 200, {**SAVED, "template": "welcome", "template_version": 2})

    run(fake, "templates", "preview", "welcome", "--data", f"@{tmp_path / 'data.json'}")

    assert fake.calls[0].json() == {"data": {"name": "Ann"}}


def test_send_with_a_template_needs_no_subject_or_body(fake: FakeApi) -> None:
    fake.on("POST", "/emails", 202, {"id": EMAIL_ID, "status": "queued", "published": True, "message": None})

    result = run(
        fake, "send", "--from", "app@example.com", "--to", "a@example.org",
        "--template", "welcome", "--template-version", "2", "--data", '{"name": "Ann"}',
    )  # fmt: skip

    assert result.code == cli.EXIT_OK, result.err
    assert fake.calls[0].json() == {
        "from": "app@example.com",
        "to": ["a@example.org"],
        "template": "welcome",
        "template_version": 2,
        "data": {"name": "Ann"},
    }


def test_bad_data_is_a_usage_error(fake: FakeApi) -> None:
    result = run(fake, "send", "--from", "app@example.com", "--to", "a@example.org", "--template", "w", "--data", "[1")

    assert result.code == cli.EXIT_USAGE
    assert fake.calls == []


def test_status_shows_the_template_and_version(fake: FakeApi) -> None:
    fake.on("GET", f"/emails/{EMAIL_ID}", 200, view(template="welcome", template_version=2))

    result = run(fake, "status", EMAIL_ID)

    assert "template        welcome version 2" in result.out.splitlines()
