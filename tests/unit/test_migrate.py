"""A table written before by-arrival: its emails keep being acted on, and the migration makes them listable."""

from __future__ import annotations

from datetime import timedelta

from mailqueue import aws, clock
from mailqueue.queue import SendQueue
from mailqueue.requeue import Reason, Requeuer
from mailqueue.settings import get_settings
from mailqueue.statemachine import Change, Guard, Status, transition
from mailqueue.store import EmailStore
from mailqueue_dev.migrate import migrate

from tests.conftest import ApiClient, an_email


def store() -> EmailStore:
    return EmailStore(get_settings(), aws.client("dynamodb"))


def as_written_before(email_id: str) -> None:
    """The status record as the earlier design wrote it: in by-deadline and by-status, not in by-arrival."""
    current = store().get(email_id)
    assert current is not None
    aws.client("dynamodb").update_item(
        TableName=get_settings().table_name,
        Key=EmailStore.key(email_id),
        UpdateExpression="SET #shard = :shard, status_shard = :status_shard REMOVE arrival_shard",
        ExpressionAttributeNames={"#shard": "shard"},
        ExpressionAttributeValues={
            ":shard": {"N": str(store().deadline_shard(email_id))},
            ":status_shard": {"S": store().status_shard(email_id, current.status)},
        },
    )


def listed(api: ApiClient, status: str) -> list[str]:
    answer, page = api.get("/emails", query=f"status={status}&limit=100")
    assert answer == 200, page
    return [email["id"] for email in page["emails"]]


def test_an_old_live_email_stays_in_by_deadline_and_is_acted_on_after_its_deadline(api):
    email_id = api.post("/emails", an_email())[1]["id"]
    as_written_before(email_id)
    # Claimed at once: its claim lies within its horizon, where a new email would leave by-deadline alone.
    claimed = transition(
        store(),
        email_id,
        Guard({Status.QUEUED}),
        Change(Status.SENDING, reason="claimed", deadline=clock.after(clock.now(), 180), attempts_delta=1),
        clock.now(),
    )
    assert claimed.shard == store().deadline_shard(email_id)
    assert claimed.deadline is not None

    summary = Requeuer(get_settings(), store(), SendQueue(get_settings(), aws.client("sqs"))).run(
        lambda: 60_000, now=claimed.deadline + timedelta(seconds=1)
    )

    assert summary.requeued[Reason.CLAIM_EXPIRED] == 1


def test_the_migration_makes_old_emails_listable_once(api):
    queued = api.post("/emails", an_email())[1]["id"]
    failed = api.post("/emails", an_email())[1]["id"]
    transition(store(), failed, Guard({Status.QUEUED}), Change(Status.CANCELLED, reason="cancelled"), clock.now())
    for email_id in (queued, failed):
        as_written_before(email_id)
    assert queued not in listed(api, "queued")

    first = migrate(aws.client("dynamodb"), get_settings().table_name, get_settings().deadline_shards)
    second = migrate(aws.client("dynamodb"), get_settings().table_name, get_settings().deadline_shards)

    assert (first.updated, second.updated) == (2, 0)
    assert listed(api, "queued") == [queued]
    assert listed(api, "cancelled") == [failed]
    record = store().get(queued)
    assert record is not None
    assert record.arrival_shard == store().arrival_shard(queued)
    assert record.status_shard is None
    cancelled = store().get(failed)
    assert cancelled is not None
    assert cancelled.status_shard == store().status_shard(failed, "cancelled")
