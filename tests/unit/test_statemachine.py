"""Every legal transition is performed as a conditional write; every illegal one is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from mailqueue import aws, clock
from mailqueue.errors import IllegalTransition
from mailqueue.settings import get_settings
from mailqueue.statemachine import ALLOWED, LIVE, Change, Guard, Status, transition, trimmed
from mailqueue.store import ConditionFailed, EmailStore

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
    store.put_new([(record, {"pk": email_id, "sk": "content"})])


class WriteRecorder(EmailStore):
    """A store that records writes instead of making them."""

    def __init__(self) -> None:
        super().__init__(get_settings(), client=None)
        self.writes: list[str] = []

    def update_status(self, email_id, expression, condition, names, values):
        self.writes.append(email_id)
        return {}


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

    # Then the status, shard, deadline (live only), TTL (terminal only) and history say so
    assert record["status"] == target.value
    assert record["status_shard"] == store.status_shard(email_id, target)
    assert ("deadline" in record) is (target in LIVE)
    assert ("expires_at" in record) is (target not in LIVE)
    assert record["history"][-1]["status"] == target.value
    assert record["history"][-1]["reason"] == f"to {target}"
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
    assert failure.value.current["status"] == "cancelled"


def test_claim_token_and_seen_deadline_guard_the_write(store):
    email_id = "01JTESTCLAIM0000000000000D"
    put_record(store, email_id, Status.SENDING, claim_token="mine")
    seen = store.get(email_id)["deadline"]

    with pytest.raises(ConditionFailed):
        transition(store, email_id, Guard({Status.SENDING}, claim_token="theirs"), change_to(Status.SENT), clock.now())
    with pytest.raises(ConditionFailed):
        stale = Guard({Status.SENDING}, deadline="2000-01-01T00:00:00.000Z")
        transition(store, email_id, stale, change_to(Status.QUEUED), clock.now())

    record = transition(store, email_id, Guard({Status.SENDING}, deadline=seen), change_to(Status.QUEUED), clock.now())
    assert record["status"] == "queued"


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
