"""Domain errors. The API maps each to one HTTP answer in one place."""

from __future__ import annotations

from dataclasses import dataclass

# The codes of the API's errors, one per kind of mistake (each detail carries its own too).
INVALID_FIELD = "invalid_field"  # a field's value is not valid: its format, its limits, a rule it breaks
UNKNOWN_FIELD = "unknown_field"  # a field the API does not know (with the nearest known name when one is close)
MISSING_FIELD = "missing_field"  # a required field is absent
INVALID_PARAMETER = "invalid_parameter"  # a query, path or header parameter is not valid
SUPPRESSED_RECIPIENT = "suppressed_recipient"  # a recipient is on the suppression list


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    code: str = INVALID_FIELD


class MailqueueError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, details: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidEmail(MailqueueError):
    """The body is not a valid email (or request): ``code`` says which kind of mistake, as its first detail does."""

    code = INVALID_FIELD
    http_status = 422

    def __init__(self, message: str, details: list[FieldError] | None = None) -> None:
        super().__init__(message, details)
        if type(self).code != INVALID_FIELD:
            # A kind of its own (invalid_template): its details are of that kind too.
            self.details = [
                FieldError(d.field, d.message, self.code) if d.code == INVALID_FIELD else d for d in self.details
            ]
        elif self.details:
            self.code = self.details[0].code

    @classmethod
    def on(cls, field_name: str, message: str) -> InvalidEmail:
        return cls(f"{field_name}: {message}", [FieldError(field_name, message)])


class InvalidParameter(MailqueueError):
    """A query, path or header parameter is not valid (a status that does not exist, a cursor not from this API)."""

    code = INVALID_PARAMETER
    http_status = 400

    @classmethod
    def on(cls, name: str, message: str) -> InvalidParameter:
        return cls(f"{name}: {message}", [FieldError(name, message, INVALID_PARAMETER)])


class EmailNotFound(MailqueueError):
    code = "not_found"
    http_status = 404


class StatusConflict(MailqueueError):
    """The email is not in a status that allows what was asked."""

    code = "status_conflict"
    http_status = 409

    def __init__(self, email_id: str, current: str | None, action: str, allowed: list[str]) -> None:
        statuses = " or ".join(allowed)
        super().__init__(
            f"email {email_id} is {current}: only {statuses} emails can be {action}",
            [FieldError("status", f"is {current}; it must be {statuses}", self.code)],
        )
        self.email_id = email_id
        self.current = current


class IdempotencyConflict(MailqueueError):
    code = "idempotency_conflict"
    http_status = 409


class IllegalTransition(Exception):
    """A programming error: code asked for a transition the state machine does not allow."""


class Unavailable(MailqueueError):
    """AWS could not be reached or refused the write: nothing was accepted, the caller may try again."""

    code = "unavailable"
    http_status = 503
