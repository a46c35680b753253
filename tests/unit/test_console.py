"""The console's pages and guards against a recorded API: what it asks the API, what it shows, what it refuses."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit
from wsgiref.util import setup_testing_defaults

import pytest
import requests
from mailqueue_dev import cli
from mailqueue_dev.console import ConsoleServer
from mailqueue_dev.console.app import Console, error_class, timeline
from mailqueue_dev.console.client import ConsoleClient
from mailqueue_dev.console.overview import compute

PORT = 3700
EMAIL_ID = "01J9Z8Y7X6W5V4T3S2R1Q0P9N8"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def an_email(email_id: str = EMAIL_ID, status: str = "delivered", **overrides: Any) -> dict[str, Any]:
    email: dict[str, Any] = {
        "id": email_id,
        "status": status,
        "priority": "normal",
        "attempts": 1,
        "created_at": iso(NOW - timedelta(minutes=5)),
        "updated_at": iso(NOW - timedelta(minutes=4)),
        "to": "alice@example.org",
        "subject": "Your receipt",
        "history": [{"status": "queued", "at": iso(NOW - timedelta(minutes=5)), "reason": "accepted"}],
    }
    email.update(overrides)
    return email


@dataclass
class FakeApi:
    """The API as a transport: emails by status, the suppression list, and every call recorded."""

    emails: list[dict[str, Any]] = field(default_factory=list)
    suppressions: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
        parts = urlsplit(url)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.calls.append((method, parts.path))
        status, answer = self.answer(method, parts.path, query)
        return status, json.dumps(answer).encode() if answer is not None else b""

    def answer(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if (method, path) in self.answers:
            return self.answers[(method, path)]
        if (method, path) == ("GET", "/emails"):
            listed = sorted((e for e in self.emails if e["status"] == query["status"]), key=lambda e: e["id"])[::-1]
            start = int(query.get("cursor") or 0)
            limit = int(query.get("limit", 20))
            # As the API lists them: from an index that holds neither the history nor the last error.
            page = [
                {k: v for k, v in e.items() if k not in {"history", "last_error", "bounce", "metadata"}}
                for e in listed[start : start + limit]
            ]
            more = start + limit < len(listed)
            return 200, {"emails": page, **({"cursor": str(start + limit)} if more else {})}
        if method == "GET" and path.startswith("/emails/"):
            for email in self.emails:
                if email["id"] == path.rsplit("/", 1)[1]:
                    return 200, email
        if (method, path) == ("GET", "/suppressions"):
            return 200, {"suppressions": self.suppressions, "cursor": None}
        return 404, {"error": {"code": "not_found", "message": f"no route {method} {path}", "details": []}}


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def console(api: FakeApi, tmp_path: Path) -> Console:
    client = ConsoleClient(cli.Api("http://127.0.0.1:3000", transport=api))
    return Console(client, PORT, outbox=tmp_path, overview_seconds=0)


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    text: str


def request(
    console: Console,
    method: str,
    path: str,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Page:
    path, _, query = path.partition("?")
    body = urlencode(form or {}).encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote(path),
        "QUERY_STRING": query,
        "HTTP_HOST": f"127.0.0.1:{PORT}",
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "wsgi.input": io.BytesIO(body),
    }
    environ.update({f"HTTP_{name.upper().replace('-', '_')}": value for name, value in (headers or {}).items()})
    setup_testing_defaults(environ)
    answered: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> Callable[[bytes], None]:
        answered["status"] = int(status.split(maxsplit=1)[0])
        answered["headers"] = dict(response_headers)
        return lambda _: None

    chunks = console(environ, start_response)
    return Page(answered["status"], answered["headers"], b"".join(chunks).decode())


# --- DNS rebinding and cross-site requests ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example:3700", "127.0.0.1:3701", "attacker.example", ""])
def test_a_request_for_another_host_is_refused_before_the_api_is_called(
    console: Console, api: FakeApi, host: str
) -> None:
    api.emails = [an_email()]
    page = request(console, "GET", f"/emails/{EMAIL_ID}", headers={"Host": host})
    assert page.status == 421
    assert "Your receipt" not in page.text
    assert api.calls == []


@pytest.mark.parametrize("host", ["127.0.0.1:3700", "localhost:3700", "LOCALHOST:3700"])
def test_the_console_answers_for_its_own_host(console: Console, api: FakeApi, host: str) -> None:
    api.emails = [an_email()]
    assert request(console, "GET", f"/emails/{EMAIL_ID}", headers={"Host": host}).status == 200


def test_an_action_without_the_console_token_is_refused(console: Console, api: FakeApi) -> None:
    api.emails = [an_email(status="queued")]
    for form in ({}, {"csrf_token": "guessed"}):
        page = request(console, "POST", f"/emails/{EMAIL_ID}/cancel", form=form)
        assert page.status == 403
    assert ("DELETE", f"/emails/{EMAIL_ID}") not in api.calls


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}],
)
def test_an_action_from_another_site_is_refused_even_with_the_token(
    console: Console, api: FakeApi, headers: dict[str, str]
) -> None:
    page = request(console, "POST", f"/emails/{EMAIL_ID}/cancel", form={"csrf_token": console.token}, headers=headers)
    assert page.status == 403
    assert api.calls == []


def test_an_action_with_the_token_from_the_console_calls_the_api(console: Console, api: FakeApi) -> None:
    api.answers[("DELETE", f"/emails/{EMAIL_ID}")] = (200, an_email(status="cancelled"))
    page = request(
        console,
        "POST",
        f"/emails/{EMAIL_ID}/cancel",
        form={"csrf_token": console.token},
        headers={"Origin": f"http://127.0.0.1:{PORT}", "Sec-Fetch-Site": "same-origin"},
    )
    assert page.status == 200
    assert api.calls == [("DELETE", f"/emails/{EMAIL_ID}")]
    assert "The API answered <strong>200</strong>" in page.text
    assert "cancelled" in page.text


def test_a_refused_action_shows_the_apis_answer(console: Console, api: FakeApi) -> None:
    why = f"the email {EMAIL_ID} is delivered: it cannot be cancelled"
    api.answers[("DELETE", f"/emails/{EMAIL_ID}")] = (
        409,
        {"error": {"code": "status_conflict", "message": why, "details": []}},
    )
    page = request(console, "POST", f"/emails/{EMAIL_ID}/cancel", form={"csrf_token": console.token})
    assert "refused (409)" in page.text
    assert "status_conflict" in page.text
    assert why in page.text


def test_the_confirmation_page_acts_by_post_with_the_token(console: Console, api: FakeApi) -> None:
    api.emails = [an_email(status="queued")]
    page = request(console, "GET", f"/emails/{EMAIL_ID}/cancel")
    assert page.status == 200
    assert f'<form method="post" action="/emails/{EMAIL_ID}/cancel"' in page.text
    assert f'name="csrf_token" value="{console.token}"' in page.text
    assert ("DELETE", f"/emails/{EMAIL_ID}") not in api.calls  # asking is not acting


def test_lifting_a_suppression_quotes_the_address_whole(console: Console, api: FakeApi) -> None:
    api.answers[("DELETE", "/suppressions/bounce%2Ba%2Fb@simulator.amazonses.com")] = (204, None)
    page = request(
        console,
        "POST",
        "/suppressions/lift",
        form={"csrf_token": console.token, "address": "bounce+a/b@simulator.amazonses.com"},
    )
    assert ("DELETE", "/suppressions/bounce%2Ba%2Fb@simulator.amazonses.com") in api.calls
    assert "The API answered <strong>204</strong>" in page.text


def test_pages_forbid_framing_and_foreign_scripts(console: Console) -> None:
    page = request(console, "GET", "/suppressions")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["X-Frame-Options"] == "DENY"


def test_what_the_api_returns_is_escaped(console: Console, api: FakeApi) -> None:
    api.emails = [an_email(subject="<script>alert(1)</script>", metadata={"note": "<img src=x onerror=alert(1)>"})]
    page = request(console, "GET", f"/emails/{EMAIL_ID}")
    assert "<script>alert(1)" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<img src=x" not in page.text


# --- pages ------------------------------------------------------------------------------------------------


def test_an_unknown_email_is_a_404_with_the_apis_reason(console: Console) -> None:
    page = request(console, "GET", f"/emails/{EMAIL_ID}")
    assert page.status == 404
    assert "not_found" in page.text


def test_an_email_id_in_a_path_cannot_reach_another_route(console: Console, api: FakeApi) -> None:
    # The server decodes the path: ..%2F is a slash (no such page), %3F a question mark (quoted again for the API).
    assert request(console, "GET", "/emails/..%2Fsuppressions").status == 404
    assert api.calls == []
    request(console, "GET", "/emails/..%3Fstatus%3Dfailed")
    assert api.calls == [("GET", "/emails/..%3Fstatus%3Dfailed")]


def test_a_wrong_method_is_405(console: Console) -> None:
    page = request(console, "POST", "/suppressions")
    assert page.status == 405
    assert page.headers["Allow"] == "GET"


def test_the_list_pages_on_with_the_apis_cursor(console: Console, api: FakeApi) -> None:
    api.emails = [an_email(f"01J9Z8Y7X6W5V4T3S2R1Q0P{i:03d}", status="failed") for i in range(25)]
    first = request(console, "GET", "/emails?status=failed")
    assert first.text.count('class="id"') == 20
    assert "01J9Z8Y7X6W5V4T3S2R1Q0P024" in first.text  # newest first
    assert 'href="/emails?status=failed&amp;limit=20&amp;cursor=20"' in first.text
    second = request(console, "GET", "/emails?status=failed&limit=20&cursor=20")
    assert second.text.count('class="id"') == 5
    assert request(console, "GET", "/emails?status=done").status == 400


def test_search_by_id_opens_the_email_and_by_address_matches_the_first_recipient(
    console: Console, api: FakeApi
) -> None:
    api.emails = [
        an_email("01J9Z8Y7X6W5V4T3S2R1Q0P001", to="bob@example.org"),
        an_email("01J9Z8Y7X6W5V4T3S2R1Q0P002", status="failed", to="carol@example.org"),
    ]
    page = request(console, "GET", "/search?q=01j9z8y7x6w5v4t3s2r1q0p001")
    assert (page.status, page.headers["Location"]) == (303, "/emails/01J9Z8Y7X6W5V4T3S2R1Q0P001")
    found = request(console, "GET", "/search?q=carol%40")
    assert "01J9Z8Y7X6W5V4T3S2R1Q0P002" in found.text
    assert "01J9Z8Y7X6W5V4T3S2R1Q0P001" not in found.text


def test_the_email_page_shows_the_outbox_copy(console: Console, api: FakeApi, tmp_path: Path) -> None:
    api.emails = [an_email()]
    (tmp_path / f"{EMAIL_ID}.eml").write_bytes(
        b"From: app@example.com\r\nTo: alice@example.org, bob@example.org\r\nSubject: Your receipt for order 1234\r\n"
        b"Content-Type: text/plain\r\n\r\nThanks for your order.\r\n"
    )
    page = request(console, "GET", f"/emails/{EMAIL_ID}")
    assert "To: alice@example.org, bob@example.org" in page.text
    assert "Thanks for your order." in page.text
    eml = request(console, "GET", f"/emails/{EMAIL_ID}.eml")
    assert eml.headers["Content-Type"] == "message/rfc822"


def test_timeline_names_error_classes_and_carries_the_bounce() -> None:
    bounce = {"type": "Permanent/General", "recipients": [{"address": "a@x.org", "diagnostic": "smtp; 550 5.1.1"}]}
    email = an_email(
        status="bounced",
        bounce=bounce,
        history=[
            {"status": "queued", "at": "t0", "reason": "accepted"},
            {"status": "sending", "at": "t1", "reason": "claimed by the sender"},
            {"status": "retrying", "at": "t2", "reason": "TooManyRequestsException: throttled by SES, next in 1s"},
            {"status": "sending", "at": "t3", "reason": "claimed by the sender"},
            {"status": "sent", "at": "t4", "reason": "accepted by SES"},
            {"status": "bounced", "at": "t5", "reason": "bounce Permanent/General"},
        ],
    )
    steps = timeline(email)
    assert [step.kind for step in steps] == ["request", "attempt", "SES answer", "attempt", "SES answer", "SES event"]
    assert steps[2].error_class == "throttled"
    assert steps[-1].bounce == bounce
    assert all(step.bounce is None for step in steps[:-1])
    assert error_class("failed: MessageRejected") == "permanent"
    assert error_class("held: MailFromDomainNotVerifiedException is an account error") == "account"


# --- overview ---------------------------------------------------------------------------------------------


def test_overview_counts_each_status_and_derives_the_figures(api: FakeApi) -> None:
    just_now = iso(NOW - timedelta(seconds=20))
    sent = {"status": "sent", "at": iso(NOW - timedelta(seconds=30)), "reason": "accepted by SES"}
    long_ago = {"status": "sent", "at": iso(NOW - timedelta(minutes=3)), "reason": "accepted by SES"}
    api.emails = [
        # Sent in the last minute (one of them bounced since)
        *(
            an_email(f"01J9Z8Y7X6W5V4T3S2R1Q0Q{i:03d}", "delivered", updated_at=just_now, history=[sent])
            for i in range(2)
        ),
        an_email("01J9Z8Y7X6W5V4T3S2R1Q0Q003", "bounced", updated_at=just_now, history=[sent]),
        # Sent earlier, though its delivery came in the last minute
        an_email("01J9Z8Y7X6W5V4T3S2R1Q0Q004", "delivered", updated_at=just_now, history=[long_ago]),
        an_email("01J9Z8Y7X6W5V4T3S2R1Q0R001", "delivered", created_at=iso(NOW - timedelta(hours=3))),
        an_email("01J9Z8Y7X6W5V4T3S2R1Q0R002", "failed", created_at=iso(NOW - timedelta(days=2))),
        an_email("01J9Z8Y7X6W5V4T3S2R1Q0R004", "retrying", last_error={"code": "ServiceUnavailable", "message": "x"}),
    ]
    overview = compute(ConsoleClient(cli.Api("http://127.0.0.1:3000", transport=api)), now=NOW)
    counts = {count.status: count.count for count in overview.counts}
    assert counts == {**dict.fromkeys(cli.STATUSES, 0), "delivered": 4, "bounced": 1, "failed": 1, "retrying": 1}
    assert (overview.accepted_last_hour, overview.accepted_last_day) == (5, 6)
    assert (overview.sent_last_minute, overview.sent_capped) == (3, False)
    # Only the emails that could have been sent in the last minute are read one by one
    reads = sorted(path.rsplit("/", 1)[1] for method, path in api.calls if path.startswith("/emails/"))
    assert reads == [f"01J9Z8Y7X6W5V4T3S2R1Q0Q00{i}" for i in (0, 1, 3, 4)]
    # An API without GET /stats (a stack deployed before it): what only it gives is missing, and says why
    assert ("GET", "/stats") in api.calls
    assert overview.stats.held is None and overview.stats.send_rate_limit is None
    assert overview.stats.dead_letters is None
    assert "GET /stats" in str(overview.stats.missing)


HELD_ID = "01J9Z8Y7X6W5V4T3S2R1Q0R003"
HELD = {
    "status": "retrying",
    "at": iso(NOW - timedelta(minutes=1)),
    "reason": "held: MessageRejected is an account or configuration error; attempt not counted",
}
STATS = {
    "at": iso(NOW),
    "send_rate": 14.0,
    "dead_letters": 3,
    "dead_letter_queues": [
        {"queue": "send", "messages": 2},
        {"queue": "high_priority", "messages": 0},
        {"queue": "events", "messages": 1},
    ],
    "held": {
        "count": 1,
        "read": 2,
        "capped": False,
        "by_code": {"MessageRejected": 1},
        "emails": [{"id": HELD_ID, "to": "ops@example.org", "code": "MessageRejected"}],
    },
}


def test_overview_shows_send_rate_dead_letters_and_held_emails_from_the_api(console: Console, api: FakeApi) -> None:
    sent = {"status": "sent", "at": iso(datetime.now(UTC) - timedelta(seconds=10)), "reason": "accepted by SES"}
    api.emails = [
        *(
            an_email(f"01J9Z8Y7X6W5V4T3S2R1Q0Q{i:03d}", "delivered", updated_at=sent["at"], history=[sent])
            for i in range(42)
        ),
        an_email(HELD_ID, "retrying", to="ops@example.org", history=[HELD]),
    ]
    api.answers[("GET", "/stats")] = (200, STATS)

    page = request(console, "GET", "/")

    assert page.status == 200
    assert 'data-figure="send-rate-limit">14 emails/s' in page.text
    # 42 emails in the last minute: 0.7 a second, 5% of 14
    assert 'data-figure="send-rate">0.70 emails/s' in page.text
    assert 'data-figure="send-rate-share">5.0%' in page.text
    assert 'data-figure="dead-letters">3<' in page.text
    assert '<li data-queue="send"><code>send</code>: 2</li>' in page.text
    assert 'data-figure="held">1<' in page.text
    assert f'<a class="id" href="/emails/{HELD_ID}">{HELD_ID}</a> ops@example.org' in page.text
    assert "unavailable" not in page.text


def test_the_email_page_lists_every_recipient_the_api_gives(console: Console, api: FakeApi) -> None:
    recipients = {"to": ["Alice <alice@example.org>", "bob@example.org"], "cc": ["carol@example.org"], "bcc": []}
    api.emails = [an_email(recipients=recipients, summary=False)]

    page = request(console, "GET", f"/emails/{EMAIL_ID}")

    assert "To: Alice &lt;alice@example.org&gt;, bob@example.org<br>" in page.text
    assert "Cc: carol@example.org<br>" in page.text
    assert "Bcc:" not in page.text


def test_the_email_page_shows_the_tags_the_api_gives(console: Console, api: FakeApi) -> None:
    api.emails = [an_email(tags=[{"name": "campaign", "value": "welcome"}], summary=False)]

    page = request(console, "GET", f"/emails/{EMAIL_ID}")
    api.emails = [an_email(tags=None, summary=False)]
    untagged = request(console, "GET", f"/emails/{EMAIL_ID}")

    assert "<code>campaign=welcome</code>" in page.text
    assert "<dt>Tags</dt><dd>none</dd>" in untagged.text


def test_a_held_email_is_marked_in_the_list_and_on_its_page(console: Console, api: FakeApi) -> None:
    other = an_email("01J9Z8Y7X6W5V4T3S2R1Q0R004", "retrying", last_error={"code": "ServiceUnavailable"})
    api.emails = [an_email(HELD_ID, "retrying", history=[HELD], last_error={"code": "MessageRejected"}), other]
    api.answers[("GET", "/stats")] = (200, STATS)

    listed = request(console, "GET", "/emails?status=retrying")
    rows = {row.split('href="/emails/')[1][:26]: row for row in listed.text.split("<tr>")[2:]}
    assert 'class="class class-account held">held<' in rows[HELD_ID]
    assert "held" not in rows[other["id"]]

    held = request(console, "GET", f"/emails/{HELD_ID}")
    assert 'data-held="true"' in held.text
    assert "<code>MessageRejected</code>" in held.text
    # Its last error is classed as the account's, though MessageRejected alone would be permanent
    assert '<code>MessageRejected</code> <span class="class class-account">account</span>' in held.text
    assert 'data-held="true"' not in request(console, "GET", f"/emails/{other['id']}").text


def test_overview_stops_at_the_cap_and_says_so(api: FakeApi) -> None:
    api.emails = [an_email(f"01J9Z8Y7X6W5V4T3S2R1Q0{i:04d}", "failed") for i in range(250)]
    overview = compute(ConsoleClient(cli.Api("http://127.0.0.1:3000", transport=api)), cap=150, now=NOW)
    failed = next(count for count in overview.counts if count.status == "failed")
    assert (failed.count, failed.capped, failed.shown) == (200, True, "200+")
    assert overview.capped


def test_overview_page_marks_what_the_api_does_not_offer(console: Console, api: FakeApi) -> None:
    page = request(console, "GET", "/")
    assert page.status == 200
    assert 'data-figure="send-rate-limit" class="unavailable"' in page.text
    assert 'data-figure="dead-letters" class="unavailable"' in page.text
    assert 'data-figure="held" class="unavailable"' in page.text
    assert "the API has no GET /stats" in page.text
    assert request(console, "GET", "/fragments/overview").text.count("data-status=") == len(cli.STATUSES)


# --- the command ------------------------------------------------------------------------------------------


def test_the_cli_runs_the_console_with_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILQUEUE_TOKEN", raising=False)
    args = cli.parser().parse_args(["console", "--port", "3799", "--jwt", "a.b.c", "--url", "https://api.example"])
    assert (args.port, args.token, args.url) == (3799, "a.b.c", "https://api.example")
    api = cli.api_for(args)
    assert api._token == "a.b.c"
    assert args.run.__module__ == "mailqueue_dev.console"
    assert cli.main(["console", "--port", "70000"], err=io.StringIO()) == cli.EXIT_USAGE


def test_the_server_listens_on_loopback_only(api: FakeApi) -> None:
    client = ConsoleClient(cli.Api("http://127.0.0.1:3000", transport=api))
    with ConsoleServer(lambda port: Console(client, port), port=0) as server:
        assert server._server.server_address[0] == "127.0.0.1"
        answer = requests.get(f"{server.url}static/console.css", timeout=10)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/css")


def test_a_list_of_short_pages_that_go_on_is_read_up_to_a_bound(api: FakeApi) -> None:
    # A status the API lists by scanning can answer empty pages that still carry a cursor (few such emails
    # among many): the console stops after a bounded number of requests and says there may be more.
    api.answers[("GET", "/emails")] = (200, {"emails": [], "cursor": "more"})
    client = ConsoleClient(cli.Api("http://127.0.0.1:3000", transport=api))

    found, more = client.all_emails("sending", cap=300)

    assert (found, more) == ([], True)
    assert api.calls.count(("GET", "/emails")) == 6
