"""The mailqueue CLI against the local stack: what a user does after `make dev`."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mailqueue_dev import cli
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import Http, all_in, outbox_file, wait_for

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
    wait_for(lambda: all_in(dynamodb, table, ids, "delivered"), "the 119 emails to be delivered", timeout=40)

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
