"""Domain errors. The API maps each to one HTTP answer in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class MailqueueError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, details: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidEmail(MailqueueError):
    code = "invalid_email"
    http_status = 422

    @classmethod
    def on(cls, field_name: str, message: str) -> InvalidEmail:
        return cls(f"{field_name}: {message}", [FieldError(field_name, message)])


class EmailNotFound(MailqueueError):
    code = "not_found"
    http_status = 404


class StatusConflict(MailqueueError):
    """The email is not in a status that allows what was asked."""

    code = "status_conflict"
    http_status = 409

    def __init__(self, email_id: str, current: str | None, wanted: str) -> None:
        super().__init__(f"email {email_id} is {current}: it cannot be {wanted}")
        self.email_id = email_id
        self.current = current


class IdempotencyConflict(MailqueueError):
    code = "idempotency_conflict"
    http_status = 409


class IllegalTransition(Exception):
    """A programming error: code asked for a transition the state machine does not allow."""


class ClaimLost(Exception):
    """The sender's claim on an email was taken over (it expired and the email was requeued)."""


class Unavailable(MailqueueError):
    """AWS could not be reached or refused the write: nothing was accepted, the caller may try again."""

    code = "unavailable"
    http_status = 503
