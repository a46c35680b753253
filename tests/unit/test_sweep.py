"""Which index an email is in at each step, and the sweep that finds the live emails by-deadline does not hold.

An email on its normal path is in by-arrival only (its writes move no index); the requeue function must
still act on it after its deadline if its message is lost or its sender dies: the sweep finds it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from mailqueue import aws, clock, sweeping
from mailqueue.ids import created_ms
from mailqueue.queue import SendQueue
from mailqueue.records import Attr
from mailqueue.requeue import Reason, Requeuer
from mailqueue.settings import Settings, get_settings
from mailqueue.statemachine import Change, Guard, Status, transition
from mailqueue.store import EmailStore

from tests.conftest import ApiClient, an_email


def settings() -> Settings:
    return get_settings()


def store() -> EmailStore:
    return EmailStore(settings(), aws.client("dynamodb"))


def requeuer() -> Requeuer:
    return Requeuer(settings(), store(), SendQueue(settings(), aws.client("sqs")))


def plenty() -> int:
    return 60_000


def record(email_id: str) -> dict[str, Any]:
    found = store().get(email_id)
    assert found is not None
    return found.to_item()


def published(priority: str = "normal") -> list[str]:
    """The ids waiting in the send queue of ``priority``; the queue is left empty."""
    sqs = aws.client("sqs")
    url = settings().queue_url(priority)
    ids: list[str] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            ids.append(json.loads(message["Body"])["id"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return ids


def enqueue(api: ApiClient, **overrides: Any) -> str:
    status, body = api.post("/emails", an_email(**overrides))
    assert status == 202, body
    published(overrides.get("priority", "normal"))
    return str(body["id"])


def claim(email_id: str, at: datetime, seconds: float = 180) -> dict[str, Any]:
    """The sender's claim; the status record as stored after it."""
    change = Change(Status.SENDING, reason="claimed", deadline=clock.after(at, seconds), attempts_delta=1)
    change.set[Attr.CLAIM_TOKEN] = "token-1"
    return transition(store(), email_id, Guard({Status.QUEUED}), change, at).to_item()


def just_after_sweep_point(email_id: str) -> datetime:
    return store().sweep_point(email_id) + timedelta(seconds=1)


# --- which index, when ----------------------------------------------------------------------------------------


def test_an_email_on_its_normal_path_is_in_by_arrival_only(api):
    email_id = enqueue(api)

    enqueued = record(email_id)
    assert enqueued["arrival_shard"] == store().arrival_shard(email_id)
    assert "shard" not in enqueued
    assert "status_shard" not in enqueued

    # Claimed within its horizon and sent: still in no index that moves.
    claimed = claim(email_id, clock.now())
    assert "shard" not in claimed
    sent = transition(
        store(),
        email_id,
        Guard({Status.SENDING}, claim_token="token-1"),
        Change(Status.SENT, reason="accepted", remove=("claim_token",)),
        clock.now(),
    )
    assert sent.shard is None
    assert sent.status_shard is None
    assert sent.arrival_shard == enqueued["arrival_shard"]


def test_a_claim_past_the_horizon_puts_the_email_into_by_deadline(api):
    email_id = enqueue(api)

    claimed = claim(email_id, store().horizon(email_id))

    assert claimed["shard"] == store().deadline_shard(email_id)


def test_scheduled_and_retrying_emails_are_in_by_deadline_however_near_their_deadline(api):
    scheduled = enqueue(api, send_at=clock.iso(clock.after(clock.now(), 3600)))
    assert record(scheduled)["shard"] == store().deadline_shard(scheduled)

    email_id = enqueue(api)
    claim(email_id, clock.now())
    retrying = transition(
        store(),
        email_id,
        Guard({Status.SENDING}, claim_token="token-1"),
        Change(Status.RETRYING, reason="Throttling", deadline=clock.after(clock.now(), 30), remove=("claim_token",)),
        clock.now(),
    )

    assert retrying.deadline is not None
    assert retrying.deadline < store().horizon(email_id)
    assert retrying.shard == store().deadline_shard(email_id)


def test_an_email_in_by_deadline_stays_there_while_live(api):
    email_id = enqueue(api)
    claim(email_id, clock.now())
    transition(
        store(),
        email_id,
        Guard({Status.SENDING}, claim_token="token-1"),
        Change(Status.RETRYING, reason="Throttling", deadline=clock.after(clock.now(), 30), remove=("claim_token",)),
        clock.now(),
    )

    # Queued again well within its horizon: it leaves by-deadline only when no longer live.
    queued = transition(
        store(),
        email_id,
        Guard({Status.RETRYING}),
        Change(Status.QUEUED, reason="backoff passed", deadline=clock.after(clock.now(), 5)),
        clock.now(),
    )
    assert queued.shard == store().deadline_shard(email_id)

    cancelled = transition(
        store(), email_id, Guard({Status.QUEUED}), Change(Status.CANCELLED, reason="cancelled"), clock.now()
    )
    assert cancelled.shard is None
    assert cancelled.deadline is None
    assert cancelled.status_shard == store().status_shard(email_id, "cancelled")


# --- the sweep ------------------------------------------------------------------------------------------------


def test_a_lost_publish_on_the_normal_path_is_published_again_at_its_sweep_point(api):
    def refuse(**_: Any) -> None:
        raise ConnectionError("queue unreachable")

    aws.client("sqs").meta.events.register("before-call.sqs.SendMessage", refuse)
    try:
        status, body = api.post("/emails", an_email())
    finally:
        aws.client("sqs").meta.events.unregister("before-call.sqs.SendMessage", refuse)
    assert (status, body["published"]) == (202, False)
    email_id = body["id"]
    assert "shard" not in record(email_id)

    summary = requeuer().run(plenty, now=just_after_sweep_point(email_id))

    assert summary.requeued[Reason.PUBLISH_LOST] == 1
    assert summary.swept == 1
    assert published() == [email_id]
    requeued = record(email_id)
    assert requeued["status"] == "queued"
    # Its new deadline lies past its horizon: by-deadline holds it from now on.
    assert requeued["shard"] == store().deadline_shard(email_id)


def test_a_sender_that_died_after_an_early_claim_is_found_by_the_sweep(api):
    email_id = enqueue(api)
    claim(email_id, clock.now())

    summary = requeuer().run(plenty, now=just_after_sweep_point(email_id))

    assert summary.requeued[Reason.CLAIM_EXPIRED] == 1
    current = record(email_id)
    assert current["status"] == "queued"
    assert current["attempts"] == 1
    assert "claim_token" not in current
    assert published() == [email_id]


def test_the_sweep_waits_for_the_sweep_point(api):
    email_id = enqueue(api)
    claim(email_id, clock.now())

    summary = requeuer().run(plenty, now=store().sweep_point(email_id) - timedelta(seconds=1))

    assert summary.swept == 0
    assert record(email_id)["status"] == "sending"


def test_the_sweep_examines_each_email_once(api):
    ids = [enqueue(api) for _ in range(3)]
    later = max(just_after_sweep_point(email_id) for email_id in ids)

    first = requeuer().run(plenty, now=later)
    second = requeuer().run(plenty, now=clock.after(later, 60))

    assert first.swept == 3
    assert second.swept == 0
    # Queued and unpublished at their sweep point: published once, by the first run.
    assert sorted(published()) == sorted(ids)


def test_the_sweep_leaves_emails_that_moved_on_or_that_by_deadline_holds(api):
    sent = enqueue(api)
    claim(sent, clock.now())
    transition(
        store(),
        sent,
        Guard({Status.SENDING}, claim_token="token-1"),
        Change(Status.SENT, reason="accepted", remove=("claim_token",)),
        clock.now(),
    )
    scheduled = enqueue(api, send_at=clock.iso(clock.after(clock.now(), 7 * 86400)))

    summary = requeuer().run(plenty, now=max(just_after_sweep_point(sent), just_after_sweep_point(scheduled)))

    assert summary.swept == 2
    assert summary.requeued_total == 0
    assert record(sent)["status"] == "sent"
    assert record(scheduled)["status"] == "scheduled"
    assert published() == []


def test_a_live_email_whose_deadline_has_not_passed_goes_into_by_deadline_unacted(api):
    # A deadline past the horizon written without entering by-deadline: a function whose clock ran ahead.
    email_id = enqueue(api)
    claim(email_id, clock.now())
    far = clock.iso(clock.after(store().sweep_point(email_id), 600))
    aws.client("dynamodb").update_item(
        TableName=settings().table_name,
        Key=EmailStore.key(email_id),
        UpdateExpression="SET deadline = :far",
        ExpressionAttributeValues={":far": {"S": far}},
    )

    summary = requeuer().run(plenty, now=just_after_sweep_point(email_id))

    assert summary.requeued_total == 0
    current = record(email_id)
    assert current["status"] == "sending"
    assert current["shard"] == store().deadline_shard(email_id)
    # ... and by-deadline then brings it back once its claim expires.
    after = requeuer().run(plenty, now=clock.after(clock.parse_iso(far), 1))
    assert after.requeued[Reason.CLAIM_EXPIRED] == 1


def test_a_sweep_cut_short_by_time_goes_on_where_it_stopped(api):
    ids = [enqueue(api) for _ in range(4)]
    later = max(just_after_sweep_point(email_id) for email_id in ids)
    sweep = sweeping.Sweep(store(), page_size=1)
    acted: list[str] = []

    first = sweep.run(later, lambda item: acted.append(item.email_id), lambda: len(acted) >= 2)
    second = sweep.run(later, lambda item: acted.append(item.email_id), lambda: False)

    assert first.stopped_early
    assert (first.examined, second.examined) == (2, 2)
    assert not second.stopped_early
    assert sorted(acted) == sorted(ids)


@pytest.mark.parametrize("lag", [1, 30])
def test_the_horizon_and_sweep_point_follow_the_id_the_grace_and_the_lag(lag):
    custom = settings().model_copy({"sweep_lag_seconds": lag})
    email_id = "01KB0000000000000000000000"
    made = clock.from_epoch_ms(created_ms(email_id))
    local = EmailStore(custom, None)

    assert made.year == 2025
    assert local.horizon(email_id) == made + timedelta(seconds=custom.queued_grace_seconds + lag)
    assert local.sweep_point(email_id) == made + timedelta(seconds=custom.queued_grace_seconds + 2 * lag)
    assert sweeping.Sweep(local).last_sweepable(local.sweep_point(email_id)) >= email_id
    assert sweeping.Sweep(local).last_sweepable(local.sweep_point(email_id) - timedelta(milliseconds=1)) < email_id
