"""The sender: SQS batches of email ids in, one SES send per claimed email. The work is in mailqueue.sender."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailqueue import aws, tracing
from mailqueue.blobs import BlobStore
from mailqueue.mailer import Mailer
from mailqueue.queue import Backlog, priority_of
from mailqueue.sender import NoTimeLeft, Pacer, Sender, email_id_in, invocation_rate
from mailqueue.settings import get_settings
from mailqueue.store import EmailStore

logger = Logger()
# Powertools' Tracer where the function is traced (botocore alone), a stand-in that imports nothing elsewhere.
tracer = tracing.tracer()
metrics = Metrics()
# A batch whose every record failed is reported record by record too, not raised: the same retry, less noise.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
settings = get_settings()
# Whether the high-priority queue has mail, asked at most once a second: normal-priority mail waits while it does.
backlog = Backlog(lambda: aws.client("sqs"), settings.high_priority_queue_url)
sender = Sender(
    settings=settings,
    store=EmailStore(settings, aws.client("dynamodb")),
    blobs=BlobStore(settings, aws.client("s3")),
    mailer=Mailer(settings, aws.client("sesv2")),
    # At module scope: the pace holds across the invocations this container serves.
    pacer=Pacer(invocation_rate(settings)),
    logger=logger,
    metrics=metrics,
    high_priority=backlog.has_mail if settings.high_priority_first and settings.high_priority_queue_url else None,
)


@tracer.capture_method
def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    # Every line logged for this record carries the email's id.
    logger.set_correlation_id(email_id_in(record.body))
    try:
        sender.handle_message(
            record.body,
            time_left=lambda: lambda_context.get_remaining_time_in_millis() / 1000,
            message_id=record.message_id,
            priority=priority_of(record.event_source_arn, settings),
        )
    except NoTimeLeft:
        raise
    except Exception:
        logger.exception("the message failed; SQS delivers it again")
        raise
    finally:
        logger.set_correlation_id(None)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
