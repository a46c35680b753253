"""The queue at a glance, from what the API lists: counts by status, recent emails, the send rate, held emails.

The API lists emails by status, newest first, 100 a page, each with its status, times, first recipient
and subject (not its history nor its last error); there is no count route. The overview pages through
each status up to a cap and counts what it read, so a status past the cap is shown as "at least" and so
are the figures drawn from it. Two figures need an email's history or last error, so the overview reads
those emails one by one, up to a cap of their own:
- the send rate: emails SES accepted in the last minute, among those updated in the last minute (an
  email's update time is never before its send);
- held emails: retrying emails whose last SES error is of the account or the configuration (sending
  paused, MAIL FROM domain not verified, …), as mailqueue.ses_errors classifies it.
What the API does not show at all (the stack's SendRate parameter, the dead-letter queues) is reported
as unavailable, never guessed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mailqueue.ses_errors import Outcome, classify_code

from mailqueue_dev.console.client import STATUSES, ApiError, ConsoleClient

DEFAULT_CAP = 1000
# At most this many emails read one by one for each figure that needs their history or last error.
DETAIL_CAP = 100
LIVE_STATUSES = ("scheduled", "queued", "sending", "retrying")
# Where an email SES accepted can be (a late Send event settles a failed or cancelled email as sent).
SENT_OR_LATER = ("sent", "delivered", "bounced", "complained")


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
    capped: bool = False


@dataclass
class Overview:
    at: datetime
    counts: list[Count]
    capped: bool
    accepted_last_hour: int
    accepted_last_day: int
    sent_last_minute: int
    sent_capped: bool
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


def _details(client: ConsoleClient, emails: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The full views of up to DETAIL_CAP of ``emails`` (one that went away meanwhile is left out)."""
    found = []
    for email in emails[:DETAIL_CAP]:
        try:
            found.append(client.email(str(email["id"])))
        except ApiError as error:
            if error.code != "not_found":
                raise
    return found, len(emails) > DETAIL_CAP


def _is_held(email: dict[str, Any]) -> bool:
    code = (email.get("last_error") or {}).get("code")
    return email.get("status") == "retrying" and bool(code) and classify_code(str(code)) is Outcome.ACCOUNT


def compute(client: ConsoleClient, cap: int = DEFAULT_CAP, now: datetime | None = None) -> Overview:
    now = now or datetime.now(UTC)
    counts: list[Count] = []
    listed: dict[str, list[dict[str, Any]]] = {}
    for status in STATUSES:
        found, more = client.all_emails(status, cap)
        counts.append(Count(status, len(found), more))
        listed[status] = found
    emails = [email for found in listed.values() for email in found]
    hour, day, minute = now - timedelta(hours=1), now - timedelta(days=1), now - timedelta(minutes=1)
    created = [_moment(email.get("created_at")) for email in emails]

    recent = [
        email
        for status in SENT_OR_LATER
        for email in listed[status]
        if (moment := _moment(email.get("updated_at"))) is not None and moment >= minute
    ]
    recent_details, sent_capped = _details(client, recent)
    sent_last_minute = sum(
        1
        for email in recent_details
        if any(
            entry.get("status") == "sent" and (moment := _moment(entry.get("at"))) is not None and moment >= minute
            for entry in email.get("history") or []
        )
    )

    retrying, held_capped = _details(client, listed["retrying"])
    held = [email for email in retrying if _is_held(email)]
    by_code = Counter(str((email.get("last_error") or {}).get("code")) for email in held)
    return Overview(
        at=now,
        counts=counts,
        capped=any(count.capped for count in counts),
        accepted_last_hour=sum(1 for moment in created if moment and moment >= hour),
        accepted_last_day=sum(1 for moment in created if moment and moment >= day),
        sent_last_minute=sent_last_minute,
        sent_capped=sent_capped,
        held=Held(len(held), dict(by_code.most_common()), held[:20], held_capped),
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
