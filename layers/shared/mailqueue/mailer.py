"""All SES access: one ``SendEmail`` call per claimed email, always with raw MIME content.

The client is built with a single attempt and explicit timeouts (see ``aws``): botocore never
resends on its own, since a resend after a timeout can deliver the email twice. The state machine
decides about retries, from the classified outcome this module returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailqueue.render import Rendered
from mailqueue.ses_errors import Classified, SendOutcome, classify
from mailqueue.settings import Settings

EMAIL_ID_TAG = "email_id"


@dataclass(frozen=True)
class SendResult:
    """What one SendEmail call did: accepted (with SES's message id) or classified, and how long it took."""

    classified: Classified
    latency_ms: float
    message_id: str | None = None

    @property
    def outcome(self) -> SendOutcome:
        return self.classified.outcome


class Mailer:
    def __init__(self, settings: Settings, client: Any, timer: Callable[[], float] = time.perf_counter) -> None:
        self.configuration_set = settings.configuration_set
        self._client = client
        self._timer = timer

    def request(self, email_id: str, rendered: Rendered) -> dict[str, Any]:
        """The SendEmail parameters for one email."""
        destination: dict[str, list[str]] = {}
        if rendered.to:
            destination["ToAddresses"] = rendered.to
        if rendered.cc:
            destination["CcAddresses"] = rendered.cc
        if rendered.bcc:
            # Bcc recipients exist only here: the raw message never names them.
            destination["BccAddresses"] = rendered.bcc
        params: dict[str, Any] = {
            "FromEmailAddress": rendered.from_address,
            "Destination": destination,
            "Content": {"Raw": {"Data": rendered.raw}},
            # SES events carry the tags: the events function matches them back to the email by this one.
            "EmailTags": [
                {"Name": EMAIL_ID_TAG, "Value": email_id},
                *({"Name": tag["name"], "Value": tag["value"]} for tag in rendered.tags),
            ],
        }
        if self.configuration_set:
            params["ConfigurationSetName"] = self.configuration_set
        return params

    def send(self, email_id: str, rendered: Rendered) -> SendResult:
        """Send once. Never raises for what SES or the network did: the result says what happened."""
        params = self.request(email_id, rendered)
        started = self._timer()
        try:
            answer = self._client.send_email(**params)
        except Exception as error:  # every failure is classified: none may resend by itself
            return SendResult(classify(error), self._elapsed_ms(started))
        message_id = str(answer["MessageId"])
        return SendResult(Classified(SendOutcome.ACCEPTED, "Accepted"), self._elapsed_ms(started), message_id)

    def _elapsed_ms(self, started: float) -> float:
        return round((self._timer() - started) * 1000, 1)
