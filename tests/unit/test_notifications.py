"""Status events: the emails table's stream records become events on the status bus, as docs/events.md says.

The records are the ones moto's DynamoDB stream holds after the real code moved an email (the API, the state
machine, the events function); the events are read back from an SQS queue subscribed to the bus by a rule.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from mailqueue import clock
from mailqueue.notifications import (
    DETAIL_TYPE,
    PUT_EVENTS_LIMIT,
    SOURCE,
    StatusEvent,
    StatusPublisher,
    published_statuses,
    status_event,
)
from mailqueue.statemachine import Change, Guard, Status, transition
from mailqueue_dev.lambda_events import dynamodb_stream_event, stream_filter
from mailqueue_dev.template import Stack

from tests.conftest import an_email, load_handler

SAMPLES = Path(__file__).resolve().parents[2] / "events"
DEFAULT = published_statuses(("delivered", "bounced", "complained", "failed"))
ALL = published_statuses(("all",))


def ses_event(name: str, email_id: str) -> dict[str, Any]:
    event = copy.deepcopy(json.loads((SAMPLES / "events" / f"{name}.json").read_text()))
    event["detail"]["mail"]["tags"]["email_id"] = [email_id]
    return event


class Stream:
    """The emails table's stream in moto, read from where the last ``read`` ended."""

    def __init__(self, stack: Stack) -> None:
        self.arn = stack.arns["EmailsTable.StreamArn"]
        # botocore calls DynamoDB Streams at an endpoint named by the account (<account>.streams-ddb...), which
        # moto's mock does not serve; the regional endpoint is the same API.
        self.client = boto3.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))
        [shard] = self.client.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        self.iterator = self.client.get_shard_iterator(
            StreamArn=self.arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]

    def read(self) -> list[dict[str, Any]]:
        answer = self.client.get_records(ShardIterator=self.iterator)
        self.iterator = answer["NextShardIterator"]
        records: list[dict[str, Any]] = dynamodb_stream_event(answer["Records"], self.arn)["Records"]
        return records


@pytest.fixture
def stream(stack: Stack) -> Stream:
    return Stream(stack)


@pytest.fixture
def subscriber(stack: Stack) -> str:
    """An SQS queue subscribed to every event of the status bus by a rule, as a user would subscribe."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    url = sqs.create_queue(QueueName="status-subscriber")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = stack.names["StatusEventBus"]
    events.put_rule(Name="all-statuses", EventBusName=bus, EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="all-statuses", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
    return str(url)


def received(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        found += [json.loads(message["Body"]) for message in messages]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        )
    return found


@pytest.fixture
def notify(stack: Stack, context: Any) -> Any:
    module = load_handler("notify")
    return lambda records: module.handler({"Records": records}, context.invocation())


@pytest.fixture
def ses_events(api: Any, context: Any) -> Any:
    module = load_handler("ses_events")
    return lambda event: module.handler(event, context.invocation())


def sent_email(api: Any, email: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> str:
    """An email enqueued through the API and moved through the real transitions to ``sent``."""
    code, body = api.post("/emails", email or an_email(), headers=headers)
    assert code == 202, body
    email_id = str(body["id"])
    store, now = api.module.mailqueue.store, clock.now()
    transition(store, email_id, Guard({Status.QUEUED}), Change(Status.SENDING, deadline=now), now)
    sent = Change(Status.SENT, reason="accepted", set={"ses_message_id": "0100-first"})
    transition(store, email_id, Guard({Status.SENDING}), sent, now)
    return email_id


def events_of(records: list[dict[str, Any]], published: frozenset[Status]) -> list[StatusEvent]:
    return [event for record in records if (event := status_event(record, published)) is not None]


# --- which changes are events -------------------------------------------------------------------------------


def test_a_delivered_email_is_one_event_by_default_with_the_previous_status_and_the_time_it_changed(
    api: Any, stream: Stream, ses_events: Any
) -> None:
    email_id = sent_email(api)
    ses_events(ses_event("delivery", email_id))

    records = stream.read()
    [event] = events_of(records, DEFAULT)

    record = api.module.mailqueue.store.get(email_id)
    assert event.email_id == email_id
    assert (event.status, event.previous_status) == ("delivered", "sent")
    assert event.sequence == 4  # queued, sending, sent, delivered
    assert event.event_id == f"{email_id}-4"
    assert record is not None and record.updated_at is not None
    assert event.time == clock.iso(record.updated_at)
    assert event.reason is not None and event.reason.summary == "delivery"
    assert event.schema_version == "1"


def test_all_publishes_every_change_in_order_with_a_sequence_that_increases(
    api: Any, stream: Stream, ses_events: Any
) -> None:
    email_id = sent_email(api)
    ses_events(ses_event("delivery", email_id))
    ses_events(ses_event("complaint", email_id))

    events = events_of(stream.read(), ALL)

    assert [(e.previous_status, e.status) for e in events] == [
        (None, "queued"),
        ("queued", "sending"),
        ("sending", "sent"),
        ("sent", "delivered"),
        ("delivered", "complained"),
    ]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert len({e.event_id for e in events}) == 5


def test_a_status_not_published_and_publishing_none_give_no_event(api: Any, stream: Stream) -> None:
    sent_email(api)  # queued, sending, sent: none of them published by default
    records = stream.read()

    assert events_of(records, DEFAULT) == []
    assert events_of(records, published_statuses(("none",))) == []
    assert [e.status for e in events_of(records, published_statuses(("sent",)))] == ["sent"]


def test_a_change_that_leaves_the_status_as_it_was_is_no_event_but_counts_in_the_sequence(
    api: Any, stream: Stream
) -> None:
    # Given a queued email that the requeue function publishes again (queued -> queued), then claims
    _, body = api.post("/emails", an_email())
    email_id, store, now = body["id"], api.module.mailqueue.store, clock.now()
    again = Change(Status.QUEUED, reason="published again", deadline=clock.after(now, 900))
    transition(store, email_id, Guard({Status.QUEUED}), again, now)
    transition(store, email_id, Guard({Status.QUEUED}), Change(Status.SENDING, deadline=now), now)

    events = events_of(stream.read(), ALL)

    assert [(e.status, e.sequence) for e in events] == [("queued", 1), ("sending", 3)]
    assert store.get(email_id).sequence == 3


def test_only_status_records_are_events(api: Any, stream: Stream) -> None:
    api.post("/emails", an_email())
    records = stream.read()

    kinds = {record["dynamodb"]["Keys"]["sk"]["S"] for record in records}
    assert {"status", "content"} <= kinds
    assert [e.status for e in events_of(records, ALL)] == ["queued"]


def test_a_bounce_carries_its_type_subtype_and_diagnostic(api: Any, stream: Stream, ses_events: Any) -> None:
    email_id = sent_email(api)
    bounce = ses_event("bounce-permanent", email_id)
    [bounced] = bounce["detail"]["bounce"]["bouncedRecipients"]
    ses_events(bounce)

    [event] = events_of(stream.read(), DEFAULT)

    assert (event.status, event.previous_status) == ("bounced", "sent")
    assert event.reason is not None and event.reason.bounce is not None
    assert (event.reason.bounce.type, event.reason.bounce.subtype) == ("Permanent", "General")
    [recipient] = event.reason.bounce.recipients
    assert recipient.address == bounced["emailAddress"]
    assert recipient.diagnostic == bounced["diagnosticCode"]
    assert event.reason.summary == "bounce Permanent/General"
    assert event.reason.error is None


def test_a_failure_carries_its_code_and_message(api: Any, stream: Stream) -> None:
    _, body = api.post("/emails", an_email())
    email_id, store, now = body["id"], api.module.mailqueue.store, clock.now()
    transition(store, email_id, Guard({Status.QUEUED}), Change(Status.SENDING, deadline=now), now)
    error = {"code": "MessageRejected", "message": "Email address is on the account's suppression list"}
    failed = Change(Status.FAILED, reason="failed: MessageRejected", set={"last_error": error})
    transition(store, email_id, Guard({Status.SENDING}), failed, now)

    [event] = events_of(stream.read(), DEFAULT)

    assert (event.status, event.previous_status) == ("failed", "sending")
    assert event.reason is not None and event.reason.error is not None
    assert asdict(event.reason.error) == error
    assert event.reason.summary == "failed: MessageRejected"
    assert event.reason.bounce is None


def test_published_statuses_are_names_all_or_none() -> None:
    assert published_statuses(("delivered", "Bounced")) == {Status.DELIVERED, Status.BOUNCED}
    assert published_statuses(("all",)) == frozenset(Status)
    assert published_statuses(("none",)) == frozenset()
    assert published_statuses(()) == frozenset()
    with pytest.raises(ValueError, match="deliverd"):
        published_statuses(("deliverd",))


# --- what an event carries, through the bus -----------------------------------------------------------------


def test_the_event_on_the_bus_carries_the_metadata_tags_and_idempotency_key(
    api: Any, stream: Stream, ses_events: Any, notify: Any, subscriber: str
) -> None:
    email = an_email(metadata={"order": 17, "user": "u-1"}, tags=[{"name": "campaign", "value": "spring"}])
    email_id = sent_email(api, email, headers={"Idempotency-Key": "order-17-receipt"})
    ses_events(ses_event("delivery", email_id))

    answer = notify(stream.read())

    assert answer == {"batchItemFailures": []}
    [message] = received(subscriber)
    assert message["source"] == SOURCE
    assert message["detail-type"] == DETAIL_TYPE
    detail = message["detail"]
    assert detail["email_id"] == email_id
    assert detail["status"] == "delivered"
    assert detail["metadata"] == {"order": 17, "user": "u-1"}
    assert detail["tags"] == [{"name": "campaign", "value": "spring"}]
    assert detail["idempotency_key"] == "order-17-receipt"
    # Every field of schema version 1, in its order, and nothing else.
    assert list(detail) == [field.name for field in fields(StatusEvent)]
    assert (detail["schema_version"], detail["event_id"]) == ("1", f"{email_id}-4")


def test_without_metadata_tags_or_key_the_event_says_none(
    api: Any, stream: Stream, ses_events: Any, notify: Any, subscriber: str
) -> None:
    email_id = sent_email(api)
    ses_events(ses_event("delivery", email_id))

    notify(stream.read())

    [message] = received(subscriber)
    detail = message["detail"]
    assert (detail["metadata"], detail["tags"], detail["idempotency_key"]) == (None, [], None)
    # Nothing stored when none is given.
    assert "idempotency_key" not in api.module.mailqueue.store.get(email_id).to_item()


def test_tags_are_read_from_a_compressed_content_record(
    api: Any, stream: Stream, ses_events: Any, notify: Any, subscriber: str
) -> None:
    # Given an email whose body compresses by more than a kilobyte (stored packed, see mailqueue.packing)
    html = "<p>" + "Your order has shipped and is on its way. " * 200 + "</p>"
    email = an_email(html=html, tags=[{"name": "kind", "value": "shipping"}])
    email_id = sent_email(api, email)
    content = api.module.mailqueue.store.get_content(email_id)
    assert "body_zlib" in content and "tags" not in content
    ses_events(ses_event("delivery", email_id))

    notify(stream.read())

    [message] = received(subscriber)
    assert message["detail"]["tags"] == [{"name": "kind", "value": "shipping"}]


# --- publishing: batches of ten, refused entries retried or reported ------------------------------------------


class FakeEvents:
    """An EventBridge client that refuses the entries ``refuse`` picks, and records every call."""

    def __init__(self, refuse: Any = lambda call, index: False) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.refuse = refuse

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        call = len(self.calls)
        self.calls.append(Entries)
        results = [
            {"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}
            if self.refuse(call, index)
            else {"EventId": f"e{call}-{index}"}
            for index in range(len(Entries))
        ]
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}


def many_records(api: Any, stream: Stream, count: int) -> list[dict[str, Any]]:
    for _ in range(count):
        sent_email(api)
    return stream.read()


def publisher(api: Any, events: FakeEvents, published: frozenset[Status] = ALL) -> StatusPublisher:
    return StatusPublisher(
        store=api.module.mailqueue.store, events=events, bus="bus", published=published, sleep=lambda _: None
    )


def test_events_are_put_ten_a_call_in_the_order_of_the_stream(api: Any, stream: Stream) -> None:
    records = many_records(api, stream, 8)  # 8 emails, 3 changes each: 24 events
    events = FakeEvents()

    published = publisher(api, events).publish(records)

    assert [len(call) for call in events.calls] == [PUT_EVENTS_LIMIT, PUT_EVENTS_LIMIT, 4]
    assert published.put == 24 and published.failed == []
    details = [json.loads(entry["Detail"]) for call in events.calls for entry in call]
    assert [(d["email_id"], d["sequence"]) for d in details] == [
        (e.email_id, e.sequence) for e in events_of(records, ALL)
    ]
    assert {
        (entry["Source"], entry["DetailType"], entry["EventBusName"]) for call in events.calls for entry in call
    } == {(SOURCE, DETAIL_TYPE, "bus")}


def test_a_refused_entry_is_put_again_alone(api: Any, stream: Stream) -> None:
    records = many_records(api, stream, 1)  # queued, sending, sent
    events = FakeEvents(refuse=lambda call, index: call == 0 and index == 1)

    published = publisher(api, events).publish(records)

    assert published.failed == []
    assert [[json.loads(e["Detail"])["status"] for e in call] for call in events.calls] == [
        ["queued", "sending", "sent"],
        ["sending"],
    ]


def test_an_entry_refused_every_time_is_reported_as_its_stream_record(api: Any, stream: Stream, notify: Any) -> None:
    records = many_records(api, stream, 1)
    events = FakeEvents(refuse=lambda call, index: index == 0)  # always the first of each call

    published = publisher(api, events).publish(records)

    sending = next(r for r in records if status_event(r, ALL) and status_event(r, ALL).status == "sending")  # type: ignore[union-attr]
    queued = next(r for r in records if status_event(r, ALL) and status_event(r, ALL).status == "queued")  # type: ignore[union-attr]
    # the first call refuses queued; the retries refuse it again (it stays first)
    assert published.failed == [queued["dynamodb"]["SequenceNumber"]]
    assert published.response() == {"batchItemFailures": [{"itemIdentifier": queued["dynamodb"]["SequenceNumber"]}]}
    assert sending["dynamodb"]["SequenceNumber"] not in published.failed


# --- the template's filter passes the records that can be events ---------------------------------------------


@pytest.mark.parametrize(("setting", "published"), [("delivered,bounced,complained,failed", DEFAULT), ("all", ALL)])
def test_the_template_filter_passes_every_record_that_is_an_event_and_drops_the_rest(
    api: Any, stack: Stack, stream: Stream, ses_events: Any, setting: str, published: frozenset[Status]
) -> None:
    # Given the stream event source's filter as the template makes it for the setting
    deployed = dataclasses.replace(stack, parameters={**stack.parameters, "PublishStatuses": setting})
    [source] = deployed.event_sources("NotifyFunction", "DynamoDB")
    passes = stream_filter(source["FilterCriteria"])

    # (a body large enough to be stored compressed: its content record holds a binary attribute)
    html = "<p>" + "Your order has shipped and is on its way. " * 200 + "</p>"
    email_id = sent_email(api, an_email(to=["bounce@simulator.amazonses.com"], html=html))
    ses_events(ses_event("bounce-permanent", email_id))
    records = stream.read()
    assert any("body_zlib" in r["dynamodb"].get("NewImage", {}) for r in records)

    # Then every record that is an event passes, and with the default nothing else does
    passed = [record for record in records if passes(record)]
    assert [e.status for e in events_of(passed, published)] == [e.status for e in events_of(records, published)]
    if published == DEFAULT:
        assert [r["dynamodb"]["NewImage"]["status"]["S"] for r in passed] == ["bounced"]
    else:
        assert {r["dynamodb"]["Keys"]["sk"]["S"] for r in passed} == {"status"}
        assert len(passed) == 4


def test_the_sample_stream_batch_is_published_by_the_notify_function(notify: Any, subscriber: str) -> None:
    # events/notify/ (for sam local invoke) names an email this stack does not have: no tags to read
    batch = json.loads((SAMPLES / "notify" / "stream-delivered.json").read_text())

    assert notify(batch["Records"]) == {"batchItemFailures": []}

    [message] = received(subscriber)
    assert message["detail"]["status"] == "delivered"
    assert message["detail"]["metadata"] == {"order": 17}
    assert message["detail"]["tags"] == []
