"""What the requeue function does: act on every live email whose deadline has passed.

Each live email carries a ``deadline`` (see :mod:`mailqueue.statemachine`). A run reads what is due
from the sparse ``by-deadline`` index, then sweeps the emails on their normal path, which that index
does not hold (see :mod:`mailqueue.sweeping`); either way, the run acts the same:

========== ========================================= =====================================================
status     the deadline that passed                  what the run does
========== ========================================= =====================================================
scheduled  ``send_at``                               queued (new deadline), published
queued     publish time + grace (message lost)       queued again (new deadline), published; or held (below)
sending    claim expiry (the sender died)            queued, published; failed after the last attempt
retrying   next attempt time (backoff)               queued, published; failed after the last attempt
========== ========================================= =====================================================

Every action is a conditional write guarded on the status *and* the deadline the run saw, so two
runs at once, a run racing the sender, or a run racing a cancel cannot both act: the loser gets
``ConditionFailed`` and leaves the email alone. The write comes before the publish: if the publish
fails, the email is queued with its new deadline, and a later run publishes it then.

A run pages through the shards in turn and stops before the function's time runs out, leaving
what it did not reach for the next run (it is still due, so nothing is skipped). It reads the shards of
its group only (see :mod:`mailqueue.shardgroups`): the template runs one invocation per group each
minute, side by side, which together read every shard once.

A queued email past its grace is not always lost: under a backlog (more mail than ``send_rate`` sends
in the grace) its message is still waiting in the send queue. Publishing it again would add a
duplicate behind the same backlog, every grace period, for every email behind it. So when the send
queue still holds messages ahead of it, the run *holds* the email once instead: a guarded write that
keeps it queued with a deadline the backlog's wait later (messages ahead / ``send_rate``, plus the
grace), and publishes nothing. When that deadline passes with the email still queued, it is published
again whatever the backlog, so a message that was really lost waits at most the backlog's drain time
more, and an email is held at most once between two publishes.

Within a page, the run acts on up to ``requeue_concurrency`` emails at once (threads sharing the
boto3 clients, which are thread-safe): a release waits on DynamoDB's latency, not on the CPU, so
acting one email at a time would leave the function idle most of the run. Each email is still one
guarded write by one thread; the page's publications are sent once every write of the page has
returned, high priority first, in SendMessageBatch calls made at once as well (see docs/capacity.md).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from mailqueue import clock
from mailqueue.queue import Backlog, Publication, SendQueue
from mailqueue.records import Attr, StatusRecord
from mailqueue.settings import Settings
from mailqueue.shardgroups import EVERY_SHARD, ShardGroup
from mailqueue.statemachine import Change, Guard, Status, transition
from mailqueue.store import ConditionFailed, EmailStore
from mailqueue.sweeping import Sweep

# Items per index query.
PAGE_SIZE = 100
# Publications are sent once this many are waiting (a full SendMessageBatch), and at the end of the
# run: a few due emails spread over several shards still go out in one call.
PUBLISH_AT = 10
# Time kept back for the work in flight when a run stops: finishing one write and publishing what
# waits (at most a page and a batch: eleven SendMessageBatch calls), each with botocore's own retries.
RESERVE_MILLIS = 10_000

# A run reads the send queues' backlog at most this often (one GetQueueAttributes call per queue).
BACKLOG_TTL_SECONDS = 10.0

GIVEN_UP_REASON = "attempts exhausted"
# The history's reason for a queued email held back instead of published again (see the module's doc).
HELD_REASON = "held: its message is still behind the send queue's backlog"

_Item = TypeVar("_Item")


class Reason(StrEnum):
    """Why a due email was published again; a metric dimension and the history's wording."""

    SEND_AT_REACHED = "send_at_reached"
    PUBLISH_LOST = "publish_lost"
    CLAIM_EXPIRED = "claim_expired"
    BACKOFF_PASSED = "backoff_passed"


_REASON_OF: dict[Status, Reason] = {
    Status.SCHEDULED: Reason.SEND_AT_REACHED,
    Status.QUEUED: Reason.PUBLISH_LOST,
    Status.SENDING: Reason.CLAIM_EXPIRED,
    Status.RETRYING: Reason.BACKOFF_PASSED,
}

_HISTORY_REASON: dict[Reason, str] = {
    Reason.SEND_AT_REACHED: "send_at reached",
    Reason.PUBLISH_LOST: "published again: not sent within the grace period",
    Reason.CLAIM_EXPIRED: "claim expired: the sender stopped before recording an outcome",
    Reason.BACKOFF_PASSED: "backoff passed",
}

# What the email's last attempt ended with, when its claim expired on the last attempt.
_CLAIM_EXPIRED_ERROR = {
    "code": "ClaimExpired",
    "message": "the sender stopped during the last attempt without recording an outcome",
}


@dataclass
class RequeueSummary:
    """What one run did."""

    # Emails queued and handed to the publisher, by why they were due.
    requeued: Counter[Reason] = field(default_factory=Counter)
    # Emails moved to failed because their last attempt was spent.
    given_up: int = 0
    # Emails queued whose publish failed: their new deadline brings them back.
    publish_failures: int = 0
    # Queued emails past their grace held back once, their message still behind the send queue's backlog.
    held: int = 0
    # Due emails that had moved on (sent, cancelled, claimed, or taken by another run) by the time of the write.
    skipped: int = 0
    # Index items read.
    examined: int = 0
    # Emails the sweep examined (see mailqueue.sweeping): those not in by-deadline are found this way.
    swept: int = 0
    # True when the run stopped for lack of time with due emails left for the next run.
    stopped_early: bool = False
    # The shards the run read and swept (its group's).
    shards: list[int] = field(default_factory=list)

    @property
    def requeued_total(self) -> int:
        return sum(self.requeued.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requeued": {reason.value: self.requeued.get(reason, 0) for reason in Reason},
            "requeued_total": self.requeued_total,
            "given_up": self.given_up,
            "publish_failures": self.publish_failures,
            "held": self.held,
            "skipped": self.skipped,
            "examined": self.examined,
            "swept": self.swept,
            "stopped_early": self.stopped_early,
            "shards": list(self.shards),
        }


@dataclass
class _Run:
    """One run's state: the due cutoff, the time budget, and what is waiting to be published."""

    now: datetime
    due_before: str
    remaining_millis: Callable[[], int]
    reserve_millis: int
    # The shards this run reads, of by-deadline and by-arrival alike.
    shards: list[int] = field(default_factory=list)
    summary: RequeueSummary = field(default_factory=RequeueSummary)
    pending: list[Publication] = field(default_factory=list)
    # The threads that act on a page's emails at once; None: one at a time, in the caller's thread.
    pool: ThreadPoolExecutor | None = None
    # Held for every change to ``summary`` and ``pending``, which the pool's threads share.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def out_of_time(self) -> bool:
        return self.remaining_millis() < self.reserve_millis

    def each(self, work: Callable[[_Item], bool], items: Iterable[_Item]) -> bool:
        """``work`` on every item, at once on the pool if there is one; False when any returned False.

        Every item's work has returned before this does, also when one raised (the first exception is
        raised then): a write in flight is never left behind by the publish that follows.
        """
        if self.pool is None:
            return all(work(item) for item in items)
        futures: list[Future[bool]] = [self.pool.submit(work, item) for item in items]
        wait(futures)
        return all(future.result() for future in futures)

    def count_examined(self) -> None:
        with self.lock:
            self.summary.examined += 1

    def count_skipped(self) -> None:
        with self.lock:
            self.summary.skipped += 1

    def requeued(self, reason: Reason, publication: Publication) -> None:
        with self.lock:
            self.summary.requeued[reason] += 1
            self.pending.append(publication)

    def gave_up(self) -> None:
        with self.lock:
            self.summary.given_up += 1

    def count_held(self) -> None:
        with self.lock:
            self.summary.held += 1

    def take_pending(self) -> list[Publication]:
        with self.lock:
            pending, self.pending = self.pending, []
        return pending


@dataclass
class Requeuer:
    """The requeue function's work, bound to one deployment's settings and AWS clients."""

    settings: Settings
    store: EmailStore
    queue: SendQueue
    page_size: int = PAGE_SIZE
    reserve_millis: int = RESERVE_MILLIS
    # The send queues' backlogs by priority ("normal", "high"); None: a queued email past its grace is
    # always published again, never held.
    backlogs: dict[str, Backlog] | None = None

    def run(
        self, remaining_millis: Callable[[], int], now: datetime | None = None, group: ShardGroup = EVERY_SHARD
    ) -> RequeueSummary:
        """Act on every email of ``group``'s shards due at ``now``, until done or until ``remaining_millis()``
        runs low.

        ``remaining_millis`` is the Lambda context's ``get_remaining_time_in_millis``. A group that holds
        none of the shards is refused (``BadShardGroup``) before anything is read.
        """
        shards = group.shards(self.settings.deadline_shards)
        now = now or clock.now()
        concurrency = self.settings.requeue_concurrency
        with ThreadPoolExecutor(concurrency, thread_name_prefix="requeue") if concurrency > 1 else _no_pool() as pool:
            run = _Run(now, clock.iso(now), remaining_millis, self.reserve_millis, shards=shards, pool=pool)
            run.summary.shards = shards
            return self._run(run)

    def _run(self, run: _Run) -> RequeueSummary:
        # Shards are read a page at a time in turn, so that a run cut short by time leaves every
        # shard equally behind rather than starving the last ones.
        cursors: dict[int, dict[str, Any] | None] = dict.fromkeys(run.shards)
        try:
            while cursors:
                for shard in list(cursors):
                    if run.out_of_time():
                        run.summary.stopped_early = True
                        return run.summary
                    items, cursors[shard] = self.store.query_due(shard, run.due_before, self.page_size, cursors[shard])
                    finished = self._act_on_page(run, items)
                    if len(run.pending) >= PUBLISH_AT:
                        self._publish(run)
                    if not finished:
                        run.summary.stopped_early = True
                        return run.summary
                    if cursors[shard] is None:
                        del cursors[shard]
            swept = Sweep(self.store, self.page_size).run(
                run.now, lambda item: self._act_swept(run, item), run.out_of_time, run.shards
            )
            run.summary.swept += swept.examined
            run.summary.stopped_early = swept.stopped_early
        finally:
            # Whatever was queued is published, also when the run stops early or fails midway:
            # otherwise it would wait for its new deadline.
            self._publish(run)
        return run.summary

    def _act_on_page(self, run: _Run, items: list[StatusRecord]) -> bool:
        """Act on one page of due items; False when time ran out before the page was done."""

        def act_in_time(item: StatusRecord) -> bool:
            if run.out_of_time():
                return False
            run.count_examined()
            self._act(run, item)
            return True

        return run.each(act_in_time, items)

    def _act_swept(self, run: _Run, record: StatusRecord) -> None:
        """Act on a due email the sweep found (see mailqueue.sweeping)."""
        self._act(run, record)
        if len(run.pending) >= PUBLISH_AT:
            self._publish(run)

    def _act(self, run: _Run, item: StatusRecord) -> None:
        """Act on a due email as ``item`` (a record as ``by-deadline`` holds it, or a whole one) shows it."""
        email_id, status, seen_deadline = item.email_id, item.status, item.deadline
        reason = _REASON_OF.get(status)
        if reason is None or seen_deadline is None:
            # Only live emails have a deadline; anything else in the index is not ours to move.
            run.count_skipped()
            return
        gives_up = status in {Status.SENDING, Status.RETRYING} and item.attempts >= self.settings.max_attempts
        try:
            if gives_up:
                self._give_up(run, email_id, status, seen_deadline)
            else:
                self._requeue(run, email_id, status, reason, seen_deadline, item.priority)
        except ConditionFailed:
            # Someone else acted first (the sender, a cancel, another run): the email moved on.
            run.count_skipped()

    def _requeue(
        self, run: _Run, email_id: str, status: Status, reason: Reason, seen_deadline: datetime, priority: str
    ) -> None:
        guard = Guard(statuses={status}, deadline=seen_deadline)
        if status in {Status.SENDING, Status.RETRYING}:
            # The decision to try again rests on the attempts the index showed: they must still hold.
            guard = Guard(statuses={status}, deadline=seen_deadline, attempts_below=self.settings.max_attempts)
        change = Change(
            Status.QUEUED,
            reason=_HISTORY_REASON[reason],
            deadline=clock.after(run.now, self.settings.queued_grace_seconds),
            # A released claim must not let the dead sender's token write an outcome later.
            remove=(Attr.CLAIM_TOKEN,) if status is Status.SENDING else (),
        )
        if status is Status.QUEUED:
            # Only this case can repeat with no sender outcome in between (which is what trims the
            # history), so rewrite the history trimmed, from a strongly consistent read.
            current = self.store.get(email_id)
            if current is None or current.status is not status or current.deadline != seen_deadline:
                run.count_skipped()
                return
            change.history = current.history
            ahead = self._messages_ahead(priority)
            if ahead and not _held_since_published(current.history):
                change.reason = HELD_REASON
                wait = ahead / self.settings.send_rate
                change.deadline = clock.after(run.now, self.settings.queued_grace_seconds + wait)
                transition(self.store, email_id, guard, change, run.now)
                run.count_held()
                return
        transition(self.store, email_id, guard, change, run.now)
        run.requeued(reason, Publication(email_id, priority))

    def _messages_ahead(self, priority: str) -> int:
        """The messages a newly published message of ``priority`` would wait behind: its own queue's and,
        for normal priority, the high-priority queue's, which the senders empty first."""
        if self.backlogs is None:
            return 0
        queues = ("high",) if priority == "high" else ("high", "normal")
        return sum(self.backlogs[queue].messages() for queue in queues if queue in self.backlogs)

    def _give_up(self, run: _Run, email_id: str, status: Status, seen_deadline: datetime) -> None:
        guard = Guard(statuses={status}, deadline=seen_deadline, attempts_at_least=self.settings.max_attempts)
        change = Change(Status.FAILED, reason=GIVEN_UP_REASON, remove=(Attr.CLAIM_TOKEN,))
        if status is Status.SENDING:
            change.set = {Attr.LAST_ERROR: dict(_CLAIM_EXPIRED_ERROR)}
        # A retrying email keeps the last_error its sender recorded: that is why it was retrying.
        transition(self.store, email_id, guard, change, run.now)
        run.gave_up()

    def _publish(self, run: _Run) -> None:
        pending = run.take_pending()
        # High priority first, so that a slow or failing publish delays the normal queue, not the urgent
        # one: its batches are all sent before the first normal-priority batch is.
        for priority in ("high", "normal"):
            publications = [
                publication for publication in pending if (publication.priority == "high") == (priority == "high")
            ]
            batches = [publications[start : start + PUBLISH_AT] for start in range(0, len(publications), PUBLISH_AT)]
            run.each(lambda batch: self._publish_batch(run, batch), batches)

    def _publish_batch(self, run: _Run, publications: list[Publication]) -> bool:
        failed = len(self.queue.publish(publications))
        with run.lock:
            run.summary.publish_failures += failed
        return True


def send_backlogs(settings: Settings, sqs: Any) -> dict[str, Backlog]:
    """The backlog of each send queue the deployment has, by priority, for :attr:`Requeuer.backlogs`."""
    return {
        priority: Backlog(lambda: sqs, settings.queue_url(priority), ttl=BACKLOG_TTL_SECONDS)
        for priority in ("normal", "high")
        if settings.queue_url(priority)
    }


def _held_since_published(history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the email's last step was a hold: it is held at most once between two publishes."""
    return bool(history) and history[-1].get("reason") == HELD_REASON


@contextmanager
def _no_pool() -> Iterator[None]:
    yield None
