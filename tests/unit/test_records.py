"""The status record's type: built from the stored item, giving that item back exactly, and shown by the API
as the item stores it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import boto3
import pytest
from mailqueue import clock
from mailqueue.records import Attr, StatusRecord
from mailqueue.statemachine import Change, Guard, Status, transition
from mailqueue.store import EmailStore, decoded

from tests.conftest import ApiClient, an_email


def stored(stack: Any, email_id: str) -> dict[str, Any]:
    """The status item as the table holds it, decoded as the store decodes items."""
    item = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key=EmailStore.key(email_id), ConsistentRead=True
    )["Item"]
    return decoded(item)


def store_of(api: ApiClient) -> EmailStore:
    store: EmailStore = api.module.mailqueue.store
    return store


def test_a_record_gives_back_exactly_the_item_it_was_built_from_at_every_step(api, stack):
    # Given an email through enqueue, a claim, a retry, a send and a bounce: every attribute the store writes
    _, body = api.post("/emails", an_email(metadata={"order": 42, "ratio": 0.5}, priority="high"))
    email_id, store, now = body["id"], store_of(api), clock.now()
    claim = Change(
        Status.SENDING, reason="claimed", deadline=clock.after(now, 180), attempts_delta=1, set={Attr.CLAIM_TOKEN: "t"}
    )
    retry = Change(
        Status.RETRYING,
        reason="Throttling",
        deadline=clock.after(now, 3600),
        set={Attr.LAST_ERROR: {"code": "Throttling", "message": "slow down"}},
        remove=(Attr.CLAIM_TOKEN,),
    )
    sent = Change(Status.SENT, reason="accepted", set={Attr.SES_MESSAGE_ID: "0100-m"}, remove=(Attr.LAST_ERROR,))
    bounce = {"type": "Permanent/General", "recipients": [{"address": "alice@example.org", "status": "5.1.1"}]}
    steps = [
        (Guard({Status.QUEUED}), claim),
        (Guard({Status.SENDING}, claim_token="t"), retry),
        (Guard({Status.RETRYING}), Change(Status.QUEUED, reason="due", deadline=clock.after(now, 60))),
        (Guard({Status.QUEUED}), claim),
        (Guard({Status.SENDING}, claim_token="t"), sent),
        (Guard({Status.SENT}), Change(Status.BOUNCED, reason="bounce", set={Attr.BOUNCE: bounce})),
    ]

    items = [stored(stack, email_id)]
    returned = [store.get(email_id)]
    for guard, change in steps:
        returned.append(transition(store, email_id, guard, change, now))
        items.append(stored(stack, email_id))

    # Then each record holds what its item holds, typed, and gives the item back unchanged
    for item, record in zip(items, returned, strict=True):
        assert record == StatusRecord.from_item(item)
        assert record.to_item() == item
    enqueued, retrying, bounced = returned[0], returned[2], returned[-1]
    assert enqueued is not None
    assert (enqueued.status, enqueued.priority, enqueued.attempts, enqueued.sequence) == (Status.QUEUED, "high", 0, 1)
    assert enqueued.metadata == {"order": 42, "ratio": 0.5}
    assert enqueued.deadline is not None and enqueued.deadline.tzinfo is not None
    assert enqueued.content_until is not None and enqueued.content_until > enqueued.deadline
    assert enqueued.arrival_shard == store.arrival_shard(email_id)
    assert retrying.last_error == {"code": "Throttling", "message": "slow down"}
    assert retrying.error_code == "Throttling"
    assert retrying.shard == store.deadline_shard(email_id)
    assert retrying.claim_token is None
    assert (bounced.status, bounced.deadline, bounced.shard) == (Status.BOUNCED, None, None)
    assert bounced.bounce == bounce
    assert bounced.ses_message_id == "0100-m"
    assert bounced.status_shard == store.status_shard(email_id, Status.BOUNCED)
    assert bounced.expires_at is not None and bounced.expires_at > clock.epoch(now)
    assert [step["status"] for step in bounced.history][-2:] == ["sent", "bounced"]


def test_a_record_read_from_an_index_holds_what_the_index_projects_and_defaults_for_the_rest():
    item = {
        "pk": "01JDQ3Z6W7X8Y9ZA0B1C2D3E4F",
        "sk": "status",
        "status": "retrying",
        "deadline": "2026-12-01T03:00:00.120Z",
        "shard": 3,
        "priority": "high",
        "attempts": 2,
    }

    record = StatusRecord.from_item(item)

    assert record.status is Status.RETRYING
    assert record.deadline == clock.parse_iso("2026-12-01T03:00:00.120Z")
    assert (record.shard, record.priority, record.attempts) == (3, "high", 2)
    assert (record.created_at, record.updated_at, record.history, record.last_error) == (None, None, (), None)
    assert record.to_item() == item


def test_an_item_whose_status_is_not_a_status_is_refused():
    with pytest.raises(ValueError, match="lost"):
        StatusRecord.from_item({"pk": "01JDQ3Z6W7X8Y9ZA0B1C2D3E4F", "status": "lost"})


def test_a_record_is_frozen():
    record = StatusRecord("01JDQ3Z6W7X8Y9ZA0B1C2D3E4F", Status.QUEUED)

    with pytest.raises(AttributeError):
        record.status = Status.SENT  # type: ignore[misc]


def test_the_api_shows_the_email_as_its_item_stores_it(api, stack):
    # Given a scheduled email with metadata, and a failed one with its error
    send_at = clock.after(clock.now(), 3 * 3600)
    _, body = api.post("/emails", an_email(metadata={"order": 42}, send_at=clock.iso(send_at), cc=["bob@example.org"]))
    scheduled = body["id"]
    _, body = api.post("/emails", an_email(subject="Refused"))
    failed, store, now = body["id"], store_of(api), clock.now()
    claim = Change(
        Status.SENDING, reason="claimed", deadline=clock.after(now, 180), attempts_delta=1, set={Attr.CLAIM_TOKEN: "t"}
    )
    transition(store, failed, Guard({Status.QUEUED}), claim, now)
    error = {"code": "MessageRejected", "message": "Email address is not verified."}
    refused = Change(Status.FAILED, reason="failed: MessageRejected", set={Attr.LAST_ERROR: error})
    transition(store, failed, Guard({Status.SENDING}), refused, now)

    # When the API shows them, whole and in list pages
    _, whole = api.get(f"/emails/{scheduled}")
    _, page = api.get("/emails", query="status=scheduled")
    _, failed_whole = api.get(f"/emails/{failed}")
    _, failed_page = api.get("/emails", query="status=failed")

    # Then every field is the stored one, its timestamps the stored strings
    item = stored(stack, scheduled)
    expected = {
        "id": scheduled,
        "status": "scheduled",
        "priority": "normal",
        "attempts": 0,
        "created_at": item["created_at"],
        "updated_at": item["updated_at"],
        "to": "alice@example.org",
        "subject": "Your receipt",
        "recipients": {"to": ["alice@example.org"], "cc": ["bob@example.org"], "bcc": []},
        "summary": False,
        "send_at": clock.iso(send_at),
        "deadline": clock.iso(send_at),
        "ses_message_id": None,
        "last_error": None,
        "bounce": None,
        "metadata": {"order": 42},
        "tags": [],
        "template": None,
        "template_version": None,
        "history": [{"status": "scheduled", "at": item["created_at"], "reason": "accepted"}],
    }
    assert whole == expected
    assert page["emails"] == [{**expected, "recipients": None, "summary": True, "tags": None}]
    item = stored(stack, failed)
    assert failed_whole["status"] == "failed"
    assert (failed_whole["deadline"], failed_whole["last_error"], failed_whole["attempts"]) == (None, error, 1)
    assert failed_whole["updated_at"] == item["updated_at"] == clock.iso(now)
    assert failed_whole["history"] == item["history"]
    # by-status projects the summary only: a failed email's page shows no history
    [listed] = failed_page["emails"]
    assert listed == {
        **failed_whole,
        "subject": "Refused",
        "recipients": None,
        "summary": True,
        "tags": None,
        "last_error": None,
        "metadata": None,
        "history": [],
    }


def test_a_deadline_read_back_is_the_instant_that_was_written(api, stack):
    _, body = api.post("/emails", an_email())
    store, now = store_of(api), clock.now()
    deadline = now + timedelta(seconds=90, microseconds=123_456)
    change = Change(Status.SENDING, reason="claimed", deadline=deadline, set={Attr.CLAIM_TOKEN: "t"})

    record = transition(store, body["id"], Guard({Status.QUEUED}), change, now)

    # Stored to the millisecond: the guard written from it matches the item exactly.
    assert record.deadline == deadline.replace(microsecond=deadline.microsecond // 1000 * 1000)
    assert stored(stack, body["id"])["deadline"] == clock.iso(deadline)
    back = Change(Status.QUEUED, reason="claim expired", deadline=clock.after(now, 60), remove=(Attr.CLAIM_TOKEN,))
    seen = Guard({Status.SENDING}, deadline=record.deadline)
    assert transition(store, body["id"], seen, back, now).status is Status.QUEUED
