"""The queue at a glance: counts by status and recent emails from the API's lists, the rest from GET /stats.

The API lists emails by status (newest first; scheduled and retrying ones next due first), 100 a page,
each with its status, times, first recipient and subject (not its history nor its last error). The
overview pages through each status up to a cap and counts what it read, so a status past the cap is
shown as "at least" and so are the figures drawn from it. The send rate needs the time of each email's
``sent`` step, in its history: the emails SES accepted in the last minute are among those updated in the
last minute (an email's update time is never before its send), and those are read one by one, up to a
cap of their own.

GET /stats gives what the lists cannot: the stack's SendRate, the dead letters, and the emails an error
of the SES account or configuration holds. Against an API without that route (a stack deployed before
it), those figures are reported as unavailable, never guessed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
    """Emails held back by an error of the SES account or configuration, as GET /stats found them."""

    total: int
    by_code: dict[str, int]
    emails: list[dict[str, Any]]
    capped: bool = False
    read: int = 0

    @property
    def ids(self) -> set[str]:
        return {str(email.get("id")) for email in self.emails}


@dataclass
class Stats:
    """What GET /stats answered; ``missing`` says why there is nothing (an API without the route)."""

    send_rate_limit: float | None = None
    dead_letters: int | None = None
    dead_letter_queues: dict[str, int] = field(default_factory=dict)
    held: Held | None = None
    missing: str | None = None

    @property
    def held_ids(self) -> set[str]:
        return self.held.ids if self.held else set()


def read_stats(client: ConsoleClient) -> Stats:
    body = client.stats()
    if body is None:
        return Stats(missing="the API has no GET /stats (a stack deployed before it)")
    held = body.get("held") or {}
    return Stats(
        send_rate_limit=float(body["send_rate"]),
        dead_letters=int(body["dead_letters"]),
        dead_letter_queues={str(q["queue"]): int(q["messages"]) for q in body.get("dead_letter_queues") or []},
        held=Held(
            total=int(held.get("count", 0)),
            by_code=dict(held.get("by_code") or {}),
            emails=list(held.get("emails") or []),
            capped=bool(held.get("capped")),
            read=int(held.get("read", 0)),
        ),
    )


@dataclass
class Overview:
    at: datetime
    counts: list[Count]
    capped: bool
    accepted_last_hour: int
    accepted_last_day: int
    sent_last_minute: int
    sent_capped: bool
    stats: Stats
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

    @property
    def send_rate_share(self) -> float | None:
        """The send rate as a share of the stack's SendRate (1.0: at the limit)."""
        limit = self.stats.send_rate_limit
        return self.send_rate / limit if limit else None


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
    return Overview(
        at=now,
        counts=counts,
        capped=any(count.capped for count in counts),
        accepted_last_hour=sum(1 for moment in created if moment and moment >= hour),
        accepted_last_day=sum(1 for moment in created if moment and moment >= day),
        sent_last_minute=sent_last_minute,
        sent_capped=sent_capped,
        stats=read_stats(client),
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
