"""The mailqueue CLI against the local stack: what a user does after `make dev`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mailqueue_dev import cli, ses_simulator
from mailqueue_dev.local import LocalStack, banner
from mailqueue_dev.running import RunningStack

from tests.e2e.conftest import BULK_DELIVERY_TIMEOUT, Http, all_in, an_email, outbox_file, wait_for

pytestmark = pytest.mark.e2e


def mailqueue(local: LocalStack, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--url", local.api_url, *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def delivered(http: Http, email_id: str) -> bool:
    code, body = http.get(f"/emails/{email_id}")
    return code == 200 and body["status"] == "delivered"


def test_send_then_status_then_outbox(local: LocalStack, http: Http, tmp_path: Path) -> None:
    attachment = tmp_path / "notes.txt"
    attachment.write_text("bring snacks\n")

    code, out, err = mailqueue(
        local, "--json", "send", "--from", "app@example.com", "--to", "team@example.org",
        "--subject", "Meeting notes", "--text", "See attached.", "--attach", str(attachment),
    )  # fmt: skip
    assert code == cli.EXIT_OK, err
    email_id = json.loads(out)["id"]

    wait_for(lambda: delivered(http, email_id), f"{email_id} to be delivered")
    code, out, _ = mailqueue(local, "status", email_id)
    assert code == cli.EXIT_OK
    assert "status          delivered" in out.splitlines()

    code, out, _ = mailqueue(local, "--json", "outbox", "--outbox", str(local.outbox_dir), "--limit", "1000")
    assert code == cli.EXIT_OK
    entry = next(entry for entry in json.loads(out) if entry["id"] == email_id)
    assert (entry["from"], entry["to"], entry["subject"]) == ("app@example.com", "team@example.org", "Meeting notes")


def test_send_a_file_of_emails_and_count_them(local: LocalStack, tmp_path: Path, dynamodb: Any, table: str) -> None:
    emails: list[dict[str, Any]] = [
        {"from": "app@example.com", "to": [f"reader{i}@example.org"], "subject": f"Newsletter {i}", "text": "News."}
        for i in range(120)
    ]
    emails[7]["to"] = ["not an address"]
    path = tmp_path / "emails.json"
    path.write_text(json.dumps(emails))

    code, out, _ = mailqueue(local, "--json", "send", "--file", str(path))

    assert code == cli.EXIT_REFUSED  # one email was refused; the others were accepted
    summary = json.loads(out)
    assert (summary["accepted"], summary["rejected"]) == (119, 1)
    assert [item["index"] for item in summary["results"] if item.get("error")] == [7]
    ids = [item["id"] for item in summary["results"] if item.get("id")]
    wait_for(lambda: all(outbox_file(local, email_id).exists() for email_id in ids), "119 emails in the outbox")
    wait_for(
        lambda: all_in(dynamodb, table, ids, "delivered"),
        "the 119 emails to be delivered",
        timeout=BULK_DELIVERY_TIMEOUT,
    )

    code, out, _ = mailqueue(local, "--json", "stats")
    assert code == cli.EXIT_OK
    assert json.loads(out)["counts"]["delivered"] >= 119  # other tests' emails are counted too


def test_cancel_and_a_refused_retry(local: LocalStack) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()  # scheduled: within the week a send may wait
    code, out, _ = mailqueue(
        local, "--json", "send", "--from", "app@example.com", "--to", "later@example.org",
        "--subject", "Tomorrow", "--text", "Hello", "--send-at", tomorrow,
    )  # fmt: skip
    assert code == cli.EXIT_OK
    email_id = json.loads(out)["id"]

    code, out, _ = mailqueue(local, "--json", "cancel", email_id)
    assert (code, json.loads(out)["status"]) == (cli.EXIT_OK, "cancelled")

    code, _, err = mailqueue(local, "retry", email_id)  # only failed emails can be retried
    assert code == cli.EXIT_REFUSED
    assert "status_conflict" in err

    code, out, _ = mailqueue(local, "--json", "list", "--status", "cancelled")
    assert code == cli.EXIT_OK
    assert email_id in [email["id"] for email in json.loads(out)["emails"]]


# --- one setting for the stack and the CLI ------------------------------------------------------------------


def _printed(banner_text: str, marker: str) -> str:
    """The command the banner prints after ``marker`` (up to the next two spaces)."""
    line = next(line for line in banner_text.splitlines() if marker in line)
    return line.split(marker, 1)[1].strip().split("  ", 1)[0]


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # As a user's new terminal: no MAILQUEUE_* settings, only the project directory to go by.
    env = {name: value for name, value in os.environ.items() if not name.startswith("MAILQUEUE_")}
    return subprocess.run(
        command, check=False, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_banner_commands_work_as_printed_from_the_project_or_below(local: LocalStack, http: Http) -> None:
    assert local.state_dir is not None
    root = local.state_dir.parent
    below = root / "docs" / "drafts"
    below.mkdir(parents=True, exist_ok=True)
    text = banner(local)
    # Every address that does something other than a delivery is listed, suppressionlist@ among them
    for addresses, fate in ses_simulator.SPECIAL_ADDRESSES:
        assert any(addresses in line and line.rstrip().endswith(fate) for line in text.splitlines()), text
    assert "suppressionlist@simulator.amazonses.com" in text
    assert "*@reject.mailqueue.example" in text and "*@unavailable.mailqueue.example" in text
    code, answer = http.post("/emails", an_email())
    assert code == 202, answer
    email_id = answer["id"]
    wait_for(lambda: delivered(http, email_id), f"{email_id} to be delivered")

    status = _printed(text, "Then follow it:").replace("<id>", email_id)
    for directory in (root, below):
        result = _shell(status, directory)
        assert result.returncode == cli.EXIT_OK, result.stderr
        assert f"id              {email_id}" in result.stdout.splitlines()
        assert "status          delivered" in result.stdout.splitlines()

    # The outbox is found from below the project too
    result = _shell(_printed(text, "and read it:") + " --limit 1000", below)
    assert result.returncode == cli.EXIT_OK, result.stderr
    assert email_id in result.stdout


def test_the_port_make_dev_reads_is_the_port_the_cli_reads(
    local: LocalStack, http: Http, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, answer = http.post("/emails", an_email())
    assert code == 202, answer
    monkeypatch.chdir(tmp_path)  # no stack runs from here: the variable alone says where it is
    monkeypatch.setenv("MAILQUEUE_API_PORT", str(local.api_port))
    out, err = io.StringIO(), io.StringIO()

    code = cli.main(["--json", "status", answer["id"]], out=out, err=err)

    assert code == cli.EXIT_OK, err.getvalue()
    assert json.loads(out.getvalue())["id"] == answer["id"]


def test_the_cli_refuses_a_server_that_is_not_the_stack_started_here(
    local: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a project whose stack.json names the port another stack (this test's) holds
    state_dir = tmp_path / ".mailqueue"
    RunningStack(
        url=local.api_url, endpoint_url="", outbox="", token="not-this-one", pid=os.getpid(), root=str(tmp_path)
    ).write(state_dir)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILQUEUE_API_PORT", raising=False)
    monkeypatch.delenv("MAILQUEUE_URL", raising=False)
    err = io.StringIO()

    code = cli.main(["list", "--status", "queued"], out=io.StringIO(), err=err)

    assert code == cli.EXIT_UNAVAILABLE
    assert f"{local.api_url} is not the local stack started in {tmp_path}" in err.getvalue()

    # And with no stack running from the project at all, it says so instead of trying port 3000
    (state_dir / "stack.json").unlink()
    err = io.StringIO()
    assert cli.main(["list", "--status", "queued"], out=io.StringIO(), err=err) == cli.EXIT_UNAVAILABLE
    assert f"no local stack is running from {tmp_path}" in err.getvalue()


def test_status_shows_the_whole_subject_and_every_recipient(local: LocalStack, http: Http) -> None:
    subject = "Quarterly report for the whole team, with figures and the plan for next quarter"
    email = an_email(
        to=["Alice <alice@example.org>", "bob@example.org"], cc=["carol@example.org"], bcc=["dave@example.org"]
    )
    email["subject"] = subject
    code, answer = http.post("/emails", email)
    assert code == 202, answer

    # Over HTTP: the email whole, not the status record's summary
    code, shown = http.get(f"/emails/{answer['id']}")
    assert code == 200, shown
    assert (shown["subject"], shown["summary"]) == (subject, False)
    assert shown["recipients"] == {
        "to": ["Alice <alice@example.org>", "bob@example.org"],
        "cc": ["carol@example.org"],
        "bcc": ["dave@example.org"],
    }
    # and a list page says it shows the summary
    code, page = http.get("/emails", params={"status": shown["status"], "limit": 100})
    assert code == 200
    listed = next((e for e in page["emails"] if e["id"] == answer["id"]), None)
    if listed is not None:  # it may have moved on to the next status meanwhile
        assert (listed["summary"], listed["recipients"], listed["to"]) == (True, None, "alice@example.org")

    # Through the CLI
    code, out, _ = mailqueue(local, "status", answer["id"])
    assert code == cli.EXIT_OK
    lines = out.splitlines()
    assert f"subject         {subject}" in lines
    assert "to              Alice <alice@example.org>, bob@example.org" in lines
    assert "cc              carol@example.org" in lines
    assert "bcc             dave@example.org" in lines


def test_an_email_whose_content_is_in_s3_is_shown_whole_too(http: Http, dynamodb: Any, table: str) -> None:
    # Over the inline content limit (300 KB by default), the body goes to S3; the envelope stays in the table
    code, answer = http.post("/emails", an_email(to=["a@example.org", "b@example.org"], text="x" * 400_000))
    assert code == 202, answer
    content = dynamodb.get_item(TableName=table, Key={"pk": {"S": answer["id"]}, "sk": {"S": "content"}})["Item"]
    assert "s3_key" in content

    code, shown = http.get(f"/emails/{answer['id']}")

    assert code == 200, shown
    assert shown["recipients"]["to"] == ["a@example.org", "b@example.org"]
    assert shown["summary"] is False


def test_the_same_send_with_a_large_attachment_and_key_is_the_same_email(
    local: LocalStack, http: Http, tmp_path: Path
) -> None:
    # Over 1 MB: the CLI uploads it through POST /attachments, to a key made from its content
    report = tmp_path / "report.bin"
    report.write_bytes(os.urandom(1536 * 1024))
    command = (
        "--json", "send", "--from", "app@example.com", "--to", "team@example.org", "--subject", "Report",
        "--text", "Attached.", "--attach", str(report), "--idempotency-key", f"report-{uuid.uuid4().hex}",
    )  # fmt: skip

    first = mailqueue(local, *command)
    again = mailqueue(local, *command)

    assert first[0] == cli.EXIT_OK, first[2]
    assert again[0] == cli.EXIT_OK, again[2]
    assert json.loads(again[1])["id"] == json.loads(first[1])["id"]
    wait_for(lambda: delivered(http, json.loads(first[1])["id"]), "the report to be delivered")


def test_an_upload_with_a_hash_gets_a_key_from_it_and_is_not_uploaded_twice(http: Http) -> None:
    data = b"the quarterly figures"
    code, ticket = http.post(
        "/attachments",
        {
            "filename": "q.txt",
            "content_type": "text/plain",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert code == 201, ticket
    assert ticket["s3_key"].startswith("uploads/")
    assert ticket["s3_key"].endswith(f"/sha256-{hashlib.sha256(data).hexdigest()}/{len(data)}/q.txt")

    form = {"file": ("q.txt", data, "text/plain")}
    assert http.session.post(ticket["upload_url"], data=ticket["fields"], files=form, timeout=30).status_code == 204

    # Asked again, the ticket says the file is there already
    code, again = http.post(
        "/attachments",
        {
            "filename": "q.txt",
            "content_type": "text/plain",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert (code, again["uploaded"], again["s3_key"]) == (201, True, ticket["s3_key"])
