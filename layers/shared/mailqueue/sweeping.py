"""The sweep: how the requeue function finds the live emails that ``by-deadline`` does not hold.

An email on its normal path (enqueued, claimed soon after, sent) is in no index that moves: that is
what keeps its writes to one write unit each (see :mod:`mailqueue.store`). Its deadline still binds:
if its message is lost or its sender dies, someone must act after the deadline. Such an email's
deadline lies before its *horizon* (its id's time + the queued grace + ``sweep_lag_seconds``), or it
would be in ``by-deadline``; so examining every email once, after its *sweep point* (the horizon + one
more lag), finds every one that needs it:

- not live, or in ``by-deadline`` (it has ``shard``): nothing to do here;
- live, its deadline passed: acted on as the requeue function acts on a due email, which also puts
  it into ``by-deadline`` (a new deadline after the sweep point lies past the horizon);
- live, its deadline not passed (a clock behind, a deadline written after its horizon by a function
  whose clock was ahead): put into ``by-deadline`` with a write guarded on what was read.

Any transition after the sweep point sets a deadline past the horizon, which enters ``by-deadline``
in the same write (``EmailStore.apply``), so an email examined once never needs the sweep again.

The sweep walks ``by-arrival`` (keys only, ordered by id, hence by time) shard by shard from a cursor
kept in the table, up to the last id whose sweep point has passed, reading the status records a
hundred at a time with strongly consistent reads (a stale one could show a status the email left).
The cursor moves after each page, so a run cut short by time goes on where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from mailqueue import clock
from mailqueue.ids import last_id_at
from mailqueue.records import StatusRecord
from mailqueue.statemachine import LIVE
from mailqueue.store import EmailStore

PAGE_SIZE = 100
# How many times an email is examined again after a guarded write found it changed.
_EXAMINE_TRIES = 3


@dataclass
class SweepCount:
    """What one sweep did: emails examined, and those it put into ``by-deadline`` unacted."""

    examined: int = 0
    indexed: int = 0
    stopped_early: bool = False


@dataclass
class Sweep:
    store: EmailStore
    page_size: int = PAGE_SIZE

    def last_sweepable(self, now: datetime) -> str:
        """The greatest id whose sweep point has passed at ``now``."""
        settings = self.store.settings
        lag = settings.queued_grace_seconds + 2 * settings.sweep_lag_seconds
        return last_id_at(int(clock.after(now, -lag).timestamp() * 1000))

    def run(
        self,
        now: datetime,
        act: Callable[[StatusRecord], None],
        out_of_time: Callable[[], bool],
        shards: Iterable[int] | None = None,
    ) -> SweepCount:
        """Examine every email of ``shards`` (every shard when None) whose sweep point passed and that no
        sweep examined yet. Each shard has a cursor of its own: runs of other shards may sweep at the same time.

        ``act`` is given each live, unindexed email whose deadline passed (its status record).
        """
        count = SweepCount()
        until = self.last_sweepable(now)
        for shard in range(self.store.settings.deadline_shards) if shards is None else shards:
            cursor = self.store.sweep_cursor(shard)
            more = cursor < until
            while more:
                if out_of_time():
                    count.stopped_early = True
                    return count
                ids, more = self.store.arrivals(shard, cursor, until, self.page_size)
                if not ids:
                    break
                records = self.store.records(ids, consistent=True)
                for email_id in ids:
                    count.examined += 1
                    self._examine(records.get(email_id), now, act, count)
                cursor = ids[-1]
                self.store.advance_sweep(shard, cursor)
        return count

    def _examine(
        self, record: StatusRecord | None, now: datetime, act: Callable[[StatusRecord], None], count: SweepCount
    ) -> None:
        for _ in range(_EXAMINE_TRIES):
            # No status record (its write failed; the content expires), not live, or in by-deadline: not ours.
            if record is None or record.shard is not None or record.status not in LIVE or record.deadline is None:
                return
            if record.deadline <= now:
                act(record)
                return
            indexed, record = self.store.index_deadline(record)
            if indexed:
                count.indexed += 1
                return
