"""What the sender function does with each send-queue message: claim, render, send, record.

1. **Claim**: one conditional write moves a ``queued`` email with attempts left to ``sending``,
   with a fresh claim token, ``attempts + 1`` and the claim expiry as its deadline. Whatever else
   the email is (cancelled, sent, already sending under another claim, waiting to retry) the
   message is a duplicate or stale: it is acknowledged, logged and counted, never sent again.
2. **Render** the content record into one MIME message (:mod:`mailqueue.render`).
3. **Send** through SES v2 (:mod:`mailqueue.mailer`), paced so that all sender invocations together
   stay under the account's send rate (see *Pacing* below). SES answers a throttle before it takes
   the email: the send is tried again under the same claim after a pause, with no write and no
   attempt spent, while the claim and the invocation have time for it.
4. **Record** the outcome with a write guarded by the claim token, rewriting the history from
   the claimed record (trimmed):

   ========== ================================================================================
   accepted   ``sent``, with SES's message id; no deadline, a TTL
   transient  ``retrying`` until the next attempt (exponential backoff, full jitter); at the last
              attempt ``failed``
   unknown    ``retrying`` for ``unknown_outcome_seconds``: SES may have accepted the email, and
              its Send event (tagged with the email id) moves it to ``sent`` in that time. Only
              if none comes is it sent again. This is the one window in which mailqueue can send
              an email twice; each such attempt is logged and counted (``UnknownOutcomes``).
   account    ``retrying`` for ``account_error_seconds``, the attempt given back: the account or
              the configuration is at fault, every email would fail alike, and an operator's fix
              must release the queue rather than find it failed. Logged as an error and counted
              (``AccountErrors``) for an alarm.
   permanent  ``failed`` with SES's code and message
   ========== ================================================================================

Which of these follows an SES answer is :func:`decide`'s, a pure function of the answer, the attempt
and the settings (and, for a throttle, the tries and time left under the claim); the sender applies it.

A throttle that outlasts the tries under the claim (or the time for them) releases the claim: the
email is ``retrying`` after a backoff, its attempt given back (one write).

**Pacing.** Each container spaces its SES calls at its share of the send rate, ``send_rate /
sender_concurrency``: the invocations of one send queue together use the whole rate. Whichever queue
has mail gets it all: a normal-priority invocation waits, before it claims anything, while the
high-priority queue has mail (waiting or in flight, asked of SQS at most once a second), so high
priority goes first and the two queues never send at full pace together. SES's throttles steer the
rest (a high-priority email arriving while normal mail is being sent, a ``SendRate`` above the
account's): each throttle halves the container's pace, which then grows back by a tenth of its share
each second (additive increase, multiplicative decrease).

A message that is not a mailqueue message (logged as malformed, with its body) or names no
stored email is acknowledged and logged: retrying it cannot help. Any other exception
propagates, so that the batch reports only that message as failed and SQS delivers it again.

Besides an unknown outcome, one more path can repeat a send: SES accepted the email but the
``sent`` write failed (DynamoDB unreachable even after its client's retries), or the sender died
before it. The email then stays ``sending`` until its claim expires; SES's Send event settles it
as sent before that (:mod:`mailqueue.ses_events`), unless the event is lost too. When the event
comes first and the sender is alive, its own write finds the email sent and reports it so.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from mailqueue import clock
from mailqueue.blobs import BlobStore, ObjectTooLarge
from mailqueue.ids import is_email_id
from mailqueue.limits import MAX_ATTACHMENT_BYTES
from mailqueue.mailer import Mailer, SendResult
from mailqueue.queue import email_id_of_message
from mailqueue.records import Attr, StatusRecord
from mailqueue.render import Rendered, RenderError, load_content, render
from mailqueue.ses_errors import Classified, SendOutcome
from mailqueue.settings import Settings
from mailqueue.statemachine import HELD_PREFIX, Change, Guard, Status, transition
from mailqueue.store import WITHDRAWN, ConditionFailed, EmailStore

# Time kept back, past the pacing wait, for one claim, render, send and record: a message that
# cannot be finished before the function's timeout is left to SQS, unclaimed. It covers the SES
# call's own limits (3 s to connect, 10 s to read) and the record write after it, so the function
# is never killed between SES accepting an email and the write that records it.
RESERVE_SECONDS = 20.0
# An email whose wait ends within this of its content's expiry has its content kept longer.
KEEP_MARGIN_SECONDS = 86400
ATTEMPTS_EXHAUSTED = "attempts exhausted"
# SES calls again under the same claim after a throttle, each after a pause of full jitter under
# THROTTLE_PAUSE_SECONDS × 2^n (SES counts its rate per second), before the claim is released.
THROTTLE_RETRIES = 4
THROTTLE_PAUSE_SECONDS = 1.0
# After a throttle a container's pace is this much of what it was, never below FLOOR of its share, and
# grows back by its whole share over RECOVERY_SECONDS.
DECREASE = 0.5
FLOOR = 0.05
RECOVERY_SECONDS = 10.0
# How long a normal-priority invocation sleeps before it asks again whether the high-priority queue has mail.
YIELD_SECONDS = 1.0
# How much of a malformed message's body its log line shows.
MALFORMED_BODY_LOGGED = 500
_SENT_OR_LATER = frozenset({Status.SENT, Status.DELIVERED, Status.BOUNCED, Status.COMPLAINED})


class Result(StrEnum):
    """What handling one message did."""

    SENT = "sent"
    RETRYING = "retrying"  # a transient error: tried again after a backoff
    UNKNOWN = "unknown"  # the outcome is unknown: waits for SES's Send event
    HELD = "held"  # an account or configuration error: waits, the attempt not counted
    FAILED = "failed"
    SKIPPED = "skipped"  # a duplicate or stale message: the email is not (or no longer) to be sent
    IGNORED = "ignored"  # not a mailqueue message, or no such email
    CLAIM_LOST = "claim_lost"  # the claim was taken over before the outcome was recorded


@dataclass(frozen=True)
class Report:
    result: Result
    email_id: str | None
    detail: str = ""
    record: StatusRecord | None = None


@dataclass(frozen=True)
class Decision:
    """What the sender does after SES answered one call (:func:`decide`).

    ``result`` is what the write makes of the email; ``None``: no write, SES is called again under the same
    claim (a throttle, with tries and time left for another). A retrying email (``wait_seconds`` set) waits
    that long; ``attempt_counted`` False gives its attempt back.
    """

    result: Result | None
    reason: str = ""
    wait_seconds: float | None = None
    attempt_counted: bool = True

    @property
    def status(self) -> Status | None:
        """The status written, or None when SES is called again first."""
        return None if self.result is None else _STATUS_OF[self.result]


_STATUS_OF = {
    Result.SENT: Status.SENT,
    Result.RETRYING: Status.RETRYING,
    Result.UNKNOWN: Status.RETRYING,
    Result.HELD: Status.RETRYING,
    Result.FAILED: Status.FAILED,
}
SEND_AGAIN = Decision(None, "throttled by SES: called again under the same claim")


def decide(
    classified: Classified,
    attempt: int,
    settings: Settings,
    jitter: float,
    throttles: int = THROTTLE_RETRIES,
    time_for_another_send: bool = False,
) -> Decision:
    """The sender's decision after SES answered ``classified`` at ``attempt`` (from 1) of the email.

    ``jitter`` (uniform in [0, 1)) places a backoff in its window; ``throttles`` counts the throttles
    already answered under this claim, and ``time_for_another_send`` says whether the claim and the
    invocation have room for one more call. A pure function: the sender applies what it returns.
    """
    outcome, code, limit = classified.outcome, classified.code, settings.max_attempts
    if outcome is SendOutcome.ACCEPTED:
        return Decision(Result.SENT, "accepted by SES")
    if outcome is SendOutcome.THROTTLED and throttles < THROTTLE_RETRIES and time_for_another_send:
        return SEND_AGAIN
    if outcome is SendOutcome.TRANSIENT and attempt < limit:
        delay = backoff_seconds(attempt, settings, lambda: jitter)
        return Decision(Result.RETRYING, f"{code}: attempt {attempt} of {limit}, next in {delay:.0f}s", delay)
    if outcome is SendOutcome.THROTTLED:
        # A throttle says nothing about the email: wait, without spending an attempt.
        delay = backoff_seconds(attempt, settings, lambda: jitter)
        reason = f"{code}: throttled by SES, attempt not counted, next in {delay:.0f}s"
        return Decision(Result.RETRYING, reason, delay, attempt_counted=False)
    if outcome is SendOutcome.UNKNOWN:
        # Even at the last attempt: SES may have the email, and only a live email can still be
        # settled as sent by its Send event. The requeue function fails it if none comes.
        reason = f"outcome unknown ({code}): waiting for SES's Send event before sending again"
        return Decision(Result.UNKNOWN, reason, float(settings.unknown_outcome_seconds))
    if outcome is SendOutcome.ACCOUNT:
        reason = f"{HELD_PREFIX} {code} is an account or configuration error; attempt not counted"
        return Decision(Result.HELD, reason, float(settings.account_error_seconds), attempt_counted=False)
    why = f"{code} at the last attempt ({attempt} of {limit})" if outcome is SendOutcome.TRANSIENT else code
    return Decision(Result.FAILED, f"failed: {why}")


class NotAccepted(RenderError):
    """The API refused the email (503) while its status write was in doubt; the write landed after all."""

    code = "NotAccepted"


class AttachmentTooLarge(RenderError):
    """The files uploaded for the email hold more than an email may carry (replaced after it was accepted)."""

    code = "AttachmentTooLarge"


class NoTimeLeft(Exception):
    """The invocation would time out before this email is sent: leave the message to SQS, unclaimed."""


def invocation_rate(settings: Settings) -> float:
    """Emails per second one invocation may send: its share of the account's send rate among the
    ``sender_concurrency`` invocations of one send queue (the event source's maximum concurrency).
    The invocations of one queue together use the whole rate; normal-priority invocations wait while
    the high-priority queue has mail, so the two queues do not each take it (see *Pacing* above)."""
    return settings.send_rate / settings.sender_concurrency


def throttle_pause(retry: int, draw: Callable[[], float] = random.random) -> float:
    """The pause before SES is called again after the ``retry``-th throttle (from 0): full jitter under
    ``THROTTLE_PAUSE_SECONDS × 2^retry``, so that sends throttled together do not come back together."""
    return round(draw() * THROTTLE_PAUSE_SECONDS * 2.0**retry, 3)


def backoff_seconds(attempt: int, settings: Settings, draw: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base × 2^(attempt-1))].

    Full jitter spreads out emails that failed together (a throttle hits a whole batch), so they
    do not come back together and fail together again.
    """
    doubling: int = 2 ** max(0, attempt - 1)
    ceiling = min(settings.backoff_max_seconds, settings.backoff_base_seconds * doubling)
    return round(draw() * ceiling, 3)


@dataclass
class Pacer:
    """Spaces SES calls across the invocations of one container: at most ``rate`` a second (its share of
    the send rate), less for a while after SES throttles (additive increase, multiplicative decrease)."""

    rate: float
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _next: float = field(default=0.0, init=False)
    # The pace set by the last throttle, and when: it grows back from there to ``rate``.
    _pace: float = field(default=0.0, init=False)
    _paced_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._pace = self.rate

    def pace(self, now: float | None = None) -> float:
        """Emails a second at ``now``: ``rate`` unless SES throttled lately, then growing back to it by
        ``rate / RECOVERY_SECONDS`` each second."""
        now = self.monotonic() if now is None else now
        return min(self.rate, self._pace + self.rate * max(0.0, now - self._paced_at) / RECOVERY_SECONDS)

    def delay(self) -> float:
        """Seconds until the next send may start."""
        return max(0.0, self._next - self.monotonic())

    def wait(self) -> None:
        """Wait for the next slot and take it.

        A send that starts late (the work before it overran its slot) keeps the schedule: the next slot
        comes up to half a slot sooner, so that jitter in the work does not lose the rate. A container
        back from idle (late by a slot or more) starts a new schedule, with no burst.
        """
        now = self.monotonic()
        slot = max(now, self._next)
        if slot > now:
            self.sleep(slot - now)
        interval = 1.0 / self.pace(slot)
        late = max(0.0, now - self._next)
        self._next = slot + interval - (min(late, interval / 2) if late < interval else 0.0)

    def throttled(self, pause: float) -> None:
        """SES throttled a send: slow down, and let no send start for ``pause`` seconds."""
        now = self.monotonic()
        self._pace = max(self.rate * FLOOR, self.pace(now) * DECREASE)
        self._paced_at = now
        self._next = max(self._next, now + pause)


def email_id_in(body: str) -> str | None:
    """The email id a message names, if it is a mailqueue message: the handler's correlation id."""
    try:
        email_id = email_id_of_message(body)
    except ValueError:
        return None
    return email_id if is_email_id(email_id) else None


@dataclass
class Sender:
    """The sender function's work, bound to one deployment's settings, clients and telemetry."""

    settings: Settings
    store: EmailStore
    blobs: BlobStore
    mailer: Mailer
    pacer: Pacer
    logger: Logger
    metrics: Metrics
    now: Callable[[], datetime] = clock.now
    draw: Callable[[], float] = random.random
    # Whether the high-priority queue has mail (mailqueue.queue.Backlog.has_mail): normal-priority mail
    # waits while it does. None: normal-priority mail never waits.
    high_priority: Callable[[], bool] | None = None

    # --- one message ----------------------------------------------------------------------------------

    def handle_message(
        self,
        body: str,
        time_left: Callable[[], float] | None = None,
        message_id: str | None = None,
        priority: str = "normal",
    ) -> Report:
        """Handle one message of the send queue of ``priority``. ``time_left`` gives the seconds before the
        function times out."""
        email_id = email_id_in(body)
        if email_id is None:
            # Retrying cannot help; say what it was, so that whoever published it can find it.
            self.logger.error(
                'malformed message dropped: a send message is {"id": "<email id>"}',
                extra={"sqs_message_id": message_id, "body": body[:MALFORMED_BODY_LOGGED]},
            )
            self._count("IgnoredMessages")
            self._count("MalformedMessages")
            return Report(Result.IGNORED, None, "malformed message")
        return self.send(email_id, time_left, priority)

    def send(self, email_id: str, time_left: Callable[[], float] | None = None, priority: str = "normal") -> Report:
        """Claim, render, send and record one email (of the send queue of ``priority``)."""
        if priority != "high":
            self._yield_to_high_priority(time_left)
        if time_left is not None and time_left() < self.pacer.delay() + RESERVE_SECONDS:
            self.logger.warning("no time left in this invocation: the message returns to the queue")
            raise NoTimeLeft(email_id)

        token = secrets.token_hex(16)
        claimed = self._claim(email_id, token)
        if isinstance(claimed, Report):
            return claimed

        try:
            rendered = self._render(email_id)
        except RenderError as error:
            unrenderable = Classified(SendOutcome.PERMANENT, error.code, str(error))
            return self._record(claimed, token, SendResult(unrenderable, 0.0))
        except Exception as error:
            # Reading the content failed (DynamoDB or S3): nothing was sent, so hand the email back
            # as a transient failure rather than leave it claimed until the claim expires.
            failure = Classified(
                SendOutcome.TRANSIENT, _aws_code(error) or type(error).__name__, "the content could not be read"
            )
            try:
                self._record(claimed, token, SendResult(failure, 0.0))
            except Exception:
                self.logger.exception("could not release the claim; it expires on its own")
            raise

        return self._record(claimed, token, self._send_paced(email_id, rendered, claimed, time_left))

    # --- pace -----------------------------------------------------------------------------------------

    def _yield_to_high_priority(self, time_left: Callable[[], float] | None) -> None:
        """Wait, unclaimed, while the high-priority queue has mail; NoTimeLeft when the invocation's time
        runs out first (the message returns to its queue, as any message not reached)."""
        if self.high_priority is None:
            return
        started = self.pacer.monotonic()
        budget = time_left() if time_left is not None else None
        while self.high_priority():
            waited = self.pacer.monotonic() - started
            if budget is not None and budget - waited < YIELD_SECONDS + RESERVE_SECONDS:
                self.logger.info("the high-priority queue kept its mail: the message returns to the queue")
                raise NoTimeLeft("waiting for the high-priority queue")
            self.pacer.sleep(YIELD_SECONDS)

    def _send_paced(
        self, email_id: str, rendered: Rendered, claimed: StatusRecord, time_left: Callable[[], float] | None
    ) -> SendResult:
        """Send at the pace. A throttle is tried again under the same claim after a pause, with no write:
        SES refused the call before taking the email, so the claim's one possible acceptance is still to
        come. The throttle is returned when the tries are spent or the claim or the invocation would run
        out of time waiting."""
        retry = 0
        while True:
            self.pacer.wait()
            result = self.mailer.send(email_id, rendered)
            self.metrics.add_metric(name="SesLatency", unit=MetricUnit.Milliseconds, value=result.latency_ms)
            self.logger.debug("SES answered", extra={"attempt": claimed.attempts, "latency_ms": result.latency_ms})
            if result.outcome is not SendOutcome.THROTTLED:
                return result
            self._count("SendsThrottled")
            self.pacer.throttled(throttle_pause(retry, self.draw))
            room = retry < THROTTLE_RETRIES and self._time_for_another_send(claimed, time_left)
            if decide(result.classified, claimed.attempts, self.settings, 0.0, retry, room) is not SEND_AGAIN:
                return result
            retry += 1

    def _time_for_another_send(self, claimed: StatusRecord, time_left: Callable[[], float] | None) -> bool:
        """Whether another SES call, after the pacer's wait, still ends well inside the claim and the invocation."""
        needed = self.pacer.delay() + RESERVE_SECONDS
        assert claimed.deadline is not None  # a claimed email is live
        claim_left = (claimed.deadline - self.now()).total_seconds()
        return claim_left >= needed and (time_left is None or time_left() >= needed)

    # --- claim ----------------------------------------------------------------------------------------

    def _claim(self, email_id: str, token: str) -> StatusRecord | Report:
        now = self.now()
        change = Change(
            Status.SENDING,
            reason="claimed by the sender",
            deadline=clock.after(now, self.settings.claim_seconds),
            attempts_delta=1,
            set={Attr.CLAIM_TOKEN: token},
        )
        guard = Guard(statuses={Status.QUEUED}, attempts_below=self.settings.max_attempts)
        try:
            return transition(self.store, email_id, guard, change, now)
        except ConditionFailed as failure:
            current = failure.current or self.store.get(email_id)
        if current is not None and current.status is Status.SENDING and current.claim_token == token:
            # botocore retried a claim that had in fact been written: the claim is ours.
            return current
        return self._not_claimed(email_id, current, now)

    def _not_claimed(self, email_id: str, current: StatusRecord | None, now: datetime) -> Report:
        if current is None:
            self.logger.warning("ignored a message for an email that does not exist")
            self._count("IgnoredMessages")
            return Report(Result.IGNORED, email_id, "no such email")
        status = current.status
        if status is Status.QUEUED and current.attempts >= self.settings.max_attempts:
            return self._fail_exhausted(email_id, now)
        if status is Status.SENDING:
            live = current.deadline is not None and current.deadline > now
            detail = "already sending under a live claim" if live else "sending under an expired claim"
        else:
            detail = f"already {status.value}"
        self.logger.info("skipped a duplicate or stale message", extra={"status": status.value, "detail": detail})
        self._count("SkippedDuplicates")
        return Report(Result.SKIPPED, email_id, detail, current)

    def _fail_exhausted(self, email_id: str, now: datetime) -> Report:
        """Fail a queued email that has no attempts left (max_attempts was lowered, or a requeue raced).

        The state machine moves a queued email only to sending, so it is claimed without spending
        an attempt, then failed under that claim; the history keeps no trace of the bridging claim.
        """
        token = secrets.token_hex(16)
        guard = Guard(statuses={Status.QUEUED}, attempts_at_least=self.settings.max_attempts)
        bridge = Change(
            Status.SENDING,
            reason=ATTEMPTS_EXHAUSTED,
            deadline=clock.after(now, self.settings.claim_seconds),
            set={Attr.CLAIM_TOKEN: token},
        )
        try:
            claimed = transition(self.store, email_id, guard, bridge, now)
            history = claimed.history[:-1]
            error = claimed.last_error or {"code": "AttemptsExhausted", "message": ATTEMPTS_EXHAUSTED}
            record = transition(
                self.store,
                email_id,
                Guard(statuses={Status.SENDING}, claim_token=token),
                Change(
                    Status.FAILED,
                    reason=ATTEMPTS_EXHAUSTED,
                    set={Attr.LAST_ERROR: error},
                    remove=(Attr.CLAIM_TOKEN,),
                    history=history,
                ),
                now,
            )
        except ConditionFailed as failure:
            status = failure.current.status.value if failure.current else None
            self.logger.info("skipped a stale message", extra={"status": status})
            self._count("SkippedDuplicates")
            return Report(Result.SKIPPED, email_id, f"already {status}", failure.current)
        self.logger.warning("failed an email with no attempts left", extra={"attempts": claimed.attempts})
        self._count_failed(str(error.get("code", "AttemptsExhausted")))
        return Report(Result.FAILED, email_id, ATTEMPTS_EXHAUSTED, record)

    # --- render ---------------------------------------------------------------------------------------

    def _render(self, email_id: str) -> Rendered:
        item = self.store.get_content(email_id)
        if item is None:
            raise RenderError("the email's content is gone (expired or never written)")
        if WITHDRAWN in item:
            raise NotAccepted("the API answered 503 for this email: it was withdrawn, never to be sent")
        # The uploads of one email are read within what an email may carry, all together: never more in memory.
        left = MAX_ATTACHMENT_BYTES

        def attachment(key: str) -> bytes:
            nonlocal left
            data = self._attachment(key, left)
            left -= len(data)
            return data

        return render(email_id, load_content(item, self.blobs), self.now(), attachment)

    def _attachment(self, key: str, limit: int) -> bytes:
        try:
            return self.blobs.get_bytes(key, limit)
        except ObjectTooLarge as error:
            raise AttachmentTooLarge(
                f"the attachment uploaded as {key} holds {error.size} bytes or more: with the email's other "
                f"uploads, more than the {MAX_ATTACHMENT_BYTES} bytes of attachments an email may carry"
            ) from None
        except Exception as error:
            if _aws_code(error) in {"NoSuchKey", "404", "NotFound"}:
                raise RenderError(f"the attachment uploaded as {key} is gone") from None
            raise

    # --- record ---------------------------------------------------------------------------------------

    def _record(self, claimed: StatusRecord, token: str, result: SendResult) -> Report:
        email_id = claimed.email_id
        attempt = claimed.attempts
        now = self.now()
        outcome, code = result.outcome, result.classified.code
        # This sender holds the claim, so it rewrites the history it read, trimmed to size.
        history = claimed.history
        decision = decide(result.classified, attempt, self.settings, self.draw())
        report_as, status = decision.result, decision.status
        # Only _send_paced sees a decision to call SES again; what reaches the record is written.
        assert report_as is not None
        assert status is not None
        if report_as is Result.SENT:
            change = Change(
                Status.SENT,
                reason=decision.reason,
                set={Attr.SES_MESSAGE_ID: result.message_id},
                remove=(Attr.CLAIM_TOKEN, Attr.LAST_ERROR),
                history=history,
            )
        else:
            change = Change(
                status,
                reason=decision.reason,
                deadline=None if decision.wait_seconds is None else clock.after(now, decision.wait_seconds),
                attempts_delta=0 if decision.attempt_counted else -1,
                set={Attr.LAST_ERROR: result.classified.as_error()},
                remove=(Attr.CLAIM_TOKEN,),
                history=history,
            )

        if change.deadline is not None:
            self._keep_content(claimed, change, now)
        try:
            record = transition(self.store, email_id, Guard(statuses={Status.SENDING}, claim_token=token), change, now)
        except ConditionFailed as failure:
            current_status = failure.current.status if failure.current else None
            if current_status in _SENT_OR_LATER:
                # SES's event reached the events function first and settled the email as sent.
                if outcome is SendOutcome.ACCEPTED:
                    self._observe(Result.SENT, result, attempt)
                else:
                    self.logger.info("SES's event had settled the email as sent", extra={"outcome": outcome.value})
                return Report(Result.SENT, email_id, "settled as sent by SES's event", failure.current)
            # The claim was released (it expired, so the requeue function took the email back)
            # before this outcome was written. If SES accepted it, its Send event can still settle it.
            self.logger.error(
                "the claim was lost before the outcome was recorded",
                extra={"outcome": outcome.value, "code": code, "status": current_status},
            )
            self._count("ClaimsLost")
            return Report(Result.CLAIM_LOST, email_id, f"{outcome.value}: {code}", failure.current)

        self._observe(report_as, result, attempt)
        return Report(report_as, email_id, change.reason or "", record)

    def _keep_content(self, claimed: StatusRecord, change: Change, now: datetime) -> None:
        """Keep what the email needs for its next attempt: an email that waits (held while the account
        is paused, retried) can outlive its content's expiry, counted at enqueue from its due time.

        When the wait ends within a day of ``content_until``, the content record's expiry is moved,
        and the S3 objects it names (large content, uploads) are renewed, so that the lifecycle counts
        their days from now; ``content_until`` moves with them. Rare: a wait is minutes, retention days.
        """
        until = claimed.content_until
        assert change.deadline is not None
        if until is None or until > clock.after(change.deadline, KEEP_MARGIN_SECONDS):
            return
        email_id = claimed.email_id
        retention = self.settings.retention_days * 86400
        kept = [clock.after(change.deadline, retention)]
        try:
            item = self.store.get_content(email_id)
            if item is None:
                return
            keys = [str(item["s3_key"])] if "s3_key" in item and "from" not in item else []
            content = load_content(item, self.blobs)
            keys += [str(a["s3_key"]) for a in content.get("attachments", []) if a.get("s3_key")]
            for key in dict.fromkeys(keys):
                self.blobs.renew(key)
                kept.append(self.blobs.expires_after(key, now, self.settings.retention_days))
            self.store.extend_content(email_id, clock.epoch(kept[0]))
        except Exception:
            # The email is not lost for it: the next wait tries again, and without its content the
            # sender fails it with the reason rather than send it incomplete.
            self.logger.exception("could not extend the email's content; tried again at its next wait")
            return
        change.set = {**change.set, Attr.CONTENT_UNTIL: clock.iso(min(kept))}
        self._count("ContentExtended")

    def _observe(self, result: Result, sent: SendResult, attempt: int) -> None:
        details = {"attempt": attempt, "code": sent.classified.code}
        if result is Result.SENT:
            # DEBUG: one line per email at INFO would cost more than the rest of its logs (the metric counts it).
            self.logger.debug("sent", extra={"attempt": attempt, "ses_message_id": sent.message_id})
            self._count("EmailsSent")
        elif result is Result.RETRYING:
            self.logger.warning(
                "transient error: will retry", extra={**details, "error_message": sent.classified.message}
            )
            self._count("EmailsRetried")
        elif result is Result.UNKNOWN:
            self.logger.warning("outcome unknown: waiting for SES's Send event before sending again", extra=details)
            self._count("UnknownOutcomes")
        elif result is Result.HELD:
            self.logger.error(
                "SES refused the send for a reason of the account or configuration; the email waits",
                extra={**details, "error_message": sent.classified.message},
            )
            self._count("AccountErrors")
        else:
            self.logger.warning("failed", extra={**details, "error_message": sent.classified.message})
            self._count_failed(sent.classified.code)

    # --- metrics --------------------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)

    def _count_failed(self, code: str) -> None:
        self._count("EmailsFailed")
        # Per reason in its own metric: a dimension on the shared set would apply to every metric in it.
        with single_metric(
            name="EmailsFailedByReason",
            unit=MetricUnit.Count,
            value=1,
            namespace=self.metrics.namespace,
            default_dimensions=self.metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name="reason", value=code)


def _aws_code(error: BaseException) -> str | None:
    """The error code of an AWS error response (botocore's ClientError), without importing botocore."""
    response = getattr(error, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code) if code else None
