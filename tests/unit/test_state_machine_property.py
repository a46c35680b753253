"""A stateful property test: random sequences of everything that can happen to emails, checked after every step.

Hypothesis drives the domain package (moto underneath, time on a clock of the test's own) through
enqueue, send attempts with each SES outcome (accepted, transient, unknown before or after SES
took the email, account, permanent, the sender dying before SES or after it accepted, the
``sent`` write failing), duplicate deliveries, cancel, retry, requeue runs, SES events and time
passing. After
every step, for every email:

- every transition in its history is one the state machine allows;
- it is live exactly when it has a deadline, and holds a claim token exactly when it is sending;
- a terminal email changes status only through the documented paths: the retry of a failed
  email, SES events after sent, and SES's proof that a failed or cancelled email was sent after all;
- its history only grows (the documented trimming keeps the first entry and the latest ones);
- it is never recorded sent unless SES accepted it, and SES accepts it a second time only after
  an attempt whose answer the sender never recorded (the documented duplicate windows).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aws_lambda_powertools import Logger, Metrics
from botocore.exceptions import ClientError, ReadTimeoutError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from mailqueue import aws, clock
from mailqueue.blobs import BlobStore
from mailqueue.errors import StatusConflict
from mailqueue.mailer import Mailer
from mailqueue.models import EmailRequest
from mailqueue.queue import SendQueue
from mailqueue.requeue import Requeuer, send_backlogs
from mailqueue.sender import Pacer, Sender
from mailqueue.service import Mailqueue
from mailqueue.ses_events import NotYetRecorded, SesEvents
from mailqueue.settings import Settings, get_settings
from mailqueue.statemachine import ALLOWED, HISTORY_LIMIT, LIVE, Status
from mailqueue.store import EmailStore, SuppressionList
from mailqueue_dev.chaos import SenderDied, failed_call
from mailqueue_dev.template import Stack

SAMPLES = Path(__file__).resolve().parents[2] / "events" / "events"
EVENTS = ("send", "delivery", "bounce-permanent", "bounce-transient", "complaint", "reject")
# The events that prove SES accepted the email.
PROVES_ACCEPTED = frozenset(EVENTS) - {"reject"}
OUTCOMES = (
    "accepted",
    "throttled",
    "server_error",
    "unknown_before_ses",
    "unknown_after_accept",
    "account",
    "permanent",
    "dies_before_ses",
    "dies_after_accept",
    "sent_write_fails",
)
# Outcomes in which SES took the email but the sender never recorded that it did.
UNRECORDED = frozenset({"unknown_after_accept", "dies_after_accept", "sent_write_fails"})
SENT_OR_LATER = frozenset({Status.SENT, Status.DELIVERED, Status.BOUNCED, Status.COMPLAINED})
# Enough to cross every deadline: a second, the claim (180 s), the grace and unknown-outcome waits (900 s), an hour.
ADVANCES = (1, 45, 181, 901, 3601)
# A transition the history shows without the bridging claim (see Sender._fail_exhausted).
BRIDGED = (Status.QUEUED, Status.FAILED)
RECIPIENTS = itertools.count()


class Machine(RuleBasedStateMachine):
    """Emails under random events; the test hands it its settings and telemetry through ``world``."""

    world: ClassVar[dict[str, Any]] = {}
    emails = Bundle("emails")

    def __init__(self) -> None:
        super().__init__()
        world = self.world
        self.settings: Settings = world["settings"]
        self.store = EmailStore(self.settings, aws.client("dynamodb"))
        self.now = clock.now()
        self.service = Mailqueue(
            settings=self.settings,
            store=self.store,
            queue=SendQueue(self.settings, aws.client("sqs")),
            blobs=BlobStore(self.settings, aws.client("s3")),
            suppressions=SuppressionList(self.settings, aws.client("dynamodb")),
        )
        self.sender = Sender(
            settings=self.settings,
            store=self.store,
            blobs=self.service.blobs,
            mailer=Mailer(self.settings, aws.client("sesv2")),
            pacer=Pacer(rate=1000.0, sleep=lambda _: None),
            logger=world["logger"],
            metrics=world["metrics"],
            now=lambda: self.now,
            draw=lambda: 0.5,
        )
        # With the send queues' backlog, as the requeue function runs: the machine never drains the queues, so a
        # queued email past its grace is held once, then published again (mailqueue.requeue).
        self.requeuer = Requeuer(
            self.settings, self.store, self.service.queue, backlogs=send_backlogs(self.settings, aws.client("sqs"))
        )
        self.events = SesEvents(self.store, self.service.suppressions)
        self.records: dict[str, dict[str, Any]] = {}
        self.ses_sends: Counter[str] = Counter()
        # Email ids that SES may accept once more: its last acceptance was never recorded, or the email
        # was failed and retried by request since.
        self.may_send_again: set[str] = set()
        self.step = ""
        world["machine"] = self

    # --- rules ------------------------------------------------------------------------------------------------

    @precondition(lambda self: len(self.records) < 5)
    @rule(target=emails, when=st.sampled_from(["now", "in a minute", "in an hour"]))
    def enqueue(self, when: str) -> str:
        self.step = "enqueue"
        email: dict[str, Any] = {
            "from": "app@example.com",
            "to": [f"r{next(RECIPIENTS)}@example.org"],
            "subject": "Property",
            "text": "Hello.",
        }
        if when != "now":
            email["send_at"] = (self.now + timedelta(seconds=60 if when == "in a minute" else 3600)).isoformat()
        result = self.service.enqueue(EmailRequest.model_validate(email), self.now)
        self.records[result.id] = self._read(result.id)
        return result.id

    @rule(email_id=emails, outcome=st.sampled_from(OUTCOMES))
    def deliver_message(self, email_id: str, outcome: str) -> None:
        """The send queue delivers the email's message (again, perhaps): claim, send with this outcome, record."""
        self.step = "send"
        self._send(email_id, outcome)

    def _send(self, email_id: str, outcome: str) -> None:
        self.world["outcome"] = outcome
        try:
            self.sender.send(email_id)
        except SenderDied:
            pass  # the sender's process ended: its claim stays until it expires
        except ClientError as error:
            if error.response["Error"]["Code"] != "ProvisionedThroughputExceededException":
                raise  # only the `sent` write this step broke may fail
        finally:
            self.world["outcome"] = None

    @rule(email_id=emails)
    def cancel(self, email_id: str) -> None:
        self.step = "cancel"
        self._cancel(email_id)

    def _cancel(self, email_id: str) -> None:
        refused_in = None
        try:
            self.service.cancel(email_id, self.now)
        except StatusConflict as conflict:
            refused_in = conflict.current
        assert refused_in not in {Status.SCHEDULED, Status.QUEUED, Status.RETRYING}

    @rule(email_id=emails)
    def retry(self, email_id: str) -> None:
        self.step = "retry"
        refused_in = None
        try:
            self.service.retry(email_id, self.now)
        except StatusConflict as conflict:
            refused_in = conflict.current
        else:
            self.may_send_again.add(email_id)
        assert refused_in != Status.FAILED

    @rule()
    def requeue(self) -> None:
        self.step = "requeue"
        self._requeue()

    def _requeue(self) -> None:
        self.requeuer.run(lambda: 60_000, self.now)

    @rule(email_id=emails, name=st.sampled_from(EVENTS))
    def ses_event(self, email_id: str, name: str) -> None:
        self.step = "event"
        self._event(email_id, name)

    def _event(self, email_id: str, name: str) -> None:
        if self.ses_sends[email_id] == 0:
            return  # SES sends events only about emails it accepted
        event = copy.deepcopy(self.world["samples"][name])
        event["detail"]["mail"]["tags"]["email_id"] = [email_id]
        try:
            self.events.handle(event, self.now)
        except NotYetRecorded:
            # The sender has not recorded the send yet: retried later. Only an event that proves nothing
            # may wait; SES's proof that it accepted the email settles it wherever the email is.
            assert name not in PROVES_ACCEPTED, f"SES's proof ({name}) about {email_id} was put off"
            return
        if name in PROVES_ACCEPTED:
            # SES's proof has reached the events function: the email is sent, and must never be sent again
            # (unless retried by request after it failed, which this proof settles as sent).
            status = Status(self._read(email_id)["status"])
            assert status in SENT_OR_LATER, f"SES's proof ({name}) about {email_id} reached it, yet it is {status}"
            self.may_send_again.discard(email_id)

    @rule(seconds=st.sampled_from(ADVANCES))
    def time_passes(self, seconds: int) -> None:
        self.step = "time"
        self.now += timedelta(seconds=seconds)

    # --- invariants --------------------------------------------------------------------------------------------

    @invariant()
    def every_email_keeps_the_rules(self) -> None:
        for email_id, before in list(self.records.items()):
            after = self._read(email_id)
            self._check(email_id, before, after)
            self.records[email_id] = after

    def _check(self, email_id: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        status = Status(after["status"])
        old_status = Status(before["status"])
        assert (status in LIVE) == ("deadline" in after), (
            f"{email_id} is {status} with deadline {after.get('deadline')}"
        )
        assert (status in LIVE) != ("expires_at" in after), f"{email_id} is {status}: a TTL only when terminal"
        assert (status is Status.SENDING) == ("claim_token" in after), f"{email_id} is {status}, claim token?"
        assert 0 <= int(after["attempts"]) <= self.settings.max_attempts

        old, new = before["history"], after["history"]
        added = _added(old, new)
        assert added is not None, f"{email_id}: the history did not grow from {old} to {new}"
        path = [old_status, *(Status(entry["status"]) for entry in added)]
        assert path[-1] is status, f"{email_id} is {status} but its history ends in {path[-1]}"
        for source, target in itertools.pairwise(path):
            assert target in ALLOWED[source] or (source, target) == BRIDGED, f"{email_id}: {source} -> {target}"

        steps = set(self.step.split("+"))
        if old_status not in LIVE and status is not old_status:
            documented = (
                (old_status is Status.FAILED and status is Status.QUEUED and "retry" in steps)
                or (old_status in SENT_OR_LATER and "event" in steps)
                # SES's proof that an earlier attempt was accepted, arriving after the email gave up.
                or (old_status in {Status.FAILED, Status.CANCELLED} and status in SENT_OR_LATER and "event" in steps)
            )
            assert documented, f"{email_id}: {old_status} became {status} through {self.step}"
        if status in SENT_OR_LATER:
            assert self.ses_sends[email_id] >= 1, f"{email_id} is {status} but SES never accepted it"

    def _read(self, email_id: str) -> dict[str, Any]:
        record = self.store.get(email_id)
        assert record is not None, f"{email_id} is gone"
        return record.to_item()

    # --- what SES does ------------------------------------------------------------------------------------------

    def ses_before(self, **_: Any) -> tuple[Any, dict[str, Any]] | None:
        outcome = self.world.get("outcome")
        if outcome == "throttled":
            return failed_call(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
        if outcome == "server_error":
            # Transient: it spends an attempt, and the last one fails the email.
            return failed_call(500, "InternalFailure", "The request processing has failed.")
        if outcome == "account":
            return failed_call(400, "SendingPausedException", "Sending is paused for this account.")
        if outcome == "permanent":
            return failed_call(400, "MessageRejected", "Email address is not verified.")
        if outcome == "unknown_before_ses":
            raise ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com")
        if outcome == "dies_before_ses":
            raise SenderDied("claimed, then gone")
        return None

    def ses_after(self, http_response: Any, **_: Any) -> None:
        if http_response.status_code >= 300:
            return
        email_id = self.world["sending"]
        if self.ses_sends[email_id] and email_id not in self.may_send_again:
            raise AssertionError(f"{email_id} was sent again although SES's first answer was recorded")
        self.ses_sends[email_id] += 1
        self.may_send_again.discard(email_id)
        outcome = self.world.get("outcome")
        if outcome in UNRECORDED:
            self.may_send_again.add(email_id)
        if outcome == "unknown_after_accept":
            raise ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com")
        if outcome == "dies_after_accept":
            raise SenderDied(email_id)

    def dynamodb_before(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]] | None:
        interleave = self.world.get("interleave")
        if interleave is not None:
            interleave[0] -= 1
            if interleave[0] == 0:
                # The actor has read the email and is about to write: another actor acts whole first.
                del self.world["interleave"]
                interleave[1]()
        if self.world.get("outcome") != "sent_write_fails":
            return None
        body = json.loads(params["body"])
        if body.get("ExpressionAttributeValues", {}).get(":to", {}).get("S") != "sent":
            return None
        return failed_call(400, "ProvisionedThroughputExceededException", "Throughput exceeded.")


# Outcomes of a send that races another actor: any but a failing `sent` write, whose fault would strike the
# other actor's writes too.
RACING_OUTCOMES = tuple(outcome for outcome in OUTCOMES if outcome != "sent_write_fails")


class RacingMachine(Machine):
    """The same, and actors that race: one reads an email, another acts on it whole, then the first writes."""

    @rule(
        email_id=Machine.emails,
        first=st.sampled_from(["event", "requeue", "send"]),
        second=st.sampled_from(["event", "requeue", "send", "cancel"]),
        name=st.sampled_from(EVENTS),
        outcome=st.sampled_from(RACING_OUTCOMES),
    )
    def race(self, email_id: str, first: str, second: str, name: str, outcome: str) -> None:
        self.step = f"{first}+{second}"
        actors = {
            "event": lambda: self._event(email_id, name),
            "requeue": self._requeue,
            "send": lambda: self._send(email_id, outcome),
            "cancel": lambda: self._cancel(email_id),
        }
        # The sender's first write is its claim; what races it is the SES call between claim and outcome.
        writes_before = 2 if first == "send" else 1
        self.world["interleave"] = [writes_before, actors[second]]
        try:
            actors[first]()
        finally:
            interleave = self.world.pop("interleave", None)
        if interleave is not None:  # the first actor wrote nothing: the second acts after it
            interleave[1]()


def _added(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The entries ``new`` added to ``old``, or None if ``new`` is not ``old`` grown (and perhaps trimmed).

    Trimming keeps the first entry and the latest ones, and leaves exactly HISTORY_LIMIT entries
    at the write that trims; a step adds at most two entries, so some of the old tail remains.
    """
    if new[: len(old)] == old:
        return new[len(old) :]
    if not new or new[0] != old[0] or len(new) < HISTORY_LIMIT:
        return None
    for start in range(1, len(old)):
        kept = old[start:]
        if new[1 : 1 + len(kept)] == kept:
            return new[1 + len(kept) :]
    return None


def _remember_email(params: dict[str, Any], **_: Any) -> None:
    tags = {tag["Name"]: tag["Value"] for tag in params.get("EmailTags", [])}
    Machine.world["sending"] = tags["email_id"]


def _hooks() -> list[tuple[Any, str, Any]]:
    machine = lambda: Machine.world["machine"]  # noqa: E731 - the machine of the running example
    return [
        (aws.client("sesv2"), "before-parameter-build.sesv2.SendEmail", _remember_email),
        (aws.client("sesv2"), "before-call.sesv2.SendEmail", lambda **kw: machine().ses_before(**kw)),
        (aws.client("sesv2"), "after-call.sesv2.SendEmail", lambda **kw: machine().ses_after(**kw)),
        (aws.client("dynamodb"), "before-call.dynamodb.UpdateItem", lambda **kw: machine().dynamodb_before(**kw)),
    ]


def _run(machine: type[Machine], **options: Any) -> None:
    Machine.world = {
        # Two attempts, so that sequences run out of attempts often.
        "settings": get_settings().model_copy(update={"max_attempts": 2}),
        "logger": Logger(service="mailqueue-property", level="CRITICAL"),
        "metrics": Metrics(namespace="mailqueue"),
        "samples": {name: json.loads((SAMPLES / f"{name}.json").read_text()) for name in EVENTS},
    }
    hooks = _hooks()
    for client, event, handler in hooks:
        client.meta.events.register(event, handler, unique_id=f"property-{event}")
    try:
        chosen: dict[str, Any] = {
            "max_examples": 40,
            "stateful_step_count": 30,
            "deadline": None,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
            **options,
        }
        run_state_machine_as_test(machine, settings=settings(**chosen))
    finally:
        for client, event, _ in hooks:
            client.meta.events.unregister(event, unique_id=f"property-{event}")
        Machine.world["metrics"].clear_metrics()


def test_every_sequence_of_events_keeps_the_state_machine_rules(stack: Stack) -> None:
    _run(Machine)


def test_actors_racing_on_one_email_keep_the_state_machine_rules(stack: Stack) -> None:
    # Derandomized: the same sequences in every run, so that the verdict depends on the code alone.
    _run(RacingMachine, derandomize=True, max_examples=30)


@pytest.mark.parametrize(
    ("old", "new", "added"),
    [
        ([{"s": 1}], [{"s": 1}, {"s": 2}], [{"s": 2}]),
        (
            [{"s": i} for i in range(8)],
            [{"s": 0}, *({"s": i} for i in range(3, 8)), {"s": 8}, {"s": 9}],
            [{"s": 8}, {"s": 9}],
        ),
        ([{"s": 1}, {"s": 2}], [{"s": 1}], None),
        ([{"s": 1}, {"s": 2}], [{"s": 9}, {"s": 2}], None),
    ],
)
def test_history_growth_is_told_from_loss(old: list[Any], new: list[Any], added: list[Any] | None) -> None:
    assert _added(old, new) == added
