"""The mailqueue CLI against a recorded transport: requests it makes, what it prints, exit codes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from botocore.credentials import Credentials
from botocore.stub import Stubber
from mailqueue_dev import cli

EMAIL_ID = "01J9Z8Y7X6W5V4T3S2R1Q0P9N8"
MINIMAL = ("--from", "app@example.com", "--to", "a@example.org", "--subject", "Hi", "--text", "x")


@dataclass
class Call:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


Responder = Callable[[Call], tuple[int, Any]]


@dataclass
class FakeApi:
    """A transport that answers from ``routes`` ((method, path) -> responder) and records every call."""

    routes: dict[tuple[str, str], Responder] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def on(self, method: str, path: str, status: int = 200, body: Any = None) -> None:
        self.routes[(method, path)] = lambda _call: (status, body)

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
        call = Call(method, url, headers, body)
        self.calls.append(call)
        responder = self.routes.get((method, call.path))
        if responder is None:
            return 404, json.dumps({"error": {"code": "not_found", "message": "no route", "details": []}}).encode()
        status, answer = responder(call)
        return status, json.dumps(answer).encode() if answer is not None else b""


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi()


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Away from any project: no running stack's .mailqueue/stack.json decides where requests go.
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    monkeypatch.delenv("MAILQUEUE_API_PORT", raising=False)
    monkeypatch.delenv("MAILQUEUE_URL", raising=False)
    monkeypatch.delenv("MAILQUEUE_TOKEN", raising=False)
    monkeypatch.delenv("MAILQUEUE_OUTBOX", raising=False)


def run(fake: FakeApi, *argv: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), transport=fake, out=out, err=err)
    return Run(code, out.getvalue(), err.getvalue())


def view(status: str = "sent", **overrides: Any) -> dict[str, Any]:
    email = {
        "id": EMAIL_ID,
        "status": status,
        "priority": "normal",
        "attempts": 1,
        "created_at": "2030-01-01T00:00:00.000Z",
        "updated_at": "2030-01-01T00:00:01.000Z",
        "to": "alice@example.org",
        "subject": "Your receipt",
        "history": [{"status": "queued", "at": "2030-01-01T00:00:00.000Z", "reason": "accepted"}],
    }
    email.update(overrides)
    return email


def error(code: str, message: str, field_name: str | None = None) -> dict[str, Any]:
    details = [{"field": field_name, "message": message}] if field_name else []
    return {"error": {"code": code, "message": message, "details": details}}


# --- send -----------------------------------------------------------------------------------------------------


def test_send_from_flags_posts_one_email(fake: FakeApi, tmp_path: Path) -> None:
    attachment = tmp_path / "receipt.pdf"
    attachment.write_bytes(b"%PDF-1.4")
    fake.on("POST", "/emails", 202, {"id": EMAIL_ID, "status": "queued", "published": True})

    result = run(
        fake,
        "send",
        "--from",
        "Shop <app@example.com>",
        "--to",
        "alice@example.org, bob@example.org",
        "--to",
        "carol@example.org",
        "--subject",
        "Your receipt",
        "--text",
        "Thanks",
        "--html",
        "<p>Thanks</p>",
        "--attach",
        str(attachment),
        "--priority",
        "high",
    )

    assert result.code == cli.EXIT_OK, result.err
    assert result.out.split() == [EMAIL_ID, "queued"]
    (call,) = fake.calls
    assert call.url == f"{cli.DEFAULT_URL}/emails"
    assert call.headers["content-type"] == "application/json"
    assert "authorization" not in {name.lower() for name in call.headers}  # local: not signed
    assert call.json() == {
        "from": "Shop <app@example.com>",
        "to": ["alice@example.org", "bob@example.org", "carol@example.org"],
        "subject": "Your receipt",
        "text": "Thanks",
        "html": "<p>Thanks</p>",
        "priority": "high",
        "attachments": [
            {
                "filename": "receipt.pdf",
                "content_type": "application/pdf",
                "content": base64.b64encode(b"%PDF-1.4").decode(),
            }
        ],
    }


def test_send_prints_the_answer_as_json_for_scripts(fake: FakeApi) -> None:
    answer = {"id": EMAIL_ID, "status": "queued", "published": True, "message": None}
    fake.on("POST", "/emails", 202, answer)

    result = run(fake, "send", *MINIMAL, "--json")

    assert result.code == cli.EXIT_OK
    assert result.json() == answer


def test_send_names_what_is_missing(fake: FakeApi) -> None:
    result = run(fake, "send", "--from", "app@example.com")

    assert result.code == cli.EXIT_USAGE
    assert "--subject" in result.err and "--to" in result.err and "--text or --html" in result.err
    assert fake.calls == []


def test_send_refused_by_the_api_exits_1_with_the_fields(fake: FakeApi) -> None:
    fake.on("POST", "/emails", 422, error("invalid_request", "not a valid address", "to"))

    result = run(fake, "send", "--from", "app@example.com", "--to", "nope", "--subject", "Hi", "--text", "x")

    assert result.code == cli.EXIT_REFUSED
    assert "invalid_request" in result.err
    assert "to: not a valid address" in result.err


def test_a_large_attachment_is_uploaded_first(fake: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "INLINE_ATTACHMENT_LIMIT", 10)
    big = tmp_path / "report.csv"
    big.write_bytes(b"a,b\n" * 100)
    fields = {"Content-Type": "text/csv", "key": "uploads/X/report.csv", "policy": "eyJ9", "x-amz-signature": "abc"}
    ticket = {
        "s3_key": "uploads/X/report.csv",
        "upload_url": "http://127.0.0.1:4566/bucket",
        "method": "POST",
        "fields": fields,
        "expires_at": "2030-01-01T00:15:00.000Z",
    }
    fake.on("POST", "/attachments", 201, ticket)
    fake.on("POST", "/bucket", 204, None)
    fake.on("POST", "/emails", 202, {"id": EMAIL_ID, "status": "queued"})

    result = run(fake, "send", *MINIMAL, "--attach", str(big))

    assert result.code == cli.EXIT_OK, result.err
    upload_request, upload, send = fake.calls
    assert upload_request.json() == {
        "filename": "report.csv",
        "content_type": "text/csv",
        "size": 400,
        "sha256": hashlib.sha256(big.read_bytes()).hexdigest(),  # the key is made from the content
    }
    # A multipart/form-data POST: the ticket's fields as they are, then the file, last, named file
    assert (upload.method, upload.url) == ("POST", ticket["upload_url"])
    assert upload.body is not None
    form = message_from_bytes(
        f"Content-Type: {upload.headers['content-type']}\r\n\r\n".encode() + upload.body, policy=email_policy.HTTP
    )
    parts = [
        (part.get_param("name", header="content-disposition"), part.get_payload(decode=True))
        for part in form.iter_parts()
    ]
    assert parts == [(name, value.encode()) for name, value in fields.items()] + [("file", big.read_bytes())]
    assert send.json()["attachments"] == [
        {"filename": "report.csv", "content_type": "text/csv", "s3_key": "uploads/X/report.csv"}
    ]


def test_send_file_with_one_email_posts_it(fake: FakeApi, tmp_path: Path) -> None:
    email = {"from": "app@example.com", "to": ["a@example.org"], "subject": "Hi", "text": "x"}
    path = tmp_path / "email.json"
    path.write_text(json.dumps(email))
    fake.on("POST", "/emails", 202, {"id": EMAIL_ID, "status": "queued"})

    result = run(fake, "send", "--file", str(path))

    assert result.code == cli.EXIT_OK
    assert [call.json() for call in fake.calls] == [email]


def batch_answers(call: Call, reject: set[int] | None = None) -> tuple[int, Any]:
    emails = call.json()["emails"]
    results = []
    for index, email in enumerate(emails):
        if email["subject"] in {f"#{i}" for i in reject or set()}:
            results.append({"index": index, "error": error("invalid_email", "bad", "to")["error"]})
        else:
            results.append({"index": index, "id": f"ID{email['subject']}", "status": "queued", "published": True})
    accepted = sum(1 for result in results if "id" in result)
    return 202, {"accepted": accepted, "rejected": len(results) - accepted, "results": results}


def write_emails(tmp_path: Path, count: int) -> Path:
    emails = [
        {"from": "app@example.com", "to": [f"c{i}@example.org"], "subject": f"#{i}", "text": "x"} for i in range(count)
    ]
    path = tmp_path / "emails.json"
    path.write_text(json.dumps(emails))
    return path


def test_send_file_with_a_list_goes_in_batches_of_100(fake: FakeApi, tmp_path: Path) -> None:
    fake.routes[("POST", "/emails/batch")] = lambda call: batch_answers(call, reject={150})

    result = run(fake, "--json", "send", "--file", str(write_emails(tmp_path, 250)), "--idempotency-key", "run-7")

    assert result.code == cli.EXIT_REFUSED  # one email was rejected
    assert [len(call.json()["emails"]) for call in fake.calls] == [100, 100, 50]
    assert [call.headers["idempotency-key"] for call in fake.calls] == ["run-7-0", "run-7-1", "run-7-2"]
    summary = result.json()
    assert (summary["accepted"], summary["rejected"], summary["not_sent"]) == (249, 1, 0)
    assert [item["index"] for item in summary["results"]] == list(range(250))
    rejected = [item for item in summary["results"] if "error" in item]
    assert [item["index"] for item in rejected] == [150]


def test_a_batch_reports_the_rejected_emails_by_their_place_in_the_file(fake: FakeApi, tmp_path: Path) -> None:
    fake.routes[("POST", "/emails/batch")] = lambda call: batch_answers(call, reject={120})

    result = run(fake, "send", "--file", str(write_emails(tmp_path, 130)))

    assert result.code == cli.EXIT_REFUSED
    assert "129 accepted, 1 rejected, 0 not sent" in result.out
    assert "#120: invalid_email: to: bad" in result.out


def test_a_batch_stops_when_the_api_becomes_unreachable(fake: FakeApi, tmp_path: Path) -> None:
    def first_chunk_then_down(call: Call) -> tuple[int, Any]:
        if len(fake.calls) == 1:
            return batch_answers(call)
        return 503, error("unavailable", "try again")

    fake.routes[("POST", "/emails/batch")] = first_chunk_then_down

    result = run(fake, "send", "--file", str(write_emails(tmp_path, 300)))

    assert result.code == cli.EXIT_UNAVAILABLE
    assert len(fake.calls) == 2
    assert "100 accepted, 0 rejected, 200 not sent" in result.out
    assert "stopped after 100 of 300" in result.err


def test_send_takes_flags_or_a_file_not_both(fake: FakeApi, tmp_path: Path) -> None:
    result = run(fake, "send", "--file", str(write_emails(tmp_path, 1)), "--subject", "Hi")

    assert result.code == cli.EXIT_USAGE
    assert fake.calls == []


def test_a_file_that_is_not_json_is_a_usage_error(fake: FakeApi, tmp_path: Path) -> None:
    path = tmp_path / "emails.json"
    path.write_text("{not json")

    assert run(fake, "send", "--file", str(path)).code == cli.EXIT_USAGE


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    stream = io.StringIO()
    progress = cli.Progress(250, stream, enabled=True, width=10)
    progress.advance(100)
    progress.advance(100)
    progress.advance(50)
    progress.finish()
    assert stream.getvalue() == "\r[####------] 100/250\r[########--] 200/250\r[##########] 250/250\n"

    silent = io.StringIO()
    quiet = cli.Progress(250, silent, enabled=False)
    quiet.advance(250)
    quiet.finish()
    assert silent.getvalue() == ""


# --- reading and changing emails ------------------------------------------------------------------------------


def test_status_shows_the_email_and_its_history(fake: FakeApi) -> None:
    fake.on("GET", f"/emails/{EMAIL_ID}", 200, view("sent", ses_message_id="ses-1"))

    result = run(fake, "status", EMAIL_ID)

    assert result.code == cli.EXIT_OK
    lines = result.out.splitlines()
    assert lines[:2] == [f"id              {EMAIL_ID}", "status          sent"]
    assert "ses_message_id  ses-1" in lines
    assert any(line.split() == ["2030-01-01T00:00:00.000Z", "queued", "accepted"] for line in lines)


def test_global_options_may_follow_the_command(fake: FakeApi) -> None:
    fake.on("GET", f"/emails/{EMAIL_ID}", 200, view())

    result = run(fake, "status", EMAIL_ID, "--json", "--url", "http://localhost:3100/")

    assert result.code == cli.EXIT_OK
    assert result.json()["id"] == EMAIL_ID
    assert fake.calls[0].url == f"http://localhost:3100/emails/{EMAIL_ID}"


def test_an_unknown_email_exits_1_and_json_mode_prints_the_error(fake: FakeApi) -> None:
    fake.on("GET", f"/emails/{EMAIL_ID}", 404, error("not_found", f"no email has the id {EMAIL_ID}"))

    result = run(fake, "--json", "status", EMAIL_ID)

    assert result.code == cli.EXIT_REFUSED
    assert result.json()["error"]["code"] == "not_found"
    assert "not_found" in result.err


def test_a_server_error_exits_3(fake: FakeApi) -> None:
    fake.on("GET", f"/emails/{EMAIL_ID}", 503, error("unavailable", "try again"))

    assert run(fake, "status", EMAIL_ID).code == cli.EXIT_UNAVAILABLE


def test_an_unreachable_api_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(requests.Session, "request", refuse)
    out, err = io.StringIO(), io.StringIO()

    code = cli.main(["--url", "http://127.0.0.1:9", "status", EMAIL_ID], out=out, err=err)

    assert code == cli.EXIT_UNAVAILABLE
    assert "cannot reach http://127.0.0.1:9" in err.getvalue()


def test_list_prints_a_table_and_how_to_get_the_next_page(fake: FakeApi) -> None:
    fake.on("GET", "/emails", 200, {"emails": [view("failed", attempts=5)], "cursor": "abc"})

    result = run(fake, "list", "--status", "failed", "--limit", "5")

    assert result.code == cli.EXIT_OK
    assert fake.calls[0].query == {"status": ["failed"], "limit": ["5"]}
    header, row = result.out.splitlines()
    assert header.split() == ["ID", "STATUS", "ATTEMPTS", "TO", "SUBJECT", "UPDATED"]
    assert row.split()[:4] == [EMAIL_ID, "failed", "5", "alice@example.org"]
    assert "more: mailqueue list --status failed --limit 5 --cursor abc" in result.err.splitlines()


@pytest.mark.parametrize("argv", [["list"], ["list", "--status", "lost"], ["list", "--status", "sent", "--limit", "0"]])
def test_list_usage_errors_exit_2(fake: FakeApi, argv: list[str]) -> None:
    assert run(fake, *argv).code == cli.EXIT_USAGE
    assert fake.calls == []


def test_cancel_and_retry_call_their_routes(fake: FakeApi) -> None:
    fake.on("DELETE", f"/emails/{EMAIL_ID}", 200, view("cancelled"))
    fake.on("POST", f"/emails/{EMAIL_ID}/retry", 202, view("queued", attempts=0))

    cancelled = run(fake, "--json", "cancel", EMAIL_ID)
    retried = run(fake, "--json", "retry", EMAIL_ID)

    assert (cancelled.code, cancelled.json()["status"]) == (cli.EXIT_OK, "cancelled")
    assert (retried.code, retried.json()["status"]) == (cli.EXIT_OK, "queued")
    assert [(call.method, call.path) for call in fake.calls] == [
        ("DELETE", f"/emails/{EMAIL_ID}"),
        ("POST", f"/emails/{EMAIL_ID}/retry"),
    ]


def test_cancelling_a_sent_email_is_a_conflict(fake: FakeApi) -> None:
    fake.on("DELETE", f"/emails/{EMAIL_ID}", 409, error("status_conflict", f"email {EMAIL_ID} is sent"))

    result = run(fake, "cancel", EMAIL_ID)

    assert result.code == cli.EXIT_REFUSED
    assert "status_conflict" in result.err


def test_stats_counts_every_status_across_pages(fake: FakeApi) -> None:
    def pages(call: Call) -> tuple[int, Any]:
        status = call.query["status"][0]
        cursor = call.query.get("cursor", [None])[0]
        if status == "sent":
            if cursor is None:
                return 200, {"emails": [view()] * 100, "cursor": "page2"}
            return 200, {"emails": [view()] * 30, "cursor": None}
        if status == "failed":
            return 200, {"emails": [view("failed")] * 2, "cursor": None}
        return 200, {"emails": [], "cursor": None}

    fake.routes[("GET", "/emails")] = pages

    result = run(fake, "--json", "stats")

    assert result.code == cli.EXIT_OK
    counts = result.json()["counts"]
    assert list(counts) == list(cli.STATUSES)
    assert counts["sent"] == 130
    assert counts["failed"] == 2
    assert sum(counts.values()) == 132


def test_stats_stops_counting_at_the_cap(fake: FakeApi) -> None:
    fake.routes[("GET", "/emails")] = lambda call: (200, {"emails": [view()] * 100, "cursor": "more"})

    result = run(fake, "stats", "--max", "200")

    assert result.code == cli.EXIT_OK
    assert "sent        200+" in result.out


def test_status_shows_why_an_email_bounced(fake: FakeApi) -> None:
    history = [
        {"status": "sent", "at": "2030-01-01T00:00:01.000Z", "reason": "accepted by SES"},
        {"status": "bounced", "at": "2030-01-01T00:00:04.000Z", "reason": "bounce Permanent/General"},
    ]
    fake.on("GET", f"/emails/{EMAIL_ID}", 200, view("bounced", history=history))

    result = run(fake, "status", EMAIL_ID)

    assert result.code == cli.EXIT_OK
    assert "reason          bounce Permanent/General" in result.out.splitlines()


@pytest.mark.parametrize(
    ("status", "history", "reason"),
    [
        ("complained", [{"status": "complained", "reason": "complaint: abuse"}], "complaint: abuse"),
        ("failed", [{"status": "failed", "reason": "x"}, {"status": "failed", "reason": "rejected: Bad content"}],
         "rejected: Bad content"),
        ("delivered", [{"status": "delivered", "reason": "delivery"}], None),  # nothing to explain
        ("bounced", [], None),  # a history trimmed or absent
    ],
)  # fmt: skip
def test_the_outcome_reason_is_the_last_history_entry_of_the_status(
    status: str, history: list[dict[str, str]], reason: str | None
) -> None:
    assert cli.outcome_reason({"status": status, "history": history}) == reason


# --- the suppression list -------------------------------------------------------------------------------------

SUPPRESSED = {
    "address": "bounce@simulator.amazonses.com",
    "reason": "permanent bounce (General)",
    "added_at": "2030-01-01T00:00:04.000Z",
    "email_id": EMAIL_ID,
}


def test_suppressions_prints_a_table_and_how_to_get_the_next_page(fake: FakeApi) -> None:
    fake.on("GET", "/suppressions", 200, {"suppressions": [SUPPRESSED], "cursor": "next"})

    result = run(fake, "suppressions", "--limit", "10")

    assert result.code == cli.EXIT_OK
    assert fake.calls[0].query == {"limit": ["10"]}
    header, row = result.out.splitlines()
    assert header.split() == ["ADDRESS", "REASON", "ADDED", "EMAIL"]
    assert row.startswith("bounce@simulator.amazonses.com  permanent bounce (General)")
    assert row.split()[-2:] == ["2030-01-01T00:00:04.000Z", EMAIL_ID]
    assert "mailqueue suppressions --limit 10 --cursor next" in result.err


def test_suppressions_follows_a_cursor_and_prints_the_page_as_json(fake: FakeApi) -> None:
    fake.on("GET", "/suppressions", 200, {"suppressions": [SUPPRESSED], "cursor": None})

    result = run(fake, "--json", "suppressions", "--cursor", "next")

    assert result.code == cli.EXIT_OK
    assert fake.calls[0].query == {"limit": ["50"], "cursor": ["next"]}
    assert result.json() == {"suppressions": [SUPPRESSED], "cursor": None}
    assert result.err == ""


def test_an_empty_suppression_list_says_so(fake: FakeApi) -> None:
    fake.on("GET", "/suppressions", 200, {"suppressions": [], "cursor": None})

    result = run(fake, "suppressions")

    assert (result.code, result.out) == (cli.EXIT_OK, "")
    assert "no suppressed addresses" in result.err


@pytest.mark.parametrize("limit", ["0", "101", "many"])
def test_suppressions_limit_is_checked_before_any_request(fake: FakeApi, limit: str) -> None:
    assert run(fake, "suppressions", "--limit", limit).code == cli.EXIT_USAGE
    assert fake.calls == []


def test_unsuppress_deletes_the_address(fake: FakeApi) -> None:
    # The + is quoted: unquoted, a decoder of the path could read it as a space.
    fake.on("DELETE", "/suppressions/bounce%2Bx@simulator.amazonses.com", 204)

    result = run(fake, "unsuppress", "bounce+x@simulator.amazonses.com")

    assert result.code == cli.EXIT_OK, result.err
    assert "bounce+x@simulator.amazonses.com is no longer suppressed" in result.out


def test_unsuppress_prints_json_for_scripts(fake: FakeApi) -> None:
    fake.on("DELETE", "/suppressions/alice@example.org", 204)

    result = run(fake, "--json", "unsuppress", "alice@example.org")

    assert result.code == cli.EXIT_OK
    assert result.json() == {"address": "alice@example.org", "suppressed": False}


def test_unsuppressing_an_address_that_is_not_suppressed_exits_1_with_the_apis_message(fake: FakeApi) -> None:
    message = "alice@example.org is not on the suppression list"
    fake.on("DELETE", "/suppressions/alice@example.org", 404, error("not_found", message))

    result = run(fake, "unsuppress", "alice@example.org")

    assert result.code == cli.EXIT_REFUSED
    assert result.out == ""
    assert message in result.err


# --- the local outbox -----------------------------------------------------------------------------------------


def write_eml(directory: Path, email_id: str, subject: str) -> None:
    (directory / f"{email_id}.eml").write_bytes(
        f"From: Shop <app@example.com>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
        "Date: Tue, 01 Jan 2030 00:00:00 +0000\r\n\r\nHello\r\n".encode()
    )


def test_outbox_lists_the_newest_first(tmp_path: Path) -> None:
    write_eml(tmp_path, "01J00000000000000000000001", "First")
    write_eml(tmp_path, "01J00000000000000000000002", "Second")

    result = run(FakeApi(), "--json", "outbox", "--outbox", str(tmp_path))

    assert result.code == cli.EXIT_OK
    entries = result.json()
    assert [entry["subject"] for entry in entries] == ["Second", "First"]
    assert entries[0]["from"] == "Shop <app@example.com>"
    assert entries[0]["to"] == "alice@example.org"


def test_outbox_prints_one_email(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_eml(tmp_path, "01J00000000000000000000001", "First")
    monkeypatch.setenv("MAILQUEUE_OUTBOX", str(tmp_path))

    result = run(FakeApi(), "outbox", "01J00000000000000000000001")

    assert result.code == cli.EXIT_OK
    assert "Subject: First" in result.out


def test_a_reader_that_leaves_early_ends_the_cli_quietly(tmp_path: Path) -> None:
    # `mailqueue outbox --json | head -1`: more output than a pipe holds, and the reader gone at once
    for number in range(600):
        write_eml(tmp_path, f"01J{number:023d}", f"Newsletter {number}")
    command = [
        sys.executable,
        "-m",
        "mailqueue_dev.cli",
        "--json",
        "outbox",
        "--outbox",
        str(tmp_path),
        "--limit",
        "600",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()

    _, err = process.communicate(timeout=60)

    assert err.decode() == ""
    assert process.returncode == cli.EXIT_OK


def test_outbox_without_a_local_stack_says_so(tmp_path: Path) -> None:
    result = run(FakeApi(), "outbox", "--outbox", str(tmp_path / "missing"))

    assert result.code == cli.EXIT_REFUSED
    assert "make dev" in result.err


# --- where requests go, and signing ---------------------------------------------------------------------------


def test_the_url_comes_from_the_environment(fake: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILQUEUE_URL", "http://127.0.0.1:3999")
    fake.on("GET", f"/emails/{EMAIL_ID}", 200, view())

    assert run(fake, "status", EMAIL_ID).code == cli.EXIT_OK
    assert fake.calls[0].url.startswith("http://127.0.0.1:3999/")


@pytest.mark.parametrize(
    "argv", [["--url", "http://a", "--stack", "mq", "stats"], ["--url", "ftp://example.com", "stats"]]
)
def test_bad_destinations_are_usage_errors(fake: FakeApi, argv: list[str]) -> None:
    assert run(fake, *argv).code == cli.EXIT_USAGE
    assert fake.calls == []


def test_requests_to_a_deployed_api_are_signed_for_execute_api(fake: FakeApi) -> None:
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com"
    fake.on("GET", f"/emails/{EMAIL_ID}", 200, view())

    result = run(fake, "--url", url, "status", EMAIL_ID)

    assert result.code == cli.EXIT_OK, result.err
    headers = {name.lower(): value for name, value in fake.calls[0].headers.items()}
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert "/eu-west-1/execute-api/aws4_request" in headers["authorization"]
    assert "x-amz-date" in headers


def test_a_jwt_stack_gets_the_bearer_token_instead_of_a_signature(fake: FakeApi) -> None:
    fake.on("GET", f"/emails/{EMAIL_ID}", 200, view())

    url = "https://abc123.execute-api.eu-west-1.amazonaws.com"
    result = run(fake, "--url", url, "--token", "eyJ.x.y", "status", EMAIL_ID)

    assert result.code == cli.EXIT_OK
    headers = {name.lower(): value for name, value in fake.calls[0].headers.items()}
    assert headers["authorization"] == "Bearer eyJ.x.y"
    assert "x-amz-date" not in headers


def test_the_signature_covers_the_body() -> None:
    class Session:
        region_name = "us-east-1"

        def get_credentials(self) -> Credentials:
            return Credentials("AKIDEXAMPLE", "secret")

    signer = cli.SigV4Signer(session=Session())
    url = "https://abc123.execute-api.us-east-1.amazonaws.com/emails"
    one = signer.headers("POST", url, {"content-type": "application/json"}, b'{"a":1}')
    other = signer.headers("POST", url, {"content-type": "application/json"}, b'{"a":2}')

    assert "Credential=AKIDEXAMPLE/" in one["Authorization"]
    assert one["Authorization"] != other["Authorization"]


def test_the_region_is_read_from_an_execute_api_host() -> None:
    assert cli.region_of("https://abc.execute-api.ap-southeast-2.amazonaws.com/") == "ap-southeast-2"
    assert cli.region_of("https://mail.example.com/") is None


def test_stack_url_reads_the_api_url_output() -> None:
    client = boto3.session.Session(region_name="us-east-1").client("cloudformation")
    stubber = Stubber(client)
    created = datetime(2030, 1, 1, tzinfo=UTC)
    for outputs in (
        [{"OutputKey": "ApiUrl", "OutputValue": "https://abc.execute-api.us-east-1.amazonaws.com"}],
        [{"OutputKey": "Other", "OutputValue": "x"}],
    ):
        stubber.add_response(
            "describe_stacks",
            {
                "Stacks": [
                    {
                        "StackName": "mq",
                        "CreationTime": created,
                        "StackStatus": "CREATE_COMPLETE",
                        "Outputs": outputs,
                    }
                ]
            },
            {"StackName": "mq"},
        )

    class Session:
        def client(self, service: str) -> Any:
            assert service == "cloudformation"
            return client

    with stubber:
        assert cli.stack_url("mq", session=Session()) == "https://abc.execute-api.us-east-1.amazonaws.com"
        with pytest.raises(cli.Failure) as missing:
            cli.stack_url("mq", session=Session())
    assert missing.value.code == cli.EXIT_USAGE
    assert "no ApiUrl output" in missing.value.message


def test_stack_option_sends_to_the_stack_api(fake: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "stack_url", lambda name: f"https://{name}.execute-api.us-east-1.amazonaws.com")
    fake.on("GET", f"/emails/{EMAIL_ID}", 200, view())

    result = run(fake, "--stack", "mq", "status", EMAIL_ID)

    assert result.code == cli.EXIT_OK
    assert fake.calls[0].url == f"https://mq.execute-api.us-east-1.amazonaws.com/emails/{EMAIL_ID}"
