"""The queue at a glance, from what the API lists: counts by status, recent emails, the send rate, held emails.

The API lists emails by status, newest first, 100 a page; there is no count route. The overview pages
through each status up to a cap and derives every figure from the emails it read, so a status past the
cap is shown as "at least" and so are the figures drawn from it. What the API does not show at all
(the stack's SendRate parameter, the dead-letter queues) is reported as unavailable, never guessed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mailqueue_dev.console.client import STATUSES, ConsoleClient

DEFAULT_CAP = 1000
LIVE_STATUSES = ("scheduled", "queued", "sending", "retrying")
# The sender's history reason for an email held by an error of the SES account or configuration
# (sending paused, MAIL FROM domain not verified, …): it waits without spending an attempt.
HELD_PREFIX = "held:"


@dataclass
class Count:
    status: str
    count: int
    capped: bool

    @property
    def shown(self) -> str:
        return f"{self.count}+" if self.capped else str(self.count)


@dataclass
class Held:
    """Emails held back by an account or configuration error, by SES's error code."""

    total: int
    by_code: dict[str, int]
    emails: list[dict[str, Any]]


@dataclass
class Overview:
    at: datetime
    counts: list[Count]
    capped: bool
    accepted_last_hour: int
    accepted_last_day: int
    sent_last_minute: int
    sent_last_hour: int
    held: Held
    # Not offered by the API: shown as unavailable.
    send_rate_limit: float | None = None
    dead_letters: int | None = None
    cap: int = DEFAULT_CAP
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(count.count for count in self.counts)

    @property
    def live(self) -> int:
        return sum(count.count for count in self.counts if count.status in LIVE_STATUSES)

    @property
    def send_rate(self) -> float:
        """Emails SES accepted per second, over the last minute."""
        return self.sent_last_minute / 60


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _held(email: dict[str, Any]) -> bool:
    history = email.get("history") or []
    reason = str(history[-1].get("reason") or "") if history else ""
    return email.get("status") == "retrying" and reason.startswith(HELD_PREFIX)


def compute(client: ConsoleClient, cap: int = DEFAULT_CAP, now: datetime | None = None) -> Overview:
    now = now or datetime.now(UTC)
    counts: list[Count] = []
    emails: list[dict[str, Any]] = []
    for status in STATUSES:
        found, more = client.all_emails(status, cap)
        counts.append(Count(status, len(found), more))
        emails += found
    hour, day, minute = now - timedelta(hours=1), now - timedelta(days=1), now - timedelta(minutes=1)
    created = [_moment(email.get("created_at")) for email in emails]
    sent_at = [
        moment
        for email in emails
        for entry in email.get("history") or []
        if entry.get("status") == "sent" and (moment := _moment(entry.get("at"))) is not None
    ]
    held = [email for email in emails if _held(email)]
    by_code = Counter(str((email.get("last_error") or {}).get("code") or "unknown") for email in held)
    return Overview(
        at=now,
        counts=counts,
        capped=any(count.capped for count in counts),
        accepted_last_hour=sum(1 for moment in created if moment and moment >= hour),
        accepted_last_day=sum(1 for moment in created if moment and moment >= day),
        sent_last_minute=sum(1 for moment in sent_at if moment >= minute),
        sent_last_hour=sum(1 for moment in sent_at if moment >= hour),
        held=Held(len(held), dict(by_code.most_common()), held[:20]),
        cap=cap,
    )


class CachedOverview:
    """One overview computation serves every page and refresh for ``seconds``: many tabs, one reading."""

    def __init__(self, client: ConsoleClient, seconds: float = 2.0, cap: int = DEFAULT_CAP) -> None:
        self._client, self._seconds, self._cap = client, seconds, cap
        self._lock = threading.Lock()
        self._value: Overview | None = None
        self._taken = 0.0

    def get(self) -> Overview:
        with self._lock:
            if self._value is None or time.monotonic() - self._taken >= self._seconds:
                self._value = compute(self._client, self._cap)
                self._taken = time.monotonic()
            return self._value
