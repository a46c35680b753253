"""The webhook function: the webhook queue's messages in, one signed POST per (event, URL). The work is in
mailqueue.webhooks; a batch's deliveries run at once (one email's in turn), each on a thread of its own."""

import asyncio
import threading
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailqueue import aws, tracing
from mailqueue.webhooks import METRICS, SECRET_MAX_AGE_SECONDS, Courier, EmailLocks, WebhookSettings, in_sequence_order

logger = Logger()
# Powertools' Tracer where the function is traced (botocore alone), a stand-in that imports nothing elsewhere.
tracer = tracing.tracer()
metrics = Metrics()
processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
settings = WebhookSettings.from_env()
# The signing secret is read once per container (then again after max_age), not per event.
secrets = SecretsProvider(boto3_client=aws.client("secretsmanager"))
# A batch's deliveries run on threads at once: the first reads the secret, the others wait for it.
_secret_lock = threading.Lock()


def _secret() -> str:
    with _secret_lock:
        return str(secrets.get(settings.secret_id, max_age=SECRET_MAX_AGE_SECONDS))


courier = Courier(
    settings=settings,
    sqs=aws.client("sqs"),
    secret=_secret,
    clock=time.time,
    log=logger,
)
_locks = EmailLocks()


async def record_handler(record: SQSRecord) -> None:
    receive_count = int(record.attributes.approximate_receive_count or 1)
    async with _locks.of(record.body):
        await asyncio.to_thread(courier.handle, record.body, record.receipt_handle, receive_count)


def _record_metrics() -> None:
    for what, count in courier.counts.items():
        metrics.add_metric(name=METRICS[what], unit=MetricUnit.Count, value=count)
    courier.counts.clear()


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    global _locks  # noqa: PLW0603 - asyncio locks belong to the invocation's event loop
    _locks = EmailLocks()
    event = {**event, "Records": in_sequence_order(event.get("Records", []), lambda record: record.get("body", ""))}
    try:
        return async_process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    finally:
        _record_metrics()
