"""Every legal transition is performed as a conditional write; every illegal one is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from mailqueue import aws, clock
from mailqueue.errors import IllegalTransition
from mailqueue.records import Attr, StatusRecord
from mailqueue.settings import get_settings
from mailqueue.statemachine import (
    ALLOWED,
    LIVE,
    REASON_LIMIT,
    Change,
    Guard,
    Status,
    history_entry,
    transition,
    trimmed,
)
from mailqueue.store import STATUS_INDEXED, ConditionFailed, EmailStore

ALL_PAIRS = [(source, target) for source in Status for target in Status]
LEGAL = [(source, target) for source, target in ALL_PAIRS if target in ALLOWED[source]]
ILLEGAL = [(source, target) for source, target in ALL_PAIRS if target not in ALLOWED[source]]


@pytest.fixture
def store(stack) -> EmailStore:
    return EmailStore(get_settings(), aws.client("dynamodb"))


def put_record(store: EmailStore, email_id: str, status: Status, **extra) -> None:
    now = clock.now()
    record = {
        "pk": email_id,
        "sk": "status",
        "status": status.value,
        "status_shard": store.status_shard(email_id, status),
        "shard": store.deadline_shard(email_id),
        "priority": "normal",
        "attempts": 1,
        "created_at": clock.iso(now),
        "updated_at": clock.iso(now),
        "history": [{"status": status.value, "at": clock.iso(now)}],
        **extra,
    }
    if status in LIVE:
        record["deadline"] = clock.iso(now + timedelta(minutes=5))
    store.put_new([(StatusRecord.from_item(record), {"pk": email_id, "sk": "content"})])


class WriteRecorder(EmailStore):
    """A store that records writes instead of making them."""

    def __init__(self) -> None:
        super().__init__(get_settings(), client=None)
        self.writes: list[str] = []

    def update_status(self, email_id, expression, condition, names, values):
        self.writes.append(email_id)
        return StatusRecord(email_id, Status.QUEUED)


def change_to(target: Status) -> Change:
    deadline = clock.after(clock.now(), 60) if target in LIVE else None
    return Change(target, reason=f"to {target}", deadline=deadline)


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{s}->{t}" for s, t in LEGAL])
def test_legal_transition_is_written(store, source, target):
    # Given an email in the source status
    email_id = "01JTESTLEGAL0000000000000" + "A"
    put_record(store, email_id, source)

    # When it moves to the target status
    record = transition(store, email_id, Guard(statuses={source}), change_to(target), clock.now())

    # Then the status, index keys, deadline (live only), TTL (terminal only) and history say so: the id is
    # not a ULID, so it has no horizon and a live email stays in by-deadline; by-status lists the rare statuses
    assert record.status is target
    assert record.status_shard == (store.status_shard(email_id, target) if target in STATUS_INDEXED else None)
    assert record.shard == (store.deadline_shard(email_id) if target in LIVE else None)
    assert (record.deadline is not None) is (target in LIVE)
    assert (record.expires_at is not None) is (target not in LIVE)
    assert record.history[-1]["status"] == target.value
    assert record.history[-1]["reason"] == f"to {target}"
    assert store.get(email_id) == record


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{s}->{t}" for s, t in ILLEGAL])
def test_illegal_transition_is_refused_before_any_write(source, target):
    store = WriteRecorder()

    with pytest.raises(IllegalTransition):
        transition(store, "01JTESTILLEGAL00000000000B", Guard(statuses={source}), change_to(target), clock.now())

    assert store.writes == []


def test_a_guard_that_no_longer_holds_fails_with_the_current_record(store):
    email_id = "01JTESTRACE00000000000000C"
    put_record(store, email_id, Status.CANCELLED)

    with pytest.raises(ConditionFailed) as failure:
        transition(store, email_id, Guard(statuses={Status.QUEUED}), change_to(Status.SENDING), clock.now())

    assert failure.value.current is not None
    assert failure.value.current.status is Status.CANCELLED


def test_claim_token_and_seen_deadline_guard_the_write(store):
    email_id = "01JTESTCLAIM0000000000000D"
    put_record(store, email_id, Status.SENDING, claim_token="mine")
    seen = store.get(email_id).deadline

    with pytest.raises(ConditionFailed):
        transition(store, email_id, Guard({Status.SENDING}, claim_token="theirs"), change_to(Status.SENT), clock.now())
    with pytest.raises(ConditionFailed):
        stale = Guard({Status.SENDING}, deadline=clock.parse_iso("2000-01-01T00:00:00.000Z"))
        transition(store, email_id, stale, change_to(Status.QUEUED), clock.now())

    # The claim's holder, with the deadline it read, writes.
    holder = Guard({Status.SENDING}, claim_token="mine", deadline=seen)
    record = transition(store, email_id, holder, change_to(Status.QUEUED), clock.now())
    assert record.status is Status.QUEUED


def test_an_unknown_email_fails_the_guard(store):
    with pytest.raises(ConditionFailed) as failure:
        transition(store, "01JNOSUCHEMAIL000000000000", Guard({Status.QUEUED}), change_to(Status.SENDING), clock.now())
    assert failure.value.current is None


def test_a_live_status_needs_a_deadline_and_a_terminal_one_refuses_it(store):
    with pytest.raises(IllegalTransition):
        transition(store, "01JX", Guard({Status.SENDING}), Change(Status.RETRYING), clock.now())
    with pytest.raises(IllegalTransition):
        late = Change(Status.SENT, deadline=clock.now())
        transition(store, "01JX", Guard({Status.SENDING}), late, clock.now())


def test_history_is_trimmed_to_the_first_and_latest_entries():
    history = [{"status": f"s{index}", "at": "t"} for index in range(12)]

    kept = trimmed(history, limit=8)

    assert len(kept) == 7  # room for the entry being added
    assert kept[0]["status"] == "s0"
    assert [entry["status"] for entry in kept[1:]] == [f"s{index}" for index in range(6, 12)]


def test_terminal_statuses_reach_nothing_but_their_documented_paths():
    # Only SES's proof that it accepted the email after all, and a manual retry of a failed one.
    assert ALLOWED[Status.CANCELLED] == {Status.SENT}
    assert ALLOWED[Status.FAILED] == {Status.QUEUED, Status.SENT}
    assert all(target in ALLOWED[Status.SENT] for target in (Status.DELIVERED, Status.BOUNCED, Status.COMPLAINED))


def test_the_attempts_guards_hold_the_write_to_the_attempts_counted(store):
    # The claim is guarded by attempts below the maximum; failing an email with none left, by at least it.
    email_id = "01JTESTATTEMPTS0000000000E"
    put_record(store, email_id, Status.QUEUED)  # attempts: 1

    with pytest.raises(ConditionFailed):
        transition(store, email_id, Guard({Status.QUEUED}, attempts_below=1), change_to(Status.SENDING), clock.now())
    with pytest.raises(ConditionFailed):
        transition(
            store, email_id, Guard({Status.QUEUED}, attempts_at_least=2), change_to(Status.CANCELLED), clock.now()
        )
    assert store.get(email_id).status is Status.QUEUED

    claimed = transition(
        store, email_id, Guard({Status.QUEUED}, attempts_below=2), change_to(Status.SENDING), clock.now()
    )
    assert claimed.status is Status.SENDING
    put_record(store, "01JTESTATTEMPTS0000000000F", Status.QUEUED)
    failed = transition(
        store,
        "01JTESTATTEMPTS0000000000F",
        Guard({Status.QUEUED}, attempts_at_least=1),
        change_to(Status.CANCELLED),
        clock.now(),
    )
    assert failed.status is Status.CANCELLED


def test_a_change_counts_the_attempt_and_writes_and_removes_its_attributes(store):
    email_id = "01JTESTCHANGE000000000000G"
    put_record(store, email_id, Status.QUEUED, claim_token="old", last_error={"code": "Stale", "message": "stale"})

    change = Change(
        Status.SENDING,
        deadline=clock.after(clock.now(), 60),
        attempts_delta=1,
        set={Attr.CLAIM_TOKEN: "new", Attr.SES_MESSAGE_ID: "m-1"},
        remove=(Attr.LAST_ERROR,),
    )
    record = transition(store, email_id, Guard({Status.QUEUED}), change, clock.now())

    assert record.attempts == 2
    assert record.claim_token == "new"
    assert record.ses_message_id == "m-1"
    assert record.last_error is None
    given_back = Change(Status.QUEUED, deadline=clock.after(clock.now(), 60), attempts_delta=-1)
    assert transition(store, email_id, Guard({Status.SENDING}), given_back, clock.now()).attempts == 1


def test_the_updated_at_seen_guards_a_rewrite_of_the_history(store):
    # An SES event rewrites the history it read: a write made since must make it fail, not be lost.
    email_id = "01JTESTUPDATED00000000000H"
    put_record(store, email_id, Status.SENT)
    seen = store.get(email_id)

    with pytest.raises(ConditionFailed):
        stale = Guard({Status.SENT}, updated_at=clock.parse_iso("2000-01-01T00:00:00.000Z"))
        transition(store, email_id, stale, Change(Status.DELIVERED, history=seen.history), clock.now())

    later = clock.after(clock.now(), 1)
    record = transition(
        store,
        email_id,
        Guard({Status.SENT}, updated_at=seen.updated_at),
        Change(Status.DELIVERED, reason="delivered", history=seen.history),
        later,
    )
    assert [entry["status"] for entry in record.history] == ["sent", "delivered"]
    assert clock.iso(record.updated_at) == clock.iso(later)


def test_a_rewritten_history_is_trimmed_and_an_appended_one_keeps_what_was_there(store):
    email_id = "01JTESTHISTORY00000000000J"
    put_record(store, email_id, Status.SENT)
    long_history = [{"status": "queued", "at": f"t{index}"} for index in range(12)]

    record = transition(
        store, email_id, Guard({Status.SENT}), Change(Status.DELIVERED, history=long_history), clock.now()
    )
    assert len(record.history) == 8
    assert record.history[0] == long_history[0]
    assert record.history[-1]["status"] == "delivered"

    record = transition(store, email_id, Guard({Status.DELIVERED}), Change(Status.COMPLAINED), clock.now())
    assert len(record.history) == 9
    assert [entry["status"] for entry in record.history[-2:]] == ["delivered", "complained"]


def test_a_guard_on_several_statuses_accepts_each_of_them_and_only_them(store):
    for index, status in enumerate((Status.QUEUED, Status.RETRYING)):
        email_id = f"01JTESTSEVERAL0000000000{index}K"
        put_record(store, email_id, status)
        record = transition(
            store, email_id, Guard({Status.QUEUED, Status.RETRYING}), change_to(Status.CANCELLED), clock.now()
        )
        assert record.status is Status.CANCELLED
    put_record(store, "01JTESTSEVERAL00000000009K", Status.SENDING)
    with pytest.raises(ConditionFailed):
        transition(
            store,
            "01JTESTSEVERAL00000000009K",
            Guard({Status.QUEUED, Status.RETRYING}),
            change_to(Status.CANCELLED),
            clock.now(),
        )


def test_a_terminal_email_expires_after_the_retention_and_a_live_one_keeps_its_deadline(store):
    email_id = "01JTESTEXPIRY000000000000L"
    put_record(store, email_id, Status.QUEUED)
    now = clock.now()
    deadline = clock.after(now, 90)

    record = transition(store, email_id, Guard({Status.QUEUED}), Change(Status.SENDING, deadline=deadline), now)
    assert record.deadline is not None
    assert clock.iso(record.deadline) == clock.iso(deadline)
    record = transition(store, email_id, Guard({Status.SENDING}), Change(Status.SENT), now)
    assert record.expires_at == clock.epoch(clock.after(now, store.settings.retention_days * 86400))
    assert record.deadline is None


def test_a_history_at_the_limit_is_trimmed_and_one_below_it_is_kept_whole():
    # The record's history never outgrows HISTORY_LIMIT entries once the new one is added.
    at_limit = [{"status": f"s{index}", "at": "t"} for index in range(8)]
    below = at_limit[:7]

    assert [entry["status"] for entry in trimmed(at_limit, limit=8)] == ["s0", "s2", "s3", "s4", "s5", "s6", "s7"]
    assert trimmed(below, limit=8) == below


def test_a_history_entry_says_when_and_cuts_a_long_reason_to_its_limit():
    at = clock.now()

    assert history_entry(Status.SENT, at, None) == {"status": "sent", "at": clock.iso(at)}
    exact = "r" * REASON_LIMIT
    assert history_entry(Status.SENT, at, exact)["reason"] == exact
    cut = history_entry(Status.SENT, at, exact + "s")["reason"]
    assert cut == "r" * (REASON_LIMIT - 1) + "…"
