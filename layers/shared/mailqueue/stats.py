"""What GET /stats answers: the figures of the queue that its lists cannot give cheaply.

- the stack's SendRate (the setting the sender paces itself by);
- the dead letters: one GetQueueAttributes call per dead-letter queue;
- the held emails: emails an error of the SES account or configuration holds (sending paused, an
  identity not verified). The sender records them as ``retrying``, the last step of their history
  saying ``held:`` (see ``mailqueue.sender``). The retrying emails are listed as ``GET /emails``
  lists them (from ``by-deadline``, the next to be tried first, whole status records read in
  batches), up to ``held_read_limit`` of them: a bounded cost (about 50 read units at most), and a
  lower bound, said so, when more emails are retrying.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from mailqueue import clock
from mailqueue.models import DeadLetterCount, HeldEmail, HeldEmails, QueueStats
from mailqueue.queue import DeadLetterQueues
from mailqueue.settings import Settings
from mailqueue.statemachine import Status
from mailqueue.store import EmailStore

HELD_READ_LIMIT = 100


@dataclass
class Stats:
    settings: Settings
    store: EmailStore
    dead_letters: DeadLetterQueues
    held_read_limit: int = HELD_READ_LIMIT

    def read(self, now: datetime | None = None) -> QueueStats:
        now = now or clock.now()
        counts = self.dead_letters.counts()
        return QueueStats(
            at=clock.iso(now),
            send_rate=self.settings.send_rate,
            dead_letters=sum(counts.values()),
            dead_letter_queues=[DeadLetterCount(queue=name, messages=count) for name, count in counts.items()],
            held=self.held(),
        )

    def held(self) -> HeldEmails:
        """The held emails among the first ``held_read_limit`` retrying ones, the next to be tried first."""
        listed, _ = self.store.list_by_status(Status.RETRYING.value, self.held_read_limit + 1, None)
        read = listed[: self.held_read_limit]
        held = [record for record in read if record.held]
        by_code = Counter(record.error_code or "unknown" for record in held)
        return HeldEmails(
            count=len(held),
            read=len(read),
            capped=len(listed) > len(read),
            by_code=dict(by_code.most_common()),
            emails=[HeldEmail(id=r.email_id, to=r.to, code=r.error_code) for r in held],
        )
