"""SES error classification: one row per error code and per botocore exception."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ProxyConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from mailqueue.ses_errors import CODES, SendOutcome, classify, classify_code

THROTTLED, TRANSIENT, UNKNOWN = SendOutcome.THROTTLED, SendOutcome.TRANSIENT, SendOutcome.UNKNOWN
ACCOUNT, PERMANENT = SendOutcome.ACCOUNT, SendOutcome.PERMANENT

ERROR_CODES = [
    # SES v2 SendEmail's documented errors.
    ("TooManyRequestsException", 429, THROTTLED),
    ("LimitExceededException", 400, THROTTLED),
    ("AccountSuspendedException", 400, ACCOUNT),
    ("SendingPausedException", 400, ACCOUNT),
    ("MessageRejected", 400, PERMANENT),
    ("MailFromDomainNotVerifiedException", 400, ACCOUNT),
    ("NotFoundException", 404, ACCOUNT),
    ("BadRequestException", 400, PERMANENT),
    # Common AWS errors on any call.
    ("Throttling", 400, THROTTLED),
    ("ThrottlingException", 400, THROTTLED),
    ("ThrottledException", 400, THROTTLED),
    ("RequestThrottled", 400, THROTTLED),
    ("RequestLimitExceeded", 400, THROTTLED),
    ("SlowDown", 503, THROTTLED),
    ("ConcurrentModificationException", 409, TRANSIENT),
    ("InternalFailure", 500, TRANSIENT),
    ("InternalServerError", 500, TRANSIENT),
    ("InternalServiceError", 500, TRANSIENT),
    ("ServiceUnavailable", 503, TRANSIENT),
    ("ServiceUnavailableException", 503, TRANSIENT),
    ("RequestTimeout", 408, TRANSIENT),
    ("RequestTimeoutException", 408, TRANSIENT),
    ("AccessDenied", 403, ACCOUNT),
    ("AccessDeniedException", 403, ACCOUNT),
    ("UnrecognizedClientException", 403, ACCOUNT),
    ("InvalidClientTokenId", 403, ACCOUNT),
    ("ExpiredToken", 403, ACCOUNT),
    ("ExpiredTokenException", 403, ACCOUNT),
    ("SignatureDoesNotMatch", 403, ACCOUNT),
    ("IncompleteSignature", 400, ACCOUNT),
    ("MissingAuthenticationToken", 403, ACCOUNT),
    ("OptInRequired", 403, ACCOUNT),
    ("InvalidParameterValue", 400, PERMANENT),
    ("InvalidParameterCombination", 400, PERMANENT),
    ("ValidationError", 400, PERMANENT),
    ("ValidationException", 400, PERMANENT),
    ("MalformedQueryString", 400, PERMANENT),
    ("SerializationException", 400, PERMANENT),
    # SES v1 spellings (the emulator's, and SendRawEmail's).
    ("AccountSendingPausedException", 400, ACCOUNT),
    ("ConfigurationSetSendingPausedException", 400, ACCOUNT),
    ("MailFromDomainNotVerified", 400, ACCOUNT),
    ("ConfigurationSetDoesNotExist", 400, ACCOUNT),
    ("ConfigurationSetDoesNotExistException", 400, ACCOUNT),
    # Codes nobody listed: decided by HTTP status, transient unless it says the caller may not call.
    ("SomethingNew", 400, TRANSIENT),
    ("SomethingNew", 500, TRANSIENT),
    ("SomethingNew", 429, THROTTLED),
    ("SomethingNew", 403, ACCOUNT),
    ("SomethingNew", 401, ACCOUNT),
    ("SomethingNew", None, TRANSIENT),
]


def client_error(code: str, status: int | None, message: str = "details") -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "SendEmail")  # type: ignore[arg-type]


@pytest.mark.parametrize(("code", "status", "outcome"), ERROR_CODES)
def test_error_codes(code: str, status: int | None, outcome: SendOutcome) -> None:
    classified = classify(client_error(code, status, f"SES says {code}"))

    assert classified.outcome is outcome
    assert classified.code == code
    assert classified.message == f"SES says {code}"
    assert classified.as_error() == {"code": code, "message": f"SES says {code}"}
    assert classify_code(code, status) is outcome


def test_every_code_in_the_table_has_a_row() -> None:
    assert set(CODES) <= {code for code, _, _ in ERROR_CODES}


URL = "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"

EXCEPTIONS = [
    # The connection never reached SES: nothing was sent.
    (ConnectTimeoutError(endpoint_url=URL), TRANSIENT),
    (EndpointConnectionError(endpoint_url=URL), TRANSIENT),
    (ProxyConnectionError(proxy_url="http://proxy", error="refused"), TRANSIENT),
    (SSLError(endpoint_url=URL, error="handshake failed"), UNKNOWN),
    # The request may have reached SES: the outcome is unknown.
    (ReadTimeoutError(endpoint_url=URL), UNKNOWN),
    (ConnectionClosedError(endpoint_url=URL), UNKNOWN),
    (ResponseStreamingError(error="reset"), UNKNOWN),
    (HTTPClientError(error="broken pipe"), UNKNOWN),
    # This function cannot call SES as configured.
    (NoCredentialsError(), ACCOUNT),
    (NoRegionError(), ACCOUNT),
    # The request could not be built from the email.
    (ParamValidationError(report="bad parameter"), PERMANENT),
    # Anything else: SES may have the email.
    (RuntimeError("surprise"), UNKNOWN),
]


@pytest.mark.parametrize(("error", "outcome"), EXCEPTIONS, ids=lambda value: type(value).__name__)
def test_botocore_exceptions(error: Exception, outcome: SendOutcome) -> None:
    classified = classify(error)

    assert classified.outcome is outcome
    assert classified.code == type(error).__name__
    assert not classified.sent_for_sure


def test_long_messages_are_cut_short() -> None:
    classified = classify(client_error("MessageRejected", 400, "x" * 5000))

    assert len(classified.message) == 300
    assert classified.message.endswith("…")


@pytest.mark.parametrize(
    "message",
    [
        # SES v2 and v1, for a From identity (or, in the sandbox, a recipient) that is not verified.
        "Email address is not verified. The following identities failed the check in region US-EAST-1: app@example.com",
        "Email address is not verified.",
        "Domain is not verified. The following identities failed the check: example.com",
        # SES v1 words a paused account as a rejection too.
        "Sending paused for this account.",
    ],
)
def test_a_rejection_for_the_account_s_or_identity_s_sake_holds_the_email(message: str) -> None:
    assert classify(client_error("MessageRejected", 400, message)).outcome is ACCOUNT


def test_a_rejection_of_the_email_itself_stays_permanent() -> None:
    assert classify(client_error("MessageRejected", 400, "Illegal address")).outcome is PERMANENT
