"""A requeue run acting on many due emails at once: each is acted on once, counted once and published once.

The run's threads share the summary, the publications waiting, and the boto3 clients. The thread switch
interval is made tiny here so that a count or an append made without the run's lock loses updates, and the
emails are many, so that a publish made before every write of its page returned misses some.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from mailqueue import aws, clock, requeue
from mailqueue.records import StatusRecord
from mailqueue.requeue import Reason
from mailqueue.statemachine import Status

from tests.conftest import ApiClient, an_email
from tests.unit.test_requeue import Budget, drain, plenty, record, requeuer, settings, store

EMAILS = 120
# Items acted on at once in the test of contention: no AWS call each, so many are cheap.
CONTENDED = 4_000


@pytest.fixture(autouse=True)
def switch_often() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def schedule(api: ApiClient, count: int, send_at: datetime, priority: str = "normal") -> list[str]:
    """``count`` emails scheduled for ``send_at`` (in by-deadline from the start), through the batch endpoint."""
    ids: list[str] = []
    for start in range(0, count, 100):
        items = [
            an_email(to=[f"customer{index}@example.org"], send_at=clock.iso(send_at), priority=priority)
            for index in range(start, min(count, start + 100))
        ]
        status, body = api.post("/emails/batch", {"emails": items})
        assert status == 202, body
        ids += [result["id"] for result in body["results"]]
    assert len(ids) == count
    return ids


def moment() -> datetime:
    return clock.now().replace(microsecond=0) + timedelta(hours=1)


def test_many_due_emails_at_once_are_each_acted_on_counted_and_published_once(api):
    send_at = moment()
    email_ids = schedule(api, EMAILS, send_at)

    summary = requeuer(page_size=40).run(plenty, now=send_at + timedelta(seconds=1))

    assert settings().requeue_concurrency > 1
    assert summary.requeued == Counter({Reason.SEND_AT_REACHED: EMAILS})
    assert summary.examined == EMAILS
    assert summary.skipped == 0
    assert summary.publish_failures == 0
    assert Counter(drain()) == Counter(email_ids)
    for email_id in email_ids[:: EMAILS // 10]:
        history = record(email_id)["history"]
        assert [entry["status"] for entry in history] == ["scheduled", "queued"]


def test_high_priority_batches_all_go_before_the_first_normal_one(api):
    send_at = moment()
    normal = schedule(api, 45, send_at)
    high = schedule(api, 35, send_at, priority="high")
    run = requeuer(page_size=100)
    # The queue of each SendMessageBatch call, in the order made, one list per publish of the run.
    publishes: list[list[str]] = []
    publish = run._publish

    def each_publish(*args: Any) -> None:
        publishes.append([])
        publish(*args)

    def note(params: dict[str, Any], **_: Any) -> None:
        publishes[-1].append(params["QueueUrl"])

    run._publish = each_publish
    sqs = aws.client("sqs")
    sqs.meta.events.register("provide-client-params.sqs.SendMessageBatch", note)
    try:
        summary = run.run(plenty, now=send_at + timedelta(seconds=1))
    finally:
        sqs.meta.events.unregister("provide-client-params.sqs.SendMessageBatch", note)

    assert summary.requeued_total == 80
    high_url, normal_url = settings().queue_url("high"), settings().queue_url("normal")
    assert any(high_url in calls and normal_url in calls for calls in publishes)
    for calls in publishes:
        if high_url in calls and normal_url in calls:
            assert calls.index(normal_url) > max(index for index, url in enumerate(calls) if url == high_url)
    assert Counter(drain("high")) == Counter(high)
    assert Counter(drain("normal")) == Counter(normal)


def test_a_write_that_fails_midway_leaves_every_other_written_email_published(api):
    send_at = moment()
    email_ids = schedule(api, EMAILS, send_at)
    run = requeuer(page_size=100)
    apply = run.store.apply
    failing = email_ids[0]

    def fail_one(email_id: str, *args: Any, **kwargs: Any) -> Any:
        if email_id == failing:
            raise RuntimeError("DynamoDB is unreachable")
        return apply(email_id, *args, **kwargs)

    run.store.apply = fail_one
    with pytest.raises(RuntimeError):
        run.run(plenty, now=send_at + timedelta(seconds=1))

    queued = [email_id for email_id in email_ids if record(email_id)["status"] == "queued"]
    assert failing not in queued
    # The page of the failing write (its shard's, all due emails of the shard) was written but for it.
    assert (
        len(queued)
        >= sum(1 for email_id in email_ids if run.store.deadline_shard(email_id) == run.store.deadline_shard(failing))
        - 1
    )
    # Written means published: the publish waited for every write of the page, the failed one included.
    assert Counter(drain()) == Counter(queued)


def test_a_run_out_of_time_midway_through_a_page_publishes_every_email_it_wrote(api):
    send_at = moment()
    email_ids = schedule(api, EMAILS, send_at)
    # Time runs out halfway through the first shard's page (one check before the page, one per email).
    first_shard = [email_id for email_id in email_ids if store().deadline_shard(email_id) == 0]
    budget = Budget(millis=1_000 + (1 + len(first_shard) // 2) * 10 + 5, cost=10)

    first = requeuer(page_size=100, reserve_millis=1_000).run(budget, now=send_at + timedelta(seconds=1))
    after_first = drain()
    queued = [email_id for email_id in email_ids if record(email_id)["status"] == "queued"]

    assert first.stopped_early is True
    assert 0 < first.requeued_total < len(first_shard)
    assert first.requeued_total == first.examined == len(queued)
    assert Counter(after_first) == Counter(queued)

    second = requeuer(page_size=100).run(plenty, now=send_at + timedelta(seconds=2))
    assert first.requeued_total + second.requeued_total == EMAILS
    assert Counter(after_first + drain()) == Counter(email_ids)


def test_counts_and_publications_stay_exact_when_the_threads_contend(stack, monkeypatch):
    """Writes that return at once (the store's answer stood in for): the threads then contend on the
    summary and the publications waiting all the time, which a count made without the run's lock loses."""
    written: list[str] = []
    monkeypatch.setattr(requeue, "transition", lambda store, email_id, *args: written.append(email_id))
    items = [
        StatusRecord(
            f"email-{index}",
            Status.SCHEDULED if index % 2 else Status.SENT,
            deadline=clock.parse_iso("2026-01-01T00:00:00.000Z"),
        )
        for index in range(CONTENDED)
    ]
    run = requeuer()
    with ThreadPoolExecutor(settings().requeue_concurrency) as pool:
        state = requeue._Run(clock.now(), clock.iso(clock.now()), plenty, 0, pool=pool)
        for start in range(0, CONTENDED, 1000):
            assert run._act_on_page(state, items[start : start + 1000]) is True

    due = [item.email_id for item in items if item.status is Status.SCHEDULED]
    assert state.summary.examined == CONTENDED
    assert state.summary.requeued == Counter({Reason.SEND_AT_REACHED: len(due)})
    assert state.summary.skipped == CONTENDED - len(due)
    assert Counter(written) == Counter(due)
    assert Counter(publication.email_id for publication in state.pending) == Counter(due)
