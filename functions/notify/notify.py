"""The emails table's stream: each published status change as an event on the bus (see mailqueue.notifications)."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailqueue import aws, tracing
from mailqueue.notifications import StatusPublisher, published_statuses
from mailqueue.settings import get_settings
from mailqueue.store import EmailStore

logger = Logger()
# Powertools' Tracer where the function is traced (botocore alone), a stand-in that imports nothing elsewhere.
tracer = tracing.tracer()
metrics = Metrics()
settings = get_settings()
publisher = StatusPublisher(
    store=EmailStore(settings, aws.client("dynamodb")),
    events=aws.client("events"),
    bus=settings.status_event_bus,
    published=published_statuses(settings.publish_statuses),
)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    published = publisher.publish(event.get("Records") or [])
    metrics.add_metric(name="StatusEventsPublished", unit=MetricUnit.Count, value=published.put)
    if published.failed:
        # Lambda retries the stream from the first of them; the events after it come again (same event_id).
        logger.error("EventBridge refused status events", extra={"records": published.failed})
        metrics.add_metric(name="StatusEventsRefused", unit=MetricUnit.Count, value=len(published.failed))
    return published.response()
