"""The HTTP API: accept emails, show them, cancel and retry them. Routes only; the work is in mailqueue.service."""

from collections.abc import Callable
from functools import cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple
from urllib.parse import unquote

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from mailqueue import aws, budget, tracing
from mailqueue.blobs import BlobStore
from mailqueue.errors import FieldError, IdempotencyConflict, MailqueueError, Unavailable
from mailqueue.models import (
    BatchRequest,
    BatchResult,
    EmailList,
    EmailRequest,
    EmailView,
    EnqueueResult,
    ErrorResponse,
    QueueStats,
    SuppressionPage,
    UploadRequest,
    UploadTicket,
)
from mailqueue.problems import failure_of, field_problems
from mailqueue.queue import DeadLetterQueues, SendQueue
from mailqueue.service import Mailqueue
from mailqueue.settings import get_settings
from mailqueue.stats import Stats
from mailqueue.store import EmailStore, SuppressionList
from mailqueue.templates import TemplateLibrary, TemplateStore
from mailqueue.web import error_payload, refusal
from pydantic import BaseModel
from template_routes import template_router

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

logger = Logger()
# Powertools' Tracer where the function is traced (botocore alone), a stand-in that imports nothing elsewhere.
tracer = tracing.tracer()
metrics = Metrics()
app = APIGatewayHttpResolver(enable_validation=True)
settings = get_settings()
templates = TemplateLibrary(TemplateStore(settings, aws.client("dynamodb")))
mailqueue = Mailqueue(
    settings=settings,
    store=EmailStore(settings, aws.client("dynamodb")),
    queue=SendQueue(settings, aws.client("sqs")),
    blobs=BlobStore(settings, aws.client("s3")),
    suppressions=SuppressionList(settings, aws.client("dynamodb")),
    templates=templates,
)
stats = Stats(settings, mailqueue.store, DeadLetterQueues(settings, aws.client("sqs")))
app.include_router(template_router(templates))
# Every AWS call of a request is checked against the time left before API Gateway gives up (mailqueue.budget).
for _service in ("dynamodb", "sqs", "s3"):
    budget.watch(aws.client(_service))

# Each status and the codes it carries (error.code; each detail has its own code too).
ERRORS: dict[int, Any] = {
    status: {"description": text, "content": {"application/json": {"model": ErrorResponse}}}
    for status, text in {
        400: "`bad_request`: the body is not JSON (or not UTF-8). `invalid_parameter`: a query, path or header "
        "parameter is not valid (status, limit, cursor, Idempotency-Key); the detail names it",
        404: "`not_found`: no such email, template or template version, no such suppressed address, or no such route",
        405: "`method_not_allowed`: the path exists, the method does not (the Allow header lists those that do)",
        409: "`status_conflict`: the email's status does not allow it (the message says which statuses do). "
        "`idempotency_conflict`: the Idempotency-Key was used with another body. `template_conflict`: another "
        "save of the same template kept getting there first",
        413: "`payload_too_large`: the body is larger than can reach the function (upload attachments with "
        "POST /attachments)",
        415: "`unsupported_media_type`: the body is not application/json",
        422: "`invalid_field`: a field's value is not valid. `unknown_field`: a field the API does not know (the "
        "detail suggests the nearest known one). `missing_field`: a required field is absent. "
        "`suppressed_recipient`: a recipient is on the suppression list (skip_suppressed sends to the others)",
        503: "`unavailable`: storage unreachable: nothing was accepted and nothing will be sent, send it again. "
        "`unconfirmed`: the email may have been stored under the id named, read it before sending again "
        "(with an Idempotency-Key, send it again with the same key: that never makes a second email)",
    }.items()
}


def answers(status: int, description: str, model: Any = None) -> dict[int, Any]:
    """A route's documented answers: its success (with its body's model, if any) and every error."""
    success: dict[str, Any] = {"description": description}
    if model is not None:
        success["content"] = {"application/json": {"model": model}}
    return {status: success, **ERRORS}


IdempotencyKey = Annotated[
    str | None,
    Header(alias="idempotency-key", max_length=255, description="Replays the first answer for 24 hours."),
]


# --- routes -----------------------------------------------------------------------------------------------


@app.post("/emails", responses=answers(202, "Accepted", EnqueueResult), summary="Enqueue one email")
def enqueue(email: Annotated[EmailRequest, Body()], idempotency_key: IdempotencyKey = None) -> Response[EnqueueResult]:
    if idempotency_key:
        answer = _once(lambda idempotent: idempotent.enqueue, idempotency_key)
    else:
        answer = mailqueue.enqueue(email, caller=_caller()).model_dump()
    metrics.add_metric(name="EmailsAccepted", unit=MetricUnit.Count, value=1)
    return _json(HTTPStatus.ACCEPTED, answer)


@app.post(
    "/emails/batch", responses=answers(202, "Accepted, item by item", BatchResult), summary="Enqueue up to 100 emails"
)
def enqueue_batch(
    batch: Annotated[BatchRequest, Body()], idempotency_key: IdempotencyKey = None
) -> Response[BatchResult]:
    if idempotency_key:
        answer = _once(lambda idempotent: idempotent.enqueue_batch, idempotency_key)
    else:
        answer = mailqueue.enqueue_batch(batch.emails, caller=_caller()).model_dump()
    metrics.add_metric(name="EmailsAccepted", unit=MetricUnit.Count, value=answer["accepted"])
    return _json(HTTPStatus.ACCEPTED, answer)


@app.get("/emails/<email_id>", responses=answers(200, "The email", EmailView), summary="An email's status and history")
def get_email(email_id: str) -> EmailView:
    return mailqueue.get(email_id)


@app.get(
    "/emails",
    responses=answers(200, "A page of emails", EmailList),
    summary="Emails in one status (scheduled and retrying: next due first; the others newest first)",
)
def list_emails(
    status: Annotated[str, Query(description="One of scheduled, queued, sending, retrying, sent, delivered, …")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> EmailList:
    return mailqueue.list(status, limit, cursor)


@app.delete(
    "/emails/<email_id>",
    responses=answers(200, "Cancelled", EmailView),
    summary="Cancel a scheduled, queued or retrying email",
)
def cancel_email(email_id: str) -> EmailView:
    return mailqueue.cancel(email_id)


@app.post(
    "/emails/<email_id>/retry", responses=answers(202, "Queued again", EmailView), summary="Send a failed email again"
)
def retry_email(email_id: str) -> Response[EmailView]:
    return _json(HTTPStatus.ACCEPTED, mailqueue.retry(email_id).model_dump())


@app.post(
    "/attachments",
    responses=answers(201, "Upload there", UploadTicket),
    summary="A presigned POST to upload a large attachment, for the caller's emails only",
)
def upload_attachment(upload: Annotated[UploadRequest, Body()]) -> Response[UploadTicket]:
    return _json(HTTPStatus.CREATED, mailqueue.upload_ticket(upload, caller=_caller()).model_dump())


@app.get(
    "/suppressions",
    responses=answers(200, "A page of addresses", SuppressionPage),
    summary="Addresses that bounced permanently or complained",
)
def list_suppressions(
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> SuppressionPage:
    return mailqueue.list_suppressions(limit, cursor)


@app.delete(
    "/suppressions/<address>", responses=answers(204, "Lifted"), summary="Lift an address from the suppression list"
)
def lift_suppression(address: str) -> Response[None]:
    mailqueue.lift_suppression(unquote(address))
    return Response(status_code=HTTPStatus.NO_CONTENT.value, content_type=None, body=None)


@app.get(
    "/stats",
    responses=answers(200, "The figures", QueueStats),
    summary="The stack's SendRate, its dead letters and the emails an account error holds",
)
def get_stats() -> QueueStats:
    return stats.read()


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    schema = app.get_openapi_json_schema(title="mailqueue", version="1.0.0", description="An email queue for SES.")
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=schema)


# --- idempotent enqueue: the same key and body replay the first answer --------------------------------------


# Powertools replays the first answer; the key also binds the emails' ids (Mailqueue.enqueue), so that a
# repeat after a failure of the idempotency record itself finds the email stored the first time.
# Powertools' idempotency utility is imported by the first request that carries a key, not at init.


class Idempotent(NamedTuple):
    config: "IdempotencyConfig"
    store: "DynamoDBPersistenceLayer"
    enqueue: Callable[..., dict[str, Any]]
    enqueue_batch: Callable[..., dict[str, Any]]


@cache
def idempotent() -> Idempotent:
    """The idempotent enqueues, built once per container on the first request with an Idempotency-Key."""
    from aws_lambda_powertools.utilities.idempotency import (  # noqa: PLC0415
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    # A key is the caller's own: two callers using the same key neither collide nor see each other's answers.
    config = IdempotencyConfig(
        event_key_jmespath="[caller, key]", payload_validation_jmespath="body", expires_after_seconds=24 * 3600
    )
    store = DynamoDBPersistenceLayer(table_name=settings.idempotency_table_name, boto3_client=aws.client("dynamodb"))
    once = idempotent_function(data_keyword_argument="request", persistence_store=store, config=config)
    return Idempotent(config, store, once(_enqueue_once), once(_enqueue_batch_once))


def _once(enqueue: Callable[[Idempotent], Callable[..., dict[str, Any]]], key: str) -> dict[str, Any]:
    """The first answer for this caller's key and body, or the enqueue's own; the utility's errors as ours."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (  # noqa: PLC0415
        IdempotencyAlreadyInProgressError,
        IdempotencyInconsistentStateError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    chosen = idempotent()
    chosen.config.register_lambda_context(app.lambda_context)
    try:
        return enqueue(chosen)(request=_keyed(key))
    except (IdempotencyValidationError, IdempotencyAlreadyInProgressError) as error:
        message = (
            "this Idempotency-Key was used with another body in the last 24 hours"
            if isinstance(error, IdempotencyValidationError)
            else "a request with this Idempotency-Key is still in progress; try again shortly"
        )
        raise IdempotencyConflict(message, [FieldError("Idempotency-Key", message, IdempotencyConflict.code)]) from None
    except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError):
        # The idempotency record could not be read or written, before the email was stored or after: either
        # way a repeat with the same key finds the same email (its id is bound to the key), never a second.
        logger.exception("the idempotency record could not be kept")
        message = "mailqueue could not keep this Idempotency-Key's record; send the request again with the same key"
        raise Unavailable(message, [FieldError("Idempotency-Key", message)]) from None


def _keyed(key: str) -> dict[str, Any]:
    return {"caller": _caller(), "key": key, "body": app.current_event.json_body}


def _caller() -> str:
    """Who sent the request, as API Gateway's authorizer established it (IAM or JWT)."""
    authorizer = app.current_event.raw_event.get("requestContext", {}).get("authorizer") or {}
    iam = authorizer.get("iam") or {}
    claims = (authorizer.get("jwt") or {}).get("claims") or {}
    return str(iam.get("userArn") or iam.get("callerId") or claims.get("sub") or claims.get("client_id") or "")


def _enqueue_once(request: dict[str, Any]) -> dict[str, Any]:
    key = f"{request['caller']}\n{request['key']}"
    email = EmailRequest.model_validate(request["body"])
    return mailqueue.enqueue(email, key=key, caller=request["caller"], idempotency_key=request["key"]).model_dump()


def _enqueue_batch_once(request: dict[str, Any]) -> dict[str, Any]:
    key = f"{request['caller']}\nbatch\n{request['key']}"
    emails = BatchRequest.model_validate(request["body"]).emails
    return mailqueue.enqueue_batch(
        emails, key=key, caller=request["caller"], idempotency_key=request["key"]
    ).model_dump()


# --- one error shape for everything -------------------------------------------------------------------------


def _json(status: HTTPStatus, body: Any) -> Response[Any]:
    return Response(status_code=status.value, content_type=content_types.APPLICATION_JSON, body=body)


def _error(status: int, code: str, message: str, details: list[FieldError] | None = None) -> Response[Any]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=error_payload(code, message, details)
    )


@app.exception_handler(MailqueueError)
def _domain_error(error: MailqueueError) -> Response[Any]:
    return _error(error.http_status, error.code, error.message, error.details)


# The model each route validates its body against: unknown fields are named with the nearest known one.
BODY_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/emails"): EmailRequest,
    ("POST", "/emails/batch"): BatchRequest,
    ("POST", "/attachments"): UploadRequest,
}


@app.exception_handler(RequestValidationError)
def _invalid_request(error: RequestValidationError) -> Response[Any]:
    event = app.current_event
    model = BODY_MODELS.get((event.http_method.upper(), event.path))
    failure = failure_of(field_problems(error.errors(), model), "the request")
    return _error(failure.http_status, failure.code, failure.message, failure.details)


@app.exception_handler([BotoCoreError, ClientError])
def _aws_unavailable(error: Exception) -> Response[Any]:
    logger.exception("AWS call failed")
    return _error(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", "mailqueue could not reach its storage; try again")


@app.not_found
def _not_found(_: NotFoundError) -> Response[Any]:
    event = app.current_event
    method, path = event.http_method.upper(), event.path
    # Powertools answers any unmatched method with not_found: a path that exists under other methods is a 405.
    allowed = sorted({route.method for route in app._static_routes + app._dynamic_routes if route.rule.match(path)})
    if allowed:
        message = f"{method} is not allowed on {path}: use {' or '.join(allowed)}"
        return Response(
            status_code=HTTPStatus.METHOD_NOT_ALLOWED.value,
            content_type=content_types.APPLICATION_JSON,
            body=error_payload("method_not_allowed", message, [FieldError("method", message, "method_not_allowed")]),
            headers={"Allow": ", ".join(allowed)},
        )
    return _error(HTTPStatus.NOT_FOUND, "not_found", f"no route {method} {path}")


# --- entry point --------------------------------------------------------------------------------------------


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # API Gateway's limit (the function's timeout, 30 seconds, is no shorter).
    with budget.answering():
        return refusal(event) or app.resolve(event, context)
