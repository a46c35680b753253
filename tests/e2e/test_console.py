"""The console in a real browser (Debian's Chromium, driven by Playwright) against the local stack.

Each test leaves a screenshot of the page it looked at in docs/console/, which docs/console.md shows.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError
from mailqueue import aws
from mailqueue_dev import cli, ses_simulator
from mailqueue_dev.console import Console, ConsoleServer
from mailqueue_dev.console.client import ConsoleClient
from mailqueue_dev.local import LocalStack
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import Http, an_email, wait_for, wait_for_status

# One browser and one console server for the module: under pytest-xdist its tests run on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("console")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
LIVE = ("queued", "sending", "retrying", "sent")


@pytest.fixture(scope="module")
def console(local: LocalStack) -> Iterator[ConsoleServer]:
    client = ConsoleClient(cli.Api(local.api_url))
    # No caching of the overview, and a quick refresh: each look reads the API afresh.
    factory = lambda port: Console(client, port, local.outbox_dir, overview_seconds=0, refresh_seconds=1)  # noqa: E731
    with ConsoleServer(factory, port=0) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, console: ConsoleServer) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, base_url=console.url)
    opened = context.new_page()
    yield opened
    context.close()


def shot(page: Page, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def fits(page: Page) -> bool:
    """Nothing runs off the side: the page needs no sideways scrolling (wide tables scroll in their own box)."""
    wider = page.evaluate(
        """() => [...document.querySelectorAll("body *")]
            .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
                           && !e.closest(".scroll"))
            .map((e) => e.tagName + "." + e.className).slice(0, 5)"""
    )
    assert not wider, f"wider than the page: {wider}"
    return bool(page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


def api_counts(http: Http) -> dict[str, int]:
    counts = {}
    for status in cli.STATUSES:
        count, cursor = 0, None
        while True:
            code, body = http.get("/emails", params={"status": status, "limit": 100, "cursor": cursor})
            assert code == 200, body
            count += len(body["emails"])
            cursor = body.get("cursor")
            if not cursor:
                break
        counts[status] = count
    return counts


def page_counts(page: Page) -> dict[str, int]:
    cells = page.locator("[data-status]")
    return {
        str(cells.nth(i).get_attribute("data-status")): int(cells.nth(i).inner_text()) for i in range(cells.count())
    }


def test_overview_counts_match_the_apis_and_refresh_on_their_own(page: Page, http: Http, lift: list[str]) -> None:
    # Given emails that end in different places: delivered, bounced, complained, scheduled for tomorrow
    bounce = f"bounce+overview-{uuid.uuid4().hex[:8]}@simulator.amazonses.com"
    complaint = f"complaint+overview-{uuid.uuid4().hex[:8]}@simulator.amazonses.com"
    lift += [bounce, complaint]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    emails = [an_email(), an_email(), an_email(to=[bounce]), an_email(to=[complaint]), an_email(send_at=tomorrow)]
    ids = []
    for email in emails:
        code, answer = http.post("/emails", email)
        assert code == 202, answer
        ids.append(answer["id"])

    # And a queue at rest: no email on its way (these and earlier tests' emails have settled), and SES's
    # last events about these emails handled (a complaint moves an email on from delivered)
    wait_for(lambda: all(api_counts(http)[status] == 0 for status in LIVE), "the queue to settle", timeout=60)
    wait_for_status(http, ids[2], "bounced")
    wait_for_status(http, ids[3], "complained")

    # When the overview is opened, between two readings of the API that agree
    def agreed() -> tuple[dict[str, int], dict[str, int]] | None:
        before = api_counts(http)
        page.goto("/")
        shown = page_counts(page)
        return (before, shown) if api_counts(http) == before else None

    expected, shown = wait_for(agreed, "two equal readings of the API around the page")

    # Then it shows the API's count of every status
    assert shown == expected
    assert all(expected[status] >= 1 for status in ("delivered", "bounced", "complained", "scheduled"))
    # And what only GET /stats gives, as it gives it
    code, stats = http.get("/stats")
    assert code == 200, stats
    expect(page.locator('[data-figure="dead-letters"]')).to_have_text(str(stats["dead_letters"]))
    expect(page.locator('[data-figure="send-rate-limit"]')).to_have_text(f"{stats['send_rate']:g} emails/s")

    # And a new email shows up without reloading the page, and in the send rate
    code, answer = http.post("/emails", an_email())
    assert code == 202, answer
    wait_for_status(http, answer["id"], "delivered")
    delivered_at = page.evaluate("Date.now()")

    def refreshed_to_the_apis_counts() -> bool:
        refreshed = int(page.locator("#overview").get_attribute("data-refreshed") or 0)
        return refreshed > delivered_at and page_counts(page) == api_counts(http)

    # Read after the new email was delivered, the API's counts include it; so must the refreshed page's
    # (compared with the API again, not with the count before: an earlier email may have moved on since).
    wait_for(refreshed_to_the_apis_counts, "the overview to refresh to the API's counts", timeout=30)
    expect(page.locator('[data-figure="send-rate"]')).not_to_contain_text("(0 in 60 s)")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # the same page, refreshed
    shot(page, "overview")

    # And at a phone's width nothing runs off the side
    page.set_viewport_size(PHONE)
    shot(page, "overview-phone")
    assert fits(page)


def test_a_bounced_emails_timeline_shows_the_bounce_diagnostic(page: Page, http: Http, console: ConsoleServer) -> None:
    address = f"bounce+console-{uuid.uuid4().hex[:8]}@simulator.amazonses.com"
    code, answer = http.post("/emails", an_email(to=[address], subject="Your order has shipped"))
    assert code == 202, answer
    wait_for_status(http, answer["id"], "bounced")

    # Found by its id from the search box, with the keyboard
    page.goto("/")
    page.get_by_label("Find an email").fill(answer["id"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{console.url}emails/{answer['id']}")

    bounced = page.locator("ol.timeline > li.step-bounced")
    expect(bounced).to_contain_text("bounce Permanent/General")
    expect(bounced.locator(".bounce")).to_contain_text("Permanent/General")
    expect(bounced.locator(".diagnostic")).to_have_text("smtp; 550 5.1.1 user unknown")
    expect(page.locator("ol.timeline > li")).to_have_count(4)  # queued, sending, sent, bounced
    expect(page.locator("#message ~ p").first).to_contain_text("from the local outbox")
    shot(page, "email-bounced")

    page.set_viewport_size(PHONE)
    shot(page, "email-bounced-phone")
    assert fits(page)

    # The suppressions page names the address, why, and the email that caused it; lifting it asks first
    page.set_viewport_size(DESKTOP)
    page.get_by_role("link", name="Suppressions").click()
    row = page.locator("tr", has_text=address)
    expect(row).to_contain_text("permanent bounce (General)")
    expect(row.get_by_role("link", name=answer["id"])).to_be_visible()
    shot(page, "suppressions")
    row.get_by_role("link", name=f"Lift the suppression of {address}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Lift this suppression?")
    assert address in suppressed(http)
    shot(page, "lift-confirm")
    page.get_by_role("button", name="Yes, lift it").click()
    expect(page.get_by_role("status")).to_contain_text("The API answered 204")
    assert address not in suppressed(http)


def suppressed(http: Http) -> set[str]:
    code, body = http.get("/suppressions", params={"limit": 100})
    assert code == 200, body
    return {entry["address"] for entry in body["suppressions"]}


@pytest.fixture
def rejected_by_ses() -> Iterator[str]:
    """A subject SES rejects (MessageRejected, a permanent error), as SES's own answer through botocore's hooks."""
    subject = f"Rejected {uuid.uuid4().hex[:8]}"
    rejected = threading.Event()

    def reject(params: dict[str, Any], **_: Any) -> None:
        raw = params.get("Content", {}).get("Raw", {}).get("Data", b"")
        if subject.encode() in (raw if isinstance(raw, bytes) else str(raw).encode()) and not rejected.is_set():
            rejected.set()
            raise ClientError({"Error": {"Code": "MessageRejected", "Message": "Illegal address"}}, "SendEmail")

    events = aws.client("sesv2").meta.events
    events.register("before-parameter-build.sesv2.SendEmail", reject, unique_id="e2e-console-reject")
    try:
        yield subject
    finally:
        events.unregister("before-parameter-build.sesv2.SendEmail", unique_id="e2e-console-reject")
    assert rejected.is_set()


def test_retry_from_the_page_moves_a_failed_email_to_queued(page: Page, http: Http, rejected_by_ses: str) -> None:
    # Given an email SES rejected once: failed, with SES's error and its class on the page
    code, answer = http.post("/emails", an_email(subject=rejected_by_ses))
    assert code == 202, answer
    email_id = answer["id"]
    wait_for_status(http, email_id, "failed")
    page.goto(f"/emails/{email_id}")
    expect(page.locator(".status-line")).to_have_text("failed")
    expect(page.locator("ol.timeline > li.step-failed")).to_contain_text("failed: MessageRejected")
    expect(page.locator("ol.timeline > li.step-failed .class")).to_have_text("permanent")
    shot(page, "email-failed")

    # When it is retried from the page, after the confirmation
    page.get_by_role("link", name="Retry…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Retry this email?")
    assert http.get(f"/emails/{email_id}")[1]["status"] == "failed"  # asking is not acting
    page.get_by_role("button", name="Yes, retry this email").click()

    # Then the API's answer says queued, and the email goes out
    expect(page.get_by_role("status")).to_contain_text("The API answered 202: the email is now queued")
    shot(page, "retry-answer")
    delivered = wait_for_status(http, email_id, "delivered")
    assert ("queued", "retried by request") in [(h["status"], h["reason"]) for h in delivered["history"]]


def test_cancel_asks_for_confirmation(page: Page, http: Http) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    code, answer = http.post("/emails", an_email(send_at=tomorrow, subject="Reminder: your trial ends tomorrow"))
    assert code == 202, answer
    email_id = answer["id"]
    assert answer["status"] == "scheduled"

    page.goto(f"/emails/{email_id}")
    page.get_by_role("link", name="Cancel…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Cancel this email?")
    shot(page, "cancel-confirm")

    # Going back leaves it as it was
    page.get_by_role("link", name="No, go back").click()
    expect(page.locator(".status-line")).to_have_text("scheduled")
    assert http.get(f"/emails/{email_id}")[1]["status"] == "scheduled"

    # Confirming, from the keyboard, cancels it
    page.get_by_role("link", name="Cancel…").click()
    page.get_by_role("button", name="Yes, cancel this email").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("The API answered 200: the email is now cancelled")
    assert http.get(f"/emails/{email_id}")[1]["status"] == "cancelled"

    # A second cancel (as after a lost answer) is answered with the email, cancelled
    page.goto(f"/emails/{email_id}/cancel")
    page.get_by_role("button", name="Yes, cancel this email").click()
    expect(page.get_by_role("status")).to_contain_text("The API answered 200: the email is now cancelled")

    # An email SES has taken cannot be called back: the API refuses, and the page says why
    code, answer = http.post("/emails", an_email(subject="Your receipt, already on its way"))
    assert code == 202, answer
    wait_for_status(http, answer["id"], "delivered")
    page.goto(f"/emails/{answer['id']}/cancel")
    page.get_by_role("button", name="Yes, cancel this email").click()
    expect(page.get_by_role("alert")).to_contain_text("409")
    expect(page.get_by_role("alert")).to_contain_text("delivered")
    shot(page, "cancel-refused")


def test_lists_page_newest_first_and_search_by_recipient(page: Page, http: Http) -> None:
    recipient = f"dana-{uuid.uuid4().hex[:6]}@example.org"
    ids = []
    for n in range(3):
        code, answer = http.post("/emails", an_email(to=[recipient], subject=f"Invoice {n + 1}"))
        assert code == 202, answer
        ids.append(answer["id"])
    for email_id in ids:
        wait_for_status(http, email_id, "delivered")

    page.goto("/emails?status=delivered&limit=20")
    expect(page.get_by_role("heading", level=1)).to_have_text("Delivered emails")
    first_ids = page.locator("td a.id").all_inner_texts()
    assert first_ids == sorted(first_ids, reverse=True)
    assert first_ids[:3] == ids[::-1]
    shot(page, "list")
    if page.get_by_role("link", name="Older emails").count():
        page.get_by_role("link", name="Older emails").click()
        older = page.locator("td a.id").all_inner_texts()
        assert older and max(older) < min(first_ids)

    page.get_by_label("Find an email").fill(recipient)
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("status")).to_contain_text(f"3 emails to {recipient}")
    assert sorted(page.locator("td a.id").all_inner_texts()) == sorted(ids)
    shot(page, "search")


@pytest.fixture
def held_email(http: Http) -> Iterator[str]:
    """An email SES refuses because its recipient is not verified (as SES's sandbox does): held, not failed.
    It is cancelled after the test, so that the queue settles for the tests after it."""
    address = f"reader-{uuid.uuid4().hex[:6]}@{ses_simulator.UNVERIFIED_DOMAIN}"
    code, answer = http.post("/emails", an_email(to=[address], subject="Held until the account is fixed"))
    assert code == 202, answer
    yield answer["id"]
    http.delete(f"/emails/{answer['id']}")


@pytest.fixture
def dead_letter(local: LocalStack) -> Iterator[None]:
    """A message in the send queue's dead-letter queue (the emulator's), taken out after the test."""
    assert local.emulator is not None and local.stack is not None
    sqs, queue = local.emulator.client("sqs"), local.stack.names["SendDeadLetterQueue"]
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"id": "01JD4X6Q2R5T8W9Y0Z1A2B3C4D"}))
    yield
    sqs.purge_queue(QueueUrl=queue)


def test_a_held_email_and_the_dead_letters_are_shown_as_the_api_counts_them(
    page: Page, http: Http, console: ConsoleServer, held_email: str, dead_letter: None
) -> None:
    # Given an email held because SES has not verified its recipient, its attempt not counted
    def held() -> dict[str, Any] | None:
        code, email = http.get(f"/emails/{held_email}")
        assert code == 200, email
        return email if email["status"] == "retrying" and email["history"][-1]["reason"].startswith("held:") else None

    email = wait_for(held, f"{held_email} to be held")
    assert (email["attempts"], email["last_error"]["code"]) == (0, "MessageRejected")

    # When the overview is opened, between two answers of GET /stats that agree
    def figures() -> dict[str, Any]:
        code, stats = http.get("/stats")
        assert code == 200, stats
        return {key: stats[key] for key in ("send_rate", "dead_letters", "dead_letter_queues", "held")}

    def agreed() -> dict[str, Any] | None:
        before = figures()
        page.goto("/")
        return before if figures() == before else None

    stats = wait_for(agreed, "two equal answers of GET /stats around the page")

    # Then the overview shows the API's figures: the held email among the held ones, the dead letter counted
    assert held_email in [held["id"] for held in stats["held"]["emails"]]
    assert stats["dead_letters"] >= 1
    expect(page.locator('[data-figure="held"]')).to_have_text(str(stats["held"]["count"]))
    expect(page.locator('[data-figure="dead-letters"]')).to_have_text(str(stats["dead_letters"]))
    for queue in stats["dead_letter_queues"]:
        expect(page.locator(f'[data-queue="{queue["queue"]}"]')).to_have_text(f"{queue['queue']}: {queue['messages']}")
    expect(page.locator('[data-figure="send-rate-limit"]')).to_have_text(f"{stats['send_rate']:g} emails/s")
    shot(page, "overview-held")

    # And the held email links to its page, which says why it waits
    page.locator("ul.held").get_by_role("link", name=held_email).click()
    expect(page).to_have_url(f"{console.url}emails/{held_email}")
    expect(page.locator('[data-held="true"]')).to_contain_text("MessageRejected")
    shot(page, "email-held")

    # And the list of retrying emails marks it held
    page.goto("/emails?status=retrying&limit=100")
    expect(page.locator("tr", has_text=held_email).locator(".held")).to_have_text("held")


def test_a_page_asked_for_by_another_host_name_is_refused(console: ConsoleServer) -> None:
    answer = requests.get(console.url, headers={"Host": f"rebound.example:{console.port}"}, timeout=10)
    assert answer.status_code == 421
