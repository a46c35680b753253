"""Failed emails on the local stack: the addresses SES refuses, and `mailqueue retry` on what they leave.

Any address at reject.mailqueue.example makes SES reject the send (permanent); any address at
unavailable.mailqueue.example makes SES answer 503 every time (transient, until the attempts run out).
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from mailqueue_dev import cli, ses_simulator
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import Http, an_email, wait_for, wait_for_status

pytestmark = pytest.mark.e2e


def mailqueue(local: LocalStack, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--url", local.api_url, *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("domain", "error_code", "attempts"),
    [(ses_simulator.REJECT_DOMAIN, "MessageRejected", 1), (ses_simulator.UNAVAILABLE_DOMAIN, "ServiceUnavailable", 3)],
)
def test_an_email_ses_refuses_ends_failed_and_can_be_retried(
    local: LocalStack, http: Http, domain: str, error_code: str, attempts: int
) -> None:
    # Given an email to an address SES refuses
    code, answer = http.post("/emails", an_email(to=[f"reader-{uuid.uuid4().hex[:6]}@{domain}"]))
    assert code == 202, answer
    email_id = answer["id"]

    # Then it ends failed, with SES's error, after one attempt (permanent) or all three (transient)
    failed = wait_for_status(http, email_id, "failed", timeout=60)
    assert failed["last_error"]["code"] == error_code
    assert failed["attempts"] == attempts
    assert ("retrying" in [entry["status"] for entry in failed["history"]]) is (attempts > 1)

    # When the CLI retries it
    code, out, err = mailqueue(local, "--json", "retry", email_id)
    assert code == cli.EXIT_OK, err
    retried = json.loads(out)
    assert (retried["status"], retried["attempts"]) == ("queued", 0)
    assert retried["history"][-1]["reason"] == "retried by request"

    # Then it is sent again, and fails again
    def failed_again() -> dict[str, Any] | None:
        code, email = http.get(f"/emails/{email_id}")
        assert code == 200, email
        done = email["status"] == "failed" and email["updated_at"] > retried["updated_at"]
        return email if done else None

    again = wait_for(failed_again, f"{email_id} to fail a second time", timeout=60)
    assert (again["attempts"], again["last_error"]["code"]) == (attempts, error_code)
    code, out, _ = mailqueue(local, "status", email_id)
    assert code == cli.EXIT_OK
    assert "status          failed" in out.splitlines()
