"""Statuses, the transitions between them, and the one function that performs a transition.

Every status change in mailqueue goes through :func:`transition`: it refuses a transition the
diagram below does not allow (a programming error), and performs the allowed ones as a DynamoDB
conditional write on the current status (and the claim token, or the deadline that was seen), so
that two actors racing for one email cannot both win.

    scheduled ──> queued ──claim──> sending ──accepted──> sent ──> delivered / bounced / complained
        │           │  ^               ├──transient──> retrying ──(due)──> queued
        └─cancel─> cancelled <─cancel──┘ (queued, retrying)   └──permanent / last attempt──> failed
                                                              failed ──(manual retry)──> queued

Live emails (scheduled, queued, sending, retrying) always carry a ``deadline``: the moment after
which the requeue function acts on them. Terminal emails carry none, and get a TTL instead.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from mailqueue import clock
from mailqueue.errors import IllegalTransition

if TYPE_CHECKING:
    from mailqueue.records import HistoryStep, StatusRecord
    from mailqueue.store import EmailStore


class Status(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        return self in LIVE


LIVE = frozenset({Status.SCHEDULED, Status.QUEUED, Status.SENDING, Status.RETRYING})
TERMINAL = frozenset(Status) - LIVE
# How the history tells an email held by an error of the SES account or configuration (sending paused, an
# identity not verified): retrying, its attempt not counted, until an operator fixes the account.
HELD_PREFIX = "held:"

ALLOWED: Mapping[Status, frozenset[Status]] = {
    Status.SCHEDULED: frozenset({Status.QUEUED, Status.CANCELLED}),
    # queued -> queued: the requeue function publishes an email whose message was lost.
    # queued, failed, cancelled -> sent: SES's event proves an earlier attempt was accepted after
    # all (the sender died, or its answer was lost, and the email moved on before the event came).
    Status.QUEUED: frozenset({Status.SENDING, Status.QUEUED, Status.CANCELLED, Status.SENT}),
    # sending -> queued: a claim expired (the sender died); sending -> failed: that was the last attempt.
    Status.SENDING: frozenset({Status.SENT, Status.RETRYING, Status.FAILED, Status.QUEUED}),
    # retrying -> sent: SES's Send event settles an attempt whose outcome was unknown.
    Status.RETRYING: frozenset({Status.QUEUED, Status.CANCELLED, Status.FAILED, Status.SENT}),
    Status.SENT: frozenset({Status.DELIVERED, Status.BOUNCED, Status.COMPLAINED, Status.FAILED}),
    # A complaint, or a late asynchronous bounce, can follow a delivery.
    Status.DELIVERED: frozenset({Status.BOUNCED, Status.COMPLAINED}),
    Status.BOUNCED: frozenset({Status.COMPLAINED}),
    Status.COMPLAINED: frozenset(),
    Status.FAILED: frozenset({Status.QUEUED, Status.SENT}),
    Status.CANCELLED: frozenset({Status.SENT}),
}

# The status record keeps its first entry (how the email was accepted) and the latest ones.
HISTORY_LIMIT = 8
REASON_LIMIT = 120


def is_allowed(source: Status, target: Status) -> bool:
    return target in ALLOWED[source]


def history_entry(status: Status, at: datetime, reason: str | None) -> dict[str, str]:
    entry = {"status": status.value, "at": clock.iso(at)}
    if reason:
        entry["reason"] = reason if len(reason) <= REASON_LIMIT else reason[: REASON_LIMIT - 1] + "…"
    return entry


def trimmed(history: Sequence[HistoryStep], limit: int = HISTORY_LIMIT) -> list[HistoryStep]:
    """The history with room for one more entry: the first entry and the most recent ones."""
    if len(history) < limit:
        return list(history)
    return [history[0], *history[len(history) - limit + 2 :]]


@dataclass
class Change:
    """What a transition writes besides the status itself. Attributes are named by ``mailqueue.records.Attr``."""

    to: Status
    reason: str | None = None
    deadline: datetime | None = None
    attempts_delta: int = 0
    set: dict[str, Any] = field(default_factory=dict)
    # Attributes written only where the record has none yet.
    set_if_absent: dict[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    # When the caller holds the current history (it has the claim), it rewrites it trimmed;
    # otherwise the entry is appended, and the next sender outcome trims it.
    history: Sequence[HistoryStep] | None = None


@dataclass(frozen=True)
class Guard:
    """What must still be true for the write to happen."""

    statuses: Collection[Status]
    claim_token: str | None = None
    # The deadline that was read: the email is where it was seen.
    deadline: datetime | None = None
    # The ``updated_at`` that was read: nothing was written since (the history read can be rewritten).
    updated_at: datetime | None = None
    attempts_below: int | None = None
    attempts_at_least: int | None = None
    # The history holds fewer entries than this: one can be appended without reading it, within its bound.
    history_below: int | None = None


def transition(store: EmailStore, email_id: str, guard: Guard, change: Change, now: datetime) -> StatusRecord:
    """Move an email to ``change.to`` if ``guard`` still holds. Returns the new status record.

    This checks the change against the diagram; the store writes it (one conditional UpdateItem).

    Raises :class:`IllegalTransition` for a transition the diagram does not allow, and
    :class:`mailqueue.store.ConditionFailed` (with the current record) when the guard no longer holds.
    """
    for source in guard.statuses:
        if not is_allowed(Status(source), change.to):
            raise IllegalTransition(f"{source} -> {change.to} is not a transition of an email")
    if change.to.live and change.deadline is None:
        raise IllegalTransition(f"a {change.to} email must have a deadline")
    if not change.to.live and change.deadline is not None:
        raise IllegalTransition(f"a {change.to} email has no deadline")

    return store.apply(email_id, guard, change, now)
