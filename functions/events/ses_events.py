"""SES events (through EventBridge): delivered, bounced, complained, rejected. The work is in mailqueue.ses_events."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailqueue import aws, tracing
from mailqueue.ses_events import SesEvents
from mailqueue.settings import get_settings
from mailqueue.store import EmailStore, SuppressionList

logger = Logger()
# Powertools' Tracer where the function is traced (botocore alone), a stand-in that imports nothing elsewhere.
tracer = tracing.tracer()
metrics = Metrics()
settings = get_settings()
events = SesEvents(
    store=EmailStore(settings, aws.client("dynamodb")),
    suppressions=SuppressionList(settings, aws.client("dynamodb")),
)

METRIC_NAMES = {
    "Delivery": "EmailsDelivered",
    "Bounce": "EmailsBounced",
    "Complaint": "EmailsComplained",
    "Reject": "EmailsRejected",
    "Rendering Failure": "EmailsRenderingFailed",
    "DeliveryDelay": "EmailsDelayed",
}


@logger.inject_lambda_context(correlation_id_path="detail.mail.tags.email_id[0]")
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcome = events.handle(event)
    if outcome.result == "foreign":
        logger.warning("not an SES event of mailqueue's; acknowledged", extra={"detail_type": event.get("detail-type")})
    elif outcome.result == "unknown-email":
        logger.warning("SES event for no known email; acknowledged", extra={"event_type": outcome.event_type})
    else:
        # DEBUG: two events an email; the metrics count them, the email's history keeps them.
        logger.debug(
            "SES event",
            extra={"event_type": outcome.event_type, "result": outcome.result, "status": outcome.status},
        )
    name = METRIC_NAMES.get(outcome.event_type)
    # A delivery delay changes no status, but an operator wants to see them.
    counted = outcome.result == "applied" or (outcome.event_type == "DeliveryDelay" and outcome.result == "ignored")
    if name and counted:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        if outcome.bounce_type:
            # Bounce rates by type (Permanent, Transient): their own dimension, apart from the totals.
            with single_metric(name="EmailsBouncedByType", unit=MetricUnit.Count, value=1) as metric:
                metric.add_dimension(name="bounce_type", value=outcome.bounce_type.split("/", 1)[0])
    if outcome.suppressed:
        metrics.add_metric(name="AddressesSuppressed", unit=MetricUnit.Count, value=len(outcome.suppressed))
    return {"event_type": outcome.event_type, "email_id": outcome.email_id, "result": outcome.result}
