"""SES's events, brought to the events function as EventBridge and Lambda's asynchronous invocation would."""

from __future__ import annotations

import heapq
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailqueue_dev.chaos.ledger import Ledger
from mailqueue_dev.chaos.plan import SENDER

# --- SES events ------------------------------------------------------------------------------------------------


def ses_event(event_type: str, email_id: str, message_id: str, recipient: str) -> dict[str, Any]:
    """An SES event as EventBridge delivers it to the events function."""
    now = datetime.now(UTC)
    detail: dict[str, Any] = {
        "eventType": event_type,
        "mail": {
            "timestamp": now.isoformat(),
            "source": SENDER,
            "messageId": message_id,
            "destination": [recipient],
            "tags": {"email_id": [email_id]},
        },
    }
    if event_type == "Send":
        detail["send"] = {}
    else:
        detail["delivery"] = {
            "timestamp": now.isoformat(),
            "recipients": [recipient],
            "processingTimeMillis": 120,
            "smtpResponse": "250 2.0.0 OK",
        }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Email Sent" if event_type == "Send" else "Email Delivered",
        "source": "aws.ses",
        "account": "123456789012",
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


# SES's events that prove it accepted the email (those the events function settles an attempt by).
PROVES_ACCEPTED = frozenset({"Send", "Delivery", "Bounce", "Complaint", "DeliveryDelay"})


@dataclass
class EventBus:
    """Delivers SES events to the events function after a delay; retries a failed invocation as Lambda's
    asynchronous invocation does (twice), then drops it."""

    invoke: Callable[[dict[str, Any]], Any]
    retry_delays: tuple[float, ...]
    ledger: Ledger
    _queue: list[tuple[float, int, dict[str, Any], int]] = field(default_factory=list, init=False)
    _changed: threading.Condition = field(default_factory=threading.Condition, init=False)
    _stopped: bool = field(default=False, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _counter: int = field(default=0, init=False)
    # The most an invocation ended after its event was due, in seconds.
    latest: float = field(default=0.0, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-ses-events", daemon=True)
        self._thread.start()

    def publish(self, event: dict[str, Any], delay: float, tries: int = 0) -> None:
        with self._changed:
            self._counter += 1
            heapq.heappush(self._queue, (time.monotonic() + delay, self._counter, event, tries))
            self._changed.notify()

    def stop(self) -> int:
        """Stop; returns how many events were still waiting."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopped and (not self._queue or self._queue[0][0] > time.monotonic()):
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._changed.wait(wait)
                if self._stopped:
                    return
                due, _, event, tries = heapq.heappop(self._queue)
            kind = event["detail"]["eventType"]
            try:
                self.invoke(event)
                self.latest = max(self.latest, time.monotonic() - due)
            except Exception as error:
                name = type(error).__name__
                if tries < len(self.retry_delays):
                    self.ledger.event(f"{kind} retried after {name}")
                    self.publish(event, self.retry_delays[tries], tries + 1)
                else:
                    self.ledger.event(f"{kind} dropped after {name}")
            else:
                self.ledger.event(f"{kind} delivered")
                if kind in PROVES_ACCEPTED:
                    mail = event["detail"]["mail"]
                    self.ledger.proof_handled(mail["tags"]["email_id"][0], mail["messageId"])
