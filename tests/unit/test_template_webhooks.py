"""The webhook resources of template.yaml: on only with URLs, fed by the status bus, bounded, least privilege."""

from __future__ import annotations

import ast
import json
from typing import Any

import boto3
import pytest
from mailqueue.webhooks import DEFAULT_SCHEDULE, WebhookSettings
from mailqueue_dev.template import TEMPLATE, load_template
from moto import mock_aws

from tests.unit.test_template import NO_VALUE, RESOURCES, as_list, ref, role_statements, tracing_of, with_parameters
from tests.unit.test_template_deploys import PARAMETERS, REGION, deploy

# What moto cannot create (the secret among them) is listed in docs/deploy.md, not warned about.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto:UserWarning")
DOC = load_template()
WEBHOOK_RESOURCES = [logical_id for logical_id in RESOURCES if logical_id.startswith("Webhook")]
URLS = "https://hooks.example/mailqueue,https://other.example/Hooks"


def test_webhook_resources_exist_only_with_urls_and_published_statuses() -> None:
    assert set(WEBHOOK_RESOURCES) >= {
        "WebhookSecret",
        "WebhookQueue",
        "WebhookDeadLetterQueue",
        "WebhookRule",
        "WebhookQueuePolicy",
        "WebhookFunction",
        "WebhookRole",
        "WebhookLogGroup",
        "WebhookLogging",
        "WebhookDeadLetterQueueAlarm",
    }
    for logical_id in WEBHOOK_RESOURCES:
        assert RESOURCES[logical_id]["Condition"] == "HasWebhooks", logical_id
    assert DOC["Parameters"]["WebhookUrls"] == {**DOC["Parameters"]["WebhookUrls"], "Type": "CommaDelimitedList"}
    assert not with_parameters().condition("HasWebhooks")  # the default: no URLs
    assert with_parameters(WebhookUrls="https://hooks.example/x").condition("HasWebhooks")
    assert with_parameters(WebhookUrls=URLS).condition("HasWebhooks")
    # no bus, no webhooks
    assert not with_parameters(WebhookUrls=URLS, PublishStatuses="none").condition("HasWebhooks")


def test_the_rule_takes_every_status_event_of_the_stacks_bus_to_the_webhook_queue() -> None:
    rule = RESOURCES["WebhookRule"]["Properties"]
    assert ref(rule["EventBusName"]) == "StatusEventBus"
    assert rule["EventPattern"] == {"source": ["mailqueue"], "detail-type": ["Email Status Changed"]}
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["WebhookQueue", "Arn"]}
    # what EventBridge cannot put on the queue for a day is kept, not dropped
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}}


def test_only_that_rule_may_send_to_the_webhook_queues() -> None:
    policy = RESOURCES["WebhookQueuePolicy"]["Properties"]
    assert {ref(queue) for queue in policy["Queues"]} == {"WebhookQueue", "WebhookDeadLetterQueue"}
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["WebhookRule", "Arn"]}}}


def test_the_queue_keeps_a_delivery_for_the_whole_schedule_and_redrives_only_as_a_backstop() -> None:
    queue = RESOURCES["WebhookQueue"]["Properties"]
    function = RESOURCES["WebhookFunction"]["Properties"]
    # the longest the schedule can take: every delay at its most (a quarter of jitter)
    longest = sum(DEFAULT_SCHEDULE.delay(n, rand=lambda: 0.999999) for n in range(1, DEFAULT_SCHEDULE.attempts))
    assert longest < queue["MessageRetentionPeriod"]
    assert DEFAULT_SCHEDULE.least_span() >= 24 * 3600
    # the function dead-letters after its last attempt; the redrive catches a message the function itself fails on
    assert queue["RedrivePolicy"]["maxReceiveCount"] > DEFAULT_SCHEDULE.attempts
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert RESOURCES["WebhookDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_the_function_reports_partial_failures_with_bounded_concurrency_and_production_timings() -> None:
    function = RESOURCES["WebhookFunction"]["Properties"]
    assert function["Handler"] == "webhook.handler"
    assert function["CodeUri"] == "functions/webhook/"
    [(_, event)] = function["Events"].items()
    assert event["Type"] == "SQS"
    source = event["Properties"]
    assert source["Queue"] == {"Fn::GetAtt": ["WebhookQueue", "Arn"]}
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["BatchSize"] <= 10
    assert 2 <= source["ScalingConfig"]["MaximumConcurrency"] <= 10
    environment = function["Environment"]["Variables"]
    assert environment["WEBHOOK_URLS"] == {"Fn::Join": [",", {"Ref": "WebhookUrls"}]}
    assert ref(environment["WEBHOOK_QUEUE_URL"]) == "WebhookQueue"
    assert ref(environment["WEBHOOK_DEAD_LETTER_QUEUE_URL"]) == "WebhookDeadLetterQueue"
    assert ref(environment["WEBHOOK_SECRET_ID"]) == "WebhookSecret"
    # the documented schedule: nothing in the template shortens it
    assert not [name for name in environment if name.startswith(("WEBHOOK_BACKOFF", "WEBHOOK_ATTEMPTS"))]
    # and what the template gives, the code reads
    resolved = with_parameters(WebhookUrls=URLS).resolve(environment)
    settings = WebhookSettings.from_env({name: str(value) for name, value in resolved.items()})
    assert settings.urls == tuple(URLS.split(","))
    assert settings.timeout_seconds == 5
    assert settings.schedule == DEFAULT_SCHEDULE


def test_the_secret_is_generated_and_read_by_the_webhook_function_alone() -> None:
    secret = RESOURCES["WebhookSecret"]["Properties"]
    assert secret["GenerateSecretString"]["PasswordLength"] >= 32
    assert "SecretString" not in secret
    readers = [
        logical_id
        for logical_id in RESOURCES
        if RESOURCES[logical_id]["Type"] == "AWS::Serverless::Function"
        for statement in role_statements(logical_id)
        if any(action.startswith("secretsmanager:") for action in as_list(statement["Action"]))
    ]
    assert readers == ["WebhookFunction"]
    [statement] = [
        s for s in role_statements("WebhookFunction") if "secretsmanager:GetSecretValue" in as_list(s["Action"])
    ]
    assert as_list(statement["Action"]) == ["secretsmanager:GetSecretValue"]
    assert statement["Resource"] == {"Ref": "WebhookSecret"}


def test_the_webhook_role_reaches_its_two_queues_only() -> None:
    for statement in role_statements("WebhookFunction"):
        if any(action.startswith("sqs:") for action in as_list(statement["Action"])):
            assert {ref(resource) for resource in as_list(statement["Resource"])} <= {
                "WebhookQueue",
                "WebhookDeadLetterQueue",
            }, statement
    dead_letters = [
        s
        for s in role_statements("WebhookFunction")
        if {ref(r) for r in as_list(s["Resource"])} == {"WebhookDeadLetterQueue"}
    ]
    assert [as_list(s["Action"]) for s in dead_letters] == [["sqs:SendMessage"]]


def test_the_dead_letter_alarm_watches_the_webhook_dead_letter_queue() -> None:
    alarm = RESOURCES["WebhookDeadLetterQueueAlarm"]["Properties"]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["WebhookDeadLetterQueue", "QueueName"]}}
    ]
    assert (alarm["MetricName"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "ApproximateNumberOfMessagesVisible",
        0,
        "GreaterThanThreshold",
    )
    assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], NO_VALUE]}


# --- deployed into moto's CloudFormation ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed() -> Any:
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        session.client("sesv2").create_configuration_set(ConfigurationSetName=PARAMETERS["ConfigurationSetName"])
        yield deploy(session, "mailqueue", {**PARAMETERS, "WebhookUrls": URLS})


def test_deployed_the_bus_rule_puts_each_status_event_on_the_webhook_queue(deployed: Any) -> None:
    created = deployed.created
    assert {"WebhookFunction", "WebhookQueue", "WebhookDeadLetterQueue", "WebhookRule", "StatusEventBus"} <= set(
        created
    )
    events, sqs = deployed.client("events"), deployed.client("sqs")
    bus = events.describe_event_bus(Name="mailqueue-status")["Name"]
    detail = {"event_id": "01J-1", "email_id": "01J", "sequence": 1, "status": "delivered"}
    answer = events.put_events(
        Entries=[
            {
                "Source": "mailqueue",
                "DetailType": "Email Status Changed",
                "Detail": json.dumps(detail),
                "EventBusName": bus,
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0
    [message] = sqs.receive_message(QueueUrl=created["WebhookQueue"])["Messages"]
    assert json.loads(message["Body"])["detail"] == detail


def test_deployed_the_function_is_given_the_created_queues_and_urls(deployed: Any) -> None:
    configuration = deployed.client("lambda").get_function_configuration(
        FunctionName=deployed.created["WebhookFunction"]
    )
    environment = configuration["Environment"]["Variables"]
    assert environment["WEBHOOK_QUEUE_URL"] == deployed.created["WebhookQueue"]
    assert environment["WEBHOOK_DEAD_LETTER_QUEUE_URL"] == deployed.created["WebhookDeadLetterQueue"]
    assert environment["WEBHOOK_URLS"] == URLS
    redrive = json.loads(
        deployed.client("sqs").get_queue_attributes(QueueUrl=deployed.created["WebhookQueue"], AttributeNames=["All"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    assert int(redrive["maxReceiveCount"]) > DEFAULT_SCHEDULE.attempts
    role_id = "WebhookRole"
    [policy] = deployed.template["Resources"][role_id]["Properties"]["Policies"]
    document = deployed.client("iam").get_role_policy(
        RoleName=deployed.created[role_id], PolicyName=policy["PolicyName"]
    )
    statements = document["PolicyDocument"]
    if isinstance(statements, str):  # moto's CloudFormation stores an inline policy as Python's repr
        statements = ast.literal_eval(statements)
    sids = {statement.get("Sid") for statement in statements["Statement"] if statement}
    assert {"WebhookQueue", "DeadLetters", "SigningSecret"} <= sids


def test_the_webhook_function_is_traced_only_when_a_sampled_trace_reaches_it() -> None:
    assert tracing_of("WebhookFunction") == ("PassThrough", "true")


def test_the_webhook_handler_is_a_module_of_its_code_folder() -> None:
    properties = RESOURCES["WebhookFunction"]["Properties"]
    source = (TEMPLATE.parent / properties["CodeUri"] / "webhook.py").read_text()
    assert "def handler(" in source
    # the cost goals' premise: nothing of the send path waits for a receiver
    assert "WebhookQueue" not in json.dumps(RESOURCES["SenderFunction"])
    assert "Webhook" not in json.dumps(RESOURCES["ApiFunction"]["Properties"].get("Environment", {}))
