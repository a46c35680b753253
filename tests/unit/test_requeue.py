"""The requeue function against moto: every due live email is acted on once, and only due ones."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from mailqueue import aws, clock
from mailqueue.queue import SendQueue
from mailqueue.records import Attr
from mailqueue.requeue import GIVEN_UP_REASON, HELD_REASON, Reason, Requeuer, send_backlogs
from mailqueue.settings import Settings, get_settings
from mailqueue.statemachine import Change, Guard, Status, transition
from mailqueue.store import EmailStore
from mailqueue_dev.lambda_events import sqs_event
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from tests.conftest import ApiClient, an_email, load_handler

EVENT = json.loads((Path(__file__).parents[2] / "events" / "requeue" / "scheduled.json").read_text())


# --- helpers ------------------------------------------------------------------------------------------------


def settings() -> Settings:
    return get_settings()


def store() -> EmailStore:
    return EmailStore(settings(), aws.client("dynamodb"))


def requeuer(**overrides: Any) -> Requeuer:
    return Requeuer(settings(), store(), SendQueue(settings(), aws.client("sqs")), **overrides)


def plenty() -> int:
    """A remaining-time budget that never runs low."""
    return 60_000


def ago(seconds: float = 60) -> datetime:
    return clock.now() - timedelta(seconds=seconds)


def drain(priority: str = "normal") -> list[str]:
    """The email ids waiting in the send queue of ``priority``; the queue is left empty."""
    sqs = aws.client("sqs")
    url = settings().queue_url(priority)
    ids: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return ids
        for message in messages:
            ids.append(json.loads(message["Body"])["id"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def enqueue(api: ApiClient, **overrides: Any) -> str:
    """An accepted email, its enqueue message already consumed."""
    status, body = api.post("/emails", an_email(**overrides))
    assert status == 202, body
    drain(overrides.get("priority", "normal"))
    return str(body["id"])


def set_deadline(email_id: str, deadline: datetime) -> None:
    """Write the deadline directly: a scheduled or queued email's deadline passing, without waiting for it.

    The email goes into by-deadline as well, as one whose deadline lay past its horizon would be: these tests
    are about acting on what that index holds (tests/unit/test_sweep.py finds the others)."""
    aws.client("dynamodb").update_item(
        TableName=settings().table_name,
        Key=EmailStore.key(email_id),
        UpdateExpression="SET #deadline = :deadline, #shard = :shard",
        ExpressionAttributeNames={"#deadline": "deadline", "#shard": "shard"},
        ExpressionAttributeValues={
            ":deadline": {"S": clock.iso(deadline)},
            ":shard": {"N": str(store().deadline_shard(email_id))},
        },
    )


def claim(email_id: str, deadline: datetime, attempts: int | None = None) -> None:
    """Move a queued email to sending as the sender's claim does, with the claim expiring at ``deadline``."""
    change = Change(Status.SENDING, reason="claimed", deadline=deadline, set={Attr.CLAIM_TOKEN: "token-1"})
    if attempts is None:
        change.attempts_delta = 1
    else:
        change.set[Attr.ATTEMPTS] = attempts
    transition(store(), email_id, Guard({Status.QUEUED}), change, ago(300))
    index_deadline(email_id)


def index_deadline(email_id: str) -> None:
    """Put the email into by-deadline, as one whose deadline lay past its horizon would be (see set_deadline)."""
    aws.client("dynamodb").update_item(
        TableName=settings().table_name,
        Key=EmailStore.key(email_id),
        UpdateExpression="SET #shard = :shard",
        ExpressionAttributeNames={"#shard": "shard"},
        ExpressionAttributeValues={":shard": {"N": str(store().deadline_shard(email_id))}},
    )


def back_off(email_id: str, deadline: datetime, attempts: int | None = None) -> None:
    """A queued email that was claimed, hit a transient error and waits until ``deadline``."""
    claim(email_id, clock.after(clock.now(), 180), attempts)
    transition(
        store(),
        email_id,
        Guard({Status.SENDING}, claim_token="token-1"),
        Change(
            Status.RETRYING,
            reason="Throttling: Maximum sending rate exceeded.",
            deadline=deadline,
            set={"last_error": {"code": "Throttling", "message": "Maximum sending rate exceeded."}},
            remove=("claim_token",),
        ),
        ago(200),
    )


@contextmanager
def sqs_unreachable(operation: str) -> Iterator[None]:
    """Every call of SQS's ``operation`` fails as an unreachable queue does, until the block ends."""

    def refuse(**_: Any) -> None:
        raise ConnectionError("queue unreachable")

    sqs = aws.client("sqs")
    sqs.meta.events.register(f"before-call.sqs.{operation}", refuse)
    try:
        yield
    finally:
        sqs.meta.events.unregister(f"before-call.sqs.{operation}", refuse)


def record(email_id: str) -> dict[str, Any]:
    found = store().get(email_id)
    assert found is not None
    return found.to_item()


def run_handler(context: Any) -> dict[str, Any]:
    result: dict[str, Any] = load_handler("requeue").handler(EVENT, context.invocation())
    return result


def assert_requeued(email_id: str, history_reason: str, priority: str = "normal") -> dict[str, Any]:
    current = record(email_id)
    assert current["status"] == "queued"
    assert clock.parse_iso(current["deadline"]) > clock.now() + timedelta(seconds=settings().queued_grace_seconds - 60)
    assert current["history"][-1]["status"] == "queued"
    assert current["history"][-1]["reason"] == history_reason
    assert "claim_token" not in current
    assert drain(priority) == [email_id]
    return current


# --- the four cases, through the handler --------------------------------------------------------------------


def test_a_scheduled_email_whose_send_at_came_is_queued_and_published(api, context):
    send_at = clock.now() + timedelta(hours=2)
    email_id = enqueue(api, send_at=send_at.isoformat())
    assert record(email_id)["status"] == "scheduled"
    set_deadline(email_id, ago())

    result = run_handler(context)

    assert result["requeued"][Reason.SEND_AT_REACHED] == 1
    assert_requeued(email_id, "send_at reached")


def test_a_queued_email_whose_publish_was_lost_is_published_again(api, context):
    # The enqueue's publish fails: the email is stored, queued, and no message exists.
    with sqs_unreachable("SendMessage"):
        status, body = api.post("/emails", an_email(priority="high"))
    assert status == 202
    assert body["published"] is False
    email_id = body["id"]
    assert drain("high") == []
    set_deadline(email_id, ago())

    result = run_handler(context)

    assert result["requeued"][Reason.PUBLISH_LOST] == 1
    current = assert_requeued(email_id, "published again: not sent within the grace period", priority="high")
    assert [entry["status"] for entry in current["history"]] == ["queued", "queued"]


def test_a_sending_email_whose_claim_expired_is_queued_and_published(api, context):
    email_id = enqueue(api)
    claim(email_id, deadline=ago())

    result = run_handler(context)

    assert result["requeued"][Reason.CLAIM_EXPIRED] == 1
    current = assert_requeued(email_id, "claim expired: the sender stopped before recording an outcome")
    # The attempt the dead sender started is counted.
    assert current["attempts"] == 1


def test_a_retrying_email_whose_backoff_passed_is_queued_and_published(api, context):
    email_id = enqueue(api)
    back_off(email_id, deadline=ago())

    result = run_handler(context)

    assert result["requeued"][Reason.BACKOFF_PASSED] == 1
    current = assert_requeued(email_id, "backoff passed")
    assert current["attempts"] == 1
    assert [entry["status"] for entry in current["history"]] == ["queued", "sending", "retrying", "queued"]


# --- giving up ----------------------------------------------------------------------------------------------


def test_an_expired_claim_on_the_last_attempt_ends_failed_with_the_reason(api, context):
    email_id = enqueue(api)
    claim(email_id, deadline=ago(), attempts=settings().max_attempts)

    result = run_handler(context)

    assert result["given_up"] == 1
    assert result["requeued_total"] == 0
    current = record(email_id)
    assert current["status"] == "failed"
    assert current["history"][-1] == {"status": "failed", "at": current["updated_at"], "reason": GIVEN_UP_REASON}
    assert current["last_error"]["code"] == "ClaimExpired"
    assert "deadline" not in current
    assert "claim_token" not in current
    assert "expires_at" in current
    assert drain() == []


def test_a_retrying_email_out_of_attempts_ends_failed_keeping_its_last_error(api):
    email_id = enqueue(api)
    back_off(email_id, deadline=ago(), attempts=settings().max_attempts)

    summary = requeuer().run(plenty)

    assert summary.given_up == 1
    current = record(email_id)
    assert current["status"] == "failed"
    assert current["history"][-1]["reason"] == GIVEN_UP_REASON
    assert current["last_error"] == {"code": "Throttling", "message": "Maximum sending rate exceeded."}
    assert drain() == []


# --- what must be left alone --------------------------------------------------------------------------------


def test_emails_whose_deadline_is_ahead_are_left_alone(api):
    queued = enqueue(api)
    scheduled = enqueue(api, send_at=(clock.now() + timedelta(hours=1)).isoformat())
    retrying = enqueue(api)
    back_off(retrying, deadline=clock.after(clock.now(), 300))
    before = {email_id: record(email_id) for email_id in (queued, scheduled, retrying)}

    summary = requeuer().run(plenty)

    assert summary.examined == 0
    assert summary.requeued_total == 0
    assert {email_id: record(email_id) for email_id in before} == before
    assert drain() == []


def test_a_cancelled_email_is_never_resurrected(api):
    email_id = enqueue(api)
    assert api.delete(f"/emails/{email_id}")[0] == 200
    assert "deadline" not in record(email_id)
    assert requeuer().run(plenty).examined == 0
    # Even a deadline written onto it (as a stale index entry would show) does not bring it back.
    set_deadline(email_id, ago())

    summary = requeuer().run(plenty)

    assert summary.examined == 1
    assert summary.skipped == 1
    assert record(email_id)["status"] == "cancelled"
    assert drain() == []


def test_a_cancel_between_the_read_and_the_write_wins(api):
    """The run read the email as due, then the caller cancelled it: the run's guarded write loses."""
    email_id = enqueue(api, send_at=(clock.now() + timedelta(hours=1)).isoformat())
    set_deadline(email_id, ago())
    service = requeuer()
    query_due = service.store.query_due

    def cancel_after_reading(*args: Any, **kwargs: Any) -> Any:
        page = query_due(*args, **kwargs)
        if any(item.email_id == email_id for item in page[0]):
            assert api.delete(f"/emails/{email_id}")[0] == 200
        return page

    service.store.query_due = cancel_after_reading

    summary = service.run(plenty)

    assert summary.skipped == 1
    assert summary.requeued_total == 0
    assert record(email_id)["status"] == "cancelled"
    assert drain() == []


# --- two runs at once ----------------------------------------------------------------------------------------


def test_two_runs_on_the_same_due_page_publish_each_email_once(api):
    """Run B does all its work between run A's read of a page and A's writes: A's writes all lose."""
    email_ids = [enqueue(api) for _ in range(6)]
    for email_id in email_ids[:3]:
        claim(email_id, deadline=ago())
    for email_id in email_ids[3:]:
        set_deadline(email_id, ago())
    first, second = requeuer(), requeuer()
    query_due = first.store.query_due
    summaries = {}

    def interleaved(*args: Any, **kwargs: Any) -> Any:
        page = query_due(*args, **kwargs)
        if page[0] and "second" not in summaries:
            summaries["second"] = second.run(plenty)
        return page

    first.store.query_due = interleaved
    summaries["first"] = first.run(plenty)

    published = drain()
    assert Counter(published) == Counter(email_ids)
    assert summaries["second"].requeued_total == 6
    assert summaries["first"].requeued_total == 0
    assert summaries["first"].examined > 0
    assert summaries["first"].skipped == summaries["first"].examined
    for email_id in email_ids:
        assert record(email_id)["status"] == "queued"
        assert [entry["status"] for entry in record(email_id)["history"]].count("queued") == 2


def test_a_stale_read_of_an_expired_claim_never_releases_the_claim_taken_since(api):
    """Run A reads an expired claim; before A writes, run B requeues the email and a sender claims it
    afresh. A's write must lose: the email is sending under the new claim, which only its sender ends."""
    email_id = enqueue(api)
    claim(email_id, deadline=ago())
    first, second = requeuer(), requeuer()
    query_due = first.store.query_due

    def new_claim_after_reading(*args: Any, **kwargs: Any) -> Any:
        page = query_due(*args, **kwargs)
        if any(item.email_id == email_id for item in page[0]) and record(email_id)["status"] == "sending":
            assert second.run(plenty).requeued_total == 1
            fresh = Change(Status.SENDING, reason="claimed", deadline=clock.after(clock.now(), 180))
            fresh.set = {Attr.CLAIM_TOKEN: "token-2"}
            fresh.attempts_delta = 1
            transition(store(), email_id, Guard({Status.QUEUED}), fresh, clock.now())
        return page

    first.store.query_due = new_claim_after_reading
    summary = first.run(plenty)

    assert summary.requeued_total == 0
    assert summary.skipped == 1
    email = record(email_id)
    assert email["status"] == "sending"
    assert email["claim_token"] == "token-2"
    assert drain() == [email_id]  # published once, by run B


def test_two_runs_one_after_the_other_act_once(api):
    email_id = enqueue(api)
    back_off(email_id, deadline=ago())

    first = requeuer().run(plenty)
    second = requeuer().run(plenty)

    assert first.requeued_total == 1
    assert second.examined == 0
    assert drain() == [email_id]


# --- more than one run can take -----------------------------------------------------------------------------


class Budget:
    """A remaining-time callable that spends ``cost`` each time it is asked: deterministic, no clock."""

    def __init__(self, millis: int, cost: int) -> None:
        self.millis = millis
        self.cost = cost

    def __call__(self) -> int:
        self.millis -= self.cost
        return self.millis


def test_a_run_that_runs_out_of_time_leaves_the_rest_to_the_next(api):
    email_ids = [enqueue(api) for _ in range(12)]
    for email_id in email_ids:
        set_deadline(email_id, ago())

    # Room for a handful of checks only, and small pages: the first run cannot finish.
    first = requeuer(page_size=2, reserve_millis=1_000).run(Budget(millis=1_000 + 8 * 100, cost=100))
    after_first = drain()
    second = requeuer(page_size=2, reserve_millis=1_000).run(plenty)
    after_second = drain()

    assert first.stopped_early is True
    assert 0 < first.requeued_total < len(email_ids)
    assert second.stopped_early is False
    assert first.requeued_total + second.requeued_total == len(email_ids)
    assert Counter(after_first + after_second) == Counter(email_ids)
    assert all(record(email_id)["status"] == "queued" for email_id in email_ids)


def test_pages_of_every_shard_are_read_to_the_end(api):
    email_ids = [enqueue(api) for _ in range(9)]
    for email_id in email_ids:
        set_deadline(email_id, ago())

    summary = requeuer(page_size=1).run(plenty)

    assert summary.requeued == Counter({Reason.PUBLISH_LOST: 9})
    assert summary.stopped_early is False
    assert sorted(drain()) == sorted(email_ids)


# --- publishing -------------------------------------------------------------------------------------------


def test_a_failed_publish_leaves_the_email_queued_with_its_new_deadline(api):
    email_id = enqueue(api)
    claim(email_id, deadline=ago())

    with sqs_unreachable("SendMessage"):
        summary = requeuer().run(plenty)

    assert summary.publish_failures == 1
    current = record(email_id)
    assert current["status"] == "queued"
    assert drain() == []
    # When the new deadline passes, a later run publishes it.
    later = clock.parse_iso(current["deadline"]) + timedelta(seconds=1)
    retried = requeuer().run(plenty, now=later)
    assert retried.requeued == Counter({Reason.PUBLISH_LOST: 1})
    assert drain() == [email_id]


def test_publishes_in_batches_of_ten_to_the_queue_of_each_priority(api):
    normal = [enqueue(api) for _ in range(12)]
    high = [enqueue(api, priority="high") for _ in range(3)]
    for email_id in normal + high:
        set_deadline(email_id, ago())
    calls: list[int] = []
    queues: list[str] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        calls.append(len(params.get("Entries", [params])))
        queues.append(params["QueueUrl"])

    sqs = aws.client("sqs")
    for operation in ("SendMessage", "SendMessageBatch"):
        sqs.meta.events.register(f"provide-client-params.sqs.{operation}", count)
    run = requeuer(page_size=100)
    publish = run._publish

    def marked(*args: Any) -> None:
        queues.append("publish")
        publish(*args)

    run._publish = marked  # type: ignore[method-assign]
    try:
        summary = run.run(plenty)
    finally:
        for operation in ("SendMessage", "SendMessageBatch"):
            sqs.meta.events.unregister(f"provide-client-params.sqs.{operation}", count)

    assert summary.requeued_total == 15
    assert sum(calls) == 15
    assert all(size <= 10 for size in calls)
    # Batched across the shards' pages: at most two publishes, each one or two calls per queue.
    assert len(calls) <= 5
    # High priority first within each publish (which emails a publish holds depends on the shards the ids
    # fall in): a slow or failing publish delays the normal queue, not the urgent one.
    publishes = " ".join(queues).split("publish")
    high_url, normal_url = settings().queue_url("high"), settings().queue_url("normal")
    for published in publishes:
        order = published.split()
        assert order == sorted(order, key=lambda url: url != high_url), order
    assert {high_url, normal_url} <= set(queues)
    assert sorted(drain("normal")) == sorted(normal)
    assert sorted(drain("high")) == sorted(high)


# --- the history stays small ----------------------------------------------------------------------------------


def test_a_queued_email_requeued_again_and_again_keeps_a_bounded_history(api):
    email_id = enqueue(api)
    now = clock.now()
    for _ in range(20):
        now = acted_on_at(email_id)
        assert requeuer().run(plenty, now=now).requeued_total == 1

    history = record(email_id)["history"]
    assert len(history) <= 8
    assert history[0]["reason"] == "accepted"
    assert len(drain()) == 20


def test_the_summary_log_line_and_metrics_name_each_reason(api, context, capsys, caplog):
    scheduled = enqueue(api, send_at=(clock.now() + timedelta(hours=1)).isoformat())
    queued, sending, retrying, exhausted = (enqueue(api) for _ in range(4))
    claim(sending, deadline=ago())
    back_off(retrying, deadline=ago())
    claim(exhausted, deadline=ago(), attempts=settings().max_attempts)
    for email_id in (scheduled, queued):
        set_deadline(email_id, ago())
    capsys.readouterr()
    # The level the first Powertools logger of this process set may be another test's.
    caplog.set_level(logging.INFO, logger="mailqueue")

    run_handler(context)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    requeued = {line["reason"]: line["EmailsRequeued"] for line in lines if "EmailsRequeued" in line}
    assert requeued == {reason.value: [1.0] for reason in Reason}
    # the dimensions an alarm names (ClaimsExpiredAlarm: reason=claim_expired and service), exactly
    for line in (line for line in lines if "EmailsRequeued" in line):
        [directive] = line["_aws"]["CloudWatchMetrics"]
        assert [sorted(dimensions) for dimensions in directive["Dimensions"]] == [["reason", "service"]]
        assert line["service"] == "mailqueue"
    assert next(line for line in lines if "EmailsGivenUp" in line)["EmailsGivenUp"] == [1.0]
    (summary,) = [entry for entry in caplog.records if entry.getMessage() == "requeue run finished"]
    assert summary.requeued == {reason.value: 1 for reason in Reason}
    assert summary.requeued_total == 4
    assert summary.given_up == 1
    assert summary.stopped_early is False


# --- a queued email still behind the send queue's backlog is held once, not published again ---------------


def backlogged_requeuer() -> Requeuer:
    """A requeuer that reads the send queues' backlog, as the requeue function's does."""
    return requeuer(backlogs=send_backlogs(settings(), aws.client("sqs")))


def behind(count: int, priority: str = "normal") -> None:
    """``count`` other emails' messages waiting in the send queue of ``priority``."""
    url = settings().queue_url(priority)
    for start in range(0, count, 10):
        entries = [
            {"Id": str(index), "MessageBody": json.dumps({"id": f"other-{start + index}"})}
            for index in range(min(10, count - start))
        ]
        aws.client("sqs").send_message_batch(QueueUrl=url, Entries=entries)


def test_a_queued_email_past_its_grace_behind_a_backlog_is_held_for_the_backlog_s_wait_not_published(api, context):
    # 139 other messages ahead and the email's own: 140 messages at SEND_RATE (14 a second) drain in 10 s.
    assert settings().send_rate == 14
    behind(139)
    status, body = api.post("/emails", an_email())
    assert status == 202 and body["published"] is True
    email_id = body["id"]
    set_deadline(email_id, ago())
    now = clock.now()

    result = run_handler(context)

    assert result["held"] == 1
    assert result["requeued_total"] == 0
    current = record(email_id)
    assert current["status"] == "queued"
    assert current["history"][-1] == {"status": "queued", "at": current["updated_at"], "reason": HELD_REASON}
    deadline = clock.parse_iso(current["deadline"])
    grace = settings().queued_grace_seconds
    assert now + timedelta(seconds=grace + 10) <= deadline <= clock.now() + timedelta(seconds=grace + 10)
    # nothing published: the email's one message is still the one behind the other 139
    waiting = drain()
    assert len(waiting) == 140
    assert waiting.count(email_id) == 1


def test_a_held_email_still_queued_at_its_new_deadline_is_published_again_whatever_the_backlog(api):
    behind(30)
    email_id = api.post("/emails", an_email())[1]["id"]
    set_deadline(email_id, ago())
    assert backlogged_requeuer().run(plenty).held == 1

    summary = backlogged_requeuer().run(plenty, now=acted_on_at(email_id))

    assert summary.held == 0
    assert summary.requeued == Counter({Reason.PUBLISH_LOST: 1})
    assert record(email_id)["history"][-1]["reason"] == "published again: not sent within the grace period"
    assert drain().count(email_id) == 2
    # published again, it may be held again the next time: once between two publishes
    behind(5)
    set_deadline(email_id, ago())
    assert backlogged_requeuer().run(plenty).held == 1


def test_a_queued_email_past_its_grace_with_the_send_queues_empty_is_published_again(api):
    email_id = enqueue(api)
    set_deadline(email_id, ago())

    summary = backlogged_requeuer().run(plenty)

    assert (summary.held, summary.requeued) == (0, Counter({Reason.PUBLISH_LOST: 1}))
    assert drain() == [email_id]


def test_normal_priority_waits_behind_the_high_priority_backlog_and_high_priority_behind_its_own_only(api):
    normal, high = enqueue(api), enqueue(api, priority="high")
    for email_id in (normal, high):
        set_deadline(email_id, ago())
    behind(28, "high")
    behind(14, "normal")
    now = clock.now()

    summary = backlogged_requeuer().run(plenty, now=now)

    assert summary.held == 2
    grace = settings().queued_grace_seconds
    # normal: 28 + 14 messages ahead, 3 s at 14 a second; high: its own queue's 28, 2 s
    # (the table keeps milliseconds)
    assert abs(clock.parse_iso(record(normal)["deadline"]) - (now + timedelta(seconds=grace + 3))) < timedelta(
        milliseconds=1
    )
    assert abs(clock.parse_iso(record(high)["deadline"]) - (now + timedelta(seconds=grace + 2))) < timedelta(
        milliseconds=1
    )

    drain("high")
    for email_id in (normal, high):
        set_deadline(email_id, ago())
    # each held once already: both published again, the normal one whatever the 14 still ahead of it
    summary = backlogged_requeuer().run(plenty)
    assert (summary.held, summary.requeued) == (0, Counter({Reason.PUBLISH_LOST: 2}))


def test_a_backlog_sqs_cannot_count_is_taken_as_none(api):
    email_id = enqueue(api)
    set_deadline(email_id, ago())
    behind(50)

    with sqs_unreachable("GetQueueAttributes"):
        summary = backlogged_requeuer().run(plenty)

    assert (summary.held, summary.requeued) == (0, Counter({Reason.PUBLISH_LOST: 1}))


# --- every single fault ends sent or failed: enqueue -> fault -> requeue -> send ----------------------------


class Crash(BaseException):
    """The sender's process dying mid-send (a timeout, out of memory): nothing after it runs."""


def outbox() -> list[Any]:
    sent: list[Any] = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    return sent


def deliver(stack: Any, context: Any) -> None:
    """Hand what waits in both send queues to the sender handler, as the event source mappings would."""
    sender = load_handler("sender")
    sqs = aws.client("sqs")
    for logical_id in ("SendQueue", "HighPrioritySendQueue"):
        url = stack.names[logical_id]
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            answer = sender.handler(sqs_event(messages, stack.arns[logical_id]), context.invocation())
            failed = {failure["itemIdentifier"] for failure in answer["batchItemFailures"]}
            for message in messages:
                if message["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def requeue_when_due(email_id: str) -> None:
    """A requeue run just after the requeue function would act on the email, however far ahead that is: its
    deadline, or for an email that by-deadline does not hold, its sweep point (see mailqueue.sweeping)."""
    requeuer().run(plenty, now=acted_on_at(email_id))


def acted_on_at(email_id: str) -> datetime:
    """A moment just after the requeue function would act on the email: see requeue_when_due."""
    current = record(email_id)
    due = clock.parse_iso(current["deadline"])
    if "shard" not in current:
        due = max(due, store().sweep_point(email_id))
    return due + timedelta(seconds=1)


def ses_error(code: str, status: int, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    """An SES error answer, given at before-call, so the call never reaches moto (which would
    record the email as sent whatever a before-send hook answers)."""
    parsed = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    url = "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"
    return AWSResponse(url, status, {"x-amzn-ErrorType": code}, None), parsed


def throttle(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
    """SES's answer to a send over the account's rate."""
    return ses_error("TooManyRequestsException", 429, "Maximum sending rate exceeded.")


def service_error(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
    """SES failing on its side: retried, and each attempt counts."""
    return ses_error("InternalFailure", 500, "SES had a problem.")


def test_a_lost_publish_ends_sent(api, stack, context):
    with sqs_unreachable("SendMessage"):
        email_id = api.post("/emails", an_email())[1]["id"]
    deliver(stack, context)
    assert record(email_id)["status"] == "queued"

    requeue_when_due(email_id)
    deliver(stack, context)

    assert record(email_id)["status"] == "sent"
    assert len(outbox()) == 1


def test_a_sender_crash_mid_send_ends_sent(api, stack, context):
    email_id = api.post("/emails", an_email())[1]["id"]

    def crash(**_: Any) -> None:
        raise Crash

    ses = aws.client("sesv2")
    ses.meta.events.register_first("before-send.sesv2.SendEmail", crash)
    try:
        with pytest.raises(Crash):
            deliver(stack, context)
    finally:
        ses.meta.events.unregister("before-send.sesv2.SendEmail", crash)
    assert record(email_id)["status"] == "sending"

    requeue_when_due(email_id)
    assert record(email_id)["status"] == "queued"
    deliver(stack, context)

    current = record(email_id)
    assert current["status"] == "sent"
    assert current["attempts"] == 2
    assert len(outbox()) == 1


def test_an_ses_error_ends_sent(api, stack, context):
    email_id = api.post("/emails", an_email())[1]["id"]
    ses = aws.client("sesv2")
    ses.meta.events.register("before-call.sesv2.SendEmail", throttle)
    try:
        deliver(stack, context)
    finally:
        ses.meta.events.unregister("before-call.sesv2.SendEmail", throttle)
    assert record(email_id)["status"] == "retrying"

    requeue_when_due(email_id)
    deliver(stack, context)

    current = record(email_id)
    assert current["status"] == "sent"
    assert [entry["status"] for entry in current["history"]] == [
        "queued",
        "sending",
        "retrying",
        "queued",
        "sending",
        "sent",
    ]
    assert len(outbox()) == 1


def test_an_ses_error_that_never_passes_ends_failed_after_the_last_attempt(api, stack, context):
    email_id = api.post("/emails", an_email())[1]["id"]
    ses = aws.client("sesv2")
    ses.meta.events.register("before-call.sesv2.SendEmail", service_error)
    try:
        deliver(stack, context)
        for _ in range(settings().max_attempts):
            if record(email_id)["status"] == "failed":
                break
            requeue_when_due(email_id)
            deliver(stack, context)
    finally:
        ses.meta.events.unregister("before-call.sesv2.SendEmail", service_error)

    current = record(email_id)
    assert current["status"] == "failed"
    assert current["attempts"] == settings().max_attempts
    assert current["last_error"]["code"] == "InternalFailure"
    assert "deadline" not in current
    assert outbox() == []
