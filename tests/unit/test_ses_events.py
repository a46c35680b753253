"""SES events move sent emails on, idempotently and in any order, and feed the suppression list."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from mailqueue import clock
from mailqueue.records import Attr, StatusRecord
from mailqueue.ses_events import NotYetRecorded
from mailqueue.statemachine import HISTORY_LIMIT, Change, Guard, Status, transition

from tests.conftest import an_email, load_handler

SAMPLES = Path(__file__).resolve().parents[2] / "events" / "events"


def sample(name: str, email_id: str) -> dict[str, Any]:
    event = json.loads((SAMPLES / f"{name}.json").read_text())
    event = copy.deepcopy(event)
    event["detail"]["mail"]["tags"]["email_id"] = [email_id]
    return event


@pytest.fixture
def handler(api, context):
    module = load_handler("ses_events")
    return lambda event: module.handler(event, context.invocation())


def email_in(api, status: Status, to: str = "alice@example.org") -> str:
    """An email moved through the real transitions into ``status``."""
    _, body = api.post("/emails", an_email(to=[to]))
    email_id = body["id"]
    store = api.module.mailqueue.store
    now = clock.now()
    transition(store, email_id, Guard({Status.QUEUED}), Change(Status.SENDING, deadline=now), now)
    if status is Status.RETRYING:
        unknown = Change(Status.RETRYING, reason="outcome unknown: read timeout", deadline=clock.after(now, 900))
        transition(store, email_id, Guard({Status.SENDING}), unknown, now)
    elif status is not Status.SENDING:
        sent = Change(Status.SENT, reason="accepted", set={"ses_message_id": "0100-first"})
        transition(store, email_id, Guard({Status.SENDING}), sent, now)
    return email_id


def read(api, email_id: str) -> dict[str, Any]:
    return api.get(f"/emails/{email_id}")[1]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("delivery", "delivered"),
        ("bounce-permanent", "bounced"),
        ("bounce-transient", "bounced"),
        ("bounce-suppressed", "bounced"),
        ("complaint", "complained"),
        ("reject", "failed"),
        ("rendering-failure", "failed"),
        ("delivery-delay", "sent"),
        ("send", "sent"),
    ],
)
def test_each_event_type_on_a_sent_email(api, handler, name, expected):
    email_id = email_in(api, Status.SENT)

    first = handler(sample(name, email_id))
    after_first = read(api, email_id)
    handler(sample(name, email_id))
    after_repeat = read(api, email_id)

    assert after_first["status"] == expected
    assert after_repeat == after_first  # a repeated event changes nothing
    assert first["result"] == ("applied" if expected != "sent" else "ignored")
    if expected != "sent":
        assert after_first["history"][-1]["status"] == expected


def test_an_applied_event_logs_no_line_at_info_only_its_metric(api, context, capsys, caplog):
    # Given the function's default level (LogLevel INFO): two events an email, each counted in the metrics
    module = load_handler("ses_events")
    email_id = email_in(api, Status.SENT)
    capsys.readouterr()
    module.logger.setLevel("INFO")
    try:
        module.handler(sample("delivery", email_id), context)
    finally:
        module.logger.setLevel("WARNING")

    assert read(api, email_id)["status"] == "delivered"
    assert [record.getMessage() for record in caplog.records if record.name == module.logger.name] == []
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [metric["EmailsDelivered"] for metric in metrics] == [[1.0]]


def test_a_bounce_records_type_and_diagnostic_and_suppresses_the_address(api, handler):
    email_id = email_in(api, Status.SENT)

    handler(sample("bounce-permanent", email_id))

    email = read(api, email_id)
    assert email["history"][-1]["reason"] == "bounce Permanent/General"
    assert email["bounce"] == {
        "type": "Permanent/General",
        "recipients": [
            {"address": "alice@example.org", "status": "5.1.1", "diagnostic": "smtp; 550 5.1.1 user unknown"}
        ],
    }
    status, page = api.get("/suppressions")
    assert status == 200
    assert [(s["address"], s["email_id"]) for s in page["suppressions"]] == [("alice@example.org", email_id)]
    assert "permanent bounce" in page["suppressions"][0]["reason"]


def test_events_missing_their_optional_fields_still_leave_a_readable_record(api, handler):
    # SES's documents mark these fields optional; the record says what is known, and a bounce to
    # many recipients lists the first five (the status record stays small).
    bounced = email_in(api, Status.SENT)
    event = sample("bounce-transient", bounced)
    del event["detail"]["bounce"]["bounceSubType"]
    many = [{"emailAddress": f"r{n}@example.org", "status": "4.4.7"} for n in range(6)]
    event["detail"]["bounce"]["bouncedRecipients"] = [{"status": "4.4.7"}, *many]
    handler(event)
    bounce = read(api, bounced)["bounce"]
    assert bounce["type"] == "Transient/General"
    assert bounce["recipients"][0] == {"address": "", "status": "4.4.7", "diagnostic": ""}
    assert [r["address"] for r in bounce["recipients"][1:]] == [f"r{n}@example.org" for n in range(4)]

    rejected = email_in(api, Status.SENT)
    event = sample("reject", rejected)
    del event["detail"]["reject"]["reason"]
    handler(event)
    assert read(api, rejected)["last_error"] == {"code": "Reject", "message": "rejected by SES"}

    complained = email_in(api, Status.SENT)
    event = sample("complaint", complained)
    del event["detail"]["complaint"]["complaintFeedbackType"]
    handler(event)
    assert read(api, complained)["history"][-1]["reason"] == "complaint: complaint"


def test_an_event_keeps_the_message_id_the_sender_recorded_and_fills_in_a_missing_one(api, handler, capsys):
    recorded = email_in(api, Status.SENT)  # the sender recorded SES's answer: "0100-first"
    handler(sample("delivery", recorded))
    assert read(api, recorded)["ses_message_id"] == "0100-first"

    # An email recorded sent without SES's message id (its answer was lost, the Send event settled it
    # but carried none): the next event that names one fills it in.
    missing = email_in(api, Status.SENDING)
    now = clock.now()
    transition(api.module.mailqueue.store, missing, Guard({Status.SENDING}), Change(Status.SENT, reason="x"), now)
    event = sample("bounce-permanent", missing)
    event["detail"]["bounce"]["bounceSubType"] = "NoEmail"
    capsys.readouterr()
    result = handler(event)
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    by_type = [metric for metric in metrics if "EmailsBouncedByType" in metric]
    assert [metric["bounce_type"] for metric in by_type] == ["Permanent"]
    assert [metric.get("AddressesSuppressed") for metric in metrics if "EmailsBounced" in metric] == [[1.0]]
    assert read(api, missing)["ses_message_id"] == event["detail"]["mail"]["messageId"]
    assert result == {"event_type": "Bounce", "email_id": missing, "result": "applied"}
    [suppression] = api.get("/suppressions")[1]["suppressions"]
    assert suppression["reason"] == "permanent bounce (NoEmail)"

    ignored = handler(sample("delivery", missing))  # a delivery never overwrites a bounce
    assert ignored == {"event_type": "Delivery", "email_id": missing, "result": "ignored"}


def test_an_account_suppression_list_bounce_is_bounced_with_that_reason(api, handler):
    email_id = email_in(api, Status.SENT)

    handler(sample("bounce-suppressed", email_id))

    assert read(api, email_id)["history"][-1]["reason"] == "bounce Permanent/OnAccountSuppressionList"


def test_a_transient_bounce_does_not_suppress(api, handler):
    handler(sample("bounce-transient", email_in(api, Status.SENT)))

    assert api.get("/suppressions")[1]["suppressions"] == []


def test_a_delivery_never_overwrites_a_bounce_but_a_late_bounce_overwrites_a_delivery(api, handler):
    bounced_first = email_in(api, Status.SENT)
    handler(sample("bounce-permanent", bounced_first))
    handler(sample("delivery", bounced_first))

    delivered_first = email_in(api, Status.SENT, to="bob@example.org")  # alice is suppressed by now
    handler(sample("delivery", delivered_first))
    handler(sample("bounce-permanent", delivered_first))

    assert read(api, bounced_first)["status"] == "bounced"
    assert read(api, delivered_first)["status"] == "bounced"


def test_a_complaint_after_delivery_is_recorded(api, handler):
    email_id = email_in(api, Status.SENT)
    handler(sample("delivery", email_id))

    handler(sample("complaint", email_id))

    assert [entry["status"] for entry in read(api, email_id)["history"]][-2:] == ["delivered", "complained"]


def test_a_send_event_settles_an_unknown_outcome_as_sent(api, handler):
    email_id = email_in(api, Status.RETRYING)

    handler(sample("send", email_id))

    email = read(api, email_id)
    assert email["status"] == "sent"
    assert email["deadline"] is None  # the requeue function will never send it again
    assert email["ses_message_id"] == sample("send", email_id)["detail"]["mail"]["messageId"]


def test_a_delivery_alone_also_settles_an_unknown_outcome(api, handler):
    email_id = email_in(api, Status.RETRYING)

    handler(sample("delivery", email_id))

    assert [entry["status"] for entry in read(api, email_id)["history"]][-2:] == ["sent", "delivered"]


@pytest.mark.parametrize(("name", "final"), [("send", "sent"), ("delivery", "delivered")])
def test_an_event_for_an_email_still_sending_settles_it_as_sent(api, handler, name, final):
    # Given a sender that claimed the email, and died after SES accepted it (or has yet to record it)
    _, body = api.post("/emails", an_email())
    email_id = body["id"]
    store = api.module.mailqueue.store
    now = clock.now()
    claim = Change(Status.SENDING, deadline=clock.after(now, 180), attempts_delta=1, set={Attr.CLAIM_TOKEN: "t1"})
    transition(store, email_id, Guard({Status.QUEUED}), claim, now)

    # When SES's event about the send arrives
    handler(sample(name, email_id))

    # Then the email is sent: its claim can no longer expire into a second send
    email = store.get(email_id)
    assert email.status == final
    assert email.deadline is None
    assert email.claim_token is None
    assert email.ses_message_id == sample(name, email_id)["detail"]["mail"]["messageId"]
    assert [entry["status"] for entry in email.history][1:] == [
        "sending",
        "sent",
        *([final] if final != "sent" else []),
    ]


def test_a_reject_racing_the_sender_is_retried(api, handler):
    email_id = email_in(api, Status.SENDING)

    with pytest.raises(NotYetRecorded):
        handler(sample("reject", email_id))


def test_unknown_and_foreign_events_are_acknowledged(api, handler):
    unknown = handler(sample("delivery", "01JAAAAAAAAAAAAAAAAAAAAAAA"))
    untagged = sample("delivery", "x")
    del untagged["detail"]["mail"]["tags"]["email_id"]
    foreign = {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}}
    odd = sample("delivery", "01JAAAAAAAAAAAAAAAAAAAAAAA")
    odd["detail"]["eventType"] = "Open"

    assert unknown["result"] == "unknown-email"
    assert handler(untagged)["result"] == "unknown-email"
    assert handler(foreign)["result"] == "foreign"
    assert handler(odd)["result"] == "foreign"
    assert handler({})["result"] == "foreign"


# --- the suppression list at enqueue ----------------------------------------------------------------------


def suppress_alice(api, handler) -> None:
    handler(sample("complaint", email_in(api, Status.SENT)))


def test_enqueueing_to_a_suppressed_address_is_refused_naming_it(api, handler):
    suppress_alice(api, handler)

    status, body = api.post("/emails", an_email(cc=["bob@example.org"]))

    assert status == 422
    assert body["error"]["details"] == [
        {
            "field": "to",
            "message": "alice@example.org is on the suppression list (complaint)",
            "code": "suppressed_recipient",
        }
    ]


def test_skip_suppressed_drops_the_address_when_others_remain(api, handler, stack):
    import boto3

    suppress_alice(api, handler)

    status, body = api.post("/emails", an_email(cc=["bob@example.org"], skip_suppressed=True))
    alone = api.post("/emails", an_email(skip_suppressed=True))

    assert status == 202
    content = boto3.client("dynamodb").get_item(
        TableName=stack.names["EmailsTable"], Key={"pk": {"S": body["id"]}, "sk": {"S": "content"}}
    )["Item"]
    assert "to" not in content
    assert content["cc"]["L"][0]["M"]["address"]["S"] == "bob@example.org"
    assert alone[0] == 422


def test_a_batch_refuses_only_the_emails_to_suppressed_addresses(api, handler):
    suppress_alice(api, handler)

    _, body = api.post("/emails/batch", {"emails": [an_email(), an_email(to=["bob@example.org"])]})

    assert body["accepted"] == 1
    assert body["results"][0]["error"]["details"][0]["field"] == "to"


def test_lifting_a_suppression_allows_the_address_again(api, handler):
    suppress_alice(api, handler)

    status, _ = api.delete("/suppressions/alice%40example.org")
    again, _ = api.delete("/suppressions/alice%40example.org")

    assert status == 204
    assert again == 404
    assert api.post("/emails", an_email())[0] == 202


def test_a_delivery_delay_is_counted_though_it_changes_nothing(api, handler, capsys):
    email_id = email_in(api, Status.SENT)
    capsys.readouterr()

    handler(sample("delivery-delay", email_id))

    assert '"EmailsDelayed":[1.0]' in capsys.readouterr().out.replace(" ", "")
    assert read(api, email_id)["status"] == "sent"


@pytest.mark.parametrize("moved_on_to", [Status.QUEUED, Status.FAILED, Status.CANCELLED])
def test_a_late_send_event_settles_an_email_that_moved_on_as_sent(api, handler, moved_on_to):
    # Given an attempt whose outcome was unknown, and an email that moved on before SES's event came
    email_id = email_in(api, Status.RETRYING)
    store = api.module.mailqueue.store
    now = clock.now()
    change = Change(moved_on_to, reason="moved on", deadline=clock.after(now, 60) if moved_on_to.live else None)
    transition(store, email_id, Guard({Status.RETRYING}), change, now)

    # When SES's Send event arrives
    handler(sample("send", email_id))

    # Then the email is sent and will never be sent again
    email = read(api, email_id)
    assert email["status"] == "sent"
    assert email["deadline"] is None


# --- races and the history bound --------------------------------------------------------------------------


def between_read_and_write(events_module, act) -> None:
    """Run ``act`` once, right after the events function's first read of the email and before its write."""
    store = events_module.events.store
    read_email = store.get
    acted = []

    def get(email_id: str, *args: Any, **kwargs: Any) -> StatusRecord | None:
        record = read_email(email_id, *args, **kwargs)
        if not acted:
            acted.append(email_id)
            act(email_id)
        return record

    store.get = get


def test_a_send_event_whose_write_loses_to_the_requeue_function_reads_again_and_settles(api, context):
    # Given an attempt whose outcome was unknown, and SES's Send event read while the email was retrying
    module = load_handler("ses_events")
    email_id = email_in(api, Status.RETRYING)
    store = api.module.mailqueue.store

    def requeue(email_id: str) -> None:
        now = clock.now()
        back = Change(Status.QUEUED, reason="backoff passed", deadline=clock.after(now, 900))
        transition(store, email_id, Guard({Status.RETRYING}), back, now)

    between_read_and_write(module, requeue)

    # When the requeue function moves it to queued before the event's guarded write
    outcome = module.handler(sample("send", email_id), context.invocation())

    # Then the event's write lost, read the email again and settled it as sent all the same
    email = store.get(email_id)
    assert outcome["result"] == "applied"
    assert email.status is Status.SENT
    assert email.deadline is None
    assert [entry["status"] for entry in email.history][-3:] == ["retrying", "queued", "sent"]


def test_a_delivery_whose_write_loses_to_another_event_settles_from_what_it_reads_again(api, context):
    # Given a sent email, and a Bounce event that lands between the Complaint event's read and write
    module = load_handler("ses_events")
    email_id = email_in(api, Status.SENT)
    store = api.module.mailqueue.store
    bounce = sample("bounce-permanent", email_id)
    between_read_and_write(module, lambda _: module.handler(bounce, context.invocation()))

    module.handler(sample("complaint", email_id), context.invocation())

    # Then the complaint is still recorded, after the bounce
    email = store.get(email_id)
    assert [entry["status"] for entry in email.history][-2:] == ["bounced", "complained"]


def test_the_history_stays_within_its_bound_on_the_events_path(api, handler):
    # Given an email whose history is full (the sender keeps it trimmed to its bound)
    email_id = email_in(api, Status.RETRYING)
    store = api.module.mailqueue.store
    record = store.get(email_id)
    now = clock.now()
    full = [record.history[0], *[{"status": "retrying", "at": clock.iso(now), "reason": "held"}] * 7]
    store.update_status(
        email_id,
        "SET #history = :full",
        "#status = :retrying",
        {"#history": "history", "#status": "status"},
        {":full": full, ":retrying": "retrying"},
    )
    assert len(store.get(email_id).history) == HISTORY_LIMIT

    # When SES's events settle it and follow it, the history never outgrows its bound on the way
    for name in ("send", "delivery", "bounce-permanent", "complaint"):
        handler(sample(name, email_id))
        assert len(store.get(email_id).history) <= HISTORY_LIMIT, name

    # Then the history keeps its first entry and the latest ones, never more than the bound
    email = store.get(email_id)
    assert email.status is Status.COMPLAINED
    assert len(email.history) <= HISTORY_LIMIT
    assert email.history[0]["reason"] == "accepted"
    assert [entry["status"] for entry in email.history][-4:] == ["sent", "delivered", "bounced", "complained"]


def test_a_sent_email_s_delivery_is_one_guarded_write_and_no_read(api, context):
    module = load_handler("ses_events")
    email_id = email_in(api, Status.SENT)
    client = module.events.store._client
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-call.dynamodb", count, unique_id="count-delivery-calls")
    try:
        result = module.handler(sample("delivery", email_id), context.invocation())
    finally:
        client.meta.events.unregister("before-call.dynamodb", unique_id="count-delivery-calls")

    assert result == {"event_type": "Delivery", "email_id": email_id, "result": "applied"}
    assert calls == ["UpdateItem"]
    email = read(api, email_id)
    assert email["status"] == "delivered"
    assert email["ses_message_id"] == "0100-first"
    assert [entry["status"] for entry in email["history"]][-2:] == ["sent", "delivered"]


def test_a_delivery_that_finds_the_email_elsewhere_settles_from_the_record_its_write_returned(api, context):
    # The sender has not recorded the send yet (SES's delivery came first): the blind write fails, and the
    # record it returns shows the email sending; a delivery proves SES accepted it, so it is settled.
    module = load_handler("ses_events")
    email_id = email_in(api, Status.SENDING)

    result = module.handler(sample("delivery", email_id), context.invocation())

    assert result["result"] == "applied"
    email = read(api, email_id)
    assert [entry["status"] for entry in email["history"]][-3:] == ["sending", "sent", "delivered"]
