"""The sender's decision after an SES answer (mailqueue.sender.decide): a pure function, tested without AWS."""

from __future__ import annotations

import dataclasses

import pytest
from mailqueue.sender import SEND_AGAIN, THROTTLE_RETRIES, Decision, Result, decide
from mailqueue.ses_errors import Classified, SendOutcome
from mailqueue.settings import Settings
from mailqueue.statemachine import HELD_PREFIX, Status

SETTINGS = Settings(
    max_attempts=3,
    backoff_base_seconds=30,
    backoff_max_seconds=3600,
    unknown_outcome_seconds=600,
    account_error_seconds=1200,
)


def answer(outcome: SendOutcome, code: str = "Code") -> Classified:
    return Classified(outcome, code, "what SES said")


def test_accepted_is_sent_with_no_wait() -> None:
    decision = decide(answer(SendOutcome.ACCEPTED, "Accepted"), 1, SETTINGS, 0.5)

    assert decision == Decision(Result.SENT, "accepted by SES")
    assert decision.status is Status.SENT
    assert decision.wait_seconds is None


@pytest.mark.parametrize("attempt", [1, 3])
def test_accepted_at_any_attempt_is_sent(attempt: int) -> None:
    assert decide(answer(SendOutcome.ACCEPTED), attempt, SETTINGS, 0.9).result is Result.SENT


@pytest.mark.parametrize(("attempt", "window"), [(1, 30), (2, 60)])
def test_transient_before_the_last_attempt_retries_after_a_jittered_backoff(attempt: int, window: int) -> None:
    decision = decide(answer(SendOutcome.TRANSIENT, "InternalFailure"), attempt, SETTINGS, 0.5)

    assert decision.result is Result.RETRYING
    assert decision.status is Status.RETRYING
    assert decision.wait_seconds == window / 2
    assert decision.attempt_counted
    assert decision.reason == f"InternalFailure: attempt {attempt} of 3, next in {window / 2:.0f}s"


def test_the_backoff_is_full_jitter_in_its_window() -> None:
    waits = [decide(answer(SendOutcome.TRANSIENT), 2, SETTINGS, jitter).wait_seconds for jitter in (0.0, 0.25, 0.999)]

    assert waits == [0.0, 15.0, pytest.approx(60.0, abs=0.1)]


def test_the_backoff_stops_growing_at_its_maximum() -> None:
    settings = SETTINGS.model_copy(update={"max_attempts": 20})

    assert decide(answer(SendOutcome.TRANSIENT), 19, settings, 0.5).wait_seconds == 1800


def test_transient_at_the_last_attempt_fails() -> None:
    decision = decide(answer(SendOutcome.TRANSIENT, "InternalFailure"), 3, SETTINGS, 0.5)

    assert decision.result is Result.FAILED
    assert decision.status is Status.FAILED
    assert decision.wait_seconds is None
    assert decision.reason == "failed: InternalFailure at the last attempt (3 of 3)"


def test_permanent_fails_at_the_first_attempt() -> None:
    decision = decide(answer(SendOutcome.PERMANENT, "MessageRejected"), 1, SETTINGS, 0.5)

    assert decision == Decision(Result.FAILED, "failed: MessageRejected")
    assert decision.status is Status.FAILED


@pytest.mark.parametrize("attempt", [1, 3])
def test_unknown_waits_for_the_send_event_even_at_the_last_attempt(attempt: int) -> None:
    decision = decide(answer(SendOutcome.UNKNOWN, "ReadTimeoutError"), attempt, SETTINGS, 0.5)

    assert decision.result is Result.UNKNOWN
    assert decision.status is Status.RETRYING
    assert decision.wait_seconds == 600
    assert decision.attempt_counted
    assert "ReadTimeoutError" in decision.reason


@pytest.mark.parametrize("attempt", [1, 3])
def test_account_errors_hold_the_email_and_give_its_attempt_back(attempt: int) -> None:
    decision = decide(answer(SendOutcome.ACCOUNT, "SendingPausedException"), attempt, SETTINGS, 0.5)

    assert decision.result is Result.HELD
    assert decision.status is Status.RETRYING
    assert decision.wait_seconds == 1200
    assert not decision.attempt_counted
    assert decision.reason.startswith(f"{HELD_PREFIX} SendingPausedException")


@pytest.mark.parametrize("throttles", range(THROTTLE_RETRIES))
def test_a_throttle_with_tries_and_time_left_is_sent_again_under_the_claim(throttles: int) -> None:
    decision = decide(answer(SendOutcome.THROTTLED), 1, SETTINGS, 0.5, throttles, time_for_another_send=True)

    assert decision is SEND_AGAIN
    assert decision.result is None
    assert decision.status is None


@pytest.mark.parametrize(("throttles", "time_left"), [(THROTTLE_RETRIES, True), (0, False), (THROTTLE_RETRIES, False)])
def test_a_throttle_without_tries_or_time_left_waits_without_spending_the_attempt(
    throttles: int, time_left: bool
) -> None:
    decision = decide(answer(SendOutcome.THROTTLED, "TooManyRequestsException"), 3, SETTINGS, 0.5, throttles, time_left)

    assert decision.result is Result.RETRYING
    assert decision.status is Status.RETRYING
    # Even at the last attempt: a throttle never fails an email.
    assert decision.wait_seconds == 60
    assert not decision.attempt_counted
    assert decision.reason == "TooManyRequestsException: throttled by SES, attempt not counted, next in 60s"


def test_the_record_path_never_sends_a_throttle_again() -> None:
    # What the sender decides once the tries under the claim are over (the defaults): write the wait.
    assert decide(answer(SendOutcome.THROTTLED), 1, SETTINGS, 0.5).result is Result.RETRYING


@pytest.mark.parametrize("outcome", [o for o in SendOutcome if o is not SendOutcome.THROTTLED])
def test_only_a_throttle_is_sent_again(outcome: SendOutcome) -> None:
    assert decide(answer(outcome), 1, SETTINGS, 0.5, 0, time_for_another_send=True) is not SEND_AGAIN


def test_a_decision_is_a_value() -> None:
    decision = decide(answer(SendOutcome.TRANSIENT), 1, SETTINGS, 0.5)

    assert decision == decide(answer(SendOutcome.TRANSIENT), 1, SETTINGS, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.wait_seconds = 0  # type: ignore[misc]
