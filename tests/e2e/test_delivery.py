"""Delivery truth on the local stack: SES's events bounce or complain, and the suppression list protects the sender.

The local stack emits SES's events for each accepted send; addresses of SES's mailbox simulator
bounce or complain (see mailqueue_dev.ses_simulator). The stack is shared by the e2e package, so
every test lifts what it suppressed.
"""

from __future__ import annotations

import io
import json
import uuid

import pytest
from mailqueue_dev import cli
from mailqueue_dev.local import LocalStack

from tests.e2e.conftest import Http, an_email, parse_eml, wait_for, wait_for_status

pytestmark = pytest.mark.e2e

BOUNCE = "bounce@simulator.amazonses.com"


def mailqueue(local: LocalStack, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--url", local.api_url, *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def suppressed(http: Http) -> dict[str, dict[str, str]]:
    code, page = http.get("/suppressions", params={"limit": 100})
    assert code == 200, page
    return {entry["address"]: entry for entry in page["suppressions"]}


def test_a_bounce_suppresses_the_address_until_it_is_lifted(local: LocalStack, http: Http, lift: list[str]) -> None:
    lift.append(BOUNCE)

    # Given an email to SES's bounce simulator
    code, answer = http.post("/emails", an_email(to=[BOUNCE]))
    assert code == 202, answer
    bounced_id = answer["id"]

    # Then SES accepts it, it bounces, and the API says why
    bounced = wait_for_status(http, bounced_id, "bounced")
    assert [entry["status"] for entry in bounced["history"]] == ["queued", "sending", "sent", "bounced"]
    assert bounced["history"][-1]["reason"] == "bounce Permanent/General"
    assert bounced["ses_message_id"]
    # and so does the CLI
    code, out, _ = mailqueue(local, "status", bounced_id)
    assert code == cli.EXIT_OK
    lines = out.splitlines()
    assert "status          bounced" in lines
    assert "reason          bounce Permanent/General" in lines

    # And the address is on the suppression list, from that email
    entry = suppressed(http)[BOUNCE]
    assert (entry["reason"], entry["email_id"]) == ("permanent bounce (General)", bounced_id)
    code, out, _ = mailqueue(local, "--json", "suppressions", "--limit", "100")
    assert code == cli.EXIT_OK
    assert BOUNCE in [entry["address"] for entry in json.loads(out)["suppressions"]]

    # When the next email is sent to it, it is refused, naming the address
    code, refused = http.post("/emails", an_email(to=[BOUNCE]))
    assert code == 422, refused
    assert refused["error"]["details"] == [
        {
            "field": "to",
            "message": f"{BOUNCE} is on the suppression list (permanent bounce (General))",
            "code": "suppressed_recipient",
        }
    ]
    assert "skip_suppressed" in refused["error"]["message"]

    # Unless it may skip it: then it goes to the others only, and the answer and history say whom it skipped
    code, answer = http.post(
        "/emails", an_email(to=[BOUNCE, "dave@example.org"], cc=["carol@example.org"], skip_suppressed=True)
    )
    assert code == 202, answer
    skipped = f"without the suppressed {BOUNCE} (permanent bounce (General))"
    assert answer["message"] == f"sent {skipped}"
    assert answer["skipped"] == [{"field": "to", "address": BOUNCE, "reason": "permanent bounce (General)"}]
    delivered = wait_for_status(http, answer["id"], "delivered")
    assert delivered["history"][0]["reason"] == f"accepted, {skipped}"
    assert delivered["recipients"]["to"] == ["dave@example.org"]
    # and the CLI says so too
    code, _, err = mailqueue(
        local, "send", "--from", "app@example.com", "--to", f"{BOUNCE},erin@example.org",
        "--subject", "Hello", "--text", "x", "--skip-suppressed",
    )  # fmt: skip
    assert code == cli.EXIT_OK, err
    assert f"sent {skipped}" in err.splitlines()
    message = parse_eml(local, answer["id"])
    assert (message["To"], message["Cc"]) == ("dave@example.org", "carol@example.org")
    assert BOUNCE not in str(message)

    # When the CLI lifts it, the next email is accepted (and bounces again)
    code, out, err = mailqueue(local, "unsuppress", BOUNCE)
    assert code == cli.EXIT_OK, err
    assert BOUNCE not in suppressed(http)
    code, answer = http.post("/emails", an_email(to=[BOUNCE]))
    assert code == 202, answer
    wait_for_status(http, answer["id"], "bounced")
    wait_for(lambda: suppressed(http).get(BOUNCE, {}).get("email_id") == answer["id"], f"{BOUNCE} suppressed again")


def test_unsuppressing_an_address_that_is_not_suppressed_exits_1(local: LocalStack) -> None:
    address = f"never-{uuid.uuid4().hex[:8]}@example.org"

    code, _, err = mailqueue(local, "unsuppress", address)

    assert code == cli.EXIT_REFUSED
    assert f"not_found: {address} is not on the suppression list" in err


def test_a_complaint_follows_the_delivery_and_suppresses_the_address(
    local: LocalStack, http: Http, lift: list[str]
) -> None:
    # A +label keeps this address apart from other tests', as SES's simulator allows
    address = f"complaint+{uuid.uuid4().hex[:8]}@simulator.amazonses.com"
    lift.append(address)

    code, answer = http.post("/emails", an_email(to=[address]))
    assert code == 202, answer

    complained = wait_for_status(http, answer["id"], "complained")
    statuses = [entry["status"] for entry in complained["history"]]
    assert statuses == ["queued", "sending", "sent", "delivered", "complained"]
    assert wait_for(lambda: suppressed(http).get(address), f"{address} suppressed")["reason"] == "complaint"

    # The CLI lifts an address with a + in it too
    code, _, err = mailqueue(local, "unsuppress", address)
    assert code == cli.EXIT_OK, err
    assert address not in suppressed(http)
