"""The local stack stopped and started again, as a user does with `make dev`: its data is still there.

A package of its own: each test here starts stacks of its own, never while the e2e package's stack runs
(a stack sets the process's AWS environment and loads the handlers afresh).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import Http, an_email, wait_for_status

pytestmark = pytest.mark.e2e


def stack_in(state_dir: Path) -> Callable[..., LocalStack]:
    def make(**overrides: Any) -> LocalStack:
        options: dict[str, Any] = {
            "api_port": 0,
            "emulator_port": 0,
            "outbox_dir": state_dir / "outbox",
            "requeue_seconds": 0.5,
            "poll_interval": 0.05,
            "ses_events": True,
            "state_dir": state_dir,
            "persist": True,
            **overrides,
        }
        return LocalStack(**options)

    return make


def test_emails_uploads_and_suppressions_survive_a_restart_and_clean_starts_empty(tmp_path: Path) -> None:
    make = stack_in(tmp_path / ".mailqueue")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()

    # Given a stack that delivered an email, holds one for tomorrow with an uploaded attachment, and
    # suppressed an address
    with make() as first, requests.Session() as session:
        http = Http(first.api_url, session)
        code, delivered = http.post("/emails", an_email())
        assert code == 202, delivered
        wait_for_status(http, delivered["id"], "delivered")
        code, ticket = http.post("/attachments", {"filename": "a.txt", "content_type": "text/plain", "size": 5})
        assert code == 201, ticket
        assert (
            session.post(ticket["upload_url"], data=ticket["fields"], files={"file": b"hello"}, timeout=30).status_code
            == 204
        )
        attachment = {"filename": "a.txt", "content_type": "text/plain", "s3_key": ticket["s3_key"]}
        code, later = http.post("/emails", an_email(send_at=tomorrow, attachments=[attachment]))
        assert code == 202, later
        code, bounced = http.post("/emails", an_email(to=["bounce@simulator.amazonses.com"]))
        assert code == 202, bounced
        wait_for_status(http, bounced["id"], "bounced")

    # When it is stopped and started again
    with make() as second, requests.Session() as session:
        http = Http(second.api_url, session)
        # Then every earlier email answers as it was, history and all
        again = wait_for_status(http, delivered["id"], "delivered", timeout=5)
        assert [entry["status"] for entry in again["history"]] == ["queued", "sending", "sent", "delivered"]
        assert wait_for_status(http, later["id"], "scheduled", timeout=5)
        # the suppression list is kept
        code, page = http.get("/suppressions")
        assert code == 200 and "bounce@simulator.amazonses.com" in [s["address"] for s in page["suppressions"]]
        # and the upload is still there for a new email to name
        code, answer = http.post("/emails", an_email(attachments=[attachment]))
        assert code == 202, answer
        wait_for_status(http, answer["id"], "delivered")

    # And `make dev CLEAN=1` starts from nothing
    with make(clean=True) as third, requests.Session() as session:
        http = Http(third.api_url, session)
        code, _ = http.get(f"/emails/{delivered['id']}")
        assert code == 404
        assert not list((tmp_path / ".mailqueue" / "outbox").glob("*.eml"))


def test_an_email_queued_when_the_stack_stopped_is_sent_after_it_starts(tmp_path: Path) -> None:
    make = stack_in(tmp_path / ".mailqueue")
    # Given a stack whose sender never runs (its queue is never polled): the email stays queued
    with make(poll_interval=3600) as first, requests.Session() as session:
        first._stop.set()  # the pollers wait out their interval on this event: they stop at once
        http = Http(first.api_url, session)
        code, answer = http.post("/emails", an_email())
        assert code == 202 and answer["status"] == "queued", answer

    # When the stack starts again, its message (lost with the emulator) is published again at once
    with make() as second, requests.Session() as session:
        wait_for_status(Http(second.api_url, session), answer["id"], "delivered")
