"""docs/webhooks.md cannot drift: its verification snippet runs against signed requests, its schedule is the code's."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from mailqueue.webhooks import DEFAULT_SCHEDULE, SIGNATURE_HEADER, deliver, sign

DOC = Path(__file__).parents[2] / "docs" / "webhooks.md"
SECRET = "the-stacks-webhook-secret"


def documented_verify() -> Callable[..., bool]:
    """The ```python block under "Verifying a webhook", executed as a reader would paste it."""
    section = DOC.read_text().split("## Verifying a webhook", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(code.strip().splitlines()) <= 12, "about ten lines, as the docs promise"
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


def a_delivery(now: float, detail: dict[str, Any] | None = None) -> tuple[bytes, str]:
    """A request as the webhook function sends it: its body and Mailqueue-Signature."""
    sent: list[tuple[bytes, Mapping[str, str]]] = []

    def capture(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        sent.append((body, headers))
        return 204

    event = detail or {"event_id": "01J-2", "email_id": "01J", "sequence": 2, "status": "bounced", "note": "ü"}
    assert deliver("https://hooks.example/x", event, SECRET, now=now, send=capture).delivered
    [(body, headers)] = sent
    return body, headers[SIGNATURE_HEADER]


def test_the_documented_snippet_accepts_a_signed_delivery() -> None:
    verify = documented_verify()
    body, header = a_delivery(time.time())
    assert verify(SECRET.encode(), header, body) is True


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda body, header: (body.replace(b"bounced", b"delivered"), header), id="tampered body"),
        pytest.param(lambda body, header: (body + b" ", header), id="one byte more"),
        pytest.param(lambda body, header: (body, header.replace("v1=", "v1=0")), id="mangled signature"),
        pytest.param(lambda body, header: (body, header.split(",")[0]), id="no v1"),
        pytest.param(lambda body, header: (body, header.split(",")[1]), id="no t"),
        pytest.param(lambda body, header: (body, "garbage"), id="garbage"),
        pytest.param(lambda body, header: (body, ""), id="empty"),
    ],
)
def test_the_documented_snippet_rejects_a_spoiled_delivery(spoil: Callable[[bytes, str], tuple[bytes, str]]) -> None:
    verify = documented_verify()
    body, header = spoil(*a_delivery(time.time()))
    assert verify(SECRET.encode(), header, body) is False


def test_the_documented_snippet_rejects_another_secret() -> None:
    body, header = a_delivery(time.time())
    assert documented_verify()(b"another secret", header, body) is False


def test_the_documented_snippet_rejects_a_replay_older_than_five_minutes() -> None:
    verify = documented_verify()
    old_body, old_header = a_delivery(time.time() - 301)
    assert verify(SECRET.encode(), old_header, old_body) is False
    recent_body, recent_header = a_delivery(time.time() - 240)
    assert verify(SECRET.encode(), recent_header, recent_body) is True
    # and the timestamp cannot be moved forward without breaking the signature
    moved = re.sub(r"t=\d+", f"t={int(time.time())}", old_header)
    assert verify(SECRET.encode(), moved, old_body) is False


def test_the_snippet_agrees_with_the_package_signature() -> None:
    body = b'{"event_id":"x-1"}'
    now = int(time.time())
    assert documented_verify()(SECRET.encode(), sign(SECRET, body, now), body) is True


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{secs} s" if secs else ""]
    return " ".join(part for part in parts if part) or "0"


def test_the_documented_schedule_is_the_codes() -> None:
    table = DOC.read_text().split("### The schedule", 1)[1]
    attempts_row = next(line for line in table.splitlines() if line.startswith("| attempt |"))
    least_row = next(line for line in table.splitlines() if line.startswith("| at least |"))
    attempts = [cell.strip() for cell in attempts_row.strip("|").split("|")][1:]
    least = [cell.strip() for cell in least_row.strip("|").split("|")][1:]
    elapsed = [
        sum(DEFAULT_SCHEDULE.least_delay(k) for k in range(1, n)) for n in range(1, DEFAULT_SCHEDULE.attempts + 1)
    ]
    for attempt, documented in zip(attempts, least, strict=True):
        if attempt.isdigit():
            assert documented == _duration(elapsed[int(attempt) - 1]), attempt
    assert attempts[-1] == str(DEFAULT_SCHEDULE.attempts)
    assert "at least 24 h 3 min 30 s" in table and _duration(DEFAULT_SCHEDULE.least_span()) == "24 h 3 min 30 s"
