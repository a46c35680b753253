"""The emulated SES enforces the account's maximum send rate as SES v2 does, over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from mailqueue.ses_errors import SendOutcome, classify
from mailqueue_dev.emulator import running
from mailqueue_dev.ses_simulator import SendRate


class Clock:
    def __init__(self) -> None:
        self.moment = 100.0

    def __call__(self) -> float:
        return self.moment


def send(client: Any, *recipients: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.send_email(
        FromEmailAddress="app@example.com",
        Destination={"ToAddresses": list(recipients)},
        Content={"Simple": {"Subject": {"Data": "Rate"}, "Body": {"Text": {"Data": "Hello."}}}},
    )
    return answer


def throttle_of(client: Any, *recipients: str) -> ClientError:
    with pytest.raises(ClientError) as raised:
        send(client, *recipients)
    return raised.value


def test_sends_beyond_the_account_s_rate_are_throttled_as_ses_v2_answers_and_sent_nothing():
    clock = Clock()
    limit = SendRate(rate=2.0, monotonic=clock)
    with running(send_rate=limit) as emulator:
        # One attempt per call, as the sender's client makes: botocore would retry a 429 by itself.
        ses = emulator.session().client(
            "sesv2", endpoint_url=emulator.endpoint_url, config=Config(retries={"total_max_attempts": 1})
        )
        ses.create_email_identity(EmailIdentity="example.com")

        send(ses, "a@example.org")
        send(ses, "b@example.org")  # a second's worth: the burst SES allows
        error = throttle_of(ses, "c@example.org")

        assert error.response["Error"]["Code"] == "TooManyRequestsException"
        assert error.response["Error"]["Message"] == "Maximum sending rate exceeded."
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert classify(error).outcome is SendOutcome.THROTTLED
        assert (limit.accepted, limit.throttled) == (2, 1)

        clock.moment += 0.5  # one recipient's worth again
        send(ses, "d@example.org")
        throttle_of(ses, "e@example.org")

        # Other SES v2 calls are not counted against the rate.
        assert ses.list_email_identities()["EmailIdentities"]


def test_the_rate_counts_recipients_and_lets_a_send_through_while_any_unit_is_left():
    clock = Clock()
    limit = SendRate(rate=1.0, monotonic=clock)

    assert limit.take(5)  # a unit was left: five recipients go, and the bucket owes four
    clock.moment += 4.0
    assert not limit.take(1)
    clock.moment += 1.0
    assert limit.take(1)
    assert (limit.accepted, limit.throttled) == (2, 1)
