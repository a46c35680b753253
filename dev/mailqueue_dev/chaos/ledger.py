"""What the run saw happen, written from many threads."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field

# --- what happened --------------------------------------------------------------------------------------------


@dataclass
class Acceptance:
    """SES accepted one SendEmail call for an email."""

    sequence: int | None  # in the ledger's order; None for a send only SES's record shows
    kind: str  # "clean", "ses_timeout_after_accept", "sender_died_after_accept" or "answer_lost"
    message_id: str
    # When the SendEmail call started, in the ledger's order (None when unknown): the claim that led to
    # this send is the latest one written before it.
    call_sequence: int | None = None


@dataclass
class Ledger:
    """Everything the run saw, written from many threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: dict[str, int] = field(default_factory=dict)  # email id -> plan index
    accepted_at: dict[str, float] = field(default_factory=dict)
    api_errors: list[str] = field(default_factory=list)
    # Plan indexes of enqueue requests whose answer never reached the client (it timed out), or said
    # `unconfirmed` (storage could not tell whether they were stored): not sent
    # again, so that the count still sees any email stored despite an error answer; those stored are
    # adopted at the count, by their recipient.
    unanswered: set[int] = field(default_factory=set)
    cancel_answers: dict[str, int] = field(default_factory=dict)
    # Failed emails retried by request, with the answer.
    retried: dict[str, int] = field(default_factory=dict)
    acceptances: dict[str, list[Acceptance]] = field(default_factory=lambda: defaultdict(list))
    # Email ids whose `sent` write failed after SES accepted, with the sequence number of the failure.
    sent_write_failures: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    faults: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    requeue_runs: Counter[str] = field(default_factory=Counter)
    # SES message ids of the sends that SES's events (Send or Delivery) were on their way for.
    with_events: set[str] = field(default_factory=set)
    # Per email id, when each claim that DynamoDB wrote was requested (the sender's move to `sending`).
    claims: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # Per email id, when the events function had handled an event proving that SES accepted a send,
    # with the SES message id the event was about.
    proofs: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    _sequence: int = 0

    def next_sequence(self) -> int:
        with self.lock:
            self._sequence += 1
            return self._sequence

    def fault(self, kind: str, count: int = 1) -> None:
        with self.lock:
            self.faults[kind] += count

    def event(self, kind: str) -> None:
        with self.lock:
            self.events[kind] += 1

    def ses_accepted(self, email_id: str, kind: str, message_id: str, call_sequence: int | None) -> Acceptance:
        acceptance = Acceptance(self.next_sequence(), kind, message_id, call_sequence)
        with self.lock:
            self.acceptances[email_id].append(acceptance)
        return acceptance

    def sent_write_failed(self, email_id: str) -> None:
        sequence = self.next_sequence()
        with self.lock:
            self.sent_write_failures[email_id].append(sequence)

    def claimed(self, email_id: str, requested: int) -> None:
        """A claim of ``email_id``, requested at sequence ``requested``, was written."""
        with self.lock:
            self.claims[email_id].append(requested)

    def proof_handled(self, email_id: str, message_id: str) -> None:
        """The events function has handled an event that proves SES accepted ``message_id``."""
        sequence = self.next_sequence()
        with self.lock:
            self.proofs[email_id].append((sequence, message_id))
