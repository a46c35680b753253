"""The scheduled requeue function: publish again what is due, release expired claims, give up after the last attempt.

The work is in mailqueue.requeue; this module reports it as metrics and one summary log line. Each of
the template's schedules runs one group of shards (its Input, see mailqueue.shardgroups); an event that
names no group runs every shard.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailqueue import aws, tracing
from mailqueue.queue import SendQueue
from mailqueue.requeue import Requeuer, RequeueSummary, send_backlogs
from mailqueue.settings import get_settings
from mailqueue.shardgroups import shard_group_of
from mailqueue.store import EmailStore

logger = Logger()
# Powertools' Tracer where the function is traced (botocore alone), a stand-in that imports nothing elsewhere.
tracer = tracing.tracer()
metrics = Metrics()
settings = get_settings()
sqs = aws.client("sqs")
requeuer = Requeuer(
    settings=settings,
    store=EmailStore(settings, aws.client("dynamodb")),
    queue=SendQueue(settings, sqs),
    backlogs=send_backlogs(settings, sqs),
)


def _record_metrics(summary: RequeueSummary) -> None:
    # One metric with a reason dimension, so a dashboard can stack the reasons and an alarm can
    # watch one (a lasting rise of claim_expired means senders are dying).
    for reason, count in summary.requeued.items():
        with single_metric(
            name="EmailsRequeued", unit=MetricUnit.Count, value=count, default_dimensions=metrics.default_dimensions
        ) as metric:
            metric.add_dimension(name="reason", value=reason.value)
    metrics.add_metric(name="EmailsGivenUp", unit=MetricUnit.Count, value=summary.given_up)
    metrics.add_metric(name="RequeuePublishFailures", unit=MetricUnit.Count, value=summary.publish_failures)
    metrics.add_metric(name="EmailsHeldForBacklog", unit=MetricUnit.Count, value=summary.held)
    metrics.add_metric(name="RequeueStoppedEarly", unit=MetricUnit.Count, value=int(summary.stopped_early))


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = requeuer.run(context.get_remaining_time_in_millis, group=shard_group_of(event))
    _record_metrics(summary)
    result = summary.as_dict()
    logger.info("requeue run finished", extra=result)
    return result
