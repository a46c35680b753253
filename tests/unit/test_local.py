"""The local runner's translation between HTTP and Lambda, without starting it (the e2e tests do)."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from mailqueue.models import Mailbox
from mailqueue.ses_errors import SendOutcome, classify
from mailqueue.ses_events import email_id_of_event, suppressions_from
from mailqueue_dev import lambda_events, ses_simulator
from mailqueue_dev.local import (
    Function,
    LocalStack,
    Route,
    SesEventPublisher,
    StreamPoller,
    _http_answer,
    _matches_ses,
    from_environment,
    tuned_settings,
)
from mailqueue_dev.ses_simulator import Fate, events_for_send, fate_of

SAMPLES = Path(__file__).resolve().parents[2] / "events" / "events"
FUNCTION = Function("ApiFunction", Path("functions/api"), "api", "handler", 30.0)


@pytest.mark.parametrize(
    ("method", "template", "path", "matches"),
    [
        ("ANY", "/{proxy+}", "/emails/01J/retry", True),
        ("ANY", "/{proxy+}", "/", False),
        ("GET", "/emails/{id}", "/emails/01J", True),
        ("GET", "/emails/{id}", "/emails/01J/retry", False),
        ("GET", "/emails/{id}/retry", "/emails/01J/retry", True),
        ("POST", "/emails/{id}", "/emails/01J", True),
    ],
)
def test_routes_match_as_api_gateway_path_templates(method: str, template: str, path: str, matches: bool) -> None:
    assert Route.of(method, template, FUNCTION).matches(method, path) is matches


def test_a_route_for_one_method_ignores_the_others() -> None:
    assert not Route.of("GET", "/emails", FUNCTION).matches("DELETE", "/emails")


def test_a_route_gives_its_key_and_path_parameters_as_api_gateway_does() -> None:
    route = Route.of("POST", "/emails/{email_id}/retry", FUNCTION)
    assert route.key == "POST /emails/{email_id}/retry"
    assert route.parameters("/emails/01J/retry") == {"email_id": "01J"}
    catch_all = Route.of("ANY", "/{proxy+}", FUNCTION)
    assert catch_all.parameters("/emails/01J/retry") == {"proxy": "emails/01J/retry"}
    assert Route.of("GET", "/emails", FUNCTION).parameters("/emails") == {}


def test_the_most_specific_route_wins_as_in_api_gateway() -> None:
    routes = [
        Route.of("ANY", "/{proxy+}", FUNCTION),
        Route.of("ANY", "/emails/{email_id}", FUNCTION),
        Route.of("GET", "/emails/{email_id}", FUNCTION),
        Route.of("GET", "/emails/batch", FUNCTION),
    ]

    def chosen(method: str, path: str) -> str:
        return min((r for r in routes if r.matches(method, path)), key=lambda r: r.specificity).key

    assert chosen("GET", "/emails/batch") == "GET /emails/batch"
    assert chosen("GET", "/emails/01J") == "GET /emails/{email_id}"
    assert chosen("DELETE", "/emails/01J") == "ANY /emails/{email_id}"
    assert chosen("GET", "/nowhere") == "ANY /{proxy+}"


def test_a_lambda_answer_becomes_status_headers_and_bytes() -> None:
    status, headers, body = _http_answer(
        {"statusCode": 202, "headers": {"Content-Type": "application/json"}, "body": '{"id":"x"}', "cookies": ["a=1"]}
    )
    assert (status, body) == (202, b'{"id":"x"}')
    assert headers == {"content-type": "application/json", "set-cookie": "a=1"}


def test_a_base64_answer_is_decoded() -> None:
    encoded = base64.b64encode(b"\x89PNG").decode()
    assert _http_answer({"statusCode": 200, "body": encoded, "isBase64Encoded": True})[2] == b"\x89PNG"


def test_a_bare_value_is_a_200_json_answer_as_http_api_treats_it() -> None:
    assert _http_answer({"ok": True}) == (200, {"content-type": "application/json"}, b'{"ok": true}')


def test_settings_from_the_shell_override_the_template_but_never_resource_names() -> None:
    shell = {"BACKOFF_BASE_SECONDS": "2", "TABLE_NAME": "elsewhere", "SENDING_IDENTITIES": "x.org", "HOME": "/root"}
    assert tuned_settings(shell) == {"BACKOFF_BASE_SECONDS": "2"}


def test_the_first_curl_sends_from_the_first_identity() -> None:
    assert LocalStack(identities=("mail.example.net",)).example_sender() == "app@mail.example.net"
    assert LocalStack(identities=("news@example.net",)).example_sender() == "news@example.net"


# --- SES events ----------------------------------------------------------------------------------------------

EMAIL_ID = "01J9Z8Y7X6W5V4T3S2R1Q0P9N8"
RAW = (
    b"From: Shop <app@example.com>\r\nTo: Alice <alice@example.org>, bounce@simulator.amazonses.com\r\n"
    b"Cc: x@complaint.mailqueue.example\r\nSubject: Your receipt\r\nMessage-ID: <m@example.com>\r\n\r\nThanks.\r\n"
)


def send_params(to: list[str], cc: list[str] | None = None, bcc: list[str] | None = None) -> dict[str, Any]:
    destination = {"ToAddresses": to, "CcAddresses": cc or [], "BccAddresses": bcc or []}
    return {
        "FromEmailAddress": "Shop <app@example.com>",
        "Destination": {key: value for key, value in destination.items() if value},
        "Content": {"Raw": {"Data": RAW}},
        "EmailTags": [{"Name": "email_id", "Value": EMAIL_ID}, {"Name": "kind", "Value": "receipt"}],
        "ConfigurationSetName": "mailqueue",
    }


@pytest.mark.parametrize(
    ("address", "fate"),
    [
        ("alice@example.org", Fate.DELIVERED),
        ("bounce@simulator.amazonses.com", Fate.BOUNCED),
        ("Bounce+order-17@Simulator.AmazonSES.com", Fate.BOUNCED),
        ("complaint@simulator.amazonses.com", Fate.COMPLAINED),
        ("suppressionlist@simulator.amazonses.com", Fate.SUPPRESSED),
        ("success@simulator.amazonses.com", Fate.DELIVERED),
        ("anyone@bounce.mailqueue.example", Fate.BOUNCED),
        ("anyone@complaint.mailqueue.example", Fate.COMPLAINED),
        ("bounce@example.org", Fate.DELIVERED),
        ("anyone@sub.bounce.mailqueue.example", Fate.DELIVERED),
    ],
)
def test_simulated_addresses_decide_what_happens_after_ses_accepted(address: str, fate: Fate) -> None:
    assert fate_of(address) is fate


def test_the_simulated_domains_pass_the_apis_address_validation() -> None:
    # The API refuses special-use domains (.test); the simulated ones must be sendable to.
    for address in ("a@bounce.mailqueue.example", "a@complaint.mailqueue.example", "bounce+x@simulator.amazonses.com"):
        assert Mailbox.parse(address).address == address


@pytest.mark.parametrize(
    ("domain", "outcome"),
    [
        (ses_simulator.REJECT_DOMAIN, SendOutcome.PERMANENT),
        (ses_simulator.UNAVAILABLE_DOMAIN, SendOutcome.TRANSIENT),
        # As SES's sandbox refuses a recipient it has not verified: the account's matter, so the email is held
        (ses_simulator.UNVERIFIED_DOMAIN, SendOutcome.ACCOUNT),
    ],
)
def test_a_send_to_a_failing_domain_is_refused_as_the_sender_classifies_it(domain: str, outcome: SendOutcome) -> None:
    address = f"reader+x@{domain}"
    assert Mailbox.parse(address).address == address
    params = send_params(["alice@example.org"], bcc=[address])

    failure = ses_simulator.send_failure(params)

    assert failure is not None
    status, code, message = failure
    error = ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "SendEmail"
    )
    assert classify(error).outcome is outcome


def test_a_plain_send_makes_a_send_and_a_delivery_event_shaped_like_the_samples() -> None:
    params = send_params(["Alice <alice@example.org>"], bcc=["audit@example.org"])

    events = events_for_send(params, "0100-abc", region="eu-west-1")

    sample = json.loads((SAMPLES / "delivery.json").read_text())
    assert [event["detail"]["eventType"] for event in events] == ["Send", "Delivery"]
    assert [event["detail-type"] for event in events] == ["Email Sent", "Email Delivered"]
    for event in events:
        assert set(event) == set(sample)
        assert set(event["detail"]["mail"]) == set(sample["detail"]["mail"])
        assert event["source"] == "aws.ses"
        assert event["resources"] == ["arn:aws:ses:eu-west-1:123456789012:configuration-set/mailqueue"]
        mail = event["detail"]["mail"]
        assert mail["messageId"] == "0100-abc"
        assert mail["tags"]["email_id"] == [EMAIL_ID]
        assert mail["tags"]["kind"] == ["receipt"]
        assert mail["destination"] == ["alice@example.org", "audit@example.org"]
        assert mail["commonHeaders"]["subject"] == "Your receipt"
        assert email_id_of_event(event["detail"]) == EMAIL_ID
    assert set(events[1]["detail"]["delivery"]) == set(sample["detail"]["delivery"])
    assert events[1]["detail"]["delivery"]["recipients"] == ["alice@example.org", "audit@example.org"]


def test_simulated_recipients_bounce_or_complain_and_the_others_are_delivered() -> None:
    params = send_params(
        ["alice@example.org", "bounce@simulator.amazonses.com"],
        cc=["x@complaint.mailqueue.example", "suppressionlist@simulator.amazonses.com"],
    )

    events = events_for_send(params, "0100-abc")

    assert [event["detail"]["eventType"] for event in events] == ["Send", "Delivery", "Bounce", "Bounce", "Complaint"]
    delivery, general, suppressed, complaint = (event["detail"] for event in events[1:])
    assert delivery["delivery"]["recipients"] == ["alice@example.org", "x@complaint.mailqueue.example"]
    assert (general["bounce"]["bounceType"], general["bounce"]["bounceSubType"]) == ("Permanent", "General")
    [bounced] = general["bounce"]["bouncedRecipients"]
    assert bounced["emailAddress"] == "bounce@simulator.amazonses.com"
    assert bounced["diagnosticCode"].startswith("smtp; 550 5.1.1")
    assert suppressed["bounce"]["bounceSubType"] == "OnAccountSuppressionList"
    assert complaint["complaint"]["complainedRecipients"] == [{"emailAddress": "x@complaint.mailqueue.example"}]
    # What the events function will put on the suppression list
    assert suppressions_from("Bounce", general) == [("bounce@simulator.amazonses.com", "permanent bounce (General)")]
    assert suppressions_from("Complaint", complaint) == [("x@complaint.mailqueue.example", "complaint")]


class NotYetRecorded(Exception):
    """Named as mailqueue.ses_events's: the publisher recognizes it by name."""


@dataclass
class FakeEventsFunction:
    """Records the events it applies; raises NotYetRecorded while ``sending`` is true."""

    sending: bool = False
    failures: int = 0
    applied: list[str] = field(default_factory=list)

    def __call__(self, event: dict[str, Any]) -> None:
        if self.sending:
            raise NotYetRecorded
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the table could not be reached")
        self.applied.append(event["detail"]["eventType"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_events_wait_in_order_until_the_sender_recorded_the_send() -> None:
    function, clock = FakeEventsFunction(sending=True), FakeClock()
    publisher = SesEventPublisher(function, retry_seconds=0.1, give_up_seconds=10, clock=clock)
    publisher.put(EMAIL_ID, events_for_send(send_params(["bounce@simulator.amazonses.com"]), "0100-abc"))

    assert publisher.step() == pytest.approx(0.1)  # handed over, refused, waiting
    assert (function.applied, publisher.pending) == ([], 1)

    function.sending = False
    clock.now += 0.05
    publisher.step()
    assert function.applied == []  # not due yet

    clock.now += 0.05
    publisher.step()
    assert function.applied == ["Send", "Bounce"]
    assert (publisher.pending, publisher.published, publisher.dropped) == (0, 2, 0)


def test_events_of_an_email_never_recorded_are_dropped_after_a_while() -> None:
    function, clock = FakeEventsFunction(sending=True), FakeClock()
    publisher = SesEventPublisher(function, retry_seconds=1, give_up_seconds=5, clock=clock)
    publisher.put(EMAIL_ID, events_for_send(send_params(["alice@example.org"]), "0100-abc"))

    for _ in range(7):
        publisher.step()
        clock.now += 1

    assert (publisher.pending, publisher.published, publisher.dropped) == (0, 0, 2)


def test_a_failing_event_is_retried_twice_as_lambda_retries_async_invocations_then_dropped() -> None:
    function, clock = FakeEventsFunction(failures=3), FakeClock()
    publisher = SesEventPublisher(function, retry_seconds=1, give_up_seconds=60, clock=clock)
    publisher.put(EMAIL_ID, events_for_send(send_params(["alice@example.org"]), "0100-abc"))

    for _ in range(4):
        publisher.step()
        clock.now += 1

    # Send failed three times (dropped); Delivery went through
    assert function.applied == ["Delivery"]
    assert (publisher.pending, publisher.published, publisher.dropped) == (0, 1, 1)


def test_the_publisher_thread_stops_when_asked() -> None:
    publisher, stop = SesEventPublisher(FakeEventsFunction()), threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,))
    thread.start()
    publisher.put(EMAIL_ID, events_for_send(send_params(["alice@example.org"]), "0100-abc"))
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_make_dev_emits_ses_events_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILQUEUE_SES_EVENTS", raising=False)
    assert from_environment().ses_events is True
    monkeypatch.setenv("MAILQUEUE_SES_EVENTS", "0")
    assert from_environment().ses_events is False
    assert LocalStack().ses_events is False  # runs that hand over events themselves (chaos, bench)


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ({"source": ["aws.ses"], "detail-type": ["Email Bounced"]}, True),
        ({"source": ["aws.s3"]}, False),
        ({"detail-type": ["Scheduled Event"]}, False),
        (None, False),
    ],
)
def test_the_events_function_is_the_one_whose_rule_takes_ses_events(pattern: Any, matches: bool) -> None:
    assert _matches_ses(pattern) is matches


def test_a_port_left_in_time_wait_by_a_stopped_stack_is_free_to_start_again() -> None:
    # Given a server that accepted a connection and closed it first: its port lingers in TIME_WAIT
    import socket

    from mailqueue_dev.local import PortInUse, _check_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server's side closes first: it is the side left in TIME_WAIT
    client.recv(1)
    client.close()
    server.close()

    # Then starting on it again is not refused (the servers bind with SO_REUSEADDR)
    _check_free("127.0.0.1", port, "MAILQUEUE_API_PORT")

    # while a port something listens on still is
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    with pytest.raises(PortInUse):
        _check_free("127.0.0.1", holder.getsockname()[1], "MAILQUEUE_API_PORT")
    holder.close()


def test_an_invocation_waiting_for_its_turn_gets_its_whole_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Invocations take turns; the clock of one starts when its turn comes, as Lambda's starts with the invocation.

    A sender that waited behind a long requeue run must not find its time spent before it starts.
    """
    stack = LocalStack()
    first_running, release, context_made = threading.Event(), threading.Event(), threading.Event()
    first_done = threading.Event()
    made_after_the_first_ended: list[bool] = []

    class Context(lambda_events.LambdaContext):
        def __init__(self, **fields: Any) -> None:
            made_after_the_first_ended.append(first_done.is_set())
            context_made.set()
            super().__init__(**fields)

    monkeypatch.setattr(lambda_events, "LambdaContext", Context)

    def slow(event: dict[str, Any], context: Any) -> None:
        first_running.set()
        release.wait(10)
        first_done.set()

    def quick(event: dict[str, Any], context: Any) -> None:
        pass

    first = threading.Thread(target=stack.invoke, args=(Function("Requeue", Path("r"), "r", "h", 60.0, slow), {}))
    first.start()
    assert first_running.wait(10)
    made_after_the_first_ended.clear()
    context_made.clear()
    second = threading.Thread(target=stack.invoke, args=(Function("Sender", Path("s"), "s", "h", 30.0, quick), {}))
    second.start()
    context_made.wait(1)  # before its turn, a context made now would be made here
    release.set()
    first.join(10)
    second.join(10)

    assert made_after_the_first_ended == [True]


# --- the DynamoDB stream event source --------------------------------------------------------------------


def stream_records(count: int) -> list[dict[str, Any]]:
    return [{"eventName": "MODIFY", "dynamodb": {"SequenceNumber": str(100 + i)}} for i in range(count)]


def a_stream_poller(answers: list[Any], retries: int = 3) -> tuple[StreamPoller, list[list[str]]]:
    """A poller whose function answers ``answers`` in turn (an exception is raised), recording each batch."""
    seen: list[list[str]] = []

    def handler(event: dict[str, Any], _: Any) -> Any:
        seen.append([record["dynamodb"]["SequenceNumber"] for record in event["Records"]])
        answer = answers.pop(0) if answers else {"batchItemFailures": []}
        if isinstance(answer, Exception):
            raise answer
        return answer

    function = Function("NotifyFunction", Path("."), "notify", "handler", 30.0, handler)
    return StreamPoller(function, "arn:stream", 100, lambda _: True, True, retries=retries), seen


def test_a_stream_batch_is_handed_over_again_from_its_first_failed_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailqueue_dev.local.STREAM_RETRY_SECONDS", 0)
    poller, seen = a_stream_poller([{"batchItemFailures": [{"itemIdentifier": "103"}, {"itemIdentifier": "102"}]}])

    left = LocalStack()._deliver_stream(poller, stream_records(5))

    assert left == []
    assert seen == [["100", "101", "102", "103", "104"], ["102", "103", "104"]]
    assert (poller.delivered, poller.dropped) == (3, 0)


def test_a_stream_batch_whose_function_keeps_failing_is_dropped_after_its_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mailqueue_dev.local.STREAM_RETRY_SECONDS", 0)
    poller, seen = a_stream_poller([RuntimeError("down")] * 10, retries=2)

    LocalStack()._deliver_stream(poller, stream_records(2))

    assert len(seen) == 3  # the first try and two retries, the whole batch each time
    assert (poller.delivered, poller.dropped) == (0, 2)


def test_an_unknown_failed_identifier_fails_the_whole_stream_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailqueue_dev.local.STREAM_RETRY_SECONDS", 0)
    poller, seen = a_stream_poller([{"batchItemFailures": [{"itemIdentifier": "nope"}]}])

    LocalStack()._deliver_stream(poller, stream_records(3))

    assert seen == [["100", "101", "102"], ["100", "101", "102"]]


# --- schedules ----------------------------------------------------------------------------------------------


def test_each_schedule_of_the_template_is_played_with_its_own_input_as_the_scheduler_does() -> None:
    """The requeue function's schedules each pass their group (their Input) as the event: a run of each covers
    every shard once. A schedule without Input gets the Scheduler's own event."""
    from mailqueue.shardgroups import shard_group_of
    from mailqueue_dev.template import Stack, load_template

    events: list[Any] = []
    stack = LocalStack()
    stack.stack = Stack(load_template(), "mailqueue-local")
    stack.functions = {
        "RequeueFunction": Function("RequeueFunction", Path("r"), "r", "h", 60.0, lambda e, c: events.append(e))
    }

    stack._wire_events()
    for schedule in stack.schedules:
        stack.run_schedule(schedule)

    names = set(load_template()["Resources"]["RequeueFunction"]["Properties"]["Events"])
    assert {schedule.name for schedule in stack.schedules} == names
    assert len(events) == len(names) > 1
    groups = [shard_group_of(event) for event in events]
    assert sorted((group.count, group.index) for group in groups) == [(len(names), n) for n in range(len(names))]
    assert stack.runs == {("RequeueFunction", name): 1 for name in names}
    assert lambda_events.scheduler_event(None)["detail-type"] == "Scheduled Event"


def test_waiting_for_runs_of_a_function_waits_for_each_of_its_schedules() -> None:
    from mailqueue_dev.local import Schedule

    stack = LocalStack()
    function = Function("RequeueFunction", Path("r"), "r", "h", 60.0, lambda e, c: None)
    first, second = Schedule(function, 1.0, "Group0", "{}"), Schedule(function, 1.0, "Group1", "{}")
    stack.schedules = [first, second]

    def run_when_waited_for(go: threading.Event, *schedules: Schedule) -> threading.Thread:
        def run() -> None:
            go.wait(10)
            for schedule in schedules:
                stack.run_schedule(schedule)  # counts under the lock the waiter holds until it waits

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    # the first schedule runs twice, the second not at all: not yet one run of each
    go = threading.Event()
    runner = run_when_waited_for(go, first, first)
    with stack._runs_changed:
        go.set()
        assert stack.wait_for_runs("RequeueFunction", 1, timeout=1) is False
    runner.join(10)

    go = threading.Event()
    runner = run_when_waited_for(go, first, second)
    with stack._runs_changed:
        go.set()
        assert stack.wait_for_runs("RequeueFunction", 1, timeout=10) is True
    runner.join(10)
