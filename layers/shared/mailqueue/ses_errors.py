"""What an SES error means for the email: send it again later, wait, hold the queue, or give up.

Every SES v2 ``SendEmail`` failure lands in one of these outcomes:

- ``throttled``: SES is fine and so is the email; we are early (send rate, daily quota). Retried with
  backoff without spending an attempt: a throttle slows the queue, it never fails an email.
- ``transient``: SES did not take the email, for a reason that passes (service errors, a connection
  that never reached SES). Retried with backoff; counts an attempt.
- ``unknown``: the request may have reached SES (read timeout, connection dropped after sending).
  SES may have accepted the email, so it is not sent again until SES's Send event, tagged with
  the email's id, has had time to settle it. This is the one place a duplicate can come from.
- ``account``: the account or the configuration is at fault, not the email (sending paused, a MAIL
  FROM domain or a sending identity not verified, configuration set missing, no permission). Every
  email would fail the same way, so the email waits without spending an attempt and an operator is
  alerted. SES words an identity that is not verified as ``MessageRejected``: its message tells.
- ``permanent``: SES refused this email (rejected, malformed, an address it will not send to).
  Sending it again cannot help.

Codes are SES v2's, with the SES v1 spellings that the emulator and older endpoints use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class SendOutcome(StrEnum):
    ACCEPTED = "accepted"
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    UNKNOWN = "unknown"
    ACCOUNT = "account"
    PERMANENT = "permanent"


CODES: dict[str, SendOutcome] = {
    # Rate and quota: SES is fine, we are early.
    "TooManyRequestsException": SendOutcome.THROTTLED,
    "LimitExceededException": SendOutcome.THROTTLED,
    "Throttling": SendOutcome.THROTTLED,
    "ThrottlingException": SendOutcome.THROTTLED,
    "ThrottledException": SendOutcome.THROTTLED,
    "RequestThrottled": SendOutcome.THROTTLED,
    "RequestLimitExceeded": SendOutcome.THROTTLED,
    "SlowDown": SendOutcome.THROTTLED,
    "ConcurrentModificationException": SendOutcome.TRANSIENT,
    # SES itself failed.
    "InternalFailure": SendOutcome.TRANSIENT,
    "InternalServerError": SendOutcome.TRANSIENT,
    "InternalServiceError": SendOutcome.TRANSIENT,
    "ServiceUnavailable": SendOutcome.TRANSIENT,
    "ServiceUnavailableException": SendOutcome.TRANSIENT,
    "RequestTimeout": SendOutcome.TRANSIENT,
    "RequestTimeoutException": SendOutcome.TRANSIENT,
    # The account or the configuration: one operator fix releases every email.
    "AccountSuspendedException": SendOutcome.ACCOUNT,
    "SendingPausedException": SendOutcome.ACCOUNT,
    "AccountSendingPausedException": SendOutcome.ACCOUNT,
    "ConfigurationSetSendingPausedException": SendOutcome.ACCOUNT,
    "MailFromDomainNotVerifiedException": SendOutcome.ACCOUNT,
    "MailFromDomainNotVerified": SendOutcome.ACCOUNT,
    "NotFoundException": SendOutcome.ACCOUNT,  # SendEmail's only named resource is the configuration set
    "ConfigurationSetDoesNotExist": SendOutcome.ACCOUNT,
    "ConfigurationSetDoesNotExistException": SendOutcome.ACCOUNT,
    "AccessDenied": SendOutcome.ACCOUNT,
    "AccessDeniedException": SendOutcome.ACCOUNT,
    "UnrecognizedClientException": SendOutcome.ACCOUNT,
    "InvalidClientTokenId": SendOutcome.ACCOUNT,
    "ExpiredToken": SendOutcome.ACCOUNT,
    "ExpiredTokenException": SendOutcome.ACCOUNT,
    "SignatureDoesNotMatch": SendOutcome.ACCOUNT,
    "IncompleteSignature": SendOutcome.ACCOUNT,
    "MissingAuthenticationToken": SendOutcome.ACCOUNT,
    "OptInRequired": SendOutcome.ACCOUNT,
    # The email: SES will never take it as it is.
    "MessageRejected": SendOutcome.PERMANENT,
    "BadRequestException": SendOutcome.PERMANENT,
    "InvalidParameterValue": SendOutcome.PERMANENT,
    "InvalidParameterCombination": SendOutcome.PERMANENT,
    "ValidationError": SendOutcome.PERMANENT,
    "ValidationException": SendOutcome.PERMANENT,
    "MalformedQueryString": SendOutcome.PERMANENT,
    "SerializationException": SendOutcome.PERMANENT,
}

# SES words some faults of the account or an identity as a rejection of the email (``MessageRejected``):
# an identity that is not verified (the From address or domain, or in the sandbox a recipient), and,
# in SES v1, a paused account. Every email would be refused alike until an operator fixes it.
_ACCOUNT_REJECTION = re.compile(r"\bnot verified\b|\bsending paused\b", re.IGNORECASE)

MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class Classified:
    """An SES call's result in mailqueue's terms, with SES's own code and message for the record."""

    outcome: SendOutcome
    code: str
    message: str = ""

    @property
    def sent_for_sure(self) -> bool:
        return self.outcome is SendOutcome.ACCEPTED

    def as_error(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def classify_code(code: str, http_status: int | None = None) -> SendOutcome:
    """The outcome of an error response: by code, else by HTTP status.

    A code this table does not know is transient: the email is retried a bounded number of times
    and then fails with SES's code on record, so an unknown code can neither lose nor stall an email.
    """
    if code in CODES:
        return CODES[code]
    if http_status == 429:
        return SendOutcome.THROTTLED
    if http_status in {401, 403}:
        return SendOutcome.ACCOUNT
    return SendOutcome.TRANSIENT


# botocore exceptions, by class name (botocore is imported only by the code that calls AWS).
# Raised before the request left this host: nothing reached SES.
_NOT_SENT = frozenset({"ConnectionError", "ConnectTimeoutError", "EndpointConnectionError", "ProxyConnectionError"})
# Raised after the request may have reached SES: the email may be on its way.
_MAYBE_SENT = frozenset(
    {
        "HTTPClientError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ResponseStreamingError",
        "IncompleteReadError",
        # urllib3 also raises it while reading the answer, after the request went out.
        "SSLError",
    }
)
# This function cannot call SES at all as configured.
_CANNOT_CALL = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "NoRegionError",
        "UnauthorizedSSOTokenError",
        "TokenRetrievalError",
        "EndpointResolutionError",
    }
)
# The request was never built: the email's parameters are wrong.
_INVALID_REQUEST = frozenset({"ParamValidationError", "ValidationError"})


def classify(error: BaseException) -> Classified:
    """Classify an exception raised by the SES client's ``send_email``."""
    response: Any = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        details = response.get("Error") or {}
        code = str(details.get("Code") or "Unknown")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        message = str(details.get("Message") or "")
        outcome = classify_code(code, status)
        if code == "MessageRejected" and _ACCOUNT_REJECTION.search(message):
            outcome = SendOutcome.ACCOUNT
        return Classified(outcome, code, _short(message))

    names = [kind.__name__ for kind in type(error).__mro__]
    # The most specific botocore class decides: ConnectTimeoutError is a ConnectionError (not sent),
    # ReadTimeoutError an HTTPClientError (maybe sent).
    for name in names:
        if name in _NOT_SENT:
            return Classified(SendOutcome.TRANSIENT, type(error).__name__, _short(str(error)))
        if name in _MAYBE_SENT:
            return Classified(SendOutcome.UNKNOWN, type(error).__name__, _short(str(error)))
        if name in _CANNOT_CALL:
            return Classified(SendOutcome.ACCOUNT, type(error).__name__, _short(str(error)))
        if name in _INVALID_REQUEST:
            return Classified(SendOutcome.PERMANENT, type(error).__name__, _short(str(error)))
    # Anything else happened somewhere between building the request and reading the answer:
    # assume SES may have the email rather than risk sending it twice.
    return Classified(SendOutcome.UNKNOWN, type(error).__name__, _short(str(error)))


def _short(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"
